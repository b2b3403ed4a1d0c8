//! Groups end to end, against the real hushd: roles on REST, non-members refused on REST and
//! WebSocket, distributions before messages, rotation by epoch, every member device getting
//! every message once in one order (offline members included), crash safety, one stored copy,
//! and members on another node.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hush_e2e::cluster::{RedisServer, ScratchDb, two_nodes};
use hush_e2e::{
    Event, RestClient, TestAccount, TestDevice, TestServer, WsClient, distribute_request, group_send_request, message,
    recipient, to_member_devices,
};
use hush_wire::api::{CreateGroupRequest, GroupInfo, GroupList, GroupRole, RosterChangeResult, UpdateGroupRequest};
use hush_wire::frames::{Envelope, EnvelopeKind, RosterChange, SendErrorCode, roster_change};
use prost::Message as _;
use uuid::Uuid;

/// A server whose send rate no test reaches.
async fn server() -> TestServer {
    TestServer::builder().args(["--rate-burst", "10000", "--rate-per-second", "10000"]).start().await
}

/// Reads envelopes until `QueueEmpty` (acking each) and returns them.
async fn drain(ws: &mut WsClient) -> Vec<Envelope> {
    let mut got = Vec::new();
    loop {
        match ws.next_event().await {
            Event::QueueEmpty => return got,
            Event::Envelope(e) => {
                ws.ack(&[e.seq]).await;
                got.push(e);
            }
        }
    }
}

/// Connects as `device` and reads (and acks) its backlog.
async fn online(server: &TestServer, device: &TestDevice) -> WsClient {
    let mut ws = WsClient::connect(server, device).await;
    drain(&mut ws).await;
    ws
}

/// Reads `n` envelopes (acking each).
async fn take(ws: &mut WsClient, n: usize) -> Vec<Envelope> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let e = ws.next_envelope().await;
        ws.ack(&[e.seq]).await;
        got.push(e);
    }
    got
}

fn roster_change(e: &Envelope) -> RosterChange {
    assert_eq!(e.kind(), EnvelopeKind::RosterChange, "expected a roster change, got {e:?}");
    RosterChange::decode(e.content.as_ref()).unwrap_or_else(|err| panic!("undecodable RosterChange: {err}"))
}

fn group_of(e: &Envelope) -> Uuid {
    Uuid::from_slice(&e.group_id).unwrap_or_else(|_| panic!("group envelope without a group id: {e:?}"))
}

/// Distributes `sender`'s sender key to every other device of `members` for `epoch`.
async fn distribute_all(ws: &mut WsClient, sender: &TestDevice, group: Uuid, epoch: u64, members: &[&TestAccount]) {
    ws.distribute_ok(distribute_request(group, epoch, to_member_devices(sender, members))).await;
}

#[tokio::test]
async fn groups_roles_are_enforced_on_every_change() {
    let server = TestServer::builder().args(["--max-group-members", "4"]).start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let carol = TestAccount::register(&server, "carol").await;
    let dave = TestAccount::register(&server, "dave").await;
    let erin = TestAccount::register(&server, "erin").await;
    let group = rest.new_group(alice.primary(), &[&bob, &carol]).await;
    assert_eq!(group.max_members, 4);
    let g = group.group_id;
    rest.set_role(alice.primary(), g, bob.account_id, GroupRole::Admin).await.json::<RosterChangeResult>(200);
    let title = UpdateGroupRequest { title: Some(vec![9].into()), ..UpdateGroupRequest::default() };

    // Members: no adding (unless allowed), no settings, no removing others, no roles, no delete.
    rest.add_members(carol.primary(), g, &[dave.account_id]).await.assert_error(403, "forbidden");
    rest.update_group(carol.primary(), g, &title).await.assert_error(403, "forbidden");
    rest.remove_member(carol.primary(), g, bob.account_id).await.assert_error(403, "forbidden");
    rest.set_role(carol.primary(), g, carol.account_id, GroupRole::Owner).await.assert_error(403, "forbidden");
    rest.delete_group(carol.primary(), g).await.assert_error(403, "forbidden");
    // Admins: no removing owners, no roles, no delete.
    rest.remove_member(bob.primary(), g, alice.account_id).await.assert_error(403, "forbidden");
    rest.set_role(bob.primary(), g, carol.account_id, GroupRole::Admin).await.assert_error(403, "forbidden");
    rest.delete_group(bob.primary(), g).await.assert_error(403, "forbidden");
    // The last owner stays.
    rest.remove_member(alice.primary(), g, alice.account_id).await.assert_error(409, "last_owner");
    rest.set_role(alice.primary(), g, alice.account_id, GroupRole::Member).await.assert_error(409, "last_owner");
    // Adding: members once, existing accounts, within the limit.
    rest.add_members(alice.primary(), g, &[carol.account_id]).await.assert_error(409, "already_member");
    rest.add_members(alice.primary(), g, &[Uuid::new_v4()]).await.assert_error(404, "unknown_account");
    rest.add_members(alice.primary(), g, &[dave.account_id, erin.account_id]).await.assert_error(409, "group_full");
    rest.remove_member(alice.primary(), g, dave.account_id).await.assert_error(404, "not_in_group");
    rest.add_members(alice.primary(), g, &[]).await.assert_error(400, "invalid_request");
    let huge = UpdateGroupRequest { avatar: Some(vec![0; 64 * 1024 + 1].into()), ..UpdateGroupRequest::default() };
    rest.update_group(alice.primary(), g, &huge).await.assert_error(413, "blob_too_large");

    // What each role may do.
    rest.update_group(bob.primary(), g, &title).await.json::<RosterChangeResult>(200);
    rest.add_members(bob.primary(), g, &[dave.account_id]).await.json::<RosterChangeResult>(200);
    rest.remove_member(bob.primary(), g, dave.account_id).await.json::<RosterChangeResult>(200);
    let open = UpdateGroupRequest { members_can_add: Some(true), ..UpdateGroupRequest::default() };
    rest.update_group(alice.primary(), g, &open).await.json::<RosterChangeResult>(200);
    rest.add_members(carol.primary(), g, &[dave.account_id]).await.json::<RosterChangeResult>(200);
    let left: RosterChangeResult = rest.remove_member(dave.primary(), g, dave.account_id).await.json(200);
    rest.set_role(alice.primary(), g, bob.account_id, GroupRole::Owner).await.json::<RosterChangeResult>(200);
    rest.remove_member(alice.primary(), g, alice.account_id).await.json::<RosterChangeResult>(200);
    let info: GroupInfo = rest.get_group(bob.primary(), g).await.json(200);
    assert_eq!(
        info.members.iter().map(|m| (m.account_id, m.role)).collect::<Vec<_>>(),
        [(bob.account_id, GroupRole::Owner), (carol.account_id, GroupRole::Member)]
    );
    assert_eq!(info.title.0, vec![9]);
    assert!(info.epoch > left.epoch, "leaving rotates");
    rest.delete_group(bob.primary(), g).await.assert_status(204);
    rest.get_group(bob.primary(), g).await.assert_error(404, "not_a_member");
}

#[tokio::test]
async fn groups_a_non_member_is_refused_on_rest_and_websocket() {
    let server = server().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mallory = TestAccount::register(&server, "mallory").await;
    let g = rest.new_group(alice.primary(), &[&bob]).await.group_id;
    let m = mallory.primary();
    for unknown in [g, Uuid::new_v4()] {
        rest.get_group(m, unknown).await.assert_error(404, "not_a_member");
        let title = UpdateGroupRequest { title: Some(vec![1].into()), ..UpdateGroupRequest::default() };
        rest.update_group(m, unknown, &title).await.assert_error(404, "not_a_member");
        rest.add_members(m, unknown, &[mallory.account_id]).await.assert_error(404, "not_a_member");
        rest.remove_member(m, unknown, bob.account_id).await.assert_error(404, "not_a_member");
        rest.set_role(m, unknown, mallory.account_id, GroupRole::Owner).await.assert_error(404, "not_a_member");
        rest.delete_group(m, unknown).await.assert_error(404, "not_a_member");
    }
    let list: GroupList = rest.list_groups(m).await.json(200);
    assert!(list.groups.is_empty());

    let mut ws = WsClient::connect_drained(&server, m).await;
    let err = ws.group_send_err(group_send_request(g, 1, b"hi".to_vec()), SendErrorCode::NotAMember).await;
    assert!(err.mismatches.is_empty(), "a non-member learns nothing of the roster");
    let to_bob = vec![recipient(bob.account_id, vec![message(bob.primary(), b"skdm".to_vec())])];
    ws.distribute_err(distribute_request(g, 1, to_bob), SendErrorCode::NotAMember).await;
    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    let backlog = drain(&mut bob_ws).await;
    assert_eq!(backlog.len(), 1, "bob got the created change and nothing from mallory");
    assert_eq!(roster_change(&backlog[0]).kind(), roster_change::Kind::Created);
}

#[tokio::test]
async fn groups_missing_distributions_names_exactly_the_devices_lacking_one() {
    let server = server().await;
    let rest = RestClient::new(&server);
    let mut alice = TestAccount::register(&server, "alice").await;
    let alice2 = alice.add_device(&server).await;
    let mut bob = TestAccount::register(&server, "bob").await;
    bob.add_device(&server).await;
    let carol = TestAccount::register(&server, "carol").await;
    let info = rest.new_group(alice.primary(), &[&bob, &carol]).await;
    let (g, epoch) = (info.group_id, info.epoch);
    let mut ws = online(&server, alice.primary()).await;
    let missing = |err: &hush_wire::frames::SendError| -> Vec<(Uuid, Vec<u32>)> {
        err.mismatches
            .iter()
            .map(|m| (Uuid::from_slice(&m.account_id).unwrap_or_default(), m.missing.clone()))
            .collect()
    };
    let send = || group_send_request(g, epoch, b"hello".to_vec());
    let err = ws.group_send_err(send(), SendErrorCode::MissingDistributions).await;
    assert_eq!(err.current_epoch, epoch);
    let mut expected =
        vec![(alice.account_id, vec![alice2.device_id]), (bob.account_id, vec![1, 2]), (carol.account_id, vec![1])];
    expected.sort();
    let mut got = missing(&err);
    got.sort();
    assert_eq!(got, expected, "every other member device, the sender's own other device included");

    // Distributing to some of them leaves exactly the others.
    let some = vec![recipient(bob.account_id, vec![message(bob.device(2), b"skdm".to_vec())])];
    ws.distribute_ok(distribute_request(g, epoch, some)).await;
    let err = ws.group_send_err(send(), SendErrorCode::MissingDistributions).await;
    let mut got = missing(&err);
    got.sort();
    for entry in &mut expected {
        if entry.0 == bob.account_id {
            entry.1 = vec![1];
        }
    }
    assert_eq!(got, expected);

    // A distribution to a non-member device or with a stale registration id is refused.
    let mut stale = message(carol.primary(), b"skdm".to_vec());
    stale.registration_id ^= 1;
    let err = ws
        .distribute_err(
            distribute_request(g, epoch, vec![recipient(carol.account_id, vec![stale])]),
            SendErrorCode::DeviceMismatch,
        )
        .await;
    assert_eq!(err.mismatches[0].stale, [1]);
    let mut extra = message(carol.primary(), b"skdm".to_vec());
    extra.device_id = 9;
    let err = ws
        .distribute_err(
            distribute_request(g, epoch, vec![recipient(carol.account_id, vec![extra])]),
            SendErrorCode::DeviceMismatch,
        )
        .await;
    assert_eq!(err.mismatches[0].extra, [9]);
    ws.distribute_err(
        distribute_request(g, epoch + 1, to_member_devices(alice.primary(), &[&carol])),
        SendErrorCode::StaleEpoch,
    )
    .await;

    distribute_all(&mut ws, alice.primary(), g, epoch, &[&alice, &bob, &carol]).await;
    let ok = ws.group_send_ok(send()).await;
    assert_eq!(ok.group_seq, info.seq + 1);
}

#[tokio::test]
async fn groups_every_member_device_gets_every_message_once_in_the_same_order() {
    let server = server().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let mut bob = TestAccount::register(&server, "bob").await;
    bob.add_device(&server).await;
    let carol = TestAccount::register(&server, "carol").await;
    let members = [&alice, &bob, &carol];
    let info = rest.new_group(alice.primary(), &[&bob, &carol]).await;
    let g = info.group_id;

    // Carol stays offline during the sends.
    let mut alice_ws = WsClient::connect(&server, alice.primary()).await;
    let mut bob1 = WsClient::connect(&server, bob.device(1)).await;
    let mut bob2 = WsClient::connect(&server, bob.device(2)).await;
    for ws in [&mut alice_ws, &mut bob1, &mut bob2] {
        let backlog = drain(ws).await;
        assert_eq!(backlog.len(), 1);
        assert_eq!((backlog[0].group_seq, roster_change(&backlog[0]).kind()), (1, roster_change::Kind::Created));
    }
    distribute_all(&mut alice_ws, alice.primary(), g, info.epoch, &members).await;
    distribute_all(&mut bob1, bob.device(1), g, info.epoch, &members).await;

    let mut sent: Vec<(u64, Vec<u8>, (Uuid, u32))> = Vec::new();
    for i in 0..6 {
        let (ws, who) = if i % 2 == 0 { (&mut alice_ws, alice.primary()) } else { (&mut bob1, bob.device(1)) };
        let content = format!("message {i}").into_bytes();
        let ok = ws.group_send_ok(group_send_request(g, info.epoch, content.clone())).await;
        sent.push((ok.group_seq, content, (who.account_id, who.device_id)));
    }
    let seqs: Vec<u64> = sent.iter().map(|s| s.0).collect();
    assert_eq!(seqs, (2..=7).collect::<Vec<_>>(), "group seqs follow the roster change, one per message");

    let mut carol_ws = WsClient::connect(&server, carol.primary()).await;
    let carol_got = drain(&mut carol_ws).await;
    let devices: Vec<(&TestDevice, Vec<Envelope>)> = vec![
        (alice.primary(), take(&mut alice_ws, 1 + 3).await),
        (bob.device(1), take(&mut bob1, 1 + 3).await),
        (bob.device(2), take(&mut bob2, 2 + 6).await),
        (carol.primary(), carol_got),
    ];
    for (device, envelopes) in &devices {
        let label = format!("{}.{}", device.account_id, device.device_id);
        let distributions = envelopes.iter().filter(|e| e.kind() == EnvelopeKind::SealedSender).count();
        let group: Vec<&Envelope> = envelopes.iter().filter(|e| e.kind() == EnvelopeKind::GroupMessage).collect();
        let expected: Vec<(u64, Vec<u8>)> =
            sent.iter().filter(|s| s.2 != (device.account_id, device.device_id)).map(|s| (s.0, s.1.clone())).collect();
        let got: Vec<(u64, Vec<u8>)> = group.iter().map(|e| (e.group_seq, e.content.to_vec())).collect();
        assert_eq!(got, expected, "{label}: every message from the others, once, in group-seq order");
        assert!(group.iter().all(|e| group_of(e) == g));
        let own = device.account_id == alice.account_id || device.device_id == 1 && device.account_id == bob.account_id;
        assert_eq!(distributions, if own { 1 } else { 2 }, "{label}: one distribution per other sender");
        let first_message = envelopes.iter().position(|e| e.kind() == EnvelopeKind::GroupMessage);
        let last_distribution = envelopes.iter().rposition(|e| e.kind() == EnvelopeKind::SealedSender);
        assert!(last_distribution < first_message, "{label}: distributions come before the messages they open");
    }
    // Nothing more comes: a fresh send is the next thing each device sees.
    let ok = alice_ws.group_send_ok(group_send_request(g, info.epoch, b"last".to_vec())).await;
    assert_eq!(bob2.next_envelope().await.group_seq, ok.group_seq);
    assert_eq!(carol_ws.next_envelope().await.group_seq, ok.group_seq);
}

#[tokio::test]
async fn groups_after_a_removal_the_old_epoch_is_refused_and_the_removed_member_gets_nothing_more() {
    let server = server().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let carol = TestAccount::register(&server, "carol").await;
    let info = rest.new_group(alice.primary(), &[&bob, &carol]).await;
    let g = info.group_id;
    let mut alice_ws = online(&server, alice.primary()).await;
    let mut carol_ws = WsClient::connect(&server, carol.primary()).await;
    drain(&mut carol_ws).await;
    distribute_all(&mut alice_ws, alice.primary(), g, info.epoch, &[&bob, &carol]).await;
    alice_ws.group_send_ok(group_send_request(g, info.epoch, b"before".to_vec())).await;

    let removed: RosterChangeResult = rest.remove_member(alice.primary(), g, carol.account_id).await.json(200);
    assert!(removed.epoch > info.epoch);
    let err =
        alice_ws.group_send_err(group_send_request(g, info.epoch, b"stale".to_vec()), SendErrorCode::StaleEpoch).await;
    assert_eq!(err.current_epoch, removed.epoch);
    let err = alice_ws
        .group_send_err(
            group_send_request(g, removed.epoch, b"no key yet".to_vec()),
            SendErrorCode::MissingDistributions,
        )
        .await;
    assert_eq!(err.mismatches.len(), 1, "only bob is left to distribute to");
    distribute_all(&mut alice_ws, alice.primary(), g, removed.epoch, &[&bob]).await;
    let after = alice_ws.group_send_ok(group_send_request(g, removed.epoch, b"after".to_vec())).await;
    assert!(after.group_seq > removed.group_seq);

    let got = take(&mut carol_ws, 3).await;
    assert_eq!(got[0].kind(), EnvelopeKind::SealedSender);
    assert_eq!(got[1].content.as_ref(), b"before");
    let change = roster_change(&got[2]);
    assert_eq!((change.kind(), got[2].group_seq), (roster_change::Kind::Removed, removed.group_seq));
    assert_eq!(change.accounts, [bytes::Bytes::from(carol.account_id.as_bytes().to_vec())]);
    // Nothing after the removal: a marker sent to carol directly is the next thing she sees.
    alice_ws.send_ok(hush_e2e::send_request(vec![hush_e2e::to_all_devices(&carol, b"marker")])).await;
    assert_eq!(carol_ws.next_envelope().await.content.as_ref(), b"marker");
    rest.get_group(carol.primary(), g).await.assert_error(404, "not_a_member");
    let mut carol_again = online(&server, carol.primary()).await;
    carol_again.group_send_err(group_send_request(g, removed.epoch, b"hi".to_vec()), SendErrorCode::NotAMember).await;
}

#[tokio::test]
async fn groups_a_kill9_between_send_ack_and_delivery_loses_nothing() {
    let mut server = server().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let info = rest.new_group(alice.primary(), &[&bob]).await;
    let mut alice_ws = online(&server, alice.primary()).await;
    distribute_all(&mut alice_ws, alice.primary(), info.group_id, info.epoch, &[&bob]).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        let content = format!("durable {i}").into_bytes();
        let ok = alice_ws.group_send_ok(group_send_request(info.group_id, info.epoch, content.clone())).await;
        acked.push((ok.group_seq, content));
    }
    server.kill9().await;
    drop(alice_ws);
    server.restart().await;
    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    let got: Vec<(u64, Vec<u8>)> = drain(&mut bob_ws)
        .await
        .into_iter()
        .filter(|e| e.kind() == EnvelopeKind::GroupMessage)
        .map(|e| (e.group_seq, e.content.to_vec()))
        .collect();
    assert_eq!(got, acked, "every acknowledged group message survives, in order");
}

#[tokio::test]
async fn groups_the_database_holds_one_copy_of_each_group_message() {
    use sqlx::Connection as _;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    let server = server().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let mut bob = TestAccount::register(&server, "bob").await;
    bob.add_device(&server).await;
    let carol = TestAccount::register(&server, "carol").await;
    let info = rest.new_group(alice.primary(), &[&bob, &carol]).await;
    let mut alice_ws = online(&server, alice.primary()).await;
    distribute_all(&mut alice_ws, alice.primary(), info.group_id, info.epoch, &[&bob, &carol]).await;
    let contents: Vec<Vec<u8>> = (0..3).map(|_| hush_e2e::random_bytes(700)).collect();
    for content in &contents {
        alice_ws.group_send_ok(group_send_request(info.group_id, info.epoch, content.clone())).await;
    }

    let opts = SqliteConnectOptions::new().filename(server.db_path()).read_only(true);
    let mut db = SqliteConnection::connect_with(&opts)
        .await
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", server.db_path().display()));
    for content in &contents {
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM group_messages WHERE content = ?")
            .bind(content.as_slice())
            .fetch_one(&mut db)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored, 1, "one stored copy of each group message");
        let in_mailboxes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes WHERE content = ?")
            .bind(content.as_slice())
            .fetch_one(&mut db)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(in_mailboxes, 0, "mailboxes hold references, not copies");
    }
    let references: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes WHERE group_id IS NOT NULL AND kind = ?")
        .bind(EnvelopeKind::GroupMessage as i32)
        .fetch_one(&mut db)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(references, 3 * 3, "one reference per message per other member device");
}

#[tokio::test]
async fn groups_a_message_reaches_a_member_on_another_node_at_once() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let (a, b) = two_nodes(&db, &redis, "30").await;
    let alice = TestAccount::register(&a, "alice").await;
    let bob = TestAccount::register(&b, "bob").await;
    let info = RestClient::new(&a).new_group(alice.primary(), &[&bob]).await;
    let mut bob_ws = WsClient::connect(&b, bob.primary()).await;
    drain(&mut bob_ws).await;
    let mut alice_ws = online(&a, alice.primary()).await;
    distribute_all(&mut alice_ws, alice.primary(), info.group_id, info.epoch, &[&bob]).await;
    bob_ws.timeout = Duration::from_millis(900);
    assert_eq!(take(&mut bob_ws, 1).await[0].kind(), EnvelopeKind::SealedSender);
    let mut seen = HashSet::new();
    for i in 0..3 {
        let content = format!("across {i}").into_bytes();
        let sent = Instant::now();
        let ok = alice_ws.group_send_ok(group_send_request(info.group_id, info.epoch, content.clone())).await;
        let e = take(&mut bob_ws, 1).await.remove(0);
        assert!(sent.elapsed() < Duration::from_millis(900), "took {:?}: not woken through Redis", sent.elapsed());
        assert_eq!((e.group_seq, e.content.to_vec()), (ok.group_seq, content));
        assert!(seen.insert(e.group_seq));
    }
    // A roster change made on node A reaches bob on node B too.
    let title = UpdateGroupRequest { title: Some(vec![7].into()), ..UpdateGroupRequest::default() };
    let done: RosterChangeResult =
        RestClient::new(&a).update_group(alice.primary(), info.group_id, &title).await.json(200);
    let e = take(&mut bob_ws, 1).await.remove(0);
    assert_eq!((roster_change(&e).kind(), e.group_seq), (roster_change::Kind::SettingsChanged, done.group_seq));
    let _ = CreateGroupRequest::default();
}
