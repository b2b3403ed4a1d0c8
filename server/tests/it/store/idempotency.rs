//! Idempotent sends: a resend with the same idempotency key is answered, not stored again.
//! Regression for "a resent send is stored twice" (822 duplicates in the crash test).

use bytes::Bytes;
use hush_server::store::{Accepted, IDEMPOTENCY_RETENTION_MS, SendItem, SendRejection, Store, TrustRootCheck};

use super::{ROOMY, T0, accepted, commit, commit_all, create, dk, mailbox, send, seqs_in, to};

fn keyed(mut item: SendItem, key: &str) -> SendItem {
    item.idempotency_key = Some(Bytes::from(key.to_owned()));
    item
}

fn duplicate_of(outcome: &hush_server::store::SendOutcome) -> Option<u64> {
    match outcome {
        Ok(Accepted::Duplicate { server_ts, .. }) => Some(*server_ts),
        _ => None,
    }
}

pub async fn resend_in_a_later_batch_is_answered_with_the_first_result(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let first = keyed(send(dk(bob, 1), vec![to(alice, &[(1, 100)], "hello")]), "outbox-7");
    assert_eq!(accepted(commit(store, first.clone(), ROOMY).await).len(), 1);
    // The answer was lost; the client reconnects and re-encrypts: new ciphertext, new time, same key.
    let mut resend = keyed(send(dk(bob, 1), vec![to(alice, &[(1, 100)], "hello again")]), "outbox-7");
    resend.server_ts = T0 + 60_000;
    let outcome = commit(store, resend, ROOMY).await;
    assert_eq!(duplicate_of(&outcome), Some(T0), "answered with the first send's timestamp: {outcome:?}");
    let inbox = mailbox(store, dk(alice, 1)).await;
    assert_eq!(seqs_in(store, inbox).await, [1], "stored once");
    let stored = store.fetch(inbox, 0, 10).await.unwrap();
    assert_eq!(stored[0].content, Bytes::from("hello"), "the first copy is the one kept");
}

pub async fn a_stored_key_is_found_without_a_commit_and_only_for_its_device(store: &dyn Store) {
    use hush_server::store::Write;
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let item = keyed(send(dk(bob, 1), vec![to(alice, &[(1, 100)], "hello")]), "outbox-3");
    assert_eq!(store.stored_answer(&Write::Direct(item.clone())).await.unwrap(), None, "not stored yet");
    accepted(commit(store, item.clone(), ROOMY).await);
    let mut resend = item.clone();
    resend.server_ts = T0 + 60_000;
    assert_eq!(store.stored_answer(&Write::Direct(resend)).await.unwrap(), Some((T0, None)));
    let mut other_device = item.clone();
    other_device.sender = dk(alice, 1);
    assert_eq!(store.stored_answer(&Write::Direct(other_device)).await.unwrap(), None);
    let mut unkeyed = item;
    unkeyed.idempotency_key = None;
    assert_eq!(store.stored_answer(&Write::Direct(unkeyed)).await.unwrap(), None);
    assert_eq!(seqs_in(store, mailbox(store, dk(alice, 1)).await).await, [1], "looking up stores nothing");
}

pub async fn resend_in_the_same_batch_is_stored_once(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let item = keyed(send(dk(bob, 1), vec![to(alice, &[(1, 100)], "hello")]), "k");
    let other = keyed(send(dk(bob, 1), vec![to(alice, &[(1, 100)], "other")]), "k2");
    let outcomes = commit_all(store, &[item.clone(), item, other], ROOMY).await.unwrap();
    assert!(matches!(outcomes[0], Ok(Accepted::Stored { .. })), "{outcomes:?}");
    assert_eq!(duplicate_of(&outcomes[1]), Some(T0), "{outcomes:?}");
    assert!(matches!(outcomes[2], Ok(Accepted::Stored { .. })), "another key is another send: {outcomes:?}");
    assert_eq!(seqs_in(store, mailbox(store, dk(alice, 1)).await).await, [1, 2]);
}

pub async fn a_refused_send_does_not_record_its_key(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    // A stale device set is refused; the client fixes it and retries with the same outbox id.
    let stale = keyed(send(dk(bob, 1), vec![to(alice, &[(1, 999)], "hello")]), "outbox-1");
    assert!(matches!(commit(store, stale, ROOMY).await, Err(SendRejection::DeviceMismatch(_))));
    let fixed = keyed(send(dk(bob, 1), vec![to(alice, &[(1, 100)], "hello")]), "outbox-1");
    assert_eq!(accepted(commit(store, fixed, ROOMY).await).len(), 1, "the retry is stored, not taken for a resend");
}

pub async fn the_same_key_from_another_device_is_another_send(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    accepted(commit(store, keyed(send(dk(bob, 1), vec![to(alice, &[(1, 100)], "from bob")]), "1"), ROOMY).await);
    let from_carol = keyed(send(dk(carol, 1), vec![to(alice, &[(1, 100)], "from carol")]), "1");
    accepted(commit(store, from_carol, ROOMY).await);
    assert_eq!(seqs_in(store, mailbox(store, dk(alice, 1)).await).await, [1, 2]);
}

pub async fn keys_are_forgotten_after_the_retention(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let mut item = keyed(send(dk(bob, 1), vec![to(alice, &[(1, 100)], "hello")]), "k");
    item.expires_at = T0 + 30 * IDEMPOTENCY_RETENTION_MS; // the envelopes outlive their key
    accepted(commit(store, item.clone(), ROOMY).await);
    store.expire(T0 + IDEMPOTENCY_RETENTION_MS - 1).await.unwrap();
    assert_eq!(duplicate_of(&commit(store, item.clone(), ROOMY).await), Some(T0), "still known just before");
    store.expire(T0 + IDEMPOTENCY_RETENTION_MS).await.unwrap();
    accepted(commit(store, item, ROOMY).await);
    assert_eq!(seqs_in(store, mailbox(store, dk(alice, 1)).await).await, [1, 2]);
}

pub async fn sends_without_a_key_are_never_deduplicated(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let item = send(dk(bob, 1), vec![to(alice, &[(1, 100)], "hello")]);
    let mut empty_key = item.clone();
    empty_key.idempotency_key = Some(Bytes::new());
    let outcomes = commit_all(store, &[item.clone(), item, empty_key.clone(), empty_key], ROOMY).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Ok(Accepted::Stored { .. }))), "{outcomes:?}");
    assert_eq!(seqs_in(store, mailbox(store, dk(alice, 1)).await).await, [1, 2, 3, 4]);
}

pub async fn trust_root_is_recorded_once_and_compared(store: &dyn Store) {
    assert_eq!(store.record_trust_root(&[5; 33]).await.unwrap(), TrustRootCheck::Recorded);
    assert_eq!(store.record_trust_root(&[5; 33]).await.unwrap(), TrustRootCheck::Matches);
    assert_eq!(
        store.record_trust_root(&[6; 33]).await.unwrap(),
        TrustRootCheck::Differs { recorded: vec![5; 33] },
        "the first one stays recorded"
    );
}
