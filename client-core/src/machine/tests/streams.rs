//! Groups read from their stream (above hushd's fan-out threshold): stream envelopes are read
//! like mailbox ones and acked by (group, group seq); one that comes both by the stream and
//! as a mailbox reference, or again after a reconnect, is shown once and acked each way it came.

use hush_wire::frames::{Ack, Envelope, EnvelopeKind, GroupAck};
use uuid::Uuid;

use super::contact;
use super::groups::{create, done, group_events, say, texts};
use super::relay::{Party, Relay};
use crate::machine::OutgoingRequest;
use crate::store::ClientStore;
use crate::types::{GroupRole, MessageKind};

/// The group seqs of `group` that `party`'s device acked by `GroupAck`.
fn stream_acked(relay: &Relay, party: &Party, group: Uuid) -> Vec<u64> {
    let mut seqs: Vec<u64> = relay
        .stream_acks
        .iter()
        .filter(|(a, d, g, _)| (*a, *d, *g) == (party.account, party.device, group))
        .map(|(_, _, _, s)| *s)
        .collect();
    seqs.sort_unstable();
    seqs
}

/// The group seq of the last text of `group` stored on `party`'s device.
async fn last_seq(party: &Party, group: Uuid) -> u64 {
    let history = party.machine.group_history(group, 1000).await.unwrap();
    history.iter().rev().find(|m| m.kind == MessageKind::Text).map(|m| m.group_seq).unwrap()
}

/// Alice's group with Bob (and Carol), both of whom know her.
async fn group_of_three(relay: &mut Relay) -> (Party, Party, Party, Uuid) {
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let mut carol = relay.register("carol").await;
    contact(relay, &mut bob, &alice).await;
    contact(relay, &mut carol, &alice).await;
    for p in [&mut alice, &mut bob, &mut carol] {
        relay.connect(p).await;
    }
    let group = create(relay, &mut alice, "big", &[&bob, &carol]).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    (alice, bob, carol, group)
}

#[tokio::test]
async fn a_streamed_group_is_read_once_acked_by_group_seq_and_its_roster_changes_apply() {
    let mut relay = Relay::new();
    let (mut alice, mut bob, mut carol, group) = group_of_three(&mut relay).await;
    relay.stream_group(group);
    relay.disconnect(&mut carol);
    for text in ["s1", "s2"] {
        say(&relay, &mut alice, group, text).await;
        relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    }
    say(&relay, &mut bob, group, "s3").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    // Carol reads the stream from her cursor when she comes back.
    relay.connect(&mut carol).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;

    let all = vec!["s1".to_owned(), "s2".to_owned(), "s3".to_owned()];
    for p in [&alice, &bob, &carol] {
        assert_eq!(texts(p, group).await, all, "device of {}", p.account);
        assert_eq!(relay.stream_len(p.account, p.device), 0, "every stream envelope acked");
        assert_eq!(relay.mailbox_len(p.account, p.device), 0);
    }
    assert_eq!(group_events(&carol, group), all, "each once");
    assert_eq!(group_events(&bob, group), vec!["s1".to_owned(), "s2".to_owned()]);
    // The stream hands the sender its own message back: acked, not shown again.
    assert_eq!(group_events(&alice, group), vec!["s3".to_owned()]);
    assert!(alice.store.held(group).await.unwrap().is_empty(), "her own messages are not held for a distribution");
    let seqs: Vec<u64> = relay.groups[&group].stream.keys().copied().collect();
    for p in [&alice, &bob, &carol] {
        assert_eq!(stream_acked(&relay, p, group), seqs, "acked by GroupAck, once each");
    }

    // Roster changes by the stream apply.
    let op = alice.machine.set_role(group, bob.account, GroupRole::Admin).await.unwrap();
    done(&mut relay, &mut alice, op).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let change = *relay.groups[&group].stream.keys().last().unwrap();
    for p in [&bob, &carol] {
        let info = p.machine.group_info(group).await.unwrap().unwrap();
        assert_eq!(info.members.iter().find(|m| m.username == "bob").unwrap().role, GroupRole::Admin);
        let last = p.machine.group_history(group, 100).await.unwrap().pop().unwrap();
        assert_eq!(
            (last.kind, last.body.as_str(), last.group_seq),
            (MessageKind::System, "alice made bob an admin", change)
        );
        assert_eq!(stream_acked(&relay, p, group).last(), Some(&change));
        assert_eq!(relay.stream_len(p.account, p.device), 0);
    }
}

#[tokio::test]
async fn a_member_added_to_a_streamed_group_reads_it() {
    let mut relay = Relay::new();
    let (mut alice, mut bob, mut carol, group) = group_of_three(&mut relay).await;
    relay.stream_group(group);
    let mut dave = relay.register("dave").await;
    contact(&relay, &mut dave, &alice).await;
    relay.connect(&mut dave).await;
    let to_dave = contact(&relay, &mut alice, &dave).await;
    let op = alice.machine.add_members(group, &[to_dave]).await.unwrap();
    done(&mut relay, &mut alice, op).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol, &mut dave]).await;
    say(&relay, &mut bob, group, "welcome dave").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol, &mut dave]).await;
    assert_eq!(texts(&dave, group).await, vec!["welcome dave".to_owned()]);
    assert_eq!(group_events(&dave, group), vec!["welcome dave".to_owned()]);
    let info = dave.machine.group_info(group).await.unwrap().unwrap();
    assert_eq!((info.title.as_str(), info.members.len()), ("big", 4));
    assert_eq!(relay.stream_len(dave.account, 1), 0);
}

#[tokio::test]
async fn a_group_message_by_stream_and_by_mailbox_is_shown_once_and_acked_both_ways() {
    let mut relay = Relay::new();
    let (mut alice, mut bob, mut carol, group) = group_of_three(&mut relay).await;

    // Around the switch to the stream: the mailbox reference comes first, then the stream.
    relay.deliver_group_both_ways(group);
    say(&relay, &mut alice, group, "both ways").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let first = last_seq(&bob, group).await;
    for p in [&bob, &carol] {
        assert_eq!(group_events(p, group), vec!["both ways".to_owned()]);
        assert_eq!(stream_acked(&relay, p, group), vec![first]);
        assert_eq!((relay.mailbox_len(p.account, 1), relay.stream_len(p.account, 1)), (0, 0));
    }

    // The other way round: read by the stream, then a mailbox reference to the same seq.
    relay.stream_group(group);
    say(&relay, &mut alice, group, "stream first").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let second = last_seq(&bob, group).await;
    relay.reference_in_mailboxes(group, second, (alice.account, 1));
    assert_eq!(relay.mailbox_len(bob.account, 1), 1);
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    for p in [&bob, &carol] {
        assert_eq!(group_events(p, group), vec!["both ways".to_owned(), "stream first".to_owned()]);
        assert_eq!(texts(p, group).await, vec!["both ways".to_owned(), "stream first".to_owned()]);
        assert_eq!(stream_acked(&relay, p, group), vec![first, second]);
        assert_eq!((relay.mailbox_len(p.account, 1), relay.stream_len(p.account, 1)), (0, 0), "acked by seq too");
    }
}

#[tokio::test]
async fn a_message_held_from_the_stream_is_not_held_again_from_the_mailbox() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    contact(&relay, &mut bob, &alice).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    relay.hold_distributions_to = Some((bob.account, 1));
    let group = create(&mut relay, &mut alice, "g", &[&bob]).await;
    relay.stream_group(group);
    say(&relay, &mut alice, group, "early").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert!(texts(&bob, group).await.is_empty(), "no distribution yet");
    assert_eq!(relay.stream_len(bob.account, 1), 0, "held locally, acked by GroupAck");
    let seq = *relay.groups[&group].stream.keys().last().unwrap();
    relay.reference_in_mailboxes(group, seq, (alice.account, 1));
    relay.release_distributions();
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(texts(&bob, group).await, vec!["early".to_owned()]);
    assert_eq!(group_events(&bob, group), vec!["early".to_owned()]);
    assert_eq!(relay.mailbox_len(bob.account, 1), 0);
}

#[tokio::test]
async fn stream_envelopes_redelivered_after_a_reconnect_are_acked_and_not_shown_again() {
    let mut relay = Relay::new();
    let (mut alice, mut bob, mut carol, group) = group_of_three(&mut relay).await;
    relay.stream_group(group);
    // Bob's acks are lost on the way, then his client restarts.
    bob.acks_reach_server = false;
    for i in 0..3 {
        say(&relay, &mut alice, group, &format!("m{i}")).await;
    }
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let expected: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
    assert_eq!(group_events(&bob, group), expected);
    assert_eq!(relay.stream_len(bob.account, 1), 3, "nothing acked");

    let mut bob = Relay::party(bob.store.clone(), bob.account, 1).await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    assert!(group_events(&bob, group).is_empty(), "{:?}", bob.events);
    assert_eq!(relay.stream_len(bob.account, 1), 0, "acked after the reconnect");
    assert_eq!(stream_acked(&relay, &bob, group).len(), 3);
    assert_eq!(texts(&bob, group).await, expected);

    // A plain reconnect (acks lost, same process) also shows nothing twice.
    bob.acks_reach_server = false;
    say(&relay, &mut alice, group, "m3").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    relay.disconnect(&mut bob);
    bob.acks_reach_server = true;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    assert_eq!(group_events(&bob, group), vec!["m3".to_owned()]);
    assert_eq!(relay.stream_len(bob.account, 1), 0);
}

#[tokio::test]
async fn a_group_envelope_is_known_by_its_group_and_seq_and_acked_the_way_it_came() {
    let mut relay = Relay::new();
    let (mut alice, mut bob, mut carol, group) = group_of_three(&mut relay).await;
    relay.stream_group(group);
    say(&relay, &mut alice, group, "x").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let x = last_seq(&bob, group).await;
    relay.disconnect(&mut bob);
    say(&relay, &mut alice, group, "y").await;
    relay.settle(&mut [&mut alice, &mut carol]).await;
    let (_, y, y_content) = relay.group_ciphertexts.last().cloned().unwrap();

    // A mailbox envelope naming x's (group, seq) is not opened, whatever it carries: acked by seq.
    let stale = Envelope {
        seq: 999_999,
        server_timestamp: relay.now,
        kind: EnvelopeKind::GroupMessage as i32,
        content: y_content.clone().into(),
        group_id: group.as_bytes().to_vec().into(),
        group_seq: x,
    };
    bob.machine.receive_envelope(stale, relay.now, &mut rand::rng()).await.unwrap();
    assert!(bob.machine.take_events().is_empty());
    let acks: Vec<OutgoingRequest> =
        bob.machine.take_requests().into_iter().filter(|r| matches!(r, OutgoingRequest::Ack(_))).collect();
    assert_eq!(acks, vec![OutgoingRequest::Ack(Ack { seqs: vec![999_999], groups: vec![] })]);

    // y itself, from the stream: opened, and acked by (group id, group seq).
    let streamed = relay.groups[&group].stream[&y].0.clone();
    bob.machine.receive_envelope(streamed, relay.now, &mut rand::rng()).await.unwrap();
    let acks: Vec<OutgoingRequest> =
        bob.machine.take_requests().into_iter().filter(|r| matches!(r, OutgoingRequest::Ack(_))).collect();
    let ack = GroupAck { group_id: group.as_bytes().to_vec().into(), seq: y };
    assert_eq!(acks, vec![OutgoingRequest::Ack(Ack { seqs: vec![], groups: vec![ack] })]);
    let history = bob.machine.group_history(group, 100).await.unwrap();
    let shown: Vec<(String, u64)> =
        history.into_iter().filter(|m| m.kind == MessageKind::Text).map(|m| (m.body, m.group_seq)).collect();
    assert_eq!(shown, vec![("x".to_owned(), x), ("y".to_owned(), y)]);

    // An online-only envelope (seq 0, group seq 0) is never acked.
    let online =
        Envelope { seq: 0, group_seq: 0, group_id: Default::default(), ..relay.groups[&group].stream[&y].0.clone() };
    bob.machine.receive_envelope(online, relay.now, &mut rand::rng()).await.unwrap();
    assert!(!bob.machine.take_requests().iter().any(|r| matches!(r, OutgoingRequest::Ack(_))));
}

#[tokio::test]
async fn the_stream_handing_a_sender_its_own_message_before_the_answer_changes_nothing() {
    let mut relay = Relay::new();
    let (mut alice, mut bob, mut carol, group) = group_of_three(&mut relay).await;
    relay.stream_group(group);
    say(&relay, &mut alice, group, "warm up").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    // The send is stored and streamed (to Alice's device too), but its answer is lost.
    relay.lose_group_send_answers = 1;
    say(&relay, &mut alice, group, "answer lost").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let seq = *relay.groups[&group].stream.keys().last().unwrap();
    assert_eq!(stream_acked(&relay, &alice, group).last(), Some(&seq), "her own message, acked");
    assert!(alice.store.held(group).await.unwrap().is_empty(), "not held for a distribution");

    // After a reconnect the resend is answered with the first send's seq.
    relay.disconnect(&mut alice);
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let mine = alice.machine.group_history(group, 100).await.unwrap();
    let mine: Vec<(String, u64)> =
        mine.into_iter().filter(|m| m.kind == MessageKind::Text).map(|m| (m.body, m.group_seq)).collect();
    assert_eq!(mine.last(), Some(&("answer lost".to_owned(), seq)));
    assert_eq!(mine.len(), 2);
    for p in [&bob, &carol] {
        assert_eq!(group_events(p, group), vec!["warm up".to_owned(), "answer lost".to_owned()]);
    }
    assert_eq!(relay.stream_len(alice.account, 1), 0);
}
