//! Mailbox upkeep: expiry and removing devices.

use hush_server::store::{Mismatch, PreKeyUploadRecord, SendRejection, Store, StoreError};

use super::{ALL, NO_SEQS, ROOMY, T0, accepted, commit, create, dk, mailbox, one_time, record, send, seqs_in, to};

pub async fn expire_removes_exactly_the_due_envelopes(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    for expires in [10, 20, 30] {
        let mut item = send(dk(bob, 1), vec![to(alice, &[(1, 100), (2, 102)], &format!("until {expires}"))]);
        item.expires_at = T0 + expires;
        accepted(commit(store, item, ROOMY).await);
    }
    let (one, two) = (mailbox(store, dk(alice, 1)).await, mailbox(store, dk(alice, 2)).await);
    store.ack(&[(two, vec![1])]).await.unwrap();
    assert_eq!(store.envelope_count().await.unwrap(), 5);

    assert_eq!(store.expire(T0 + 9).await.unwrap(), 0);
    assert_eq!(store.expire(T0 + 20).await.unwrap(), 3, "expiry at or before now");
    assert_eq!(seqs_in(store, one).await, [3]);
    assert_eq!(seqs_in(store, two).await, [3]);
    assert_eq!(store.envelope_count().await.unwrap(), 2);
    assert_eq!(store.expire(T0 + 20).await.unwrap(), 0, "nothing twice");

    assert_eq!(store.expire(T0 + 1_000).await.unwrap(), 2);
    assert_eq!(store.envelope_count().await.unwrap(), 0);
    let item = send(dk(bob, 1), vec![to(alice, &[(1, 100), (2, 102)], "later")]);
    let seqs: Vec<_> = accepted(commit(store, item, ROOMY).await).iter().map(|c| c.envelope.seq).collect();
    assert_eq!(seqs, [4, 4], "seqs go on after expiry");
}

pub async fn expiry_makes_room_in_a_full_mailbox(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let item = |expires| {
        let mut item = send(dk(bob, 1), vec![to(alice, &[(1, 100)], "x")]);
        item.expires_at = expires;
        item
    };
    accepted(commit(store, item(T0 + 10), 2).await);
    accepted(commit(store, item(T0 + 10), 2).await);
    assert_eq!(commit(store, item(T0 + 10), 2).await.unwrap_err(), SendRejection::MailboxFull(vec![dk(alice, 1)]));

    assert_eq!(store.expire(T0 + 10).await.unwrap(), 2);
    assert_eq!(store.envelope_count().await.unwrap(), 0);
    let committed = accepted(commit(store, item(T0 + 50), 2).await);
    assert_eq!(committed[0].envelope.seq, 3);
    accepted(commit(store, item(T0 + 50), 2).await);
    assert_eq!(commit(store, item(T0 + 50), 2).await.unwrap_err(), SendRejection::MailboxFull(vec![dk(alice, 1)]));
}

pub async fn removing_a_device_deletes_its_mailbox_and_prekeys(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let mut second = record(102);
    second.one_time_prekeys = vec![one_time(1), one_time(2)];
    store.add_device(alice, &second, 6).await.unwrap();
    let upload = PreKeyUploadRecord { one_time_prekeys: vec![one_time(3)], ..Default::default() };
    store.upload_prekeys(dk(alice, 2), &upload).await.unwrap();
    for n in 0..2 {
        accepted(
            commit(store, send(dk(bob, 1), vec![to(alice, &[(1, 100), (2, 102)], &format!("m{n}"))]), ROOMY).await,
        );
    }
    let (one, two) = (mailbox(store, dk(alice, 1)).await, mailbox(store, dk(alice, 2)).await);
    assert_eq!(store.envelope_count().await.unwrap(), 4);

    assert!(store.remove_device(dk(alice, 2)).await.unwrap());
    assert!(!store.remove_device(dk(alice, 2)).await.unwrap(), "already gone");
    assert!(!store.remove_device(dk(alice, 7)).await.unwrap());

    assert_eq!(store.device(dk(alice, 2)).await.unwrap(), None);
    assert_eq!(seqs_in(store, two).await, NO_SEQS, "its mailbox is gone");
    assert_eq!(seqs_in(store, one).await, [1, 2], "other mailboxes stay");
    assert_eq!(store.envelope_count().await.unwrap(), 2);
    let got = store.prekey_counts(dk(alice, 2)).await;
    assert!(matches!(got, Err(StoreError::UnknownDevice)), "got {got:?}");
    let got = store.take_bundles(alice, Some(2), ALL).await;
    assert!(matches!(got, Err(StoreError::UnknownDevice)), "got {got:?}");
    let bundles = store.take_bundles(alice, None, ALL).await.unwrap();
    assert_eq!(bundles.iter().map(|b| b.device_id).collect::<Vec<_>>(), [1]);

    let outcome = commit(store, send(dk(bob, 1), vec![to(alice, &[(1, 100), (2, 102)], "late")]), ROOMY).await;
    let expected = Mismatch { account: alice, missing: vec![], extra: vec![2], stale: vec![] };
    assert_eq!(outcome.unwrap_err(), SendRejection::DeviceMismatch(vec![expected]));

    assert_eq!(store.add_device(alice, &record(202), 6).await.unwrap(), 2);
    let fresh = store.prekey_counts(dk(alice, 2)).await.unwrap();
    assert_eq!((fresh.ec, fresh.kyber), (0, 0), "the next device 2 inherits no prekeys");
}

pub async fn batched_reads_answer_each_read_as_a_single_one_would(store: &dyn Store) {
    use hush_server::store::MailboxRead;
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    for i in 0..5 {
        accepted(
            commit(store, send(dk(bob, 1), vec![to(alice, &[(1, 100), (2, 102)], &format!("m{i}"))]), ROOMY).await,
        );
    }
    let (one, two) = (mailbox(store, dk(alice, 1)).await, mailbox(store, dk(alice, 2)).await);
    let empty = mailbox(store, dk(bob, 1)).await;
    let reads = [
        MailboxRead { mailbox: one, after_seq: 0, limit: 2 },
        MailboxRead { mailbox: two, after_seq: 3, limit: 100 },
        MailboxRead { mailbox: empty, after_seq: 0, limit: 100 },
        // The same mailbox twice (an old and a new connection of one device).
        MailboxRead { mailbox: one, after_seq: 4, limit: 100 },
    ];
    let batched = store.fetch_many(&reads).await.unwrap();
    assert_eq!(batched.len(), reads.len());
    for (read, got) in reads.iter().zip(&batched) {
        let single = store.fetch(read.mailbox, read.after_seq, read.limit).await.unwrap();
        assert_eq!(got, &single, "{read:?}");
    }
    let seqs: Vec<Vec<u64>> = batched.iter().map(|b| b.iter().map(|e| e.seq).collect()).collect();
    assert_eq!(seqs, [vec![1, 2], vec![4, 5], vec![], vec![5]]);
    assert!(store.fetch_many(&[]).await.unwrap().is_empty());

    let unknown = dk(uuid::Uuid::new_v4(), 1);
    let devices = store.devices_by_keys(&[dk(alice, 2), unknown, dk(bob, 1), dk(alice, 2)]).await.unwrap();
    let keys: Vec<_> = devices.iter().map(|d| d.as_ref().map(|d| d.key)).collect();
    assert_eq!(keys, [Some(dk(alice, 2)), None, Some(dk(bob, 1)), Some(dk(alice, 2))]);
    assert_eq!(devices[0], store.device(dk(alice, 2)).await.unwrap(), "the same record as a single lookup");
    assert!(store.devices_by_keys(&[]).await.unwrap().is_empty());
}
