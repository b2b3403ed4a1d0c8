//! Linking: single-use link tokens, provisioning channels, device names.

use hush_server::store::{LINK_TOKEN_KEEP_MS, LinkDevice, LinkError, NewLinkToken, Store, StoreError};
use uuid::Uuid;

use super::{T0, create, dk, record};

fn token(account: Uuid, byte: u8, expires_at: u64) -> NewLinkToken {
    NewLinkToken { hash: [byte; 32], account, expires_at }
}

fn link<'a>(account: Uuid, byte: u8, device: &'a hush_server::store::NewDeviceRecord, now_ms: u64) -> LinkDevice<'a> {
    LinkDevice { account, token_hash: [byte; 32], device, max_devices: 6, now_ms }
}

pub async fn a_link_token_adds_one_device_once(store: &dyn Store) {
    let alice = create(store, "alice").await;
    store.create_link_token(&token(alice, 1, T0 + 1000)).await.unwrap();
    let device = record(102);
    assert_eq!(store.link_device(&link(alice, 1, &device, T0)).await.unwrap(), 2);
    let got = store.device(dk(alice, 2)).await.unwrap().unwrap();
    assert_eq!((got.registration_id, got.auth_key), (102, device.auth_key));
    let again = store.link_device(&link(alice, 1, &record(103), T0)).await;
    assert!(matches!(again, Err(LinkError::UsedToken)), "got {again:?}");
    assert_eq!(store.devices(alice).await.unwrap().len(), 2);
}

pub async fn unknown_expired_and_foreign_tokens_are_refused_and_add_nothing(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.create_link_token(&token(alice, 1, T0 + 1000)).await.unwrap();
    let device = record(102);
    let unknown = store.link_device(&link(alice, 9, &device, T0)).await;
    assert!(matches!(unknown, Err(LinkError::UnknownToken)), "got {unknown:?}");
    let foreign = store.link_device(&link(bob, 1, &device, T0)).await;
    assert!(matches!(foreign, Err(LinkError::UnknownToken)), "alice's token names alice only: {foreign:?}");
    let expired = store.link_device(&link(alice, 1, &device, T0 + 1000)).await;
    assert!(matches!(expired, Err(LinkError::ExpiredToken)), "got {expired:?}");
    assert_eq!(store.devices(alice).await.unwrap().len(), 1);
    assert_eq!(store.devices(bob).await.unwrap().len(), 1);
}

pub async fn a_full_account_keeps_its_token_unused(store: &dyn Store) {
    let alice = create(store, "alice").await;
    for r in 102..=106 {
        store.add_device(alice, &record(r), 6).await.unwrap();
    }
    store.create_link_token(&token(alice, 1, T0 + 1000)).await.unwrap();
    let full = store.link_device(&link(alice, 1, &record(107), T0)).await;
    assert!(matches!(full, Err(LinkError::Store(StoreError::TooManyDevices(6)))), "got {full:?}");
    assert!(store.remove_device(dk(alice, 3)).await.unwrap());
    assert_eq!(store.link_device(&link(alice, 1, &record(107), T0)).await.unwrap(), 3, "the token was not used up");
}

pub async fn two_concurrent_uses_of_a_token_add_one_device(store: &dyn Store) {
    let alice = create(store, "alice").await;
    store.create_link_token(&token(alice, 1, T0 + 1000)).await.unwrap();
    let (a, b) = (record(102), record(103));
    let (la, lb) = (link(alice, 1, &a, T0), link(alice, 1, &b, T0));
    let (first, second) = tokio::join!(store.link_device(&la), store.link_device(&lb));
    let won = [&first, &second].iter().filter(|r| r.is_ok()).count();
    let used = [&first, &second].iter().filter(|r| matches!(r, Err(LinkError::UsedToken))).count();
    assert_eq!((won, used), (1, 1), "got {first:?} and {second:?}");
    assert_eq!(store.devices(alice).await.unwrap().len(), 2);
}

pub async fn a_channel_is_claimed_once_and_not_after_expiry_or_close(store: &dyn Store) {
    store.open_channel("AAAAAAAAAAAAAAAAAAAAAA", "node-a", T0 + 1000).await.unwrap();
    store.open_channel("BBBBBBBBBBBBBBBBBBBBBB", "node-b", T0 + 1000).await.unwrap();
    store.open_channel("CCCCCCCCCCCCCCCCCCCCCC", "node-a", T0 + 1000).await.unwrap();
    assert_eq!(store.claim_channel("AAAAAAAAAAAAAAAAAAAAAA", T0).await.unwrap().as_deref(), Some("node-a"));
    assert_eq!(store.claim_channel("AAAAAAAAAAAAAAAAAAAAAA", T0).await.unwrap(), None, "an address takes one message");
    assert_eq!(store.claim_channel("BBBBBBBBBBBBBBBBBBBBBB", T0 + 1000).await.unwrap(), None, "expired");
    store.close_channel("CCCCCCCCCCCCCCCCCCCCCC").await.unwrap();
    assert_eq!(store.claim_channel("CCCCCCCCCCCCCCCCCCCCCC", T0).await.unwrap(), None, "closed");
    assert_eq!(store.claim_channel("DDDDDDDDDDDDDDDDDDDDDD", T0).await.unwrap(), None, "never opened");
}

pub async fn expiry_removes_due_channels_and_old_tokens(store: &dyn Store) {
    let alice = create(store, "alice").await;
    store.open_channel("AAAAAAAAAAAAAAAAAAAAAA", "node-a", T0 + 1000).await.unwrap();
    store.open_channel("BBBBBBBBBBBBBBBBBBBBBB", "node-a", T0 + 5000).await.unwrap();
    store.create_link_token(&token(alice, 1, T0 + 1000)).await.unwrap();
    assert_eq!(store.expire_links(T0 + 1000).await.unwrap(), 1, "one channel; the token is kept a while");
    let device = record(102);
    let late = store.link_device(&link(alice, 1, &device, T0 + 2000)).await;
    assert!(matches!(late, Err(LinkError::ExpiredToken)), "an expired token is still told apart: {late:?}");
    assert_eq!(store.expire_links(T0 + 1000 + LINK_TOKEN_KEEP_MS).await.unwrap(), 2);
    let gone = store.link_device(&link(alice, 1, &device, T0 + 2000)).await;
    assert!(matches!(gone, Err(LinkError::UnknownToken)), "got {gone:?}");
    assert_eq!(store.claim_channel("BBBBBBBBBBBBBBBBBBBBBB", T0).await.unwrap(), None);
}

pub async fn a_device_is_renamed_and_its_name_removed(store: &dyn Store) {
    let alice = create(store, "alice").await;
    assert!(store.rename_device(dk(alice, 1), Some("laptop")).await.unwrap());
    assert_eq!(store.device(dk(alice, 1)).await.unwrap().unwrap().name.as_deref(), Some("laptop"));
    assert!(store.rename_device(dk(alice, 1), None).await.unwrap());
    assert_eq!(store.device(dk(alice, 1)).await.unwrap().unwrap().name, None);
    assert!(!store.rename_device(dk(alice, 9), Some("x")).await.unwrap(), "no device 9");
}
