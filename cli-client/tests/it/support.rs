//! Test builders: a real `hushd` process, users that run the real `hush` binary, and a
//! JSON-RPC client for `hush daemon`. Every wait has a deadline; nothing sleeps.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long any single wait may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Lines read from a stream, forwarded by a background task.
pub fn line_channel(read: impl AsyncRead + Unpin + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line, or a panic naming `what` after [`DEADLINE`].
pub async fn next_line(rx: &mut mpsc::UnboundedReceiver<String>, what: &str) -> Option<String> {
    tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap_or_else(|_| panic!("no line for {what} within {DEADLINE:?}"))
}

/// A running `hushd` with its own data directory: the workspace's one test server
/// ([`TestServer`]), restarting on the same port.
pub struct Hushd {
    server: TestServer,
    url: String,
}

impl Hushd {
    /// Starts `hushd` on a free port and waits until it listens.
    pub async fn start() -> Hushd {
        Self::start_with(&[]).await
    }

    /// Starts `hushd` with extra flags.
    pub async fn start_with(args: &[&str]) -> Hushd {
        let server = TestServer::builder().args(args.iter().copied()).start().await;
        let url = server.http_url();
        Hushd { server, url }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub async fn kill(&mut self) {
        self.server.kill9().await;
    }

    /// Stops the server gracefully (SIGTERM) and starts it again on the same port and data.
    pub async fn restart(&mut self) {
        self.server.stop().await;
        self.server.restart().await;
    }
}

use hush_e2e::server::TestServer;

/// What a finished `hush` process left.
#[derive(Debug)]
pub struct Output {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Stdout parsed as one JSON object per line.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{self:?}")))
            .collect()
    }

    /// Asserts exit code 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "hush failed: {self:#?}");
        self
    }
}

/// One user: a data directory of its own, talking to one server.
pub struct User {
    dir: TempDir,
    server: String,
}

impl User {
    /// Registers `name` on `server` with `hush register --json`.
    pub async fn register(server: &Hushd, name: &str) -> User {
        let dir = tempfile::Builder::new().prefix(&format!("hush-{name}-")).tempdir().expect("tempdir");
        let user = User { dir, server: server.url().to_owned() };
        let out = user.hush(&["register", name, "--json"]).await.ok();
        let lines = out.json_lines();
        assert_eq!(lines.len(), 1, "{out:?}");
        assert_eq!(lines[0]["username"], json!(name));
        user
    }

    /// A data directory with no account yet, for `server` (e.g. for `hush link`).
    pub fn fresh(server: &Hushd, name: &str) -> User {
        let dir = tempfile::Builder::new().prefix(&format!("hush-{name}-")).tempdir().expect("tempdir");
        User { dir, server: server.url().to_owned() }
    }

    /// Another device of this user's account, in a data directory of its own (added by the
    /// library on this machine; `hush link` is tested in `link.rs`).
    pub async fn add_device(&self) -> User {
        let dir = tempfile::Builder::new().prefix("hush-device-").tempdir().expect("tempdir");
        let config = |d: &Path| hush_client_core::ClientConfig::new(d, self.server.clone());
        let primary = hush_client_core::Client::open(config(self.dir.path())).await.expect("open");
        let device = primary.add_device(config(dir.path())).await.expect("add a device");
        device.shutdown().await.expect("shutdown");
        primary.shutdown().await.expect("shutdown");
        User { dir, server: self.server.clone() }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `hush` command for this user (server and data dir given through the environment).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hush"));
        cmd.args(args)
            .env("HUSH_SERVER", &self.server)
            .env("HUSH_DATA_DIR", self.dir.path())
            .env_remove("HUSH_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `hush ARGS` to the end.
    pub async fn hush(&self, args: &[&str]) -> Output {
        self.hush_with_stdin(args, None).await
    }

    /// Runs `hush ARGS` without `HUSH_SERVER` (the server comes from `--server` or the store).
    pub async fn hush_without_server(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.env_remove("HUSH_SERVER");
        run(cmd, args, None).await
    }

    /// Runs `hush ARGS` with `stdin` as its standard input.
    pub async fn hush_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run(self.command(args), args, stdin).await
    }
}

/// Runs a prepared `hush` command to the end, feeding it `stdin`.
pub async fn run(mut cmd: Command, args: &[&str], stdin: Option<&str>) -> Output {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("start hush");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("hush {args:?} did not finish within {DEADLINE:?}"))
        .expect("wait for hush");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl User {
    /// Sends `text` to `to` and checks it was accepted.
    pub async fn send(&self, to: &str, text: &str) -> Value {
        let out = self.hush(&["send", to, text, "--json"]).await.ok();
        let lines = out.json_lines();
        assert_eq!(lines.len(), 1, "{out:?}");
        assert_eq!(lines[0]["status"], json!("sent"));
        lines[0].clone()
    }

    /// `hush receive --json`: the messages printed.
    pub async fn receive(&self) -> Vec<Value> {
        self.hush(&["receive", "--json"]).await.ok().json_lines()
    }

    /// Starts `hush daemon` on stdio.
    pub fn daemon_stdio(&self) -> Daemon {
        let mut child = self.command(&["daemon"]).stdin(Stdio::piped()).spawn().expect("start hush daemon");
        let stdin = child.stdin.take().expect("stdin");
        let lines = line_channel(child.stdout.take().expect("stdout"));
        Daemon { child, rpc: Some(Rpc::new(Box::new(stdin), lines)) }
    }

    /// Starts `hush daemon --socket PATH` and waits until it listens.
    pub async fn daemon_socket(&self, path: &Path) -> Daemon {
        let path = path.to_str().expect("utf-8 path");
        let mut child = self.command(&["daemon", "--socket", path]).spawn().expect("start hush daemon");
        let mut lines = line_channel(child.stdout.take().expect("stdout"));
        let line = next_line(&mut lines, "daemon listening").await;
        assert_eq!(line.as_deref(), Some(format!("hush daemon listening on {path}").as_str()));
        Daemon { child, rpc: None }
    }
}

/// A running `hush daemon`.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// The stdio connection (stdio mode only).
    pub rpc: Option<Rpc>,
}

impl Daemon {
    /// The stdio connection.
    pub fn rpc(&mut self) -> &mut Rpc {
        self.rpc.as_mut().expect("a stdio daemon")
    }

    /// Closes stdin (a bot that goes away) and waits for the daemon to exit by itself.
    pub async fn close_stdin(mut self) -> ExitStatus {
        drop(self.rpc.take());
        tokio::time::timeout(DEADLINE, self.child.wait()).await.expect("daemon exits on EOF").expect("wait")
    }

    /// Kills the daemon with SIGKILL (no chance to clean up).
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("kill daemon");
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("pid");
        let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill");
        assert!(status.success());
        tokio::time::timeout(DEADLINE, self.child.wait()).await.expect("daemon exits on SIGTERM").expect("wait")
    }
}

/// A JSON-RPC connection to a daemon: requests out, answers and notifications in.
pub struct Rpc {
    write: Box<dyn AsyncWrite + Unpin + Send>,
    lines: mpsc::UnboundedReceiver<String>,
    next_id: u64,
    events: VecDeque<Value>,
}

impl Rpc {
    /// A connection over a writer and a channel of read lines.
    pub fn new(write: Box<dyn AsyncWrite + Unpin + Send>, lines: mpsc::UnboundedReceiver<String>) -> Rpc {
        Rpc { write, lines, next_id: 1, events: VecDeque::new() }
    }

    /// Connects to a daemon's Unix socket.
    pub async fn connect(path: &Path) -> Rpc {
        let stream = tokio::net::UnixStream::connect(path).await.expect("connect to the daemon socket");
        let (read, write) = stream.into_split();
        Rpc::new(Box::new(write), line_channel(read))
    }

    /// Writes one raw line.
    pub async fn write_line(&mut self, line: &str) {
        self.write.write_all(format!("{line}\n").as_bytes()).await.expect("write to the daemon");
        self.write.flush().await.expect("flush");
    }

    /// Reads the next line as JSON.
    pub async fn read_json(&mut self) -> Value {
        let line = next_line(&mut self.lines, "a daemon line").await.expect("the daemon closed the connection");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Calls `method`; returns the whole answer (`result` or `error`), keeping notifications
    /// that arrive meanwhile for [`Rpc::next_event`].
    pub async fn call_raw(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.write_line(&request.to_string()).await;
        loop {
            let msg = self.read_json().await;
            if msg.get("id") == Some(&json!(id)) {
                return msg;
            }
            assert_eq!(msg["method"], json!("event"), "unexpected line: {msg}");
            self.events.push_back(msg["params"].clone());
        }
    }

    /// Calls `method` and returns its `result` (panics on an error answer).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let answer = self.call_raw(method, params).await;
        assert!(answer.get("error").is_none(), "{method} failed: {answer}");
        answer["result"].clone()
    }

    /// The next event notification's params.
    pub async fn next_event(&mut self) -> Value {
        if let Some(e) = self.events.pop_front() {
            return e;
        }
        let msg = self.read_json().await;
        assert_eq!(msg["method"], json!("event"), "expected an event: {msg}");
        msg["params"].clone()
    }

    /// The next message event (skipping live events: receipts, connection changes...).
    pub async fn next_message(&mut self) -> Value {
        loop {
            let e = self.next_event().await;
            if e["type"] == json!("message") {
                return e;
            }
        }
    }
}
