//! Group fan-out: one sender device and `members` other member accounts (one device each,
//! all online, each acking everything it gets) in one group; the sender sends `messages`
//! group messages, pipelined. Measured: deliveries per second from the first send to the last
//! delivery, send-to-receipt latency per delivery, and the server's CPU per delivery.
//!
//! A delivery is one (member device, group seq). hushd fans a message out either on write (a
//! reference in each member mailbox: the envelope has a mailbox `seq`, acked by seq) or on read
//! (each member device reads the group's stream from its cursor: `seq` 0 and a `group_seq`,
//! acked by group and group seq). `--path` picks one by how the spawned hushd is started; the
//! receivers handle both, so against a running server they follow whatever it does.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hush_wire::api::{CreateGroupRequest, GroupInfo};
use hush_wire::frames::{Envelope, EnvelopeKind, GroupAck, SendError, send_response, server_frame};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::client::{self, BenchDevice, CONNECT_CONCURRENCY, Connector, Payloads, SharedKeys, Ws};
use crate::scenarios::{PHASE_TIMEOUT, REGISTER_CONCURRENCY, percentile, take_ready};
use crate::target::{Target, Usage, wait_until};

/// Group messages the sender may have unanswered at once.
const SEND_WINDOW: usize = 256;
/// Member devices named in one `DistributeRequest`.
const DISTRIBUTE_CHUNK: usize = 256;
/// Members the server takes without `--max-group-members` (hush_wire's default limit).
const DEFAULT_MAX_MEMBERS: usize = 1000;
/// A fan-out-on-read threshold no bench group reaches.
const WRITE_ALWAYS: u32 = 1_000_000;
/// Give up waiting for deliveries when none has arrived for this long.
const STALL: Duration = Duration::from_secs(30);
/// The server counts as quiet when its CPU time has not moved for this long.
const QUIET: Duration = Duration::from_millis(300);
/// The longest the bench waits for the server to become quiet.
const QUIET_DEADLINE: Duration = Duration::from_secs(10);

/// Which fan-out path the spawned hushd takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FanoutPath {
    /// Fan-out on write: a reference in every member mailbox.
    Write,
    /// Fan-out on read: each member device reads the group stream from its cursor.
    Read,
}

impl FanoutPath {
    /// The name in the figures line.
    fn name(self) -> &'static str {
        match self {
            FanoutPath::Write => "write",
            FanoutPath::Read => "read",
        }
    }

    /// The hushd arguments that make a group of `members` + 1 accounts take this path.
    pub fn hushd_args(self, members: usize) -> Vec<String> {
        let mut args = Vec::new();
        if members + 1 > DEFAULT_MAX_MEMBERS {
            args.extend(["--max-group-members".to_owned(), (members + 1).to_string()]);
        }
        // Groups with more members than this are read from their stream.
        let read_above = match self {
            FanoutPath::Write => WRITE_ALWAYS,
            FanoutPath::Read => 0,
        };
        args.extend(["--group-fanout-read-above".to_owned(), read_above.to_string()]);
        args
    }
}

/// Options of the fan-out measurement.
pub struct FanoutOptions {
    /// Member devices besides the sender.
    pub members: usize,
    /// Group messages the sender sends.
    pub messages: u32,
    /// Group message size in bytes.
    pub size: usize,
    /// The path the spawned hushd was started for.
    pub path: FanoutPath,
}

/// What the member devices report while they run.
#[derive(Default)]
struct Progress {
    /// Devices past `QueueEmpty` of their first connection.
    ready: AtomicUsize,
    /// Devices that got the sender's distribution.
    distributed: AtomicUsize,
    /// Distinct (device, group seq) group messages received, over all devices.
    delivered: AtomicU64,
    /// Devices whose connection failed.
    failed: AtomicUsize,
}

/// What one member device saw.
#[derive(Default)]
struct Received {
    unique: u64,
    /// Of them, read from the group stream (the rest came through the mailbox).
    streamed: u64,
    dup: u64,
    latencies_us: Vec<u64>,
    last: Option<Instant>,
}

impl Received {
    fn add(&mut self, other: Received) {
        self.unique += other.unique;
        self.streamed += other.streamed;
        self.dup += other.dup;
        self.latencies_us.extend(other.latencies_us);
        self.last = self.last.max(other.last);
    }
}

/// What every member device shares.
#[derive(Clone)]
struct Fleet {
    connector: Connector,
    payloads: Arc<Payloads>,
    progress: Arc<Progress>,
    stop: watch::Receiver<bool>,
}

impl Fleet {
    /// Starts one member task per device and waits until each has connected and read its
    /// backlog (the group's creation) to `QueueEmpty`.
    async fn connect(
        &self,
        target: &Target,
        devices: &[Arc<BenchDevice>],
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<Received>>>> {
        let mut receivers = Vec::with_capacity(devices.len());
        for (i, device) in devices.iter().enumerate() {
            let member = Member { url: target.ws_url(i), device: device.clone(), fleet: self.clone() };
            receivers.push(tokio::spawn(member.run(deadline)));
            if i % 256 == 255 {
                tokio::task::yield_now().await;
            }
        }
        let (progress, n) = (&self.progress, devices.len());
        let all_in = || progress.ready.load(Ordering::Relaxed) + progress.failed.load(Ordering::Relaxed) >= n;
        if !wait_until(PHASE_TIMEOUT, all_in).await || progress.failed.load(Ordering::Relaxed) > 0 {
            bail!("{} of {n} member devices could not connect", n - progress.ready.load(Ordering::Relaxed));
        }
        Ok(receivers)
    }
}

/// Runs the measurement; the line and whether every delivery arrived exactly once.
pub async fn fanout(target: &Target, o: &FanoutOptions) -> anyhow::Result<(String, bool)> {
    if !target.is_spawned() {
        eprintln!("not spawned: the server's own configuration picks the fan-out path, not --path");
    }
    let keys = SharedKeys::generate()?;
    eprintln!("registering {} devices", o.members + 1);
    let mut devices: Vec<Arc<BenchDevice>> =
        client::register(target, &keys, o.members + 1, REGISTER_CONCURRENCY).await?.into_iter().map(Arc::new).collect();
    let sender = devices.pop().context("no sender")?;
    let group = create_group(target, &sender, &devices).await?;
    eprintln!("group of {} members created; connecting the members", group.members.len());

    let progress = Arc::new(Progress::default());
    let payloads = Arc::new(Payloads::new(o.size, Instant::now()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let connector = Connector::bounded(CONNECT_CONCURRENCY);
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    let fleet =
        Fleet { connector: connector.clone(), payloads: payloads.clone(), progress: progress.clone(), stop: stop_rx };
    let receivers = fleet.connect(target, &devices, deadline).await?;
    let members = devices.len();

    let (mut ws, _) = connector.connect(&target.ws_url(members), &sender, deadline).await?;
    read_to_queue_empty(&mut ws).await?;
    distribute(&mut ws, group.group_id, group.epoch, &devices).await?;
    if !wait_until(PHASE_TIMEOUT, || progress.distributed.load(Ordering::Relaxed) >= members).await {
        bail!("only {} of {members} members got the distribution", progress.distributed.load(Ordering::Relaxed));
    }

    let cpu0 = settle(target).await?;
    eprintln!("sending {} group messages to {members} members", o.messages);
    let start = Instant::now();
    let sending = tokio::spawn(send_group(ws, group.group_id, group.epoch, o.messages, payloads.clone()));
    let (sent, ws) = wait_for_deliveries(&progress, sending, members as u64).await?;
    let sender_acks = tokio::spawn(keep_acking(ws, stop_tx.subscribe()));
    let cpu1 = settle(target).await?;
    stop_tx.send(true).context("stopping the members")?;
    if let Err(e) = sender_acks.await? {
        eprintln!("the sender's connection failed after its sends: {e:#}");
    }

    let mut all = Received::default();
    for r in receivers {
        match r.await? {
            Ok(got) => all.add(got),
            Err(e) => eprintln!("a member device failed: {e:#}"),
        }
    }
    all.latencies_us.sort_unstable();
    let deliveries = members as u64 * u64::from(o.messages);
    let lost = deliveries.saturating_sub(all.unique);
    let elapsed = all.last.map(|t| t.duration_since(start)).unwrap_or_else(|| start.elapsed());
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => format!("{:.1}", b.cpu_us.saturating_sub(a.cpu_us) as f64 / all.unique.max(1) as f64),
        _ => "na".to_owned(),
    };
    let line = format!(
        "fanout path={} members={members} messages={} size={} deliveries={deliveries} deliveries_per_s={:.0} \
         p50_ms={:.2} p99_ms={:.2} lost={lost} dup={} send_failed={} server_cpu_us_per_delivery={cpu}",
        o.path.name(),
        o.messages,
        o.size,
        all.unique as f64 / elapsed.as_secs_f64().max(1e-9),
        percentile(&all.latencies_us, 0.50),
        percentile(&all.latencies_us, 0.99),
        all.dup,
        sent.failed,
    );
    let path_taken = !target.is_spawned() || all.streamed == if o.path == FanoutPath::Read { all.unique } else { 0 };
    if !path_taken {
        eprintln!(
            "hushd did not take the {} path: {} of {} deliveries came from the group stream",
            o.path.name(),
            all.streamed,
            all.unique
        );
    }
    Ok((line, lost == 0 && all.dup == 0 && sent.failed == 0 && path_taken))
}

/// Creates the group over REST with `owner` as its owner and every other device a member.
async fn create_group(target: &Target, owner: &BenchDevice, members: &[Arc<BenchDevice>]) -> anyhow::Result<GroupInfo> {
    let path = "/v1/groups";
    let body = serde_json::to_vec(&CreateGroupRequest {
        members: members.iter().map(|m| m.account).collect(),
        ..Default::default()
    })?;
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", target.http_url(0)))
        .header("Authorization", owner.rest_authorization("POST", path, &body))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!("creating the group failed: {status} {}", resp.text().await.unwrap_or_default());
    }
    Ok(resp.json().await?)
}

/// Reads (and acks) the sender's own backlog (the group's creation) until `QueueEmpty`.
async fn read_to_queue_empty(ws: &mut Ws) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, client::next_frame(ws)).await.context("no QueueEmpty")??;
        match frame {
            server_frame::Frame::Envelope(env) => ack_one(ws, &env).await?,
            server_frame::Frame::QueueEmpty(_) => return Ok(()),
            _ => {}
        }
    }
}

/// Gives every member device a distribution from the sender for `epoch`, so its group
/// messages are not refused `MISSING_DISTRIBUTIONS`; waits until every request is stored.
async fn distribute(ws: &mut Ws, group: Uuid, epoch: u64, devices: &[Arc<BenchDevice>]) -> anyhow::Result<()> {
    let chunks = devices.chunks(DISTRIBUTE_CHUNK);
    let requests = chunks.len();
    for (i, chunk) in chunks.enumerate() {
        ws.send(client::distribute(i as u64, group, epoch, chunk)).await?;
    }
    let mut answered = 0;
    while answered < requests {
        let frame = tokio::time::timeout(PHASE_TIMEOUT, client::next_frame(ws)).await.context("distribution")??;
        if let server_frame::Frame::SendResponse(r) = frame {
            if let Some(send_response::Result::Error(e)) = r.result {
                bail!("a distribution was refused: {}", refusal(&e));
            }
            answered += 1;
        }
    }
    Ok(())
}

/// What the sender got back.
struct Sent {
    ok: u64,
    failed: u64,
}

/// Sends `count` group messages, at most `SEND_WINDOW` unanswered (so in practice all of a
/// small run at once), and counts the answers. A group read from its stream may hand the
/// sender its own messages back: they are acked as a client does. Gives the connection back,
/// so it stays open while the server's CPU is measured.
async fn send_group(
    mut ws: Ws,
    group: Uuid,
    epoch: u64,
    count: u32,
    payloads: Arc<Payloads>,
) -> anyhow::Result<(Sent, Ws)> {
    let mut sent = Sent { ok: 0, failed: 0 };
    let mut next = 0u32;
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    while sent.ok + sent.failed < u64::from(count) {
        let unanswered = u64::from(next) - sent.ok - sent.failed;
        if next < count && unanswered < SEND_WINDOW as u64 {
            ws.send(payloads.group_send(u64::from(next), group, epoch, next)).await?;
            next += 1;
            continue;
        }
        let frame =
            tokio::time::timeout_at(deadline, client::next_frame(&mut ws)).await.context("sender timed out")??;
        match frame {
            server_frame::Frame::SendResponse(r) => match r.result {
                Some(send_response::Result::Ok(_)) => sent.ok += 1,
                Some(send_response::Result::Error(e)) => {
                    if sent.failed == 0 {
                        eprintln!("a group message was refused: {}", refusal(&e));
                    }
                    sent.failed += 1;
                }
                None => sent.failed += 1,
            },
            server_frame::Frame::Envelope(env) => ack_one(&mut ws, &env).await?,
            _ => {}
        }
    }
    Ok((sent, ws))
}

/// Acks one envelope the way it came.
async fn ack_one(ws: &mut Ws, env: &Envelope) -> anyhow::Result<()> {
    let mut acks = Acks::default();
    acks.add(env.seq, &env.group_id, env.group_seq);
    if let Some(frame) = acks.take() {
        ws.send(frame).await?;
    }
    Ok(())
}

/// Keeps the sender's connection open, acking what it gets, until the bench stops.
async fn keep_acking(mut ws: Ws, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    loop {
        let frame = tokio::select! {
            frame = client::next_frame(&mut ws) => frame?,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        if let server_frame::Frame::Envelope(env) = frame {
            ack_one(&mut ws, &env).await?;
        }
    }
}

fn refusal(e: &SendError) -> String {
    format!("{:?}: {}", e.code(), e.message)
}

/// Waits until every member device has every message the server accepted, or deliveries
/// stop for [`STALL`]; returns what the sender got back.
async fn wait_for_deliveries(
    progress: &Progress,
    sending: tokio::task::JoinHandle<anyhow::Result<(Sent, Ws)>>,
    members: u64,
) -> anyhow::Result<(Sent, Ws)> {
    let (sent, ws) = sending.await??;
    let expected = members * sent.ok;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let (mut seen, mut moved) = (0, Instant::now());
    loop {
        let now = progress.delivered.load(Ordering::Relaxed);
        if now >= expected {
            return Ok((sent, ws));
        }
        if now != seen {
            (seen, moved) = (now, Instant::now());
        }
        if moved.elapsed() > STALL || Instant::now() > deadline {
            eprintln!("deliveries stopped at {now} of {expected}");
            return Ok((sent, ws));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (bounded) until the spawned server's CPU time stops moving, then reads it: the acks
/// of what was just delivered are then applied. `None` for a server the bench did not start.
async fn settle(target: &Target) -> anyhow::Result<Option<Usage>> {
    if !target.is_spawned() {
        return Ok(None);
    }
    let deadline = Instant::now() + QUIET_DEADLINE;
    let mut last = target.usage()?;
    let mut still = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = target.usage()?;
        if now.cpu_us != last.cpu_us {
            (last, still) = (now, Instant::now());
        } else if still.elapsed() >= QUIET {
            break;
        }
    }
    Ok(Some(last))
}

/// Acks gathered over one read burst.
#[derive(Default)]
struct Acks {
    seqs: Vec<u64>,
    groups: Vec<GroupAck>,
}

impl Acks {
    /// A mailbox envelope (`seq` > 0) is acked by seq, a group-stream one (`seq` 0,
    /// `group_seq` > 0) by group and group seq; an online-only one (both 0) not at all.
    fn add(&mut self, seq: u64, group_id: &bytes::Bytes, group_seq: u64) {
        if seq > 0 {
            self.seqs.push(seq);
        } else if group_seq > 0 {
            self.groups.push(GroupAck { group_id: group_id.clone(), seq: group_seq });
        }
    }

    fn take(&mut self) -> Option<Message> {
        if self.seqs.is_empty() && self.groups.is_empty() {
            return None;
        }
        Some(client::acks(std::mem::take(&mut self.seqs), std::mem::take(&mut self.groups)))
    }
}

/// One member device: where it connects, as whom, and what it shares with the others.
struct Member {
    url: String,
    device: Arc<BenchDevice>,
    fleet: Fleet,
}

impl Member {
    /// Connects, then reads and acks everything until the bench stops it (so late
    /// duplicates are counted too).
    async fn run(self, deadline: tokio::time::Instant) -> anyhow::Result<Received> {
        let result = self.receive(deadline).await;
        if result.is_err() {
            self.fleet.progress.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn receive(&self, deadline: tokio::time::Instant) -> anyhow::Result<Received> {
        let (mut ws, _) = self.fleet.connector.connect(&self.url, &self.device, deadline).await?;
        let mut stop = self.fleet.stop.clone();
        let mut seen = HashSet::new();
        let mut got = Received::default();
        let mut acks = Acks::default();
        let mut distributed = false;
        loop {
            let first = tokio::select! {
                first = ws.next() => first,
                _ = stop.wait_for(|s| *s) => return Ok(got),
            };
            for msg in take_ready(&mut ws, first) {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(e.into()),
                    None => bail!("the server closed a member's connection"),
                };
                let env = match client::decode(&msg) {
                    Some(server_frame::Frame::Envelope(env)) => env,
                    Some(server_frame::Frame::QueueEmpty(_)) => {
                        self.fleet.progress.ready.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    _ => continue,
                };
                acks.add(env.seq, &env.group_id, env.group_seq);
                if env.kind == EnvelopeKind::SealedSender as i32 && !distributed {
                    distributed = true;
                    self.fleet.progress.distributed.fetch_add(1, Ordering::Relaxed);
                }
                if env.kind != EnvelopeKind::GroupMessage as i32 {
                    continue;
                }
                if !seen.insert(env.group_seq) {
                    got.dup += 1;
                    continue;
                }
                got.unique += 1;
                got.streamed += u64::from(env.seq == 0);
                got.last = Some(Instant::now());
                if let Some(h) = Payloads::header(&env.content) {
                    got.latencies_us.push(self.fleet.payloads.now_ns().saturating_sub(h.sent_ns) / 1000);
                }
                self.fleet.progress.delivered.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(frame) = acks.take() {
                ws.send(frame).await?;
            }
        }
    }
}
