//! The outbox under the server's limits: message sizes, refusals for good, full mailboxes,
//! cancel and retry. Nothing here may wedge the queue.

use super::relay::{Party, Relay};
use super::{bodies, contact};
use crate::error::MachineError;
use crate::machine::OutgoingRequest;
use crate::store::ClientStore;
use crate::types::{Event, MessageStatus, OutboxState};

fn failed(party: &Party) -> Vec<String> {
    party
        .events
        .iter()
        .filter_map(|e| if let Event::SendFailed { reason, .. } = e { Some(reason.clone()) } else { None })
        .collect()
}

fn delays(party: &Party) -> Vec<(String, u64)> {
    party
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SendDelayed { code, retry_in_ms, .. } => Some((code.clone(), *retry_in_ms)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_oversized_message_is_refused_before_it_is_queued_and_the_longest_text_named_goes_through() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;

    let huge = "x".repeat(300 * 1024);
    let err = alice.machine.enqueue_text(&to_bob, &huge, relay.now, &mut rand::rng()).await.unwrap_err();
    let MachineError::TooLarge(too_large) = err else { panic!("expected TooLarge, got {err:?}") };
    assert_eq!((too_large.size, too_large.devices), (huge.len(), 1));
    assert!(too_large.to_string().contains(&too_large.longest.to_string()), "{too_large}");
    assert!(too_large.to_string().contains("96 KiB") && too_large.to_string().contains("256 KiB"));
    assert_eq!(alice.store.outbox_counts().await.unwrap(), (0, 0), "nothing was queued");

    // One byte more than the longest is refused; the longest itself fits the real ciphertext
    // limits (the relay checks them as hushd does) and arrives.
    let over = "y".repeat(too_large.longest + 1);
    assert!(alice.machine.enqueue_text(&to_bob, &over, relay.now, &mut rand::rng()).await.is_err());
    let longest = "z".repeat(too_large.longest);
    alice.machine.enqueue_text(&to_bob, &longest, relay.now, &mut rand::rng()).await.unwrap();
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(relay.refused_too_large, 0);
    assert_eq!(bodies(&bob.events), vec![longest]);
}

#[tokio::test]
async fn the_longest_text_shrinks_with_the_device_count_and_still_fits_every_device() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let mut bob2 = relay.link_device(&bob, 2).await;
    let mut bob3 = relay.link_device(&bob, 3).await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    super::send(&relay, &mut alice, &to_bob, "hello").await;
    relay.settle(&mut [&mut alice]).await;

    // Alice now knows Bob's three devices: the 256 KiB per send binds before 96 KiB per device.
    let huge = "x".repeat(200 * 1024);
    let err = alice.machine.enqueue_text(&to_bob, &huge, relay.now, &mut rand::rng()).await.unwrap_err();
    let MachineError::TooLarge(too_large) = err else { panic!("expected TooLarge, got {err:?}") };
    assert_eq!(too_large.devices, 3);
    assert!(too_large.longest < 256 * 1024 / 3, "{too_large}");
    let longest = "z".repeat(too_large.longest);
    alice.machine.enqueue_text(&to_bob, &longest, relay.now, &mut rand::rng()).await.unwrap();
    relay.connect(&mut bob).await;
    relay.connect(&mut bob2).await;
    relay.connect(&mut bob3).await;
    relay.settle(&mut [&mut alice, &mut bob, &mut bob2, &mut bob3]).await;
    assert_eq!(relay.refused_too_large, 0);
    for device in [&bob, &bob2, &bob3] {
        assert_eq!(bodies(&device.events), vec!["hello".to_owned(), longest.clone()]);
    }
}

#[tokio::test]
async fn a_message_too_large_for_devices_learned_later_fails_alone_and_the_queue_moves_on() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let _bob2 = relay.link_device(&bob, 2).await;
    let _bob3 = relay.link_device(&bob, 3).await;
    let to_bob = contact(&relay, &mut alice, &bob).await;

    // Queued while Alice knows of no device of Bob's (so one is assumed): fits then.
    let big = "b".repeat(90 * 1024);
    let id = alice.machine.enqueue_text(&to_bob, &big, relay.now, &mut rand::rng()).await.unwrap();
    super::send(&relay, &mut alice, &to_bob, "after").await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;

    assert_eq!(relay.refused_too_large, 0, "refused by the client, not sent for the server to refuse");
    let reasons = failed(&alice);
    assert_eq!(reasons.len(), 1, "{:?}", alice.events);
    assert!(reasons[0].contains("too large"), "{reasons:?}");
    assert_eq!(bodies(&bob.events), vec!["after".to_owned()], "the next message went out");
    let status = alice.store.message(id).await.unwrap().unwrap().status;
    assert!(matches!(status, MessageStatus::Failed(_)), "{status:?}");
}

#[tokio::test]
async fn a_close_for_a_frame_too_large_fails_the_message_in_flight_not_the_account() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice]).await;
    let id = alice.machine.enqueue_text(&to_bob, "refused", relay.now, &mut rand::rng()).await.unwrap();
    // Bundles first, then the send; the server closes with 1009 instead of answering it.
    loop {
        let requests = alice.machine.take_requests();
        assert!(!requests.is_empty(), "the send never came out");
        if requests.iter().any(|r| matches!(r, OutgoingRequest::Send(_))) {
            break;
        }
        for r in requests {
            if let OutgoingRequest::Rest { id, call } = r {
                let answer = relay.rest(alice.account, alice.device, call);
                alice.machine.rest_response(id, answer, relay.now, &mut rand::rng()).await.unwrap();
            }
        }
    }
    alice.online = false;
    alice.machine.connection_closed(Some(hush_wire::close::TOO_BIG)).await.unwrap();
    alice.events.extend(alice.machine.take_events());
    assert_eq!(failed(&alice).len(), 1, "{:?}", alice.events);
    assert!(matches!(alice.store.message(id).await.unwrap().unwrap().status, MessageStatus::Failed(_)));

    super::send(&relay, &mut alice, &to_bob, "next").await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(bodies(&bob.events), vec!["next".to_owned()]);
}

#[tokio::test]
async fn a_full_mailbox_is_reported_retried_on_reconnect_and_within_a_minute_never_failed() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    relay.mailbox_full_next = 1;
    let id = alice.machine.enqueue_text(&to_bob, "waits", relay.now, &mut rand::rng()).await.unwrap();
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(delays(&alice), vec![("mailbox_full".to_owned(), 1000)]);
    let entry = alice.machine.outbox().await.unwrap().remove(0);
    assert_eq!((entry.id, entry.state), (id, OutboxState::Pending));
    assert!(entry.reason.unwrap_or_default().contains("mailbox"), "the reason is kept for `hush outbox`");

    // Many more refusals than the attempts a network failure gets: backoff capped at a minute.
    relay.mailbox_full_next = 12;
    relay.advance(1000, &mut [&mut alice, &mut bob]).await;
    while relay.mailbox_full_next > 1 {
        relay.advance(60_000, &mut [&mut alice, &mut bob]).await;
    }
    assert!(delays(&alice).iter().all(|(_, ms)| *ms <= 60_000), "{:?}", delays(&alice));
    assert!(failed(&alice).is_empty(), "a full mailbox never fails the message for good");
    assert!(bodies(&bob.events).is_empty());

    // The last refusal backs off a minute; a reconnect tries at once, without waiting it out.
    relay.advance(60_000, &mut [&mut alice, &mut bob]).await;
    assert_eq!(relay.mailbox_full_next, 0);
    relay.disconnect(&mut alice);
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(bodies(&bob.events), vec!["waits".to_owned()]);
}

#[tokio::test]
async fn outbox_lists_pending_and_failed_and_cancel_and_retry_act_on_one() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let to_bob = contact(&relay, &mut alice, &bob).await;
    let rng = &mut rand::rng();
    let first = alice.machine.enqueue_text(&to_bob, "first", relay.now, rng).await.unwrap();
    let second = alice.machine.enqueue_text(&to_bob, "second", relay.now, rng).await.unwrap();
    let listed: Vec<_> = alice.machine.outbox().await.unwrap().into_iter().map(|e| (e.id, e.to, e.body)).collect();
    assert_eq!(listed, vec![(first, "bob".into(), "first".into()), (second, "bob".into(), "second".into())]);

    assert!(alice.machine.cancel(first, relay.now, rng).await.unwrap());
    assert!(!alice.machine.cancel(first, relay.now, rng).await.unwrap(), "gone");
    assert_eq!(alice.store.message(first).await.unwrap().unwrap().status, MessageStatus::Failed("cancelled".into()));
    relay.connect(&mut alice).await;
    relay.connect(&mut bob).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(bodies(&bob.events), vec!["second".to_owned()]);
    assert!(alice.machine.outbox().await.unwrap().is_empty());
    assert!(!alice.machine.retry(first, relay.now, rng).await.unwrap(), "a cancelled message is not in the outbox");
}
