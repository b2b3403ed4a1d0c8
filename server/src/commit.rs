//! Group commit: every write of the send path (one-to-one sends, group messages,
//! sender-key distributions) and every ack goes through one writer task, which takes
//! whatever has queued up while the previous transaction was committing and
//! commits it together. Durability then costs one fsync per batch, not per message.
//!
//! Writes and acks queue apart, and each round commits the writes first: a sender waits
//! for at most the round in progress and its own, never behind a queue of acks (a
//! reconnect storm queues tens of thousands of them: every reconnecting device acks its
//! backlog). Acks follow in the same round.
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

/// Most operations of each kind in one round.
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

/// A queued write, where its answer goes, and when it was queued.
struct WriteOp(Box<Write>, Urgency, oneshot::Sender<SendResult>, std::time::Instant);

enum AckOp {
    Mailbox(MailboxId, Vec<u64>),
    Streams(Vec<StreamAck>),
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct Committer {
    writes: mpsc::Sender<WriteOp>,
    acks: mpsc::Sender<AckOp>,
}

/// Why a request could not be queued.
#[derive(Debug, thiserror::Error)]
#[error("the writer has stopped (server shutting down)")]
pub struct WriterStopped;

impl Committer {
    /// Starts the writer on a thread of its own, with a single-threaded runtime: its wake-ups
    /// (each statement's answer from the database) never queue behind the connection tasks,
    /// which a reconnect storm makes thousands of. It stops when every `Committer` clone is
    /// dropped, after draining its queues; the handle resolves then.
    pub fn spawn(writer: Writer) -> Result<(Self, tokio::task::JoinHandle<()>), std::io::Error> {
        let (writes, writes_rx) = mpsc::channel(MAX_BATCH * 4);
        let (acks, acks_rx) = mpsc::channel(MAX_BATCH * 4);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let queues = Queues { writes: writes_rx, acks: acks_rx };
        let (done, stopped) = oneshot::channel::<()>();
        // A thread, not `spawn_blocking`: a blocking task in flight keeps a paused test clock
        // from advancing.
        std::thread::Builder::new().name("hushd-writer".into()).spawn(move || {
            runtime.block_on(run(queues, writer));
            let _ = done.send(());
        })?;
        let handle = tokio::spawn(async move {
            let _ = stopped.await;
        });
        Ok((Committer { writes, acks }, handle))
    }

    /// Queues a write; the answer arrives once it is committed (or refused). Offline target
    /// devices are woken as `urgency` says, after the commit.
    pub async fn write(&self, write: Write, urgency: Urgency) -> Result<oneshot::Receiver<SendResult>, WriterStopped> {
        let (reply, rx) = oneshot::channel();
        let op = WriteOp(Box::new(write), urgency, reply, std::time::Instant::now());
        self.writes.send(op).await.map_err(|_| WriterStopped)?;
        Ok(rx)
    }

    /// Queues the deletion of acknowledged envelopes.
    pub async fn ack(&self, mailbox: MailboxId, seqs: Vec<u64>) -> Result<(), WriterStopped> {
        self.acks.send(AckOp::Mailbox(mailbox, seqs)).await.map_err(|_| WriterStopped)
    }

    /// Queues advancing group-stream cursors if the queue has room now (an optimization the
    /// next ack makes up for when it has not).
    pub fn try_ack_streams(&self, acks: Vec<StreamAck>) {
        let _ = self.acks.try_send(AckOp::Streams(acks));
    }

    /// Queues advancing group-stream cursors.
    pub async fn ack_streams(&self, acks: Vec<StreamAck>) -> Result<(), WriterStopped> {
        self.acks.send(AckOp::Streams(acks)).await.map_err(|_| WriterStopped)
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

/// The writer's two queues.
struct Queues {
    writes: mpsc::Receiver<WriteOp>,
    acks: mpsc::Receiver<AckOp>,
}

impl Queues {
    /// Waits until either queue has something, then takes what both hold (up to
    /// [`MAX_BATCH`] each); false once both are closed and empty.
    async fn next_round(&mut self, writes: &mut Vec<WriteOp>, acks: &mut Vec<AckOp>) -> bool {
        let (mut writes_open, mut acks_open) = (true, true);
        while writes.is_empty() && acks.is_empty() {
            if !writes_open && !acks_open {
                return false;
            }
            tokio::select! {
                biased;
                n = self.writes.recv_many(writes, MAX_BATCH), if writes_open => writes_open = n > 0,
                n = self.acks.recv_many(acks, MAX_BATCH), if acks_open => acks_open = n > 0,
            }
        }
        while writes.len() < MAX_BATCH
            && let Ok(op) = self.writes.try_recv()
        {
            writes.push(op);
        }
        while acks.len() < MAX_BATCH
            && let Ok(op) = self.acks.try_recv()
        {
            acks.push(op);
        }
        true
    }
}

async fn run(mut queues: Queues, writer: Writer) {
    let mut writes = Vec::with_capacity(MAX_BATCH);
    let mut acks = Vec::with_capacity(MAX_BATCH);
    while queues.next_round(&mut writes, &mut acks).await {
        if !writes.is_empty() {
            commit_writes(&writer, std::mem::take(&mut writes)).await;
        }
        if !acks.is_empty() {
            apply_acks(writer.store.as_ref(), acks.drain(..)).await;
        }
    }
}

/// Deletes acknowledged envelopes and advances stream cursors: what a failure loses is
/// only that these are delivered again.
async fn apply_acks(store: &dyn Store, ops: impl Iterator<Item = AckOp>) {
    let (mut acks, mut stream_acks) = (Vec::new(), Vec::new());
    for op in ops {
        match op {
            AckOp::Mailbox(mailbox, seqs) => acks.push((mailbox, seqs)),
            AckOp::Streams(list) => stream_acks.extend(list),
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
}

/// Commits one round of writes, then answers each sender, then delivers.
async fn commit_writes(writer: &Writer, ops: Vec<WriteOp>) {
    let Writer { store, hub, cluster, max_mailbox, pusher } = writer;
    let mut items = Vec::with_capacity(ops.len());
    let mut replies = Vec::with_capacity(ops.len());
    let mut urgencies = Vec::with_capacity(ops.len());
    let mut queued_at = Vec::with_capacity(ops.len());
    for WriteOp(item, urgency, reply, queued) in ops {
        items.push(*item);
        urgencies.push(urgency);
        replies.push(reply);
        queued_at.push(queued);
    }
    metrics::histogram!(m::COMMIT_BATCH).record(items.len() as f64);
    let result = store.commit(&items, *max_mailbox).await;
    let waits = metrics::histogram!(m::COMMIT_WAIT);
    for queued in queued_at {
        waits.record(queued.elapsed().as_secs_f64());
    }
    match result {
        Ok(outcomes) => {
            let mut elsewhere = Vec::new();
            let (mut urgent, mut background) = (Vec::new(), Vec::new());
            for (((outcome, reply), item), urgency) in outcomes.into_iter().zip(replies).zip(&items).zip(urgencies) {
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
                            // Mailbox wake-ups for other nodes committed before it go first.
                            deliver_elsewhere(cluster.as_deref(), std::mem::take(&mut elsewhere));
                            let absent = deliver_stream(hub, cluster.as_deref(), *streamed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SendItem;

    fn write() -> (WriteOp, oneshot::Receiver<SendResult>) {
        let device = DeviceKey { account: uuid::Uuid::nil(), device_id: 1 };
        let item = SendItem { sender: device, recipients: vec![], server_ts: 1, expires_at: 2, idempotency_key: None };
        let (reply, rx) = oneshot::channel();
        (WriteOp(Box::new(Write::Direct(item)), Urgency::Urgent, reply, std::time::Instant::now()), rx)
    }

    /// A reconnect storm queues tens of thousands of acks (every reconnecting device acks its
    /// backlog); a send queued after them goes in the next round, not behind all of them
    /// (regression: one queue in order kept connected devices' sends waiting for seconds).
    #[tokio::test]
    async fn a_write_queued_behind_thousands_of_acks_goes_in_the_next_round() {
        let (writes_tx, writes) = mpsc::channel(MAX_BATCH * 4);
        let (acks_tx, acks) = mpsc::channel(MAX_BATCH * 4);
        for seq in 0..3_000 {
            acks_tx.try_send(AckOp::Mailbox(MailboxId(1), vec![seq])).unwrap_or_else(|_| panic!("ack queue full"));
        }
        let (op, _answer) = write();
        writes_tx.try_send(op).unwrap_or_else(|_| panic!("write queue full"));
        let mut queues = Queues { writes, acks };
        let (mut round_writes, mut round_acks) = (Vec::new(), Vec::new());
        assert!(queues.next_round(&mut round_writes, &mut round_acks).await);
        assert_eq!(round_writes.len(), 1, "the write is in the first round");
        assert_eq!(round_acks.len(), MAX_BATCH, "a round takes at most MAX_BATCH acks");
        // The rest of the acks follow in later rounds; closed and empty ends the writer.
        drop((writes_tx, acks_tx));
        let mut rounds = 1;
        loop {
            round_writes.clear();
            round_acks.clear();
            if !queues.next_round(&mut round_writes, &mut round_acks).await {
                break;
            }
            rounds += 1;
        }
        assert_eq!(rounds, 3_000usize.div_ceil(MAX_BATCH));
    }
}
