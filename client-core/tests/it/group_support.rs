//! Group helpers shared by the group tests: joining, waiting for texts and sends, reading
//! history and the server's database.

use std::collections::HashSet;

use hush_client_core::{ClientConfig, Event, GroupState, MessageKind, MessageRecord};
use tokio::time::Instant;

use crate::support::{Hushd, TestClient, WAIT};

/// A second device of `of`'s account, in its own data directory.
pub async fn second_device(server: &Hushd, of: &TestClient) -> TestClient {
    let dir = tempfile::Builder::new().prefix("client-").tempdir().unwrap();
    let client = of.client.add_device(ClientConfig::new(dir.path(), server.url())).await.unwrap();
    let events = client.events();
    TestClient { client, name: of.name.clone(), dir, events, backlog: Default::default() }
}

/// Waits until `who` knows `group` (an invite or the group itself) and accepts it if invited.
pub async fn join(who: &mut TestClient, group: &str) {
    let mut seen = Vec::new();
    let event = who
        .wait_for(&format!("{group} to arrive"), &mut seen, |e| match e {
            Event::GroupInvite { group: g, .. } => g == group,
            Event::GroupUpdated { group: g, state, .. } => g == group && *state == GroupState::Active,
            _ => false,
        })
        .await;
    who.backlog.extend(seen);
    if matches!(event, Event::GroupInvite { .. }) {
        let info = who.client.accept_invite(group).await.unwrap();
        assert_eq!(info.state, GroupState::Active);
    }
    // The title comes with the group's key, in the creator's distribution.
    let deadline = Instant::now() + WAIT;
    let mut kept = Vec::new();
    while who.client.group_info(group).await.unwrap().title.is_empty() {
        match who.next_event("the group's key and title", deadline).await {
            Some(Event::GroupUpdated { group: g, title, .. }) if g == group && !title.is_empty() => break,
            Some(other) => kept.push(other),
            None => panic!("{}: client stopped", who.name),
        }
    }
    for e in kept.into_iter().rev() {
        who.backlog.push_front(e);
    }
}

/// Waits for `n` group texts in `group` on `who`, returning their bodies in event order.
pub async fn texts(who: &mut TestClient, group: &str, n: usize) -> Vec<String> {
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
pub async fn sent(who: &mut TestClient, ids: &[hush_client_core::MessageId]) {
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
pub fn more_texts(who: &mut TestClient, group: &str) -> Vec<String> {
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
pub async fn history(who: &TestClient, group: &str) -> Vec<MessageRecord> {
    who.client.history(group, 10_000).await.unwrap().into_iter().filter(|m| m.kind == MessageKind::Text).collect()
}

pub fn bodies(records: &[MessageRecord]) -> Vec<String> {
    records.iter().map(|m| m.body.clone()).collect()
}

/// Rows of `sql` (one integer column) in the server's SQLite database.
pub async fn db_ints(server: &Hushd, sql: &str, group: uuid::Uuid) -> Vec<i64> {
    let url = format!("sqlite://{}?mode=ro", server.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(i64,)> = sqlx::query_as(sql).bind(group.as_bytes().to_vec()).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows.into_iter().map(|(v,)| v).collect()
}
