//! `hush group` and the daemon's group methods on what works without the server's group
//! endpoints (they come with the server side of groups): local lists and refusals.

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
