//! Starting and stopping a server: listener, state, background tasks, shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hush_keys::certs::ServerKeys;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Cluster, ClusterError};
use crate::commit::{Committer, Writer};
use crate::config::Config;
use crate::hub::{Hub, QueueLimit};
use crate::metrics as m;
use crate::push::{Engine, Pusher, Timing};
use crate::state::{AppState, Inner, ReplayCache, SendRateLimiter, now_ms};
use crate::store::batch::Reads;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
use crate::ws::admission::{Admission, Budget};

/// File in the data directory holding the trust root and certificate signing key.
pub const KEYS_FILE: &str = "server-keys.bin";
/// How often expired envelopes are removed and gauges refreshed.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory or key file could not be used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file exists but is not valid.
    #[error("server key file {path} is corrupt ({message}); restore it from a backup (clients pinned its trust root)")]
    Keys {
        /// The path.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The database URL is not supported.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB (postgresql:// too)")]
    UnsupportedDb(String),
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    /// The key file's trust root is not the one this database was first used with.
    #[error("{0}")]
    TrustRoot(#[from] crate::trust::TrustRootError),
    /// The Redis settings are not valid.
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// A push provider could not be set up (its credentials are not named in the message).
    #[error("push: {0}")]
    Push(String),
    /// The group-commit writer's runtime could not be started.
    #[error("cannot start the group-commit writer: {0}")]
    Writer(std::io::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A running server.
pub struct Running {
    /// The bound address (the real port when 0 was asked).
    pub addr: SocketAddr,
    /// The trust-root public key clients pin.
    pub trust_root: Vec<u8>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, closes every connection with "server_shutdown", finishes
    /// pending commits, and returns when all is done.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// A token that triggers shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server has stopped (after its token was cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

fn load_or_create_keys(data_dir: &Path) -> Result<ServerKeys, ServeError> {
    let path = data_dir.join(KEYS_FILE);
    let io = |source| ServeError::DataDir { path: path.clone(), source };
    match std::fs::read(&path) {
        Ok(bytes) => ServerKeys::from_bytes(&bytes).map_err(|e| ServeError::Keys { path, message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keys = ServerKeys::generate(&mut rand::rng())
                .map_err(|e| ServeError::Keys { path: path.clone(), message: e.to_string() })?;
            write_private(&path, &keys.to_bytes()).map_err(io)?;
            tracing::info!("generated a new trust root and certificate key");
            Ok(keys)
        }
        Err(e) => Err(io(e)),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

/// Opens the store named by the configuration.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    if config.db.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(&config.db).await?))
    } else if config.db.starts_with("postgres://") || config.db.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(&config.db).await?))
    } else {
        Err(ServeError::UnsupportedDb(config.db.clone()))
    }
}

/// Builds the shared state (store, keys, hub, writer, cluster) without listening.
/// Returns the state and the writer task, which ends once every state clone is dropped.
pub async fn build_state(config: Config) -> Result<(AppState, tokio::task::JoinHandle<()>), ServeError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServeError::DataDir { path: config.data_dir.clone(), source })?;
    let keys = load_or_create_keys(&config.data_dir)?;
    let store = open_store(&config).await?;
    crate::trust::check_trust_root(&*store, &keys, config.data_dir.join(KEYS_FILE), KEYS_FILE).await?;
    let hub =
        Arc::new(Hub::new(QueueLimit { pushes: config.limits.window as usize * 2, bytes: config.limits.queue_bytes }));
    let shutdown = CancellationToken::new();
    let cluster = match &config.redis {
        Some(url) => Some(Cluster::start(url, config.node_id.clone(), hub.clone(), shutdown.clone())?),
        None => None,
    };
    let providers = crate::push::providers(&config.push)?;
    let pusher = Pusher::spawn(
        Engine {
            store: store.clone(),
            hub: hub.clone(),
            cluster: cluster.clone(),
            providers,
            timing: Timing {
                window: config.push.window,
                background_delay: config.push.background_delay,
                disconnect_delay: config.push.disconnect_delay,
            },
        },
        shutdown.clone(),
    );
    let (committer, writer) = Committer::spawn(Writer {
        store: store.clone(),
        hub: hub.clone(),
        cluster: cluster.clone(),
        max_mailbox: config.limits.max_mailbox,
        pusher: pusher.clone(),
    })
    .map_err(ServeError::Writer)?;
    let state = AppState::new(Inner {
        reads: Reads::new(store.clone()),
        store,
        hub,
        committer,
        keys,
        rate: SendRateLimiter::new(config.limits.rate_burst, config.limits.rate_per_second),
        online_rate: SendRateLimiter::new(config.limits.online_only_burst, config.limits.online_only_per_second),
        abuse: crate::http::limits::AbuseLimiter::new(&config.abuse),
        replay: ReplayCache::default(),
        metrics: m::handle(),
        shutdown,
        abort: CancellationToken::new(),
        tasks: TaskTracker::new(),
        admission: Admission::new(Budget {
            connections: config.limits.max_connections,
            handshakes: config.limits.max_handshakes,
            per_address: config.limits.max_handshakes_per_address,
        }),
        cluster,
        pusher,
        config,
    });
    Ok((state, writer))
}

/// Starts a server with `config` and returns once it is listening.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let listen = config.listen;
    let listener = bind(listen, config.listen_backlog).map_err(|source| ServeError::Bind { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: listen, source })?;
    let (state, writer) = build_state(config).await?;
    let trust_root = state.keys.trust_root_public();
    let shutdown = state.shutdown.clone();
    let task = tokio::spawn(run(listener, state, writer));
    Ok(Running { addr, trust_root, shutdown, task })
}

/// A listening socket with a queue of `backlog` connections not yet accepted (`--listen-backlog`;
/// the default, 1,024, is what tokio's `TcpListener::bind` asks for). In a reconnect storm a
/// full queue drops SYNs, each costing its client a one-second retransmission timeout; a longer
/// queue lets the storm in at once, which on the measured 2-core machine only moved the
/// waiting into handshake-budget evictions (`bench/README.md`).
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As tokio's bind does: a restarted server may listen again while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn run(listener: TcpListener, state: AppState, writer: tokio::task::JoinHandle<()>) {
    let maintenance = tokio::spawn(maintain(state.clone()));
    let app = crate::http::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let token = state.shutdown.clone();
    let mut serving = tokio::spawn(
        axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await }).into_future(),
    );
    state.shutdown.cancelled().await;
    // Connections were told to close (1001). Wait for them and for the listener, at most
    // `shutdown_timeout`; then drop whatever is left (a peer that stopped reading cannot
    // even take its close frame). Then let the writer drain what was queued.
    state.tasks.close();
    let drained = tokio::time::timeout(state.config.shutdown_timeout, async {
        state.tasks.wait().await;
        (&mut serving).await
    });
    match drained.await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "the listener failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "the listener task failed"),
        Err(_) => {
            tracing::warn!(
                connections = state.tasks.len(),
                "shutdown deadline passed: dropping the connections still open"
            );
            state.abort.cancel();
            serving.abort();
            state.tasks.wait().await;
        }
    }
    maintenance.abort();
    drop(state);
    let _ = writer.await;
    tracing::info!("shut down");
}

async fn maintain(state: AppState) {
    let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
    loop {
        tick.tick().await;
        let now = now_ms();
        match state.store.expire(now).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!(m::EXPIRED).increment(n);
                tracing::info!(expired = n, "removed expired envelopes");
            }
            Err(e) => tracing::error!(error = %e, "removing expired envelopes failed"),
        }
        if let Err(e) = state.store.expire_links(now).await {
            tracing::error!(error = %e, "removing expired link tokens and provisioning channels failed");
        }
        if let Ok(n) = state.store.envelope_count().await {
            metrics::gauge!(m::MAILBOX_DEPTH).set(n as f64);
        }
        state.replay.prune(now);
        state.rate.prune();
        state.online_rate.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_number(path: &str, prefix: &str) -> Option<u64> {
        let text = std::fs::read_to_string(path).ok()?;
        let line = text.lines().find(|l| l.starts_with(prefix))?;
        line[prefix.len()..].split_whitespace().next()?.parse().ok()
    }

    /// A reconnect storm overflowed the 1,024 connections tokio's `bind` lets the kernel queue
    /// (thousands of SYNs dropped, `TcpExtListenOverflows`), and there was no way to ask for more.
    #[tokio::test]
    async fn a_larger_listen_backlog_queues_more_connections_than_tokios_default() {
        const CONNECTS: u64 = 1100;
        let somaxconn = read_number("/proc/sys/net/core/somaxconn", "").unwrap_or(0);
        let files = read_number("/proc/self/limits", "Max open files").unwrap_or(0);
        if somaxconn < CONNECTS || files < CONNECTS + 200 {
            eprintln!("skipped: needs net.core.somaxconn and open files >= {CONNECTS} (have {somaxconn}, {files})");
            return;
        }
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 2048).unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        // Nothing accepts: every connection must fit in the listen queue to complete.
        let connects = (0..CONNECTS).map(|_| tokio::net::TcpStream::connect(addr));
        let all = futures_util::future::try_join_all(connects);
        let streams = tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .unwrap_or_else(|_| panic!("connections beyond the listen queue waited for SYN retransmissions"))
            .unwrap_or_else(|e| panic!("connect: {e}"));
        assert_eq!(streams.len() as u64, CONNECTS);
        drop(listener);
    }
}
