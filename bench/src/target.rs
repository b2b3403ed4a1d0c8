//! The hushd under test: spawned by the bench (release build, SQLite in a temp
//! dir) or an already running one, and its resource use read from /proc.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// A hushd the bench talks to.
pub struct Target {
    /// Base HTTP URLs (`http://ip:port`), one per node.
    pub urls: Vec<String>,
    /// Process ids to measure (CPU and memory are summed over them).
    pub pids: Vec<u32>,
    child: Option<(Child, tempfile::TempDir)>,
    /// Kept open for hushd's lifetime.
    _stdout: Option<BufReader<std::process::ChildStdout>>,
}

/// CPU and memory of the server processes at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// utime + stime, in microseconds.
    pub cpu_us: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

fn hushd_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HUSHD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating hush-bench")?;
    let dir = exe.parent().context("hush-bench has no parent directory")?;
    let candidate = dir.join("hushd");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!("no hushd next to {} (build it with `cargo build --release -p hush-server`, or set HUSHD_BIN)", exe.display())
}

impl Target {
    /// Starts a fresh hushd with a temporary SQLite database. The per-device
    /// rate limit is lifted: the bench measures the relay, not the limiter.
    pub fn spawn(extra_args: &[String]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(hushd_binary()?)
            .args(["--listen", "127.0.0.1:0", "--rate-burst", "1000000000", "--rate-per-second", "1000000000"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra_args)
            .env("HUSHD_LOG", "warn")
            .envs(["HUSHD_REGISTER_BURST", "HUSHD_LOOKUP_BURST"].map(|name| (name, "1000000000")))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting hushd")?;
        let stdout = child.stdout.take().context("hushd stdout")?;
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        stdout.read_line(&mut line)?;
        let addr = line.trim().strip_prefix("hushd listening on ").context("hushd did not print its address")?;
        let pid = child.id();
        Ok(Target {
            urls: vec![format!("http://{addr}")],
            pids: vec![pid],
            child: Some((child, dir)),
            _stdout: Some(stdout),
        })
    }

    /// A running server (or several nodes) given by URL and pid.
    pub fn attach(urls: Vec<String>, pids: Vec<u32>) -> Self {
        Target { urls, pids, child: None, _stdout: None }
    }

    /// Summed CPU time and memory of the server processes.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let mut total = Usage { cpu_us: 0, rss_kib: 0 };
        for pid in &self.pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
            // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            let after = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc/PID/stat")?;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
                + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
            total.cpu_us += ticks * 10_000; // CLK_TCK is 100 on Linux
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            let rss = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            total.rss_kib += rss;
        }
        Ok(total)
    }

    /// The WebSocket URL of node `i` (round robin).
    pub fn ws_url(&self, i: usize) -> String {
        let base = &self.urls[i % self.urls.len()];
        format!("{}/v1/websocket", base.replacen("http", "ws", 1))
    }

    /// The HTTP URL of node `i` (round robin).
    pub fn http_url(&self, i: usize) -> &str {
        &self.urls[i % self.urls.len()]
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some((child, _dir)) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `f` is true or the timeout passes.
pub async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
