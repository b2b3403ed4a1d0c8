//! Crash durability: one-to-one traffic while the spawned hushd is SIGKILLed and restarted
//! on the same data, with clients that reconnect and resend what was not answered.
//!
//! Counted per message (a sender's number): *acked* when a `SendOk` came back; *lost* when
//! acked but never delivered (a broken delivery contract); a *resend* when the connection
//! died before the answer, so the sender cannot know whether the server stored it. The
//! receiver tells copies apart: the same envelope seq again is a *redelivery* (normal
//! at-least-once after a lost ack, dropped by clients by seq); the same message under a new
//! seq whose copy was marked as a resend is a *duplicate of a resent send* (the server stored
//! the first attempt and the resend); any other duplicate is counted apart as `dup_other`.
//! Every attempt of one message carries the same idempotency key (as a client's outbox id),
//! so the server answers a resend of a stored message with the first result and stores
//! nothing: both duplicate counts must be 0, like `lost`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hush_wire::frames::{send_response, server_frame};
use tokio::sync::watch;

use crate::client::{self, BenchDevice, CONNECT_CONCURRENCY, Connector, Payloads, SharedKeys};
use crate::target::Target;

/// Sends one sender may have unanswered at once.
const WINDOW: usize = 64;
/// The longest the whole run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Options of the crash measurement.
pub struct CrashOptions {
    /// Sender/receiver pairs.
    pub pairs: usize,
    /// Messages per sender.
    pub messages: u32,
    /// Envelope size in bytes.
    pub size: usize,
    /// Total messages per second (so the run spans several crashes).
    pub rate: f64,
    /// Time between a restart and the next SIGKILL.
    pub kill_every: Duration,
}

/// Counters shared by every client task.
#[derive(Default)]
struct Counters {
    reconnects: AtomicU64,
    resent: AtomicU64,
    refused: AtomicU64,
    senders_done: AtomicUsize,
}

/// What one sender knows at the end.
struct SenderEnd {
    acked: Vec<bool>,
}

/// What one receiver saw.
#[derive(Default)]
struct ReceiverEnd {
    received: Vec<bool>,
    redelivered: u64,
    dup_resent: u64,
    dup_other: u64,
}

/// Runs the measurement; the line and whether nothing acknowledged was lost.
pub async fn crash(target: &mut Target, o: &CrashOptions) -> anyhow::Result<(String, bool)> {
    if !target.is_spawned() {
        bail!("crash kills and restarts the server: run it with --spawn");
    }
    let keys = SharedKeys::generate()?;
    let devices = client::register(target, &keys, o.pairs * 2, 32).await?;
    let mut devices: Vec<Arc<BenchDevice>> = devices.into_iter().map(Arc::new).collect();
    let receivers: Vec<Arc<BenchDevice>> = devices.split_off(o.pairs);
    let payloads = Arc::new(Payloads::new(o.size, Instant::now()));
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
    let url = target.ws_url(0);
    let pace = Duration::from_secs_f64(o.pairs as f64 / o.rate.max(1.0));
    let connector = Connector::bounded(CONNECT_CONCURRENCY);

    let mut receiver_tasks = Vec::new();
    for r in &receivers {
        let job = RecvJob {
            url: url.clone(),
            connector: connector.clone(),
            device: r.clone(),
            expected: o.messages,
            deadline,
        };
        receiver_tasks.push(tokio::spawn(receive(job, stop_rx.clone(), counters.clone())));
    }
    let mut sender_tasks = Vec::new();
    for (i, s) in devices.iter().enumerate() {
        let job = SendJob {
            url: url.clone(),
            connector: connector.clone(),
            device: s.clone(),
            to: receivers[i].clone(),
            sender: i as u32,
            count: o.messages,
            pace,
        };
        sender_tasks.push(tokio::spawn(send(job, payloads.clone(), counters.clone(), deadline)));
    }

    let mut kills = 0u32;
    while counters.senders_done.load(Ordering::Relaxed) < o.pairs {
        if tokio::time::Instant::now() >= deadline {
            bail!("the run did not finish within {RUN_TIMEOUT:?}");
        }
        let next_kill = tokio::time::Instant::now() + o.kill_every;
        while tokio::time::Instant::now() < next_kill && counters.senders_done.load(Ordering::Relaxed) < o.pairs {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if counters.senders_done.load(Ordering::Relaxed) < o.pairs {
            // Both wait for the process (blocking, briefly); keep the runtime's other thread going.
            tokio::task::block_in_place(|| target.kill())?;
            kills += 1;
            eprintln!("killed hushd ({kills}); restarting it");
            tokio::task::block_in_place(|| target.restart())?;
        }
    }
    let mut acked = Vec::new();
    for t in sender_tasks {
        acked.push(t.await??.acked);
    }
    stop_tx.send(true).context("stopping the receivers")?;
    let mut ends = Vec::new();
    for t in receiver_tasks {
        ends.push(t.await??);
    }

    let sent = o.pairs as u64 * u64::from(o.messages);
    let acked_total: u64 = acked.iter().map(|a| a.iter().filter(|x| **x).count() as u64).sum();
    let mut lost = 0u64;
    for (a, end) in acked.iter().zip(&ends) {
        lost += a.iter().zip(&end.received).filter(|(acked, got)| **acked && !**got).count() as u64;
    }
    let delivered: u64 = ends.iter().map(|e| e.received.iter().filter(|x| **x).count() as u64).sum();
    let sum = |f: fn(&ReceiverEnd) -> u64| ends.iter().map(f).sum::<u64>();
    let line = format!(
        "crash_kills={kills} sent={sent} acked={acked_total} delivered={delivered} lost={lost} resent={} \
         dup_resent={} dup_other={} redelivered={} refused={} reconnects={}",
        counters.resent.load(Ordering::Relaxed),
        sum(|e| e.dup_resent),
        sum(|e| e.dup_other),
        sum(|e| e.redelivered),
        counters.refused.load(Ordering::Relaxed),
        counters.reconnects.load(Ordering::Relaxed),
    );
    let duplicates = sum(|e| e.dup_resent) + sum(|e| e.dup_other);
    Ok((line, lost == 0 && acked_total == sent && duplicates == 0))
}

/// One sender's work.
struct SendJob {
    url: String,
    connector: Connector,
    device: Arc<BenchDevice>,
    to: Arc<BenchDevice>,
    sender: u32,
    count: u32,
    pace: Duration,
}

/// Sends every message until each is acked, reconnecting after a crash and resending what
/// was in flight (with the same idempotency key, marked as resent: the server may have
/// stored the first attempt).
async fn send(
    job: SendJob,
    payloads: Arc<Payloads>,
    counters: Arc<Counters>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<SenderEnd> {
    let count = job.count as usize;
    let mut acked = vec![false; count];
    // Sent on a connection that died before the answer: may be stored already.
    let mut maybe_stored = vec![false; count];
    let mut queue: VecDeque<u32> = (0..job.count).collect();
    let mut remaining = count;
    let mut request_id = 0u64;
    let mut due = tokio::time::Instant::now();
    let mut first = true;
    while remaining > 0 {
        let (ws, _) = job.connector.connect(&job.url, &job.device, deadline).await?;
        if !std::mem::take(&mut first) {
            counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let (mut sink, mut stream) = ws.split();
        let mut in_flight: HashMap<u64, u32> = HashMap::new();
        'conn: while remaining > 0 {
            while in_flight.len() < WINDOW && tokio::time::Instant::now() >= due {
                let Some(number) = queue.pop_front() else { break };
                let resent = maybe_stored[number as usize];
                if resent {
                    counters.resent.fetch_add(1, Ordering::Relaxed);
                }
                request_id += 1;
                in_flight.insert(request_id, number);
                due = due.max(tokio::time::Instant::now() - job.pace) + job.pace;
                let frame = payloads.send_marked(request_id, &job.to, job.sender, number, resent);
                if sink.send(frame).await.is_err() {
                    break 'conn;
                }
            }
            let wait = if queue.is_empty() || in_flight.len() >= WINDOW { deadline } else { due };
            tokio::select! {
                msg = stream.next() => {
                    let Some(Ok(msg)) = msg else { break 'conn };
                    let Some(server_frame::Frame::SendResponse(r)) = client::decode(&msg) else { continue };
                    let Some(number) = in_flight.remove(&r.request_id) else { continue };
                    match r.result {
                        Some(send_response::Result::Ok(_)) if !acked[number as usize] => {
                            acked[number as usize] = true;
                            remaining -= 1;
                        }
                        Some(send_response::Result::Ok(_)) => {}
                        // Refused (e.g. while the server shuts down): nothing was stored.
                        _ => {
                            counters.refused.fetch_add(1, Ordering::Relaxed);
                            queue.push_back(number);
                        }
                    }
                }
                () = tokio::time::sleep_until(wait) => {
                    if tokio::time::Instant::now() >= deadline {
                        bail!("sender {} timed out with {remaining} unacked messages", job.sender);
                    }
                }
            }
        }
        // The connection died: what was in flight may or may not be stored. Send it again.
        let mut lost: Vec<u32> = in_flight.into_values().collect();
        lost.sort_unstable();
        for number in lost.into_iter().rev() {
            maybe_stored[number as usize] = true;
            queue.push_front(number);
        }
    }
    counters.senders_done.fetch_add(1, Ordering::Relaxed);
    Ok(SenderEnd { acked })
}

/// One receiver's work.
struct RecvJob {
    url: String,
    connector: Connector,
    device: Arc<BenchDevice>,
    expected: u32,
    deadline: tokio::time::Instant,
}

/// Reads and acks everything, reconnecting after a crash. When told to stop, reconnects once
/// more and reads until `QueueEmpty`, so every stored envelope is counted.
async fn receive(
    job: RecvJob,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> anyhow::Result<ReceiverEnd> {
    let RecvJob { url, connector, device, expected, deadline } = job;
    let mut end = ReceiverEnd { received: vec![false; expected as usize], ..ReceiverEnd::default() };
    // Per message number: whether a copy marked as resent was seen.
    let mut resent_seen = vec![false; expected as usize];
    let mut seqs: HashSet<u64> = HashSet::new();
    let mut first = true;
    let mut draining = false;
    loop {
        let (mut ws, _) = connector.connect(&url, &device, deadline).await?;
        if !std::mem::take(&mut first) && !draining {
            counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        loop {
            let msg = tokio::select! {
                msg = ws.next() => msg,
                changed = stop.changed(), if !draining => {
                    changed.context("the bench stopped")?;
                    draining = true;
                    break; // reconnect for a final replay of the whole mailbox
                }
                () = tokio::time::sleep_until(deadline) => bail!("receiver timed out"),
            };
            let mut batch = vec![msg];
            while let Some(Some(more)) = ws.next().now_or_never() {
                batch.push(Some(more));
            }
            let mut acks = Vec::new();
            let mut queue_empty = false;
            let mut ended = false;
            for msg in batch {
                let Some(Ok(msg)) = msg else {
                    ended = true;
                    break;
                };
                match client::decode(&msg) {
                    Some(server_frame::Frame::Envelope(env)) => {
                        acks.push(env.seq);
                        if !seqs.insert(env.seq) {
                            end.redelivered += 1;
                            continue;
                        }
                        let Some(h) = Payloads::header(&env.content) else { continue };
                        let n = h.number as usize;
                        let Some(got) = end.received.get_mut(n) else { continue };
                        if !*got {
                            *got = true;
                        } else if h.resent || resent_seen[n] {
                            end.dup_resent += 1;
                        } else {
                            end.dup_other += 1;
                        }
                        resent_seen[n] |= h.resent;
                    }
                    Some(server_frame::Frame::QueueEmpty(_)) => queue_empty = true,
                    _ => {}
                }
            }
            if !acks.is_empty() && ws.send(client::ack(acks)).await.is_err() {
                break;
            }
            if ended {
                break;
            }
            if draining && queue_empty {
                let _ = ws.close(None).await;
                return Ok(end);
            }
        }
    }
}
