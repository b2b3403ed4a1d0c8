//! Abuse limits on the REST API (governor's GCRA, in memory per node):
//!
//! - per source address: registrations, and username lookups + registration challenges;
//! - per requesting account: prekey-bundle requests (`429 rate_limited` beyond it);
//! - per (requesting account, target device): one-time prekeys taken. Beyond it the bundle
//!   is still served, with the signed prekey and the last-resort Kyber key only, so a
//!   client can always start a session but nobody can drain another device's one-time keys.
//!
//! The source address is the TCP peer, or, when the peer is one of `trusted_proxies`, the
//! last address in `X-Forwarded-For` that is not a trusted proxy.

use std::convert::Infallible;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use super::error::HttpError;
use crate::config::{AbuseLimits, Rate};
use crate::metrics as m;
use crate::state::AppState;
use crate::store::DeviceKey;

/// Checks between two sweeps of a limiter's idle keys.
const PRUNE_EVERY: u64 = 4096;

/// One keyed limiter that forgets idle keys now and then.
struct Keyed<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(rate: Rate) -> Self {
        let period = Duration::from_secs(3600) / rate.per_hour.max(1);
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_hour(NonZeroU32::MIN)).allow_burst(burst);
        Keyed { limiter: RateLimiter::keyed(quota), clock: DefaultClock::default(), checks: AtomicU64::new(0) }
    }

    /// Ok if `key` may go now, else how long until it may.
    fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The node's abuse limiters.
pub struct AbuseLimiter {
    register: Keyed<IpAddr>,
    lookup: Keyed<IpAddr>,
    bundles: Keyed<Uuid>,
    one_time_keys: Keyed<(Uuid, DeviceKey)>,
    /// Across all requesters: many cheap accounts cannot drain one device either.
    one_time_keys_per_device: Keyed<DeviceKey>,
    link_tokens: Keyed<Uuid>,
    links: Keyed<IpAddr>,
    trusted_proxies: Vec<IpAddr>,
}

/// A device's one-time prekeys are handed out at most this many times the per-requester
/// budget, counted over all requesters (10 × 10 at once, 100 an hour: one upload's worth).
pub const ONE_TIME_KEYS_PER_DEVICE_FACTOR: u32 = 10;

impl AbuseLimiter {
    /// Limiters with the configured rates.
    pub fn new(limits: &AbuseLimits) -> Self {
        AbuseLimiter {
            register: Keyed::new(limits.register),
            lookup: Keyed::new(limits.lookup),
            bundles: Keyed::new(limits.bundles),
            one_time_keys: Keyed::new(limits.one_time_keys),
            one_time_keys_per_device: Keyed::new(Rate {
                burst: limits.one_time_keys.burst.saturating_mul(ONE_TIME_KEYS_PER_DEVICE_FACTOR),
                per_hour: limits.one_time_keys.per_hour.saturating_mul(ONE_TIME_KEYS_PER_DEVICE_FACTOR),
            }),
            link_tokens: Keyed::new(limits.link),
            links: Keyed::new(limits.link),
            trusted_proxies: limits.trusted_proxies.clone(),
        }
    }

    fn refuse(limit: &'static str, what: &str, wait: Duration) -> HttpError {
        metrics::counter!(m::RATE_LIMITED, "limit" => limit).increment(1);
        HttpError::rate_limited(what, wait)
    }

    /// A registration from `source`.
    pub fn register(&self, source: IpAddr) -> Result<(), HttpError> {
        self.register.check(&source).map_err(|wait| Self::refuse("register", "registrations", wait))
    }

    /// A username lookup or registration challenge from `source`.
    pub fn lookup(&self, source: IpAddr) -> Result<(), HttpError> {
        self.lookup.check(&source).map_err(|wait| Self::refuse("lookup", "lookups", wait))
    }

    /// A link token asked for by `account`.
    pub fn link_token(&self, account: Uuid) -> Result<(), HttpError> {
        self.link_tokens.check(&account).map_err(|wait| Self::refuse("link_tokens", "link tokens", wait))
    }

    /// A device link (`POST /v1/devices/link`, checked with the identity key) from `source`.
    pub fn link(&self, source: IpAddr) -> Result<(), HttpError> {
        self.links.check(&source).map_err(|wait| Self::refuse("links", "device links", wait))
    }

    /// A prekey-bundle request by `requester` (an account).
    pub fn bundles(&self, requester: Uuid) -> Result<(), HttpError> {
        self.bundles.check(&requester).map_err(|wait| Self::refuse("bundles", "prekey bundle requests", wait))
    }

    /// Whether `requester` may take one-time prekeys of `target` now (else: last-resort keys
    /// only): within its own budget for that device, and within the device's budget over all
    /// requesters.
    pub fn one_time_keys(&self, requester: Uuid, target: DeviceKey) -> bool {
        let allowed = self.one_time_keys.check(&(requester, target)).is_ok()
            && self.one_time_keys_per_device.check(&target).is_ok();
        if !allowed {
            metrics::counter!(m::RATE_LIMITED, "limit" => "one_time_keys").increment(1);
        }
        allowed
    }

    /// The source address of a request from `peer` with these headers.
    pub fn source(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        source_address(peer, headers, &self.trusted_proxies)
    }
}

/// The client's address: `peer`, unless `peer` is a trusted proxy; then the header is read
/// from the right (the end our proxies wrote): trusted proxies are skipped, and the first
/// entry that is not one is the client. Entries further left were written by the client and
/// prove nothing, so an entry that does not parse stops the walk at the last trusted hop.
/// Addresses are compared in canonical form (`::ffff:10.0.0.1` is `10.0.0.1`).
pub fn source_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let is_trusted = |a: &IpAddr| trusted.iter().any(|t| t.to_canonical() == a.to_canonical());
    let peer = peer.to_canonical();
    if !is_trusted(&peer) {
        return peer;
    }
    let entries: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
    let mut last_trusted = peer;
    for entry in entries.iter().rev() {
        match entry.trim().parse::<IpAddr>().map(|a| a.to_canonical()) {
            Ok(a) if is_trusted(&a) => last_trusted = a,
            Ok(a) => return a,
            Err(_) => break,
        }
    }
    last_trusted
}

/// The source address of a request (see [`source_address`]). Without connection info (a
/// router driven by `oneshot` in tests) every request comes from `0.0.0.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip());
        Ok(ClientIp(state.abuse.source(peer, &parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().unwrap_or_else(|e| panic!("{e}")));
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.1");
        let headers = forwarded("203.0.113.9");
        assert_eq!(source_address(ip("198.51.100.7"), &headers, &[proxy]), ip("198.51.100.7"), "untrusted peer");
        assert_eq!(source_address(proxy, &headers, &[proxy]), ip("203.0.113.9"));
        assert_eq!(source_address(proxy, &HeaderMap::new(), &[proxy]), proxy, "no header: the proxy itself");
    }

    #[test]
    fn a_client_cannot_choose_its_address_by_prepending_to_the_header() {
        let proxies = [ip("10.0.0.1"), ip("10.0.0.2")];
        // The client wrote "1.2.3.4"; the outer proxy appended the real peer, the inner one the outer.
        let headers = forwarded("1.2.3.4, 203.0.113.9, 10.0.0.2");
        assert_eq!(source_address(ip("10.0.0.1"), &headers, &proxies), ip("203.0.113.9"));
    }

    #[test]
    fn a_junk_entry_cannot_hide_the_address_our_proxy_appended() {
        let proxy = ip("10.0.0.1");
        // The client wrote "1.2.3.4, x"; the proxy appended the real peer.
        let headers = forwarded("1.2.3.4, x, 203.0.113.9");
        assert_eq!(source_address(proxy, &headers, &[proxy]), ip("203.0.113.9"));
        // Junk right of the client: nothing further left is believed; the proxy is the source.
        assert_eq!(source_address(proxy, &forwarded("1.2.3.4, x"), &[proxy]), proxy);
        assert_eq!(source_address(proxy, &forwarded("203.0.113.9:4711"), &[proxy]), proxy);
    }

    #[test]
    fn a_mapped_ipv4_peer_is_its_ipv4_address() {
        let proxy = ip("10.0.0.1");
        let headers = forwarded("203.0.113.9");
        assert_eq!(source_address(ip("::ffff:10.0.0.1"), &headers, &[proxy]), ip("203.0.113.9"));
        assert_eq!(source_address(ip("::ffff:198.51.100.7"), &headers, &[proxy]), ip("198.51.100.7"));
    }

    #[test]
    fn one_time_keys_are_limited_per_requester_and_per_target_device() {
        let limits = AbuseLimits {
            register: Rate { burst: 1, per_hour: 1 },
            lookup: Rate { burst: 1, per_hour: 1 },
            bundles: Rate { burst: 1, per_hour: 1 },
            one_time_keys: Rate { burst: 2, per_hour: 1 },
            link: Rate { burst: 1, per_hour: 1 },
            trusted_proxies: vec![],
        };
        let limiter = AbuseLimiter::new(&limits);
        let (me, target) = (Uuid::from_u128(1), DeviceKey { account: Uuid::from_u128(2), device_id: 1 });
        let other = DeviceKey { account: Uuid::from_u128(2), device_id: 2 };
        assert!(limiter.one_time_keys(me, target));
        assert!(limiter.one_time_keys(me, target));
        assert!(!limiter.one_time_keys(me, target), "the third key within the hour is refused");
        assert!(limiter.one_time_keys(me, other), "another device has its own budget");
        assert!(limiter.one_time_keys(Uuid::from_u128(3), target), "another requester has its own budget");
        // Many requesters together get the device's budget, no more: 10 × 2 at once.
        let taken = (10..100u128).filter(|&r| limiter.one_time_keys(Uuid::from_u128(r), target)).count();
        assert_eq!(taken + 3, 20, "three were taken above; the device's budget is 20 at once");
        assert!(limiter.register(ip("192.0.2.1")).is_ok());
        let refused = limiter.register(ip("192.0.2.1")).err();
        assert_eq!(refused.as_ref().map(|e| (e.status().as_u16(), e.code())), Some((429, "rate_limited")));
        assert!(limiter.register(ip("192.0.2.2")).is_ok(), "per address");
    }
}
