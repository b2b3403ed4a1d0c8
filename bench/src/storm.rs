//! The reconnect storm: N connected devices drop their sockets at once, a small backlog is
//! queued for each, and all reconnect at the same moment (what a load-balancer failover or a
//! network blip does to a relay). Measured: the time until every device has its backlog and
//! `QueueEmpty`, the per-device distribution of that time, and the send latency of a few
//! devices that stay connected through the storm.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hush_wire::frames::{send_response, server_frame};
use tokio::sync::{Mutex, watch};

use crate::client::{self, BenchDevice, CONNECT_CONCURRENCY, Connector, Payloads, SharedKeys, Ws};
use crate::scenarios::percentile;
use crate::target::{Target, wait_until};

/// The longest a phase may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
/// Sends the backlog sender keeps unanswered.
const BACKLOG_WINDOW: usize = 256;
/// Messages per second each probe sends (one at a time).
const PROBE_RATE: f64 = 20.0;
/// How long the probes measure before the storm, with every storm device connected and idle.
const QUIET_WINDOW: Duration = Duration::from_secs(2);

/// Options of the reconnect measurement.
pub struct ReconnectOptions {
    /// Devices that drop and reconnect.
    pub devices: usize,
    /// Envelopes queued for each device while it is away.
    pub backlog: u32,
    /// Envelope size in bytes.
    pub size: usize,
    /// Connected sender/receiver pairs that measure send latency during the storm.
    pub probes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Drop,
    Go,
    End,
}

/// What the storm devices report.
#[derive(Default)]
struct Shared {
    connected: AtomicUsize,
    dropped: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicUsize,
    retries: AtomicU64,
    short: AtomicU64,
    /// Per device: µs from the reconnect signal to `QueueEmpty`.
    times_us: Mutex<Vec<u64>>,
}

/// Runs the measurement; the line and whether every device got its whole backlog.
pub async fn reconnect(target: &Target, o: &ReconnectOptions) -> anyhow::Result<(String, bool)> {
    let keys = SharedKeys::generate()?;
    eprintln!("registering {} devices", o.devices + 2 * o.probes + 1);
    let mut all = client::register(target, &keys, o.devices + 2 * o.probes + 1, 32).await?;
    let backlog_sender = all.pop().context("no backlog sender")?;
    let probes: Vec<BenchDevice> = all.split_off(o.devices);
    let devices: Vec<Arc<BenchDevice>> = all.into_iter().map(Arc::new).collect();
    let payloads = Arc::new(Payloads::new(o.size, Instant::now()));
    let shared = Arc::new(Shared::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let (go_tx, go_rx) = watch::channel(None::<Instant>);

    // The set-up connects a bounded number at a time; the storm itself is every device at
    // once, each backing off on its own when refused, as independent devices do.
    let connector = Connector::bounded(CONNECT_CONCURRENCY);
    let at_once = Connector::unbounded();
    eprintln!("connecting {} devices", o.devices);
    for (i, d) in devices.iter().enumerate() {
        let job = StormJob {
            url: target.ws_url(i),
            device: d.clone(),
            backlog: o.backlog,
            connect: connector.clone(),
            reconnect: at_once.clone(),
        };
        tokio::spawn(storm_device(job, phase_rx.clone(), go_rx.clone(), shared.clone()));
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    let all_in = wait_until(PHASE_TIMEOUT, || {
        shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= o.devices
    })
    .await;
    if !all_in || shared.failed.load(Ordering::Relaxed) > 0 {
        bail!("{} of {} devices could not connect", o.devices - shared.connected.load(Ordering::Relaxed), o.devices);
    }

    // Probes connect now and stay connected through the storm, on a thread and runtime of
    // their own: their figure is the server's latency, not the wait for this process's
    // runtime, which the 10,000 storm devices keep busy.
    let urls = (0..2 * o.probes).map(|i| target.ws_url(i)).collect();
    let probe_run = ProbeRun { urls, devices: probes, payloads: payloads.clone(), phase: phase_rx.clone() };
    let probes = spawn_probes(probe_run).await?;
    // The quiet window: the probes' latency with every storm device connected and idle.
    tokio::time::sleep(QUIET_WINDOW).await;

    eprintln!("dropping every connection, queueing {} envelopes per device", o.backlog);
    phase_tx.send(Phase::Drop).context("phase")?;
    wait_until(PHASE_TIMEOUT, || shared.dropped.load(Ordering::Relaxed) >= o.devices).await;
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    let (ws, _) = connector.connect(&target.ws_url(0), &backlog_sender, deadline).await?;
    queue_backlog(ws, &devices, o.backlog, &payloads).await?;

    eprintln!("reconnecting {} devices at once", o.devices);
    let start = Instant::now();
    go_tx.send(Some(start)).context("go")?;
    phase_tx.send(Phase::Go).context("phase")?;
    let finished = wait_until(PHASE_TIMEOUT, || {
        shared.done.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= o.devices
    })
    .await;
    let storm = start.elapsed();
    phase_tx.send(Phase::End).context("phase")?;
    let probe_us = probes.await.context("the probe thread stopped")??;
    let (quiet, probe_us) = (probe_us.quiet, probe_us.storm);
    if !finished {
        bail!(
            "only {} of {} devices finished within {PHASE_TIMEOUT:?}",
            shared.done.load(Ordering::Relaxed),
            o.devices
        );
    }

    let mut times = shared.times_us.lock().await.clone();
    times.sort_unstable();
    let failed = shared.failed.load(Ordering::Relaxed);
    let short = shared.short.load(Ordering::Relaxed);
    let line = format!(
        "reconnect_devices={} backlog={} storm_ms={:.1} device_p50_ms={:.1} device_p99_ms={:.1} \
         quiet_probe_p50_ms={:.2} quiet_probe_p99_ms={:.2} probe_sends={} probe_send_p50_ms={:.2} probe_send_p99_ms={:.2} connect_retries={} failed={failed} lost={short}",
        times.len(),
        o.backlog,
        storm.as_secs_f64() * 1000.0,
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        percentile(&quiet, 0.50),
        percentile(&quiet, 0.99),
        probe_us.len(),
        percentile(&probe_us, 0.50),
        percentile(&probe_us, 0.99),
        shared.retries.load(Ordering::Relaxed),
    );
    Ok((line, failed == 0 && short == 0))
}

/// One storm device: where it connects, as whom, how many envelopes wait for it, and the
/// connectors of the set-up and of the storm.
struct StormJob {
    url: String,
    device: Arc<BenchDevice>,
    backlog: u32,
    connect: Connector,
    reconnect: Connector,
}

/// One storm device: connect, wait, drop, wait, reconnect and read its backlog to `QueueEmpty`.
async fn storm_device(
    job: StormJob,
    mut phase: watch::Receiver<Phase>,
    mut go: watch::Receiver<Option<Instant>>,
    shared: Arc<Shared>,
) {
    let StormJob { url, device, backlog, connect, reconnect } = job;
    let result = async {
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        let (mut ws, _) = connect.connect(&url, &device, deadline).await?;
        read_to_queue_empty(&mut ws).await?;
        shared.connected.fetch_add(1, Ordering::Relaxed);
        phase.wait_for(|p| *p != Phase::Connect).await?;
        let _ = ws.close(None).await;
        drop(ws);
        shared.dropped.fetch_add(1, Ordering::Relaxed);
        let start = (*go.wait_for(Option::is_some).await?).context("no start time")?;
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        let (mut ws, retries) = reconnect.connect(&url, &device, deadline).await?;
        shared.retries.fetch_add(u64::from(retries), Ordering::Relaxed);
        let got = read_to_queue_empty(&mut ws).await?;
        shared.times_us.lock().await.push(start.elapsed().as_micros() as u64);
        if got < u64::from(backlog) {
            shared.short.fetch_add(u64::from(backlog) - got, Ordering::Relaxed);
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
        // Stay connected until the measurement ends, as a real client would.
        phase.wait_for(|p| *p == Phase::End).await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("storm device failed: {e:#}");
        shared.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads (and acks) envelopes until `QueueEmpty`; returns how many came.
async fn read_to_queue_empty(ws: &mut Ws) -> anyhow::Result<u64> {
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, client::next_frame(ws)).await.context("no QueueEmpty")??;
        match frame {
            server_frame::Frame::Envelope(env) => {
                got += 1;
                ws.send(client::ack(vec![env.seq])).await?;
            }
            server_frame::Frame::QueueEmpty(_) => return Ok(got),
            _ => {}
        }
    }
}

/// Queues `backlog` envelopes for every device from one sender connection.
async fn queue_backlog(ws: Ws, devices: &[Arc<BenchDevice>], backlog: u32, payloads: &Payloads) -> anyhow::Result<()> {
    let (mut sink, mut stream) = ws.split();
    let total = devices.len() as u64 * u64::from(backlog);
    let mut answered = 0u64;
    let mut sent = 0u64;
    let mut request_id = 0u64;
    for n in 0..backlog {
        for d in devices {
            while sent - answered >= BACKLOG_WINDOW as u64 {
                answered += backlog_answer(&mut stream).await?;
            }
            request_id += 1;
            sink.send(payloads.send(request_id, d, 0, n)).await?;
            sent += 1;
        }
    }
    while answered < total {
        answered += backlog_answer(&mut stream).await?;
    }
    let _ = sink.close().await;
    Ok(())
}

async fn backlog_answer(stream: &mut futures_util::stream::SplitStream<Ws>) -> anyhow::Result<u64> {
    loop {
        let msg = tokio::time::timeout(PHASE_TIMEOUT, stream.next()).await.context("backlog send timed out")?;
        let Some(msg) = msg else { bail!("the server closed the backlog sender") };
        if let Some(server_frame::Frame::SendResponse(r)) = client::decode(&msg?) {
            match r.result {
                Some(send_response::Result::Ok(_)) => return Ok(1),
                other => bail!("a backlog send was refused: {other:?}"),
            }
        }
    }
}

/// Reads and acks forever (a probe's receiver).
async fn drain_forever(mut ws: Ws) {
    while let Ok(frame) = client::next_frame(&mut ws).await {
        if let server_frame::Frame::Envelope(env) = frame
            && ws.send(client::ack(vec![env.seq])).await.is_err()
        {
            return;
        }
    }
}

/// The probes' part: where each connects, as whom, and the phase to follow.
struct ProbeRun {
    /// One URL per probe device, in the order of `devices`.
    urls: Vec<String>,
    /// Sender, receiver, sender, receiver, ...
    devices: Vec<BenchDevice>,
    payloads: Arc<Payloads>,
    phase: watch::Receiver<Phase>,
}

/// Connects the probe pairs on a thread with its own single-threaded runtime and starts
/// them; resolves once all are connected, to a receiver of their sorted latencies, sent
/// when the phase reaches `End`.
async fn spawn_probes(run: ProbeRun) -> anyhow::Result<tokio::sync::oneshot::Receiver<anyhow::Result<ProbeLatencies>>> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("probes".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow::Error::from(e)));
                return;
            }
        };
        let result = runtime.block_on(run_probes(run, ready_tx));
        let _ = done_tx.send(result);
    })?;
    ready_rx.await.context("the probe thread stopped")??;
    Ok(done_rx)
}

async fn run_probes(
    run: ProbeRun,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
) -> anyhow::Result<ProbeLatencies> {
    let ProbeRun { urls, devices, payloads, phase } = run;
    let latencies = Arc::new(Mutex::new(ProbeLatencies::default()));
    let connected = async {
        let connector = Connector::bounded(CONNECT_CONCURRENCY);
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        let mut tasks = Vec::new();
        let mut pairs = devices.into_iter().zip(urls);
        while let (Some((from, from_url)), Some((to, to_url))) = (pairs.next(), pairs.next()) {
            let (sender, _) = connector.connect(&from_url, &from, deadline).await?;
            let (receiver, _) = connector.connect(&to_url, &to, deadline).await?;
            tokio::spawn(drain_forever(receiver));
            let task = probe(sender, Arc::new(to), payloads.clone(), phase.clone(), latencies.clone());
            tasks.push(tokio::spawn(task));
        }
        anyhow::Ok(tasks)
    }
    .await;
    let tasks = match connected {
        Ok(tasks) => {
            let _ = ready.send(Ok(()));
            tasks
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            bail!("the probes could not connect");
        }
    };
    for t in tasks {
        t.await??;
    }
    let mut all = std::mem::take(&mut *latencies.lock().await);
    all.quiet.sort_unstable();
    all.storm.sort_unstable();
    Ok(all)
}

/// Send-to-answer latencies (µs) of the probes: while the server is quiet (every storm
/// device connected and idle, before the drop) and during the storm.
#[derive(Default)]
struct ProbeLatencies {
    quiet: Vec<u64>,
    storm: Vec<u64>,
}

/// Sends one message at a time at `PROBE_RATE` from connecting until the end; records the
/// send-to-answer latency (µs) of the sends made in the quiet window and of those made
/// between the reconnect signal and the end.
async fn probe(
    mut ws: Ws,
    to: Arc<BenchDevice>,
    payloads: Arc<Payloads>,
    phase: watch::Receiver<Phase>,
    latencies: Arc<Mutex<ProbeLatencies>>,
) -> anyhow::Result<()> {
    let interval = Duration::from_secs_f64(1.0 / PROBE_RATE);
    let mut request_id = 0u64;
    loop {
        let at_send = *phase.borrow();
        if at_send == Phase::End {
            break;
        }
        request_id += 1;
        let sent = Instant::now();
        ws.send(payloads.send(request_id, &to, 0, request_id as u32)).await?;
        loop {
            let frame = tokio::time::timeout(PHASE_TIMEOUT, client::next_frame(&mut ws)).await.context("probe")??;
            if let server_frame::Frame::SendResponse(r) = frame {
                if !matches!(r.result, Some(send_response::Result::Ok(_))) {
                    bail!("a probe send was refused: {:?}", r.result);
                }
                break;
            }
        }
        let took = sent.elapsed().as_micros() as u64;
        match at_send {
            Phase::Connect => latencies.lock().await.quiet.push(took),
            Phase::Go => latencies.lock().await.storm.push(took),
            Phase::Drop | Phase::End => {}
        }
        tokio::time::sleep(interval.saturating_sub(sent.elapsed())).await;
    }
    Ok(())
}
