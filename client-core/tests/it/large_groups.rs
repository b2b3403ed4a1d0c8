//! Large groups end to end with real clients: a `hushd` whose fan-out-on-read threshold is
//! lowered to 3 members, so a group of 4 or more is read from its stream (one stored copy,
//! no mailbox references, a cursor per member device) and a group of 3 or fewer from the
//! members' mailboxes. The tests cross the threshold both ways while messages flow and
//! check that every device shows every message exactly once, in group seq order.

use std::collections::HashSet;

use hush_client_core::MessageId;

use crate::group_support::{bodies, db_ints, history, join, sent, texts};
use crate::support::{Hushd, TestClient};

/// Groups above 3 members read from their stream.
const READ_ABOVE: &str = "3";

async fn server() -> Hushd {
    Hushd::start_with(&["--group-fanout-read-above", READ_ABOVE]).await
}

fn group_uuid(group: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(group.trim_start_matches("group:")).unwrap()
}

/// Whether the server reads `group` from its stream now.
async fn read_path(server: &Hushd, group: &str) -> bool {
    db_ints(server, "SELECT read_path FROM chat_groups WHERE id = ?1", group_uuid(group)).await == vec![1]
}

/// Sends `prefix 0..n` from `who` without waiting for the server, so they are in flight
/// while whatever comes next happens.
async fn send_many(who: &TestClient, group: &str, prefix: &str, range: std::ops::Range<usize>) -> Vec<MessageId> {
    let mut ids = Vec::new();
    for i in range {
        ids.push(who.client.send_text(group, &format!("{prefix} {i}")).await.unwrap());
    }
    ids
}

fn expected(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} {i}")).collect()
}

/// `who`'s history of `group`: each text once, in group seq order, and the same order
/// as the events that delivered them (`got`).
async fn assert_once_in_order(who: &TestClient, group: &str, got: &[String]) -> Vec<u64> {
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "{}: a message arrived twice: {got:?}", who.name);
    let h = history(who, group).await;
    let seqs: Vec<u64> = h.iter().map(|m| m.group_seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(seqs, sorted, "{}: history in strictly increasing group seq order", who.name);
    let incoming: Vec<String> = bodies(&h).into_iter().filter(|b| got.contains(b)).collect();
    assert_eq!(incoming, got, "{}: events came in the order the history shows", who.name);
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_growing_past_the_threshold_while_messages_flow_shows_each_message_once_in_order() {
    let server = server().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let mut bob = TestClient::register(&server, "bob").await;
    let mut carol = TestClient::register(&server, "carol").await;
    let mut dave = TestClient::register(&server, "dave").await;
    let mut erin = TestClient::register(&server, "erin").await;
    for c in [&alice, &bob, &carol, &dave, &erin] {
        c.client.connect().await.unwrap();
    }
    let group = alice.client.create_group("growing", &[&bob.name, &carol.name]).await.unwrap().group;
    join(&mut bob, &group).await;
    join(&mut carol, &group).await;
    assert!(!read_path(&server, &group).await, "3 members: fan-out on write");

    // Bob's messages are in flight while alice adds dave (4: the stream) and then erin (5).
    let mut ids = send_many(&bob, &group, "bob", 0..5).await;
    let info = alice.client.add_members(&group, &[&dave.name]).await.unwrap();
    assert_eq!(info.members.len(), 4);
    ids.extend(send_many(&bob, &group, "bob", 5..10).await);
    let a_ids = send_many(&alice, &group, "alice", 0..3).await;
    let info = alice.client.add_members(&group, &[&erin.name]).await.unwrap();
    assert_eq!(info.members.len(), 5);
    ids.extend(send_many(&bob, &group, "bob", 10..15).await);
    sent(&mut bob, &ids).await;
    sent(&mut alice, &a_ids).await;
    assert!(read_path(&server, &group).await, "5 members: read from the stream");
    join(&mut dave, &group).await;
    join(&mut erin, &group).await;

    // Carol is offline for the last messages: on the stream path they wait for her as one
    // stored copy behind her cursor, with no mailbox reference.
    carol.client.disconnect().await.unwrap();
    let late = send_many(&bob, &group, "bob", 15..18).await;
    sent(&mut bob, &late).await;
    let gid = group_uuid(&group);
    let late_bodies = expected("bob", 15..18);
    let late_seqs: Vec<u64> =
        history(&bob, &group).await.iter().filter(|m| late_bodies.contains(&m.body)).map(|m| m.group_seq).collect();
    assert_eq!(late_seqs.len(), 3, "bob's history has his last three");
    for seq in &late_seqs {
        let refs = format!("SELECT COUNT(*) FROM envelopes WHERE group_id = ?1 AND group_seq = {seq}");
        assert_eq!(db_ints(&server, &refs, gid).await, vec![0], "message {seq}: no mailbox reference");
        let copies = format!("SELECT COUNT(*) FROM group_messages WHERE group_id = ?1 AND seq = {seq}");
        assert_eq!(db_ints(&server, &copies, gid).await, vec![1], "message {seq}: one stored copy");
    }
    let cursors = db_ints(&server, "SELECT COUNT(*) FROM group_cursors WHERE group_id = ?1", gid).await;
    assert_eq!(cursors, vec![5], "one cursor per member device");
    carol.client.connect().await.unwrap();

    // Alice and carol were members throughout: every one of bob's 18 (and carol alice's 3),
    // once, in order.
    let all_bob = expected("bob", 0..18);
    let mut all_carol = all_bob.clone();
    all_carol.extend(expected("alice", 0..3));
    for (who, want) in [(&mut alice, &all_bob), (&mut carol, &all_carol)] {
        let got = texts(who, &group, want.len()).await;
        let got_set: HashSet<&String> = got.iter().collect();
        assert_eq!(got_set, want.iter().collect(), "{}: the others' messages", who.name);
        assert_once_in_order(who, &group, &got).await;
    }
    // Within one sender, the group seq keeps the order it sent in.
    let carol_bob: Vec<String> =
        bodies(&history(&carol, &group).await).into_iter().filter(|b| b.starts_with("bob ")).collect();
    assert_eq!(carol_bob, all_bob, "carol shows bob's messages in the order he sent them");
    let got = texts(&mut bob, &group, 3).await;
    assert_eq!(got, expected("alice", 0..3), "bob gets alice's, not his own back");
    assert_once_in_order(&bob, &group, &got).await;

    // Dave and erin read from the change that added them: the last messages at least, once.
    for who in [&mut dave, &mut erin] {
        who.drain().await;
        let h = bodies(&history(who, &group).await);
        let unique: HashSet<&String> = h.iter().collect();
        assert_eq!(unique.len(), h.len(), "{}: nothing twice: {h:?}", who.name);
        assert_eq!(&h[h.len() - 3..], &expected("bob", 15..18)[..], "{}: the messages sent after it joined", who.name);
    }
    // Every device that was there throughout shows the conversation in the same order.
    let reference = bodies(&history(&alice, &group).await);
    for who in [&bob, &carol] {
        assert_eq!(bodies(&history(who, &group).await), reference, "{} shows alice's order", who.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_shrinking_below_the_threshold_with_a_member_offline_loses_nothing_across_a_kill_9() {
    let mut server = server().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let mut bob = TestClient::register(&server, "bob").await;
    let mut carol = TestClient::register(&server, "carol").await;
    let mut dave = TestClient::register(&server, "dave").await;
    let mut erin = TestClient::register(&server, "erin").await;
    for c in [&alice, &bob, &carol, &dave, &erin] {
        c.client.connect().await.unwrap();
    }
    let members = [bob.name.as_str(), carol.name.as_str(), dave.name.as_str(), erin.name.as_str()];
    let group = alice.client.create_group("shrinking", &members).await.unwrap().group;
    for who in [&mut bob, &mut carol, &mut dave, &mut erin] {
        join(who, &group).await;
    }
    assert!(read_path(&server, &group).await, "5 members: read from the stream");

    // Carol is offline from here on while the group shrinks to 3 and goes back to mailboxes.
    carol.client.disconnect().await.unwrap();
    let mut ids = send_many(&bob, &group, "bob", 0..4).await;
    alice.client.remove_member(&group, &erin.name).await.unwrap();
    ids.extend(send_many(&bob, &group, "bob", 4..8).await);
    let info = alice.client.remove_member(&group, &dave.name).await.unwrap();
    assert_eq!(info.members.len(), 3);
    ids.extend(send_many(&bob, &group, "bob", 8..12).await);
    sent(&mut bob, &ids).await;
    assert!(!read_path(&server, &group).await, "3 members: fan-out on write");

    // What carol has not read moved into her mailbox at the switch: a reference per message
    // (bob's 12 and the two removals), and no cursor is left behind.
    let gid = group_uuid(&group);
    let cursors = db_ints(&server, "SELECT COUNT(*) FROM group_cursors WHERE group_id = ?1", gid).await;
    assert_eq!(cursors, vec![0], "mailbox path: no cursors");
    for m in history(&bob, &group).await.iter().filter(|m| m.body.starts_with("bob ")) {
        let refs = format!("SELECT COUNT(*) FROM envelopes WHERE group_id = ?1 AND group_seq = {}", m.group_seq);
        assert!(db_ints(&server, &refs, gid).await[0] >= 1, "{}: waiting in carol's mailbox", m.body);
    }

    // hushd dies without warning; carol comes back to the restarted server.
    server.restart().await;
    carol.client.connect().await.unwrap();
    let got = texts(&mut carol, &group, 12).await;
    assert_eq!(got, expected("bob", 0..12), "carol: every message once, in order");
    assert_once_in_order(&carol, &group, &got).await;
    carol.drain().await;
    let h = bodies(&history(&carol, &group).await);
    assert_eq!(h.iter().filter(|b| b.starts_with("bob ")).count(), 12, "carol's history holds each once: {h:?}");

    // After the switch back, a new message reaches both remaining members once.
    let id = alice.client.send_text(&group, "after").await.unwrap();
    sent(&mut alice, &[id]).await;
    for who in [&mut bob, &mut carol] {
        let got = texts(who, &group, 1).await;
        assert_eq!(got, vec!["after".to_owned()], "{}", who.name);
    }
    // The removed members' devices read nothing sent after their removal.
    for who in [&dave, &erin] {
        let h = bodies(&history(who, &group).await);
        assert!(!h.contains(&"after".to_owned()) && !h.contains(&"bob 11".to_owned()), "{}: {h:?}", who.name);
    }
}
