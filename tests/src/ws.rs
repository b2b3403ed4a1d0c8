//! [`WsClient`]: the WebSocket side of the protocol, with deadlines on every wait.
//!
//! Frames arriving while the test waits for something else are kept: envelopes
//! and `QueueEmpty` markers in arrival order ([`Event`]), send responses by
//! request id. Nothing the server sends is dropped silently.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hush_wire::frames::{
    Auth, AuthOk, Challenge, ClientFrame, DeviceMessage, DistributeRequest, Envelope, EnvelopeKind, GroupSendRequest,
    RecipientMessages, SendError, SendErrorCode, SendOk, SendRequest, SendResponse, client_frame, send_response,
    server_frame,
};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::device::{TestAccount, TestDevice};
use crate::server::TestServer;

/// Something delivered to a device, in the order the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// One envelope.
    Envelope(Envelope),
    /// The stored backlog has been sent.
    QueueEmpty,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close frame's code, or `None` if the connection ended without one.
    pub code: Option<u16>,
    /// The close frame's reason, or the transport error if there was no frame.
    pub reason: String,
}

/// A WebSocket connection to `hushd`.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    label: String,
    events: VecDeque<Event>,
    responses: HashMap<u64, SendResponse>,
    next_request_id: u64,
    challenge: Option<Challenge>,
    auth_ok: Option<AuthOk>,
    closed: Option<Closed>,
    /// How long each wait may take (default [`crate::WAIT`]).
    pub timeout: Duration,
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("label", &self.label)
            .field("buffered_events", &self.events.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl WsClient {
    /// Opens a connection and reads the server's `Challenge`, without authenticating.
    pub async fn open(server: &TestServer) -> WsClient {
        let url = server.ws_url();
        let stream = match tokio::time::timeout(crate::WAIT, tokio_tungstenite::connect_async(&url)).await {
            Ok(Ok((stream, _))) => stream,
            Ok(Err(e)) => panic!("cannot connect to {url}: {e}"),
            Err(_) => panic!("timed out connecting to {url}"),
        };
        let mut client = WsClient {
            stream,
            label: "unauthenticated".to_owned(),
            events: VecDeque::new(),
            responses: HashMap::new(),
            next_request_id: 1,
            challenge: None,
            auth_ok: None,
            closed: None,
            timeout: crate::WAIT,
        };
        let deadline = client.deadline();
        while client.challenge.is_none() {
            client.pump(deadline, "the Challenge frame").await;
        }
        client
    }

    /// Opens a connection and authenticates as `device`; panics unless `AuthOk` comes.
    pub async fn connect(server: &TestServer, device: &TestDevice) -> WsClient {
        let mut client = Self::open(server).await;
        client.label = format!("{}.{}", device.account_id, device.device_id);
        let auth = client.auth_for(device);
        client.send_frame(client_frame::Frame::Auth(auth)).await;
        client.expect_auth_ok().await;
        client
    }

    /// Connects as `device` and expects an empty mailbox (`QueueEmpty` first).
    pub async fn connect_drained(server: &TestServer, device: &TestDevice) -> WsClient {
        let mut client = Self::connect(server, device).await;
        client.expect_queue_empty().await;
        client
    }

    /// The `Auth` frame answering this connection's challenge as `device`.
    pub fn auth_for(&self, device: &TestDevice) -> Auth {
        Auth {
            account_id: device.account_id.as_bytes().to_vec().into(),
            device_id: device.device_id,
            signature: device.sign_challenge(&self.challenge().nonce).to_vec().into(),
        }
    }

    /// The challenge the server sent on this connection.
    pub fn challenge(&self) -> &Challenge {
        self.challenge.as_ref().unwrap_or_else(|| panic!("no challenge received"))
    }

    /// The `AuthOk` the server sent, if authenticated.
    pub fn auth_ok(&self) -> Option<&AuthOk> {
        self.auth_ok.as_ref()
    }

    /// Waits for `AuthOk`.
    pub async fn expect_auth_ok(&mut self) -> AuthOk {
        let deadline = self.deadline();
        loop {
            if let Some(ok) = &self.auth_ok {
                return *ok;
            }
            self.pump(deadline, "AuthOk").await;
        }
    }

    /// Encodes and sends one client frame; panics if the transport fails.
    pub async fn send_frame(&mut self, frame: client_frame::Frame) {
        let bytes = ClientFrame::from(frame).to_bytes();
        if let Err(e) = self.send_raw(Message::binary(bytes)).await {
            panic!("[{}] sending a frame failed: {e}", self.label);
        }
    }

    /// Sends any WebSocket message as is (garbage, text, oversize...).
    pub async fn send_raw(&mut self, msg: Message) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        match tokio::time::timeout(self.timeout, self.stream.send(msg)).await {
            Ok(r) => r,
            Err(_) => panic!("[{}] sending took longer than {:?}", self.label, self.timeout),
        }
    }

    /// Sends `req` (a zero `request_id` is replaced by a fresh one) and waits for
    /// the `SendResponse` with its request id; other frames are kept.
    pub async fn send(&mut self, mut req: SendRequest) -> SendResponse {
        req.request_id = self.request_id(req.request_id);
        let id = req.request_id;
        self.request(id, client_frame::Frame::Send(req)).await
    }

    /// Sends a `GroupSendRequest` (a zero `request_id` is replaced) and waits for its answer.
    pub async fn group_send(&mut self, mut req: GroupSendRequest) -> SendResponse {
        req.request_id = self.request_id(req.request_id);
        let id = req.request_id;
        self.request(id, client_frame::Frame::GroupSend(req)).await
    }

    /// Sends a `DistributeRequest` (a zero `request_id` is replaced) and waits for its answer.
    pub async fn distribute(&mut self, mut req: DistributeRequest) -> SendResponse {
        req.request_id = self.request_id(req.request_id);
        let id = req.request_id;
        self.request(id, client_frame::Frame::Distribute(req)).await
    }

    /// `id`, or a fresh request id when it is zero.
    fn request_id(&mut self, id: u64) -> u64 {
        if id != 0 {
            return id;
        }
        self.next_request_id += 1;
        self.next_request_id - 1
    }

    /// Sends `frame` and waits for the `SendResponse` with request id `id`; other frames are kept.
    async fn request(&mut self, id: u64, frame: client_frame::Frame) -> SendResponse {
        self.send_frame(frame).await;
        let deadline = self.deadline();
        loop {
            if let Some(resp) = self.responses.remove(&id) {
                return resp;
            }
            self.pump(deadline, &format!("SendResponse {id}")).await;
        }
    }

    /// Sends and asserts the answer is `ok`.
    pub async fn send_ok(&mut self, req: SendRequest) -> SendOk {
        let resp = self.send(req).await;
        self.expect_ok(resp)
    }

    /// Sends and asserts the answer is an error with `code`.
    pub async fn send_err(&mut self, req: SendRequest, code: SendErrorCode) -> SendError {
        let resp = self.send(req).await;
        self.expect_err(resp, code)
    }

    /// Sends a group message and asserts the answer is `ok` (with a group seq).
    pub async fn group_send_ok(&mut self, req: GroupSendRequest) -> SendOk {
        let resp = self.group_send(req).await;
        let ok = self.expect_ok(resp);
        assert!(ok.group_seq > 0, "[{}] a group send's SendOk carries its group seq", self.label);
        ok
    }

    /// Sends a group message and asserts the answer is an error with `code`.
    pub async fn group_send_err(&mut self, req: GroupSendRequest, code: SendErrorCode) -> SendError {
        let resp = self.group_send(req).await;
        self.expect_err(resp, code)
    }

    /// Distributes and asserts the answer is `ok`.
    pub async fn distribute_ok(&mut self, req: DistributeRequest) -> SendOk {
        let resp = self.distribute(req).await;
        self.expect_ok(resp)
    }

    /// Distributes and asserts the answer is an error with `code`.
    pub async fn distribute_err(&mut self, req: DistributeRequest, code: SendErrorCode) -> SendError {
        let resp = self.distribute(req).await;
        self.expect_err(resp, code)
    }

    /// The `SendOk` of an answer that must be one.
    pub fn expect_ok(&self, resp: SendResponse) -> SendOk {
        match resp.result {
            Some(send_response::Result::Ok(ok)) => ok,
            other => panic!("[{}] expected SendOk, got {other:?}", self.label),
        }
    }

    /// The `SendError` of an answer that must be one with `code`.
    pub fn expect_err(&self, resp: SendResponse, code: SendErrorCode) -> SendError {
        match resp.result {
            Some(send_response::Result::Error(err)) => {
                assert_eq!(err.code(), code, "[{}] expected send error {code:?}, got {err:?}", self.label);
                err
            }
            other => panic!("[{}] expected send error {code:?}, got {other:?}", self.label),
        }
    }

    /// The next envelope or `QueueEmpty`, in arrival order.
    pub async fn next_event(&mut self) -> Event {
        let deadline = self.deadline();
        loop {
            if let Some(ev) = self.events.pop_front() {
                return ev;
            }
            self.pump(deadline, "an envelope or QueueEmpty").await;
        }
    }

    /// How many envelopes and `QueueEmpty` markers have arrived but not been taken yet.
    pub fn buffered_events(&self) -> usize {
        self.events.len()
    }

    /// The next event, which must be an envelope.
    pub async fn next_envelope(&mut self) -> Envelope {
        match self.next_event().await {
            Event::Envelope(env) => env,
            Event::QueueEmpty => panic!("[{}] expected an envelope, got QueueEmpty", self.label),
        }
    }

    /// The next event, which must be `QueueEmpty`.
    pub async fn expect_queue_empty(&mut self) {
        match self.next_event().await {
            Event::QueueEmpty => {}
            Event::Envelope(env) => panic!(
                "[{}] expected QueueEmpty, got an envelope (seq {}, {} bytes)",
                self.label,
                env.seq,
                env.content.len()
            ),
        }
    }

    /// Acknowledges `seqs`.
    pub async fn ack(&mut self, seqs: &[u64]) {
        self.send_frame(client_frame::Frame::Ack(hush_wire::frames::Ack { seqs: seqs.to_vec(), groups: Vec::new() }))
            .await;
    }

    /// Waits until the connection ends; panics if it ended without a close frame.
    pub async fn expect_close(&mut self) -> (u16, String) {
        let closed = self.wait_closed().await;
        match closed.code {
            Some(code) => (code, closed.reason),
            None => panic!("[{}] connection ended without a close frame: {}", self.label, closed.reason),
        }
    }

    /// Waits until the connection ends, however it ends; frames read meanwhile are kept.
    pub async fn wait_closed(&mut self) -> Closed {
        let deadline = self.deadline();
        loop {
            if let Some(closed) = &self.closed {
                return closed.clone();
            }
            self.read_one(deadline, "the connection to close").await;
        }
    }

    /// Closes the connection politely: sends a close frame and waits (with a
    /// deadline) until the server has answered it, so every frame sent before
    /// has been read by the server.
    pub async fn close(mut self) {
        if self.closed.is_some() {
            return;
        }
        if self.send_raw(Message::Close(None)).await.is_err() {
            return; // the server has already gone away
        }
        let deadline = self.deadline();
        while self.closed.is_none() {
            self.read_one(deadline, "the server's close reply").await;
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Reads one message; panics if the connection has closed.
    async fn pump(&mut self, deadline: Instant, what: &str) {
        if let Some(closed) = &self.closed {
            panic!("[{}] the connection closed ({closed:?}) while waiting for {what}", self.label);
        }
        self.read_one(deadline, what).await;
        if let Some(closed) = &self.closed {
            panic!("[{}] the connection closed ({closed:?}) while waiting for {what}", self.label);
        }
    }

    /// Reads one WebSocket message and files it; panics at the deadline.
    async fn read_one(&mut self, deadline: Instant, what: &str) {
        let next = match tokio::time::timeout_at(deadline, self.stream.next()).await {
            Ok(next) => next,
            Err(_) => panic!(
                "[{}] timed out after {:?} waiting for {what} (buffered: {} events, {} responses)",
                self.label,
                self.timeout,
                self.events.len(),
                self.responses.len()
            ),
        };
        match next {
            Some(Ok(Message::Binary(bytes))) => self.file_frame(&bytes),
            Some(Ok(Message::Close(frame))) => {
                // Let tungstenite's automatic close reply reach the server.
                let _ = tokio::time::timeout_at(deadline, self.stream.flush()).await;
                self.closed = Some(match frame {
                    Some(f) => Closed { code: Some(u16::from(f.code)), reason: f.reason.to_string() },
                    None => Closed { code: None, reason: "close frame without a code".to_owned() },
                });
            }
            Some(Ok(Message::Text(t))) => {
                panic!("[{}] the server sent a text frame: {t:?}", self.label)
            }
            Some(Ok(_)) => {} // ping, pong, raw frame: tungstenite answers pings itself
            Some(Err(e)) => {
                self.closed = Some(Closed { code: None, reason: format!("transport error: {e}") });
            }
            None => {
                self.closed = Some(Closed { code: None, reason: "stream ended".to_owned() });
            }
        }
    }

    fn file_frame(&mut self, bytes: &[u8]) {
        let frame = hush_wire::decode_server_frame(bytes).unwrap_or_else(|e| {
            panic!("[{}] the server sent an undecodable frame ({} bytes): {e}", self.label, bytes.len())
        });
        match frame {
            server_frame::Frame::Challenge(c) => {
                assert!(self.challenge.is_none(), "[{}] the server sent a second Challenge", self.label);
                self.challenge = Some(c);
            }
            server_frame::Frame::AuthOk(ok) => {
                assert!(self.auth_ok.is_none(), "[{}] the server sent a second AuthOk", self.label);
                self.auth_ok = Some(ok);
            }
            server_frame::Frame::Envelope(env) => self.events.push_back(Event::Envelope(env)),
            server_frame::Frame::QueueEmpty(_) => self.events.push_back(Event::QueueEmpty),
            server_frame::Frame::SendResponse(resp) => {
                let id = resp.request_id;
                assert!(
                    self.responses.insert(id, resp).is_none(),
                    "[{}] two SendResponses for request {id}",
                    self.label
                );
            }
        }
    }
}

/// A sealed-sender ciphertext for `device`, carrying its registration id.
pub fn message(device: &TestDevice, content: impl Into<bytes::Bytes>) -> DeviceMessage {
    DeviceMessage {
        device_id: device.device_id,
        registration_id: device.registration_id,
        kind: EnvelopeKind::SealedSender as i32,
        content: content.into(),
    }
}

/// The messages for one account.
pub fn recipient(account_id: Uuid, messages: Vec<DeviceMessage>) -> RecipientMessages {
    RecipientMessages { account_id: account_id.as_bytes().to_vec().into(), messages }
}

/// The same content for every device of `account`.
pub fn to_all_devices(account: &TestAccount, content: &[u8]) -> RecipientMessages {
    recipient(account.account_id, account.devices.iter().map(|d| message(d, content.to_vec())).collect())
}

/// A stored (not online-only) send; its request id is filled in by [`WsClient::send`].
pub fn send_request(recipients: Vec<RecipientMessages>) -> SendRequest {
    SendRequest { request_id: 0, recipients, online_only: false, idempotency_key: bytes::Bytes::new(), urgent: true }
}
