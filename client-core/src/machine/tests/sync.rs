//! Several devices of one account in step: read and trust syncs, sent transcripts.

use super::relay::{Party, Relay};
use super::{bodies, contact, send};
use crate::store::ClientStore;
use crate::types::{ConversationId, Event, MessageDirection, ReceiptKind, TrustState};

fn read_receipts(events: &[Event]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| if let Event::Receipt(r) = e { Some(r) } else { None })
        .filter(|r| r.kind == ReceiptKind::Read)
        .map(|r| r.message_ids.len())
        .collect()
}

/// Alice with two devices and Bob, all online and known to each other.
async fn two_devices() -> (Relay, Party, Party, Party) {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut alice2 = relay.link_device(&alice, 2).await;
    let mut bob = relay.register("bob").await;
    let _ = contact(&relay, &mut alice, &bob).await;
    let _ = contact(&relay, &mut alice2, &bob).await;
    let _ = contact(&relay, &mut bob, &alice).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut alice2).await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    (relay, alice, alice2, bob)
}

#[tokio::test]
async fn reading_on_one_device_clears_unread_on_the_other_with_one_receipt() {
    let (mut relay, mut alice, mut alice2, mut bob) = two_devices().await;
    let to_alice = bob.store.contact_by_username("alice").await.unwrap().unwrap();
    send(&relay, &mut bob, &to_alice, "one").await;
    send(&relay, &mut bob, &to_alice, "two").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    let chat = ConversationId::Direct(bob.account);
    assert_eq!(alice.machine.unread(chat).await.unwrap(), 2);
    assert_eq!(alice2.machine.unread(chat).await.unwrap(), 2);

    let to_bob = alice.store.contact_by_username("bob").await.unwrap().unwrap();
    alice.machine.mark_read(&to_bob, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    assert_eq!(alice.machine.unread(chat).await.unwrap(), 0);
    assert_eq!(alice2.machine.unread(chat).await.unwrap(), 0);
    let synced: Vec<_> = alice2.events.iter().filter(|e| matches!(e, Event::ReadElsewhere { .. })).collect();
    assert_eq!(synced.len(), 1, "{:?}", alice2.events);
    assert!(matches!(synced[0], Event::ReadElsewhere { conversation, message_ids }
        if conversation == "bob" && message_ids.len() == 2));
    assert_eq!(read_receipts(&bob.events), vec![2], "one read receipt, from the reading device only");

    // Reading again on the other device has nothing left to read: no receipt, no sync.
    alice2.machine.mark_read(&to_bob, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    assert_eq!(read_receipts(&bob.events), vec![2]);
    assert_eq!(relay.mailbox_len(alice.account, 1), 0);
}

#[tokio::test]
async fn a_read_sync_does_not_mark_a_message_that_arrived_after_the_read() {
    let (mut relay, mut alice, mut alice2, mut bob) = two_devices().await;
    let to_alice = bob.store.contact_by_username("alice").await.unwrap().unwrap();
    send(&relay, &mut bob, &to_alice, "seen").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    // Device 1 goes offline before "later" arrives; it reads what it has.
    relay.disconnect(&mut alice);
    send(&relay, &mut bob, &to_alice, "later").await;
    relay.settle(&mut [&mut alice2, &mut bob]).await;
    let chat = ConversationId::Direct(bob.account);
    assert_eq!(alice2.machine.unread(chat).await.unwrap(), 2);
    let to_bob = alice.store.contact_by_username("bob").await.unwrap().unwrap();
    alice.machine.mark_read(&to_bob, relay.now, &mut rand::rng()).await.unwrap();
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    assert_eq!(alice.machine.unread(chat).await.unwrap(), 1, "\"later\" arrived after the read");
    assert_eq!(alice2.machine.unread(chat).await.unwrap(), 1, "only what device 1 read is read on device 2");
    let unread: Vec<_> = alice2
        .machine
        .history(&to_bob, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.status == crate::types::MessageStatus::Received)
        .map(|m| m.body)
        .collect();
    assert_eq!(unread, vec!["later".to_owned()]);
}

#[tokio::test]
async fn a_sync_on_an_account_with_one_device_is_not_sent() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_alice = contact(&relay, &mut bob, &alice).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    send(&relay, &mut bob, &to_alice, "hi").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    let to_bob = alice.store.contact_by_username("bob").await.unwrap().unwrap();
    alice.machine.mark_read(&to_bob, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(read_receipts(&bob.events), vec![1]);
    assert!(alice.store.outbox_head().await.unwrap().is_none(), "nothing left in the outbox");
    assert!(alice.machine.is_idle().await.unwrap());
}

/// Bob reinstalls (a new identity key) and writes to both of Alice's devices, which block him.
async fn bob_reinstalls(relay: &mut Relay, alice: &mut Party, alice2: &mut Party, bob: &mut Party) -> Party {
    relay.disconnect(bob);
    let mut bob2 = relay.register_as("bob", bob.account).await;
    relay.connect(&mut bob2).await;
    let to_alice = contact(relay, &mut bob2, alice).await;
    send(relay, &mut bob2, &to_alice, "new phone").await;
    relay.settle(&mut [alice, alice2, &mut bob2]).await;
    for device in [&*alice, &*alice2] {
        let bob = device.store.contact_by_username("bob").await.unwrap().unwrap();
        assert_eq!(bob.trust, TrustState::Changed, "device {}", device.device);
    }
    bob2
}

#[tokio::test]
async fn trusting_on_one_device_trusts_on_the_other() {
    let (mut relay, mut alice, mut alice2, mut bob) = two_devices().await;
    let mut bob2 = bob_reinstalls(&mut relay, &mut alice, &mut alice2, &mut bob).await;
    let changed = alice.store.contact_by_username("bob").await.unwrap().unwrap();
    alice.machine.trust(&changed, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob2]).await;
    let on_2 = alice2.store.contact_by_username("bob").await.unwrap().unwrap();
    assert_eq!(on_2.trust, TrustState::Trusted);
    assert!(alice2.events.contains(&Event::TrustedElsewhere { username: "bob".into() }), "{:?}", alice2.events);
    // Device 2 can write to Bob's new install at once.
    send(&relay, &mut alice2, &on_2, "hello new phone").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob2]).await;
    assert_eq!(bodies(&bob2.events), vec!["hello new phone".to_owned()]);
}

#[tokio::test]
async fn a_trust_sync_for_another_key_than_the_known_one_is_ignored() {
    let (mut relay, mut alice, mut alice2, mut bob) = two_devices().await;
    let mut bob2 = bob_reinstalls(&mut relay, &mut alice, &mut alice2, &mut bob).await;
    // Device 2 knows yet another key for Bob (as if it saw a later reinstall first).
    let other = libsignal_protocol::IdentityKeyPair::generate(&mut rand::rng());
    let mut batch = crate::store::Batch::default();
    batch.identities.insert(hush_keys::aci_string(bob.account), other.identity_key().serialize().to_vec());
    alice2.store.commit(batch).await.unwrap();

    let changed = alice.store.contact_by_username("bob").await.unwrap().unwrap();
    alice.machine.trust(&changed, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob2]).await;
    assert_eq!(alice.store.contact_by_username("bob").await.unwrap().unwrap().trust, TrustState::Trusted);
    let on_2 = alice2.store.contact_by_username("bob").await.unwrap().unwrap();
    assert_eq!(on_2.trust, TrustState::Changed, "device 2 never saw the key device 1 trusted");
    assert!(!alice2.events.iter().any(|e| matches!(e, Event::TrustedElsewhere { .. })));
    assert_eq!(relay.mailbox_len(alice.account, 2), 0, "the sync was received and dropped");
}

#[tokio::test]
async fn transcripts_keep_the_conversation_order_on_every_device_and_come_once() {
    let (mut relay, mut alice, mut alice2, mut bob) = two_devices().await;
    let to_alice = bob.store.contact_by_username("alice").await.unwrap().unwrap();
    let a1_to_bob = alice.store.contact_by_username("bob").await.unwrap().unwrap();
    let a2_to_bob = alice2.store.contact_by_username("bob").await.unwrap().unwrap();
    send(&relay, &mut alice, &a1_to_bob, "a1").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    send(&relay, &mut bob, &to_alice, "b1").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    send(&relay, &mut alice2, &a2_to_bob, "a2").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    send(&relay, &mut alice, &a1_to_bob, "a3").await;
    send(&relay, &mut bob, &to_alice, "b2").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    // A lost ack makes the server deliver device 2's whole backlog again: nothing twice.
    relay.disconnect(&mut alice2);
    relay.connect(&mut alice2).await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;

    let view = |h: Vec<crate::types::MessageRecord>| {
        h.into_iter().map(|m| (m.body, m.direction == MessageDirection::Outgoing)).collect::<Vec<_>>()
    };
    let on_1 = view(alice.machine.history(&a1_to_bob, 100).await.unwrap());
    let on_2 = view(alice2.machine.history(&a2_to_bob, 100).await.unwrap());
    let on_bob: Vec<_> = view(bob.machine.history(&to_alice, 100).await.unwrap())
        .into_iter()
        .map(|(body, outgoing)| (body, !outgoing))
        .collect();
    assert_eq!(on_1.len(), 5, "{on_1:?}");
    assert_eq!(on_1, on_2);
    assert_eq!(on_1, on_bob);
    let a2_copies = alice.events.iter().filter(|e| matches!(e, Event::Message(m) if m.body == "a2")).count();
    assert_eq!(a2_copies, 1);
}

#[tokio::test]
async fn a_device_added_after_the_first_message_gets_later_transcripts() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    send(&relay, &mut alice, &to_bob, "before").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;

    let mut alice3 = relay.link_device(&alice, 3).await;
    let _ = contact(&relay, &mut alice3, &bob).await;
    relay.connect(&mut alice3).await;
    send(&relay, &mut alice, &to_bob, "after").await;
    relay.settle(&mut [&mut alice, &mut alice3, &mut bob]).await;
    assert_eq!(bodies(&bob.events), vec!["before".to_owned(), "after".to_owned()]);
    assert_eq!(bodies(&alice3.events), vec!["after".to_owned()], "the new device gets what is sent after it");
}

#[tokio::test]
async fn reading_a_group_on_one_device_clears_it_on_the_other_with_receipts_from_the_reader_only() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut alice2 = relay.link_device(&alice, 2).await;
    let mut bob = relay.register("bob").await;
    contact(&relay, &mut bob, &alice).await;
    contact(&relay, &mut alice2, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut alice2).await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    let group = super::groups::create(&mut relay, &mut alice, "friends", &[&bob]).await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    super::groups::say(&relay, &mut bob, group, "g1").await;
    super::groups::say(&relay, &mut bob, group, "g2").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    let chat = ConversationId::Group(group);
    assert_eq!(alice.machine.unread(chat).await.unwrap(), 2);
    assert_eq!(alice2.machine.unread(chat).await.unwrap(), 2);

    alice.machine.mark_group_read(group, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    assert_eq!(alice.machine.unread(chat).await.unwrap(), 0);
    assert_eq!(alice2.machine.unread(chat).await.unwrap(), 0);
    let name = ConversationId::group_name(group);
    assert!(
        alice2.events.iter().any(|e| matches!(e, Event::ReadElsewhere { conversation, .. } if *conversation == name))
    );
    assert_eq!(read_receipts(&bob.events), vec![2]);
}

/// Regression: hushd wants every own other device in a stored send, and receipts listed none,
/// so the receipts of an account with two devices were refused until they were dropped.
#[tokio::test]
async fn receipts_from_an_account_with_two_devices_reach_the_sender() {
    let (mut relay, mut alice, mut alice2, mut bob) = two_devices().await;
    let to_alice = bob.store.contact_by_username("alice").await.unwrap().unwrap();
    send(&relay, &mut bob, &to_alice, "hello").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    let delivered: Vec<u32> = bob
        .events
        .iter()
        .filter_map(|e| if let Event::Receipt(r) = e { Some(r) } else { None })
        .filter(|r| r.kind == ReceiptKind::Delivered)
        .map(|r| r.from_device)
        .collect();
    assert_eq!(delivered.len(), 2, "one from each of Alice's devices: {delivered:?}");
    assert!(alice.store.outbox_head().await.unwrap().is_none());
    assert!(alice2.store.outbox_head().await.unwrap().is_none());
}
