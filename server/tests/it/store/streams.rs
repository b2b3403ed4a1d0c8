//! Group streams: a group above the fan-out-on-read threshold stores each message once and
//! references it from no mailbox; member devices read it after their cursors, acks advance
//! them, and a group switches path at the roster change that crosses the threshold.

use bytes::Bytes;
use hush_server::store::{
    Accepted, GroupOp, GroupPosition, MailboxId, SendOutcome, Store, StreamAck, StreamCursor, StreamRead,
};
use uuid::Uuid;

use super::groups::{CHANGE, MESSAGE, SEALED, distribute, group_send, group_seq, inbox, new_group, write};
use super::{DAY, ROOMY, T0, create, dk, mailbox, record};

/// A group of `owner` and `members` read from its stream above `read_above` members.
async fn group_above(store: &dyn Store, owner: Uuid, members: &[Uuid], read_above: u32) -> Uuid {
    let mut new = new_group(owner, members);
    new.read_above = read_above;
    let done = store.create_group(&new).await.unwrap();
    done.group
}

async fn change(store: &dyn Store, group: Uuid, actor: Uuid, op: GroupOp, read_above: u32) {
    let mut c = super::groups::change(group, actor, op);
    c.read_above = read_above;
    store.change_group(&c).await.unwrap();
}

/// The (kind, group seq) of everything a device reads from its streams.
async fn streamed(store: &dyn Store, mb: MailboxId) -> Vec<(i32, u64)> {
    let cursors = store.stream_cursors(&[mb]).await.unwrap().remove(0);
    let reads: Vec<StreamRead> = cursors
        .iter()
        .map(|c| StreamRead { group: c.group, after_seq: c.acked_seq, until_seq: c.until_seq, limit: 100 })
        .collect();
    let batches = store.fetch_streams(&reads).await.unwrap();
    let mut out = Vec::new();
    for e in batches.into_iter().flatten() {
        assert_eq!(e.seq, 0, "stream envelopes carry no mailbox seq");
        out.push((e.kind, e.group.map_or(0, |g| g.seq)));
    }
    out
}

fn streamed_devices(outcome: &SendOutcome) -> Vec<(Uuid, u32)> {
    let Ok(Accepted::Stored { committed, streamed: Some(s), .. }) = outcome else {
        panic!("not streamed: {outcome:?}")
    };
    assert!(committed.is_empty(), "no mailbox reference");
    let mut devices: Vec<(Uuid, u32)> = s.devices.iter().map(|d| (d.account, d.device_id)).collect();
    devices.sort_unstable();
    devices
}

pub async fn a_group_above_the_threshold_is_read_from_its_stream(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    store.add_device(bob, &record(102), 6).await.unwrap();
    let mut new = new_group(alice, &[bob, carol]);
    new.read_above = 2;
    let done = store.create_group(&new).await.unwrap();
    let g = done.group;
    assert!(done.committed.is_empty(), "the creation is on the stream, in no mailbox");
    let s = done.streamed.expect("the creation change is streamed");
    assert_eq!(s.envelope.group, Some(GroupPosition { group: g, seq: 1 }));
    assert_eq!(s.devices.len(), 4, "alice.1, bob.1, bob.2, carol.1");
    let bob1 = mailbox(store, dk(bob, 1)).await;
    assert_eq!(
        store.stream_cursors(&[bob1]).await.unwrap(),
        vec![vec![StreamCursor { group: g, acked_seq: 0, until_seq: None }]]
    );
    let d = distribute((alice, 1), g, 1, &[(bob, &[(1, 100), (2, 102)]), (carol, &[(1, 100)])]);
    write(store, d, ROOMY).await.unwrap();
    let sent = write(store, group_send((alice, 1), g, 1, "m1"), ROOMY).await;
    assert_eq!(group_seq(&sent), Some(2));
    let mut expected = vec![(bob, 1), (bob, 2), (carol, 1)];
    expected.sort_unstable();
    assert_eq!(streamed_devices(&sent), expected, "every member device but the sender's");
    assert_eq!(inbox(store, bob, 1).await, [(SEALED, 0)], "only the distribution is in the mailbox");
    assert_eq!(streamed(store, bob1).await, [(CHANGE, 1), (MESSAGE, 2)]);
    let reads = [StreamRead { group: g, after_seq: 1, until_seq: None, limit: 10 }];
    let got = store.fetch_streams(&reads).await.unwrap();
    assert_eq!(got[0][0].content, Bytes::from("m1"), "the payload");
    assert_eq!(store.group_message_count().await.unwrap(), 2, "stored once each");
}

pub async fn stream_acks_advance_cursors_and_free_what_every_member_read(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let g = group_above(store, alice, &[bob], 1).await;
    write(store, distribute((alice, 1), g, 1, &[(bob, &[(1, 100)])]), ROOMY).await.unwrap();
    write(store, group_send((alice, 1), g, 1, "m1"), ROOMY).await.unwrap();
    write(store, group_send((alice, 1), g, 1, "m2"), ROOMY).await.unwrap();
    let (a, b) = (mailbox(store, dk(alice, 1)).await, mailbox(store, dk(bob, 1)).await);
    let ack = |mailbox, seq| StreamAck { mailbox, group: g, seq };
    store.ack_streams(&[ack(b, 3)]).await.unwrap();
    assert_eq!(streamed(store, b).await, [], "bob read everything");
    assert_eq!(store.group_message_count().await.unwrap(), 3, "alice's device has not acked the creation");
    store.ack_streams(&[ack(b, 1)]).await.unwrap();
    assert_eq!(store.stream_cursors(&[b]).await.unwrap()[0][0].acked_seq, 3, "a cursor never moves back");
    store.ack_streams(&[ack(a, 1)]).await.unwrap();
    assert_eq!(store.group_message_count().await.unwrap(), 2, "what both read is gone");
    store.ack_streams(&[ack(a, 3)]).await.unwrap();
    assert_eq!(store.group_message_count().await.unwrap(), 0);
}

pub async fn a_group_growing_past_the_threshold_switches_at_the_change(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    let g = group_above(store, alice, &[bob], 2).await;
    write(store, distribute((alice, 1), g, 1, &[(bob, &[(1, 100)])]), ROOMY).await.unwrap();
    let sent = write(store, group_send((alice, 1), g, 1, "small"), ROOMY).await;
    assert!(matches!(&sent, Ok(Accepted::Stored { streamed: None, committed, .. }) if committed.len() == 1));
    change(store, g, alice, GroupOp::Add(vec![carol]), 2).await;
    let b = mailbox(store, dk(bob, 1)).await;
    assert_eq!(inbox(store, bob, 1).await, [(CHANGE, 1), (SEALED, 0), (MESSAGE, 2)], "before the switch: mailbox");
    assert_eq!(streamed(store, b).await, [(CHANGE, 3)], "from the switch on: the stream");
    let c = mailbox(store, dk(carol, 1)).await;
    assert_eq!(streamed(store, c).await, [(CHANGE, 3)], "the new member reads from the change that added it");
    assert_eq!(inbox(store, carol, 1).await, []);
    let d = distribute((alice, 1), g, 1, &[(bob, &[(1, 100)]), (carol, &[(1, 100)])]);
    write(store, d, ROOMY).await.unwrap();
    let sent = write(store, group_send((alice, 1), g, 1, "large"), ROOMY).await;
    assert_eq!(streamed_devices(&sent).len(), 2);
    assert_eq!(streamed(store, b).await, [(CHANGE, 3), (MESSAGE, 4)]);
}

pub async fn a_group_shrinking_to_the_threshold_moves_unread_messages_into_mailboxes(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    let g = group_above(store, alice, &[bob, carol], 2).await;
    let d = distribute((alice, 1), g, 1, &[(bob, &[(1, 100)]), (carol, &[(1, 100)])]);
    write(store, d, ROOMY).await.unwrap();
    write(store, group_send((alice, 1), g, 1, "m2"), ROOMY).await.unwrap();
    write(store, group_send((alice, 1), g, 1, "m3"), ROOMY).await.unwrap();
    let b = mailbox(store, dk(bob, 1)).await;
    store.ack_streams(&[StreamAck { mailbox: b, group: g, seq: 2 }]).await.unwrap();
    change(store, g, alice, GroupOp::Remove(carol), 2).await;
    // Bob's unread message, then the change, in his mailbox: in group order.
    assert_eq!(inbox(store, bob, 1).await, [(SEALED, 0), (MESSAGE, 3), (CHANGE, 4)]);
    assert_eq!(inbox(store, carol, 1).await, [(SEALED, 0), (CHANGE, 1), (MESSAGE, 2), (MESSAGE, 3), (CHANGE, 4)]);
    assert_eq!(store.stream_cursors(&[b]).await.unwrap(), vec![vec![]], "no stream any more");
    let mb = mailbox(store, dk(carol, 1)).await;
    let got = store.fetch(mb, 0, 10).await.unwrap();
    assert_eq!(got[2].content, Bytes::from("m2"), "moved references join the payload in");
    // Every stored message is referenced now; acking them frees them.
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    store.ack(&[(mb, seqs)]).await.unwrap();
    let seqs: Vec<u64> = store.fetch(b, 0, 10).await.unwrap().iter().map(|e| e.seq).collect();
    store.ack(&[(b, seqs)]).await.unwrap();
    let a = mailbox(store, dk(alice, 1)).await;
    let seqs: Vec<u64> = store.fetch(a, 0, 10).await.unwrap().iter().map(|e| e.seq).collect();
    store.ack(&[(a, seqs)]).await.unwrap();
    assert_eq!(store.group_message_count().await.unwrap(), 0, "nothing left behind");
}

pub async fn a_departing_member_reads_the_change_that_removed_it_and_nothing_after(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    let dave = create(store, "dave").await;
    let g = group_above(store, alice, &[bob, carol, dave], 2).await;
    change(store, g, alice, GroupOp::Remove(dave), 2).await;
    let d = distribute((alice, 1), g, 2, &[(bob, &[(1, 100)]), (carol, &[(1, 100)])]);
    write(store, d, ROOMY).await.unwrap();
    let sent = write(store, group_send((alice, 1), g, 2, "after"), ROOMY).await;
    assert!(!streamed_devices(&sent).contains(&(dave, 1)));
    let dm = mailbox(store, dk(dave, 1)).await;
    assert_eq!(
        store.stream_cursors(&[dm]).await.unwrap()[0],
        vec![StreamCursor { group: g, acked_seq: 0, until_seq: Some(2) }]
    );
    assert_eq!(streamed(store, dm).await, [(CHANGE, 1), (CHANGE, 2)]);
    store.ack_streams(&[StreamAck { mailbox: dm, group: g, seq: 2 }]).await.unwrap();
    assert_eq!(store.stream_cursors(&[dm]).await.unwrap(), vec![vec![]], "read to its end: gone");
}

pub async fn a_new_device_of_a_member_reads_the_stream_from_now_on(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let g = group_above(store, alice, &[bob], 1).await;
    write(store, distribute((alice, 1), g, 1, &[(bob, &[(1, 100)])]), ROOMY).await.unwrap();
    write(store, group_send((alice, 1), g, 1, "before"), ROOMY).await.unwrap();
    store.add_device(bob, &record(102), 6).await.unwrap();
    let b2 = mailbox(store, dk(bob, 2)).await;
    assert_eq!(
        store.stream_cursors(&[b2]).await.unwrap()[0],
        vec![StreamCursor { group: g, acked_seq: 2, until_seq: None }]
    );
    let sent = write(store, group_send((alice, 1), g, 1, "after"), ROOMY).await;
    assert!(matches!(sent, Err(hush_server::store::SendRejection::MissingDistributions { .. })), "{sent:?}");
    write(store, distribute((alice, 1), g, 1, &[(bob, &[(2, 102)])]), ROOMY).await.unwrap();
    write(store, group_send((alice, 1), g, 1, "after"), ROOMY).await.unwrap();
    assert_eq!(streamed(store, b2).await, [(MESSAGE, 3)]);
}

pub async fn stream_messages_expire(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let g = group_above(store, alice, &[bob], 1).await;
    write(store, distribute((alice, 1), g, 1, &[(bob, &[(1, 100)])]), ROOMY).await.unwrap();
    write(store, group_send((alice, 1), g, 1, "m"), ROOMY).await.unwrap();
    assert_eq!(store.group_message_count().await.unwrap(), 2);
    store.expire(T0 + DAY + 1).await.unwrap();
    assert_eq!(store.group_message_count().await.unwrap(), 0);
    let b = mailbox(store, dk(bob, 1)).await;
    assert_eq!(streamed(store, b).await, []);
}
