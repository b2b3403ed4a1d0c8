//! Shared test builders: a real `hushd` process, clients with their own data dirs, and
//! waiting for events with deadlines (never fixed sleeps).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hush_client_core::{Client, ClientConfig, Event, EventStream};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// The `hushd` binary under test (shared with the workspace end-to-end tests).
pub use hush_e2e::server::hushd_binary;

/// A running `hushd` with its own data directory; restarts on the same port.
pub struct Hushd {
    pub data_dir: TempDir,
    addr: Option<String>,
    port: u16,
    child: Option<Child>,
    /// Flags added to every start of this server (restarts keep them).
    extra_args: Vec<String>,
}

impl Hushd {
    pub async fn start() -> Hushd {
        Hushd::start_with(&[]).await
    }

    /// Starts with extra command-line flags, e.g. `["--group-fanout-read-above", "3"]`.
    pub async fn start_with(args: &[&str]) -> Hushd {
        let data_dir = tempfile::Builder::new().prefix("hushd-").tempdir().unwrap_or_else(|e| panic!("{e}"));
        let extra_args = args.iter().map(|a| (*a).to_owned()).collect();
        let mut server = Hushd { data_dir, addr: None, port: 0, child: None, extra_args };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.as_deref().unwrap_or_else(|| panic!("hushd is not running")))
    }

    /// The server's database files (main file, WAL, shared memory), as they are now.
    pub fn db_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for name in ["hush.db", "hush.db-wal", "hush.db-shm"] {
            if let Ok(b) = std::fs::read(self.data_dir.path().join(name)) {
                all.extend(b);
            }
        }
        all
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.path().join("hush.db")
    }

    /// What hushd wrote to stderr (warnings and errors), across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("hushd.log")).unwrap_or_default()
    }

    fn log_file(&self) -> Stdio {
        let path = self.data_dir.path().join("hushd.log");
        match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Stdio::from(f),
            Err(_) => Stdio::null(),
        }
    }

    /// SIGKILL, no cleanup.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap_or_else(|e| panic!("cannot kill hushd: {e}"));
        }
    }

    /// Starts again on the same data directory and port.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(hushd_binary());
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args(["--rate-burst", "100000", "--rate-per-second", "10000"])
            .args(&self.extra_args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.log_file())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start hushd: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout not piped"));
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) => {
                    if let Some(addr) = line.strip_prefix("hushd listening on ") {
                        let addr = addr.trim().to_owned();
                        self.port = addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
                        self.addr = Some(addr);
                        break;
                    }
                }
                Ok(None) => panic!("hushd exited before listening"),
                Err(_) => panic!("hushd did not start within {WAIT:?}"),
            }
        }
        self.child = Some(child);
    }
}

/// A unique lowercase username.
pub fn username(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}

/// A registered client in its own data directory.
pub struct TestClient {
    pub client: Client,
    pub name: String,
    pub dir: TempDir,
    pub events: EventStream,
    /// Events taken from `events` by a wait that was looking for something else, oldest first:
    /// [`TestClient::next_event`] returns them before newer ones.
    pub backlog: std::collections::VecDeque<Event>,
}

impl TestClient {
    pub async fn register(server: &Hushd, prefix: &str) -> TestClient {
        let dir = tempfile::Builder::new().prefix("client-").tempdir().unwrap_or_else(|e| panic!("{e}"));
        let name = username(prefix);
        let client = Client::register(ClientConfig::new(dir.path(), server.url()), &name)
            .await
            .unwrap_or_else(|e| panic!("register {name}: {e}"));
        let events = client.events();
        TestClient { client, name, dir, events, backlog: Default::default() }
    }

    pub fn config(&self, server: &Hushd) -> ClientConfig {
        ClientConfig::new(self.dir.path(), server.url())
    }

    /// Shuts the client down and opens it again from its data directory.
    pub async fn reopen(&mut self, server: &Hushd) {
        self.client.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        self.client = Client::open(self.config(server)).await.unwrap_or_else(|e| panic!("reopen: {e}"));
        self.events = self.client.events();
    }

    pub async fn drain(&self) {
        self.client.run_until_queue_empty(WAIT).await.unwrap_or_else(|e| panic!("{}: drain: {e}", self.name));
    }

    /// Waits for an event matching `pred`, keeping the others in `seen`.
    pub async fn wait_for(&mut self, what: &str, seen: &mut Vec<Event>, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if pred(&e) => return e,
                Ok(Some(e)) => seen.push(e),
                Ok(None) => panic!("{}: client stopped while waiting for {what}", self.name),
                Err(_) => panic!("{}: timed out waiting for {what}; saw {seen:?}", self.name),
            }
        }
    }

    /// The next event (the backlog first), or `None` once the client stopped; panics at `deadline`.
    pub async fn next_event(&mut self, what: &str, deadline: Instant) -> Option<Event> {
        if let Some(e) = self.backlog.pop_front() {
            return Some(e);
        }
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(e) => e,
            Err(_) => panic!("{}: timed out waiting for {what}", self.name),
        }
    }

    /// Bodies of the message events received so far (non-blocking).
    pub fn drain_bodies(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = self.events.try_recv() {
            if let Event::Message(m) = e {
                out.push(m.body);
            }
        }
        out
    }
}
