//! Groups end to end: a real `hushd` process and real clients, each with its own data
//! directory (one account with two devices, the second added with `Client::add_device`).

use std::collections::HashSet;

use hush_client_core::{ClientError, Event, GroupRole, GroupState, MessageKind};
use tokio::time::Instant;

use crate::group_support::{bodies, db_ints, history, join, more_texts, second_device, sent, texts};
use crate::support::{Hushd, TestClient, WAIT};

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
    let alice = TestClient::register(&server, "alice").await;
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

/// The code of a server refusal, or a panic naming what came instead.
fn refusal(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Server { status, code, message }) => {
            assert!(!message.is_empty(), "a refusal says why");
            (status, code)
        }
        other => panic!("expected a server refusal, got {other:?}"),
    }
}

/// Waits for the system entry of a roster change of `kind` in `group`.
async fn roster_change(who: &mut TestClient, group: &str, kind: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        match who.next_event(&format!("a {kind} roster change"), deadline).await {
            Some(Event::Message(m))
                if m.conversation == group && m.kind == MessageKind::System && m.body.contains(kind) =>
            {
                return;
            }
            Some(_) => {}
            None => panic!("{}: client stopped", who.name),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_gets_nothing_after_its_removal_and_cannot_decrypt_a_later_message() {
    let Trio { server, mut alice, mut bob, mut bob2, mut carol, group } = trio().await;
    let gid = uuid::Uuid::parse_str(group.trim_start_matches("group:")).unwrap();
    // Everyone has a sender key under epoch 1.
    for (c, text) in [(&mut alice, "a before"), (&mut bob, "b before"), (&mut carol, "c before")] {
        let id = c.client.send_text(&group, text).await.unwrap();
        sent(c, &[id]).await;
    }
    assert_eq!(texts(&mut carol, &group, 2).await.len(), 2);
    texts(&mut bob2, &group, 3).await;
    texts(&mut alice, &group, 2).await;
    texts(&mut bob, &group, 2).await;

    // Bob is offline while carol is removed, and writes under the old epoch.
    bob.client.disconnect().await.unwrap();
    let info = alice.client.remove_member(&group, &carol.name).await.unwrap();
    assert_eq!(info.members.len(), 2);
    assert!(info.epoch > 1, "a removal moves the epoch: {info:?}");
    roster_change(&mut carol, &group, "removed").await;
    assert_eq!(carol.client.group_info(&group).await.unwrap().state, GroupState::Left);
    let id = bob.client.send_text(&group, "b after").await.unwrap();
    // Alice stays offline so the stored copy stays on the server for the check below.
    alice.client.disconnect().await.unwrap();
    bob.client.connect().await.unwrap();
    sent(&mut bob, &[id]).await;
    assert_eq!(texts(&mut bob2, &group, 1).await, ["b after"], "bob rotated and resent by itself");
    let a2 = alice.client.send_text(&group, "a after").await.unwrap();
    alice.client.connect().await.unwrap();
    sent(&mut alice, &[a2]).await;
    let mut got = texts(&mut alice, &group, 1).await;
    got.extend(texts(&mut bob, &group, 1).await);
    assert_eq!(got, ["b after", "a after"]);

    // Carol got nothing after her removal.
    carol.drain().await;
    assert_eq!(more_texts(&mut carol, &group), Vec::<String>::new());
    let carol_history = bodies(&history(&carol, &group).await);
    assert_eq!(carol_history, ["a before", "b before", "c before"]);

    // Given the ciphertext of a later message, carol's keys cannot open it.
    bob2.client.disconnect().await.unwrap();
    let later = bob.client.send_text(&group, "b secret").await.unwrap();
    sent(&mut bob, &[later]).await;
    let seq = history(&bob, &group).await.last().map(|m| m.group_seq).unwrap();
    let url = format!("sqlite://{}?mode=ro", server.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (ciphertext,): (Vec<u8>,) =
        sqlx::query_as("SELECT content FROM group_messages WHERE group_id = ?1 AND seq = ?2")
            .bind(gid.as_bytes().to_vec())
            .bind(i64::try_from(seq).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    carol.client.shutdown().await.unwrap();
    let store = hush_client_core::store::SqliteStore::open(&carol.dir.path().join("client.db")).await.unwrap();
    let account = hush_client_core::store::ClientStore::account(&store).await.unwrap().unwrap();
    let identity = libsignal_protocol::IdentityKeyPair::try_from(&account.identity_key_pair[..]).unwrap();
    let bob_id = bob.client.status().await.unwrap().account_id;
    let mut signal = hush_client_core::signal_store::SignalStore::new(
        std::sync::Arc::new(store.clone()),
        identity,
        account.registration_id,
    );
    let bob_address = libsignal_protocol::ProtocolAddress::new(hush_keys::aci_string(bob_id), 1.try_into().unwrap());
    let opened = libsignal_protocol::group_decrypt(&ciphertext, &mut signal, &bob_address).await;
    assert!(opened.is_err(), "the removed member opened a message sent after its removal");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_and_a_non_member_is_refused() {
    let Trio { server, mut alice, mut bob, bob2: _bob2, mut carol, group } = trio().await;
    // A member may not add, remove or change roles (the group does not let members add).
    let dave = TestClient::register(&server, "dave").await;
    assert_eq!(refusal(bob.client.add_members(&group, &[&dave.name]).await), (403, "forbidden".into()));
    assert_eq!(refusal(bob.client.remove_member(&group, &carol.name).await), (403, "forbidden".into()));
    assert_eq!(refusal(bob.client.set_role(&group, &carol.name, GroupRole::Admin).await), (403, "forbidden".into()));
    // The last owner cannot leave or give up ownership without handing over.
    assert_eq!(refusal(alice.client.leave_group(&group).await), (409, "last_owner".into()));
    // An admin may remove members, not owners, and may not change roles.
    let info = alice.client.set_role(&group, &bob.name, GroupRole::Admin).await.unwrap();
    assert!(info.members.iter().any(|m| m.username == bob.name && m.role == GroupRole::Admin), "{info:?}");
    assert_eq!(refusal(bob.client.remove_member(&group, &alice.name).await), (403, "forbidden".into()));
    assert_eq!(refusal(bob.client.set_role(&group, &carol.name, GroupRole::Admin).await), (403, "forbidden".into()));
    // Carol is offline when she is removed, so her device still thinks she is a member:
    // the server refuses what she tries.
    carol.client.disconnect().await.unwrap();
    let info = bob.client.remove_member(&group, &carol.name).await.unwrap();
    assert_eq!(info.members.len(), 2);
    assert_eq!(refusal(carol.client.add_members(&group, &[&dave.name]).await), (404, "not_a_member".into()));
    assert_eq!(refusal(carol.client.set_group_title(&group, "mine").await), (404, "not_a_member".into()));
    let id = carol.client.send_text(&group, "let me in").await.unwrap();
    carol.client.connect().await.unwrap();
    let deadline = Instant::now() + WAIT;
    let mut kept = Vec::new();
    let reason = loop {
        match carol.next_event("her group send to fail", deadline).await {
            Some(Event::SendFailed { id: failed, reason, .. }) if failed == id => break reason,
            Some(Event::Sent { id: ok, .. }) if ok == id => panic!("a removed member's message was accepted"),
            Some(other) => kept.push(other),
            None => panic!("carol stopped"),
        }
    };
    carol.backlog.extend(kept);
    assert!(reason.contains("member"), "the failure says why: {reason}");
    // Once she knows, her device refuses at once, and says why.
    roster_change(&mut carol, &group, "removed").await;
    match carol.client.send_text(&group, "again").await {
        Err(e) => assert!(e.to_string().contains("not a member"), "{e}"),
        Ok(_) => panic!("a removed member could queue a group message"),
    }
    // A stranger cannot send to a group or learn it.
    assert!(dave.client.send_text(&group, "hi").await.is_err(), "a stranger cannot send to a group");
    assert!(dave.client.group_info(&group).await.is_err(), "a stranger learns nothing of a group");
    // The group goes on for its members.
    let id = alice.client.send_text(&group, "still").await.unwrap();
    sent(&mut alice, &[id]).await;
    assert_eq!(texts(&mut bob, &group, 1).await, ["still"]);
    let id = bob.client.send_text(&group, "here").await.unwrap();
    sent(&mut bob, &[id]).await;
    assert_eq!(texts(&mut alice, &group, 1).await, ["here"]);
    assert_eq!(bodies(&history(&alice, &group).await), ["still", "here"]);
    assert_eq!(bodies(&history(&bob, &group).await), ["still", "here"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_from_a_non_contact_can_be_declined_or_accepted() {
    let server = Hushd::start().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let mut dave = TestClient::register(&server, "dave").await;
    let mut erin = TestClient::register(&server, "erin").await;
    for c in [&alice, &dave, &erin] {
        c.client.connect().await.unwrap();
    }
    let info = alice.client.create_group("party", &[&dave.name, &erin.name]).await.unwrap();
    let group = info.group;
    let id = alice.client.send_text(&group, "welcome").await.unwrap();
    sent(&mut alice, &[id]).await;
    for c in [&mut dave, &mut erin] {
        let mut seen = Vec::new();
        let invite = c.wait_for("an invite", &mut seen, |e| matches!(e, Event::GroupInvite { .. })).await;
        let Event::GroupInvite { group: g, from } = invite else { unreachable!() };
        assert_eq!((g.as_str(), from.as_str()), (group.as_str(), alice.name.as_str()));
        assert!(c.client.groups().await.unwrap().is_empty(), "an invite is not a group yet");
        assert_eq!(c.client.invites().await.unwrap().len(), 1);
    }
    dave.client.decline_invite(&group).await.unwrap();
    assert!(dave.client.invites().await.unwrap().is_empty());
    roster_change(&mut alice, &group, "left").await;
    let members = alice.client.group_info(&group).await.unwrap().members;
    assert!(!members.iter().any(|m| m.username == dave.name), "dave left by declining: {members:?}");

    let info = erin.client.accept_invite(&group).await.unwrap();
    assert_eq!((info.title.as_str(), info.state), ("party", GroupState::Active));
    erin.drain().await;
    assert_eq!(bodies(&history(&erin, &group).await), ["welcome"], "what arrived meanwhile is shown");
    let id = alice.client.send_text(&group, "glad you came").await.unwrap();
    sent(&mut alice, &[id]).await;
    assert_eq!(texts(&mut erin, &group, 1).await, ["glad you came"]);
    dave.drain().await;
    assert!(bodies(&history(&dave, &group).await).iter().all(|b| b != "glad you came"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_hushd_between_send_and_delivery_loses_nothing() {
    let Trio { mut server, mut alice, mut bob, mut bob2, carol: _carol, group } = trio().await;
    bob.client.disconnect().await.unwrap();
    let mut all = Vec::new();
    let mut ids = Vec::new();
    for i in 0..10 {
        all.push(format!("committed {i}"));
        ids.push(alice.client.send_text(&group, &all[i]).await.unwrap());
    }
    sent(&mut alice, &ids).await;
    // Some of these may be committed before the kill, some not: the client resends them.
    for i in 0..5 {
        all.push(format!("in flight {i}"));
        alice.client.send_text(&group, &all[10 + i]).await.unwrap();
    }
    server.kill().await;
    for i in 0..5 {
        all.push(format!("while down {i}"));
        alice.client.send_text(&group, &all[15 + i]).await.unwrap();
    }
    server.restart().await;
    alice.drain().await;
    bob.client.connect().await.unwrap();
    let mut got = texts(&mut bob, &group, 20).await;
    got.sort();
    let mut want = all.clone();
    want.sort();
    assert_eq!(got, want, "bob got every message once");
    let got2 = texts(&mut bob2, &group, 20).await;
    assert_eq!(got2.iter().collect::<HashSet<_>>().len(), 20, "bob2 got every message once: {got2:?}");
    bob.drain().await;
    bob2.drain().await;
    assert!(more_texts(&mut bob, &group).is_empty() && more_texts(&mut bob2, &group).is_empty());
    let order = bodies(&history(&alice, &group).await);
    assert_eq!(bodies(&history(&bob, &group).await), order);
    assert_eq!(bodies(&history(&bob2, &group).await), order);
    assert_eq!(order[..10], all[..10], "the committed ones keep their order");
}

/// Removes `device` from the server, signed by that device itself (read from its stopped store).
async fn remove_device_on_server(server: &Hushd, device: &TestClient) {
    device.client.shutdown().await.unwrap();
    let store = hush_client_core::store::SqliteStore::open(&device.dir.path().join("client.db")).await.unwrap();
    let account = hush_client_core::store::ClientStore::account(&store).await.unwrap().unwrap();
    store.close().await;
    let seed: [u8; 32] = account.auth_key.as_slice().try_into().unwrap();
    let key = hush_keys::auth::DeviceSigningKey::from_bytes(&seed);
    let path = format!("/v1/devices/{}", account.device_id);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let header =
        key.rest_authorization(account.account_id, account.device_id, "DELETE", &path, &[], now as u64, rand::random());
    let resp = reqwest::Client::new()
        .delete(format!("{}{path}", server.url()))
        .header(hush_wire::api::AUTH_HEADER, header)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 204, "{:?}\n---- hushd log ----\n{}", resp.text().await, server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_under_an_epoch_the_server_moved_is_refused_and_the_client_rotates_and_resends() {
    let Trio { server, mut alice, mut bob, bob2, mut carol, group } = trio().await;
    // Bob's second device is offline: its reference to the next message stays in its mailbox
    // until the device is removed.
    bob2.client.disconnect().await.unwrap();
    let id = alice.client.send_text(&group, "epoch one").await.unwrap();
    sent(&mut alice, &[id]).await;
    assert_eq!(texts(&mut bob, &group, 1).await, ["epoch one"]);
    assert_eq!(texts(&mut carol, &group, 1).await, ["epoch one"]);
    let before = alice.client.group_info(&group).await.unwrap().epoch;

    // Bob removes his second device: the server moves the group's epoch and writes no roster
    // change, so alice learns it only from the refusal of her next send (STALE_EPOCH).
    remove_device_on_server(&server, &bob2).await;
    let id = alice.client.send_text(&group, "epoch two").await.unwrap();
    sent(&mut alice, &[id]).await;
    assert!(alice.client.group_info(&group).await.unwrap().epoch > before, "alice learned the new epoch");
    assert_eq!(texts(&mut bob, &group, 1).await, ["epoch two"], "rotated and resent without help");
    assert_eq!(texts(&mut carol, &group, 1).await, ["epoch two"]);
    let id = carol.client.send_text(&group, "carol too").await.unwrap();
    sent(&mut carol, &[id]).await;
    assert_eq!(texts(&mut alice, &group, 1).await, ["carol too"]);
    assert_eq!(texts(&mut bob, &group, 1).await, ["carol too"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_owner_deletes_a_group_and_every_member_device_is_told() {
    let Trio { server: _server, alice, mut bob, mut bob2, mut carol, group } = trio().await;
    assert_eq!(refusal(bob.client.delete_group(&group).await), (403, "forbidden".into()));
    alice.client.delete_group(&group).await.unwrap();
    for who in [&mut bob, &mut bob2, &mut carol] {
        roster_change(who, &group, "deleted").await;
        let info = who.client.group_info(&group).await.unwrap();
        assert_eq!(info.state, GroupState::Left, "{}: {info:?}", who.name);
        assert!(who.client.send_text(&group, "anyone?").await.is_err(), "{} could still send", who.name);
    }
    assert_eq!(alice.client.group_info(&group).await.unwrap().state, GroupState::Left);
    assert!(alice.client.groups().await.unwrap().iter().all(|g| g.group != group), "a deleted group is not listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_may_add_others_once_an_admin_allows_it() {
    let Trio { server, alice, bob, bob2: _bob2, carol: _carol, group } = trio().await;
    let dave = TestClient::register(&server, "dave").await;
    assert_eq!(refusal(bob.client.add_members(&group, &[&dave.name]).await), (403, "forbidden".into()));
    assert_eq!(refusal(bob.client.set_members_can_add(&group, true).await), (403, "forbidden".into()));
    let info = alice.client.set_members_can_add(&group, true).await.unwrap();
    assert!(info.members_can_add, "{info:?}");
    let info = bob.client.add_members(&group, &[&dave.name]).await.unwrap();
    assert!(info.members.iter().any(|m| m.username == dave.name), "{info:?}");
    let info = alice.client.set_members_can_add(&group, false).await.unwrap();
    assert!(!info.members_can_add, "{info:?}");
    let erin = TestClient::register(&server, "erin").await;
    assert_eq!(refusal(bob.client.add_members(&group, &[&erin.name]).await), (403, "forbidden".into()));
}
