//! Accounts and devices.

use hush_server::store::{Account, Device, Store, StoreError, day_floor};
use uuid::Uuid;

use super::{ALL, DAY, ROOMY, T0, accepted, commit, create, dk, mailbox, new_account, record, send, seqs_in, to};

pub async fn create_and_look_up_account(store: &dyn Store) {
    let new = new_account("alice");
    store.create_account(&new).await.unwrap();

    let expected = Account { id: new.id, username: "alice".into(), identity_key: new.identity_key.clone() };
    assert_eq!(store.account(new.id).await.unwrap(), Some(expected.clone()));
    assert_eq!(store.account_by_username("alice").await.unwrap(), Some(expected));
    assert_eq!(store.account(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(store.account_by_username("bob").await.unwrap(), None);

    let devices = store.devices(new.id).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].key, dk(new.id, 1), "the primary device is device 1");
    assert_eq!(devices[0].registration_id, 100);
}

pub async fn taken_username_stores_nothing(store: &dyn Store) {
    let first = new_account("alice");
    store.create_account(&first).await.unwrap();
    let mut second = new_account("alice");
    second.identity_key = vec![9; 33];
    second.device.registration_id = 555;

    let refused = store.create_account(&second).await;
    assert!(matches!(refused, Err(StoreError::UsernameTaken)), "got {refused:?}");

    assert_eq!(store.account(second.id).await.unwrap(), None);
    assert!(store.devices(second.id).await.unwrap().is_empty());
    assert!(matches!(store.take_bundles(second.id, None, ALL).await, Err(StoreError::UnknownAccount)));
    let owner = store.account_by_username("alice").await.unwrap().unwrap();
    assert_eq!((owner.id, owner.identity_key), (first.id, first.identity_key));
    let devices = store.devices(first.id).await.unwrap();
    assert_eq!(devices.iter().map(|d| d.registration_id).collect::<Vec<_>>(), [100]);
}

pub async fn add_device_takes_the_lowest_free_id(store: &dyn Store) {
    let alice = create(store, "alice").await;
    assert_eq!(store.add_device(alice, &record(102), 6).await.unwrap(), 2);
    assert_eq!(store.add_device(alice, &record(103), 6).await.unwrap(), 3);
    assert!(store.remove_device(dk(alice, 2)).await.unwrap());
    assert_eq!(store.add_device(alice, &record(104), 6).await.unwrap(), 2, "the freed id is reused");
    assert_eq!(store.add_device(alice, &record(105), 6).await.unwrap(), 4);

    let devices = store.devices(alice).await.unwrap();
    let ids: Vec<(u32, u32)> = devices.iter().map(|d| (d.key.device_id, d.registration_id)).collect();
    assert_eq!(ids, [(1, 100), (2, 104), (3, 103), (4, 105)]);
}

pub async fn add_device_refuses_beyond_max_devices(store: &dyn Store) {
    let alice = create(store, "alice").await;
    assert_eq!(store.add_device(alice, &record(102), 3).await.unwrap(), 2);
    assert_eq!(store.add_device(alice, &record(103), 3).await.unwrap(), 3);

    let refused = store.add_device(alice, &record(104), 3).await;
    assert!(matches!(refused, Err(StoreError::TooManyDevices(3))), "got {refused:?}");
    assert_eq!(store.devices(alice).await.unwrap().len(), 3, "nothing of the refused device is stored");

    assert!(store.remove_device(dk(alice, 3)).await.unwrap());
    assert_eq!(store.add_device(alice, &record(105), 3).await.unwrap(), 3, "a removed device frees its place");
}

pub async fn add_device_to_unknown_account_fails(store: &dyn Store) {
    let ghost = Uuid::new_v4();
    let refused = store.add_device(ghost, &record(102), 6).await;
    assert!(matches!(refused, Err(StoreError::UnknownAccount)), "got {refused:?}");
    assert!(store.devices(ghost).await.unwrap().is_empty());
}

pub async fn device_records_are_stored_as_given(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let mut second = record(16_383);
    second.name = None;
    second.auth_key = std::array::from_fn(|i| u8::try_from(i).unwrap());
    second.created_at = T0 + 42;
    assert_eq!(store.add_device(alice, &second, 6).await.unwrap(), 2);

    let devices = store.devices(alice).await.unwrap();
    assert_eq!(devices.len(), 2);
    let expected = [
        Device {
            key: dk(alice, 1),
            mailbox: devices[0].mailbox,
            registration_id: 100,
            auth_key: [100; 32],
            name: Some("device 100".into()),
            created_at: T0,
            last_seen: None,
        },
        Device {
            key: dk(alice, 2),
            mailbox: devices[1].mailbox,
            registration_id: 16_383,
            auth_key: second.auth_key,
            name: None,
            created_at: T0 + 42,
            last_seen: None,
        },
    ];
    assert_eq!(devices, expected);
    assert_ne!(devices[0].mailbox, devices[1].mailbox, "each device has its own mailbox");
    assert_ne!(mailbox(store, dk(bob, 1)).await, devices[0].mailbox);

    assert_eq!(store.device(dk(alice, 2)).await.unwrap().as_ref(), Some(&expected[1]));
    assert_eq!(store.device(dk(alice, 9)).await.unwrap(), None);
    assert_eq!(store.device(dk(Uuid::new_v4(), 1)).await.unwrap(), None);
    assert!(store.devices(Uuid::new_v4()).await.unwrap().is_empty());
}

pub async fn touch_device_keeps_day_precision(store: &dyn Store) {
    let alice = create(store, "alice").await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    let last_seen = |id| async move { store.device(dk(alice, id)).await.unwrap().unwrap().last_seen };

    let morning = T0 + 5 * 3_600_000 + 123;
    store.touch_device(dk(alice, 1), morning).await.unwrap();
    assert_eq!(last_seen(1).await, Some(day_floor(morning)));
    assert_eq!(last_seen(1).await, Some(T0));

    store.touch_device(dk(alice, 1), T0 + DAY - 1).await.unwrap();
    assert_eq!(last_seen(1).await, Some(T0), "later the same day");

    store.touch_device(dk(alice, 1), T0 + DAY + 3_600_000).await.unwrap();
    assert_eq!(last_seen(1).await, Some(T0 + DAY), "the next day");
    assert_eq!(last_seen(2).await, None, "other devices are untouched");
}

pub async fn reused_device_id_starts_an_empty_mailbox(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    for n in 0..3 {
        let item = send(dk(bob, 1), vec![to(alice, &[(1, 100), (2, 102)], &format!("old {n}"))]);
        accepted(commit(store, item, ROOMY).await);
    }
    assert_eq!(seqs_in(store, mailbox(store, dk(alice, 2)).await).await, [1, 2, 3]);

    assert!(store.remove_device(dk(alice, 2)).await.unwrap());
    assert_eq!(store.add_device(alice, &record(222), 6).await.unwrap(), 2);
    let fresh = mailbox(store, dk(alice, 2)).await;
    assert!(store.fetch(fresh, 0, 100).await.unwrap().is_empty(), "the new device inherits nothing");

    let item = send(dk(bob, 1), vec![to(alice, &[(1, 100), (2, 222)], "new")]);
    let committed = accepted(commit(store, item, ROOMY).await);
    let seq_of = |id| committed.iter().find(|c| c.device == dk(alice, id)).map(|c| c.envelope.seq);
    assert_eq!(seq_of(2), Some(1), "the new device's seqs start again at 1");
    assert_eq!(seq_of(1), Some(4), "the other device's seqs go on");
    let envelopes = store.fetch(fresh, 0, 100).await.unwrap();
    assert_eq!(envelopes.iter().map(|e| (e.seq, e.content.as_ref())).collect::<Vec<_>>(), [(1, b"new".as_slice())]);
}

/// Regression: SQLite reused the mailbox id of a removed device for the next one,
/// so a late ack for the old device could delete the new device's envelopes.
pub async fn mailbox_ids_are_never_reused(store: &dyn Store) {
    let alice = create(store, "alice").await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    let old = mailbox(store, dk(alice, 2)).await;
    assert!(store.remove_device(dk(alice, 2)).await.unwrap());
    store.add_device(alice, &record(202), 6).await.unwrap();
    let new = mailbox(store, dk(alice, 2)).await;
    assert_ne!(old, new, "a new device gets a mailbox id no earlier device had");
}
