//! Groups above `--group-fanout-read-above`, against real hushd processes: their messages
//! are read from the group stream (envelopes with seq 0 and a group seq, acknowledged by
//! group and seq) after each member device's cursor, the mailbox first, then the streams,
//! then `QueueEmpty`, all within one in-flight window; a group switches path at the roster
//! change that crosses the threshold without losing or repeating a group seq; a distribution
//! reaches a member before the message that needs it; a malformed ack closes the connection;
//! two nodes hand a stream message on with one Redis publish; offline members are woken.

use std::cell::Cell;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use hush_e2e::cluster::{RedisServer, ScratchDb, two_nodes_with};
use hush_e2e::push::{FakePush, PushRequest};
use hush_e2e::{
    Event, RestClient, TestAccount, TestDevice, TestServer, TestServerBuilder, WsClient, distribute_request,
    group_send_request, message, random_bytes, recipient, send_request, stream_position, to_all_devices,
    to_member_devices,
};
use hush_wire::api::{PushTargetBody, RosterChangeResult};
use hush_wire::close;
use hush_wire::frames::{
    Ack, Envelope, EnvelopeKind, GroupAck, RecipientMessages, RosterChange, SendErrorCode, roster_change, send_response,
};
use prost::Message as _;
use uuid::Uuid;

/// Flags of a server whose send rate no test reaches and which reads groups of more than
/// `read_above` members from their stream.
fn flags(read_above: u32) -> Vec<String> {
    ["--rate-burst", "10000", "--rate-per-second", "10000", "--group-fanout-read-above"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([read_above.to_string()])
        .collect()
}

fn builder(read_above: u32) -> TestServerBuilder {
    TestServer::builder().args(flags(read_above))
}

/// The next envelope, acknowledged as its kind asks.
async fn next_acked(ws: &mut WsClient) -> Envelope {
    let e = ws.next_envelope().await;
    ws.ack_envelope(&e).await;
    e
}

/// Envelopes until `QueueEmpty`, each acknowledged.
async fn drain(ws: &mut WsClient) -> Vec<Envelope> {
    let mut got = Vec::new();
    loop {
        match ws.next_event().await {
            Event::QueueEmpty => return got,
            Event::Envelope(e) => {
                ws.ack_envelope(&e).await;
                got.push(e);
            }
        }
    }
}

/// Envelopes until `QueueEmpty`, none acknowledged.
async fn drain_unacked(ws: &mut WsClient) -> Vec<Envelope> {
    let mut got = Vec::new();
    while let Event::Envelope(e) = ws.next_event().await {
        got.push(e);
    }
    got
}

/// A round trip through the writer: a send under no epoch the group has is answered only
/// after every ack this connection sent before it has been applied.
async fn settle(ws: &mut WsClient, group: Uuid) {
    ws.group_send_err(group_send_request(group, u64::MAX, b"settle".to_vec()), SendErrorCode::StaleEpoch).await;
}

/// `(group seq, read from the stream)` of each envelope of `group`, in arrival order.
fn paths(envelopes: &[Envelope], group: Uuid) -> Vec<(u64, bool)> {
    envelopes
        .iter()
        .filter(|e| e.group_id.as_ref() == group.as_bytes())
        .map(|e| {
            let stream = stream_position(e).is_some();
            assert!(stream || e.seq > 0, "a group envelope is either a stream or a mailbox one: {e:?}");
            (e.group_seq, stream)
        })
        .collect()
}

fn roster_kind(e: &Envelope) -> roster_change::Kind {
    assert_eq!(e.kind(), EnvelopeKind::RosterChange, "expected a roster change, got {e:?}");
    RosterChange::decode(e.content.as_ref()).unwrap_or_else(|err| panic!("undecodable RosterChange: {err}")).kind()
}

fn label(d: &TestDevice) -> String {
    format!("{}.{}", d.account_id, d.device_id)
}

/// A distribution from `sender` to every other device of `members` whose content names the
/// sender and the epoch, so a test can tell which message it unlocks.
fn key_of(sender: &TestDevice, epoch: u64, members: &[&TestAccount]) -> Vec<RecipientMessages> {
    let content = format!("key {} e{epoch}", label(sender)).into_bytes();
    members
        .iter()
        .filter_map(|a| {
            let messages: Vec<_> = a
                .devices
                .iter()
                .filter(|d| !(d.account_id == sender.account_id && d.device_id == sender.device_id))
                .map(|d| message(d, content.clone()))
                .collect();
            (!messages.is_empty()).then(|| recipient(a.account_id, messages))
        })
        .collect()
}

/// Follows a device's envelopes: every group message must come after the distribution of
/// its sender for its epoch (`key ...` unlocks `msg ...` of the same sender and epoch).
#[derive(Default)]
struct KeyOrder {
    keys: HashSet<String>,
    messages: usize,
}

impl KeyOrder {
    fn see(&mut self, who: &str, e: &Envelope) {
        let text = String::from_utf8_lossy(&e.content).into_owned();
        if let Some(key) = text.strip_prefix("key ") {
            assert!(e.seq > 0, "{who}: a distribution is a mailbox envelope");
            self.keys.insert(key.to_owned());
        } else if let Some(needs) = text.strip_prefix("msg ") {
            assert!(
                self.keys.contains(needs),
                "{who}: group seq {} ({text:?}) arrived before the distribution it needs",
                e.group_seq
            );
            self.messages += 1;
        }
    }
}

#[tokio::test]
async fn large_groups_members_read_the_stream_and_get_exactly_the_unacked_messages_again() {
    let server = builder(2).start().await;
    let rest = RestClient::new(&server);
    let mut alice = TestAccount::register(&server, "alice").await;
    alice.add_device(&server).await;
    let mut bob = TestAccount::register(&server, "bob").await;
    bob.add_device(&server).await;
    let carol = TestAccount::register(&server, "carol").await;
    let info = rest.new_group(alice.primary(), &[&bob, &carol]).await;
    let g = info.group_id;

    // Carol stays offline; the others read the creation from the stream.
    let mut a1 = WsClient::connect(&server, alice.device(1)).await;
    let mut a2 = WsClient::connect(&server, alice.device(2)).await;
    let mut b1 = WsClient::connect(&server, bob.device(1)).await;
    let mut b2 = WsClient::connect(&server, bob.device(2)).await;
    for ws in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let backlog = drain(ws).await;
        assert_eq!(paths(&backlog, g), [(1, true)], "the creation is the first stream envelope");
        assert_eq!(roster_kind(&backlog[0]), roster_change::Kind::Created);
    }
    a1.distribute_ok(distribute_request(g, info.epoch, to_member_devices(alice.device(1), &[&alice, &bob, &carol])))
        .await;
    for ws in [&mut a2, &mut b1, &mut b2] {
        let e = next_acked(ws).await;
        assert!(e.seq > 0 && e.kind() == EnvelopeKind::SealedSender, "a distribution is a mailbox envelope: {e:?}");
    }
    let mut sent = Vec::new();
    for i in 0..5 {
        let content = random_bytes(100 + i);
        let ok = a1.group_send_ok(group_send_request(g, info.epoch, content.clone())).await;
        sent.push((ok.group_seq, content));
    }
    assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), (2..=6).collect::<Vec<_>>());
    for (who, ws) in [("alice.2", &mut a2), ("bob.1", &mut b1), ("bob.2", &mut b2)] {
        for (seq, content) in &sent {
            let e = ws.next_envelope().await;
            assert_eq!(stream_position(&e), Some((g, *seq)), "{who}: a stream envelope (seq 0, group seq): {e:?}");
            assert_eq!((e.kind(), e.content.as_ref()), (EnvelopeKind::GroupMessage, content.as_slice()), "{who}");
        }
    }
    // Nothing of the group is in a mailbox: the messages are stored once, referenced by none.
    {
        use sqlx::Connection as _;
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(server.db_path()).read_only(true);
        let mut db = sqlx::sqlite::SqliteConnection::connect_with(&opts).await.unwrap_or_else(|e| panic!("{e}"));
        let id = g.as_bytes().to_vec();
        let refs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes WHERE group_id = ?")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(refs, 0, "no mailbox references a message of a stream-read group");
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM group_messages WHERE group_id = ?")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored, 6, "the creation and five messages, once each");
    }

    // bob.1 acknowledges a prefix, bob.2 leaves a gap, alice.2 everything.
    b1.ack_groups(&[(g, 2), (g, 3)]).await;
    b2.ack_groups(&[(g, 2), (g, 3), (g, 5)]).await;
    a2.ack_groups(&(2..=6).map(|s| (g, s)).collect::<Vec<_>>()).await;
    for ws in [&mut b1, &mut b2, &mut a2] {
        settle(ws, g).await;
    }
    settle(&mut a1, g).await;
    assert_eq!(a1.buffered_events(), 0, "the sender is not pushed its own messages");
    b1.close().await;
    b2.close().await;
    a2.close().await;
    a1.close().await;
    let mut b1 = WsClient::connect(&server, bob.device(1)).await;
    assert_eq!(paths(&drain_unacked(&mut b1).await, g), [(4, true), (5, true), (6, true)], "exactly the unacked");
    let mut b2 = WsClient::connect(&server, bob.device(2)).await;
    let again = drain_unacked(&mut b2).await;
    assert_eq!(paths(&again, g), [(4, true), (5, true), (6, true)], "the cursor stops below the first unacked seq");
    let mut a2 = WsClient::connect(&server, alice.device(2)).await;
    a2.expect_queue_empty().await;
    let mut a1 = WsClient::connect(&server, alice.device(1)).await;
    for e in drain_unacked(&mut a1).await {
        let own = sent.iter().any(|(seq, c)| stream_position(&e) == Some((g, *seq)) && e.content.as_ref() == c);
        assert!(own, "the sender may be handed only its own messages back: {e:?}");
    }

    // Carol, offline all along: her mailbox first, then the stream in group order.
    let mut carol_ws = WsClient::connect(&server, carol.primary()).await;
    let backlog = drain(&mut carol_ws).await;
    assert_eq!(backlog.len(), 7);
    assert!(backlog[0].seq > 0 && backlog[0].kind() == EnvelopeKind::SealedSender, "the distribution comes first");
    assert_eq!(paths(&backlog, g), (1..=6).map(|s| (s, true)).collect::<Vec<_>>());

    // A member's new device reads from the group's current seq.
    let bob3 = bob.add_device(&server).await;
    let mut b3 = WsClient::connect_drained(&server, &bob3).await;
    let to_b3 = vec![recipient(bob.account_id, vec![message(&bob3, b"key".to_vec())])];
    a1.distribute_ok(distribute_request(g, info.epoch, to_b3)).await;
    let ok = a1.group_send_ok(group_send_request(g, info.epoch, b"for the new device".to_vec())).await;
    let got = [next_acked(&mut b3).await, next_acked(&mut b3).await];
    assert!(got[0].seq > 0, "the distribution");
    assert_eq!(stream_position(&got[1]), Some((g, ok.group_seq)), "then the new message, nothing older");
}

#[tokio::test]
async fn large_groups_a_stream_backlog_stops_at_the_window_until_acked() {
    const N: usize = 300;
    let server = builder(2).start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let carol = TestAccount::register(&server, "carol").await;
    let info = RestClient::new(&server).new_group(alice.primary(), &[&bob, &carol]).await;
    let g = info.group_id;
    let mut a = WsClient::connect(&server, alice.primary()).await;
    drain(&mut a).await;
    a.distribute_ok(distribute_request(g, info.epoch, to_member_devices(alice.primary(), &[&bob, &carol]))).await;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(a.submit_group_send(group_send_request(g, info.epoch, format!("w{i}").into_bytes())).await);
    }
    for (i, id) in ids.into_iter().enumerate() {
        let resp = a.response(id).await;
        assert_eq!(a.expect_ok(resp).group_seq, i as u64 + 2);
    }

    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    let window = bob_ws.auth_ok().map(|ok| ok.window as usize).unwrap_or(0);
    assert_eq!(window, 256);
    let mut first = Vec::new();
    for _ in 0..window {
        first.push(bob_ws.next_envelope().await);
    }
    settle(&mut bob_ws, g).await;
    assert_eq!(bob_ws.buffered_events(), 0, "more than {window} unacknowledged envelopes were sent");
    assert!(first[0].seq > 0, "the mailbox (the distribution) comes first and counts in the window");
    let read = paths(&first, g);
    assert_eq!(read, (1..window as u64).map(|s| (s, true)).collect::<Vec<_>>());
    let positions: Vec<GroupAck> =
        read.iter().map(|&(seq, _)| GroupAck { group_id: g.as_bytes().to_vec().into(), seq }).collect();
    bob_ws.send_ack(Ack { seqs: vec![first[0].seq], groups: positions }).await;
    let rest = drain(&mut bob_ws).await;
    assert_eq!(paths(&rest, g), (window as u64..=N as u64 + 1).map(|s| (s, true)).collect::<Vec<_>>());
}

#[tokio::test]
async fn large_groups_switch_paths_both_ways_without_losing_or_repeating_a_group_seq() {
    const LAST: &[u8] = b"last";
    let server = builder(3).start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let mut bob = TestAccount::register(&server, "bob").await;
    bob.add_device(&server).await;
    let carol = TestAccount::register(&server, "carol").await;
    let dave = TestAccount::register(&server, "dave").await;
    let info = rest.new_group(alice.primary(), &[&bob, &carol]).await;
    let (g, epoch) = (info.group_id, info.epoch);
    let mut a = WsClient::connect(&server, alice.primary()).await;
    let mut b1 = WsClient::connect(&server, bob.device(1)).await;
    let mut b2 = WsClient::connect(&server, bob.device(2)).await;
    let mut c = WsClient::connect(&server, carol.primary()).await;
    for ws in [&mut a, &mut b1, &mut b2, &mut c] {
        assert_eq!(paths(&drain(ws).await, g), [(1, false)], "three members: the mailbox path");
    }
    let mut d = WsClient::connect_drained(&server, dave.primary()).await;
    a.distribute_ok(distribute_request(g, epoch, to_member_devices(alice.primary(), &[&bob, &carol]))).await;
    for ws in [&mut b1, &mut b2, &mut c] {
        next_acked(ws).await;
        settle(ws, g).await;
    }
    // bob.2 and carol are offline while the group grows.
    b2.close().await;
    c.close().await;

    let added_at = Cell::new(0u64);
    let (start_add, add_now) = tokio::sync::oneshot::channel::<()>();
    let sender = async {
        let mut accepted = Vec::new();
        let mut start_add = Some(start_add);
        let mut i = 0;
        let mut after_add = 0;
        while after_add < 3 {
            if i == 3
                && let Some(tx) = start_add.take()
            {
                let _ = tx.send(());
            }
            let content = if added_at.get() > 0 && after_add == 2 { LAST.to_vec() } else { format!("flow {i}").into() };
            let resp = a.group_send(group_send_request(g, epoch, content.clone())).await;
            match resp.result {
                Some(send_response::Result::Ok(ok)) => accepted.push((ok.group_seq, content)),
                Some(send_response::Result::Error(e)) if e.code() == SendErrorCode::MissingDistributions => {
                    a.distribute_ok(distribute_request(g, epoch, vec![to_all_devices(&dave, b"key for dave")])).await;
                    continue;
                }
                other => panic!("alice's group send: {other:?}"),
            }
            if added_at.get() > 0 && i >= 6 {
                after_add += 1;
            }
            i += 1;
        }
        accepted
    };
    let adder = async {
        let _ = add_now.await;
        let r: RosterChangeResult = rest.add_members(alice.primary(), g, &[dave.account_id]).await.json(200);
        added_at.set(r.group_seq);
    };
    async fn until_last(ws: &mut WsClient) -> Vec<Envelope> {
        let mut got = Vec::new();
        loop {
            let e = next_acked(ws).await;
            let last = e.kind() == EnvelopeKind::GroupMessage && e.content.as_ref() == LAST;
            got.push(e);
            if last {
                return got;
            }
        }
    }
    let (accepted, (), b1_got, d_got) = tokio::join!(sender, adder, until_last(&mut b1), until_last(&mut d));
    let added = added_at.get();
    let last = accepted.last().map_or(0, |s| s.0);
    let mut all: Vec<u64> = accepted.iter().map(|s| s.0).chain([added]).collect();
    all.sort_unstable();
    assert_eq!(all, (2..=last).collect::<Vec<_>>(), "the messages and the add take every seq after the creation");
    assert!(accepted.iter().any(|s| s.0 < added), "messages flowed before the add");
    let expected = |from: u64| -> Vec<(u64, bool)> { (from..=last).map(|s| (s, s >= added)).collect() };
    assert_eq!(paths(&b1_got, g), expected(2), "bob.1 (online): mailbox up to the add, then the stream");
    assert_eq!(paths(&d_got, g), expected(added), "dave reads from the change that added him");
    assert_eq!(
        roster_kind(&b1_got.iter().find(|e| e.group_seq == added).cloned().unwrap_or_default()),
        roster_change::Kind::Added
    );
    let mut b2 = WsClient::connect(&server, bob.device(2)).await;
    assert_eq!(paths(&drain(&mut b2).await, g), expected(2), "bob.2 (offline during the switch)");
    for ws in [&mut a, &mut b1, &mut b2, &mut d] {
        while ws.buffered_events() > 0 {
            next_acked(ws).await;
        }
        settle(ws, g).await;
    }

    // Shrinking back: carol's unread stream messages move into her mailbox before the change.
    let removed: RosterChangeResult = rest.remove_member(alice.primary(), g, dave.account_id).await.json(200);
    assert_eq!(removed.group_seq, last + 1);
    let mut c = WsClient::connect(&server, carol.primary()).await;
    let backlog = drain(&mut c).await;
    let want: Vec<(u64, bool)> = (2..=removed.group_seq).map(|s| (s, false)).collect();
    assert_eq!(paths(&backlog, g), want, "carol: every seq once, from her mailbox, the removal last");
    for (seq, content) in &accepted {
        let e = backlog.iter().find(|e| e.group_seq == *seq).cloned().unwrap_or_default();
        assert_eq!(e.content.as_ref(), content.as_slice(), "carol: group seq {seq}");
    }
    assert_eq!(roster_kind(backlog.last().unwrap_or(&Envelope::default())), roster_change::Kind::Removed);
    for ws in [&mut b1, &mut b2, &mut d] {
        let e = next_acked(ws).await;
        assert_eq!((e.group_seq, e.seq > 0), (removed.group_seq, true), "the removal from the mailbox");
    }
    // Back on the mailbox path, and the removed member reads nothing after its removal.
    a.distribute_ok(distribute_request(g, removed.epoch, to_member_devices(alice.primary(), &[&bob, &carol]))).await;
    let ok = a.group_send_ok(group_send_request(g, removed.epoch, b"after".to_vec())).await;
    for ws in [&mut b1, &mut b2, &mut c] {
        next_acked(ws).await;
        let e = next_acked(ws).await;
        assert_eq!(paths(std::slice::from_ref(&e), g), [(ok.group_seq, false)]);
    }
    a.send_ok(send_request(vec![to_all_devices(&dave, b"marker")])).await;
    assert_eq!(d.next_envelope().await.content.as_ref(), b"marker");
}

/// Each round, `sender` pipelines a distribution for a fresh group and the message that
/// needs it; `member` must get the distribution first.
#[tokio::test]
async fn large_groups_a_distribution_reaches_a_member_before_the_stream_message_live_and_on_replay() {
    let server = builder(2).start().await;
    let rest = RestClient::new(&server);
    let mut alice = TestAccount::register(&server, "alice").await;
    alice.add_device(&server).await;
    let bob = TestAccount::register(&server, "bob").await;
    let carol = TestAccount::register(&server, "carol").await;
    let erin = TestAccount::register(&server, "erin").await;
    let members = [&alice, &bob, &carol, &erin];
    let info = rest.new_group(alice.primary(), &[&bob, &carol, &erin]).await;
    let g = info.group_id;
    let mut senders = Vec::new();
    for d in [alice.device(1), alice.device(2), erin.primary()] {
        let mut ws = WsClient::connect(&server, d).await;
        drain(&mut ws).await;
        senders.push((d.clone(), ws));
    }
    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    drain(&mut bob_ws).await;
    let mut live = KeyOrder::default();
    let mut epoch = info.epoch;
    for round in 0..3 {
        for (d, ws) in &mut senders {
            let key = ws.submit_distribute(distribute_request(g, epoch, key_of(d, epoch, &members))).await;
            let content = format!("msg {} e{epoch}", label(d)).into_bytes();
            let msg = ws.submit_group_send(group_send_request(g, epoch, content)).await;
            let (k, m) = (ws.response(key).await, ws.response(msg).await);
            ws.expect_ok(k);
            ws.expect_ok(m);
        }
        while live.messages < 3 * (round + 1) {
            let e = next_acked(&mut bob_ws).await;
            live.see("bob (live)", &e);
        }
        // Rotate: erin leaves and comes back, so every sender distributes again.
        let left: RosterChangeResult = rest.remove_member(erin.primary(), g, erin.account_id).await.json(200);
        rest.add_members(alice.primary(), g, &[erin.account_id]).await.json::<RosterChangeResult>(200);
        epoch = left.epoch;
    }
    let mut carol_ws = WsClient::connect(&server, carol.primary()).await;
    let mut replay = KeyOrder::default();
    for e in drain(&mut carol_ws).await {
        replay.see("carol (replay)", &e);
    }
    assert_eq!(replay.messages, 9);
}

#[tokio::test]
async fn large_groups_bad_acks_close_the_connection_and_acks_of_undelivered_seqs_move_nothing() {
    let server = builder(2).start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let carol = TestAccount::register(&server, "carol").await;
    let info = RestClient::new(&server).new_group(alice.primary(), &[&bob, &carol]).await;
    let (g, epoch) = (info.group_id, info.epoch);
    let mut a = WsClient::connect(&server, alice.primary()).await;
    let mut b = WsClient::connect(&server, bob.primary()).await;
    let mut c = WsClient::connect(&server, carol.primary()).await;
    for ws in [&mut a, &mut b, &mut c] {
        drain(ws).await;
    }
    a.distribute_ok(distribute_request(g, epoch, to_member_devices(alice.primary(), &[&bob, &carol]))).await;
    next_acked(&mut b).await;
    next_acked(&mut c).await;
    let two = a.group_send_ok(group_send_request(g, epoch, b"two".to_vec())).await.group_seq;
    assert_eq!(stream_position(&b.next_envelope().await), Some((g, two)));
    // Acks of seqs never written here, and of a group bob does not read.
    b.ack_groups(&[(g, two + 1), (g, 100), (Uuid::new_v4(), 1)]).await;
    settle(&mut b, g).await;
    let three = a.group_send_ok(group_send_request(g, epoch, b"three".to_vec())).await.group_seq;
    assert_eq!(stream_position(&b.next_envelope().await), Some((g, three)), "an early ack does not skip it");
    b.close().await;
    let mut b = WsClient::connect(&server, bob.primary()).await;
    assert_eq!(paths(&drain_unacked(&mut b).await, g), [(two, true), (three, true)], "both again");
    for seq in [two, three] {
        assert_eq!(stream_position(&next_acked(&mut c).await), Some((g, seq)));
    }

    for bad in [vec![1u8; 15], vec![]] {
        let groups = vec![
            GroupAck { group_id: g.as_bytes().to_vec().into(), seq: two },
            GroupAck { group_id: bad.into(), seq: three },
        ];
        b.send_ack(Ack { seqs: Vec::new(), groups }).await;
        assert_eq!(b.expect_close().await, (close::MALFORMED, close::REASON_MALFORMED.to_owned()));
        let four = a.group_send_ok(group_send_request(g, epoch, b"still served".to_vec())).await.group_seq;
        assert_eq!(stream_position(&next_acked(&mut c).await), Some((g, four)), "carol is still served");
        b = WsClient::connect(&server, bob.primary()).await;
        let again = paths(&drain_unacked(&mut b).await, g);
        assert_eq!(again.first(), Some(&(two, true)), "nothing of the malformed frame was applied");
    }
    let zero = vec![GroupAck { group_id: g.as_bytes().to_vec().into(), seq: 0 }];
    b.send_ack(Ack { seqs: Vec::new(), groups: zero }).await;
    assert_eq!(b.expect_close().await, (close::MALFORMED, close::REASON_MALFORMED.to_owned()));
}

/// One published stream message: its origin node, group position and the devices it names.
struct Published {
    origin: String,
    group: Uuid,
    seq: u64,
    devices: HashSet<(Uuid, u32)>,
}

fn decode_published(payload: &[u8]) -> Published {
    fn bytes<const N: usize>(payload: &[u8], at: usize) -> [u8; N] {
        payload
            .get(at..at + N)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_else(|| panic!("a truncated hush:streams message: {payload:?}"))
    }
    assert_eq!(payload.first(), Some(&b'S'), "a stream message starts with S");
    let n = usize::from(bytes::<1>(payload, 1)[0]);
    let origin = String::from_utf8_lossy(payload.get(2..2 + n).unwrap_or_default()).into_owned();
    let at = 2 + n;
    let group = Uuid::from_bytes(bytes(payload, at));
    let seq = u64::from_be_bytes(bytes(payload, at + 16));
    let count = u32::from_be_bytes(bytes(payload, at + 32)) as usize;
    let devices = (0..count)
        .map(|i| {
            let base = at + 36 + 20 * i;
            (Uuid::from_bytes(bytes(payload, base)), u32::from_be_bytes(bytes(payload, base + 16)))
        })
        .collect();
    Published { origin, group, seq, devices }
}

fn keys(devices: &[&TestDevice]) -> HashSet<(Uuid, u32)> {
    devices.iter().map(|d| (d.account_id, d.device_id)).collect()
}

#[tokio::test]
async fn large_groups_on_two_nodes_reach_every_member_live_with_one_publish_per_message() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let extra = flags(2);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (a, b) = two_nodes_with(&db, &redis, "60", &extra).await;
    let mut streams = redis.subscribe("hush:streams").await;
    let alice = TestAccount::register(&a, "alice").await;
    let bob = TestAccount::register(&a, "bob").await;
    let carol = TestAccount::register(&b, "carol").await;
    let mut dave = TestAccount::register(&a, "dave").await;
    dave.add_device(&a).await;
    let erin = TestAccount::register(&a, "erin").await;
    let members = [&alice, &bob, &carol, &dave, &erin];
    let mut on_a = Vec::new();
    for d in [alice.primary(), bob.primary(), dave.device(1)] {
        on_a.push(WsClient::connect_drained(&a, d).await);
    }
    let mut on_b = Vec::new();
    for d in [carol.primary(), dave.device(2)] {
        on_b.push(WsClient::connect_drained(&b, d).await);
    }
    let info = RestClient::new(&a).new_group(alice.primary(), &[&bob, &carol, &dave, &erin]).await;
    let g = info.group_id;
    for ws in on_a.iter_mut().chain(on_b.iter_mut()) {
        assert_eq!(stream_position(&next_acked(ws).await), Some((g, 1)));
    }
    let [alice_ws, bob_ws, dave1] = &mut on_a[..] else { unreachable!() };
    let [carol_ws, dave2] = &mut on_b[..] else { unreachable!() };
    alice_ws.distribute_ok(distribute_request(g, info.epoch, to_member_devices(alice.primary(), &members))).await;
    carol_ws.distribute_ok(distribute_request(g, info.epoch, to_member_devices(carol.primary(), &members))).await;
    for (ws, keys) in [(&mut *bob_ws, 2), (&mut *dave1, 2), (&mut *dave2, 2), (&mut *alice_ws, 1), (&mut *carol_ws, 1)]
    {
        for _ in 0..keys {
            assert!(next_acked(ws).await.seq > 0, "a distribution from the mailbox");
        }
    }
    let mut sent = Vec::new();
    for i in 0..4 {
        let (ws, from_b) = if i == 2 { (&mut *carol_ws, true) } else { (&mut *alice_ws, false) };
        let started = Instant::now();
        let ok = ws.group_send_ok(group_send_request(g, info.epoch, format!("across {i}").into_bytes())).await;
        // Each reader, with the node side of the messages it sent itself (if it sends).
        let readers: Vec<(&mut WsClient, Option<bool>)> = if from_b {
            vec![(&mut *alice_ws, Some(false)), (&mut *bob_ws, None), (&mut *dave1, None), (&mut *dave2, None)]
        } else {
            vec![(&mut *bob_ws, None), (&mut *dave1, None), (&mut *carol_ws, Some(true)), (&mut *dave2, None)]
        };
        for (ws, own_side) in readers {
            ws.timeout = Duration::from_secs(5);
            loop {
                // A sender holds a cursor too: its own earlier messages may come back first.
                let e = next_acked(ws).await;
                if stream_position(&e) == Some((g, ok.group_seq)) {
                    break;
                }
                let resent = sent.iter().any(|&(seq, side)| seq == e.group_seq && Some(side) == own_side);
                assert!(resent && e.content.starts_with(b"across"), "live on either node, in order: {e:?}");
            }
        }
        assert!(started.elapsed() < Duration::from_secs(5), "not the 60 s re-read");
        sent.push((ok.group_seq, from_b));
    }
    // The publishes: the creation and each message exactly once, from its node, naming the
    // member devices not connected there.
    let last_a = sent.iter().filter(|s| !s.1).map(|s| s.0).max().unwrap_or(0);
    let last_b = sent.iter().filter(|s| s.1).map(|s| s.0).max().unwrap_or(0);
    let mut seen: Vec<Published> = Vec::new();
    while !(seen.iter().any(|p| p.seq == last_a) && seen.iter().any(|p| p.seq == last_b)) {
        seen.push(decode_published(&streams.next_message().await));
    }
    let mut seqs: Vec<u64> = seen.iter().map(|p| p.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=last_a.max(last_b)).collect::<Vec<_>>(), "one publish per group message, not per member");
    let absent_from_a = keys(&[carol.primary(), dave.device(2), erin.primary()]);
    let absent_from_b = keys(&[alice.primary(), bob.primary(), dave.device(1), erin.primary()]);
    for p in &seen {
        assert_eq!(p.group, g);
        let from_b = sent.iter().any(|s| s.0 == p.seq && s.1);
        let (origin, absent) = if from_b { ("node-b", &absent_from_b) } else { ("node-a", &absent_from_a) };
        assert_eq!((p.origin.as_str(), &p.devices), (origin, absent), "group seq {}", p.seq);
    }
    // Erin, offline, reads everything on node b: distributions, then the stream.
    let mut erin_ws = WsClient::connect(&b, erin.primary()).await;
    let backlog = drain(&mut erin_ws).await;
    assert!(backlog[..2].iter().all(|e| e.seq > 0));
    assert_eq!(paths(&backlog, g), (1..=last_a.max(last_b)).map(|s| (s, true)).collect::<Vec<_>>());
}

#[tokio::test]
async fn large_groups_on_two_nodes_a_distribution_reaches_a_member_on_the_other_node_before_the_message() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let extra = flags(2);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (a, b) = two_nodes_with(&db, &redis, "60", &extra).await;
    let alice = TestAccount::register(&a, "alice").await;
    let bob = TestAccount::register(&b, "bob").await;
    let carol = TestAccount::register(&a, "carol").await;
    let mut alice_ws = WsClient::connect_drained(&a, alice.primary()).await;
    let mut bob_ws = WsClient::connect_drained(&b, bob.primary()).await;
    let mut order = KeyOrder::default();
    for round in 0..8 {
        let info = RestClient::new(&a).new_group(alice.primary(), &[&bob, &carol]).await;
        let created = next_acked(&mut bob_ws).await;
        assert_eq!(stream_position(&created), Some((info.group_id, 1)));
        // A client flushing its outbox: a few direct messages, the key, the group message.
        let mut ids = Vec::new();
        for i in 0..4 {
            let direct = send_request(vec![to_all_devices(&carol, format!("direct {round}.{i}").as_bytes())]);
            alice_ws
                .send_frame(hush_wire::frames::client_frame::Frame::Send(hush_wire::frames::SendRequest {
                    request_id: 10_000 * (round + 1) + i,
                    ..direct
                }))
                .await;
            ids.push(10_000 * (round + 1) + i);
        }
        let epoch = info.epoch;
        let key_content = key_of(alice.primary(), 1000 * round + epoch, &[&bob, &carol]);
        ids.push(alice_ws.submit_distribute(distribute_request(info.group_id, epoch, key_content)).await);
        let content = format!("msg {} e{}", label(alice.primary()), 1000 * round + epoch).into_bytes();
        ids.push(alice_ws.submit_group_send(group_send_request(info.group_id, epoch, content)).await);
        for id in ids {
            let resp = alice_ws.response(id).await;
            alice_ws.expect_ok(resp);
        }
        while alice_ws.buffered_events() > 0 {
            next_acked(&mut alice_ws).await;
        }
        for _ in 0..2 {
            let e = next_acked(&mut bob_ws).await;
            order.see("bob (on the other node)", &e);
        }
    }
    assert_eq!(order.messages, 8);
}

// ---- wake-ups ----

async fn register_unifiedpush(server: &TestServer, device: &TestDevice, endpoint: String) {
    let body = PushTargetBody::UnifiedPush { endpoint };
    RestClient::new(server).signed(device, "PUT", "/v1/devices/self/push", Some(&body)).await.assert_status(204);
}

/// Sends a fresh account with a push target one message and waits for its wake-up; gives
/// every request the fake got before it.
async fn until_sentinel(server: &TestServer, fake: &mut FakePush, ws: &mut WsClient, name: &str) -> Vec<PushRequest> {
    let sentinel = TestAccount::register(server, name).await;
    let path = format!("/up/{name}");
    register_unifiedpush(server, sentinel.primary(), fake.url(&path)).await;
    ws.send_ok(send_request(vec![to_all_devices(&sentinel, b"sentinel")])).await;
    let mut before = Vec::new();
    loop {
        let request = fake.next().await;
        if request.path == path {
            return before;
        }
        before.push(request);
    }
}

#[tokio::test]
async fn large_groups_wake_an_offline_member_for_an_urgent_send_and_not_a_connected_one() {
    let server = builder(2)
        .args(["--push-allow-hosts", "127.0.0.1", "--push-window-secs", "600", "--push-background-delay-secs", "3600"])
        .start()
        .await;
    let mut fake = FakePush::accepting().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let carol = TestAccount::register(&server, "carol").await;
    register_unifiedpush(&server, bob.primary(), fake.url("/up/bob")).await;
    register_unifiedpush(&server, carol.primary(), fake.url("/up/carol")).await;
    let mut carol_ws = WsClient::connect_drained(&server, carol.primary()).await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    let info = RestClient::new(&server).new_group(alice.primary(), &[&bob, &carol]).await;
    let g = info.group_id;
    alice_ws
        .distribute_ok(distribute_request(g, info.epoch, to_member_devices(alice.primary(), &[&bob, &carol])))
        .await;

    // Not urgent: no wake-up at once.
    let mut quiet = group_send_request(g, info.epoch, b"not urgent".to_vec());
    quiet.urgent = false;
    alice_ws.group_send_ok(quiet).await;
    let before = until_sentinel(&server, &mut fake, &mut alice_ws, "first").await;
    assert!(before.is_empty(), "a background send woke someone at once: {before:?}");

    let ok = alice_ws.group_send_ok(group_send_request(g, info.epoch, b"group secret".to_vec())).await;
    let wake = fake.next().await;
    assert_eq!((wake.path.as_str(), wake.header("urgency")), ("/up/bob", Some("high")));
    assert_eq!(wake.body, b"1");
    let before = until_sentinel(&server, &mut fake, &mut alice_ws, "second").await;
    assert!(before.is_empty(), "carol is connected and must not be woken: {before:?}");
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(next_acked(&mut carol_ws).await);
    }
    assert_eq!(stream_position(&got[3]), Some((g, ok.group_seq)), "carol read it live from the stream");
}
