//! The measurements. Each returns the figures for its final `key=value` line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hush_wire::frames::{send_response, server_frame};
use tokio::sync::Semaphore;

use crate::client::{self, BenchDevice, CONNECT_CONCURRENCY, Connector, Payloads, SharedKeys, Ws};
use crate::target::{Target, wait_until};

/// Sends one sender may have unanswered at once.
const SEND_WINDOW: usize = 128;
/// Registrations in flight at once.
pub(crate) const REGISTER_CONCURRENCY: usize = 32;
/// The longest any phase may take before the bench gives up.
pub(crate) const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a receiver saw.
#[derive(Default)]
pub struct Received {
    /// Distinct messages.
    pub unique: u64,
    /// Messages seen more than once.
    pub dup: u64,
    /// Send-to-receipt latencies, microseconds.
    pub latencies_us: Vec<u64>,
    /// When the last new message arrived.
    pub last: Option<Instant>,
}

/// Reads envelopes (each from one sender, numbered 0..expected) and acks them in batches.
async fn receive(mut ws: Ws, expected: u32, payloads: Arc<Payloads>) -> anyhow::Result<Received> {
    let mut seen = vec![false; expected as usize];
    let mut got = Received::default();
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    let mut acks = Vec::new();
    while got.unique < u64::from(expected) {
        let first = tokio::time::timeout_at(deadline, ws.next()).await.context("receiver timed out")?;
        let batch = take_ready(&mut ws, first);
        for msg in batch {
            let msg = match msg {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(e.into()),
                None => bail!("the server closed the receiver's connection (run `crash` to measure restarts)"),
            };
            let Some(server_frame::Frame::Envelope(env)) = client::decode(&msg) else { continue };
            acks.push(env.seq);
            let Some(h) = Payloads::header(&env.content) else { continue };
            match seen.get_mut(h.number as usize) {
                Some(s) if !*s => {
                    *s = true;
                    got.unique += 1;
                    got.last = Some(Instant::now());
                    got.latencies_us.push(payloads.now_ns().saturating_sub(h.sent_ns) / 1000);
                }
                _ => got.dup += 1,
            }
        }
        if !acks.is_empty() {
            ws.send(client::ack(std::mem::take(&mut acks))).await?;
        }
    }
    Ok(got)
}

/// `first` plus every item the stream has ready, up to and including its end (`None`). An
/// ended stream stays ended, so polling on after `None` would spin forever: that is what made
/// the bench grow to 24 GB when hushd was killed under `pairs`.
pub(crate) fn take_ready<S: futures_util::Stream + Unpin>(
    stream: &mut S,
    first: Option<S::Item>,
) -> Vec<Option<S::Item>> {
    let ended = first.is_none();
    let mut batch = vec![first];
    if ended {
        return batch;
    }
    while let Some(more) = stream.next().now_or_never() {
        let ended = more.is_none();
        batch.push(more);
        if ended {
            break;
        }
    }
    batch
}

/// What a sender got back.
struct Sent {
    ok: u64,
    failed: u64,
}

/// Sends `count` messages to `to`, at most `SEND_WINDOW` unanswered, optionally paced.
async fn send_all(
    ws: Ws,
    to: Arc<BenchDevice>,
    sender: u32,
    count: u32,
    payloads: Arc<Payloads>,
    pace: Option<Duration>,
) -> anyhow::Result<Sent> {
    let (mut sink, mut stream) = ws.split();
    let window = Arc::new(Semaphore::new(SEND_WINDOW));
    let reader_window = window.clone();
    let reader = tokio::spawn(async move {
        let mut sent = Sent { ok: 0, failed: 0 };
        while sent.ok + sent.failed < u64::from(count) {
            let Some(Ok(msg)) = stream.next().await else { break };
            if let Some(server_frame::Frame::SendResponse(r)) = client::decode(&msg) {
                match r.result {
                    Some(send_response::Result::Ok(_)) => sent.ok += 1,
                    _ => sent.failed += 1,
                }
                reader_window.add_permits(1);
            }
        }
        sent
    });
    let mut due = tokio::time::Instant::now();
    for number in 0..count {
        window.acquire().await?.forget();
        if let Some(interval) = pace {
            due += interval;
            tokio::time::sleep_until(due).await;
        }
        sink.send(payloads.send(u64::from(number), &to, sender, number)).await?;
    }
    let sent = tokio::time::timeout(PHASE_TIMEOUT, reader).await.context("sender timed out")??;
    let _ = sink.close().await;
    Ok(sent)
}

/// The `p` quantile of sorted microseconds, in milliseconds.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Idle connections: server memory per authenticated, idle connection.
pub async fn idle(target: &Target, conns: usize) -> anyhow::Result<String> {
    let keys = SharedKeys::generate()?;
    eprintln!("registering {conns} devices");
    let devices = client::register(target, &keys, conns, REGISTER_CONCURRENCY).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = target.usage()?;
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let checkpoint = 1000.min(conns);
    let connector = Connector::bounded(CONNECT_CONCURRENCY);
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    eprintln!("opening {conns} connections, {CONNECT_CONCURRENCY} handshakes at a time");
    let opening = Instant::now();
    for (i, device) in devices.into_iter().enumerate() {
        let url = target.ws_url(i);
        let (ok_count, fail_count, retries, stop) = (connected.clone(), failed.clone(), retries.clone(), stop.clone());
        let connector = connector.clone();
        tokio::spawn(async move {
            match connector.connect(&url, &device, deadline).await {
                Ok((mut ws, failures)) => {
                    retries.fetch_add(u64::from(failures), Ordering::Relaxed);
                    ok_count.fetch_add(1, Ordering::Relaxed);
                    // Hold the connection, answering pings, until the bench ends.
                    tokio::select! {
                        () = stop.notified() => {}
                        () = async { while let Some(Ok(_)) = ws.next().await {} } => {}
                    }
                }
                Err(e) => {
                    eprintln!("connection failed: {e:#}");
                    fail_count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if i + 1 == checkpoint {
            wait_until(PHASE_TIMEOUT, || {
                connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) >= checkpoint
            })
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let at = target.usage()?;
            eprintln!(
                "checkpoint idle_conns={checkpoint} server_rss_kib_per_conn={:.2}",
                at.rss_kib.saturating_sub(before.rss_kib) as f64 / checkpoint as f64
            );
        }
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    wait_until(PHASE_TIMEOUT, || connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) >= conns).await;
    let open_ms = opening.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_secs(2)).await; // let the server settle before reading its memory
    let after = target.usage()?;
    stop.notify_waiters();
    let n = connected.load(Ordering::Relaxed);
    let failures = failed.load(Ordering::Relaxed);
    if failures > 0 {
        bail!("{failures} of {conns} connections failed");
    }
    Ok(format!(
        "idle_conns={n} server_rss_kib_per_conn={:.2} open_ms={open_ms:.0} connect_retries={}",
        after.rss_kib.saturating_sub(before.rss_kib) as f64 / n.max(1) as f64,
        retries.load(Ordering::Relaxed),
    ))
}

/// Options of the pairs measurement.
pub struct PairsOptions {
    /// Sender/receiver pairs.
    pub pairs: usize,
    /// Messages per sender.
    pub messages: u32,
    /// Envelope size in bytes.
    pub size: usize,
    /// Total messages per second, or as fast as possible.
    pub rate: Option<f64>,
}

/// One-to-one throughput and latency with online receivers that ack everything.
pub async fn pairs(target: &Target, o: &PairsOptions) -> anyhow::Result<(String, bool)> {
    let keys = SharedKeys::generate()?;
    let devices = client::register(target, &keys, o.pairs * 2, REGISTER_CONCURRENCY).await?;
    let mut devices: Vec<Arc<BenchDevice>> = devices.into_iter().map(Arc::new).collect();
    let receivers_dev: Vec<Arc<BenchDevice>> = devices.split_off(o.pairs);
    let payloads = Arc::new(Payloads::new(o.size, Instant::now()));
    let connector = Connector::bounded(CONNECT_CONCURRENCY);
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    let mut receivers = Vec::new();
    for (i, r) in receivers_dev.iter().enumerate() {
        let (mut ws, _) = connector.connect(&target.ws_url(i), r, deadline).await?;
        while !matches!(client::next_frame(&mut ws).await?, server_frame::Frame::QueueEmpty(_)) {}
        receivers.push(tokio::spawn(receive(ws, o.messages, payloads.clone())));
    }
    let mut senders_ws = Vec::new();
    for (i, s) in devices.iter().enumerate() {
        let (mut ws, _) = connector.connect(&target.ws_url(i + 1), s, deadline).await?;
        while !matches!(client::next_frame(&mut ws).await?, server_frame::Frame::QueueEmpty(_)) {}
        senders_ws.push(ws);
    }
    let pace = o.rate.map(|r| Duration::from_secs_f64(o.pairs as f64 / r));
    let cpu0 = target.usage()?.cpu_us;
    let start = Instant::now();
    let mut senders = Vec::new();
    for (i, ws) in senders_ws.into_iter().enumerate() {
        senders.push(tokio::spawn(send_all(
            ws,
            receivers_dev[i].clone(),
            i as u32,
            o.messages,
            payloads.clone(),
            pace,
        )));
    }
    let failed = AtomicU64::new(0);
    for s in senders {
        let sent = s.await??;
        failed.fetch_add(sent.failed, Ordering::Relaxed);
    }
    let mut all = Received::default();
    for r in receivers {
        let got = r.await??;
        all.unique += got.unique;
        all.dup += got.dup;
        all.latencies_us.extend(got.latencies_us);
        all.last = all.last.max(got.last);
    }
    let elapsed = all.last.map(|t| t.duration_since(start)).unwrap_or_else(|| start.elapsed());
    let cpu = target.usage()?.cpu_us.saturating_sub(cpu0);
    all.latencies_us.sort_unstable();
    let expected = o.pairs as u64 * u64::from(o.messages);
    let lost = expected.saturating_sub(all.unique);
    let line = format!(
        "delivered={} lost={lost} dup={} send_failed={} msgs_per_s={:.0} p50_ms={:.2} p99_ms={:.2} server_cpu_us_per_msg={:.1}",
        all.unique,
        all.dup,
        failed.load(Ordering::Relaxed),
        all.unique as f64 / elapsed.as_secs_f64(),
        percentile(&all.latencies_us, 0.50),
        percentile(&all.latencies_us, 0.99),
        cpu as f64 / all.unique.max(1) as f64,
    );
    Ok((line, lost == 0 && all.dup == 0 && failed.load(Ordering::Relaxed) == 0))
}

/// Offline drain: queue `messages` for an offline device, then time connect -> all received and acked.
pub async fn drain(target: &Target, messages: u32, size: usize) -> anyhow::Result<(String, bool)> {
    let keys = SharedKeys::generate()?;
    let mut devices = client::register(target, &keys, 2, 2).await?;
    let receiver = devices.pop().context("no receiver")?;
    let sender = Arc::new(devices.pop().context("no sender")?);
    let receiver = Arc::new(receiver);
    let payloads = Arc::new(Payloads::new(size, Instant::now()));
    let connector = Connector::bounded(CONNECT_CONCURRENCY);
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    let (ws, _) = connector.connect(&target.ws_url(0), &sender, deadline).await?;
    let sent = send_all(ws, receiver.clone(), 0, messages, payloads.clone(), None).await?;
    if sent.ok != u64::from(messages) {
        bail!("only {} of {messages} sends were accepted", sent.ok);
    }
    let start = Instant::now();
    let (ws, _) = connector.connect(&target.ws_url(0), &receiver, deadline).await?;
    let got = receive(ws, messages, payloads).await?;
    let drain = got.last.map(|t| t.duration_since(start)).unwrap_or_else(|| start.elapsed());
    let lost = u64::from(messages).saturating_sub(got.unique);
    let line = format!("drain_ms={:.1} lost={lost} dup={}", drain.as_secs_f64() * 1000.0, got.dup);
    Ok((line, lost == 0 && got.dup == 0))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::take_ready;

    /// A stream that ends, and fails the test if it is polled in a loop after its end.
    struct Ending {
        items: VecDeque<u32>,
        polls_after_end: u32,
    }

    impl futures_util::Stream for Ending {
        type Item = u32;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<u32>> {
            if let Some(i) = self.items.pop_front() {
                return Poll::Ready(Some(i));
            }
            self.polls_after_end += 1;
            assert!(self.polls_after_end < 100, "an ended stream is polled in a loop");
            Poll::Ready(None)
        }
    }

    #[test]
    fn a_closed_connection_ends_the_batch_instead_of_spinning() {
        let mut stream = Ending { items: VecDeque::from([1, 2]), polls_after_end: 0 };
        assert_eq!(take_ready(&mut stream, Some(0)), vec![Some(0), Some(1), Some(2), None]);
        assert_eq!(take_ready(&mut stream, None), vec![None]);
        assert_eq!(stream.polls_after_end, 1);
    }
}
