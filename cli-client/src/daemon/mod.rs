//! `hush daemon`: JSON-RPC 2.0, one JSON object per line, over stdin/stdout or a Unix socket.
//!
//! The daemon stays connected to the server. Each connection (stdio is one) may call the
//! methods of [`methods`] and `subscribe` to the event stream of [`hub`]. With `--socket` any
//! number of connections are served at once; all share one account and one acknowledged cursor.

mod hub;
mod methods;
mod rpc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use hush_client_core::Client;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use crate::cli::DaemonArgs;
use crate::commands::Ctx;
use crate::cursor::{Cursor, DAEMON_CURSOR};
use crate::signals::Stop;
use hub::{Hub, HubCommand};
use methods::Session;

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    client: Client,
    hub: mpsc::UnboundedSender<HubCommand>,
    next_conn: AtomicU64,
}

/// Runs the daemon until stdin closes (stdio mode) or SIGINT/SIGTERM.
pub async fn run(ctx: &Ctx, args: DaemonArgs) -> anyhow::Result<()> {
    let client = ctx.open().await?;
    let result = serve(ctx, &client, args).await;
    let _ = client.disconnect().await;
    let _ = client.shutdown().await;
    result
}

async fn serve(ctx: &Ctx, client: &Client, args: DaemonArgs) -> anyhow::Result<()> {
    let status = client.status().await?;
    let cursor = Cursor::load(&ctx.config.data_dir, DAEMON_CURSOR)?;
    let events = client.events();
    let (hub_tx, hub_rx) = mpsc::unbounded_channel();
    let hub = Hub::new(client.clone(), cursor, status.username, status.device_id);
    let hub_task = tokio::spawn(hub.run(events, hub_rx));
    client.connect().await?;
    let shared = Arc::new(Shared { client: client.clone(), hub: hub_tx, next_conn: AtomicU64::new(1) });
    let mut stop = Stop::new()?;
    let result = match args.socket {
        None => {
            tokio::select! {
                r = serve_connection(tokio::io::stdin(), tokio::io::stdout(), Arc::clone(&shared)) => r,
                () = stop.wait() => Ok(()),
            }
        }
        Some(path) => serve_socket(&path, &shared, &mut stop).await,
    };
    drop(shared);
    hub_task.abort();
    result
}

async fn serve_socket(path: &Path, shared: &Arc<Shared>, stop: &mut Stop) -> anyhow::Result<()> {
    let listener = bind(path)?;
    let _guard = RemoveOnDrop(path.to_path_buf());
    println!("hush daemon listening on {}", path.display());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (read, write) = stream.into_split();
                    let shared = Arc::clone(shared);
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(read, write, shared).await {
                            tracing::info!(error = %e, "daemon connection ended with an error");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot accept a connection"),
            },
            () = stop.wait() => return Ok(()),
        }
    }
}

/// Binds the socket, replacing a stale file (one no daemon listens on any more).
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another daemon already listens on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves one connection until its input ends; then flushes what is left to write.
async fn serve_connection<R, W>(read: R, mut write: W, shared: Arc<Shared>) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(line) = out_rx.recv().await {
            let mut bytes = line.into_bytes();
            bytes.push(b'\n');
            write.write_all(&bytes).await?;
            write.flush().await?;
        }
        std::io::Result::Ok(())
    });
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let session = Session { client: shared.client.clone(), hub: shared.hub.clone(), conn, out };
    let mut lines = BufReader::new(read).lines();
    let read_result = loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break Ok(()),
            Err(e) => break Err(anyhow::Error::new(e).context("cannot read a request")),
        };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match rpc::parse(&line) {
            Ok(request) => session.handle(request).await,
            Err((id, e)) => Some(rpc::error(id, &e)),
        };
        if let Some(answer) = answer
            && session.out.send(answer).is_err()
        {
            break Ok(()); // the writer failed: the peer is gone
        }
    };
    session.unsubscribe().await;
    drop(session);
    let write_result = writer.await.context("the connection writer panicked")?;
    read_result?;
    // A peer that hangs up before reading everything is not an error of the daemon.
    if let Err(e) = write_result {
        tracing::debug!(error = %e, "cannot write to a daemon connection");
    }
    Ok(())
}
