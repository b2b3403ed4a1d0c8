//! Nothing wedges an account, nothing fails silently, and the CLI and the daemon recover by
//! themselves: message size limits, a full mailbox, the outbox commands, the data-directory
//! lock, reconnects, and clear errors for common mistakes.

use serde_json::{Value, json};

use crate::support::{Daemon, Hushd, User};

/// Waits for a connection event in `state` (skipping everything else).
async fn wait_connection(daemon: &mut Daemon, state: &str) -> Value {
    loop {
        let e = daemon.rpc().next_event().await;
        if e["type"] == json!("connection") && e["state"] == json!(state) {
            return e;
        }
    }
}

/// Subscribes and waits until the daemon is connected.
async fn connected_daemon(user: &User) -> Daemon {
    let mut daemon = user.daemon_stdio();
    daemon.rpc().call("subscribe", json!({})).await;
    if daemon.rpc().call("status", json!(null)).await["connection"] != json!("connected") {
        wait_connection(&mut daemon, "connected").await;
    }
    daemon
}

/// `hush send bob - < 300KB.txt` waited 30 s, said "stays queued", and from then on every
/// command of the account exited 3 (the server closed each connection with 1009).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_exits_1_naming_the_longest_text_and_does_not_wedge_the_account() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let big = "x".repeat(300 * 1024);
    let out = alice.hush_with_stdin(&["send", "bob", "-", "--json"], Some(&big)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let error = &out.json_lines()[0]["error"];
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("can be at most"), "{message}");
    assert!(message.contains("96 KiB") && message.contains("256 KiB"), "{message}");
    let status = alice.hush(&["status", "--json"]).await.ok().json_lines();
    assert_eq!(status[0]["outbox_pending"], json!(0), "nothing was queued");

    alice.send("bob", "small and fine").await;
    let got = bob.receive().await;
    assert_eq!(got[0]["body"], json!("small and fine"));
    let help = alice.hush(&["send", "--help"]).await.ok().stdout;
    assert!(help.contains("96 KiB") && help.contains("256 KiB"), "{help}");
}

/// A full mailbox was reported as "took longer than 8s": the server's reason never reached
/// the user, and the message went out only after a long backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_exits_6_with_the_reason_and_the_message_goes_out_on_the_next_connect() {
    let server = Hushd::start_with(&["--max-mailbox", "1"]).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    alice.send("bob", "fills the mailbox").await;

    let out = alice.hush(&["send", "bob", "waits", "--json"]).await;
    assert_eq!(out.code, Some(6), "{out:?}");
    let error = &out.json_lines()[0]["error"];
    assert_eq!(error["kind"], json!("mailbox_full"));
    assert!(error["message"].as_str().unwrap_or_default().contains("mailbox"), "{error}");
    let outbox = alice.hush(&["outbox", "--json"]).await.ok().json_lines();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert_eq!((&outbox[0]["body"], &outbox[0]["state"]), (&json!("waits"), &json!("pending")));
    assert!(outbox[0]["reason"].as_str().unwrap_or_default().contains("mailbox"), "{outbox:?}");

    // Bob makes room; Alice's next command that connects sends it at once, not after a backoff.
    assert_eq!(bob.receive().await.len(), 1);
    alice.hush(&["receive", "--timeout", "20"]).await.ok();
    assert!(alice.hush(&["outbox", "--json"]).await.ok().stdout.is_empty());
    let got = bob.receive().await;
    assert_eq!(got[0]["body"], json!("waits"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_lists_a_queued_message_and_cancel_and_retry_act_on_it() {
    let mut server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let _bob = User::register(&server, "bob").await;
    alice.send("bob", "hello").await;
    server.kill().await;
    assert_eq!(alice.hush(&["send", "bob", "stuck", "--timeout", "1"]).await.code, Some(3));
    let outbox = alice.hush(&["outbox", "--json"]).await.ok().json_lines();
    assert_eq!(outbox.len(), 1);
    let id = outbox[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(outbox[0]["to"], json!("bob"));
    assert!(alice.hush(&["outbox"]).await.ok().stdout.contains(&id));

    alice.hush(&["outbox", "retry", &id]).await.ok();
    alice.hush(&["outbox", "cancel", &id]).await.ok();
    assert!(alice.hush(&["outbox", "--json"]).await.ok().stdout.is_empty());
    let history = alice.hush(&["history", "bob", "--json"]).await.ok().json_lines();
    assert_eq!((&history[1]["status"], &history[1]["failed_reason"]), (&json!("failed"), &json!("cancelled")));
    let out = alice.hush(&["outbox", "cancel", &id]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no pending or failed message"), "{}", out.stderr);
    assert_eq!(alice.hush(&["outbox", "retry", "not-an-id"]).await.code, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_outbox_methods_list_cancel_and_retry() {
    let server = Hushd::start_with(&["--max-mailbox", "1"]).await;
    let alice = User::register(&server, "alice").await;
    let _bob = User::register(&server, "bob").await;
    alice.send("bob", "fills the mailbox").await;
    let mut daemon = connected_daemon(&alice).await;
    let sent = daemon.rpc().call("send", json!({ "to": "bob", "text": "waits" })).await;
    let delayed = loop {
        let e = daemon.rpc().next_event().await;
        if e["type"] == json!("send_delayed") {
            break e;
        }
    };
    assert_eq!((&delayed["id"], &delayed["code"]), (&sent["id"], &json!("mailbox_full")));
    assert!(delayed["retry_in_ms"].as_u64().unwrap_or(u64::MAX) <= 60_000, "{delayed}");
    let listed = daemon.rpc().call("outbox", json!(null)).await;
    assert_eq!(listed["messages"][0]["id"], sent["id"]);
    daemon.rpc().call("retry", json!({ "id": sent["id"] })).await;
    let cancelled = loop {
        // The retry may be awaiting the server's answer; cancel once it is not.
        let answer = daemon.rpc().call_raw("cancel", json!({ "id": sent["id"] })).await;
        if answer.get("error").is_none() {
            break answer["result"].clone();
        }
        assert!(answer["error"]["message"].as_str().unwrap_or_default().contains("being sent"), "{answer}");
        daemon.rpc().next_event().await;
    };
    assert_eq!(cancelled["status"], json!("cancelled"));
    assert_eq!(daemon.rpc().call("outbox", json!(null)).await["messages"], json!([]));
    assert!(daemon.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hush_process_on_a_data_directory_is_refused_naming_the_first_ones_pid() {
    let server = Hushd::start().await;
    let bob = User::register(&server, "bob").await;
    let mut daemon = bob.daemon_stdio();
    daemon.rpc().call("status", json!(null)).await;
    let pid = daemon.child.id().expect("pid");
    let out = bob.hush(&["status"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(&format!("in use by another hush process (pid {pid})")), "{}", out.stderr);
    assert!(daemon.close_stdin().await.success());
    bob.hush(&["status"]).await.ok();
}

/// The daemon reported `offline` for good after a close; now it reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reconnects_by_itself_after_a_server_restart_and_status_shows_the_state() {
    let mut server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let mut daemon = connected_daemon(&bob).await;
    server.restart().await;
    let lost = wait_connection(&mut daemon, "disconnected").await;
    assert!(lost["reason"].as_str().unwrap_or_default().contains("reconnecting in"), "{lost}");
    wait_connection(&mut daemon, "connected").await;
    assert_eq!(daemon.rpc().call("status", json!(null)).await["connection"], json!("connected"));
    alice.send("bob", "after the restart").await;
    assert_eq!(daemon.rpc().next_message().await["body"], json!("after the restart"));
    assert!(daemon.terminate().await.success());
}

/// A copy of the device elsewhere (4003 connected_elsewhere): reconnecting would make the two
/// evict each other forever, so the daemon stops and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_device_elsewhere_stops_the_daemon_and_it_says_why() {
    let server = Hushd::start().await;
    let bob = User::register(&server, "bob").await;
    let copy = tempfile::tempdir().expect("tempdir");
    for name in ["client.db", "client.db-wal", "client.db-shm"] {
        if bob.dir().join(name).exists() {
            std::fs::copy(bob.dir().join(name), copy.path().join(name)).expect("copy");
        }
    }
    let mut daemon = connected_daemon(&bob).await;
    let copy_dir = copy.path().to_str().expect("utf-8");
    bob.hush(&["status", "--data-dir", copy_dir]).await.ok();
    let stopped = wait_connection(&mut daemon, "stopped").await;
    assert!(stopped["reason"].as_str().unwrap_or_default().contains("a copy of this device"), "{stopped}");
    let status = daemon.rpc().call("status", json!(null)).await;
    assert_eq!(status["connection"], json!("stopped"));
    assert!(status["connection_detail"].as_str().unwrap_or_default().contains("4003"), "{status}");
    assert!(daemon.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_mistakes_get_clear_errors() {
    let server = Hushd::start().await;
    let other = Hushd::start().await;
    let alice = User::register(&server, "alice").await;

    // No scheme: a usage error with a hint.
    let out = alice.hush(&["status", "--server", "127.0.0.1:7878"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("did you mean http://127.0.0.1:7878"), "{}", out.stderr);

    // The server URL is remembered at register.
    let status = alice.hush_without_server(&["status", "--json"]).await.ok().json_lines();
    assert_eq!(status[0]["server"], json!(server.url()));

    // An account the server does not know says so.
    let out = alice.hush_without_server(&["status", "--server", other.url()]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("does not know this account"), "{}", out.stderr);

    // Connection refused keeps its cause, and a failed register leaves no data directory.
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("dave");
    let dir_arg = dir.to_str().expect("utf-8");
    let out = alice.hush(&["register", "dave", "--server", "http://127.0.0.1:1", "--data-dir", dir_arg]).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.to_lowercase().contains("connection refused"), "{}", out.stderr);
    assert!(!dir.exists(), "a failed register left {}", dir.display());

    // No account: say so, create nothing.
    let out = alice.hush(&["history", "bob", "--data-dir", dir_arg]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("run `hush register"), "{}", out.stderr);
    assert!(!dir.exists(), "a command without an account created {}", dir.display());
}
