//! Groups end to end: a real `hushd` process and real clients, each with its own data
//! directory (one account with two devices, the second added with `Client::add_device`).

use std::collections::HashSet;

use hush_client_core::{ClientConfig, ClientError, Event, GroupRole, GroupState, MessageKind, MessageRecord};
use tokio::time::Instant;

use crate::support::{Hushd, TestClient, WAIT};

/// A second device of `of`'s account, in its own data directory.
async fn second_device(server: &Hushd, of: &TestClient) -> TestClient {
    let dir = tempfile::Builder::new().prefix("client-").tempdir().unwrap();
    let client = of.client.add_device(ClientConfig::new(dir.path(), server.url())).await.unwrap();
    let events = client.events();
    TestClient { client, name: of.name.clone(), dir, events, backlog: Default::default() }
}

/// Waits until `who` knows `group` (an invite or the group itself) and accepts it if invited.
async fn join(who: &mut TestClient, group: &str) {
    let mut seen = Vec::new();
    let event = who
        .wait_for(&format!("{group} to arrive"), &mut seen, |e| match e {
            Event::GroupInvite { group: g, .. } => g == group,
            Event::GroupUpdated { group: g, state, .. } => g == group && *state == GroupState::Active,
            _ => false,
        })
        .await;
    if matches!(event, Event::GroupInvite { .. }) {
        let info = who.client.accept_invite(group).await.unwrap();
        assert_eq!(info.state, GroupState::Active);
    }
}

/// Waits for `n` group texts in `group` on `who`, returning their bodies in event order.
async fn texts(who: &mut TestClient, group: &str, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < n {
        let what = format!("{n} texts in {group}; got {got:?}");
        match who.next_event(&what, deadline).await {
            Some(Event::Message(m)) if m.conversation == group && m.kind == MessageKind::Text => got.push(m.body),
            Some(_) => {}
            None => panic!("{}: client stopped", who.name),
        }
    }
    got
}

/// Waits until every text in `ids` was accepted by the server.
async fn sent(who: &mut TestClient, ids: &[hush_client_core::MessageId]) {
    let mut left: HashSet<_> = ids.iter().copied().collect();
    let deadline = Instant::now() + WAIT;
    let mut kept = Vec::new();
    while !left.is_empty() {
        match who.next_event("sends to be accepted", deadline).await {
            Some(Event::Sent { id, .. }) if left.contains(&id) => {
                left.remove(&id);
            }
            Some(Event::SendFailed { id, reason, .. }) if left.contains(&id) => {
                panic!("{}: send failed: {reason}", who.name)
            }
            Some(other) => kept.push(other),
            None => panic!("{}: client stopped", who.name),
        }
    }
    for e in kept.into_iter().rev() {
        who.backlog.push_front(e);
    }
}

/// Group texts among the events already waiting (non-blocking).
fn more_texts(who: &mut TestClient, group: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut all: Vec<Event> = who.backlog.drain(..).collect();
    all.extend(std::iter::from_fn(|| who.events.try_recv()));
    for e in all {
        if let Event::Message(m) = e
            && m.conversation == group
            && m.kind == MessageKind::Text
        {
            out.push(m.body);
        }
    }
    out
}

/// The texts of a group's history, in the order the device shows them.
async fn history(who: &TestClient, group: &str) -> Vec<MessageRecord> {
    who.client.history(group, 10_000).await.unwrap().into_iter().filter(|m| m.kind == MessageKind::Text).collect()
}

fn bodies(records: &[MessageRecord]) -> Vec<String> {
    records.iter().map(|m| m.body.clone()).collect()
}

/// Rows of `sql` (one integer column) in the server's SQLite database.
async fn db_ints(server: &Hushd, sql: &str, group: uuid::Uuid) -> Vec<i64> {
    let url = format!("sqlite://{}?mode=ro", server.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(i64,)> = sqlx::query_as(sql).bind(group.as_bytes().to_vec()).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows.into_iter().map(|(v,)| v).collect()
}

struct Trio {
    server: Hushd,
    alice: TestClient,
    bob: TestClient,
    bob2: TestClient,
    carol: TestClient,
    group: String,
}

/// alice (owner), bob with two devices and carol, all connected and in one group.
async fn trio() -> Trio {
    let server = Hushd::start().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let mut bob = TestClient::register(&server, "bob").await;
    let mut bob2 = second_device(&server, &bob).await;
    let mut carol = TestClient::register(&server, "carol").await;
    for c in [&alice, &bob, &bob2, &carol] {
        c.client.connect().await.unwrap();
    }
    let info = alice.client.create_group("trio", &[&bob.name, &carol.name]).await.unwrap();
    assert_eq!(info.members.len(), 3);
    let group = info.group.clone();
    for c in [&mut bob, &mut bob2, &mut carol] {
        join(c, &group).await;
    }
    Trio { server, alice, bob, bob2, carol, group }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_gets_every_group_message_once_in_group_seq_order_with_a_member_offline() {
    let Trio { server, mut alice, mut bob, mut bob2, mut carol, group } = trio().await;
    let gid = uuid::Uuid::parse_str(group.trim_start_matches("group:")).unwrap();
    for c in [&alice, &bob, &bob2, &carol] {
        assert_eq!(c.client.group_info(&group).await.unwrap().title, "trio", "{}: the title arrived", c.name);
    }

    // Carol is offline while everyone else talks, interleaved.
    carol.client.disconnect().await.unwrap();
    let (mut a_ids, mut b_ids, mut b2_ids) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..4 {
        a_ids.push(alice.client.send_text(&group, &format!("alice {i}")).await.unwrap());
        b_ids.push(bob.client.send_text(&group, &format!("bob {i}")).await.unwrap());
        b2_ids.push(bob2.client.send_text(&group, &format!("bob2 {i}")).await.unwrap());
    }
    sent(&mut alice, &a_ids).await;
    sent(&mut bob, &b_ids).await;
    sent(&mut bob2, &b2_ids).await;
    let got_alice = texts(&mut alice, &group, 8).await;
    let got_bob = texts(&mut bob, &group, 8).await;
    let got_bob2 = texts(&mut bob2, &group, 8).await;

    // Stored once: one row per message, referenced from each other member device's mailbox.
    let seqs: Vec<u64> = history(&alice, &group).await.iter().map(|m| m.group_seq).collect();
    assert_eq!(seqs.len(), 12);
    assert!(seqs.iter().all(|s| *s > 0), "every sent message has its group seq: {seqs:?}");
    let copies = db_ints(&server, "SELECT COUNT(*) FROM group_messages WHERE group_id = ?1 GROUP BY seq", gid).await;
    assert!(copies.iter().all(|c| *c == 1), "one stored copy per group seq: {copies:?}");
    for seq in &seqs {
        let sql = format!("SELECT COUNT(*) FROM group_messages WHERE group_id = ?1 AND seq = {seq}");
        assert_eq!(db_ints(&server, &sql, gid).await, vec![1], "message {seq} is stored once (carol has not acked)");
        let sql = format!("SELECT length(content) FROM envelopes WHERE group_id = ?1 AND group_seq = {seq}");
        let refs = db_ints(&server, &sql, gid).await;
        // Carol's reference at least (the others may have acked already), none with a copy.
        assert!(
            (1..=3).contains(&refs.len()) && refs.iter().all(|l| *l == 0),
            "message {seq}: mailbox references without a copy of the payload: {refs:?}"
        );
    }

    // Everyone gets what the others sent, exactly once.
    carol.client.connect().await.unwrap();
    let got_carol = texts(&mut carol, &group, 12).await;
    for (who, got) in [("alice", &got_alice), ("bob", &got_bob), ("bob2", &got_bob2), ("carol", &got_carol)] {
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "{who} got a message twice: {got:?}");
    }
    assert!(got_alice.iter().all(|b| !b.starts_with("alice ")));
    assert!(got_bob.iter().all(|b| !b.starts_with("bob ")));
    assert!(got_bob2.iter().all(|b| !b.starts_with("bob2 ")));

    // Every device shows the same conversation in the same order: the group seq.
    let reference = history(&alice, &group).await;
    let mut by_seq = reference.clone();
    by_seq.sort_by_key(|m| m.group_seq);
    assert_eq!(bodies(&reference), bodies(&by_seq), "alice's history is in group seq order");
    for c in [&bob, &bob2, &carol] {
        c.drain().await;
        let h = history(c, &group).await;
        assert_eq!(bodies(&h), bodies(&reference), "{} shows the same order", c.name);
        assert_eq!(h.iter().map(|m| m.group_seq).collect::<Vec<_>>(), seqs, "{} has the same seqs", c.name);
    }
    // Nothing more arrives after the drain.
    for c in [&mut alice, &mut bob, &mut bob2, &mut carol] {
        c.drain().await;
        let extra = more_texts(c, &group);
        assert!(extra.is_empty(), "{}: more texts: {extra:?}", c.name);
    }
}
