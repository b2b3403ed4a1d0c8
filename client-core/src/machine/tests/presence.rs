//! Presence between two machines through the in-memory relay, on the relay's fake clock.

use uuid::Uuid;

use super::relay::{Party, Relay};
use super::{contact, send};
use crate::presence::{Presence, PresenceTiming};
use crate::store::ClientStore as _;
use crate::types::Event;

const MINUTE: u64 = 60_000;

/// Presence events about `contact` seen by `party`, in order.
fn presence_events(party: &Party, contact: &str) -> Vec<Presence> {
    party
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Presence { contact: c, presence } if c == contact => Some(*presence),
            _ => None,
        })
        .collect()
}

/// Online-only sends made by `account` so far.
fn online_only_sends(relay: &Relay, account: Uuid) -> usize {
    relay.send_flags.iter().filter(|(a, online_only, _)| *a == account && *online_only).count()
}

/// Alice and Bob with a one-to-one conversation, both offline, presence active (as an app
/// that stays connected), nothing announced yet.
async fn pair(relay: &mut Relay) -> (Party, Party) {
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    send(relay, &mut alice, &to_bob, "hi").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    relay.disconnect(&mut alice);
    relay.disconnect(&mut bob);
    assert!(presence_events(&bob, "alice").is_empty(), "inactive machines announce nothing");
    for p in [&mut alice, &mut bob] {
        p.machine.set_presence_timing(PresenceTiming::default());
        p.machine.set_presence_active(true);
        p.events.clear();
    }
    (alice, bob)
}

/// Bob connects, then Alice: both see each other online.
async fn both_online(relay: &mut Relay, alice: &mut Party, bob: &mut Party) {
    relay.connect(bob).await;
    relay.settle(&mut [&mut *alice, &mut *bob]).await;
    relay.connect(alice).await;
    relay.settle(&mut [&mut *alice, &mut *bob]).await;
}

#[tokio::test]
async fn a_connecting_client_is_seen_online_and_learns_who_is_online_from_the_probe_answer() {
    let mut relay = Relay::new();
    let (mut alice, mut bob) = pair(&mut relay).await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(online_only_sends(&relay, bob.account), 1, "Bob's announcement (to no one online)");
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(presence_events(&bob, "alice"), [Presence::Online]);
    assert_eq!(presence_events(&alice, "bob"), [Presence::Online], "Bob answered Alice's probe");
    assert_eq!(bob.machine.presence(alice.account), Presence::Online);
    assert_eq!(alice.machine.presence(bob.account), Presence::Online);
    assert_eq!(online_only_sends(&relay, bob.account), 2, "one answer");
    assert_eq!(online_only_sends(&relay, alice.account), 1, "Alice does not answer Bob's answer");
    assert_eq!(relay.mailbox_len(bob.account, 1), 0, "nothing stored");
}

#[tokio::test]
async fn a_probe_is_answered_once_a_minute_at_most() {
    let mut relay = Relay::new();
    let (mut alice, mut bob) = pair(&mut relay).await;
    both_online(&mut relay, &mut alice, &mut bob).await;
    assert_eq!(online_only_sends(&relay, bob.account), 2);

    // Alice's connection flaps: she probes again within the minute; Bob does not answer.
    relay.disconnect(&mut alice);
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(online_only_sends(&relay, alice.account), 2);
    assert_eq!(online_only_sends(&relay, bob.account), 2, "throttled");

    relay.advance(MINUTE, &mut [&mut alice, &mut bob]).await;
    relay.disconnect(&mut alice);
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(online_only_sends(&relay, bob.account), 3, "answered again a minute later");
    assert_eq!(presence_events(&bob, "alice"), [Presence::Online], "no event while nothing changes");
}

#[tokio::test]
async fn heartbeats_keep_a_contact_online_without_events_and_silence_makes_it_offline() {
    let mut relay = Relay::new();
    let (mut alice, mut bob) = pair(&mut relay).await;
    both_online(&mut relay, &mut alice, &mut bob).await;
    let before = online_only_sends(&relay, alice.account);
    for _ in 0..4 {
        relay.advance(2 * MINUTE, &mut [&mut alice, &mut bob]).await;
    }
    assert_eq!(online_only_sends(&relay, alice.account), before + 2, "a heartbeat every 4 minutes");
    assert_eq!(presence_events(&bob, "alice"), [Presence::Online], "heartbeats change nothing");

    // Alice's client crashes: nothing more is heard. Bob still shows her online until the
    // quiet period (9 minutes) has passed since her last heartbeat.
    relay.disconnect(&mut alice);
    let last_heard = relay.now;
    relay.advance(8 * MINUTE, &mut [&mut bob]).await;
    assert_eq!(bob.machine.presence(alice.account), Presence::Online);
    relay.advance(MINUTE, &mut [&mut bob]).await;
    assert_eq!(presence_events(&bob, "alice"), [Presence::Online, Presence::last_seen_at(last_heard)]);
    assert_eq!(bob.machine.presence(alice.account), Presence::last_seen_at(last_heard));
}

#[tokio::test]
async fn a_clean_disconnect_says_offline_at_once_and_last_seen_survives_a_restart() {
    let mut relay = Relay::new();
    let (mut alice, mut bob) = pair(&mut relay).await;
    both_online(&mut relay, &mut alice, &mut bob).await;
    alice.machine.going_offline(relay.now, &mut rand::rng()).await.unwrap();
    assert!(!alice.machine.offline_announced(), "waits for the server's answer");
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert!(alice.machine.offline_announced());
    let seen = Presence::last_seen_at(relay.now);
    assert_eq!(presence_events(&bob, "alice"), [Presence::Online, seen]);
    if let Presence::LastSeen { hour } = seen {
        assert_eq!(hour % crate::presence::HOUR_MS, 0, "never finer than the hour");
    }

    // Bob restarts: he still knows when he last saw her (never that she is online).
    let store = bob.store.clone();
    let bob2 = Relay::party(store, bob.account, 1).await;
    assert_eq!(bob2.machine.presence(alice.account), seen);
}

#[tokio::test]
async fn typing_from_a_contact_whose_presence_is_known_marks_it_online() {
    let mut relay = Relay::new();
    let (mut alice, mut bob) = pair(&mut relay).await;
    both_online(&mut relay, &mut alice, &mut bob).await;
    alice.machine.going_offline(relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut bob]).await;
    // Another of Alice's windows keeps typing on the same connection.
    let to_bob = alice.store.contact_by_username("bob").await.unwrap().unwrap();
    alice.machine.send_typing(&to_bob, true, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(presence_events(&bob, "alice").last(), Some(&Presence::Online));
}

#[tokio::test]
async fn with_sharing_off_no_one_sees_you_and_you_see_no_one() {
    let mut relay = Relay::new();
    let (mut alice, mut bob) = pair(&mut relay).await;
    both_online(&mut relay, &mut alice, &mut bob).await;

    alice.machine.set_presence_sharing(false, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert!(!alice.machine.presence_sharing());
    assert_eq!(presence_events(&bob, "alice"), [Presence::Online, Presence::Unknown], "told to forget");
    assert_eq!(presence_events(&alice, "bob"), [Presence::Online, Presence::Unknown], "Alice sees no one");
    let sent = online_only_sends(&relay, alice.account);

    // Alice reconnects: she announces nothing and answers no probe; Bob's presence is ignored.
    relay.advance(2 * MINUTE, &mut [&mut alice, &mut bob]).await;
    relay.disconnect(&mut alice);
    relay.disconnect(&mut bob);
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    relay.advance(5 * MINUTE, &mut [&mut alice, &mut bob]).await;
    assert_eq!(online_only_sends(&relay, alice.account), sent, "nothing sent while sharing is off");
    assert_eq!(bob.machine.presence(alice.account), Presence::Unknown);
    assert_eq!(alice.machine.presence(bob.account), Presence::Unknown);
    assert_eq!(presence_events(&alice, "bob"), [Presence::Online, Presence::Unknown]);

    // The setting is kept; turning it on again announces at once.
    let store = alice.store.clone();
    let restarted = Relay::party(store, alice.account, 1).await;
    assert!(!restarted.machine.presence_sharing());
    alice.machine.set_presence_sharing(true, relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(presence_events(&bob, "alice").last(), Some(&Presence::Online));
    assert_eq!(presence_events(&alice, "bob").last(), Some(&Presence::Online), "Bob answered her probe");
}

#[tokio::test]
async fn sharing_turned_off_while_offline_tells_contacts_on_the_next_connection_only() {
    let mut relay = Relay::new();
    let (mut alice, mut bob) = pair(&mut relay).await;
    both_online(&mut relay, &mut alice, &mut bob).await;
    relay.disconnect(&mut alice);
    alice.machine.set_presence_active(false);
    alice.machine.set_presence_sharing(false, relay.now, &mut rand::rng()).await.unwrap();
    let sent = online_only_sends(&relay, alice.account);
    // A drain-and-return run (inactive) is enough to tell them, once.
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(online_only_sends(&relay, alice.account), sent + 1);
    assert_eq!(presence_events(&bob, "alice"), [Presence::Online, Presence::Unknown]);
    relay.disconnect(&mut alice);
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(online_only_sends(&relay, alice.account), sent + 1, "told once");
}

#[tokio::test]
async fn a_contact_stays_online_while_any_of_its_devices_is() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut alice2 = relay.link_device(&alice, 2).await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    let _ = contact(&relay, &mut alice2, &bob).await;
    for p in [&mut alice, &mut alice2, &mut bob] {
        relay.connect(p).await;
    }
    send(&relay, &mut alice, &to_bob, "hello").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    let to_alice = bob.store.contact_by_username("alice").await.unwrap().unwrap();
    send(&relay, &mut bob, &to_alice, "hi both").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    for p in [&mut alice, &mut alice2, &mut bob] {
        relay.disconnect(p);
        p.machine.set_presence_active(true);
        p.events.clear();
    }
    relay.connect(&mut bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut alice2).await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    assert_eq!(presence_events(&bob, "alice"), [Presence::Online]);

    // One of her devices stops cleanly; the other is still online.
    alice.machine.going_offline(relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    assert_eq!(bob.machine.presence(alice.account), Presence::Online);
    alice2.machine.going_offline(relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    assert_eq!(presence_events(&bob, "alice"), [Presence::Online, Presence::last_seen_at(relay.now)]);
}
