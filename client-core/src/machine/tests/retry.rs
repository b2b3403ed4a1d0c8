//! Undecryptable envelopes: the event, the retry request, the session rebuild, the resend,
//! and the limits that keep two broken clients from storming.

use super::relay::{Party, Relay};
use super::{bodies, contact, send};
use crate::machine::{MAX_REQUESTS_PER_WINDOW, RETRY_WINDOW_MS};
use crate::store::{Batch, ClientStore};
use crate::types::Event;

/// Drops `party`'s session with `other`'s device 1, as a lost or restored-from-backup store would.
async fn lose_session(party: &Party, other: &Party) {
    let mut batch = Batch::default();
    batch.sessions.insert((hush_keys::aci_string(other.account), 1), None);
    party.store.commit(batch).await.unwrap();
}

/// Makes `party` unable to decrypt anything new: no session with `other`, and a signed prekey
/// that no longer parses (so no new session from `other` can be opened either).
async fn break_for_good(party: &Party, other: &Party) {
    lose_session(party, other).await;
    let mut batch = Batch::default();
    batch.signed_pre_keys.insert(1, Some(vec![0xde, 0xad]));
    party.store.commit(batch).await.unwrap();
}

fn failures(events: &[Event]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::DecryptionFailed { from, retry_requested, .. } => Some((from.clone(), *retry_requested)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_lost_session_is_reported_rebuilt_and_the_message_resent_once() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let mut bob2 = relay.link_device(&bob, 2).await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    let to_alice = contact(&relay, &mut bob, &alice).await;
    let _ = contact(&relay, &mut bob2, &alice).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    relay.connect(&mut bob2).await;
    send(&relay, &mut alice, &to_bob, "hello").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut bob2]).await;
    assert_eq!(bodies(&bob.events), vec!["hello".to_owned()]);

    // Bob's first device loses its session with Alice; his second device is fine.
    lose_session(&bob, &alice).await;
    send(&relay, &mut alice, &to_bob, "lost").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut bob2]).await;

    assert_eq!(failures(&bob.events), vec![("alice".to_owned(), true)], "the user is told: {:?}", bob.events);
    let asked = bob.machine.retry_stats();
    assert_eq!((asked.undecryptable, asked.requests_sent), (1, 1));
    let answered = alice.machine.retry_stats();
    assert_eq!(answered.requests_received, 1, "the retry request reached Alice");
    assert_eq!(answered.sessions_rebuilt, 1, "Alice dropped the broken session");
    assert_eq!(answered.resends, 1, "Alice sent the message again from her resend log");
    assert_eq!(bodies(&bob.events), vec!["hello".to_owned(), "lost".to_owned()], "the resend arrives");
    assert_eq!(bodies(&bob2.events), vec!["hello".to_owned(), "lost".to_owned()], "the copy is a duplicate");
    assert!(failures(&bob2.events).is_empty());
    assert!(failures(&alice.events).is_empty());
    for device in [1, 2] {
        assert_eq!(relay.mailbox_len(bob.account, device), 0);
    }
    assert_eq!(alice.store.outbox_counts().await.unwrap(), (0, 0));

    // The new session works both ways, with nothing more to retry.
    send(&relay, &mut alice, &to_bob, "after").await;
    send(&relay, &mut bob, &to_alice, "reply").await;
    relay.settle(&mut [&mut alice, &mut bob, &mut bob2]).await;
    assert_eq!(bodies(&bob.events).last().map(String::as_str), Some("after"));
    assert_eq!(bodies(&alice.events), vec!["reply".to_owned()]);
    assert_eq!(failures(&bob.events).len(), 1);
    assert!(failures(&alice.events).is_empty());
    assert_eq!(alice.machine.retry_stats().resends, 1);
}

#[tokio::test]
async fn two_clients_that_cannot_decrypt_each_other_do_not_storm() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    let to_alice = contact(&relay, &mut bob, &alice).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    send(&relay, &mut alice, &to_bob, "hello").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    break_for_good(&alice, &bob).await;
    break_for_good(&bob, &alice).await;

    // One message each way: each is asked for once, resent once, asked for once more, and
    // then the exchange stops (`settle` panics if it never does).
    send(&relay, &mut alice, &to_bob, "one").await;
    send(&relay, &mut bob, &to_alice, "two").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    for (me, them) in [(&alice, &bob), (&bob, &alice)] {
        let mine = me.machine.retry_stats();
        let theirs = them.machine.retry_stats();
        assert_eq!(mine.requests_sent, 2, "the original and its resend: {mine:?}");
        assert_eq!(theirs.resends, 1, "a resend is never resent: {theirs:?}");
        assert_eq!(theirs.sessions_rebuilt, 1, "one rebuild per window: {theirs:?}");
    }
    assert_eq!(bodies(&bob.events), vec!["hello".to_owned()]);
    assert!(bodies(&alice.events).is_empty());

    // A burst of messages within the window: Bob asks at most MAX_REQUESTS_PER_WINDOW times.
    for i in 0..4 {
        send(&relay, &mut alice, &to_bob, &format!("burst {i}")).await;
    }
    relay.settle(&mut [&mut alice, &mut bob]).await;
    let stats = bob.machine.retry_stats();
    assert_eq!(stats.requests_sent, u64::from(MAX_REQUESTS_PER_WINDOW));
    assert!(stats.requests_limited > 0, "{stats:?}");
    let events = failures(&bob.events);
    assert_eq!(events.len() as u64, stats.undecryptable, "every failure is shown");
    assert!(events.iter().any(|(_, asked)| !asked), "limited failures say so: {events:?}");
    assert_eq!(relay.mailbox_len(bob.account, 1), 0, "every undecryptable envelope is acked");

    // After the window Bob may ask again.
    relay.advance(RETRY_WINDOW_MS, &mut [&mut alice, &mut bob]).await;
    send(&relay, &mut alice, &to_bob, "later").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert!(bob.machine.retry_stats().requests_sent > u64::from(MAX_REQUESTS_PER_WINDOW));
}

/// A copy sent to one's own other device (a sent transcript) that it cannot decrypt is resent
/// to that device, not to the contact the message was for.
#[tokio::test]
async fn a_transcript_an_own_device_could_not_decrypt_is_resent_to_that_device() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut alice2 = relay.link_device(&alice, 2).await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    let _ = contact(&relay, &mut alice2, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut alice2).await;
    relay.connect(&mut bob).await;
    send(&relay, &mut alice, &to_bob, "hello").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;
    assert_eq!(bodies(&alice2.events), vec!["hello".to_owned()], "the transcript reached the other device");

    // Alice's second device loses its session with her first.
    lose_session(&alice2, &alice).await;
    send(&relay, &mut alice, &to_bob, "lost").await;
    relay.settle(&mut [&mut alice, &mut alice2, &mut bob]).await;

    assert_eq!(failures(&alice2.events), vec![("alice".to_owned(), true)]);
    assert_eq!(alice.machine.retry_stats().resends, 1, "Alice's first device resent from its log");
    assert_eq!(bodies(&alice2.events), vec!["hello".to_owned(), "lost".to_owned()], "the resend reached device 2");
    assert_eq!(bodies(&bob.events), vec!["hello".to_owned(), "lost".to_owned()], "Bob saw each once");
    assert_eq!(alice.store.outbox_counts().await.unwrap(), (0, 0), "nothing left queued");
}
