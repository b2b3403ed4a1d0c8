//! Wake-ups for offline devices: after a commit, each target device that has no live
//! connection on any node, and a push target, gets a content-free "you have mail" push
//! (APNs, FCM HTTP v1 or UnifiedPush), at most one per device per window.
//!
//! Nothing here is on the send path: [`Pusher`] only queues events on an unbounded channel
//! (the writer never waits), and one background task decides when to wake whom; sends to
//! providers run on tasks of their own, retried with backoff, so a slow or dead provider
//! never slows delivery. Urgent envelopes wake at once; others schedule a rare coalesced
//! background wake-up; online-only envelopes never reach this module.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::hub::Hub;
use crate::metrics as m;
use crate::store::{DeviceKey, MailboxId, PushTarget, Store};

pub mod apns;
pub mod fcm;
pub mod unifiedpush;

/// The one collapse id every wake-up carries: a newer wake-up replaces an undelivered one.
pub const COLLAPSE_ID: &str = "hush-wake";
/// Attempts at one wake-up before it is given up (counted as failed).
const MAX_ATTEMPTS: u32 = 6;
/// First retry delay; doubled per attempt, at most [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Provider sends in flight at once.
const CONCURRENCY: usize = 64;

/// How urgent a wake-up is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Urgency {
    /// A message a person should see now.
    Urgent,
    /// Receipts, sync, roster changes, distributions, a disconnect with unacked envelopes.
    Background,
}

/// What a provider is asked to send. It names no message, sender or conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeUp {
    /// How urgent.
    pub urgency: Urgency,
}

/// Why a provider did not deliver a wake-up.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The provider says the token or endpoint is no longer valid: the target is removed.
    #[error("the provider reports the token invalid")]
    InvalidToken,
    /// A temporary failure (network, 429, 5xx): retried with backoff.
    #[error("temporary provider failure: {0}")]
    Retry(String, Option<Duration>),
    /// A failure retrying cannot mend (misconfiguration, a refused payload).
    #[error("provider failure: {0}")]
    Failed(String),
}

/// One push provider (APNs, FCM, UnifiedPush): sends one wake-up to one target.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider's name in metrics and logs.
    fn name(&self) -> &'static str;
    /// Sends one wake-up.
    async fn send(&self, target: &PushTarget, wake: WakeUp) -> Result<(), PushError>;
}

/// The providers this node can use; a target whose provider is not configured is skipped.
#[derive(Clone, Default)]
pub struct Providers {
    /// APNs, when configured.
    pub apns: Option<Arc<dyn Provider>>,
    /// FCM, when configured.
    pub fcm: Option<Arc<dyn Provider>>,
    /// UnifiedPush (always available: it needs no credentials).
    pub unifiedpush: Option<Arc<dyn Provider>>,
}

impl Providers {
    fn for_target(&self, target: &PushTarget) -> Option<&Arc<dyn Provider>> {
        match target {
            PushTarget::Apns { .. } => self.apns.as_ref(),
            PushTarget::Fcm { .. } => self.fcm.as_ref(),
            PushTarget::UnifiedPush { .. } => self.unifiedpush.as_ref(),
        }
    }
}

/// Timing of wake-ups.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// At most one wake-up per device in this window.
    pub window: Duration,
    /// Non-urgent envelopes wait this long.
    pub background_delay: Duration,
    /// A device that disconnected with unacked envelopes is woken this much later.
    pub disconnect_delay: Duration,
}

enum Event {
    Committed(Vec<DeviceKey>, Urgency),
    Disconnected(DeviceKey, MailboxId),
}

/// Handle to the wake-up task. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct Pusher {
    events: mpsc::UnboundedSender<Event>,
}

/// What the wake-up task works with.
pub struct Engine {
    /// Push targets.
    pub store: Arc<dyn Store>,
    /// Local connections (a device connected here is never woken).
    pub hub: Arc<Hub>,
    /// The cluster: its routing table says who is connected elsewhere, and the window is a
    /// Redis `SET NX PX` so two nodes send one wake-up.
    pub cluster: Option<Arc<Cluster>>,
    /// The providers.
    pub providers: Providers,
    /// Timing.
    pub timing: Timing,
}

impl Pusher {
    /// Starts the wake-up task; it stops on `shutdown`.
    pub fn spawn(engine: Engine, shutdown: CancellationToken) -> Self {
        let (events, rx) = mpsc::unbounded_channel();
        let shared = Shared { engine, window: std::sync::Mutex::new(HashMap::new()) };
        tokio::spawn(run(Arc::new(shared), rx, shutdown));
        Pusher { events }
    }

    /// A pusher that drops everything (tests that do not need wake-ups).
    pub fn disabled() -> Self {
        let (events, _) = mpsc::unbounded_channel();
        Pusher { events }
    }

    /// Envelopes were committed for `devices`, none of which is connected to this node.
    pub fn committed(&self, devices: Vec<DeviceKey>, urgency: Urgency) {
        if !devices.is_empty() {
            let _ = self.events.send(Event::Committed(devices, urgency));
        }
    }

    /// `device` (with `mailbox`) disconnected from this node: if it is still offline after
    /// the disconnect delay and its mailbox holds envelopes it did not acknowledge, it is woken.
    pub fn disconnected(&self, device: DeviceKey, mailbox: MailboxId) {
        let _ = self.events.send(Event::Disconnected(device, mailbox));
    }
}

/// One device's pending wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    at: Instant,
    urgency: Urgency,
    /// Set when only a disconnect asked for it: wake only if this mailbox is not empty.
    check: Option<MailboxId>,
}

/// The engine and this node's window (when there is no cluster to keep it).
struct Shared {
    engine: Engine,
    window: std::sync::Mutex<HashMap<DeviceKey, Instant>>,
}

impl Shared {
    /// Claims this window's wake-up of `device`: false if it already had one.
    async fn claim(&self, device: DeviceKey) -> bool {
        let window = self.engine.timing.window;
        if let Some(cluster) = &self.engine.cluster {
            return match cluster.claim_wake(device, window).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming the wake-up window in Redis failed; waking anyway");
                    true
                }
            };
        }
        let now = Instant::now();
        let mut last = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() > 10_000 {
            last.retain(|_, at| now.duration_since(*at) < window);
        }
        match last.get(&device) {
            Some(at) if now.duration_since(*at) < window => false,
            _ => {
                last.insert(device, now);
                true
            }
        }
    }
}

/// Devices waiting for their wake-up, earliest first.
#[derive(Default)]
struct Schedule {
    due: HashMap<DeviceKey, Due>,
    heap: BinaryHeap<Reverse<(Instant, DeviceKey)>>,
}

impl Schedule {
    /// Wakes `device` at `at`, or earlier if it is already due earlier.
    fn at(&mut self, device: DeviceKey, new: Due) {
        match self.due.get_mut(&device) {
            None => {
                self.due.insert(device, new);
                self.heap.push(Reverse((new.at, device)));
            }
            Some(due) => {
                // Envelopes committed since make the mailbox check moot.
                due.check = due.check.and(new.check);
                if new.urgency == Urgency::Urgent {
                    due.urgency = Urgency::Urgent;
                }
                if new.at < due.at {
                    due.at = new.at;
                    self.heap.push(Reverse((new.at, device)));
                }
            }
        }
    }

    fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The devices due at `now`.
    fn take_due(&mut self, now: Instant) -> Vec<(DeviceKey, Due)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, device))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if let Some(&due) = self.due.get(&device)
                && due.at == at
            {
                self.due.remove(&device);
                out.push((device, due));
            }
        }
        out
    }
}

async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Event>, shutdown: CancellationToken) {
    let engine = &shared.engine;
    let mut schedule = Schedule::default();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut batch = Vec::new();
    loop {
        let next = schedule.next();
        tokio::select! {
            () = shutdown.cancelled() => break,
            n = rx.recv_many(&mut batch, 1024) => {
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                for event in batch.drain(..) {
                    match event {
                        Event::Committed(devices, urgency) => {
                            let at = match urgency {
                                Urgency::Urgent => now,
                                Urgency::Background => now + engine.timing.background_delay,
                            };
                            devices.into_iter().for_each(|d| schedule.at(d, Due { at, urgency, check: None }))
                        }
                        Event::Disconnected(d, mailbox) => {
                            let at = now + engine.timing.disconnect_delay;
                            schedule.at(d, Due { at, urgency: Urgency::Background, check: Some(mailbox) })
                        }
                    }
                }
            }
            () = sleep_until(next) => {}
        }
        let now = Instant::now();
        let due = schedule.take_due(now);
        if due.is_empty() {
            continue;
        }
        for (device, due) in due {
            if engine.hub.is_connected(device) {
                continue;
            }
            let shared = shared.clone();
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            tokio::spawn(async move {
                wake(&shared, device, due).await;
                drop(permit);
            });
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Wakes one device: checks it is offline on every node and that this window has not
/// had its wake-up yet (cluster-wide), loads its target, and sends with retries.
async fn wake(shared: &Shared, device: DeviceKey, due: Due) {
    let engine = &shared.engine;
    if let Some(mailbox) = due.check {
        match engine.store.fetch(mailbox, 0, 1).await {
            Ok(envelopes) if envelopes.is_empty() => return, // it acked everything before leaving
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading a mailbox before a wake-up failed; waking anyway"),
        }
    }
    let urgency = due.urgency;
    if let Some(cluster) = &engine.cluster {
        match cluster.is_routed(device).await {
            Ok(true) => return, // connected to some node
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "reading the routing table for a wake-up failed; waking anyway"),
        }
    }
    let target = match engine.store.push_target(device).await {
        Ok(Some(record)) => record.target,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "reading a push target failed; no wake-up");
            return;
        }
    };
    let Some(provider) = engine.providers.for_target(&target) else {
        tracing::debug!(provider = target.provider(), "a wake-up for a provider this node is not configured for");
        return;
    };
    if !shared.claim(device).await {
        return; // this node or another woke it in this window
    }
    send_with_retries(engine, device, provider.as_ref(), &target, WakeUp { urgency }).await;
}

async fn send_with_retries(
    engine: &Engine,
    device: DeviceKey,
    provider: &dyn Provider,
    target: &PushTarget,
    wake: WakeUp,
) {
    let name = provider.name();
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=MAX_ATTEMPTS {
        match provider.send(target, wake).await {
            Ok(()) => {
                metrics::counter!(m::PUSH_SENT, "provider" => name).increment(1);
                return;
            }
            Err(PushError::InvalidToken) => {
                metrics::counter!(m::PUSH_INVALID_TOKENS, "provider" => name).increment(1);
                match engine.store.remove_push_target(device, Some(target)).await {
                    Ok(_) => tracing::info!(provider = name, "removed a push target its provider reports invalid"),
                    Err(e) => tracing::warn!(error = %e, "removing an invalid push target failed"),
                }
                return;
            }
            Err(PushError::Failed(why)) => {
                metrics::counter!(m::PUSH_FAILED, "provider" => name).increment(1);
                tracing::warn!(provider = name, reason = %why, "a wake-up failed");
                return;
            }
            Err(PushError::Retry(why, after)) => {
                metrics::counter!(m::PUSH_RETRIED, "provider" => name).increment(1);
                if attempt == MAX_ATTEMPTS {
                    metrics::counter!(m::PUSH_FAILED, "provider" => name).increment(1);
                    tracing::warn!(provider = name, reason = %why, "a wake-up failed after {MAX_ATTEMPTS} attempts");
                    return;
                }
                tracing::debug!(provider = name, reason = %why, attempt, "a wake-up will be retried");
                tokio::time::sleep(after.unwrap_or(backoff).min(MAX_BACKOFF)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Builds the providers the configuration enables: UnifiedPush always, FCM with a service
/// account, APNs with a .p8 key.
pub fn providers(config: &crate::config::PushConfig) -> Result<Providers, crate::serve::ServeError> {
    use crate::serve::ServeError;
    let unifiedpush = unifiedpush::UnifiedPush::new(config.allow_hosts.clone())
        .map_err(|e| ServeError::Push(format!("cannot build the HTTP client: {e}")))?;
    let fcm = match &config.fcm_service_account {
        Some(path) => {
            let fcm = fcm::Fcm::from_file(path, &config.fcm_endpoint).map_err(|e| ServeError::Push(e.to_string()))?;
            Some(Arc::new(fcm) as Arc<dyn Provider>)
        }
        None => None,
    };
    let apns = match &config.apns {
        Some(a) => {
            let sender = apns::A2::new(&a.key, &a.key_id, &a.team_id).map_err(ServeError::Push)?;
            Some(Arc::new(apns::Apns::new(sender)) as Arc<dyn Provider>)
        }
        None => None,
    };
    tracing::info!(fcm = fcm.is_some(), apns = apns.is_some(), "push providers ready (UnifiedPush always)");
    Ok(Providers { apns, fcm, unifiedpush: Some(Arc::new(unifiedpush)) })
}

/// Reads a `Retry-After` header given in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests;
