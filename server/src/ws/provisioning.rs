//! `GET /v1/provisioning`: the unauthenticated socket a new device waits on while an existing
//! device of the account links it (see docs/PROTOCOL.md, "Linking a device").
//!
//! The server sends `ProvisioningFrame { address }`; the address is recorded in the store
//! with this node's id, so a `PUT /v1/provisioning/{address}` on any node can claim it (once)
//! and relay the body here (over the cluster bus from another node). The socket then gets
//! `ProvisioningFrame { message }` and a `1000` close; at the link timeout `4008
//! link_expired`. The socket counts against the unauthenticated (handshake) budgets for its
//! whole life, so a flood of them evicts only each other and handshakes, as handshakes do.

use axum::extract::State;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hush_wire::close;
use hush_wire::frames::{ProvisioningAddress, ProvisioningFrame, ProvisioningMessage, provisioning_frame};
use hush_wire::limits::PROVISIONING_ADDRESS_BYTES;
use rand::RngCore;

use super::admission::Ticket;
use super::conn::close_with;
use crate::http::limits::ClientIp;
use crate::state::{AppState, now_ms};

/// Largest frame a provisioning client may send (it sends none but control frames).
const MAX_CLIENT_MESSAGE: usize = 1024;

/// Upgrades to a provisioning socket if the connection and handshake budgets allow it.
pub async fn upgrade(State(state): State<AppState>, ClientIp(addr): ClientIp, ws: WebSocketUpgrade) -> Response {
    let ticket = match super::admit(&state, addr) {
        Ok(ticket) => ticket,
        Err(refusal) => return *refusal,
    };
    let tasks = state.tasks.clone();
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(512)
        .write_buffer_size(0)
        .on_upgrade(move |socket| tasks.track_future(run(state, socket, ticket)))
}

/// A fresh address: 16 random bytes, base64url without padding (22 characters).
pub fn new_address() -> String {
    let mut bytes = [0u8; PROVISIONING_ADDRESS_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` could be an address this server hands out (22 base64url characters).
pub fn is_address(s: &str) -> bool {
    s.len() == 22 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Runs one provisioning socket to its end, or until the shutdown deadline drops it.
pub async fn run<S>(state: AppState, socket: S, ticket: Ticket)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send,
{
    let abort = state.abort.clone();
    tokio::select! {
        () = serve(&state, socket, ticket) => {}
        () = abort.cancelled() => {}
    }
}

/// The channel's presence on this node; leaving happens on drop (the shutdown deadline too).
struct Open<'a> {
    state: &'a AppState,
    address: String,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.state.hub.provisioning.close(&self.address);
    }
}

fn frame(f: provisioning_frame::Frame) -> Message {
    Message::Binary(ProvisioningFrame::from(f).to_bytes().into())
}

/// How the socket ended.
enum End {
    Close(u16, &'static str),
    Gone,
}

async fn serve<S>(state: &AppState, mut socket: S, ticket: Ticket)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send,
{
    let address = new_address();
    let timeout = state.config.link_timeout;
    let expires_at = now_ms() + u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let open = Open { state, address: address.clone() };
    let mut message = state.hub.provisioning.open(address.clone());
    if let Err(e) = state.store.open_channel(&address, &state.config.node_id, expires_at).await {
        tracing::error!(error = %e, "recording a provisioning channel failed");
        close_with(&mut socket, close::INTERNAL, close::REASON_INTERNAL).await;
        return;
    }
    let end = async {
        let hello = ProvisioningAddress { address: address.clone(), expires_at };
        let sent = tokio::time::timeout(
            state.config.write_timeout,
            socket.send(frame(provisioning_frame::Frame::Address(hello))),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return End::Gone;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + state.config.ping_interval,
            state.config.ping_interval,
        );
        loop {
            tokio::select! {
                body = &mut message => {
                    let Ok(body) = body else { return End::Gone };
                    let msg = frame(provisioning_frame::Frame::Message(ProvisioningMessage { body }));
                    return match tokio::time::timeout(state.config.write_timeout, socket.send(msg)).await {
                        Ok(Ok(())) => End::Close(close::NORMAL, close::REASON_DELIVERED),
                        _ => End::Gone,
                    };
                }
                () = tokio::time::sleep_until(deadline) => return End::Close(close::LINK_EXPIRED, close::REASON_LINK_EXPIRED),
                () = state.shutdown.cancelled() => return End::Close(close::GOING_AWAY, close::REASON_SHUTDOWN),
                () = ticket.evicted() => return End::Close(close::TRY_AGAIN_LATER, close::REASON_BUSY),
                _ = ping.tick() => {
                    let sent = tokio::time::timeout(state.config.write_timeout, socket.send(Message::Ping(Default::default()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        return End::Gone;
                    }
                }
                next = socket.next() => match next {
                    None | Some(Ok(Message::Close(_)) | Err(_)) => return End::Gone,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(_)) => return End::Close(close::MALFORMED, close::REASON_MALFORMED),
                },
            }
        }
    }
    .await;
    drop(open);
    if let End::Close(code, reason) = end {
        close_with(&mut socket, code, reason).await;
    }
    // Delivered or expired, the row is gone already; otherwise the address must stop
    // accepting a message now (the sweeper would remove it at expiry anyway).
    if let Err(e) = state.store.close_channel(&address).await {
        tracing::warn!(error = %e, "forgetting a provisioning channel failed; it expires on its own");
    }
    drop(ticket);
}
