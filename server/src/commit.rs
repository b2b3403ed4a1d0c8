//! Group commit: every send and ack goes through one writer task, which takes
//! whatever has queued up while the previous transaction was committing and
//! commits it together. Durability then costs one fsync per batch, not per message.
//!
//! The order is the delivery contract's: persist, then answer the sender, then
//! wake the recipients' connections.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::cluster::Cluster;
use crate::hub::{Hub, Push};
use crate::metrics as m;
use crate::store::{Accepted, MailboxId, SendItem, SendRejection, Store};

/// Most operations in one transaction.
const MAX_BATCH: usize = 1024;

/// The outcome of a send, as the writer reports it.
#[derive(Debug)]
pub enum SendResult {
    /// Stored in every target mailbox at this server timestamp (now, or by an earlier send
    /// with the same idempotency key, whose timestamp this is).
    Stored(u64),
    /// Refused; nothing stored.
    Rejected(SendRejection),
    /// The database failed; nothing stored.
    Failed,
}

enum Op {
    Send(SendItem, oneshot::Sender<SendResult>),
    Ack(MailboxId, Vec<u64>),
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

    /// Queues a send; the answer arrives once it is committed (or refused).
    pub async fn send(&self, item: SendItem) -> Result<oneshot::Receiver<SendResult>, WriterStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Op::Send(item, reply)).await.map_err(|_| WriterStopped)?;
        Ok(rx)
    }

    /// Queues the deletion of acknowledged envelopes.
    pub async fn ack(&self, mailbox: MailboxId, seqs: Vec<u64>) -> Result<(), WriterStopped> {
        self.tx.send(Op::Ack(mailbox, seqs)).await.map_err(|_| WriterStopped)
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
}

async fn run(mut rx: mpsc::Receiver<Op>, writer: Writer) {
    let Writer { store, hub, cluster, max_mailbox } = writer;
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        let mut items = Vec::new();
        let mut replies = Vec::new();
        let mut acks = Vec::new();
        for op in ops.drain(..) {
            match op {
                Op::Send(item, reply) => {
                    items.push(item);
                    replies.push(reply);
                }
                Op::Ack(mailbox, seqs) => acks.push((mailbox, seqs)),
            }
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
        match store.commit_sends(&items, max_mailbox).await {
            Ok(outcomes) => {
                let mut elsewhere = Vec::new();
                for ((outcome, reply), item) in outcomes.into_iter().zip(replies).zip(&items) {
                    match outcome {
                        Ok(Accepted::Duplicate { server_ts }) => {
                            metrics::counter!(m::SENDS_DEDUPLICATED).increment(1);
                            let _ = reply.send(SendResult::Stored(server_ts));
                        }
                        Ok(Accepted::Stored(committed)) => {
                            metrics::counter!(m::ACCEPTED).increment(committed.len() as u64);
                            let _ = reply.send(SendResult::Stored(item.server_ts));
                            for c in committed {
                                if !hub.deliver(c.device, Push::Stored(Box::new(c.envelope))) {
                                    elsewhere.push(c.device);
                                }
                            }
                        }
                        Err(rejection) => {
                            let _ = reply.send(SendResult::Rejected(rejection));
                        }
                    }
                }
                if let Some(cluster) = &cluster {
                    cluster.committed_elsewhere(elsewhere);
                }
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
