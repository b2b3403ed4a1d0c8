//! Linking: single-use link tokens, provisioning channels, device names.

use hush_server::store::{
    ArchiveError, ArchiveKey, LINK_TOKEN_KEEP_MS, LinkDevice, LinkError, NewArchive, NewLinkToken, Store, StoreError,
};
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

fn archive(account: Uuid, byte: u8, max_bytes: u64) -> NewArchive {
    NewArchive { id: [byte; 16], account, max_bytes, expires_at: T0 + 1000 }
}

fn akey(account: Uuid, byte: u8) -> ArchiveKey {
    ArchiveKey { account, id: [byte; 16] }
}

pub async fn an_archive_is_uploaded_completed_read_and_deleted(store: &dyn Store) {
    let alice = create(store, "alice").await;
    store.create_archive(&archive(alice, 1, 100)).await.unwrap();
    let key = akey(alice, 1);
    store.put_archive_chunk(key, 1, b"second", T0).await.unwrap();
    store.put_archive_chunk(key, 0, b"first, to be replaced", T0).await.unwrap();
    store.put_archive_chunk(key, 0, b"first", T0).await.unwrap();
    assert_eq!(store.archive_chunk(key, 0, T0).await.unwrap(), None, "not readable before it is complete");
    let short = store.complete_archive(key, 3, T0).await;
    assert!(matches!(short, Err(ArchiveError::Incomplete)), "chunk 2 is missing: {short:?}");
    let fewer = store.complete_archive(key, 1, T0).await;
    assert!(matches!(fewer, Err(ArchiveError::Incomplete)), "chunk 1 is beyond the count: {fewer:?}");
    store.complete_archive(key, 2, T0).await.unwrap();
    assert_eq!(store.archive_chunk(key, 0, T0).await.unwrap().as_deref(), Some(b"first".as_slice()));
    assert_eq!(store.archive_chunk(key, 1, T0).await.unwrap().as_deref(), Some(b"second".as_slice()));
    assert_eq!(store.archive_chunk(key, 2, T0).await.unwrap(), None);
    let late = store.put_archive_chunk(key, 2, b"late", T0).await;
    assert!(matches!(late, Err(ArchiveError::Complete)), "got {late:?}");
    let twice = store.complete_archive(key, 2, T0).await;
    assert!(matches!(twice, Err(ArchiveError::Complete)), "got {twice:?}");
    assert!(store.delete_archive(key).await.unwrap());
    assert_eq!(store.archive_chunk(key, 0, T0).await.unwrap(), None);
    assert!(!store.delete_archive(key).await.unwrap(), "already gone");
}

pub async fn an_archive_is_capped_and_belongs_to_its_account(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.create_archive(&archive(alice, 1, 10)).await.unwrap();
    let key = akey(alice, 1);
    store.put_archive_chunk(key, 0, b"123456", T0).await.unwrap();
    let over = store.put_archive_chunk(key, 1, b"12345", T0).await;
    assert!(matches!(over, Err(ArchiveError::TooLarge)), "6 + 5 > 10: {over:?}");
    store.put_archive_chunk(key, 0, b"12345", T0).await.unwrap();
    store.put_archive_chunk(key, 1, b"12345", T0).await.unwrap();
    let foreign = store.put_archive_chunk(akey(bob, 1), 2, b"x", T0).await;
    assert!(matches!(foreign, Err(ArchiveError::Unknown)), "got {foreign:?}");
    store.complete_archive(key, 2, T0).await.unwrap();
    assert_eq!(store.archive_chunk(akey(bob, 1), 0, T0).await.unwrap(), None, "bob cannot read alice's archive");
    assert!(!store.delete_archive(akey(bob, 1)).await.unwrap(), "nor delete it");
    assert!(store.archive_chunk(key, 0, T0).await.unwrap().is_some());
}

pub async fn expired_archives_are_unreadable_then_swept(store: &dyn Store) {
    let alice = create(store, "alice").await;
    store.create_archive(&archive(alice, 1, 100)).await.unwrap();
    let key = akey(alice, 1);
    store.put_archive_chunk(key, 0, b"bytes", T0).await.unwrap();
    store.complete_archive(key, 1, T0).await.unwrap();
    assert_eq!(store.archive_chunk(key, 0, T0 + 1000).await.unwrap(), None, "expired");
    let late = store.put_archive_chunk(key, 1, b"x", T0 + 1000).await;
    assert!(matches!(late, Err(ArchiveError::Unknown)), "got {late:?}");
    assert_eq!(store.expire_links(T0 + 1000).await.unwrap(), 1);
    assert!(!store.delete_archive(key).await.unwrap(), "the sweeper removed it");
}
