//! Sends: commit (one-to-one writes), check_devices, fetch and ack.

use bytes::Bytes;
use futures_util::future::join_all;
use hush_server::store::{Mismatch, SendItem, SendRejection, Store, StoredEnvelope, compare_device_sets};
use uuid::Uuid;

use super::{
    NO_SEQS, ROOMY, T0, accepted, commit, commit_all, create, dk, first_seq, mailbox, record, send, seqs_in, to,
};

pub async fn seqs_start_at_one_and_increase_per_device(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let mut sent = Vec::new();
    for n in 0..3u64 {
        let mut item = send(dk(bob, 1), vec![to(alice, &[(1, 100)], &format!("hello {n}"))]);
        item.server_ts = T0 + n;
        item.recipients[0].messages[0].kind = i32::try_from(n).unwrap() + 1;
        let committed = accepted(commit(store, item, ROOMY).await);
        assert_eq!(committed.len(), 1);
        assert_eq!(committed[0].device, dk(alice, 1));
        let expected = StoredEnvelope {
            seq: n + 1,
            server_ts: T0 + n,
            kind: i32::try_from(n).unwrap() + 1,
            content: Bytes::from(format!("hello {n}")),
            group: None,
        };
        assert_eq!(committed[0].envelope, expected);
        sent.push(expected);
    }
    let inbox = mailbox(store, dk(alice, 1)).await;
    assert_eq!(store.fetch(inbox, 0, 10).await.unwrap(), sent, "stored exactly as committed, oldest first");

    store.add_device(alice, &record(102), 6).await.unwrap();
    let item = send(dk(bob, 1), vec![to(alice, &[(1, 100), (2, 102)], "both")]);
    let committed = accepted(commit(store, item, ROOMY).await);
    let got: Vec<_> = committed.iter().map(|c| (c.device, c.envelope.seq)).collect();
    assert_eq!(got, [(dk(alice, 1), 4), (dk(alice, 2), 1)], "each device counts its own seqs");
}

pub async fn fetch_is_oldest_first_after_seq_and_limited(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    for n in 1..=5 {
        accepted(commit(store, send(dk(bob, 1), vec![to(alice, &[(1, 100)], &format!("m{n}"))]), ROOMY).await);
    }
    let inbox = mailbox(store, dk(alice, 1)).await;
    let page = |after, limit| async move {
        let envelopes = store.fetch(inbox, after, limit).await.unwrap();
        envelopes.iter().map(|e| (e.seq, String::from_utf8_lossy(&e.content).into_owned())).collect::<Vec<_>>()
    };
    assert_eq!(page(0, 2).await, [(1, "m1".to_owned()), (2, "m2".to_owned())]);
    assert_eq!(page(2, 2).await, [(3, "m3".to_owned()), (4, "m4".to_owned())]);
    assert_eq!(page(4, 10).await, [(5, "m5".to_owned())]);
    assert_eq!(page(5, 10).await, []);
    assert_eq!(page(0, 0).await, []);
}

pub async fn ack_deletes_only_the_given_seqs_of_the_given_mailbox(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    for n in 0..4 {
        accepted(
            commit(store, send(dk(bob, 1), vec![to(alice, &[(1, 100), (2, 102)], &format!("m{n}"))]), ROOMY).await,
        );
    }
    let (one, two) = (mailbox(store, dk(alice, 1)).await, mailbox(store, dk(alice, 2)).await);

    assert_eq!(store.ack(&[(one, vec![1, 3])]).await.unwrap(), 2);
    assert_eq!(seqs_in(store, one).await, [2, 4]);
    assert_eq!(seqs_in(store, two).await, [1, 2, 3, 4], "the same seqs in another mailbox stay");

    assert_eq!(store.ack(&[(one, vec![1, 3, 99])]).await.unwrap(), 0, "only envelopes that existed count");
    assert_eq!(store.ack(&[(two, vec![2]), (one, vec![2, 4, 4])]).await.unwrap(), 3);
    assert_eq!(seqs_in(store, one).await, NO_SEQS);
    assert_eq!(seqs_in(store, two).await, [1, 3, 4]);
    assert_eq!(store.envelope_count().await.unwrap(), 3);
    assert_eq!(store.ack(&[]).await.unwrap(), 0);
    assert_eq!(store.ack(&[(two, vec![])]).await.unwrap(), 0);
    assert_eq!(store.envelope_count().await.unwrap(), 3);
}

pub async fn device_mismatch_is_listed_and_nothing_is_stored(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    store.add_device(alice, &record(103), 6).await.unwrap();

    // Alice's device 2 is missing, 3 has a stale registration id, 4 does not exist.
    let to_alice = to(alice, &[(1, 100), (3, 999), (4, 104)], "x");
    let expected = Mismatch { account: alice, missing: vec![2], extra: vec![4], stale: vec![3] };
    let existing = [(1, 100), (2, 102), (3, 103)];
    assert_eq!(compare_device_sets(alice, &existing, &to_alice.messages, None).as_ref(), Some(&expected));

    let recipients = vec![to(carol, &[(1, 100)], "x"), to_alice];
    let outcome = commit(store, send(dk(bob, 1), recipients.clone()), ROOMY).await;
    assert_eq!(outcome.unwrap_err(), SendRejection::DeviceMismatch(vec![expected.clone()]));
    assert_eq!(store.envelope_count().await.unwrap(), 0);
    assert_eq!(
        seqs_in(store, mailbox(store, dk(carol, 1)).await).await,
        NO_SEQS,
        "the valid part is not stored either"
    );

    let checked = store.check_devices(dk(bob, 1), &recipients).await.unwrap();
    assert_eq!(checked, Err(SendRejection::DeviceMismatch(vec![expected])));

    // Two accounts wrong at once: both are listed.
    let both = vec![to(carol, &[(1, 101)], "x"), to(alice, &[(1, 100)], "x")];
    let outcome = commit(store, send(dk(bob, 1), both), ROOMY).await;
    let Err(SendRejection::DeviceMismatch(mut listed)) = outcome else { panic!("expected a mismatch: {outcome:?}") };
    listed.sort_by_key(|m| m.account);
    let mut want = vec![
        Mismatch { account: carol, missing: vec![], extra: vec![], stale: vec![1] },
        Mismatch { account: alice, missing: vec![2, 3], extra: vec![], stale: vec![] },
    ];
    want.sort_by_key(|m| m.account);
    assert_eq!(listed, want);
    assert_eq!(store.envelope_count().await.unwrap(), 0);
}

pub async fn own_account_excludes_the_sending_device(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    store.add_device(alice, &record(103), 6).await.unwrap();
    let me = dk(alice, 1);

    let recipients = vec![to(bob, &[(1, 100)], "hi"), to(alice, &[(2, 102), (3, 103)], "hi")];
    let committed = accepted(commit(store, send(me, recipients.clone()), ROOMY).await);
    let devices: Vec<_> = committed.iter().map(|c| c.device).collect();
    assert_eq!(devices, [dk(bob, 1), dk(alice, 2), dk(alice, 3)]);
    assert_eq!(seqs_in(store, mailbox(store, me).await).await, NO_SEQS, "the sender gets no copy");
    let checked = store.check_devices(me, &recipients).await.unwrap();
    assert_eq!(checked, Ok(vec![dk(bob, 1), dk(alice, 2), dk(alice, 3)]));

    let to_self = vec![to(alice, &[(1, 100), (2, 102), (3, 103)], "hi")];
    let outcome = commit(store, send(me, to_self), ROOMY).await;
    let expected = Mismatch { account: alice, missing: vec![], extra: vec![1], stale: vec![] };
    assert_eq!(outcome.unwrap_err(), SendRejection::DeviceMismatch(vec![expected]), "its own device is extra");

    let outcome = commit(store, send(me, vec![to(alice, &[(2, 102)], "hi")]), ROOMY).await;
    let expected = Mismatch { account: alice, missing: vec![3], extra: vec![], stale: vec![] };
    assert_eq!(outcome.unwrap_err(), SendRejection::DeviceMismatch(vec![expected]));

    // Another account naming alice must include device 1.
    let outcome = commit(store, send(dk(bob, 1), vec![to(alice, &[(2, 102), (3, 103)], "hi")]), ROOMY).await;
    let expected = Mismatch { account: alice, missing: vec![1], extra: vec![], stale: vec![] };
    assert_eq!(outcome.unwrap_err(), SendRejection::DeviceMismatch(vec![expected]));
    assert_eq!(store.envelope_count().await.unwrap(), 3);
}

pub async fn unknown_accounts_are_refused(store: &dyn Store) {
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    let ghost = Uuid::new_v4();
    let recipients = vec![to(carol, &[(1, 100)], "x"), to(ghost, &[(1, 100)], "x")];

    let outcome = commit(store, send(dk(bob, 1), recipients.clone()), ROOMY).await;
    assert_eq!(outcome.unwrap_err(), SendRejection::UnknownAccounts(vec![ghost]));
    assert_eq!(store.envelope_count().await.unwrap(), 0);
    let checked = store.check_devices(dk(bob, 1), &recipients).await.unwrap();
    assert_eq!(checked, Err(SendRejection::UnknownAccounts(vec![ghost])));
}

pub async fn full_mailbox_refuses_until_acked(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    let to_alice = || send(dk(bob, 1), vec![to(alice, &[(1, 100)], "x")]);
    for _ in 0..3 {
        accepted(commit(store, to_alice(), 3).await);
    }

    let outcome = commit(store, to_alice(), 3).await;
    assert_eq!(outcome.unwrap_err(), SendRejection::MailboxFull(vec![dk(alice, 1)]));
    let both = send(dk(bob, 1), vec![to(carol, &[(1, 100)], "x"), to(alice, &[(1, 100)], "x")]);
    let outcome = commit(store, both.clone(), 3).await;
    assert_eq!(outcome.unwrap_err(), SendRejection::MailboxFull(vec![dk(alice, 1)]));
    assert_eq!(
        seqs_in(store, mailbox(store, dk(carol, 1)).await).await,
        NO_SEQS,
        "nothing of a refused send is stored"
    );
    assert_eq!(store.envelope_count().await.unwrap(), 3);

    let online_only = store.check_devices(dk(bob, 1), &both.recipients).await.unwrap();
    assert_eq!(online_only, Ok(vec![dk(carol, 1), dk(alice, 1)]), "online-only sends are not stored, so not limited");

    assert_eq!(store.ack(&[(mailbox(store, dk(alice, 1)).await, vec![1])]).await.unwrap(), 1);
    let committed = accepted(commit(store, to_alice(), 3).await);
    assert_eq!(committed[0].envelope.seq, 4, "room again after an ack");
    assert_eq!(commit(store, to_alice(), 3).await.unwrap_err(), SendRejection::MailboxFull(vec![dk(alice, 1)]));
}

pub async fn batch_commits_or_refuses_each_item_on_its_own(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let ghost = Uuid::new_v4();
    let items = [
        send(dk(bob, 1), vec![to(alice, &[(1, 100)], "first")]),
        send(dk(bob, 1), vec![to(alice, &[(1, 555)], "stale")]),
        send(dk(bob, 1), vec![to(ghost, &[(1, 100)], "nobody")]),
        send(dk(bob, 1), vec![to(alice, &[(1, 100)], "second")]),
    ];
    let outcomes = commit_all(store, &items, ROOMY).await.unwrap();
    assert_eq!(outcomes.len(), 4, "one outcome per item, in order");
    let seq = |i: usize| first_seq(&outcomes[i]);
    assert_eq!(seq(0), Some(1));
    let stale = Mismatch { account: alice, missing: vec![], extra: vec![], stale: vec![1] };
    assert_eq!(outcomes[1].as_ref().unwrap_err(), &SendRejection::DeviceMismatch(vec![stale]));
    assert_eq!(outcomes[2].as_ref().unwrap_err(), &SendRejection::UnknownAccounts(vec![ghost]));
    assert_eq!(seq(3), Some(2), "items of one batch to one device get consecutive seqs");

    let stored = store.fetch(mailbox(store, dk(alice, 1)).await, 0, 10).await.unwrap();
    let contents: Vec<_> = stored.iter().map(|e| (e.seq, e.content.as_ref())).collect();
    assert_eq!(contents, [(1, b"first".as_slice()), (2, b"second".as_slice())]);
    assert!(commit_all(store, &[], ROOMY).await.unwrap().is_empty());
}

pub async fn batch_counts_its_own_envelopes_against_the_limit(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let items: Vec<SendItem> =
        (0..4).map(|n| send(dk(bob, 1), vec![to(alice, &[(1, 100)], &format!("m{n}"))])).collect();
    let outcomes = commit_all(store, &items, 3).await.unwrap();
    let seqs: Vec<_> = outcomes[..3].iter().map(first_seq).collect();
    assert_eq!(seqs, [Some(1), Some(2), Some(3)]);
    assert_eq!(outcomes[3].as_ref().unwrap_err(), &SendRejection::MailboxFull(vec![dk(alice, 1)]));
    assert_eq!(seqs_in(store, mailbox(store, dk(alice, 1)).await).await, [1, 2, 3]);
}

pub async fn check_devices_stores_nothing(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.add_device(alice, &record(102), 6).await.unwrap();

    let recipients = vec![to(alice, &[(2, 102), (1, 100)], "typing")];
    let checked = store.check_devices(dk(bob, 1), &recipients).await.unwrap();
    assert_eq!(checked, Ok(vec![dk(alice, 2), dk(alice, 1)]), "the devices to deliver to, in request order");
    let stale = vec![to(alice, &[(1, 100), (2, 1)], "typing")];
    let expected = Mismatch { account: alice, missing: vec![], extra: vec![], stale: vec![2] };
    let checked = store.check_devices(dk(bob, 1), &stale).await.unwrap();
    assert_eq!(checked, Err(SendRejection::DeviceMismatch(vec![expected])));

    assert_eq!(store.envelope_count().await.unwrap(), 0);
    for id in [1, 2] {
        assert_eq!(seqs_in(store, mailbox(store, dk(alice, id)).await).await, NO_SEQS);
    }
    let committed = accepted(commit(store, send(dk(bob, 1), recipients), ROOMY).await);
    assert!(committed.iter().all(|c| c.envelope.seq == 1), "checking used up no seq");
}

/// Many batches at once, half naming the accounts in one order and half in the other:
/// none deadlocks or fails, and every mailbox's seqs are 1..=n without a gap or a repeat.
pub async fn concurrent_crossing_batches_keep_seqs_unique(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let carol = create(store, "carol").await;
    let bob = create(store, "bob").await;
    const SENDS: usize = 24;
    let batches: Vec<Vec<SendItem>> = (0..SENDS)
        .map(|n| {
            let (a, c) = (to(alice, &[(1, 100)], &format!("a{n}")), to(carol, &[(1, 100)], &format!("c{n}")));
            let recipients = if n % 2 == 0 { vec![a, c] } else { vec![c, a] };
            vec![send(dk(bob, 1), recipients.clone()), send(dk(bob, 1), recipients)]
        })
        .collect();
    let results = join_all(batches.iter().map(|items| commit_all(store, items, ROOMY))).await;
    let mut alice_seqs = Vec::new();
    for outcome in results.into_iter().flat_map(|r| r.unwrap()) {
        for c in accepted(outcome) {
            if c.device == dk(alice, 1) {
                alice_seqs.push(c.envelope.seq);
            }
        }
    }
    alice_seqs.sort_unstable();
    let all: Vec<u64> = (1..=2 * SENDS as u64).collect();
    assert_eq!(alice_seqs, all);
    for account in [alice, carol] {
        assert_eq!(seqs_in(store, mailbox(store, dk(account, 1)).await).await, all);
    }
    assert_eq!(store.envelope_count().await.unwrap(), 4 * SENDS as u64);
}

/// Regression: a sender with other devices could leave its own account out of a
/// stored send, and those devices never saw the conversation.
pub async fn omitting_own_other_devices_is_a_mismatch(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    let me = dk(alice, 1);

    let only_bob = vec![to(bob, &[(1, 100)], "hi")];
    let outcome = commit(store, send(me, only_bob.clone()), ROOMY).await;
    let expected = Mismatch { account: alice, missing: vec![2], extra: vec![], stale: vec![] };
    assert_eq!(outcome.unwrap_err(), SendRejection::DeviceMismatch(vec![expected]));
    assert_eq!(store.envelope_count().await.unwrap(), 0, "nothing of a refused send is stored");

    // Online-only sends (typing) need not reach the sender's own devices.
    assert_eq!(store.check_devices(me, &only_bob).await.unwrap(), Ok(vec![dk(bob, 1)]));
    // Bob has a single device: leaving his own account out is fine.
    accepted(commit(store, send(dk(bob, 1), vec![to(alice, &[(1, 100), (2, 102)], "yo")]), ROOMY).await);
}
