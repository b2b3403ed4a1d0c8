//! [`TestServer`]: a real `hushd` process with its own data directory.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long `hushd` may take to print its "listening on" line.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a graceful shutdown may take.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Collects extra command-line flags before starting a [`TestServer`].
#[derive(Debug, Default)]
pub struct TestServerBuilder {
    args: Vec<OsString>,
    keys_from: Option<PathBuf>,
}

impl TestServerBuilder {
    /// Appends command-line arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends one command-line argument (a flag or its value).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts with a copy of `other`'s server keys (trust root and certificate
    /// key), as every node of one cluster must.
    pub fn keys_from(mut self, other: &TestServer) -> Self {
        self.keys_from = Some(other.data_dir().join("server-keys.bin"));
        self
    }

    /// Starts `hushd` with the collected flags and waits until it listens.
    pub async fn start(self) -> TestServer {
        let data_dir = tempfile::Builder::new()
            .prefix("hushd-data-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a data dir: {e}"));
        if let Some(keys) = &self.keys_from {
            std::fs::copy(keys, data_dir.path().join("server-keys.bin"))
                .unwrap_or_else(|e| panic!("cannot copy server keys from {}: {e}", keys.display()));
        }
        let log_path = data_dir.path().join("hushd-test.log");
        let mut server = TestServer {
            data_dir,
            log_path,
            args: self.args,
            child: None,
            addr: None,
            port: 0,
            trust_root: String::new(),
            stdout_lines: Arc::new(Mutex::new(Vec::new())),
        };
        server.spawn().await;
        server
    }
}

/// A running (or stopped) `hushd` process. The data directory survives
/// [`kill9`](Self::kill9), [`stop`](Self::stop) and [`restart`](Self::restart);
/// the process is killed when this is dropped. If the test panics, the
/// server's log is printed.
#[derive(Debug)]
pub struct TestServer {
    data_dir: TempDir,
    log_path: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
    addr: Option<SocketAddr>,
    /// The port of the first start; restarts listen on it again, so clients that keep the
    /// server's URL reconnect to the restarted process.
    port: u16,
    trust_root: String,
    stdout_lines: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Starts `hushd` with default flags.
    pub async fn start() -> TestServer {
        Self::builder().start().await
    }

    /// A builder to pass extra flags, e.g. `--max-mailbox 5`.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// The address the server listens on (restarts keep its port).
    pub fn addr(&self) -> SocketAddr {
        self.addr.unwrap_or_else(|| panic!("hushd is not running"))
    }

    /// `http://ip:port`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `ws://ip:port/v1/websocket`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/websocket", self.addr())
    }

    /// The base64 trust root the server printed at its last start.
    pub fn trust_root(&self) -> &str {
        &self.trust_root
    }

    /// The data directory (`hush.db` lives here).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Path of the SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.path().join("hush.db")
    }

    /// The SQLite database's files (main file, WAL, shared memory) as they are now, end to
    /// end: for checking that something is not stored.
    pub fn db_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for name in ["hush.db", "hush.db-wal", "hush.db-shm"] {
            if let Ok(b) = std::fs::read(self.data_dir.path().join(name)) {
                all.extend(b);
            }
        }
        all
    }

    /// Everything the server wrote to stderr (and stdout) so far, across restarts.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The running process's id (for reading its memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).unwrap_or_else(|| panic!("hushd is not running"))
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits for it.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap_or_else(|e| panic!("cannot SIGKILL hushd: {e}"));
        }
        self.addr = None;
    }

    /// Sends SIGTERM and waits for a graceful exit; panics if it takes too long
    /// or the exit status is not success.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.addr = None;
        if let Some(pid) = child.id() {
            let status = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
            assert!(status.success(), "kill -TERM {pid} failed");
        }
        match tokio::time::timeout(STOP_DEADLINE, child.wait()).await {
            Ok(Ok(status)) => {
                assert!(status.success(), "hushd exited with {status} after SIGTERM; log:\n{}", self.log())
            }
            Ok(Err(e)) => panic!("waiting for hushd failed: {e}"),
            Err(_) => {
                let _ = child.start_kill();
                panic!("hushd did not exit within {STOP_DEADLINE:?} of SIGTERM; log:\n{}", self.log());
            }
        }
    }

    /// Starts the server again on the same data directory and port (after
    /// [`kill9`](Self::kill9) or [`stop`](Self::stop); kills it first if it
    /// still runs).
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9().await;
        }
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let bin = hushd_binary();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path.display()));
        let mut cmd = Command::new(&bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.data_dir.path())
            // The abuse limits are lifted unless a test sets them (flags beat the environment):
            // many tests register and fetch more from 127.0.0.1 than a real client ever would.
            .envs(UNLIMITED.iter().map(|name| (name, "1000000")))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("hushd stdout is not piped"));

        // Forward stdout lines to this start-up wait, and keep draining it
        // afterwards so hushd never blocks on a full pipe.
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let lines_log = Arc::clone(&self.stdout_lines);
        let log_path = self.log_path.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut v) = lines_log.lock() {
                    v.push(line.clone());
                }
                if let Ok(mut f) = OpenOptions::new().append(true).open(&log_path) {
                    let _ = writeln!(f, "[stdout] {line}");
                }
                let _ = tx.send(line);
            }
        });

        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        let mut addr = None;
        let mut trust_root = None;
        while addr.is_none() || trust_root.is_none() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix("hushd listening on ") {
                        let parsed: SocketAddr =
                            rest.trim().parse().unwrap_or_else(|e| panic!("cannot parse the address in {line:?}: {e}"));
                        addr = Some(parsed);
                    } else if let Some(rest) = line.strip_prefix("trust root: ") {
                        trust_root = Some(rest.trim().to_owned());
                    }
                }
                Ok(None) => {
                    let status = child.wait().await;
                    panic!("hushd exited before it was ready ({status:?}); log:\n{}", self.log());
                }
                Err(_) => {
                    let _ = child.start_kill();
                    panic!(
                        "hushd did not print `hushd listening on` and `trust root:` within \
                         {START_DEADLINE:?}; stdout so far: {:?}; log:\n{}",
                        self.stdout_lines.lock().map(|v| v.clone()).unwrap_or_default(),
                        self.log()
                    );
                }
            }
        }
        self.addr = addr;
        self.port = addr.map_or(0, |a| a.port());
        self.trust_root = trust_root.unwrap_or_default();
        self.child = Some(child);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!("---- hushd log ({}) ----\n{}\n---- end of hushd log ----", self.log_path.display(), self.log());
        }
    }
}

/// The abuse-limit settings a test server lifts (see `hushd --help`).
const UNLIMITED: [&str; 8] = [
    "HUSHD_REGISTER_BURST",
    "HUSHD_REGISTER_PER_HOUR",
    "HUSHD_LOOKUP_BURST",
    "HUSHD_LOOKUP_PER_HOUR",
    "HUSHD_BUNDLE_BURST",
    "HUSHD_BUNDLE_PER_HOUR",
    "HUSHD_ONE_TIME_KEY_BURST",
    "HUSHD_ONE_TIME_KEY_PER_HOUR",
];

/// Finds the `hushd` binary: `$HUSHD_BIN`, else next to the test binary's
/// `deps` directory (`target/<profile>/hushd`).
pub fn hushd_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("HUSHD_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no current exe: {e}"));
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("hushd{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "hushd binary not found at {}; build it with `cargo build -p hush-server` \
         (or set HUSHD_BIN)",
        bin.display()
    );
    bin
}
