//! Groups through the in-memory relay: roster changes, distributions, sender keys, rotation,
//! held messages, refused rebindings, invites.

use uuid::Uuid;

use super::contact;
use super::relay::{Party, Relay};
use crate::machine::GroupOutcome;
use crate::store::ClientStore;
use crate::types::{ConversationId, Event, GroupRole, GroupState, MessageDirection, MessageKind};

/// Creates a group as `owner` with `members` (contacts of the owner) and returns its id.
pub(super) async fn create(relay: &mut Relay, owner: &mut Party, title: &str, members: &[&Party]) -> Uuid {
    let mut rows = Vec::new();
    for m in members {
        rows.push(contact(relay, owner, m).await);
    }
    let op = owner.machine.create_group(title, &rows, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [owner]).await;
    completed(owner, op)
}

fn completed(party: &mut Party, op: u64) -> Uuid {
    let done = party.machine.take_completions();
    match done.into_iter().find(|(id, _)| *id == op) {
        Some((_, Ok(GroupOutcome::Created(g)))) => g,
        Some((_, Ok(GroupOutcome::Done))) => Uuid::nil(),
        other => panic!("operation {op} did not complete: {other:?}"),
    }
}

pub(super) async fn done(relay: &mut Relay, party: &mut Party, op: u64) {
    relay.settle(&mut [party]).await;
    let outcome = party.machine.take_completions().into_iter().find(|(id, _)| *id == op);
    assert!(matches!(outcome, Some((_, Ok(GroupOutcome::Done)))), "{outcome:?}");
}

pub(super) async fn say(relay: &Relay, party: &mut Party, group: Uuid, text: &str) {
    party.machine.enqueue_group_text(group, text, relay.now, &mut rand::rng()).await.unwrap();
}

/// The texts of a group as this device shows them (system entries left out).
pub(super) async fn texts(party: &Party, group: Uuid) -> Vec<String> {
    let history = party.machine.group_history(group, 1000).await.unwrap();
    history.into_iter().filter(|m| m.kind == MessageKind::Text).map(|m| m.body).collect()
}

/// Group texts announced as events to this device.
pub(super) fn group_events(party: &Party, group: Uuid) -> Vec<String> {
    let name = ConversationId::group_name(group);
    party
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) if m.conversation == name && m.kind == MessageKind::Text => Some(m.body.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn every_member_device_gets_every_group_message_once_in_the_same_order() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut alice2 = relay.link_device(&alice, 2).await;
    let mut bob = relay.register("bob").await;
    let mut carol = relay.register("carol").await;
    // Bob and Carol know Alice, so the group is not an invite for them.
    contact(&relay, &mut bob, &alice).await;
    contact(&relay, &mut carol, &alice).await;
    contact(&relay, &mut alice2, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut alice2).await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    let group = create(&mut relay, &mut alice, "friends", &[&bob, &carol]).await;
    assert!(!relay.groups[&group].title.is_empty());
    assert_ne!(relay.groups[&group].title, b"friends", "the server keeps the title encrypted");

    // Carol is offline for all of it.
    say(&relay, &mut alice, group, "a1").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    say(&relay, &mut bob, group, "b1").await;
    say(&relay, &mut alice2, group, "a2").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    say(&relay, &mut bob, group, "b2").await;
    say(&relay, &mut alice, group, "a3").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    relay.connect(&mut carol).await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob, &mut carol]).await;

    let order = texts(&alice, group).await;
    assert_eq!(order.len(), 5, "{order:?}");
    for p in [&alice2, &bob, &carol] {
        let seqs: Vec<(String, u64)> =
            p.machine.group_history(group, 100).await.unwrap().into_iter().map(|m| (m.body, m.group_seq)).collect();
        assert_eq!(texts(p, group).await, order, "the same order on every device: {} {seqs:?}", p.device);
    }
    // Everyone was told of every message once, except the author's own device.
    let mut others = order.clone();
    others.retain(|t| t != "a1" && t != "a3");
    assert_eq!(group_events(&alice, group), others);
    // (Events come in arrival order: one from a sender whose username is being looked up
    // waits for the lookup. The history is in group order.)
    let mut sorted = group_events(&carol, group);
    sorted.sort();
    let mut all = order.clone();
    all.sort();
    assert_eq!(sorted, all, "each message once");
    sorted = group_events(&bob, group);
    sorted.sort();
    assert_eq!(sorted, vec!["a1".to_owned(), "a2".to_owned(), "a3".to_owned()]);
    // Alice's other device shows her messages as outgoing.
    let a2 = alice2.machine.group_history(group, 100).await.unwrap();
    let a1 = a2.iter().find(|m| m.body == "a1").unwrap();
    assert_eq!((a1.direction, a1.from.as_str()), (MessageDirection::Outgoing, "alice"));
    // Group seqs increase in display order.
    let seqs: Vec<u64> = a2.iter().map(|m| m.group_seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // The title arrived with the distribution; the creation is a system entry.
    for p in [&bob, &carol, &alice2] {
        let info = p.machine.group_info(group).await.unwrap().unwrap();
        assert_eq!((info.title.as_str(), info.state), ("friends", GroupState::Active));
        assert_eq!(info.members.len(), 3);
        assert_eq!(info.members[0].role, GroupRole::Owner);
        let first = &p.machine.group_history(group, 100).await.unwrap()[0];
        assert_eq!(first.kind, MessageKind::System);
        let with = first.body.strip_prefix("alice created the group with ").unwrap_or_else(|| panic!("{}", first.body));
        let mut names: Vec<&str> = with.split(", ").collect();
        names.sort_unstable();
        assert_eq!(names, vec!["bob", "carol"]);
    }
    for p in [&alice, &alice2, &bob, &carol] {
        assert_eq!(relay.mailbox_len(p.account, p.device), 0, "every envelope acked");
    }
    // Receipts go pairwise to the author.
    let delivered = alice.events.iter().filter(|e| matches!(e, Event::Receipt(_))).count();
    assert!(delivered > 0);
}

#[tokio::test]
async fn a_removed_member_gets_nothing_after_removal_and_cannot_read_later_messages() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let mut carol = relay.register("carol").await;
    contact(&relay, &mut bob, &alice).await;
    contact(&relay, &mut carol, &alice).await;
    for p in [&mut alice, &mut bob, &mut carol] {
        relay.connect(p).await;
    }
    let group = create(&mut relay, &mut alice, "g", &[&bob, &carol]).await;
    say(&relay, &mut alice, group, "before").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    assert_eq!(texts(&carol, group).await, vec!["before".to_owned()]);
    let epoch = relay.groups[&group].epoch;

    // Bob is offline while Alice removes Carol; he writes meanwhile, under the old epoch.
    relay.disconnect(&mut bob);
    say(&relay, &mut bob, group, "bob offline").await;
    let op = alice.machine.remove_member(group, carol.account).await.unwrap();
    done(&mut relay, &mut alice, op).await;
    assert_eq!(relay.groups[&group].epoch, epoch + 1);
    relay.settle(&mut [&mut alice, &mut carol]).await;
    assert_eq!(carol.machine.group_info(group).await.unwrap().unwrap().state, GroupState::Left);

    say(&relay, &mut alice, group, "after").await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let expected = vec!["before".to_owned(), "after".to_owned(), "bob offline".to_owned()];
    let mut alice_view = texts(&alice, group).await;
    let mut bob_view = texts(&bob, group).await;
    assert_eq!(alice_view, bob_view);
    alice_view.sort();
    bob_view.sort();
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(alice_view, sorted);
    assert_eq!(texts(&carol, group).await, vec!["before".to_owned()], "nothing after the removal");
    assert_eq!(relay.mailbox_len(carol.account, 1), 0);

    // Both senders rotated: a later ciphertext handed to Carol anyway is not readable.
    let alice_group = alice.store.group(group).await.unwrap().unwrap();
    assert_eq!(alice_group.key_epoch, Some(epoch + 1));
    let (_, seq, later) = relay.group_ciphertexts.last().cloned().unwrap();
    let env = hush_wire::frames::Envelope {
        seq: 999_999,
        server_timestamp: relay.now,
        kind: hush_wire::frames::EnvelopeKind::GroupMessage as i32,
        content: later.into(),
        group_id: group.as_bytes().to_vec().into(),
        group_seq: seq,
    };
    carol.machine.receive_envelope(env, relay.now, &mut rand::rng()).await.unwrap();
    let events = carol.machine.take_events();
    assert!(!events.iter().any(|e| matches!(e, Event::Message(_))), "{events:?}");
    assert_eq!(texts(&carol, group).await, vec!["before".to_owned()]);
}

#[tokio::test]
async fn a_held_message_is_read_once_its_distribution_arrives() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    contact(&relay, &mut bob, &alice).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    relay.hold_distributions_to = Some((bob.account, 1));
    let group = create(&mut relay, &mut alice, "g", &[&bob]).await;
    say(&relay, &mut alice, group, "early").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert!(texts(&bob, group).await.is_empty(), "no distribution yet");
    assert_eq!(relay.mailbox_len(bob.account, 1), 0, "the held message was acked (it is kept locally)");
    assert_eq!(bob.store.held(group).await.unwrap().len(), 1);

    // Bob restarts (the held message survives), then the distribution arrives.
    let mut bob = Relay::party(bob.store.clone(), bob.account, 1).await;
    relay.connect(&mut bob).await;
    relay.release_distributions();
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(texts(&bob, group).await, vec!["early".to_owned()]);
    assert_eq!(group_events(&bob, group), vec!["early".to_owned()]);
    assert!(bob.store.held(group).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_distribution_id_bound_to_another_member_is_refused() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let mut mallory = relay.register("mallory").await;
    contact(&relay, &mut bob, &alice).await;
    contact(&relay, &mut mallory, &alice).await;
    for p in [&mut alice, &mut bob, &mut mallory] {
        relay.connect(p).await;
    }
    let group = create(&mut relay, &mut alice, "g", &[&bob, &mallory]).await;
    say(&relay, &mut alice, group, "from alice").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut mallory]).await;
    assert_eq!(texts(&bob, group).await, vec!["from alice".to_owned()]);

    // Mallory takes Alice's distribution id for her own sender key and writes.
    let alice_dist = alice.store.group(group).await.unwrap().unwrap().distribution_id;
    let mut row = mallory.store.group(group).await.unwrap().unwrap();
    row.distribution_id = alice_dist;
    let mut batch = crate::store::Batch::default();
    batch.groups.insert(group, Some(row));
    mallory.store.commit(batch).await.unwrap();
    say(&relay, &mut mallory, group, "i am alice").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut mallory]).await;

    let refused = bob
        .events
        .iter()
        .any(|e| matches!(e, Event::DistributionRefused { from, from_device: 1, .. } if from == "mallory"));
    assert!(refused, "{:?}", bob.events);
    assert_eq!(texts(&bob, group).await, vec!["from alice".to_owned()], "nothing shown as Alice's");
    assert_eq!(
        bob.store.distribution(group, alice_dist).await.unwrap(),
        Some((alice.account, 1)),
        "the binding stays with Alice"
    );
    // Alice's next message still reads.
    say(&relay, &mut alice, group, "still alice").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut mallory]).await;
    assert_eq!(texts(&bob, group).await, vec!["from alice".to_owned(), "still alice".to_owned()]);
}

#[tokio::test]
async fn an_invite_from_a_stranger_waits_for_accept_and_decline_leaves() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let mut carol = relay.register("carol").await;
    for p in [&mut alice, &mut bob, &mut carol] {
        relay.connect(p).await;
    }
    // Neither Bob nor Carol has talked to Alice.
    let group = create(&mut relay, &mut alice, "party", &[&bob, &carol]).await;
    say(&relay, &mut alice, group, "welcome").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let name = ConversationId::group_name(group);
    for p in [&bob, &carol] {
        let invite = p
            .events
            .iter()
            .any(|e| matches!(e, Event::GroupInvite { group, from } if *group == name && from == "alice"));
        assert!(invite, "{:?}", p.events);
        assert!(p.machine.groups().await.unwrap().is_empty(), "hidden until accepted");
        assert_eq!(p.machine.invites().await.unwrap().len(), 1);
        assert!(group_events(p, group).is_empty(), "no message events for an invite");
        let err = p.machine.groups().await.unwrap();
        assert!(err.is_empty());
    }
    assert!(bob.machine.enqueue_group_text(group, "x", relay.now, &mut rand::rng()).await.is_err());

    // Bob accepts: the group appears with what arrived meanwhile, and he can write.
    bob.machine.accept_invite(group).await.unwrap();
    assert_eq!(bob.machine.groups().await.unwrap().len(), 1);
    assert_eq!(texts(&bob, group).await, vec!["welcome".to_owned()]);
    say(&relay, &mut bob, group, "thanks").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    assert_eq!(texts(&alice, group).await, vec!["welcome".to_owned(), "thanks".to_owned()]);

    // Carol declines: she leaves the group.
    let op = carol.machine.decline_invite(group).await.unwrap();
    done(&mut relay, &mut carol, op).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    assert!(!relay.groups[&group].members.contains_key(&carol.account));
    assert_eq!(carol.machine.group_info(group).await.unwrap().unwrap().state, GroupState::Left);
    assert!(carol.machine.invites().await.unwrap().is_empty());
    assert_eq!(resumed(&carol, group).await, 0, "a declined invite's messages stay hidden");
    assert_eq!(resumed(&bob, group).await, 2, "an accepted one's are there");
    let last = alice.machine.group_history(group, 100).await.unwrap().pop().unwrap();
    assert_eq!((last.kind, last.body.as_str()), (MessageKind::System, "carol left"));
}

#[tokio::test]
async fn members_added_later_get_the_key_and_roles_change() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let mut dave = relay.register("dave").await;
    contact(&relay, &mut bob, &alice).await;
    contact(&relay, &mut dave, &alice).await;
    for p in [&mut alice, &mut bob, &mut dave] {
        relay.connect(p).await;
    }
    let group = create(&mut relay, &mut alice, "g", &[&bob]).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut dave]).await;
    say(&relay, &mut bob, group, "just us").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut dave]).await;
    let to_dave = contact(&relay, &mut alice, &dave).await;
    let op = alice.machine.add_members(group, &[to_dave]).await.unwrap();
    done(&mut relay, &mut alice, op).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut dave]).await;
    // Dave learned the title from Alice's distribution before anyone spoke.
    let info = dave.machine.group_info(group).await.unwrap().unwrap();
    assert_eq!((info.title.as_str(), info.members.len()), ("g", 3));
    say(&relay, &mut bob, group, "hi dave").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut dave]).await;
    assert_eq!(texts(&dave, group).await, vec!["hi dave".to_owned()]);
    assert_eq!(texts(&alice, group).await, vec!["just us".to_owned(), "hi dave".to_owned()]);

    let op = alice.machine.set_role(group, bob.account, GroupRole::Admin).await.unwrap();
    done(&mut relay, &mut alice, op).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut dave]).await;
    let info = dave.machine.group_info(group).await.unwrap().unwrap();
    let bob_role = info.members.iter().find(|m| m.username == "bob").unwrap().role;
    assert_eq!(bob_role, GroupRole::Admin);
    let last = dave.machine.group_history(group, 100).await.unwrap().pop().unwrap();
    assert_eq!(last.body, "alice made bob an admin");

    let op = bob.machine.set_group_title(group, "renamed", &mut rand::rng()).await.unwrap();
    done(&mut relay, &mut bob, op).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut dave]).await;
    assert_eq!(dave.machine.group_info(group).await.unwrap().unwrap().title, "renamed");
    // A member may not change roles: the server's refusal comes back as the outcome.
    let op = dave.machine.set_role(group, bob.account, GroupRole::Member).await.unwrap();
    relay.settle(&mut [&mut dave]).await;
    let outcome = dave.machine.take_completions().into_iter().find(|(id, _)| *id == op);
    assert!(matches!(outcome, Some((_, Err(crate::error::MachineError::Rest(ref f)))) if f.code == "forbidden"));
}

#[tokio::test]
async fn a_group_whose_create_answer_was_lost_still_gets_its_key_to_the_members() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    contact(&relay, &mut bob, &alice).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    relay.lose_rest_answers = 1;
    let op = alice.machine.create_group("lost", &[to_bob], &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert!(alice.machine.take_completions().iter().all(|(id, _)| *id != op), "the answer never came");
    let group = *relay.groups.keys().next().unwrap();
    // Alice's device learned the group from the roster change and took the key it had kept.
    assert_eq!(alice.machine.group_info(group).await.unwrap().unwrap().title, "lost");
    assert_eq!(bob.machine.group_info(group).await.unwrap().unwrap().title, "lost");
    say(&relay, &mut alice, group, "found").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(texts(&bob, group).await, vec!["found".to_owned()]);
}

#[tokio::test]
async fn reading_a_group_sends_read_receipts_to_each_author() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let mut carol = relay.register("carol").await;
    contact(&relay, &mut bob, &alice).await;
    contact(&relay, &mut carol, &alice).await;
    for p in [&mut alice, &mut bob, &mut carol] {
        relay.connect(p).await;
    }
    let group = create(&mut relay, &mut alice, "g", &[&bob, &carol]).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    say(&relay, &mut alice, group, "from alice").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    say(&relay, &mut bob, group, "from bob").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    carol.machine.mark_group_read(group, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let read = |p: &Party| {
        p.events
            .iter()
            .any(|e| matches!(e, Event::Receipt(r) if r.kind == crate::types::ReceiptKind::Read && r.from == "carol"))
    };
    assert!(read(&alice) && read(&bob), "each author is told");
    let history = carol.machine.group_history(group, 10).await.unwrap();
    assert!(
        history.iter().filter(|m| m.kind == MessageKind::Text).all(|m| m.status == crate::types::MessageStatus::Read)
    );
}

/// Group texts `messages_after` gives (what an app resuming from its cursor sees).
async fn resumed(p: &Party, group: Uuid) -> usize {
    let name = ConversationId::group_name(group);
    let all = p.machine.messages_after(0, 100).await.unwrap();
    all.into_iter().filter(|m| m.conversation == name && m.kind == MessageKind::Text).count()
}

#[tokio::test]
async fn redelivered_group_envelopes_after_lost_acks_and_a_crash_show_nothing_twice() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    contact(&relay, &mut bob, &alice).await;
    relay.connect(&mut alice).await;
    bob.acks_reach_server = false;
    relay.connect(&mut bob).await;
    let group = create(&mut relay, &mut alice, "g", &[&bob]).await;
    for i in 0..5 {
        say(&relay, &mut alice, group, &format!("m{i}")).await;
    }
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(group_events(&bob, group).len(), 5);
    assert!(relay.mailbox_len(bob.account, 1) > 5, "nothing was acked");

    let mut bob2 = Relay::party(bob.store.clone(), bob.account, 1).await;
    relay.connect(&mut bob2).await;
    relay.settle(&mut [&mut alice, &mut bob2]).await;
    assert!(group_events(&bob2, group).is_empty(), "{:?}", bob2.events);
    assert_eq!(relay.mailbox_len(bob.account, 1), 0);
    let expected: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&bob2, group).await, expected);
    let system = bob2.machine.group_history(group, 100).await.unwrap();
    assert_eq!(system.iter().filter(|m| m.kind == MessageKind::System).count(), 1, "the roster change once");
}
