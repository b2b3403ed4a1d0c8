//! `hush push` and the daemon's push methods against a real `hushd`: a target is set, read
//! back, replaced and removed; an endpoint inside the network is refused unless allowed.

use serde_json::json;

use crate::support::{Hushd, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_target_is_registered_shown_replaced_and_removed() {
    let server = Hushd::start_with(&["--push-allow-hosts", "127.0.0.1"]).await;
    let alice = User::register(&server, "alice").await;
    let out = alice.hush(&["push", "status", "--json"]).await.ok();
    assert_eq!(out.json_lines(), vec![json!(null)], "no target at first");

    let endpoint = "http://127.0.0.1:9/up/alice";
    let out = alice.hush(&["push", "register", "--unifiedpush", endpoint, "--json"]).await.ok();
    let shown = &out.json_lines()[0];
    assert_eq!(shown["target"], json!({ "provider": "unifiedpush", "endpoint": endpoint }), "{shown}");
    let out = alice.hush(&["push", "status"]).await.ok();
    assert!(out.stdout.contains(endpoint), "{}", out.stdout);

    let out = alice.hush(&["push", "register", "--fcm", "fcm-token-1", "--json"]).await.ok();
    assert_eq!(out.json_lines()[0]["target"], json!({ "provider": "fcm", "token": "fcm-token-1" }));

    alice.hush(&["push", "remove"]).await.ok();
    let out = alice.hush(&["push", "status", "--json"]).await.ok();
    assert_eq!(out.json_lines(), vec![json!(null)], "removed");

    // Naming no target, or two, is a usage error.
    assert_eq!(alice.hush(&["push", "register"]).await.code, Some(1));
    assert_eq!(alice.hush(&["push", "register", "--fcm", "a", "--unifiedpush", endpoint]).await.code, Some(2));

    let mut daemon = alice.daemon_stdio();
    let rpc = daemon.rpc();
    let target = json!({ "provider": "unifiedpush", "endpoint": endpoint });
    assert_eq!(rpc.call("push_register", target.clone()).await["target"], target);
    assert_eq!(rpc.call("push_status", json!(null)).await["target"], target);
    assert_eq!(rpc.call("push_remove", json!(null)).await, json!({ "push": null }));
    assert_eq!(rpc.call("push_status", json!(null)).await, json!(null));
    assert!(daemon.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_inside_the_network_is_refused_with_its_code() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let out = alice.hush(&["push", "register", "--unifiedpush", "https://127.0.0.1/up", "--json"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let line = &out.json_lines()[0];
    assert!(line.to_string().contains("invalid_push_endpoint"), "{line}");
    let out = alice.hush(&["push", "status", "--json"]).await.ok();
    assert_eq!(out.json_lines(), vec![json!(null)], "nothing was stored");
}
