//! Prekeys: uploads, counts and bundles.

use futures_util::future::join_all;
use hush_server::store::{PreKeyCounts, PreKeyUploadRecord, Store, StoreError};
use uuid::Uuid;

use super::{ALL, dk, new_account, one_time, record, signed};

/// An account whose device 1 has one-time EC keys `ec` and one-time Kyber keys `kyber`.
async fn account_with_keys(store: &dyn Store, ec: &[u32], kyber: &[u32]) -> Uuid {
    let mut account = new_account("alice");
    account.device.one_time_prekeys = ec.iter().copied().map(one_time).collect();
    account.device.one_time_kyber_prekeys = kyber.iter().copied().map(signed).collect();
    store.create_account(&account).await.unwrap();
    account.id
}

pub async fn one_time_keys_are_handed_out_once_lowest_first(store: &dyn Store) {
    let alice = account_with_keys(store, &[7, 3, 5], &[20, 10]).await;
    let counts = |ec, kyber| PreKeyCounts { ec, kyber };
    assert_eq!(store.prekey_counts(dk(alice, 1)).await.unwrap(), counts(3, 2));

    let first = store.take_bundles(alice, Some(1), ALL).await.unwrap();
    assert_eq!(first.len(), 1);
    let first = &first[0];
    assert_eq!((first.device_id, first.registration_id), (1, 100));
    assert_eq!(first.signed_prekey, signed(1));
    assert_eq!(first.prekey, Some(one_time(3)));
    assert_eq!((&first.kyber_prekey, first.kyber_last_resort), (&signed(10), false));
    assert_eq!(store.prekey_counts(dk(alice, 1)).await.unwrap(), counts(2, 1));

    let second = store.take_bundles(alice, Some(1), ALL).await.unwrap().remove(0);
    assert_eq!(second.prekey, Some(one_time(5)));
    assert_eq!((&second.kyber_prekey, second.kyber_last_resort), (&signed(20), false));
    assert_eq!(store.prekey_counts(dk(alice, 1)).await.unwrap(), counts(1, 0));

    let third = store.take_bundles(alice, Some(1), ALL).await.unwrap().remove(0);
    assert_eq!(third.prekey, Some(one_time(7)));
    assert_eq!((&third.kyber_prekey, third.kyber_last_resort), (&signed(1000), true), "the last-resort key");
    assert_eq!(store.prekey_counts(dk(alice, 1)).await.unwrap(), counts(0, 0));

    for _ in 0..2 {
        let empty = store.take_bundles(alice, Some(1), ALL).await.unwrap().remove(0);
        assert_eq!(empty.prekey, None);
        assert_eq!((&empty.kyber_prekey, empty.kyber_last_resort), (&signed(1000), true), "never used up");
        assert_eq!(empty.signed_prekey, signed(1));
    }
}

pub async fn a_refused_device_gets_last_resort_keys_and_keeps_its_one_time_keys(store: &dyn Store) {
    let alice = account_with_keys(store, &[1, 2], &[10, 11]).await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    store
        .upload_prekeys(dk(alice, 2), &PreKeyUploadRecord { one_time_prekeys: vec![one_time(5)], ..Default::default() })
        .await
        .unwrap();
    let only_device_2 = |device_id: u32| device_id == 2;
    let bundles = store.take_bundles(alice, None, &only_device_2).await.unwrap();
    let first = &bundles[0];
    assert_eq!(first.device_id, 1);
    assert_eq!(first.prekey, None, "no one-time EC key for a refused device");
    assert_eq!((&first.kyber_prekey, first.kyber_last_resort), (&signed(1000), true));
    assert_eq!(first.signed_prekey, signed(1), "a session can still be started");
    assert_eq!(store.prekey_counts(dk(alice, 1)).await.unwrap(), PreKeyCounts { ec: 2, kyber: 2 }, "nothing taken");
    assert_eq!(bundles[1].prekey, Some(one_time(5)), "the allowed device hands out its key");
    assert_eq!(store.prekey_counts(dk(alice, 2)).await.unwrap(), PreKeyCounts { ec: 0, kyber: 0 });
}

pub async fn take_bundles_for_one_device_or_all(store: &dyn Store) {
    let alice = account_with_keys(store, &[1, 2], &[1, 2]).await;
    let mut second = record(102);
    second.one_time_prekeys = vec![one_time(11), one_time(12)];
    second.one_time_kyber_prekeys = vec![signed(11)];
    second.signed_prekey = signed(2);
    assert_eq!(store.add_device(alice, &second, 6).await.unwrap(), 2);

    let all = store.take_bundles(alice, None, ALL).await.unwrap();
    let summary: Vec<_> = all
        .iter()
        .map(|b| {
            (b.device_id, b.registration_id, b.signed_prekey.id, b.prekey.as_ref().map(|k| k.id), b.kyber_prekey.id)
        })
        .collect();
    assert_eq!(summary, [(1, 100, 1, Some(1), 1), (2, 102, 2, Some(11), 11)], "one bundle per device, in id order");

    let one = store.take_bundles(alice, Some(2), ALL).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!((one[0].device_id, one[0].prekey.clone()), (2, Some(one_time(12))));
    assert_eq!((&one[0].kyber_prekey, one[0].kyber_last_resort), (&signed(1000), true));

    assert_eq!(store.prekey_counts(dk(alice, 1)).await.unwrap(), PreKeyCounts { ec: 1, kyber: 1 });
    assert_eq!(store.prekey_counts(dk(alice, 2)).await.unwrap(), PreKeyCounts { ec: 0, kyber: 0 });
}

pub async fn upload_adds_one_time_keys_and_replaces_signed_ones(store: &dyn Store) {
    let alice = account_with_keys(store, &[1], &[1]).await;
    let mut replaced = one_time(1);
    replaced.public_key = b"replacement".to_vec();
    let upload = PreKeyUploadRecord {
        signed_prekey: Some(signed(50)),
        kyber_last_resort: Some(signed(60)),
        one_time_prekeys: vec![one_time(3), replaced.clone(), one_time(2)],
        one_time_kyber_prekeys: vec![signed(2)],
    };
    store.upload_prekeys(dk(alice, 1), &upload).await.unwrap();
    assert_eq!(store.prekey_counts(dk(alice, 1)).await.unwrap(), PreKeyCounts { ec: 3, kyber: 2 });

    let take = || async { store.take_bundles(alice, Some(1), ALL).await.unwrap().remove(0) };
    let first = take().await;
    assert_eq!(first.prekey, Some(replaced), "an upload with an existing id replaces that key");
    assert_eq!(first.signed_prekey, signed(50));
    assert_eq!((&first.kyber_prekey, first.kyber_last_resort), (&signed(1), false));
    let second = take().await;
    assert_eq!((second.prekey, second.kyber_prekey), (Some(one_time(2)), signed(2)));
    let third = take().await;
    assert_eq!(third.prekey, Some(one_time(3)));
    assert_eq!((&third.kyber_prekey, third.kyber_last_resort), (&signed(60), true), "the new last-resort key");

    store.upload_prekeys(dk(alice, 1), &PreKeyUploadRecord::default()).await.unwrap();
    let fourth = take().await;
    assert_eq!((fourth.prekey, fourth.signed_prekey), (None, signed(50)), "an empty upload changes nothing");

    store
        .upload_prekeys(dk(alice, 1), &PreKeyUploadRecord { one_time_prekeys: vec![one_time(9)], ..Default::default() })
        .await
        .unwrap();
    let fifth = take().await;
    assert_eq!((fifth.prekey, fifth.signed_prekey), (Some(one_time(9)), signed(50)), "refilled, signed key kept");
}

pub async fn prekey_calls_name_unknown_accounts_and_devices(store: &dyn Store) {
    let alice = account_with_keys(store, &[1], &[1]).await;
    let ghost = Uuid::new_v4();

    let got = store.take_bundles(ghost, None, ALL).await;
    assert!(matches!(got, Err(StoreError::UnknownAccount)), "got {got:?}");
    let got = store.take_bundles(ghost, Some(1), ALL).await;
    assert!(matches!(got, Err(StoreError::UnknownAccount)), "got {got:?}");
    let got = store.take_bundles(alice, Some(9), ALL).await;
    assert!(matches!(got, Err(StoreError::UnknownDevice)), "got {got:?}");
    let got = store.prekey_counts(dk(alice, 9)).await;
    assert!(matches!(got, Err(StoreError::UnknownDevice)), "got {got:?}");
    let got = store.prekey_counts(dk(ghost, 1)).await;
    assert!(matches!(got, Err(StoreError::UnknownDevice)), "got {got:?}");
    let upload = PreKeyUploadRecord { one_time_prekeys: vec![one_time(5)], ..Default::default() };
    let got = store.upload_prekeys(dk(alice, 9), &upload).await;
    assert!(matches!(got, Err(StoreError::UnknownDevice)), "got {got:?}");

    assert_eq!(store.prekey_counts(dk(alice, 1)).await.unwrap(), PreKeyCounts { ec: 1, kyber: 1 }, "untouched");
}

pub async fn concurrent_takers_never_share_a_key(store: &dyn Store) {
    let ids: Vec<u32> = (1..=20).collect();
    let alice = account_with_keys(store, &ids, &ids).await;

    let takers = (0..30).map(|_| store.take_bundles(alice, Some(1), ALL));
    let bundles: Vec<_> = join_all(takers).await.into_iter().map(|b| b.unwrap().remove(0)).collect();

    let mut ec: Vec<u32> = bundles.iter().filter_map(|b| b.prekey.as_ref().map(|k| k.id)).collect();
    ec.sort_unstable();
    assert_eq!(ec, ids, "every EC key handed out exactly once");
    let mut kyber: Vec<u32> = bundles.iter().filter(|b| !b.kyber_last_resort).map(|b| b.kyber_prekey.id).collect();
    kyber.sort_unstable();
    assert_eq!(kyber, ids, "every Kyber key handed out exactly once");
    assert_eq!(bundles.iter().filter(|b| b.kyber_last_resort).count(), 10);
    assert_eq!(store.prekey_counts(dk(alice, 1)).await.unwrap(), PreKeyCounts { ec: 0, kyber: 0 });
}
