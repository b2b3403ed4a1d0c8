//! What every node of a deployment must agree on: the trust root (recorded in the database
//! by the first node), and which signed REST requests were already accepted (Redis).

use std::process::Stdio;
use std::time::Duration;

use hush_e2e::cluster::{RedisServer, ScratchDb};
use hush_e2e::server::hushd_binary;
use hush_e2e::{RestClient, TestAccount, TestServer};

/// Runs `hushd` with `args` and a fresh data directory unless one is given, expecting it to
/// refuse to start; returns what it wrote to stderr.
async fn refused_start(data_dir: &std::path::Path, args: &[&str]) -> String {
    let child = tokio::process::Command::new(hushd_binary())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start hushd: {e}"));
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("hushd started although its trust root differs from the database's"))
        .unwrap_or_else(|e| panic!("waiting for hushd: {e}"));
    assert!(!out.status.success(), "hushd must exit with an error");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn node_with_other_server_keys_refuses_to_start_on_the_same_database() {
    let db = ScratchDb::create().await;
    let a = TestServer::builder().args(["--db", db.url.as_str()]).start().await;
    // The operator forgot to copy server-keys.bin: the second node made its own.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let stderr = refused_start(dir.path(), &["--db", db.url.as_str()]).await;
    assert!(stderr.contains("server-keys.bin") && stderr.contains("copy"), "says how to fix it: {stderr}");
    // With the first node's key file it starts.
    let b = TestServer::builder().args(["--db", db.url.as_str()]).keys_from(&a).start().await;
    assert_eq!(a.trust_root(), b.trust_root());
}

#[tokio::test]
async fn lost_key_file_is_not_silently_replaced() {
    let mut server = TestServer::start().await;
    server.stop().await;
    std::fs::remove_file(server.data_dir().join("server-keys.bin")).unwrap_or_else(|e| panic!("{e}"));
    let stderr = refused_start(server.data_dir(), &[]).await;
    assert!(stderr.contains("trust root"), "{stderr}");
}

#[tokio::test]
async fn signed_request_is_accepted_by_one_node_only() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let node = |id: &str| {
        TestServer::builder().args(["--db", db.url.as_str(), "--redis", redis.url().as_str(), "--node-id", id])
    };
    let a = node("node-a").start().await;
    let b = node("node-b").keys_from(&a).start().await;
    let alice = TestAccount::register(&a, "alice").await;

    let header = alice.primary().authorization("GET", "/v1/keys/count", b"");
    RestClient::new(&a).raw("GET", "/v1/keys/count", None, Some(&header)).await.assert_status(200);
    // Captured and replayed against the other node.
    RestClient::new(&b).raw("GET", "/v1/keys/count", None, Some(&header)).await.assert_error(401, "auth_replayed");
    RestClient::new(&a).raw("GET", "/v1/keys/count", None, Some(&header)).await.assert_error(401, "auth_replayed");
}
