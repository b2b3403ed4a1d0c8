//! One WebSocket connection: challenge/auth, then the delivery loop, which dispatches
//! each request frame to its module in [`super::request`].
//!
//! Generic over any `Sink`/`Stream` of WebSocket messages so it can be driven
//! without a socket. Untrusted input never panics: a bad frame closes this
//! connection with a code and a reason, and nothing else is affected.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::stream::FuturesUnordered;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use hush_keys::auth::DeviceAuthKey;
use hush_wire::close;
use hush_wire::frames::{
    AuthOk, Challenge, Envelope, QueueEmpty, SendResponse, ServerFrame, client_frame, decode_client_frame,
    send_response, server_frame,
};
use hush_wire::limits::CHALLENGE_BYTES;
use rand::RngCore;
use tokio::time::Instant;
use uuid::Uuid;

use super::request;
use super::stream::{PushAction, Streams};
use crate::hub::{CloseRequest, Push, StreamFrame};
use crate::metrics as m;
use crate::state::{AppState, TokioClock, now_ms};
use crate::store::{Device, DeviceKey, MailboxRead, StoredEnvelope};
use crate::ws::admission::Ticket;

/// Sends awaiting their commit per connection; beyond this the connection stops reading.
const MAX_PENDING_SENDS: usize = 512;
/// How long to wait for the peer's close after sending ours.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

type PendingSend = Pin<Box<dyn Future<Output = SendResponse> + Send>>;

/// What one read from the socket amounted to.
enum Incoming {
    Frame(client_frame::Frame),
    /// A ping or pong: the peer is alive.
    Heard,
    /// The peer closed or the transport ended.
    Closed,
    /// Refuse with this close code and reason.
    Reject(u16, &'static str),
}

fn classify(msg: Option<Result<Message, axum::Error>>) -> Incoming {
    match msg {
        None | Some(Ok(Message::Close(_))) => Incoming::Closed,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Heard,
        Some(Ok(Message::Text(_))) => Incoming::Reject(close::UNSUPPORTED_DATA, close::REASON_TEXT_FRAME),
        Some(Ok(Message::Binary(bytes))) => match decode_client_frame(&bytes) {
            Ok(frame) => Incoming::Frame(frame),
            Err(hush_wire::FrameError::TooLarge(_)) => Incoming::Reject(close::TOO_BIG, close::REASON_TOO_BIG),
            Err(_) => Incoming::Reject(close::MALFORMED, close::REASON_MALFORMED),
        },
        Some(Err(e)) => {
            let text = e.to_string();
            if text.contains("too long") || text.contains("limit exceeded") {
                Incoming::Reject(close::TOO_BIG, close::REASON_TOO_BIG)
            } else {
                Incoming::Closed
            }
        }
    }
}

fn frame(f: server_frame::Frame) -> Message {
    Message::Binary(ServerFrame::from(f).to_bytes().into())
}

/// One write (or flush) to the socket, bounded: a peer that has stopped reading is closed
/// as a slow consumer after `write_timeout`, and shutdown does not wait for it.
async fn bounded(state: &AppState, op: impl Future<Output = Result<(), axum::Error>>) -> Result<(), End> {
    tokio::select! {
        biased;
        done = tokio::time::timeout(state.config.write_timeout, op) => match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(close::SLOW_CONSUMER, close::REASON_SLOW_CONSUMER)),
        },
        () = state.shutdown.cancelled() => Err(End::Close(close::GOING_AWAY, close::REASON_SHUTDOWN)),
    }
}

/// Sends a close frame, then waits briefly for the peer to close so the frame is not lost to a
/// reset. Both steps are bounded: a peer that stopped reading cannot even take the close frame.
pub(crate) async fn close_with<S>(socket: &mut S, code: u16, reason: &'static str)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    metrics::counter!(m::CLOSED, "reason" => reason).increment(1);
    let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    if !matches!(tokio::time::timeout(CLOSE_GRACE, socket.send(close)).await, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(msg)) = socket.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Logs an abnormal close at info, naming the device by its internal mailbox id only, at most
/// ten a second (a storm of them is counted in `/metrics`, not written to the log).
fn log_abnormal_close(mailbox: i64, code: u16, reason: &'static str) {
    type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;
    static LIMIT: OnceLock<Limiter> = OnceLock::new();
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let quota = Quota::per_second(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
    let limit = LIMIT.get_or_init(|| RateLimiter::new(quota, InMemoryState::default(), TokioClock));
    if limit.check().is_ok() {
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        tracing::info!(device = mailbox, code, reason, suppressed, "closed a connection");
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs one connection to completion, or until the shutdown deadline drops it.
/// `ticket` holds its admission slots until it ends.
pub async fn run<S>(state: AppState, socket: S, ticket: Ticket)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send,
{
    let abort = state.abort.clone();
    tokio::select! {
        () = serve(state, socket, ticket) => {}
        () = abort.cancelled() => {}
    }
}

async fn serve<S>(state: AppState, mut socket: S, mut ticket: Ticket)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send,
{
    let Some(device) = Box::pin(authenticate(&state, &mut socket, &mut ticket)).await else { return };
    let registration = state.hub.register(device.key, ticket.seq());
    if registration.stale {
        // A newer socket of this device is online: this one's client has given up on it.
        Box::pin(close_with(&mut socket, close::REPLACED, close::REASON_REPLACED)).await;
        return;
    }
    let online = Online { state: &state, key: device.key, mailbox: device.mailbox, conn_id: registration.conn_id };
    online.enter();
    // Last-seen has day precision: most connections need no write at all.
    let now = now_ms();
    if device.last_seen != Some(crate::store::day_floor(now))
        && let Err(e) = state.store.touch_device(device.key, now).await
    {
        tracing::warn!(error = %e, "recording last-seen failed");
    }
    let session = Session::new(&state, device, registration);
    session.run(&mut socket).await;
}

/// An authenticated connection's presence in the routing tables; leaving them happens on
/// drop, so a connection dropped at the shutdown deadline leaves them too.
struct Online<'a> {
    state: &'a AppState,
    key: DeviceKey,
    mailbox: crate::store::MailboxId,
    conn_id: u64,
}

impl Online<'_> {
    fn enter(&self) {
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        if let Some(cluster) = &self.state.cluster {
            cluster.connected(self.key);
        }
    }
}

impl Drop for Online<'_> {
    fn drop(&mut self) {
        self.state.hub.unregister(self.key, self.conn_id);
        if let Some(cluster) = &self.state.cluster {
            cluster.disconnected(self.key);
        }
        // If it left envelopes unacknowledged, it is woken a little later.
        self.state.pusher.disconnected(self.key, self.mailbox);
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
    }
}

async fn authenticate<S>(state: &AppState, socket: &mut S, ticket: &mut Ticket) -> Option<Device>
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send,
{
    let mut nonce = [0u8; CHALLENGE_BYTES];
    rand::rng().fill_bytes(&mut nonce);
    let challenge = Challenge { nonce: nonce.to_vec().into(), server_time: now_ms() };
    bounded(state, socket.send(frame(server_frame::Frame::Challenge(challenge)))).await.ok()?;
    let deadline = tokio::time::Instant::now() + state.config.auth_timeout;
    let auth = loop {
        let next = tokio::select! {
            next = socket.next() => next,
            () = tokio::time::sleep_until(deadline) => {
                close_with(socket, close::AUTH_TIMEOUT, close::REASON_AUTH_TIMEOUT).await;
                return None;
            }
            () = state.shutdown.cancelled() => {
                close_with(socket, close::GOING_AWAY, close::REASON_SHUTDOWN).await;
                return None;
            }
            () = ticket.evicted() => {
                close_with(socket, close::TRY_AGAIN_LATER, close::REASON_BUSY).await;
                return None;
            }
        };
        match classify(next) {
            Incoming::Frame(client_frame::Frame::Auth(auth)) => break auth,
            Incoming::Frame(_) => {
                close_with(socket, close::MALFORMED, close::REASON_MALFORMED).await;
                return None;
            }
            Incoming::Heard => continue,
            Incoming::Closed => return None,
            Incoming::Reject(code, reason) => {
                close_with(socket, code, reason).await;
                return None;
            }
        }
    };
    // Verifying is the server's own work, bounded by the database: from here the connection
    // no longer counts against the handshake budget.
    ticket.answered();
    let verified = match verify_auth(state, &nonce, &auth).await {
        Ok(Some(device)) => Some(device),
        Ok(None) => {
            close_with(socket, close::AUTH_FAILED, close::REASON_AUTH_FAILED).await;
            return None;
        }
        Err(LookupFailed) => {
            // Not the client's fault: it must retry, not give up on its account.
            close_with(socket, close::INTERNAL, close::REASON_INTERNAL).await;
            return None;
        }
    };
    let ok = AuthOk { server_time: now_ms(), window: state.config.limits.window };
    bounded(state, socket.send(frame(server_frame::Frame::AuthOk(ok)))).await.ok()?;
    verified
}

/// The database could not be asked who the device is.
struct LookupFailed;

/// The device, if the signature is its own; `Ok(None)` for an unknown device or a bad
/// signature (the client's fault), `Err` when the database failed (the server's).
async fn verify_auth(
    state: &AppState,
    nonce: &[u8],
    auth: &hush_wire::frames::Auth,
) -> Result<Option<Device>, LookupFailed> {
    let Ok(account) = Uuid::from_slice(&auth.account_id) else { return Ok(None) };
    let key = DeviceKey { account, device_id: auth.device_id };
    let device = match state.reads.device(key).await {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "device lookup failed during authentication");
            return Err(LookupFailed);
        }
    };
    let Ok(auth_key) = DeviceAuthKey::from_bytes(&device.auth_key) else { return Ok(None) };
    let valid = auth_key.verify_ws_challenge(nonce, account, auth.device_id, &auth.signature).is_ok();
    Ok(valid.then_some(device))
}

/// The delivery state of one authenticated connection.
struct Session<'a> {
    state: &'a AppState,
    device: Device,
    registration: crate::hub::Registration,
    /// Highest seq written to this connection.
    cursor: u64,
    /// Unacknowledged seqs written to this connection, with their server timestamps.
    in_flight: BTreeMap<u64, u64>,
    /// The mailbox may hold envelopes after `cursor` that were not pushed: read it.
    need_fetch: bool,
    /// The stream-read groups of the device (read after the mailbox). Boxed: it would grow
    /// every connection's task.
    streams: Box<Streams>,
    /// QueueEmpty has been sent.
    replayed: bool,
    pending: FuturesUnordered<PendingSend>,
    last_heard: Instant,
    /// Frames were fed to the sink and not yet flushed.
    unflushed: bool,
}

/// Why the loop ended.
enum End {
    Close(u16, &'static str),
    Gone,
}

impl<'a> Session<'a> {
    fn new(state: &'a AppState, device: Device, registration: crate::hub::Registration) -> Self {
        Session {
            state,
            device,
            registration,
            cursor: 0,
            in_flight: BTreeMap::new(),
            need_fetch: true,
            streams: Box::default(),
            replayed: false,
            pending: FuturesUnordered::new(),
            last_heard: Instant::now(),
            unflushed: false,
        }
    }

    fn window(&self) -> usize {
        self.state.config.limits.window as usize
    }

    /// Envelopes written and not yet acknowledged: mailbox and streams share the window.
    fn unacked(&self) -> usize {
        self.in_flight.len() + self.streams.in_flight()
    }

    async fn run<S>(mut self, socket: &mut S)
    where
        S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send,
    {
        let end = self.drive(socket).await;
        if let End::Close(code, reason) = end {
            if matches!(
                code,
                close::TOO_BIG
                    | close::MALFORMED
                    | close::UNSUPPORTED_DATA
                    | close::PING_TIMEOUT
                    | close::SLOW_CONSUMER
            ) {
                log_abnormal_close(self.device.mailbox.0, code, reason);
            }
            // Boxed: once per connection, and it would otherwise grow every idle connection's task.
            Box::pin(close_with(socket, code, reason)).await;
        }
    }

    async fn drive<S>(&mut self, socket: &mut S) -> End
    where
        S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send,
    {
        match self.drive_inner(socket).await {
            Err(end) => end,
            Ok(never) => match never {},
        }
    }

    async fn drive_inner<S>(&mut self, socket: &mut S) -> Result<std::convert::Infallible, End>
    where
        S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send,
    {
        let interval = self.state.config.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            // Refill once half the window is free: fewer, larger reads. The mailbox first,
            // then the group streams; the queue-empty marker once both are drained.
            if self.need_fetch && self.unacked() <= self.window() / 2 {
                self.fetch(socket).await?;
            }
            if !self.need_fetch && self.streams.need_fetch() && self.unacked() <= self.window() / 2 {
                // Boxed: only devices in stream-read groups get here, and it would grow every task.
                Box::pin(self.fetch_streams(socket)).await?;
            }
            if !self.replayed && !self.need_fetch && !self.streams.need_fetch() {
                self.replayed = true;
                self.feed(socket, frame(server_frame::Frame::QueueEmpty(QueueEmpty {}))).await?;
            }
            if self.unflushed {
                bounded(self.state, socket.flush()).await?;
                self.unflushed = false;
            }
            let accepting = self.pending.len() < MAX_PENDING_SENDS;
            tokio::select! {
                biased;
                () = self.state.shutdown.cancelled() => return Err(End::Close(close::GOING_AWAY, close::REASON_SHUTDOWN)),
                () = self.registration.signal.notified() => {
                    match self.registration.signal.close_request() {
                        CloseRequest::Replaced => return Err(End::Close(close::REPLACED, close::REASON_REPLACED)),
                        CloseRequest::Removed => return Err(End::Close(close::DEVICE_REMOVED, close::REASON_DEVICE_REMOVED)),
                        CloseRequest::None => {}
                    }
                    if self.registration.signal.take_lagged() {
                        self.need_fetch = true;
                        self.streams.lagged();
                    }
                    let pushes = self.registration.signal.drain();
                    for push in pushes {
                        self.on_push(socket, push).await?;
                    }
                }
                Some(response) = self.pending.next(), if !self.pending.is_empty() => {
                    if let Some(send_response::Result::Ok(ok)) = &response.result
                        && ok.group_seq > 0
                    {
                        self.sent_own(response.request_id, ok.group_seq);
                    }
                    self.feed(socket, frame(server_frame::Frame::SendResponse(response))).await?;
                }
                next = socket.next(), if accepting => {
                    match classify(next) {
                        Incoming::Frame(f) => self.on_frame(f).await?,
                        Incoming::Heard => {}
                        Incoming::Closed => return Err(End::Gone),
                        Incoming::Reject(code, reason) => return Err(End::Close(code, reason)),
                    }
                    self.last_heard = Instant::now();
                }
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > interval * 2 {
                        return Err(End::Close(close::PING_TIMEOUT, close::REASON_PING_TIMEOUT));
                    }
                    self.feed(socket, Message::Ping(Default::default())).await?;
                    // A wake-up from another node can be lost (Redis is not on the durable
                    // path); the mailbox is the truth, so re-read it now and then. On one node
                    // none is lost (a full queue marks the connection lagged), so an idle
                    // connection costs no reads.
                    if self.state.cluster.is_some() {
                        self.need_fetch = true;
                        self.streams.lagged();
                    }
                }
            }
        }
    }

    async fn feed<S>(&mut self, socket: &mut S, msg: Message) -> Result<(), End>
    where
        S: Sink<Message, Error = axum::Error> + Unpin,
    {
        bounded(self.state, socket.feed(msg)).await?;
        self.unflushed = true;
        Ok(())
    }

    async fn write_envelope<S>(&mut self, socket: &mut S, e: StoredEnvelope) -> Result<(), End>
    where
        S: Sink<Message, Error = axum::Error> + Unpin,
    {
        if e.seq > 0 {
            self.cursor = self.cursor.max(e.seq);
            self.in_flight.insert(e.seq, e.server_ts);
        }
        let (group_id, group_seq) = match e.group {
            Some(g) => (g.group.as_bytes().to_vec().into(), g.seq),
            None => (Default::default(), 0),
        };
        let env = Envelope {
            seq: e.seq,
            server_timestamp: e.server_ts,
            kind: e.kind,
            content: e.content,
            group_id,
            group_seq,
        };
        self.feed(socket, frame(server_frame::Frame::Envelope(env))).await?;
        metrics::counter!(m::DELIVERED).increment(1);
        Ok(())
    }

    /// Reads the mailbox after `cursor` into the free part of the window.
    async fn fetch<S>(&mut self, socket: &mut S) -> Result<(), End>
    where
        S: Sink<Message, Error = axum::Error> + Unpin,
    {
        let room = self.window().saturating_sub(self.unacked());
        let read = MailboxRead { mailbox: self.device.mailbox, after_seq: self.cursor, limit: room as u32 };
        let batch = match self.state.reads.fetch(read).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "reading a mailbox failed");
                return Err(End::Close(close::INTERNAL, close::REASON_INTERNAL));
            }
        };
        self.need_fetch = batch.len() == room;
        for e in batch {
            self.write_envelope(socket, e).await?;
        }
        Ok(())
    }

    /// Reads the group streams after what was written into the free part of the window
    /// (reading the device's cursors first, on connect or when it joined a group).
    async fn fetch_streams<S>(&mut self, socket: &mut S) -> Result<(), End>
    where
        S: Sink<Message, Error = axum::Error> + Unpin,
    {
        let failed = |e: crate::store::StoreError| {
            tracing::error!(error = %e, "reading a group stream failed");
            End::Close(close::INTERNAL, close::REASON_INTERNAL)
        };
        if self.streams.needs_cursors() {
            let cursors = self.state.reads.stream_cursors(self.device.mailbox).await.map_err(failed)?;
            self.streams.load(&cursors);
        }
        let room = self.window().saturating_sub(self.unacked());
        let reads = self.streams.reads(room as u32);
        if reads.is_empty() || room == 0 {
            self.streams.fetched(!reads.is_empty());
            return Ok(());
        }
        let batches = self.state.reads.fetch_streams(&reads).await.map_err(failed)?;
        let mut left = room;
        let mut more = false;
        for batch in batches {
            more |= batch.len() == room;
            for e in batch {
                if left == 0 {
                    more = true;
                    break;
                }
                left -= 1;
                self.write_stream(socket, &StreamFrame::new(&e)).await?;
            }
        }
        self.streams.fetched(more);
        Ok(())
    }

    async fn write_stream<S>(&mut self, socket: &mut S, f: &StreamFrame) -> Result<(), End>
    where
        S: Sink<Message, Error = axum::Error> + Unpin,
    {
        self.streams.wrote(f.position, f.server_ts);
        self.feed(socket, Message::Binary(f.frame.clone())).await?;
        metrics::counter!(m::DELIVERED).increment(1);
        Ok(())
    }

    async fn on_push<S>(&mut self, socket: &mut S, push: Push) -> Result<(), End>
    where
        S: Sink<Message, Error = axum::Error> + Unpin,
    {
        match push {
            Push::Ephemeral(e) => self.write_envelope(socket, *e).await,
            Push::Stream(f) => {
                let room = self.unacked() < self.window();
                match self.streams.on_push(&f, !self.need_fetch, room) {
                    PushAction::Write => self.write_stream(socket, &f).await,
                    PushAction::Skip | PushAction::Fetch => Ok(()),
                }
            }
            Push::Stored(e) => {
                if e.seq <= self.cursor {
                    return Ok(()); // already read from the mailbox
                }
                if !self.need_fetch && e.seq == self.cursor + 1 && self.unacked() < self.window() {
                    self.write_envelope(socket, *e).await
                } else {
                    self.need_fetch = true;
                    Ok(())
                }
            }
        }
    }

    /// This device's own group message was stored at `seq`: in a stream-read group it need
    /// not be written back to it (see [`Streams::sent_own`]).
    /// The cursor is stored if the writer's queue has room; otherwise with the next ack.
    fn sent_own(&mut self, request_id: u64, seq: u64) {
        if let Some(advance) = self.streams.sent_own(request_id, seq) {
            let ack = crate::store::StreamAck { mailbox: self.device.mailbox, group: advance.group, seq: advance.seq };
            self.state.committer.try_ack_streams(vec![ack]);
        }
    }

    /// Dispatches one frame to its request module; answers come back through `pending`.
    async fn on_frame(&mut self, f: client_frame::Frame) -> Result<(), End> {
        let ctx = request::Ctx { state: self.state, device: self.device.key };
        // Boxed: a request holds its item across an await, which would grow every idle task.
        let (request_id, answer) = match f {
            client_frame::Frame::Auth(_) => return Err(End::Close(close::MALFORMED, close::REASON_MALFORMED)),
            client_frame::Frame::Ack(ack) => {
                let acks =
                    request::ack::parse(ack).map_err(|_| End::Close(close::MALFORMED, close::REASON_MALFORMED))?;
                let committer = &self.state.committer;
                let mailbox = self.device.mailbox;
                let applied = request::ack::apply(committer, mailbox, &mut self.in_flight, &mut self.streams, acks);
                return Box::pin(applied).await.map_err(|_| End::Close(close::GOING_AWAY, close::REASON_SHUTDOWN));
            }
            client_frame::Frame::Send(req) => (req.request_id, Box::pin(request::direct::handle(ctx, req)).await),
            client_frame::Frame::GroupSend(req) => {
                if let Ok(group) = request::group_id(&req.group_id) {
                    self.streams.sending(req.request_id, group);
                }
                (req.request_id, Box::pin(request::group::handle(ctx, req)).await)
            }
            client_frame::Frame::Distribute(req) => {
                (req.request_id, Box::pin(request::distribute::handle(ctx, req)).await)
            }
        };
        self.pending.push(Box::pin(async move {
            let result = answer.await;
            if let send_response::Result::Error(e) = &result {
                metrics::counter!(m::SENDS_REJECTED, "code" => request::code_label(e)).increment(1);
            }
            SendResponse { request_id, result: Some(result) }
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
