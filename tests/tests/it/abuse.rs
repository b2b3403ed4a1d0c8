//! Abuse limits: registrations prove key ownership and are limited per source address;
//! username lookups are limited per address; prekey bundles cannot be drained.

use hush_e2e::device::{challenge, register_request, signed_register_request};
use hush_e2e::keys::{DeviceKeys, identity};
use hush_e2e::rest::to_json;
use hush_e2e::{RestClient, TestAccount, TestServer, unique_username};
use hush_wire::api::{PreKeyBundles, PreKeyCount, RegisterRequest};

/// A valid registration body for a fresh identity and username.
async fn fresh_registration(server: &TestServer, prefix: &str) -> RegisterRequest {
    let id = identity();
    let keys = DeviceKeys::generate(&id, 1);
    register_request(server, &unique_username(prefix), &id, &keys.new_device).await
}

async fn post_from(
    rest: &RestClient,
    path: &str,
    body: &RegisterRequest,
    forwarded_for: &str,
) -> hush_e2e::ApiResponse {
    rest.raw_with_headers("POST", path, Some(to_json(body)), None, &[("x-forwarded-for", forwarded_for)]).await
}

#[tokio::test]
async fn captured_registration_replayed_under_new_names_is_refused() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let captured = fresh_registration(&server, "victim").await;
    rest.post_json("/v1/accounts", &captured).await.assert_status(201);

    for n in 0..3 {
        let mut replay = captured.clone();
        replay.username = unique_username(&format!("replay{n}"));
        rest.post_json("/v1/accounts", &replay).await.assert_error(400, "registration_signature_invalid");
    }
    // Swapping in the attacker's own device key breaks the signature too.
    let mut replay = captured.clone();
    replay.username = unique_username("swap");
    replay.device.auth_key = DeviceKeys::generate(&identity(), 0).new_device.auth_key;
    rest.post_json("/v1/accounts", &replay).await.assert_error(400, "registration_signature_invalid");
    // Under its own name it only meets the account it already created.
    rest.post_json("/v1/accounts", &captured).await.assert_error(409, "username_taken");
}

#[tokio::test]
async fn account_cannot_be_registered_with_another_accounts_public_keys() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;

    // Mallory has Alice's public identity key and her signed prekeys (anyone can fetch them),
    // but not her private key: she signs the proof with her own.
    let mut stolen = alice.primary().uploaded.clone();
    stolen.auth_key = DeviceKeys::generate(&identity(), 0).new_device.auth_key;
    let mut req = signed_register_request(&challenge(&server).await, &unique_username("mallory"), &identity(), &stolen);
    req.identity_key = hush_wire::api::B64(hush_e2e::keys::identity_public(&alice.identity));
    rest.post_json("/v1/accounts", &req).await.assert_error(400, "registration_signature_invalid");
}

#[tokio::test]
async fn registration_without_a_challenge_of_this_server_is_refused() {
    let server = TestServer::start().await;
    let other = TestServer::start().await;
    let rest = RestClient::new(&server);

    // A challenge another server (another trust root) issued.
    let foreign = fresh_registration(&other, "foreign").await;
    rest.post_json("/v1/accounts", &foreign).await.assert_error(400, "registration_challenge_invalid");
    // A made-up nonce, or a server time moved to look fresh.
    let mut forged = fresh_registration(&server, "forged").await;
    forged.proof.nonce.0[0] ^= 1;
    rest.post_json("/v1/accounts", &forged).await.assert_error(400, "registration_challenge_invalid");
    let mut moved = fresh_registration(&server, "moved").await;
    moved.proof.server_time += 1;
    rest.post_json("/v1/accounts", &moved).await.assert_error(400, "registration_challenge_invalid");
    // A body without a proof says what is missing.
    let mut value = serde_json::to_value(fresh_registration(&server, "old").await).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        fields.remove("proof");
    }
    let resp = rest.raw("POST", "/v1/accounts", Some(value.to_string().into_bytes()), None).await;
    resp.assert_error(400, "invalid_request");
    assert!(resp.text().contains("proof"), "{}", resp.text());
}

#[tokio::test]
async fn registrations_per_source_address_are_limited_with_429_and_retry_after() {
    let server = TestServer::builder().args(["--register-burst", "3", "--register-per-hour", "1"]).start().await;
    let rest = RestClient::new(&server);
    for _ in 0..3 {
        rest.post_json("/v1/accounts", &fresh_registration(&server, "ok").await).await.assert_status(201);
    }
    let refused = rest.post_json("/v1/accounts", &fresh_registration(&server, "over").await).await;
    refused.assert_error(429, "rate_limited");
    let retry: u64 = refused.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((1..=3600).contains(&retry), "Retry-After in seconds, up to the hour a cell takes: {retry}");
    // X-Forwarded-For is not believed from an untrusted peer.
    post_from(&rest, "/v1/accounts", &fresh_registration(&server, "xff").await, "203.0.113.5")
        .await
        .assert_error(429, "rate_limited");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited() {
    let server = TestServer::builder()
        .args(["--register-burst", "1", "--register-per-hour", "1", "--trusted-proxies", "127.0.0.1"])
        .start()
        .await;
    let rest = RestClient::new(&server);
    post_from(&rest, "/v1/accounts", &fresh_registration(&server, "a").await, "203.0.113.1").await.assert_status(201);
    post_from(&rest, "/v1/accounts", &fresh_registration(&server, "a").await, "203.0.113.1")
        .await
        .assert_error(429, "rate_limited");
    // Another client behind the same proxy has its own budget; a spoofed left-most entry changes nothing.
    post_from(&rest, "/v1/accounts", &fresh_registration(&server, "b").await, "203.0.113.2").await.assert_status(201);
    post_from(&rest, "/v1/accounts", &fresh_registration(&server, "c").await, "198.51.100.9, 203.0.113.2")
        .await
        .assert_error(429, "rate_limited");
}

#[tokio::test]
async fn username_lookups_per_source_address_are_limited() {
    let server = TestServer::builder().args(["--lookup-burst", "4", "--lookup-per-hour", "1"]).start().await;
    let rest = RestClient::new(&server);
    // Registering took one cell (its challenge).
    let alice = TestAccount::register(&server, "alice").await;
    let path = format!("/v1/accounts/username/{}", alice.username);
    for _ in 0..3 {
        rest.signed_get(alice.primary(), &path).await.assert_status(200);
    }
    let refused = rest.signed_get(alice.primary(), "/v1/accounts/username/someone_else").await;
    refused.assert_error(429, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    rest.raw("POST", "/v1/accounts/challenge", None, None).await.assert_error(429, "rate_limited");
}

#[tokio::test]
async fn one_account_cannot_drain_another_accounts_one_time_prekeys() {
    // The default one-time key budget: 10 at once, 10 an hour, per (requester, target device).
    let server =
        TestServer::builder().args(["--one-time-key-burst", "10", "--one-time-key-per-hour", "10"]).start().await;
    let rest = RestClient::new(&server);
    let bob = TestAccount::register_with_keys(&server, "bob", 98).await;
    let mallory = TestAccount::register(&server, "mallory").await;
    let path = format!("/v1/keys/{}/*", bob.account_id);

    let mut one_time = 0;
    for _ in 0..99 {
        let bundles: PreKeyBundles = rest.signed_get(mallory.primary(), &path).await.json(200);
        let b = &bundles.devices[0];
        assert_eq!(b.signed_prekey, bob.primary().uploaded.signed_prekey, "a session can always be started");
        if b.prekey.is_some() {
            assert!(!b.kyber_last_resort);
            one_time += 1;
        } else {
            assert!(b.kyber_last_resort, "beyond the budget: the last-resort Kyber key");
            assert_eq!(b.kyber_prekey, bob.primary().uploaded.kyber_last_resort);
        }
    }
    assert_eq!(one_time, 10, "99 fetches took only the budget");
    let count: PreKeyCount = rest.signed_get(bob.primary(), "/v1/keys/count").await.json(200);
    assert_eq!((count.ec, count.kyber), (88, 88), "Bob keeps his other one-time keys");

    // Anyone else starting a session with Bob still gets a one-time key.
    let carol = TestAccount::register(&server, "carol").await;
    let bundles: PreKeyBundles = rest.signed_get(carol.primary(), &path).await.json(200);
    assert!(bundles.devices[0].prekey.is_some());
}

#[tokio::test]
async fn bundle_requests_per_account_are_limited_with_429() {
    let server = TestServer::builder().args(["--bundle-burst", "5", "--bundle-per-hour", "1"]).start().await;
    let rest = RestClient::new(&server);
    let bob = TestAccount::register(&server, "bob").await;
    let mallory = TestAccount::register(&server, "mallory").await;
    let path = format!("/v1/keys/{}/1", bob.account_id);
    for _ in 0..5 {
        rest.signed_get(mallory.primary(), &path).await.assert_status(200);
    }
    let refused = rest.signed_get(mallory.primary(), &path).await;
    refused.assert_error(429, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    rest.signed_get(bob.primary(), &path).await.assert_status(200);
}
