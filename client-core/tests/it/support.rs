//! Shared test builders: a real `hushd` process, clients with their own data dirs, and
//! waiting for events with deadlines (never fixed sleeps).

use std::path::PathBuf;
use std::time::Duration;

use hush_client_core::{Client, ClientConfig, Event, EventStream};
use hush_e2e::server::TestServer;
use tempfile::TempDir;
use tokio::time::Instant;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// A running `hushd` with its own data directory (the workspace's one test server,
/// [`hush_e2e::server::TestServer`], with the send rate lifted); restarts on the same port.
pub struct Hushd {
    server: TestServer,
}

impl Hushd {
    pub async fn start() -> Hushd {
        Hushd::start_with(&[]).await
    }

    /// Starts with extra command-line flags, e.g. `["--group-fanout-read-above", "3"]`.
    pub async fn start_with(args: &[&str]) -> Hushd {
        let server = TestServer::builder()
            .args(["--rate-burst", "100000", "--rate-per-second", "10000"])
            .args(args.iter().copied())
            .start()
            .await;
        Hushd { server }
    }

    pub fn url(&self) -> String {
        self.server.http_url()
    }

    /// The server's database files (main file, WAL, shared memory), as they are now.
    pub fn db_bytes(&self) -> Vec<u8> {
        self.server.db_bytes()
    }

    pub fn db_path(&self) -> PathBuf {
        self.server.db_path()
    }

    /// What hushd wrote (its log), across restarts.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// SIGKILL, no cleanup.
    pub async fn kill(&mut self) {
        self.server.kill9().await;
    }

    /// Starts again on the same data directory and port.
    pub async fn restart(&mut self) {
        self.server.restart().await;
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
        TestClient::register_with(server, prefix, |_| {}).await
    }

    /// Registers with a configuration `change` adjusts (e.g. short presence timings).
    pub async fn register_with(server: &Hushd, prefix: &str, change: impl FnOnce(&mut ClientConfig)) -> TestClient {
        let dir = tempfile::Builder::new().prefix("client-").tempdir().unwrap_or_else(|e| panic!("{e}"));
        let name = username(prefix);
        let mut config = ClientConfig::new(dir.path(), server.url());
        change(&mut config);
        let client = Client::register(config, &name).await.unwrap_or_else(|e| panic!("register {name}: {e}"));
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
