//! The WebSocket endpoints: `/v1/websocket` (admission, authentication, delivery with an
//! in-flight window, acks, sends) and `/v1/provisioning` (the unauthenticated socket a new
//! device waits on while it is linked, `provisioning.rs`). See docs/PROTOCOL.md.

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::http::error::HttpError;
use crate::http::limits::ClientIp;
use crate::metrics as m;
use crate::state::AppState;

pub mod admission;
pub mod conn;
pub mod provisioning;
pub mod request;
pub mod stream;

/// What tungstenite itself accepts; larger frames than [`hush_wire::limits::MAX_FRAME_BYTES`]
/// but below this are refused by the connection with a clean `frame_too_large` close.
const TRANSPORT_MAX_MESSAGE: usize = 1024 * 1024;
/// Bytes tungstenite may hold for a connection's writes beyond what the kernel took: the
/// largest frame, twice. (It holds at most one unflushed message anyway; this is the bound
/// should that ever change.)
const MAX_WRITE_BUFFER: usize = 2 * TRANSPORT_MAX_MESSAGE;

/// Takes a connection slot and a handshake slot for a socket from `addr`, or the refusal to
/// answer the upgrade with (boxed: a `Response` is large and refusals are rare).
pub(crate) fn admit(state: &AppState, addr: std::net::IpAddr) -> Result<admission::Ticket, Box<Response>> {
    state.admission.admit(addr).map_err(|refusal| {
        let (status, code, message) = match refusal {
            admission::Refusal::Full => {
                (StatusCode::SERVICE_UNAVAILABLE, "too_many_connections", "the server is full; retry later")
            }
            admission::Refusal::AddressBusy => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_handshakes",
                "too many connections from this address are still authenticating; retry later",
            ),
        };
        metrics::counter!(m::REFUSED, "code" => code).increment(1);
        Box::new(HttpError::new(status, code, message).into_response())
    })
}

/// Upgrades to a WebSocket if the connection and handshake budgets allow it.
pub async fn upgrade(State(state): State<AppState>, ClientIp(addr): ClientIp, ws: WebSocketUpgrade) -> Response {
    // The source address as the abuse limits see it: behind a trusted proxy, the client's.
    let ticket = match admit(&state, addr) {
        Ok(ticket) => ticket,
        Err(refusal) => return *refusal,
    };
    let tasks = state.tasks.clone();
    ws.max_message_size(TRANSPORT_MAX_MESSAGE)
        .max_frame_size(TRANSPORT_MAX_MESSAGE)
        // Small buffers: most connections are idle most of the time.
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| tasks.track_future(conn::run(state, socket, ticket)))
}
