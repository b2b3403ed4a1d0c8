//! One WebSocket connection: challenge, auth, then frames in both directions. It only moves
//! bytes; every decision is the machine's.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hush_wire::frames::{Auth, ClientFrame, client_frame, server_frame};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::rest::DeviceAuth;

/// How long connecting and authenticating may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection reports to the actor; `generation` tells connections apart.
#[derive(Debug)]
pub(crate) enum WsEvent {
    /// Authenticated.
    Connected(u64),
    /// A frame from the server (after authentication).
    Frame(u64, server_frame::Frame),
    /// The connection ended (or never started).
    Closed(u64, Ended),
}

/// Why a connection ended.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    /// The server's close code, if it sent one.
    pub code: Option<u16>,
    /// What happened, for people.
    pub reason: String,
}

impl Ended {
    fn new(reason: impl Into<String>) -> Self {
        Ended { code: None, reason: reason.into() }
    }

    /// For a close after which reconnecting cannot help (or would fight another connection):
    /// what happened and what to do. `None` for every other close, unknown codes included:
    /// those reconnect with backoff.
    pub fn stop_reason(&self, server: &str) -> Option<String> {
        use hush_wire::close::{AUTH_FAILED, DEVICE_REMOVED, REPLACED};
        Some(match self.code? {
            AUTH_FAILED => format!(
                "the server at {server} does not know this account or device ({}): was it registered on \
                 another server, or was the server's data reset? Register again in a new data directory",
                self.reason
            ),
            DEVICE_REMOVED => {
                format!("this device was removed from its account ({}); it can no longer send or receive", self.reason)
            }
            REPLACED => format!(
                "a copy of this device (the same data directory, copied elsewhere) connected to the server ({}); \
                 two copies would evict each other forever, so this one stopped reconnecting: stop the other copy, \
                 then connect again",
                self.reason
            ),
            _ => return None,
        })
    }
}

/// The WebSocket URL for a server base URL.
pub(crate) fn ws_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let rest = if let Some(r) = base.strip_prefix("https://") {
        format!("wss://{r}")
    } else if let Some(r) = base.strip_prefix("http://") {
        format!("ws://{r}")
    } else {
        base.to_owned()
    };
    format!("{rest}/v1/websocket")
}

/// Runs one connection until it ends or `outgoing` is closed; always reports `Closed` last.
pub(crate) async fn run(
    url: String,
    auth: DeviceAuth,
    generation: u64,
    events: mpsc::UnboundedSender<WsEvent>,
    outgoing: mpsc::UnboundedReceiver<ClientFrame>,
) {
    let ended = match connection(&url, &auth, generation, &events, outgoing).await {
        Ok(ended) => ended,
        Err(ended) => ended,
    };
    let _ = events.send(WsEvent::Closed(generation, ended));
}

async fn connection(
    url: &str,
    auth: &DeviceAuth,
    generation: u64,
    events: &mpsc::UnboundedSender<WsEvent>,
    mut outgoing: mpsc::UnboundedReceiver<ClientFrame>,
) -> Result<Ended, Ended> {
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(hush_wire::limits::MAX_FRAME_BYTES);
    config.max_frame_size = Some(hush_wire::limits::MAX_FRAME_BYTES);
    let (mut ws, _) =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async_with_config(url, Some(config), false))
            .await
            .map_err(|_| Ended::new("connect timed out"))?
            .map_err(|e| Ended::new(format!("cannot connect: {}", super::rest::with_causes(&e))))?;

    // Challenge -> Auth -> AuthOk.
    let handshake = async {
        let nonce = match next_frame(&mut ws).await? {
            server_frame::Frame::Challenge(c) => c.nonce,
            _ => return Err(Ended::new("expected a Challenge")),
        };
        let signature = auth.key.sign_ws_challenge(&nonce, auth.account, auth.device_id);
        let frame = ClientFrame::from(client_frame::Frame::Auth(Auth {
            account_id: auth.account.as_bytes().to_vec().into(),
            device_id: auth.device_id,
            signature: signature.to_vec().into(),
        }));
        ws.send(Message::binary(frame.to_bytes())).await.map_err(|e| Ended::new(format!("send failed: {e}")))?;
        match next_frame(&mut ws).await? {
            server_frame::Frame::AuthOk(_) => Ok(()),
            _ => Err(Ended::new("expected AuthOk")),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, handshake).await.map_err(|_| Ended::new("authentication timed out"))??;
    if events.send(WsEvent::Connected(generation)).is_err() {
        return Ok(Ended::new("client stopped"));
    }

    loop {
        tokio::select! {
            frame = next_frame(&mut ws) => {
                let frame = frame?;
                if events.send(WsEvent::Frame(generation, frame)).is_err() {
                    return Ok(Ended::new("client stopped"));
                }
            }
            out = outgoing.recv() => match out {
                Some(frame) => {
                    ws.send(Message::binary(frame.to_bytes()))
                        .await
                        .map_err(|e| Ended::new(format!("send failed: {e}")))?;
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return Ok(Ended::new("closed by the client"));
                }
            },
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next server frame; binary frames only. Errors describe why the connection ended.
async fn next_frame(ws: &mut Socket) -> Result<server_frame::Frame, Ended> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                return hush_wire::decode_server_frame(&bytes)
                    .map_err(|e| Ended::new(format!("bad frame from the server: {e}")));
            }
            Some(Ok(Message::Close(frame))) => {
                let _ = ws.flush().await;
                return Err(match frame {
                    Some(f) => Ended {
                        code: Some(u16::from(f.code)),
                        reason: format!("closed by the server ({} {})", u16::from(f.code), f.reason),
                    },
                    None => Ended::new("closed by the server"),
                });
            }
            Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
            Some(Err(e)) => return Err(Ended::new(format!("connection error: {e}"))),
            None => return Err(Ended::new("connection ended")),
        }
    }
}
