//! `hush devices` and the daemon's device methods, against a real hushd.

use serde_json::json;

use crate::support::{Hushd, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_listed_this_one_marked_and_removed() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let alice2 = alice.add_device().await;
    let alice3 = alice.add_device().await;

    let list = alice.hush(&["devices", "--json"]).await.ok().json_lines();
    let ids: Vec<_> = list.iter().map(|d| d["id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!(2), json!(3)]);
    let marked: Vec<_> = list.iter().filter(|d| d["this_device"] == json!(true)).map(|d| d["id"].clone()).collect();
    assert_eq!(marked, [json!(1)]);
    assert!(list.iter().all(|d| d["created_at"].as_u64().is_some_and(|t| t > 0)), "{list:?}");
    let text = alice2.hush(&["devices"]).await.ok().stdout;
    assert!(text.contains("device 2 (this device)"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");

    // Only the primary removes another device; the refusal says why.
    let refused = alice2.hush(&["devices", "remove", "3"]).await;
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("primary"), "{refused:?}");

    let removed = alice.hush(&["devices", "remove", "2", "--json"]).await.ok().json_lines();
    assert_eq!(removed, [json!({ "removed": 2, "this_device": false })]);
    // Device 3 removes itself.
    let out = alice3.hush(&["devices", "remove", "3"]).await.ok().stdout;
    assert!(out.contains("removed this device (3)"), "{out}");
    let list = alice.hush(&["devices", "--json"]).await.ok().json_lines();
    assert_eq!(list.iter().map(|d| d["id"].clone()).collect::<Vec<_>>(), [json!(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_lists_and_removes_devices_and_counts_unread() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let _alice2 = alice.add_device().await;
    bob.send("alice", "unread one").await;

    let mut daemon = alice.daemon_stdio();
    daemon.rpc().call("subscribe", json!({})).await;
    daemon.rpc().next_message().await;
    let unread = daemon.rpc().call("unread", json!({ "with": "bob" })).await;
    assert_eq!(unread, json!({ "with": "bob", "unread": 1 }));
    daemon.rpc().call("mark_read", json!({ "with": "bob" })).await;
    let unread = daemon.rpc().call("unread", json!({ "with": "bob" })).await;
    assert_eq!(unread["unread"], json!(0));

    let devices = daemon.rpc().call("devices", json!({})).await;
    let list = devices["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 2, "{devices}");
    assert_eq!(list[0]["this_device"], json!(true));
    assert_eq!(list[1]["id"], json!(2));
    let removed = daemon.rpc().call("device_remove", json!({ "id": 2 })).await;
    assert_eq!(removed, json!({ "removed": 2, "this_device": false }));
    let devices = daemon.rpc().call("devices", json!({})).await;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(1));
    let bad = daemon.rpc().call_raw("device_remove", json!({ "id": "two" })).await;
    assert!(bad["error"].is_object(), "{bad}");
    assert!(daemon.close_stdin().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_renamed_from_the_cli_shows_its_name() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let alice2 = alice.add_device().await;
    alice2.hush(&["devices", "rename", "laptop"]).await.ok();
    let list = alice.hush(&["devices", "--json"]).await.ok().json_lines();
    assert_eq!(list[1]["name"], json!("laptop"));
    let mut daemon = alice2.daemon_stdio();
    let renamed = daemon.rpc().call("device_rename", json!({ "name": null })).await;
    assert_eq!(renamed, json!({ "name": null }));
    assert!(daemon.close_stdin().await.success());
    let list = alice.hush(&["devices", "--json"]).await.ok().json_lines();
    assert_eq!(list[1]["name"], json!(null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_help_explains_the_commands() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let help = alice.hush(&["devices", "--help"]).await.ok().stdout;
    for word in ["list", "remove", "rename", "primary"] {
        assert!(help.contains(word), "{word} missing in {help}");
    }
    let help = alice.hush(&["daemon", "--help"]).await.ok().stdout;
    assert!(help.contains("device_remove") && help.contains("unread"), "{help}");
}
