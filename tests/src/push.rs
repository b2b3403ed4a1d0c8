//! A local HTTP server standing in for push providers: a UnifiedPush distributor, and FCM's
//! HTTP v1 API with its OAuth token endpoint. It records every request and answers each
//! with what the test's responder says.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl PushRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Decides the answer to a request: status and JSON body.
pub type Responder = Arc<dyn Fn(&PushRequest) -> (u16, String) + Send + Sync>;

/// The fake provider.
pub struct FakePush {
    /// Its address, `127.0.0.1:port`.
    pub addr: std::net::SocketAddr,
    requests: mpsc::UnboundedReceiver<PushRequest>,
}

/// How long a test waits for a request before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

impl FakePush {
    /// Starts the fake; `responder` answers every request.
    pub async fn start(responder: Responder) -> FakePush {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("cannot bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (tx, requests) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let tx = tx.clone();
                let responder = responder.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else { return };
                    let (status, body) = responder(&request);
                    let _ = tx.send(request);
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        FakePush { addr, requests }
    }

    /// A fake that answers 200 `{}` to everything.
    pub async fn accepting() -> FakePush {
        FakePush::start(Arc::new(|_| (200, "{}".into()))).await
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request, within [`DEADLINE`].
    pub async fn next(&mut self) -> PushRequest {
        tokio::time::timeout(DEADLINE, self.requests.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("the push provider got no request within {DEADLINE:?}"))
    }

    /// The next request whose path is not `skip` (e.g. the OAuth token endpoint).
    pub async fn next_except(&mut self, skip: &str) -> PushRequest {
        loop {
            let request = self.next().await;
            if request.path != skip {
                return request;
            }
        }
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<PushRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(PushRequest { method, path, headers, body })
}
