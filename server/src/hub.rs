//! The in-process routing table: which device is connected to which
//! connection task, and the wake-ups that push new envelopes to it.
//!
//! The mailbox is the truth; the hub is only a fast path. When a connection's
//! queue is full (in pushes or in bytes) the envelope is not queued but the
//! connection is told it lagged, and it re-reads its mailbox, so nothing is lost
//! and a connection that stops reading pins at most one queue's worth of memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use hush_wire::frames::{Envelope, ServerFrame, server_frame};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::{DeviceKey, GroupPosition, StoredEnvelope};

/// What the hub hands a connection.
#[derive(Debug)]
pub enum Push {
    /// A stored envelope just committed to this device's mailbox.
    Stored(Box<StoredEnvelope>),
    /// An online-only envelope (seq 0, never stored).
    Ephemeral(Box<StoredEnvelope>),
    /// A message just committed to the stream of a stream-read group the device reads,
    /// encoded once for every member connection.
    Stream(Arc<StreamFrame>),
}

impl Push {
    /// What holding this push costs, in bytes (the content plus bookkeeping).
    fn cost(&self) -> usize {
        match self {
            Push::Stored(e) | Push::Ephemeral(e) => e.content.len() + std::mem::size_of::<StoredEnvelope>(),
            Push::Stream(f) => f.frame.len() + std::mem::size_of::<StreamFrame>(),
        }
    }
}

/// A group-stream message as every member connection writes it: the whole `ServerFrame`
/// (an `Envelope` with seq 0 and its group position), encoded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFrame {
    /// Where it sits in its group.
    pub position: GroupPosition,
    /// When it was committed, ms.
    pub server_ts: u64,
    /// The encoded frame.
    pub frame: Bytes,
}

impl StreamFrame {
    /// Encodes a stream message (`envelope.group` must be set; seq is written as 0).
    pub fn new(envelope: &StoredEnvelope) -> Self {
        let position = envelope.group.unwrap_or(GroupPosition { group: Uuid::nil(), seq: 0 });
        let env = Envelope {
            seq: 0,
            server_timestamp: envelope.server_ts,
            kind: envelope.kind,
            content: envelope.content.clone(),
            group_id: position.group.as_bytes().to_vec().into(),
            group_seq: position.seq,
        };
        let frame = ServerFrame::from(server_frame::Frame::Envelope(env)).to_bytes();
        StreamFrame { position, server_ts: envelope.server_ts, frame: frame.into() }
    }
}

/// How much one connection's queue may hold.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimit {
    /// Pushes.
    pub pushes: usize,
    /// Bytes, as counted by [`Push::cost`].
    pub bytes: usize,
}

#[derive(Debug, Default)]
struct Queue {
    pushes: VecDeque<Push>,
    bytes: usize,
}

/// Why the hub asks a connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseRequest {
    /// Nothing asked.
    None = 0,
    /// The same device connected again.
    Replaced = 1,
    /// The device was removed.
    Removed = 2,
}

/// Everything the hub hands one connection: queued pushes (bounded; when full the
/// connection is marked lagged instead) and out-of-band signals (never dropped).
/// The queue allocates only while it holds pushes, so an idle connection costs little.
#[derive(Debug, Default)]
pub struct Signal {
    notify: Notify,
    lagged: AtomicBool,
    close: AtomicU8,
    queue: Mutex<Queue>,
}

impl Signal {
    /// Waits until something is signalled.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Takes every queued push, oldest first.
    pub fn drain(&self) -> VecDeque<Push> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner())).pushes
    }

    fn push(&self, push: Push, limit: QueueLimit) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let cost = push.cost();
        if queue.pushes.len() >= limit.pushes || queue.bytes + cost > limit.bytes {
            drop(queue);
            self.mark_lagged();
            return;
        }
        queue.pushes.push_back(push);
        queue.bytes += cost;
        drop(queue);
        self.notify.notify_one();
    }

    /// Whether pushes were dropped since the last call (and clears it).
    pub fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }

    /// The close request, if any.
    pub fn close_request(&self) -> CloseRequest {
        match self.close.load(Ordering::Acquire) {
            1 => CloseRequest::Replaced,
            2 => CloseRequest::Removed,
            _ => CloseRequest::None,
        }
    }

    fn request_close(&self, why: CloseRequest) {
        self.close.store(why as u8, Ordering::Release);
        self.notify.notify_one();
    }

    fn mark_lagged(&self) {
        self.lagged.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

struct Entry {
    conn_id: u64,
    /// When the connection was admitted ([`crate::ws::admission::Ticket::seq`]).
    admitted: u64,
    signal: Arc<Signal>,
}

/// A connection's registration.
pub struct Registration {
    /// Identifies this connection (a device's later connection has a higher id).
    pub conn_id: u64,
    /// Pushes and signals for this connection.
    pub signal: Arc<Signal>,
    /// A connection of the same device admitted later is registered: this one is stale (a
    /// socket its client gave up on) and was not registered; close it as replaced.
    pub stale: bool,
}

/// The routing table of one node.
pub struct Hub {
    entries: Mutex<HashMap<DeviceKey, Entry>>,
    next_conn: AtomicU64,
    limit: QueueLimit,
    /// Provisioning sockets open on this node.
    pub provisioning: ProvisioningChannels,
}

/// The provisioning sockets (`/v1/provisioning`) open on this node, by address; each takes
/// one message. Which node holds an address is in the store, for every node to see.
#[derive(Default)]
pub struct ProvisioningChannels {
    open: Mutex<HashMap<String, tokio::sync::oneshot::Sender<Bytes>>>,
}

impl ProvisioningChannels {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, tokio::sync::oneshot::Sender<Bytes>>> {
        // Single inserts and removes: a panic cannot leave the map inconsistent.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens `address`; its one message arrives on the receiver.
    pub fn open(&self, address: String) -> tokio::sync::oneshot::Receiver<Bytes> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().insert(address, tx);
        rx
    }

    /// Hands `body` to the socket of `address`: false if no socket here has it (any more).
    pub fn deliver(&self, address: &str, body: Bytes) -> bool {
        let sender = self.lock().remove(address);
        sender.is_some_and(|tx| tx.send(body).is_ok())
    }

    /// Forgets `address` (its socket ended).
    pub fn close(&self, address: &str) {
        self.lock().remove(address);
    }

    /// Sockets open here.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is open here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Hub {
    /// A hub whose per-connection queues hold at most `limit`.
    pub fn new(limit: QueueLimit) -> Self {
        let limit = QueueLimit { pushes: limit.pushes.max(1), bytes: limit.bytes.max(1) };
        Hub {
            entries: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            limit,
            provisioning: ProvisioningChannels::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<DeviceKey, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single insert/remove/get), so poisoning is ignored.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection for `device` admitted at `admitted`; an existing connection of
    /// the same device admitted earlier is asked to close. If the existing one was admitted
    /// later, the new one is the stale one (its login finished late, after its client had
    /// moved on): it is not registered, and its registration says so.
    pub fn register(&self, device: DeviceKey, admitted: u64) -> Registration {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(Signal::default());
        let mut entries = self.lock();
        if entries.get(&device).is_some_and(|e| e.admitted > admitted) {
            drop(entries);
            signal.request_close(CloseRequest::Replaced);
            return Registration { conn_id, signal, stale: true };
        }
        let old = entries.insert(device, Entry { conn_id, admitted, signal: signal.clone() });
        drop(entries);
        if let Some(old) = old {
            old.signal.request_close(CloseRequest::Replaced);
        }
        Registration { conn_id, signal, stale: false }
    }

    /// Removes the registration of connection `conn_id` (not a newer one of the same device).
    pub fn unregister(&self, device: DeviceKey, conn_id: u64) {
        let mut entries = self.lock();
        if entries.get(&device).is_some_and(|e| e.conn_id == conn_id) {
            entries.remove(&device);
        }
    }

    /// Hands a push to the device's connection. Returns false if it is not connected here.
    pub fn deliver(&self, device: DeviceKey, push: Push) -> bool {
        let entries = self.lock();
        let Some(entry) = entries.get(&device) else { return false };
        entry.signal.push(push, self.limit);
        true
    }

    /// Hands a stream message to the connections of `devices` here, under one lock; gives
    /// the devices not connected here.
    pub fn deliver_stream(&self, devices: &[DeviceKey], frame: &Arc<StreamFrame>) -> Vec<DeviceKey> {
        let mut absent = Vec::new();
        let entries = self.lock();
        for device in devices {
            match entries.get(device) {
                Some(entry) => entry.signal.push(Push::Stream(frame.clone()), self.limit),
                None => absent.push(*device),
            }
        }
        absent
    }

    /// Tells the device's connection to re-read its mailbox (a wake-up from another node).
    /// Returns false if it is not connected here.
    pub fn wake(&self, device: DeviceKey) -> bool {
        let entries = self.lock();
        let Some(entry) = entries.get(&device) else { return false };
        entry.signal.mark_lagged();
        true
    }

    /// Wakes every connection here (after a gap in cross-node wake-ups).
    pub fn wake_all(&self) {
        for entry in self.lock().values() {
            entry.signal.mark_lagged();
        }
    }

    /// Closes the device's connection here because it connected to another node.
    pub fn replaced_elsewhere(&self, device: DeviceKey) {
        if let Some(entry) = self.lock().remove(&device) {
            entry.signal.request_close(CloseRequest::Replaced);
        }
    }

    /// The devices connected here.
    pub fn devices(&self) -> Vec<DeviceKey> {
        self.lock().keys().copied().collect()
    }

    /// Asks the device's connection to close because the device was removed.
    pub fn remove_device(&self, device: DeviceKey) {
        if let Some(entry) = self.lock().remove(&device) {
            entry.signal.request_close(CloseRequest::Removed);
        }
    }

    /// Whether the device has a connection here.
    pub fn is_connected(&self, device: DeviceKey) -> bool {
        self.lock().contains_key(&device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(seq: u64) -> Box<StoredEnvelope> {
        Box::new(StoredEnvelope { seq, server_ts: 1, kind: 1, content: Bytes::new(), group: None })
    }

    fn pushes(n: usize) -> QueueLimit {
        QueueLimit { pushes: n, bytes: usize::MAX }
    }

    #[test]
    fn second_registration_closes_the_first_and_keeps_the_second() {
        let hub = Hub::new(pushes(4));
        let dev = DeviceKey { account: Uuid::nil(), device_id: 1 };
        let first = hub.register(dev, 1);
        let second = hub.register(dev, 2);
        assert_eq!(first.signal.close_request(), CloseRequest::Replaced);
        hub.unregister(dev, first.conn_id); // the old connection leaving must not remove the new one
        assert!(hub.deliver(dev, Push::Stored(env(1))));
        assert!(matches!(second.signal.drain().pop_front(), Some(Push::Stored(e)) if e.seq == 1));
    }

    #[test]
    fn a_connection_admitted_earlier_does_not_replace_one_admitted_later() {
        let hub = Hub::new(pushes(4));
        let dev = DeviceKey { account: Uuid::nil(), device_id: 5 };
        let newer = hub.register(dev, 8);
        let stale = hub.register(dev, 7);
        assert!(stale.stale && !newer.stale);
        assert_eq!(stale.signal.close_request(), CloseRequest::Replaced);
        assert_eq!(newer.signal.close_request(), CloseRequest::None, "the live connection was asked to close");
        hub.unregister(dev, stale.conn_id);
        assert!(hub.deliver(dev, Push::Stored(env(1))));
        assert!(matches!(newer.signal.drain().pop_front(), Some(Push::Stored(e)) if e.seq == 1));
    }

    #[test]
    fn full_queue_marks_lagged_instead_of_dropping_silently() {
        let hub = Hub::new(pushes(1));
        let dev = DeviceKey { account: Uuid::nil(), device_id: 2 };
        let reg = hub.register(dev, 1);
        assert!(hub.deliver(dev, Push::Stored(env(1))));
        assert!(!reg.signal.take_lagged());
        assert!(hub.deliver(dev, Push::Stored(env(2))));
        assert!(reg.signal.take_lagged());
    }

    #[test]
    fn unknown_device_is_not_connected() {
        let hub = Hub::new(pushes(1));
        let dev = DeviceKey { account: Uuid::nil(), device_id: 3 };
        assert!(!hub.deliver(dev, Push::Stored(env(1))));
    }

    #[test]
    fn a_queue_full_in_bytes_marks_lagged_so_a_stalled_reader_pins_little() {
        let hub = Hub::new(QueueLimit { pushes: 1000, bytes: 200_000 });
        let dev = DeviceKey { account: Uuid::nil(), device_id: 4 };
        let reg = hub.register(dev, 1);
        let big = |seq| {
            Box::new(StoredEnvelope {
                seq,
                server_ts: 1,
                kind: 1,
                content: Bytes::from(vec![0; 90 * 1024]),
                group: None,
            })
        };
        assert!(hub.deliver(dev, Push::Stored(big(1))));
        assert!(hub.deliver(dev, Push::Stored(big(2))));
        assert!(!reg.signal.take_lagged());
        assert!(hub.deliver(dev, Push::Stored(big(3))));
        assert!(reg.signal.take_lagged(), "a third 90 KiB push exceeds 200 KB");
        assert_eq!(reg.signal.drain().len(), 2);
        // Draining frees the budget again.
        assert!(hub.deliver(dev, Push::Stored(big(4))));
        assert!(!reg.signal.take_lagged());
    }
}
