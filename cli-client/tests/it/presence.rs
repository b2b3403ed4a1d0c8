//! Presence through the CLI: the daemon's `presence` events and `contacts`, `receive
//! --follow --json`'s presence lines, `hush contacts` and `hush presence off`.

use serde_json::{Value, json};

use crate::support::{Hushd, User, line_channel, next_line};

/// Reads `receive --follow --json` lines until a presence line about `contact` in `state`.
async fn follow_until(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>, contact: &str, state: &str) -> Value {
    loop {
        let line = next_line(lines, &format!("{contact} {state}")).await.expect("receive --follow ended");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["type"] == json!("presence") && v["contact"] == json!(contact) && v["presence"]["state"] == json!(state) {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_flips_both_ways_in_the_daemon_and_receive_follow_and_shows_in_contacts() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    alice.send("bob", "hi").await;
    assert_eq!(bob.receive().await.len(), 1);

    let mut daemon = bob.daemon_stdio();
    daemon.rpc().call("subscribe", json!({})).await;
    assert_eq!(daemon.rpc().call("presence_sharing", json!({})).await, json!({ "presence_sharing": true }));

    // Alice comes online: Bob's daemon sees it, and Alice learns Bob is online from his answer.
    let mut follow = alice.command(&["receive", "--follow", "--json"]).spawn().expect("start receive --follow");
    let mut lines = line_channel(follow.stdout.take().expect("stdout"));
    let event = loop {
        let e = daemon.rpc().next_event().await;
        if e["type"] == json!("presence") {
            break e;
        }
    };
    assert_eq!(event, json!({ "type": "presence", "contact": "alice", "presence": { "state": "online" } }));
    follow_until(&mut lines, "bob", "online").await;
    let contacts = daemon.rpc().call("contacts", json!({})).await;
    assert_eq!(contacts["contacts"][0]["username"], json!("alice"));
    assert_eq!(contacts["contacts"][0]["presence"], json!({ "state": "online" }));

    // Alice stops cleanly (SIGTERM): Bob sees her last seen within the hour at once.
    let pid = follow.id().expect("pid");
    assert!(std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill").success());
    let event = loop {
        let e = daemon.rpc().next_event().await;
        if e["type"] == json!("presence") {
            break e;
        }
    };
    assert_eq!(event["contact"], json!("alice"));
    assert_eq!(event["presence"]["state"], json!("last_seen"), "{event}");
    let hour = event["presence"]["hour"].as_u64().expect("an hour");
    assert_eq!(hour % 3_600_000, 0, "no finer than the hour");
    let _ = follow.wait().await;

    // Once the daemon is gone, `hush contacts` shows what this device saw last.
    assert_eq!(daemon.terminate().await.code(), Some(0));
    let listed = bob.hush(&["contacts", "--json"]).await.ok().json_lines();
    assert_eq!(listed[0]["presence"], json!({ "state": "last_seen", "hour": hour }));
    let text = bob.hush(&["contacts"]).await.ok();
    assert!(text.stdout.contains("alice  last seen within"), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_presence_off_contacts_see_nothing_and_you_see_no_one() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    alice.send("bob", "hi").await;
    assert_eq!(bob.receive().await.len(), 1);
    let off = alice.hush(&["presence", "off", "--json"]).await.ok().json_lines();
    assert_eq!(off, [json!({ "presence_sharing": false })]);
    let text = alice.hush(&["presence"]).await.ok();
    assert!(text.stdout.contains("presence sharing is off"), "{text:?}");

    let mut daemon = bob.daemon_stdio();
    daemon.rpc().call("subscribe", json!({})).await;
    let mut follow = alice.command(&["receive", "--follow", "--json"]).spawn().expect("start receive --follow");
    let mut lines = line_channel(follow.stdout.take().expect("stdout"));
    // Bob writes once Alice follows; her delivery receipt comes back only once she is
    // connected (after any announcement she would have made), and her first line is his
    // message (she probes no one, so no answer reaches her).
    daemon.rpc().call("send", json!({ "to": "alice", "text": "are you there?" })).await;
    let printed = next_line(&mut lines, "Bob's message").await.expect("a line");
    let printed: Value = serde_json::from_str(&printed).expect("json");
    assert_eq!(printed["body"], json!("are you there?"), "no presence line before it: {printed}");
    loop {
        let e = daemon.rpc().next_event().await;
        assert_ne!(e["type"], json!("presence"), "Alice shares nothing: {e}");
        if e["type"] == json!("receipt") && e["from"] == json!("alice") {
            break;
        }
    }
    let asked = daemon.rpc().call("presence", json!({ "with": "alice" })).await;
    assert_eq!(asked["presence"], json!({ "state": "unknown" }));
    follow.kill().await.expect("stop receive --follow");
    daemon.kill9().await;
}
