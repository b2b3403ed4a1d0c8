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
    trusted_proxies: Vec<IpAddr>,
}

impl AbuseLimiter {
    /// Limiters with the configured rates.
    pub fn new(limits: &AbuseLimits) -> Self {
        AbuseLimiter {
            register: Keyed::new(limits.register),
            lookup: Keyed::new(limits.lookup),
            bundles: Keyed::new(limits.bundles),
            one_time_keys: Keyed::new(limits.one_time_keys),
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

    /// A prekey-bundle request by `requester` (an account).
    pub fn bundles(&self, requester: Uuid) -> Result<(), HttpError> {
        self.bundles.check(&requester).map_err(|wait| Self::refuse("bundles", "prekey bundle requests", wait))
    }

    /// Whether `requester` may take one-time prekeys of `target` now (else: last-resort keys only).
    pub fn one_time_keys(&self, requester: Uuid, target: DeviceKey) -> bool {
        let allowed = self.one_time_keys.check(&(requester, target)).is_ok();
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

/// The client's address: `peer`, unless `peer` is a trusted proxy; then the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy (entries further left were written
/// by the client and prove nothing).
pub fn source_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|a| a.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded.iter().rev().find(|a| !trusted.contains(a)).or(forwarded.first()).copied().unwrap_or(peer)
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
    fn one_time_keys_run_out_per_target_device_not_per_requester() {
        let limits = AbuseLimits {
            register: Rate { burst: 1, per_hour: 1 },
            lookup: Rate { burst: 1, per_hour: 1 },
            bundles: Rate { burst: 1, per_hour: 1 },
            one_time_keys: Rate { burst: 2, per_hour: 1 },
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
        assert!(limiter.register(ip("192.0.2.1")).is_ok());
        let refused = limiter.register(ip("192.0.2.1")).err();
        assert_eq!(refused.as_ref().map(|e| (e.status().as_u16(), e.code())), Some((429, "rate_limited")));
        assert!(limiter.register(ip("192.0.2.2")).is_ok(), "per address");
    }
}
