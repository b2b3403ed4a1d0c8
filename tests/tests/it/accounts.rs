//! Registration, devices and prekey bundles over REST.

use std::collections::HashSet;

use hush_e2e::device::register_request;
use hush_e2e::keys::{DeviceKeys, identity, identity_public};
use hush_e2e::{RestClient, TestAccount, TestServer};
use hush_wire::api::{AccountInfo, DeviceList, PreKeyBundles, PreKeyCount};

async fn key_count(rest: &RestClient, account: &TestAccount) -> (u32, u32) {
    let count: PreKeyCount = rest.signed_get(account.primary(), "/v1/keys/count").await.json(200);
    (count.ec, count.kyber)
}

#[tokio::test]
async fn bundle_matches_upload_and_one_time_keys_are_handed_out_once() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register_with_keys(&server, "bob", 2).await;
    let uploaded = &bob.primary().uploaded;
    let path = format!("/v1/keys/{}/1", bob.account_id);
    assert_eq!(key_count(&rest, &bob).await, (2, 2));

    let mut seen_ec = HashSet::new();
    let mut seen_kyber = HashSet::new();
    for left in [1, 0] {
        let bundles: PreKeyBundles = rest.signed_get(alice.primary(), &path).await.json(200);
        assert_eq!(bundles.account_id, bob.account_id);
        assert_eq!(bundles.identity_key.0, identity_public(&bob.identity));
        assert_eq!(bundles.devices.len(), 1, "asked for device 1 only");
        let bundle = &bundles.devices[0];
        assert_eq!(bundle.device_id, 1);
        assert_eq!(bundle.registration_id, uploaded.registration_id);
        assert_eq!(bundle.signed_prekey, uploaded.signed_prekey);
        assert!(!bundle.kyber_last_resort, "one-time Kyber keys are left");
        assert!(
            uploaded.one_time_kyber_prekeys.contains(&bundle.kyber_prekey),
            "the Kyber key must be one of the uploaded one-time keys, byte for byte"
        );
        let prekey = bundle.prekey.clone().unwrap_or_else(|| panic!("one-time EC keys are left but none was served"));
        assert!(uploaded.one_time_prekeys.contains(&prekey));
        assert!(seen_ec.insert(prekey.id), "EC prekey {} served twice", prekey.id);
        assert!(seen_kyber.insert(bundle.kyber_prekey.id), "Kyber prekey {} served twice", bundle.kyber_prekey.id);
        assert_eq!(key_count(&rest, &bob).await, (left, left));
    }

    let bundles: PreKeyBundles = rest.signed_get(alice.primary(), &path).await.json(200);
    let bundle = &bundles.devices[0];
    assert_eq!(bundle.prekey, None, "EC one-time keys are exhausted");
    assert!(bundle.kyber_last_resort);
    assert_eq!(bundle.kyber_prekey, uploaded.kyber_last_resort);
    assert_eq!(bundle.signed_prekey, uploaded.signed_prekey);
    assert_eq!(key_count(&rest, &bob).await, (0, 0));
}

#[tokio::test]
async fn bundles_for_all_devices_list_every_device() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let mut bob = TestAccount::register(&server, "bob").await;
    let bob2 = bob.add_device(&server).await;
    assert_eq!(bob2.device_id, 2);

    let path = format!("/v1/keys/{}/*", bob.account_id);
    let bundles: PreKeyBundles = rest.signed_get(alice.primary(), &path).await.json(200);
    let ids: Vec<u32> = bundles.devices.iter().map(|d| d.device_id).collect();
    assert_eq!(ids, vec![1, 2]);
    for (bundle, device) in bundles.devices.iter().zip(&bob.devices) {
        assert_eq!(bundle.registration_id, device.registration_id);
        assert_eq!(bundle.signed_prekey, device.uploaded.signed_prekey);
    }

    let list: DeviceList =
        rest.signed_get(alice.primary(), &format!("/v1/accounts/{}/devices", bob.account_id)).await.json(200);
    let ids: Vec<u32> = list.devices.iter().map(|d| d.device_id).collect();
    assert_eq!(ids, vec![1, 2]);

    rest.signed_get(alice.primary(), &format!("/v1/keys/{}/5", bob.account_id))
        .await
        .assert_error(404, "unknown_device");
}

#[tokio::test]
async fn username_lookup_finds_the_account() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let info: AccountInfo =
        rest.signed_get(alice.primary(), &format!("/v1/accounts/username/{}", bob.username)).await.json(200);
    assert_eq!(info.account_id, bob.account_id);
    assert_eq!(info.username, bob.username);
    assert_eq!(info.identity_key.0, identity_public(&bob.identity));
    rest.signed_get(alice.primary(), "/v1/accounts/username/nobody_here").await.assert_error(404, "unknown_account");
}

#[tokio::test]
async fn duplicate_username_is_refused_with_409() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;

    let id = identity();
    let keys = DeviceKeys::generate(&id, 1);
    rest.post_json("/v1/accounts", &register_request(&server, &alice.username, &id, &keys.new_device).await)
        .await
        .assert_error(409, "username_taken");
    // Usernames are case-insensitive handles.
    let upper = alice.username.to_uppercase();
    rest.post_json("/v1/accounts", &register_request(&server, &upper, &id, &keys.new_device).await)
        .await
        .assert_error(409, "username_taken");
}

#[tokio::test]
async fn bad_prekey_signature_is_refused_with_400() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let id = identity();

    let mut keys = DeviceKeys::generate(&id, 1);
    keys.new_device.signed_prekey.signature.0[10] ^= 0x01;
    let name = hush_e2e::unique_username("badspk");
    rest.post_json("/v1/accounts", &register_request(&server, &name, &id, &keys.new_device).await)
        .await
        .assert_error(400, "bad_signature");

    let mut keys = DeviceKeys::generate(&id, 1);
    keys.new_device.kyber_last_resort.signature.0[0] ^= 0x80;
    rest.post_json("/v1/accounts", &register_request(&server, &name, &id, &keys.new_device).await)
        .await
        .assert_error(400, "bad_signature");

    // A signature by another identity is just as bad.
    let keys = DeviceKeys::generate(&identity(), 1);
    rest.post_json("/v1/accounts", &register_request(&server, &name, &id, &keys.new_device).await)
        .await
        .assert_error(400, "bad_signature");

    // Nothing was registered under that name.
    let keys = DeviceKeys::generate(&id, 1);
    rest.post_json("/v1/accounts", &register_request(&server, &name, &id, &keys.new_device).await)
        .await
        .assert_status(201);
}

#[tokio::test]
async fn seventh_device_is_refused_with_409() {
    let server = TestServer::start().await;
    let mut alice = TestAccount::register(&server, "alice").await;
    for expected in 2..=6 {
        let device = alice.add_device(&server).await;
        assert_eq!(device.device_id, expected);
    }
    let keys = DeviceKeys::generate(&alice.identity, 1);
    alice.try_add_device(&server, &keys.new_device).await.assert_error(409, "too_many_devices");
}

#[tokio::test]
async fn prekey_upload_refills_and_is_validated() {
    use hush_e2e::keys::kyber_prekey;
    use hush_wire::api::{B64, PreKey, PreKeyUpload};
    use libsignal_protocol::KeyPair;

    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let bob = TestAccount::register_with_keys(&server, "bob", 1).await;
    assert_eq!(key_count(&rest, &bob).await, (1, 1));

    let ec = |id| PreKey { id, public_key: B64(KeyPair::generate(&mut rand::rng()).public_key.serialize().to_vec()) };
    let upload = PreKeyUpload {
        one_time_prekeys: vec![ec(7001), ec(7002)],
        one_time_kyber_prekeys: vec![kyber_prekey(&bob.identity, 8001), kyber_prekey(&bob.identity, 8002)],
        ..PreKeyUpload::default()
    };
    rest.signed(bob.primary(), "PUT", "/v1/keys", Some(&upload)).await.assert_status(204);
    assert_eq!(key_count(&rest, &bob).await, (3, 3));

    // A Kyber key signed by another identity is refused, and nothing is added.
    let upload =
        PreKeyUpload { one_time_kyber_prekeys: vec![kyber_prekey(&identity(), 8003)], ..PreKeyUpload::default() };
    rest.signed(bob.primary(), "PUT", "/v1/keys", Some(&upload)).await.assert_error(400, "bad_signature");

    // More than 100 of a kind in one upload.
    let upload = PreKeyUpload { one_time_prekeys: (0..101).map(|i| ec(9000 + i)).collect(), ..PreKeyUpload::default() };
    rest.signed(bob.primary(), "PUT", "/v1/keys", Some(&upload)).await.assert_error(413, "too_many_prekeys");
    assert_eq!(key_count(&rest, &bob).await, (3, 3));
}
