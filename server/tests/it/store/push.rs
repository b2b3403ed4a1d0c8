//! Push targets: one per device, replaced, removed (conditionally), gone with the device.

use hush_server::store::{PushTarget, Store, StoreError};

use super::{T0, create, dk, record};

fn apns(token: &str) -> PushTarget {
    PushTarget::Apns { token: token.into(), topic: "org.example.hush".into(), sandbox: true }
}

pub async fn a_push_target_is_set_replaced_and_read_back_as_given(store: &dyn Store) {
    let alice = create(store, "alice").await;
    assert_eq!(store.push_target(dk(alice, 1)).await.unwrap(), None);
    for (n, target) in [
        apns("aa11"),
        PushTarget::Fcm { token: "fcm-token".into() },
        PushTarget::UnifiedPush { endpoint: "https://push.example/up/123".into() },
        PushTarget::Apns { token: "bb22".into(), topic: "org.example.other".into(), sandbox: false },
    ]
    .into_iter()
    .enumerate()
    {
        store.set_push_target(dk(alice, 1), &target, T0 + n as u64).await.unwrap();
        let got = store.push_target(dk(alice, 1)).await.unwrap().unwrap();
        assert_eq!((got.target, got.updated_at), (target, T0 + n as u64));
    }
}

pub async fn push_targets_are_per_device_and_unknown_devices_are_refused(store: &dyn Store) {
    let alice = create(store, "alice").await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    store.set_push_target(dk(alice, 2), &apns("22"), T0).await.unwrap();
    assert_eq!(store.push_target(dk(alice, 1)).await.unwrap(), None, "device 1 has none");
    let got = store.set_push_target(dk(alice, 9), &apns("99"), T0).await;
    assert!(matches!(got, Err(StoreError::UnknownDevice)), "got {got:?}");
    assert_eq!(store.push_target(dk(alice, 9)).await.unwrap(), None);
    assert!(!store.remove_push_target(dk(alice, 9), None).await.unwrap());
}

pub async fn removing_a_push_target_only_if_unchanged_keeps_a_newer_one(store: &dyn Store) {
    let alice = create(store, "alice").await;
    store.set_push_target(dk(alice, 1), &apns("old"), T0).await.unwrap();
    store.set_push_target(dk(alice, 1), &apns("new"), T0 + 1).await.unwrap();
    assert!(!store.remove_push_target(dk(alice, 1), Some(&apns("old"))).await.unwrap(), "a stale invalid-token answer");
    assert!(store.push_target(dk(alice, 1)).await.unwrap().is_some());
    assert!(store.remove_push_target(dk(alice, 1), Some(&apns("new"))).await.unwrap());
    assert_eq!(store.push_target(dk(alice, 1)).await.unwrap(), None);
    let up = PushTarget::UnifiedPush { endpoint: "https://push.example/x".into() };
    store.set_push_target(dk(alice, 1), &up, T0).await.unwrap();
    assert!(store.remove_push_target(dk(alice, 1), None).await.unwrap());
    assert!(!store.remove_push_target(dk(alice, 1), None).await.unwrap(), "already gone");
}

pub async fn a_removed_device_takes_its_push_target_and_a_reused_id_starts_without(store: &dyn Store) {
    let alice = create(store, "alice").await;
    store.add_device(alice, &record(102), 6).await.unwrap();
    store.set_push_target(dk(alice, 2), &apns("22"), T0).await.unwrap();
    assert!(store.remove_device(dk(alice, 2)).await.unwrap());
    assert_eq!(store.push_target(dk(alice, 2)).await.unwrap(), None);
    assert_eq!(store.add_device(alice, &record(103), 6).await.unwrap(), 2);
    assert_eq!(store.push_target(dk(alice, 2)).await.unwrap(), None, "the new device 2 has none");
}
