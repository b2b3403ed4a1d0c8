//! What a multi-node test needs besides `hushd`: a scratch Postgres database,
//! a private `redis-server` the test may stop and start again, and a
//! [`Subscription`] to watch what the nodes publish on a Redis channel.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::server::TestServer;

/// Two nodes `node-a` and `node-b` sharing `db` and `redis` (and the same server keys),
/// re-reading mailboxes every `ping_secs` (the fallback for lost wake-ups).
pub async fn two_nodes(db: &ScratchDb, redis: &RedisServer, ping_secs: &str) -> (TestServer, TestServer) {
    two_nodes_with(db, redis, ping_secs, &[]).await
}

/// [`two_nodes`] with `extra` flags for both nodes.
pub async fn two_nodes_with(
    db: &ScratchDb,
    redis: &RedisServer,
    ping_secs: &str,
    extra: &[&str],
) -> (TestServer, TestServer) {
    let node = |id: &str| {
        TestServer::builder()
            .args(extra.iter().copied())
            .arg("--db")
            .arg(db.url.clone())
            .arg("--redis")
            .arg(redis.url())
            .arg("--node-id")
            .arg(id.to_owned())
            .arg("--ping-interval-secs")
            .arg(ping_secs.to_owned())
    };
    let a = node("node-a").start().await;
    let b = node("node-b").keys_from(&a).start().await;
    assert_eq!(a.trust_root(), b.trust_root(), "nodes of one cluster share the trust root");
    (a, b)
}

/// Admin URL used to create scratch databases (override with `HUSH_TEST_POSTGRES`).
pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test and dropped when it ends.
pub struct ScratchDb {
    admin: String,
    name: String,
    /// URL of the scratch database, for `hushd --db`.
    pub url: String,
}

impl ScratchDb {
    /// Creates `hush_e2e_<random>`. Fails the test, naming the URL, if Postgres cannot be reached.
    pub async fn create() -> ScratchDb {
        let admin = std::env::var("HUSH_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned());
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("Postgres is required for the multi-node tests: {admin} failed: {e}; set HUSH_TEST_POSTGRES")
        });
        let name = format!("hush_e2e_{:016x}", rand::random::<u64>());
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let url = format!("{base}/{name}");
        ScratchDb { admin, name, url }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Best effort, on a thread of its own: Drop may run inside or outside a runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
                }
            });
        })
        .join();
    }
}

/// A `redis-server` on a free port, keeping nothing on disk.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    pub async fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut redis = RedisServer { port, child: None };
        redis.spawn().await;
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("Redis is required for the multi-node tests: cannot run redis-server: {e}"));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on port {} did not answer PING within 10 s", self.port);
    }

    async fn ping(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.is_ok() && &buf == b"+PONG\r\n"
    }

    /// Subscribes to `channel` on a connection of its own and waits until Redis confirms it:
    /// every message published from then on can be read with [`Subscription::next_message`].
    pub async fn subscribe(&self, channel: &str) -> Subscription {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to redis-server on port {}: {e}", self.port));
        let mut sub = Subscription { stream: BufReader::new(stream), channel: channel.to_owned() };
        let command = format!("*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{channel}\r\n", channel.len());
        sub.stream.get_mut().write_all(command.as_bytes()).await.unwrap_or_else(|e| panic!("SUBSCRIBE failed: {e}"));
        let reply = sub.next_push().await;
        assert_eq!(reply.first().map(Vec::as_slice), Some(&b"subscribe"[..]), "SUBSCRIBE {channel} was not confirmed");
        sub
    }

    /// Kills it (SIGKILL); everything it held is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}

/// A Redis connection subscribed to one channel, speaking RESP directly.
pub struct Subscription {
    stream: BufReader<tokio::net::TcpStream>,
    channel: String,
}

impl Subscription {
    /// The payload of the next message published on the channel; fails the test if none
    /// comes within [`crate::WAIT`].
    pub async fn next_message(&mut self) -> Vec<u8> {
        let push = match tokio::time::timeout(crate::WAIT, self.next_push()).await {
            Ok(push) => push,
            Err(_) => panic!("nothing was published on {} within {:?}", self.channel, crate::WAIT),
        };
        match <[Vec<u8>; 3]>::try_from(push) {
            Ok([kind, channel, payload]) if kind == b"message" && channel == self.channel.as_bytes() => payload,
            other => panic!("unexpected push on the {} subscription: {other:?}", self.channel),
        }
    }

    /// One pushed array (`subscribe`/`message` and its fields); integers are given as text.
    async fn next_push(&mut self) -> Vec<Vec<u8>> {
        let head = self.line().await;
        let n: usize = head
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("expected a RESP array from Redis, got {head:?}"));
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let item = self.line().await;
            if let Some(len) = item.strip_prefix('$') {
                let len: usize = len.parse().unwrap_or_else(|_| panic!("bad RESP bulk length {item:?}"));
                let mut bulk = vec![0; len + 2];
                self.stream.read_exact(&mut bulk).await.unwrap_or_else(|e| panic!("reading from Redis failed: {e}"));
                bulk.truncate(len);
                items.push(bulk);
            } else if let Some(int) = item.strip_prefix(':') {
                items.push(int.as_bytes().to_vec());
            } else {
                panic!("unexpected RESP item from Redis: {item:?}");
            }
        }
        items
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stream.read_line(&mut line).await.unwrap_or_else(|e| panic!("reading from Redis failed: {e}"));
        assert!(n > 0, "Redis closed the {} subscription", self.channel);
        line.trim_end().to_owned()
    }
}
