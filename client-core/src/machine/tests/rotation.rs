//! Signed prekey rotation with an injected clock.

use super::relay::Relay;
use super::{bodies, contact, send};
use crate::store::ClientStore;

const DAY: u64 = 24 * 3600 * 1000;

#[tokio::test]
async fn rotated_prekeys_still_open_old_sessions_within_the_grace_period_and_new_contacts_get_the_new_ones() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    let mut bob = relay.register("bob").await;
    let mut carol = relay.register("carol").await;
    let bob_to_alice = contact(&relay, &mut bob, &alice).await;
    let carol_to_alice = contact(&relay, &mut carol, &alice).await;
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice]).await;
    assert_eq!(relay.signed_prekey_ids(alice.account, 1), (1, 1), "the keys made at registration");
    relay.disconnect(&mut alice);

    // Bob starts a session from the bundle of today while Alice is offline.
    relay.connect(&mut bob).await;
    send(&relay, &mut bob, &bob_to_alice, "from the old bundle").await;
    relay.settle(&mut [&mut bob]).await;

    // Eight days later Alice connects: she rotates first, then reads Bob's message.
    relay.now += 8 * DAY;
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    let (signed, kyber) = relay.signed_prekey_ids(alice.account, 1);
    assert_eq!(signed, 2, "a new signed prekey was uploaded");
    assert_ne!(kyber, 1, "a new last-resort Kyber prekey was uploaded");
    assert_eq!(bodies(&alice.events), vec!["from the old bundle".to_owned()]);
    assert!(alice.store.signed_pre_key(1).await.unwrap().is_some(), "kept for the grace period");

    // A new contact gets the new keys.
    relay.connect(&mut carol).await;
    send(&relay, &mut carol, &carol_to_alice, "from the new bundle").await;
    relay.settle(&mut [&mut alice, &mut carol]).await;
    assert_eq!(bodies(&alice.events).last().map(String::as_str), Some("from the new bundle"));
    let carols_session = carol.store.session(&(hush_keys::aci_string(alice.account), 1)).await.unwrap();
    assert!(carols_session.is_some());

    // Nothing more is due within the week.
    let uploads = relay.uploads;
    relay.advance(2 * 3600 * 1000, &mut [&mut alice, &mut bob, &mut carol]).await;
    assert_eq!(relay.uploads, uploads);

    // Past the grace period, the keys replaced eight days in are deleted; the newest stay.
    for _ in 0..31 {
        relay.advance(DAY, &mut [&mut alice, &mut bob, &mut carol]).await;
    }
    assert!(alice.store.signed_pre_key(1).await.unwrap().is_none(), "deleted after the grace period");
    assert!(alice.store.kyber_pre_key(1).await.unwrap().is_none());
    let (newest, newest_kyber) = relay.signed_prekey_ids(alice.account, 1);
    assert!(newest >= 6, "rotated weekly: {newest}");
    assert!(alice.store.signed_pre_key(newest).await.unwrap().is_some());
    assert!(alice.store.kyber_pre_key(newest_kyber).await.unwrap().is_some_and(|k| k.last_resort));
    assert!(alice.store.signed_pre_key(2).await.unwrap().is_some(), "replaced 7 days ago at most 30 days");

    // Sessions go on working.
    send(&relay, &mut bob, &bob_to_alice, "still here").await;
    relay.settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(bodies(&alice.events).last().map(String::as_str), Some("still here"));
}

#[tokio::test]
async fn a_rotation_upload_that_fails_is_made_again_on_the_next_connection() {
    let mut relay = Relay::new();
    let mut alice = relay.register("alice").await;
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice]).await;
    relay.now += 8 * DAY;
    relay.refuse_uploads = true;
    relay.advance(0, &mut [&mut alice]).await;
    assert_eq!(relay.signed_prekey_ids(alice.account, 1).0, 1, "the upload was refused");
    relay.refuse_uploads = false;
    relay.disconnect(&mut alice);
    relay.connect(&mut alice).await;
    relay.settle(&mut [&mut alice]).await;
    assert_eq!(relay.signed_prekey_ids(alice.account, 1).0, 2, "uploaded again on reconnect");
}
