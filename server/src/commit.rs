//! Group commit: every write of the send path (one-to-one sends, group messages,
//! sender-key distributions) and every ack goes through one writer task, which takes
//! whatever has queued up while the previous transaction was committing and
//! commits it together. Durability then costs one fsync per batch, not per message.
//!
//! The order is the delivery contract's: persist, then answer the sender, then
//! wake the recipients' connections.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::cluster::Cluster;
use crate::hub::{Hub, Push, StreamFrame};
use crate::metrics as m;
use crate::push::{Pusher, Urgency};
use crate::store::{Accepted, DeviceKey, MailboxId, SendRejection, Store, StreamAck, Streamed, Write};

/// Most operations in one transaction.
const MAX_BATCH: usize = 1024;

/// The outcome of a write, as the writer reports it.
#[derive(Debug)]
pub enum SendResult {
    /// Stored in every target mailbox at `server_ts` (now, or by an earlier write with the
    /// same idempotency key, whose timestamp this is); a group message with its group seq.
    Stored {
        /// When it was committed.
        server_ts: u64,
        /// A group message's group seq.
        group_seq: Option<u64>,
    },
    /// Refused; nothing stored.
    Rejected(SendRejection),
    /// The database failed; nothing stored.
    Failed,
}

enum Op {
    Write(Box<Write>, Urgency, oneshot::Sender<SendResult>),
    Ack(MailboxId, Vec<u64>),
    StreamAck(Vec<StreamAck>),
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Op>,
}

/// Why a request could not be queued.
#[derive(Debug, thiserror::Error)]
#[error("the writer has stopped (server shutting down)")]
pub struct WriterStopped;

impl Committer {
    /// Starts the writer. It stops when every `Committer` clone is dropped, after draining its queue.
    pub fn spawn(writer: Writer) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let handle = tokio::spawn(run(rx, writer));
        (Committer { tx }, handle)
    }

    /// Queues a write; the answer arrives once it is committed (or refused). Offline target
    /// devices are woken as `urgency` says, after the commit.
    pub async fn write(&self, write: Write, urgency: Urgency) -> Result<oneshot::Receiver<SendResult>, WriterStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Op::Write(Box::new(write), urgency, reply)).await.map_err(|_| WriterStopped)?;
        Ok(rx)
    }

    /// Queues the deletion of acknowledged envelopes.
    pub async fn ack(&self, mailbox: MailboxId, seqs: Vec<u64>) -> Result<(), WriterStopped> {
        self.tx.send(Op::Ack(mailbox, seqs)).await.map_err(|_| WriterStopped)
    }

    /// Queues advancing group-stream cursors.
    pub async fn ack_streams(&self, acks: Vec<StreamAck>) -> Result<(), WriterStopped> {
        self.tx.send(Op::StreamAck(acks)).await.map_err(|_| WriterStopped)
    }
}

/// What the writer task works with.
pub struct Writer {
    /// The store to commit to.
    pub store: Arc<dyn Store>,
    /// Local connections to wake.
    pub hub: Arc<Hub>,
    /// Other nodes to wake, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// Mailbox limit.
    pub max_mailbox: u64,
    /// Wakes devices not connected here (it checks the other nodes itself).
    pub pusher: Pusher,
}

async fn run(mut rx: mpsc::Receiver<Op>, writer: Writer) {
    let Writer { store, hub, cluster, max_mailbox, pusher } = writer;
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        let mut items = Vec::new();
        let mut replies = Vec::new();
        let mut urgencies = Vec::new();
        let mut acks = Vec::new();
        let mut stream_acks = Vec::new();
        for op in ops.drain(..) {
            match op {
                Op::Write(item, urgency, reply) => {
                    items.push(*item);
                    urgencies.push(urgency);
                    replies.push(reply);
                }
                Op::Ack(mailbox, seqs) => acks.push((mailbox, seqs)),
                Op::StreamAck(list) => stream_acks.extend(list),
            }
        }
        if !stream_acks.is_empty()
            && let Err(e) = store.ack_streams(&stream_acks).await
        {
            tracing::error!(error = %e, "advancing group-stream cursors failed; those messages will be redelivered");
        }
        if !acks.is_empty() {
            match store.ack(&acks).await {
                Ok(n) => metrics::counter!(m::ACKED).increment(n),
                Err(e) => {
                    tracing::error!(error = %e, "deleting acknowledged envelopes failed; they will be redelivered")
                }
            }
        }
        if items.is_empty() {
            continue;
        }
        metrics::histogram!(m::COMMIT_BATCH).record(items.len() as f64);
        match store.commit(&items, max_mailbox).await {
            Ok(outcomes) => {
                let mut elsewhere = Vec::new();
                let (mut urgent, mut background) = (Vec::new(), Vec::new());
                for (((outcome, reply), item), urgency) in outcomes.into_iter().zip(replies).zip(&items).zip(urgencies)
                {
                    match outcome {
                        Ok(Accepted::Duplicate { server_ts, group_seq }) => {
                            metrics::counter!(m::SENDS_DEDUPLICATED).increment(1);
                            let _ = reply.send(SendResult::Stored { server_ts, group_seq });
                        }
                        Ok(Accepted::Stored { committed, group_seq, streamed }) => {
                            metrics::counter!(m::ACCEPTED).increment(committed.len() as u64);
                            let _ = reply.send(SendResult::Stored { server_ts: item.server_ts(), group_seq });
                            if let Some(streamed) = streamed {
                                metrics::counter!(m::ACCEPTED).increment(1);
                                let absent = deliver_stream(&hub, cluster.as_deref(), *streamed);
                                match urgency {
                                    Urgency::Urgent => urgent.extend(absent),
                                    Urgency::Background => background.extend(absent),
                                }
                            }
                            for c in committed {
                                if !hub.deliver(c.device, Push::Stored(Box::new(c.envelope))) {
                                    elsewhere.push(c.device);
                                    match urgency {
                                        Urgency::Urgent => urgent.push(c.device),
                                        Urgency::Background => background.push(c.device),
                                    }
                                }
                            }
                        }
                        Err(rejection) => {
                            let _ = reply.send(SendResult::Rejected(rejection));
                        }
                    }
                }
                deliver_elsewhere(cluster.as_deref(), elsewhere);
                pusher.committed(urgent, Urgency::Urgent);
                pusher.committed(background, Urgency::Background);
            }
            Err(e) => {
                tracing::error!(error = %e, batch = items.len(), "committing sends failed; senders are told to retry");
                for reply in replies {
                    let _ = reply.send(SendResult::Failed);
                }
            }
        }
    }
}

/// What a roster change committed, to deliver.
pub struct RosterDelivery {
    /// Mailbox references (a fan-out-on-write group).
    pub committed: Vec<crate::store::Committed>,
    /// The stream message (a stream-read group).
    pub streamed: Option<Streamed>,
    /// Devices whose mailboxes got moved stream messages: they re-read them.
    pub moved: Vec<DeviceKey>,
}

/// Hands committed envelopes to the local connections, wakes other nodes for devices not
/// connected here, and queues background wake-ups for those offline everywhere: the last
/// step of persist, answer, deliver (roster changes, which never wake a phone at once).
pub fn deliver(hub: &Hub, cluster: Option<&Cluster>, pusher: &Pusher, done: RosterDelivery) {
    let mut elsewhere = Vec::new();
    for c in done.committed {
        if !hub.deliver(c.device, Push::Stored(Box::new(c.envelope))) {
            elsewhere.push(c.device);
        }
    }
    for device in done.moved {
        if !hub.wake(device) && !elsewhere.contains(&device) {
            elsewhere.push(device);
        }
    }
    if let Some(streamed) = done.streamed {
        let absent = deliver_stream(hub, cluster, streamed);
        pusher.committed(absent, Urgency::Background);
    }
    pusher.committed(elsewhere.clone(), Urgency::Background);
    deliver_elsewhere(cluster, elsewhere);
}

/// Hands a stream message, encoded once, to the member connections here and, in one
/// message on the cluster bus, to the other nodes; gives the devices not connected here
/// (for wake-ups: the push layer checks the other nodes itself).
fn deliver_stream(hub: &Hub, cluster: Option<&Cluster>, streamed: Streamed) -> Vec<DeviceKey> {
    let frame = Arc::new(StreamFrame::new(&streamed.envelope));
    let absent = hub.deliver_stream(&streamed.devices, &frame);
    if let Some(cluster) = cluster
        && !absent.is_empty()
    {
        cluster.stream_elsewhere(frame, absent.clone());
    }
    absent
}

fn deliver_elsewhere(cluster: Option<&Cluster>, devices: Vec<crate::store::DeviceKey>) {
    if let Some(cluster) = cluster
        && !devices.is_empty()
    {
        cluster.committed_elsewhere(devices);
    }
}
