//! Machine tests: machines wired back to back through an in-memory relay, no sockets.

#![allow(clippy::unwrap_used)]

mod groups;
mod outbox;
mod presence;
mod relay;
mod retry;
mod rotation;
mod streams;
mod sync;

use relay::{Party, Relay};

use crate::store::{ClientStore, ContactRow};
use crate::types::{Event, MessageDirection, MessageStatus, ReceiptKind, TrustState};

async fn contact(relay: &Relay, me: &mut Party, other: &Party) -> ContactRow {
    me.machine.learn_contact(&relay.info(other.account)).await.unwrap()
}

fn bodies(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| if let Event::Message(m) = e { Some(m.body.clone()) } else { None }).collect()
}

async fn send(relay: &Relay, from: &mut Party, to: &ContactRow, text: &str) {
    from.machine.enqueue_text(to, text, relay.now, &mut rand::rng()).await.unwrap();
}

#[tokio::test]
async fn offline_recipient_gets_every_message_once_and_in_order() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    for i in 0..30 {
        send(&relay, &mut alice, &to_bob, &format!("m{i}")).await;
        relay.settle(&mut [&mut alice]).await;
    }
    assert_eq!(relay.mailbox_len(bob.account, 1), 30);
    let sent = alice.events.iter().filter(|e| matches!(e, Event::Sent { .. })).count();
    assert_eq!(sent, 30);

    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    let expected: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&bob.events), expected);
    assert_eq!(relay.mailbox_len(bob.account, 1), 0, "every envelope is acked");
    let from = bob.events.iter().find_map(|e| if let Event::Message(m) = e { Some(m.from.clone()) } else { None });
    assert_eq!(from.as_deref(), Some("alice"), "the sender is named once the server confirms the username");

    // Both sides show the same conversation in the same order.
    let to_alice = bob.store.contact_by_username("alice").await.unwrap().unwrap();
    let bob_view: Vec<String> =
        bob.machine.history(&to_alice, 100).await.unwrap().into_iter().map(|m| m.body).collect();
    let alice_view: Vec<String> =
        alice.machine.history(&to_bob, 100).await.unwrap().into_iter().map(|m| m.body).collect();
    assert_eq!(bob_view, expected);
    assert_eq!(alice_view, expected);

    // Bob's client sent delivery receipts.
    let delivered: usize = alice
        .events
        .iter()
        .filter_map(|e| if let Event::Receipt(r) = e { Some(r) } else { None })
        .filter(|r| r.kind == ReceiptKind::Delivered)
        .map(|r| r.message_ids.len())
        .sum();
    assert_eq!(delivered, 30);
    let history = alice.machine.history(&to_bob, 100).await.unwrap();
    assert!(history.iter().all(|m| m.status == MessageStatus::Delivered), "{history:?}");
    assert!(bob.events.contains(&Event::QueueEmpty));
}

#[tokio::test]
async fn lost_acks_and_a_crash_show_nothing_twice() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    let _ = contact(&relay, &mut bob, &alice).await;
    relay.connect(&mut alice).await;
    for i in 0..10 {
        send(&relay, &mut alice, &to_bob, &format!("m{i}")).await;
    }
    relay.settle(&mut [&mut alice]).await;

    // Bob receives everything but no ack reaches the server.
    bob.acks_reach_server = false;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut bob]).await;
    assert_eq!(bodies(&bob.events).len(), 10);
    assert_eq!(relay.mailbox_len(bob.account, 1), 10);

    // Bob "crashes": a new machine on the same store; the server delivers everything again.
    let store = bob.store.clone();
    let mut bob2 = Relay::party(store, bob.account, 1).await;
    relay.connect(&mut bob2).await;
    relay.settle(&mut [&mut alice, &mut bob2]).await;
    assert!(bodies(&bob2.events).is_empty(), "redelivered envelopes are duplicates: {:?}", bodies(&bob2.events));
    assert_eq!(relay.mailbox_len(bob.account, 1), 0, "duplicates are acked");

    // New messages still flow.
    send(&relay, &mut alice, &to_bob, "after").await;
    relay.settle(&mut [&mut alice, &mut bob2]).await;
    assert_eq!(bodies(&bob2.events), vec!["after".to_owned()]);
}

#[tokio::test]
async fn a_resent_message_is_a_duplicate_by_message_id() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    send(&relay, &mut alice, &to_bob, "warm-up").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    send(&relay, &mut alice, &to_bob, "once").await;
    // The send reaches the server but the connection drops before the answer: Alice resends.
    let requests = alice.machine.take_requests();
    let frame = requests
        .into_iter()
        .find_map(|r| if let crate::machine::OutgoingRequest::Send(s) = r { Some(s) } else { None });
    relay.accept_and_lose_answer(&alice, frame.unwrap());
    relay.disconnect(&mut alice);
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(bodies(&bob.events), vec!["warm-up".to_owned(), "once".to_owned()]);
    assert_eq!(relay.mailbox_len(bob.account, 1), 0);
}

#[tokio::test]
async fn replies_and_conversation_order_agree_on_both_sides() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    let to_alice = contact(&relay, &mut bob, &alice).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    // Both write at once (concurrent Lamport clocks), then alternate.
    send(&relay, &mut alice, &to_bob, "a1").await;
    send(&relay, &mut bob, &to_alice, "b1").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    send(&relay, &mut bob, &to_alice, "b2").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    send(&relay, &mut alice, &to_bob, "a2").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    let a: Vec<String> = alice.machine.history(&to_bob, 10).await.unwrap().into_iter().map(|m| m.body).collect();
    let b: Vec<String> = bob.machine.history(&to_alice, 10).await.unwrap().into_iter().map(|m| m.body).collect();
    assert_eq!(a, b);
    assert_eq!(&a[2..], &["b2".to_owned(), "a2".to_owned()]);
}

#[tokio::test]
async fn own_other_devices_get_a_sent_transcript() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut alice2 = relay.link_device(&alice, 2).await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    let _ = contact(&relay, &mut alice2, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut alice2).await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    send(&relay, &mut alice, &to_bob, "hello").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    assert_eq!(bodies(&bob.events), vec!["hello".to_owned()]);
    let copies: Vec<_> =
        alice2.events.iter().filter_map(|e| if let Event::Message(m) = e { Some(m) } else { None }).collect();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].direction, MessageDirection::Outgoing);
    assert_eq!((copies[0].conversation.as_str(), copies[0].from.as_str()), ("bob", "alice"));

    // Bob's reply reaches both of Alice's devices (Bob learns device 2 from a device mismatch).
    let to_alice = bob.store.contact_by_username("alice").await.unwrap().unwrap();
    send(&relay, &mut bob, &to_alice, "hi both").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    assert_eq!(bodies(&alice.events), vec!["hi both".to_owned()]);
    assert_eq!(bodies(&alice2.events), vec!["hello".to_owned(), "hi both".to_owned()]);
}

#[tokio::test]
async fn a_changed_identity_key_blocks_sending_until_trusted() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    send(&relay, &mut alice, &to_bob, "before").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    let before = alice.machine.safety_number(&to_bob).await.unwrap().unwrap();

    // Bob reinstalls: same account, new identity key, new device keys.
    relay.disconnect(&mut bob);
    let mut bob2 = relay.register_as("bob", bob.account).await;
    relay.connect(&mut bob2).await;
    let to_alice = contact(&relay, &mut bob2, &alice).await;
    send(&relay, &mut bob2, &to_alice, "new phone").await;
    relay.settle(&mut [&mut alice, &mut bob2]).await;
    assert_eq!(bodies(&alice.events).last().map(String::as_str), Some("new phone"));
    assert!(alice.events.contains(&Event::IdentityChanged { username: "bob".into() }), "{:?}", alice.events);

    let blocked = alice.store.contact_by_username("bob").await.unwrap().unwrap();
    assert_eq!(blocked.trust, TrustState::Changed);
    let err = alice.machine.enqueue_text(&blocked, "x", relay.now, &mut rand::rng()).await;
    assert!(matches!(err, Err(crate::error::MachineError::IdentityUntrusted(_))), "{err:?}");
    let after = alice.machine.safety_number(&blocked).await.unwrap().unwrap();
    assert_ne!(before, after);

    alice.machine.trust(&blocked, relay.now, &mut rand::rng()).await.unwrap();
    let trusted = alice.store.contact_by_username("bob").await.unwrap().unwrap();
    send(&relay, &mut alice, &trusted, "welcome back").await;
    relay.settle(&mut [&mut alice, &mut bob2]).await;
    assert_eq!(bodies(&bob2.events), vec!["welcome back".to_owned()]);
}

#[tokio::test]
async fn safety_numbers_agree_on_both_sides() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    let to_alice = contact(&relay, &mut bob, &alice).await;
    let a = alice.machine.safety_number(&to_bob).await.unwrap().unwrap();
    let b = bob.machine.safety_number(&to_alice).await.unwrap().unwrap();
    assert_eq!(a, b);
    assert_eq!(a.digits.len(), 60);
    assert_eq!(a.grouped().split(' ').count(), 12);
}

#[tokio::test]
async fn prekeys_are_refilled_when_the_server_runs_low() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    relay.report_count = Some(9);
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice]).await;
    assert_eq!(relay.uploads, 1);
    let account = alice.store.account().await.unwrap().unwrap();
    assert_eq!(account.next_prekey_id, 201);
    relay.report_count = Some(10);
    relay.disconnect(&mut alice);
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice]).await;
    assert_eq!(relay.uploads, 1, "no refill at the threshold");
}

#[tokio::test]
async fn typing_is_online_only_and_not_stored() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    send(&relay, &mut alice, &to_bob, "hi").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    alice.machine.send_typing(&to_bob, true, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert!(bob.events.iter().any(|e| matches!(e, Event::Typing { typing: true, .. })), "{:?}", bob.events);
    relay.disconnect(&mut bob);
    alice.machine.send_typing(&to_bob, false, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice]).await;
    assert_eq!(relay.mailbox_len(bob.account, 1), 0);
}

#[tokio::test]
async fn read_receipts_reach_the_sender() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    send(&relay, &mut alice, &to_bob, "read me").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    let to_alice = bob.store.contact_by_username("alice").await.unwrap().unwrap();
    bob.machine.mark_read(&to_alice, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert!(alice.events.iter().any(|e| matches!(e, Event::Receipt(r) if r.kind == ReceiptKind::Read)));
    let history = alice.machine.history(&to_bob, 10).await.unwrap();
    assert_eq!(history[0].status, MessageStatus::Read);
}

#[tokio::test]
async fn a_key_change_seen_in_new_bundles_fails_the_message_with_the_reason_until_trusted() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    send(&relay, &mut alice, &to_bob, "before").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;

    // Bob reinstalls (new identity key and registration id) but says nothing.
    relay.disconnect(&mut bob);
    let mut bob2 = relay.register_as("bob", bob.account).await;
    relay.connect(&mut bob2).await;

    // Alice's send is refused (stale device), she fetches the new bundle and sees the new key.
    alice.events.clear();
    let id = alice.machine.enqueue_text(&to_bob, "are you there", relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut bob2]).await;
    assert!(alice.events.contains(&Event::IdentityChanged { username: "bob".into() }), "{:?}", alice.events);
    let failed = alice.events.iter().find_map(|e| match e {
        Event::SendFailed { id: failed, reason, .. } if *failed == id => Some(reason.clone()),
        _ => None,
    });
    assert!(failed.as_deref().is_some_and(|r| r.contains("identity key")), "{:?}", alice.events);
    assert!(bodies(&bob2.events).is_empty());
    let history = alice.machine.history(&to_bob, 10).await.unwrap();
    assert!(matches!(history.last().map(|m| &m.status), Some(MessageStatus::Failed(_))));

    // Retrying before trusting is refused; after trusting, the same message goes out.
    assert!(alice.machine.retry(id, relay.now, &mut rand::rng()).await.is_err());
    let changed = alice.store.contact_by_username("bob").await.unwrap().unwrap();
    alice.machine.trust(&changed, relay.now, &mut rand::rng()).await.unwrap();
    assert!(alice.machine.retry(id, relay.now, &mut rand::rng()).await.unwrap());
    relay.settle(&mut [&mut alice, &mut bob2]).await;
    assert_eq!(bodies(&bob2.events), vec!["are you there".to_owned()]);
    let history = alice.machine.history(&to_bob, 10).await.unwrap();
    assert_eq!(history.last().map(|m| m.status.clone()), Some(MessageStatus::Delivered));
}

#[tokio::test]
async fn a_rate_limited_send_waits_and_goes_out_in_order() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    relay.rate_limit_next = 2;
    send(&relay, &mut alice, &to_bob, "one").await;
    send(&relay, &mut alice, &to_bob, "two").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert!(bodies(&bob.events).is_empty(), "nothing goes out before retry_after");
    relay.advance(400, &mut [&mut alice, &mut bob]).await;
    assert!(bodies(&bob.events).is_empty());
    relay.advance(200, &mut [&mut alice, &mut bob]).await;
    relay.advance(600, &mut [&mut alice, &mut bob]).await;
    assert_eq!(bodies(&bob.events), vec!["one".to_owned(), "two".to_owned()]);
}

#[tokio::test]
async fn a_message_to_a_vanished_account_fails_for_good_with_the_reason() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let ghost = ContactRow { account_id: uuid::Uuid::new_v4(), username: "ghost".into(), trust: TrustState::Trusted };
    let mut batch = crate::store::Batch::default();
    batch.contacts.push(ghost.clone());
    alice.store.commit(batch).await.unwrap();
    relay.connect(&mut alice).await;
    let id = alice.machine.enqueue_text(&ghost, "hello?", relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice]).await;
    assert!(
        alice.events.iter().any(|e| matches!(e, Event::SendFailed { id: f, to, .. } if *f == id && to == "ghost")),
        "{:?}",
        alice.events
    );
    assert_eq!(alice.store.outbox_counts().await.unwrap(), (0, 1));
    assert!(alice.events.contains(&Event::QueueEmpty), "a failed message does not hold the queue");
}

#[tokio::test]
async fn an_envelope_older_than_the_certificate_lifetime_still_opens_and_the_certificate_is_renewed() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    send(&relay, &mut alice, &to_bob, "sent on day one").await;
    relay.settle(&mut [&mut alice]).await;

    // Two days later (the certificate lived one day) Bob comes online, and Alice writes again.
    relay.now += 48 * 3600 * 1000;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(bodies(&bob.events), vec!["sent on day one".to_owned()]);
    send(&relay, &mut alice, &to_bob, "sent on day three").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(bodies(&bob.events), vec!["sent on day one".to_owned(), "sent on day three".to_owned()]);
}

#[tokio::test]
async fn messages_are_sent_urgent_and_receipts_and_typing_are_not() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    send(&relay, &mut alice, &to_bob, "wake up").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    let from_alice: Vec<(bool, bool)> =
        relay.send_flags.iter().filter(|f| f.0 == alice.account).map(|f| (f.1, f.2)).collect();
    let from_bob: Vec<(bool, bool)> =
        relay.send_flags.iter().filter(|f| f.0 == bob.account).map(|f| (f.1, f.2)).collect();
    assert_eq!(from_alice, vec![(false, true)], "the message is a stored, urgent send");
    assert!(!from_bob.is_empty(), "bob sent a delivery receipt");
    assert!(from_bob.iter().all(|&(_, urgent)| !urgent), "receipts never wake a phone at once: {from_bob:?}");
}
