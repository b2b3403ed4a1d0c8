//! The WebSocket endpoint `/v1/websocket`: authentication, delivery with an
//! in-flight window, acks, sends. See docs/PROTOCOL.md.

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

use crate::http::error::HttpError;
use crate::state::AppState;

pub mod conn;
pub mod send;

/// What tungstenite itself accepts; larger frames than [`hush_wire::limits::MAX_FRAME_BYTES`]
/// but below this are refused by the connection with a clean `frame_too_large` close.
const TRANSPORT_MAX_MESSAGE: usize = 1024 * 1024;

/// Upgrades to a WebSocket unless the connection limit is reached.
pub async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    if state.open_connections.load(Ordering::Relaxed) >= state.config.limits.max_connections {
        return HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the server is full; retry later",
        )
        .into_response();
    }
    let tasks = state.tasks.clone();
    ws.max_message_size(TRANSPORT_MAX_MESSAGE)
        .max_frame_size(TRANSPORT_MAX_MESSAGE)
        // Small buffers: most connections are idle most of the time.
        .read_buffer_size(512)
        .write_buffer_size(0)
        .on_upgrade(move |socket| tasks.track_future(conn::run(state, socket)))
}
