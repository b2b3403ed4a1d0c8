//! The one-shot commands, run the way the README tells two people to.

use serde_json::json;

use crate::support::{Hushd, User, line_channel, next_line};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_follow_the_readme_and_message_each_other() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;

    let sent = alice.send("bob", "hello bob").await;
    assert_eq!(sent["to"], json!("bob"));
    let id = sent["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 32);

    let got = bob.receive().await;
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m["id"], json!(id));
    assert_eq!(m["from"], json!("alice"));
    assert_eq!(m["from_device"], json!(1));
    assert_eq!(m["conversation"], json!("alice"));
    assert_eq!(m["body"], json!("hello bob"));
    assert_eq!(m["direction"], json!("incoming"));
    let (sent_at, received_at) = (m["sent_at"].as_u64().expect("sent_at"), m["received_at"].as_u64().expect("at"));
    assert!(sent_at > 1_600_000_000_000 && received_at >= sent_at.saturating_sub(60_000), "{m}");
    assert!(bob.receive().await.is_empty(), "a message is printed once");

    // Bob answers with a text from stdin (multi-line; the final newline is dropped).
    let out = bob.hush_with_stdin(&["send", "alice", "-", "--json"], Some("hi alice\nsecond line\n")).await.ok();
    assert_eq!(out.json_lines()[0]["status"], json!("sent"));
    let got = alice.receive().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"], json!("hi alice\nsecond line"));
    assert_eq!(got[0]["from"], json!("bob"));

    // History: the same order on both sides.
    alice.send("bob", "third").await;
    bob.receive().await;
    let bodies = |lines: Vec<serde_json::Value>| lines.iter().map(|l| l["body"].clone()).collect::<Vec<_>>();
    let expected = vec![json!("hello bob"), json!("hi alice\nsecond line"), json!("third")];
    let a = alice.hush(&["history", "bob", "--json"]).await.ok().json_lines();
    let b = bob.hush(&["history", "alice", "--json"]).await.ok().json_lines();
    assert_eq!(a[0]["direction"], json!("outgoing"));
    assert_eq!(b[0]["direction"], json!("incoming"));
    assert_eq!(bodies(a), expected);
    assert_eq!(bodies(b), expected);
    let last_two = alice.hush(&["history", "bob", "--limit", "2", "--json"]).await.ok().json_lines();
    assert_eq!(bodies(last_two), expected[1..].to_vec());
    let text = alice.hush(&["history", "bob"]).await.ok().stdout;
    assert!(text.contains("alice -> bob: hello bob") && text.contains("bob: hi alice"), "{text}");

    // Contacts and safety numbers.
    let contacts = alice.hush(&["contacts", "--json"]).await.ok().json_lines();
    assert_eq!(contacts.len(), 1);
    assert_eq!((&contacts[0]["username"], &contacts[0]["trust"]), (&json!("bob"), &json!("trusted")));
    let a = alice.hush(&["safety-number", "bob", "--json"]).await.ok().json_lines();
    let b = bob.hush(&["safety-number", "alice", "--json"]).await.ok().json_lines();
    assert_eq!(a[0]["safety_number"], b[0]["safety_number"]);
    assert_eq!(a[0]["safety_number"].as_str().map(str::len), Some(60));
    let text = bob.hush(&["safety-number", "alice"]).await.ok().stdout;
    assert_eq!(text.trim().split(' ').count(), 12);

    // Status.
    let status = alice.hush(&["status", "--json"]).await.ok().json_lines();
    assert_eq!(status[0]["username"], json!("alice"));
    assert_eq!(status[0]["server_reachable"], json!(true));
    assert_eq!(status[0]["outbox_pending"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_follow_prints_messages_as_they_arrive_and_stops_on_sigterm() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    alice.send("bob", "before").await;

    let mut follow = bob.command(&["receive", "--follow", "--json"]).spawn().expect("start receive --follow");
    let mut lines = line_channel(follow.stdout.take().expect("stdout"));
    let first: serde_json::Value =
        serde_json::from_str(&next_line(&mut lines, "first message").await.expect("a line")).expect("json");
    assert_eq!(first["body"], json!("before"));

    alice.send("bob", "while following").await;
    let second: serde_json::Value =
        serde_json::from_str(&next_line(&mut lines, "second message").await.expect("a line")).expect("json");
    assert_eq!(second["body"], json!("while following"));

    let pid = follow.id().expect("pid");
    assert!(std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill").success());
    let status = tokio::time::timeout(crate::support::DEADLINE, follow.wait()).await.expect("exits").expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(bob.receive().await.is_empty(), "followed messages are not printed again");

    // --timeout ends --follow by itself.
    let out = bob.hush(&["receive", "--follow", "--timeout", "0.5", "--json"]).await.ok();
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_but_not_printed_is_printed_by_the_next_receive() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    alice.send("bob", "one").await;
    // Bob's `send` connects, which stores (and acks) Alice's message without printing it.
    let _ = alice.send("bob", "two").await;
    bob.send("alice", "hi").await;
    let got = bob.receive().await;
    let bodies: Vec<_> = got.iter().map(|m| m["body"].clone()).collect();
    assert_eq!(bodies, vec![json!("one"), json!("two")], "own messages are not printed by receive");
}
