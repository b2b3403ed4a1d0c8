//! What every request handler and connection shares.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use hush_keys::certs::ServerKeys;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commit::Committer;
use crate::config::Config;
use crate::hub::Hub;
use crate::store::batch::Reads;
use crate::store::{DeviceKey, Store};
use crate::ws::admission::Admission;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// The connection path's reads of `store` (device lookups, mailbox reads), batched.
    pub reads: Reads,
    /// Connected devices.
    pub hub: Arc<Hub>,
    /// Group-commit writer.
    pub committer: Committer,
    /// Certificate keys.
    pub keys: ServerKeys,
    /// Configuration.
    pub config: Config,
    /// Per-device send rate.
    pub rate: SendRateLimiter,
    /// Per-device rate of online-only sends (typing, presence), apart from `rate`.
    pub online_rate: SendRateLimiter,
    /// REST abuse limits (registration, lookups, prekey bundles).
    pub abuse: crate::http::limits::AbuseLimiter,
    /// REST nonces seen recently.
    pub replay: ReplayCache,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown deadline has passed: connections still open are dropped.
    pub abort: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// WebSocket connection and handshake budgets.
    pub admission: Arc<Admission>,
    /// The cluster, when running several nodes.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Wake-ups for offline devices.
    pub pusher: crate::push::Pusher,
}

impl AppState {
    /// Builds the shared state.
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The server's monotonic clock for rate limits: tokio's, so tests can pause and advance it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;
    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A keyed GCRA rate limiter (the `governor` crate) on [`TokioClock`].
pub type KeyedLimiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// Per-device send rate limit (the `governor` crate's GCRA).
pub struct SendRateLimiter {
    limiter: KeyedLimiter<DeviceKey>,
}

impl SendRateLimiter {
    /// `burst` sends at once, `per_second` sustained.
    pub fn new(burst: u32, per_second: f64) -> Self {
        let period = Duration::from_secs_f64(1.0 / per_second.max(1e-6));
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst);
        SendRateLimiter { limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), TokioClock) }
    }

    /// Ok if the device may send now, else how long to wait.
    pub fn check(&self, device: DeviceKey) -> Result<(), Duration> {
        self.limiter.check_key(&device).map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }

    /// Forgets devices that have been idle long enough to be back at full burst.
    pub fn prune(&self) {
        self.limiter.retain_recent();
    }
}

/// Remembers REST request nonces until their timestamps fall out of the accepted window.
#[derive(Default)]
pub struct ReplayCache {
    seen: Mutex<HashMap<(DeviceKey, [u8; 16]), u64>>,
}

impl ReplayCache {
    /// Records a nonce valid until `expires_ms`; false if it was already seen.
    pub fn insert(&self, device: DeviceKey, nonce: [u8; 16], expires_ms: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert((device, nonce), expires_ms).is_none()
    }

    /// Drops nonces whose requests could no longer be accepted anyway.
    pub fn prune(&self, now_ms: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, expires| *expires > now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn send_rate_follows_the_injected_clock() {
        let limiter = SendRateLimiter::new(2, 1.0);
        let device = DeviceKey { account: uuid::Uuid::nil(), device_id: 1 };
        assert!(limiter.check(device).is_ok());
        assert!(limiter.check(device).is_ok());
        let wait = limiter.check(device).err().unwrap_or_else(|| panic!("a third send in the same instant passed"));
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.check(device).is_ok(), "one second later one more send is allowed");
        assert!(limiter.check(device).is_err());
    }
}
