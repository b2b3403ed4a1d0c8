//! `hush group` and the daemon's group methods: local lists and refusals, and a group made,
//! joined and used through the real `hush` binary against a real `hushd`.

use serde_json::json;

use crate::support::{Hushd, User};

const NO_SUCH_GROUP: &str = "group:0b7e5b40-5d0c-4b5e-9d3e-1c2a3b4c5d6e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commands_list_nothing_and_refuse_unknown_groups_clearly() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let out = alice.hush(&["group", "list", "--json", "--timeout", "5"]).await.ok();
    assert!(out.json_lines().is_empty());

    let out = alice.hush(&["send", NO_SUCH_GROUP, "hi", "--json"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.json_lines()[0]["error"]["message"].as_str().unwrap_or("").contains("no group"), "{out:?}");
    let out = alice.hush(&["group", "info", "not-a-group"]).await;
    assert_eq!(out.code, Some(2), "a malformed group id is a usage error: {out:?}");
    assert!(out.stderr.contains("group:<uuid>"), "{}", out.stderr);
    let out = alice.hush(&["group", "role", NO_SUCH_GROUP, "bob", "king"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(alice.hush(&["group", "--help"]).await.ok().stdout.contains("accept"));

    let mut daemon = alice.daemon_stdio();
    let rpc = daemon.rpc();
    assert_eq!(rpc.call("group_list", json!(null)).await, json!({ "groups": [] }));
    assert_eq!(rpc.call("group_invites", json!(null)).await, json!({ "groups": [] }));
    let e = rpc.call_raw("group_info", json!({ "group": NO_SUCH_GROUP })).await;
    assert_eq!(e["error"]["data"]["exit_code"], json!(1), "{e}");
    let e = rpc.call_raw("group_role", json!({ "group": NO_SUCH_GROUP, "member": "bob", "role": "king" })).await;
    assert_eq!(e["error"]["code"], json!(-32602), "{e}");
    assert!(daemon.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_made_with_the_cli_carries_messages_and_the_daemon_makes_and_shows_groups() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let carol = User::register(&server, "carol").await;

    let out = alice.hush(&["group", "create", "trio", "bob", "carol", "--json"]).await.ok();
    let created = out.json_lines();
    assert_eq!(created.len(), 1, "{out:?}");
    let group = created[0]["group"].as_str().expect("a group id").to_owned();
    assert!(group.starts_with("group:"), "{group}");
    assert_eq!(created[0]["title"], json!("trio"));
    assert_eq!(created[0]["members"].as_array().map(Vec::len), Some(3));

    // Bob is not alice's contact: the group is an invite until he accepts it.
    assert!(bob.receive().await.is_empty(), "an invite shows no messages");
    let out = bob.hush(&["group", "list", "--json"]).await.ok();
    assert_eq!(out.json_lines()[0]["state"], json!("invited"), "{out:?}");
    let out = bob.hush(&["group", "accept", &group, "--json"]).await.ok();
    assert_eq!(out.json_lines()[0]["state"], json!("active"), "{out:?}");
    assert_eq!(out.json_lines()[0]["title"], json!("trio"), "{out:?}");

    let sent = alice.send(&group, "hello group").await;
    assert_eq!(sent["to"], json!(group), "{sent}");
    let got: Vec<_> = bob.receive().await.into_iter().filter(|m| m["body"] == json!("hello group")).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["conversation"], json!(group));
    assert_eq!(got[0]["from"], json!("alice"));
    assert!(got[0]["group_seq"].as_u64().unwrap_or(0) > 1, "{:?}", got[0]);
    assert!(bob.receive().await.iter().all(|m| m["body"] != json!("hello group")), "shown once");

    // The daemon: create and info.
    let mut daemon = carol.daemon_stdio();
    let rpc = daemon.rpc();
    let made = rpc.call("group_create", json!({ "title": "carols", "members": ["alice"] })).await;
    let carols = made["group"].as_str().expect("a group id").to_owned();
    assert_eq!(made["title"], json!("carols"), "{made}");
    let info = rpc.call("group_info", json!({ "group": carols })).await;
    assert_eq!(info["members"].as_array().map(Vec::len), Some(2), "{info}");
    assert_eq!(info["state"], json!("active"));
    // (Trio is listed too if it arrived after carol made alice a contact by adding her.)
    let list = rpc.call("group_list", json!(null)).await;
    let listed = list["groups"].as_array().cloned().unwrap_or_default();
    assert!(listed.iter().any(|g| g["group"] == json!(carols)), "{list}");
    assert!(daemon.terminate().await.success());
}
