//! Several `hushd` nodes sharing one Postgres: the Redis routing table and wake-ups.
//!
//! - Routing table: `hush:route:<account>.<device>` -> node id, written when a
//!   device connects, refreshed by heartbeats, with a TTL so a dead node's
//!   entries vanish on their own.
//! - Wake-ups: after a commit, envelopes for devices not connected to this node
//!   are announced on the Redis channel of the node that holds them
//!   (`hush:node:<id>`); that node's connections re-read their mailboxes.
//! - Group streams: a message of a stream-read group (above the fan-out-on-read threshold)
//!   for member devices not connected to the committing node is published once, with the
//!   encoded frame and those devices, on `hush:streams`, which every node hears; each hands
//!   it to the members connected there. One message per group message, not one per member.
//! - Provisioning: the one message for a provisioning socket held by another node (the
//!   store says which, `provisioning_channels`) is published on that node's channel.
//! - "Connected elsewhere": when a device connects here while the table says
//!   another node has it, that node is told to close its connection.
//! - Wake-up windows: `hush:push:<account>.<device>`, set once (`SET NX PX`) per push
//!   window, so two nodes committing for one offline device send one wake-up.
//! - REST nonces: `hush:nonce:<account>.<device>.<nonce>`, set once (`SET NX`) with the
//!   signature window as TTL, so a captured signed request is accepted by one node only.
//!
//! Redis is never on the path that makes a send durable. If it is down, sends
//! are still committed and answered; a lost wake-up only delays delivery,
//! because connections re-read their mailbox on every ping interval and on
//! reconnect, and every local connection is woken when the subscription comes back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, Script};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::hub::{Hub, Push, StreamFrame};
use crate::store::{DeviceKey, GroupPosition, StoredEnvelope};

/// Seconds a routing entry lives without a heartbeat.
const ROUTE_TTL_SECS: u64 = 30;
/// Heartbeat period (a third of the TTL, so one missed beat is harmless).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long one Redis command may take before it counts as failed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
const WAKE: u8 = b'W';
const KICK: u8 = b'K';
const REMOVED: u8 = b'R';
const EPHEMERAL: u8 = b'E';
const STREAM: u8 = b'S';
const PROVISION: u8 = b'P';
/// The channel every node hears group-stream messages on.
const STREAMS_CHANNEL: &str = "hush:streams";

/// Why the cluster layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL is not valid.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
}

enum Event {
    Connected(DeviceKey),
    Disconnected(DeviceKey),
    Committed(Vec<DeviceKey>),
    Removed(DeviceKey),
    Ephemeral(DeviceKey, StoredEnvelope),
    Stream(Arc<StreamFrame>, Vec<DeviceKey>),
}

/// This node's handle on the cluster. Cheap to share; never blocks the caller
/// (except [`Cluster::claim_nonce`], which waits for Redis, bounded by a timeout).
pub struct Cluster {
    node_id: String,
    events: mpsc::UnboundedSender<Event>,
    redis: ConnectionManager,
    health: Arc<Health>,
}

/// Whether Redis answered lately, as the nonce claims see it. While it is known to be
/// unreachable a claim does not wait for it (each REST call would otherwise wait out the
/// timeout): one claim a [`PROBE_EVERY`] tries it, the others fail at once.
#[derive(Debug)]
struct Health {
    epoch: tokio::time::Instant,
    /// Milliseconds since `epoch` before which claims fail fast (0: Redis is up).
    down_until: std::sync::atomic::AtomicU64,
}

/// How often a claim tries Redis while it is known to be unreachable.
const PROBE_EVERY: Duration = Duration::from_secs(1);

impl Health {
    fn new() -> Self {
        Health { epoch: tokio::time::Instant::now(), down_until: std::sync::atomic::AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether to ask Redis now: always while it is up; while it is down, once per probe
    /// interval (the caller that wins the probe pushes the next one out).
    fn try_now(&self) -> bool {
        use std::sync::atomic::Ordering;
        let until = self.down_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        let next = now + PROBE_EVERY.as_millis() as u64;
        now >= until && self.down_until.compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    fn answered(&self) {
        self.down_until.store(0, std::sync::atomic::Ordering::Release);
    }

    fn failed(&self) {
        let next = self.now_ms() + PROBE_EVERY.as_millis() as u64;
        self.down_until.store(next, std::sync::atomic::Ordering::Release);
    }
}

fn route_key(d: DeviceKey) -> String {
    format!("hush:route:{}.{}", d.account, d.device_id)
}

fn node_channel(node: &str) -> String {
    format!("hush:node:{node}")
}

/// A wake or kick message: one type byte, then 20 bytes per device (account, device id BE).
fn encode(kind: u8, devices: &[DeviceKey]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + devices.len() * 20);
    out.push(kind);
    for d in devices {
        out.extend_from_slice(d.account.as_bytes());
        out.extend_from_slice(&d.device_id.to_be_bytes());
    }
    out
}

/// An online-only envelope for one device: `E`, the device (20 bytes), server_ts (u64 BE),
/// kind (i32 BE), then the content.
fn encode_ephemeral(device: DeviceKey, env: &StoredEnvelope) -> Vec<u8> {
    let mut out = encode(EPHEMERAL, &[device]);
    out.extend_from_slice(&env.server_ts.to_be_bytes());
    out.extend_from_slice(&env.kind.to_be_bytes());
    out.extend_from_slice(&env.content);
    out
}

fn decode_ephemeral(bytes: &[u8]) -> Option<(DeviceKey, StoredEnvelope)> {
    let (&EPHEMERAL, rest) = bytes.split_first()? else { return None };
    if rest.len() < 32 {
        return None;
    }
    let (_, devices) = decode(&[&[EPHEMERAL][..], &rest[..20]].concat())?;
    let device = *devices.first()?;
    let server_ts = u64::from_be_bytes(rest[20..28].try_into().ok()?);
    let kind = i32::from_be_bytes(rest[28..32].try_into().ok()?);
    let content = bytes::Bytes::copy_from_slice(&rest[32..]);
    Some((device, StoredEnvelope { seq: 0, server_ts, kind, content, group: None }))
}

/// A group-stream message for devices elsewhere: `S`, the origin node id (length byte, then
/// its bytes), the group (16), group seq and server_ts (u64 BE each), the device count (u32
/// BE), 20 bytes per device, then the encoded frame.
fn encode_stream(origin: &str, frame: &StreamFrame, devices: &[DeviceKey]) -> Vec<u8> {
    let origin = &origin.as_bytes()[..origin.len().min(255)];
    let mut out = Vec::with_capacity(2 + origin.len() + 36 + devices.len() * 20 + frame.frame.len());
    out.push(STREAM);
    out.push(origin.len() as u8);
    out.extend_from_slice(origin);
    out.extend_from_slice(frame.position.group.as_bytes());
    out.extend_from_slice(&frame.position.seq.to_be_bytes());
    out.extend_from_slice(&frame.server_ts.to_be_bytes());
    out.extend_from_slice(&(devices.len() as u32).to_be_bytes());
    for d in devices {
        out.extend_from_slice(d.account.as_bytes());
        out.extend_from_slice(&d.device_id.to_be_bytes());
    }
    out.extend_from_slice(&frame.frame);
    out
}

/// The origin node, the frame and its devices of a [`encode_stream`] message.
fn decode_stream(bytes: &[u8]) -> Option<(String, StreamFrame, Vec<DeviceKey>)> {
    let (&STREAM, rest) = bytes.split_first()? else { return None };
    let (&n, rest) = rest.split_first()?;
    let (origin, rest) = rest.split_at_checked(usize::from(n))?;
    let (head, rest) = rest.split_at_checked(36)?;
    let group = Uuid::from_slice(&head[..16]).ok()?;
    let seq = u64::from_be_bytes(head[16..24].try_into().ok()?);
    let server_ts = u64::from_be_bytes(head[24..32].try_into().ok()?);
    let count = u32::from_be_bytes(head[32..36].try_into().ok()?) as usize;
    let (list, frame) = rest.split_at_checked(count.checked_mul(20)?)?;
    let (_, devices) = decode(&[&[STREAM][..], list].concat())?;
    let frame =
        StreamFrame { position: GroupPosition { group, seq }, server_ts, frame: bytes::Bytes::copy_from_slice(frame) };
    Some((String::from_utf8_lossy(origin).into_owned(), frame, devices))
}

/// A provisioning message: `P`, the address (length byte, then its bytes), then the body.
fn encode_provision(address: &str, body: &[u8]) -> Vec<u8> {
    let address = &address.as_bytes()[..address.len().min(255)];
    let mut out = Vec::with_capacity(2 + address.len() + body.len());
    out.push(PROVISION);
    out.push(address.len() as u8);
    out.extend_from_slice(address);
    out.extend_from_slice(body);
    out
}

fn decode_provision(bytes: &[u8]) -> Option<(String, bytes::Bytes)> {
    let (&PROVISION, rest) = bytes.split_first()? else { return None };
    let (&n, rest) = rest.split_first()?;
    let (address, body) = rest.split_at_checked(usize::from(n))?;
    Some((std::str::from_utf8(address).ok()?.to_owned(), bytes::Bytes::copy_from_slice(body)))
}

fn decode(bytes: &[u8]) -> Option<(u8, Vec<DeviceKey>)> {
    let (&kind, rest) = bytes.split_first()?;
    if rest.len() % 20 != 0 {
        return None;
    }
    let devices = rest
        .chunks_exact(20)
        .filter_map(|c| {
            let account = Uuid::from_slice(&c[..16]).ok()?;
            let device_id = u32::from_be_bytes(c[16..20].try_into().ok()?);
            Some(DeviceKey { account, device_id })
        })
        .collect();
    Some((kind, devices))
}

impl Cluster {
    /// Joins the cluster through Redis at `url` as `node_id`. Does not wait for
    /// Redis: the connection is made (and remade) in the background.
    pub fn start(
        url: &str,
        node_id: String,
        hub: Arc<Hub>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, ClusterError> {
        let client = Client::open(url).map_err(ClusterError::Url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(ClusterError::Url)?;
        let (events, rx) = mpsc::unbounded_channel();
        let health = Arc::new(Health::new());
        let worker = Worker { node_id: node_id.clone(), redis: manager.clone(), hub: hub.clone() };
        tokio::spawn(worker.run(rx, shutdown.clone()));
        tokio::spawn(subscribe(client, node_id.clone(), hub, health.clone(), shutdown));
        Ok(Arc::new(Cluster { node_id, events, redis: manager, health }))
    }

    /// Claims a REST request nonce of `device` for `ttl_ms` across the cluster: `Ok(false)`
    /// if any node has already accepted it. Waits at most the Redis timeout (the connection
    /// manager's own reconnect attempts would take far longer), and not at all while Redis is
    /// known to be unreachable: then it fails at once (counted as
    /// `hush_redis_nonce_skipped_total`), except for one probe a second.
    pub async fn claim_nonce(&self, device: DeviceKey, nonce: [u8; 16], ttl_ms: u64) -> redis::RedisResult<bool> {
        if !self.health.try_now() {
            metrics::counter!(crate::metrics::REDIS_NONCE_SKIPPED).increment(1);
            return Err(unreachable("Redis is unreachable; not waiting for it"));
        }
        let key = format!("hush:nonce:{}.{}.{}", device.account, device.device_id, hex::encode(nonce));
        let mut redis = self.redis.clone();
        let mut set = redis::cmd("SET");
        set.arg(key).arg(1).arg("NX").arg("PX").arg(ttl_ms.max(1));
        let result = match tokio::time::timeout(REDIS_TIMEOUT, set.query_async(&mut redis)).await {
            Ok(Ok(set)) => Ok::<Option<String>, _>(set),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(unreachable("Redis did not answer in time")),
        };
        match result {
            Ok(set) => {
                self.health.answered();
                Ok(set.is_some())
            }
            Err(e) => {
                // A refusal from a live server (e.g. out of memory) is not an outage.
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
                    self.health.failed();
                }
                Err(e)
            }
        }
    }

    /// Whether the routing table names a node holding `device` (this one included).
    pub async fn is_routed(&self, device: DeviceKey) -> redis::RedisResult<bool> {
        let mut redis = self.redis.clone();
        let node: Option<String> = redis.get(route_key(device)).await?;
        Ok(node.is_some())
    }

    /// Claims the wake-up of `device` for `window` across the cluster (`SET NX PX`): false
    /// if some node already woke it within the window.
    pub async fn claim_wake(&self, device: DeviceKey, window: Duration) -> redis::RedisResult<bool> {
        let key = format!("hush:push:{}.{}", device.account, device.device_id);
        let mut redis = self.redis.clone();
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> =
            redis::cmd("SET").arg(key).arg(&self.node_id).arg("NX").arg("PX").arg(ms).query_async(&mut redis).await?;
        Ok(set.is_some())
    }

    /// Hands the provisioning message `body` to `node`, which holds the socket of `address`:
    /// false if that node is not listening (it is gone). Waits at most the Redis timeout.
    pub async fn provision(&self, node: &str, address: &str, body: &[u8]) -> redis::RedisResult<bool> {
        let mut redis = self.redis.clone();
        let publish = redis.publish::<_, _, i64>(node_channel(node), encode_provision(address, body));
        match tokio::time::timeout(REDIS_TIMEOUT, publish).await {
            Ok(Ok(listeners)) => Ok(listeners > 0),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(unreachable("Redis did not answer in time")),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// A device connected to this node.
    pub fn connected(&self, device: DeviceKey) {
        let _ = self.events.send(Event::Connected(device));
    }

    /// A device's connection to this node ended.
    pub fn disconnected(&self, device: DeviceKey) {
        let _ = self.events.send(Event::Disconnected(device));
    }

    /// A device was removed: close its connection wherever it is.
    pub fn removed(&self, device: DeviceKey) {
        let _ = self.events.send(Event::Removed(device));
    }

    /// An online-only envelope for a device not connected to this node: hand it to the node
    /// that has it, if any (online-only envelopes are never stored).
    pub fn ephemeral_elsewhere(&self, device: DeviceKey, envelope: StoredEnvelope) {
        let _ = self.events.send(Event::Ephemeral(device, envelope));
    }

    /// A group-stream message was committed for these member devices, which are not
    /// connected to this node: every node hands it to those connected there.
    pub fn stream_elsewhere(&self, frame: Arc<StreamFrame>, devices: Vec<DeviceKey>) {
        if !devices.is_empty() {
            let _ = self.events.send(Event::Stream(frame, devices));
        }
    }

    /// Envelopes were committed for these devices, which are not connected to this node.
    pub fn committed_elsewhere(&self, devices: Vec<DeviceKey>) {
        if !devices.is_empty() {
            let _ = self.events.send(Event::Committed(devices));
        }
    }
}

fn unreachable(why: &'static str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, why))
}

struct Worker {
    node_id: String,
    redis: ConnectionManager,
    hub: Arc<Hub>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>, shutdown: CancellationToken) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = heartbeat.tick() => self.heartbeat().await,
                n = rx.recv_many(&mut batch, 1024) => {
                    if n == 0 {
                        break;
                    }
                    self.handle(&mut batch).await;
                }
            }
        }
    }

    async fn handle(&mut self, batch: &mut Vec<Event>) {
        let mut wake = Vec::new();
        for event in batch.drain(..) {
            let result = match event {
                Event::Connected(d) => self.claim(d).await,
                Event::Disconnected(d) => self.release(d).await,
                Event::Committed(devices) => {
                    wake.extend(devices);
                    Ok(())
                }
                Event::Removed(d) => self.forward(d, encode(REMOVED, &[d])).await,
                Event::Ephemeral(d, env) => self.forward(d, encode_ephemeral(d, &env)).await,
                Event::Stream(frame, devices) => {
                    // Wake-ups queued before it go first: a distribution committed before a
                    // group message must reach the other node's connection before the message.
                    if !wake.is_empty()
                        && let Err(e) = self.wake(std::mem::take(&mut wake)).await
                    {
                        tracing::warn!(error = %e, "publishing wake-ups failed; recipients will re-read their mailbox later");
                    }
                    let message = encode_stream(&self.node_id, &frame, &devices);
                    self.redis.publish::<_, _, i64>(STREAMS_CHANNEL, message).await.map(|_| ())
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "updating the Redis routing table failed; delivery falls back to mailbox re-reads");
            }
        }
        if !wake.is_empty()
            && let Err(e) = self.wake(wake).await
        {
            tracing::warn!(error = %e, "publishing wake-ups failed; recipients will re-read their mailbox later");
        }
    }

    /// Records that this node holds `device`; tells a previous holder to close its connection.
    async fn claim(&mut self, device: DeviceKey) -> redis::RedisResult<()> {
        let previous: Option<String> = redis::cmd("SET")
            .arg(route_key(device))
            .arg(&self.node_id)
            .arg("EX")
            .arg(ROUTE_TTL_SECS)
            .arg("GET")
            .query_async(&mut self.redis)
            .await?;
        if let Some(node) = previous.filter(|n| *n != self.node_id) {
            let _: i64 = self.redis.publish(node_channel(&node), encode(KICK, &[device])).await?;
        }
        Ok(())
    }

    /// Publishes `message` to the node that holds `device`, if another node holds it.
    async fn forward(&mut self, device: DeviceKey, message: Vec<u8>) -> redis::RedisResult<()> {
        let node: Option<String> = self.redis.get(route_key(device)).await?;
        if let Some(node) = node.filter(|n| *n != self.node_id) {
            let _: i64 = self.redis.publish(node_channel(&node), message).await?;
        }
        Ok(())
    }

    /// Removes the routing entry if it still names this node.
    async fn release(&mut self, device: DeviceKey) -> redis::RedisResult<()> {
        if self.hub.is_connected(device) {
            return Ok(()); // a newer connection of the same device is here
        }
        let script =
            Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0");
        let _: i64 = script.key(route_key(device)).arg(&self.node_id).invoke_async(&mut self.redis).await?;
        Ok(())
    }

    async fn wake(&mut self, devices: Vec<DeviceKey>) -> redis::RedisResult<()> {
        let keys: Vec<String> = devices.iter().map(|d| route_key(*d)).collect();
        let nodes: Vec<Option<String>> = self.redis.mget(&keys).await?;
        let mut per_node: HashMap<String, Vec<DeviceKey>> = HashMap::new();
        for (device, node) in devices.into_iter().zip(nodes) {
            if let Some(node) = node {
                per_node.entry(node).or_default().push(device);
            }
        }
        for (node, devices) in per_node {
            if node == self.node_id {
                for d in devices {
                    self.hub.wake(d);
                }
                continue;
            }
            let _: i64 = self.redis.publish(node_channel(&node), encode(WAKE, &devices)).await?;
        }
        Ok(())
    }

    async fn heartbeat(&mut self) {
        let devices = self.hub.devices();
        if devices.is_empty() {
            return;
        }
        for chunk in devices.chunks(1000) {
            let mut pipe = redis::pipe();
            for d in chunk {
                pipe.cmd("SET").arg(route_key(*d)).arg(&self.node_id).arg("EX").arg(ROUTE_TTL_SECS).ignore();
            }
            if let Err(e) = pipe.query_async::<()>(&mut self.redis).await {
                tracing::warn!(error = %e, "routing heartbeat failed");
                return;
            }
        }
    }
}

/// Listens on this node's channel, reconnecting with backoff. After every
/// (re)subscription all local connections re-read their mailboxes, since
/// wake-ups sent while unsubscribed are lost.
async fn subscribe(client: Client, node_id: String, hub: Arc<Hub>, health: Arc<Health>, shutdown: CancellationToken) {
    let channel = node_channel(&node_id);
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&[channel.as_str(), STREAMS_CHANNEL]).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let pubsub = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(REDIS_TIMEOUT, attempt) => r,
        };
        match pubsub {
            Ok(Ok(pubsub)) => {
                delay = Duration::from_millis(100);
                tracing::info!(node = %node_id, "subscribed to cluster wake-ups");
                health.answered();
                hub.wake_all();
                let mut messages = pubsub.into_on_message();
                loop {
                    let msg = tokio::select! {
                        () = shutdown.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    let payload = msg.get_payload_bytes();
                    if payload.first() == Some(&STREAM) {
                        match decode_stream(payload) {
                            Some((origin, _, _)) if origin == node_id => {}
                            Some((_, frame, devices)) => {
                                hub.deliver_stream(&devices, &Arc::new(frame));
                            }
                            None => tracing::warn!("ignoring a malformed cluster message"),
                        }
                        continue;
                    }
                    if payload.first() == Some(&PROVISION) {
                        match decode_provision(payload) {
                            Some((address, body)) => {
                                // Gone meanwhile: the sender was answered 204, the new device
                                // sees its socket closed without a message and starts again.
                                hub.provisioning.deliver(&address, body);
                            }
                            None => tracing::warn!("ignoring a malformed cluster message"),
                        }
                        continue;
                    }
                    if payload.first() == Some(&EPHEMERAL) {
                        match decode_ephemeral(payload) {
                            Some((d, env)) => {
                                hub.deliver(d, Push::Ephemeral(Box::new(env)));
                            }
                            None => tracing::warn!("ignoring a malformed cluster message"),
                        }
                        continue;
                    }
                    match decode(payload) {
                        Some((WAKE, devices)) => devices.into_iter().for_each(|d| {
                            hub.wake(d);
                        }),
                        Some((KICK, devices)) => devices.into_iter().for_each(|d| hub.replaced_elsewhere(d)),
                        Some((REMOVED, devices)) => devices.into_iter().for_each(|d| hub.remove_device(d)),
                        _ => tracing::warn!("ignoring a malformed cluster message"),
                    }
                }
                tracing::warn!("lost the Redis subscription; reconnecting");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot subscribe to Redis; retrying"),
            Err(_) => tracing::warn!("subscribing to Redis timed out; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_messages_round_trip_and_garbage_is_refused() {
        let devices = vec![
            DeviceKey { account: Uuid::from_u128(1), device_id: 1 },
            DeviceKey { account: Uuid::from_u128(2), device_id: 127 },
        ];
        assert_eq!(decode(&encode(WAKE, &devices)), Some((WAKE, devices)));
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[WAKE, 1, 2, 3]), None);
    }

    #[test]
    fn ephemeral_messages_round_trip_and_garbage_is_refused() {
        let device = DeviceKey { account: Uuid::from_u128(7), device_id: 3 };
        let env = StoredEnvelope {
            seq: 0,
            server_ts: 42,
            kind: 1,
            content: bytes::Bytes::from_static(b"typing"),
            group: None,
        };
        assert_eq!(decode_ephemeral(&encode_ephemeral(device, &env)), Some((device, env)));
        assert_eq!(decode_ephemeral(&[EPHEMERAL, 1, 2]), None);
        assert_eq!(decode_ephemeral(&encode(WAKE, &[device])), None);
    }

    #[test]
    fn provisioning_messages_round_trip_and_garbage_is_refused() {
        let message = encode_provision("AAAAAAAAAAAAAAAAAAAAAA", b"sealed link message");
        assert_eq!(
            decode_provision(&message),
            Some(("AAAAAAAAAAAAAAAAAAAAAA".to_owned(), bytes::Bytes::from_static(b"sealed link message")))
        );
        assert_eq!(decode_provision(&[PROVISION, 30, b'A']), None, "truncated address");
        assert_eq!(decode_provision(&encode(WAKE, &[])), None);
    }

    #[test]
    fn stream_messages_round_trip_and_garbage_is_refused() {
        let devices = vec![
            DeviceKey { account: Uuid::from_u128(7), device_id: 3 },
            DeviceKey { account: Uuid::from_u128(8), device_id: 1 },
        ];
        let env = StoredEnvelope {
            seq: 0,
            server_ts: 42,
            kind: 4,
            content: bytes::Bytes::from_static(b"sender-key message"),
            group: Some(GroupPosition { group: Uuid::from_u128(9), seq: 12 }),
        };
        let frame = StreamFrame::new(&env);
        let message = encode_stream("node-a", &frame, &devices);
        assert_eq!(decode_stream(&message), Some(("node-a".to_owned(), frame, devices)));
        assert_eq!(decode_stream(&message[..20]), None, "truncated");
        assert_eq!(decode_stream(&[STREAM, 200, 1]), None);
        assert_eq!(decode_stream(&encode(WAKE, &[])), None);
    }

    /// With Redis unreachable (here: a port that accepts connections and never answers, so
    /// each command would wait out its timeout), only the first REST nonce claim waits: the
    /// next ones fail at once, and the caller falls back to the per-node replay cache.
    #[tokio::test]
    async fn nonce_claims_fail_fast_while_redis_is_known_to_be_unreachable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let hub = Arc::new(Hub::new(crate::hub::QueueLimit { pushes: 1, bytes: 1 }));
        let shutdown = CancellationToken::new();
        let cluster = Cluster::start(&format!("redis://{addr}"), "n1".into(), hub, shutdown.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let device = DeviceKey { account: Uuid::from_u128(9), device_id: 1 };
        let start = std::time::Instant::now();
        assert!(cluster.claim_nonce(device, [0; 16], 60_000).await.is_err());
        let first = start.elapsed();
        let start = std::time::Instant::now();
        for i in 1..=5u8 {
            assert!(cluster.claim_nonce(device, [i; 16], 60_000).await.is_err());
        }
        let next = start.elapsed();
        assert!(next < Duration::from_millis(500), "five claims took {next:?} (the first alone {first:?})");
        shutdown.cancel();
    }
}
