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
    spawned: Option<Spawned>,
}

/// A hushd the bench started, with what it needs to start it again on the same data.
struct Spawned {
    child: Child,
    /// Kept open for hushd's lifetime.
    _stdout: BufReader<std::process::ChildStdout>,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    /// `ip:port` it listens on (kept across restarts, so clients reconnect to the same URL).
    addr: String,
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

/// Starts hushd on `listen` with its data in `dir`; returns it, its stdout and its address.
fn start(
    dir: &std::path::Path,
    listen: &str,
    extra_args: &[String],
) -> anyhow::Result<(Child, BufReader<std::process::ChildStdout>, String)> {
    let mut child = Command::new(hushd_binary()?)
        .args(["--listen", listen, "--rate-burst", "1000000000", "--rate-per-second", "1000000000"])
        // Every simulated device connects from this machine's one address; the per-address
        // handshake limit is for real clients. The overall handshake budget stays as shipped.
        // (An environment variable, so a hushd from before the limit existed starts too.)
        .env("HUSHD_MAX_HANDSHAKES_PER_ADDRESS", "1000000000")
        // The bench registers thousands of accounts from one address in seconds.
        .envs(["HUSHD_REGISTER_BURST", "HUSHD_LOOKUP_BURST"].map(|name| (name, "1000000")))
        .envs(["HUSHD_REGISTER_PER_HOUR", "HUSHD_LOOKUP_PER_HOUR"].map(|name| (name, "1000000000")))
        .arg("--data-dir")
        .arg(dir)
        .args(extra_args)
        .env("HUSHD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting hushd")?;
    let stdout = child.stdout.take().context("hushd stdout")?;
    let mut line = String::new();
    let mut stdout = BufReader::new(stdout);
    stdout.read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("hushd listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("hushd did not print its address");
    };
    let addr = addr.to_owned();
    Ok((child, stdout, addr))
}

impl Target {
    /// Starts a fresh hushd with a temporary SQLite database. The per-device
    /// rate limit is lifted: the bench measures the relay, not the limiter.
    pub fn spawn(extra_args: &[String]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (child, stdout, addr) = start(dir.path(), "127.0.0.1:0", extra_args)?;
        let pid = child.id();
        Ok(Target {
            urls: vec![format!("http://{addr}")],
            pids: vec![pid],
            spawned: Some(Spawned { child, _stdout: stdout, dir, extra_args: extra_args.to_vec(), addr }),
        })
    }

    /// Whether the bench started this hushd (and so can kill and restart it).
    pub fn is_spawned(&self) -> bool {
        self.spawned.is_some()
    }

    /// SIGKILLs the spawned hushd (no graceful shutdown: what a crash or an OOM kill does).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let s = self.spawned.as_mut().context("only a hushd started with --spawn can be killed")?;
        s.child.kill().context("killing hushd")?;
        s.child.wait().context("reaping hushd")?;
        Ok(())
    }

    /// Starts the spawned hushd again on the same address and data directory. Retries for a
    /// few seconds while the port is still held by the dying process.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let s = self.spawned.as_mut().context("only a hushd started with --spawn can be restarted")?;
        let mut last = None;
        for _ in 0..50 {
            match start(s.dir.path(), &s.addr, &s.extra_args) {
                Ok((child, stdout, _)) => {
                    self.pids = vec![child.id()];
                    s.child = child;
                    s._stdout = stdout;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("hushd did not restart")))
    }

    /// A running server (or several nodes) given by URL and pid.
    pub fn attach(urls: Vec<String>, pids: Vec<u32>) -> Self {
        Target { urls, pids, spawned: None }
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
            // Clock ticks of sysconf(_SC_CLK_TCK), taken as 100 (what Linux uses on every common
            // architecture): the bench does not depend on libc to ask.
            total.cpu_us += ticks * 10_000;
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
        if let Some(s) = &mut self.spawned {
            let _ = s.child.kill();
            let _ = s.child.wait();
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
