//! `hush daemon`: methods, numbered events, at-least-once delivery across disconnects and
//! restarts of the bot and of the daemon.

use serde_json::{Value, json};

use crate::support::{Hushd, Rpc, User};

fn event_id(e: &Value) -> u64 {
    e["event_id"].as_u64().unwrap_or_else(|| panic!("no event_id in {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_disconnects_without_acking_gets_the_events_again() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;

    let mut daemon = bob.daemon_stdio();
    let sub = daemon.rpc().call("subscribe", json!({})).await;
    assert_eq!(sub["acked"], json!(0));
    alice.send("bob", "one").await;
    alice.send("bob", "two").await;
    let first = daemon.rpc().next_message().await;
    let second = daemon.rpc().next_message().await;
    assert_eq!((&first["body"], &second["body"]), (&json!("one"), &json!("two")));
    assert_eq!(first["from"], json!("alice"));
    assert!(event_id(&second) > event_id(&first));

    // The bot goes away without acking: the daemon exits with it (stdio) and replays on restart.
    assert!(daemon.close_stdin().await.success());
    let mut daemon = bob.daemon_stdio();
    daemon.rpc().call("subscribe", json!({})).await;
    let again = [daemon.rpc().next_message().await, daemon.rpc().next_message().await];
    assert_eq!(again, [first.clone(), second.clone()], "the same events, with the same numbers");

    // Ack the first; the daemon is killed hard; only the second comes back.
    let acked = daemon.rpc().call("ack", json!({ "event_id": event_id(&first) })).await;
    assert_eq!(acked["acked"], json!(event_id(&first)));
    daemon.kill9().await;
    let mut daemon = bob.daemon_stdio();
    let sub = daemon.rpc().call("subscribe", json!({})).await;
    assert_eq!(sub["acked"], json!(event_id(&first)));
    assert_eq!(daemon.rpc().next_message().await, second);

    // After acking everything, nothing is replayed: the next event is a new message.
    daemon.rpc().call("ack", json!({ "event_id": event_id(&second) })).await;
    assert!(daemon.close_stdin().await.success());
    let mut daemon = bob.daemon_stdio();
    daemon.rpc().call("subscribe", json!({})).await;
    alice.send("bob", "three").await;
    let third = daemon.rpc().next_message().await;
    assert_eq!(third["body"], json!("three"));
    assert!(event_id(&third) > event_id(&second));

    // `subscribe {after}` replays from an explicit position; acks cannot run ahead of events.
    daemon.rpc().call("subscribe", json!({ "after": 0 })).await;
    let bodies = [
        daemon.rpc().next_message().await["body"].clone(),
        daemon.rpc().next_message().await["body"].clone(),
        daemon.rpc().next_message().await["body"].clone(),
    ];
    assert_eq!(bodies, [json!("one"), json!("two"), json!("three")]);
    let acked = daemon.rpc().call("ack", json!({ "event_id": 1_000_000 })).await;
    assert_eq!(acked["acked"], json!(event_id(&third)));
    assert!(daemon.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_methods_mirror_the_commands() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let mut daemon = alice.daemon_stdio();
    let rpc = daemon.rpc();

    let status = rpc.call("status", json!(null)).await;
    assert_eq!(status["username"], json!("alice"));
    rpc.call("subscribe", json!(null)).await;
    let sent = rpc.call("send", json!({ "to": "bob", "text": "from the daemon" })).await;
    assert_eq!(sent["status"], json!("pending"));
    loop {
        let e = rpc.next_event().await;
        if e["type"] == json!("sent") {
            assert_eq!((&e["id"], &e["to"]), (&sent["id"], &json!("bob")));
            break;
        }
    }
    let got = bob.receive().await;
    assert_eq!(got[0]["body"], json!("from the daemon"));

    let history = rpc.call("history", json!({ "with": "bob" })).await;
    assert_eq!(history["messages"][0]["body"], json!("from the daemon"));
    let contacts = rpc.call("contacts", json!({})).await;
    assert_eq!(contacts["contacts"][0]["username"], json!("bob"));
    let mine = rpc.call("safety_number", json!({ "with": "bob" })).await;
    let theirs = bob.hush(&["safety-number", "alice", "--json"]).await.ok().json_lines();
    assert_eq!(mine["safety_number"], theirs[0]["safety_number"]);
    assert_eq!(rpc.call("trust", json!({ "with": "bob" })).await["trust"], json!("trusted"));

    // Errors: JSON-RPC codes, and application errors carry the CLI's exit code.
    let e = rpc.call_raw("nope", json!({})).await;
    assert_eq!(e["error"]["code"], json!(-32601));
    let e = rpc.call_raw("send", json!({ "to": "bob" })).await;
    assert_eq!(e["error"]["code"], json!(-32602));
    let e = rpc.call_raw("send", json!({ "to": "nobody-here", "text": "x" })).await;
    assert_eq!(e["error"]["data"]["exit_code"], json!(1), "{e}");
    rpc.write_line("{not json").await;
    let e = rpc.read_json().await;
    assert_eq!((&e["id"], &e["error"]["code"]), (&Value::Null, &json!(-32700)));
    assert!(daemon.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_daemon_serves_several_bots_and_replays_after_a_restart() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let socket = bob.dir().join("daemon.sock");

    let daemon = bob.daemon_socket(&socket).await;
    let mut one = Rpc::connect(&socket).await;
    let mut two = Rpc::connect(&socket).await;
    one.call("subscribe", json!({})).await;
    two.call("subscribe", json!({})).await;
    alice.send("bob", "to both").await;
    let a = one.next_message().await;
    let b = two.next_message().await;
    assert_eq!(a, b);
    assert_eq!(a["body"], json!("to both"));

    // A bot replies through the socket.
    let sent = one.call("send", json!({ "to": "alice", "text": "reply" })).await;
    loop {
        let e = one.next_event().await;
        if e["type"] == json!("sent") && e["id"] == sent["id"] {
            break;
        }
    }
    let got = alice.receive().await;
    assert_eq!(got[0]["body"], json!("reply"));

    // The daemon dies before any ack: its successor replays the event.
    drop((one, two));
    daemon.kill9().await;
    let daemon = bob.daemon_socket(&socket).await;
    let mut three = Rpc::connect(&socket).await;
    three.call("subscribe", json!({})).await;
    assert_eq!(three.next_message().await, a);
    three.call("ack", json!({ "event_id": event_id(&a) })).await;
    drop(three);
    assert!(daemon.terminate().await.success());
    assert!(!socket.exists(), "the socket file is removed on exit");
}
