//! Coalesced reads for the connection path. When thousands of devices reconnect at once
//! (after a restart or a network blip), each needs its device row to authenticate and a first
//! mailbox read. One query per connection would queue them all on the database pool; here
//! the reads that arrive while a query runs are answered together by the next one
//! ([`super::AccountStore::devices_by_keys`], [`super::MailboxStore::fetch_many`],
//! [`super::MailboxStore::stream_cursors`]). A lone read goes out at once: it waits for
//! nothing but a free query slot.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Device, DeviceKey, MailboxId, MailboxRead, Store, StoreError, StoredEnvelope, StreamCursor, StreamRead};

/// Reads one batch may carry (SQLite allows 500 terms in a compound select).
pub const MAX_BATCH: usize = 256;
/// Batched queries in flight at once, per kind of read.
pub const CONCURRENT_QUERIES: usize = 4;

type Answer<V> = oneshot::Sender<Result<V, StoreError>>;

/// Queues single reads and runs them in batches.
struct Batcher<K, V> {
    tx: mpsc::UnboundedSender<(K, Answer<V>)>,
}

impl<K: Send + 'static, V: Send + 'static> Batcher<K, V> {
    /// Starts the batching task; `run` answers a batch with one value per key, in order.
    fn spawn<F, Fut>(run: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<V>, StoreError>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(K, Answer<V>)>();
        let slots = Arc::new(Semaphore::new(CONCURRENT_QUERIES));
        tokio::spawn(async move {
            // Ends when every handle is gone and the queue is empty.
            while let Some(first) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                // Whatever queued while we waited for a slot goes in the same query.
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH
                    && let Ok(next) = rx.try_recv()
                {
                    batch.push(next);
                }
                let (keys, answers): (Vec<K>, Vec<Answer<V>>) = batch.into_iter().unzip();
                let query = run(keys);
                tokio::spawn(async move {
                    let result = query.await;
                    drop(slot);
                    match result {
                        Ok(values) if values.len() == answers.len() => {
                            for (answer, value) in answers.into_iter().zip(values) {
                                let _ = answer.send(Ok(value));
                            }
                        }
                        Ok(_) => {
                            for answer in answers {
                                let _ = answer.send(Err(StoreError::Backend("a batched read lost its answers".into())));
                            }
                        }
                        Err(e) => {
                            let message = e.to_string();
                            for answer in answers {
                                let _ = answer.send(Err(StoreError::Backend(message.clone().into())));
                            }
                        }
                    }
                });
            }
        });
        Batcher { tx }
    }

    async fn load(&self, key: K) -> Result<V, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.tx.send((key, answer)).map_err(|_| StoreError::Backend("the read batcher has stopped".into()))?;
        answered.await.map_err(|_| StoreError::Backend("the read batcher dropped a read".into()))?
    }
}

/// The connection path's reads, batched. Must be created inside a tokio runtime.
pub struct Reads {
    devices: Batcher<DeviceKey, Option<Device>>,
    fetches: Batcher<MailboxRead, Vec<StoredEnvelope>>,
    cursors: Batcher<MailboxId, Vec<StreamCursor>>,
    store: Arc<dyn Store>,
}

impl Reads {
    /// Batches reads of `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let for_devices = store.clone();
        let devices = Batcher::spawn(move |keys: Vec<DeviceKey>| {
            let store = for_devices.clone();
            async move { store.devices_by_keys(&keys).await }
        });
        let for_fetches = store.clone();
        let fetches = Batcher::spawn(move |reads: Vec<MailboxRead>| {
            let store = for_fetches.clone();
            async move { store.fetch_many(&reads).await }
        });
        let for_cursors = store.clone();
        let cursors = Batcher::spawn(move |mailboxes: Vec<MailboxId>| {
            let store = for_cursors.clone();
            async move { store.stream_cursors(&mailboxes).await }
        });
        Reads { devices, fetches, cursors, store }
    }

    /// One device, as [`super::AccountStore::device`].
    pub async fn device(&self, key: DeviceKey) -> Result<Option<Device>, StoreError> {
        self.devices.load(key).await
    }

    /// One mailbox read, as [`super::MailboxStore::fetch`].
    pub async fn fetch(&self, read: MailboxRead) -> Result<Vec<StoredEnvelope>, StoreError> {
        self.fetches.load(read).await
    }

    /// One device's group-stream cursors, as [`super::MailboxStore::stream_cursors`]. Most
    /// devices read no stream: on connect this is one more batched read, and then nothing.
    pub async fn stream_cursors(&self, mailbox: MailboxId) -> Result<Vec<StreamCursor>, StoreError> {
        self.cursors.load(mailbox).await
    }

    /// One device's group-stream reads, as [`super::MailboxStore::fetch_streams`] (not
    /// batched across devices: only devices in stream-read groups make them).
    pub async fn fetch_streams(&self, reads: &[StreamRead]) -> Result<Vec<Vec<StoredEnvelope>>, StoreError> {
        self.store.fetch_streams(reads).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !cond() {
                tokio::task::yield_now().await;
            }
        });
        waited.await.unwrap_or_else(|_| panic!("timed out waiting until {what}"));
    }

    #[tokio::test]
    async fn reads_that_queue_behind_busy_queries_go_out_together() {
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let batcher = {
            let (calls, gate) = (calls.clone(), gate.clone());
            Arc::new(Batcher::spawn(move |keys: Vec<u32>| {
                let (calls, gate) = (calls.clone(), gate.clone());
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let _open = gate.acquire().await;
                    Ok(keys.into_iter().map(|k| k * 10).collect())
                }
            }))
        };
        let load = |k: u32| {
            let b = batcher.clone();
            tokio::spawn(async move { b.load(k).await })
        };
        // Lone reads go out at once, one query each, until every query slot is busy.
        let mut loads = Vec::new();
        for k in 0..CONCURRENT_QUERIES as u32 {
            loads.push(load(k));
            until("a lone read is queried", || calls.load(Ordering::SeqCst) == k as usize + 1).await;
        }
        // The rest queue behind them and go out together.
        for k in CONCURRENT_QUERIES as u32..100 {
            loads.push(load(k));
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1000);
        for (k, load) in loads.into_iter().enumerate() {
            let got = load.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, k as u32 * 10, "each read gets its own answer");
        }
        assert_eq!(calls.load(Ordering::SeqCst), CONCURRENT_QUERIES + 1, "96 queued reads took one query");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_reads_and_the_next_batch_works() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let batcher = {
            let fail = fail.clone();
            Batcher::spawn(move |keys: Vec<u32>| {
                let fail = fail.swap(false, Ordering::SeqCst);
                async move { if fail { Err(StoreError::Backend("down".into())) } else { Ok(keys) } }
            })
        };
        assert!(matches!(batcher.load(1).await, Err(StoreError::Backend(m)) if m.to_string().contains("down")));
        assert_eq!(batcher.load(2).await.unwrap_or_else(|e| panic!("{e}")), 2);
    }
}
