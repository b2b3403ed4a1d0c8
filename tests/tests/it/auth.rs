//! Device authentication: WebSocket challenges and signed REST requests.

use hush_e2e::{RestClient, TestAccount, TestServer, WsClient};
use hush_keys::auth::DeviceSigningKey;
use hush_wire::frames::{Ack, client_frame};

const AUTH_FAILED: (u16, &str) = (4001, "auth_failed");

fn close(code_reason: (u16, &str)) -> (u16, String) {
    (code_reason.0, code_reason.1.to_owned())
}

#[tokio::test]
async fn ws_auth_with_the_wrong_key_is_closed_with_4001() {
    let server = TestServer::start().await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut impostor = bob.primary().clone();
    impostor.signing_key = DeviceSigningKey::generate(&mut rand::rng());

    let mut ws = WsClient::open(&server).await;
    let auth = ws.auth_for(&impostor);
    ws.send_frame(client_frame::Frame::Auth(auth)).await;
    assert_eq!(ws.expect_close().await, close(AUTH_FAILED));
    assert!(ws.auth_ok().is_none());
}

#[tokio::test]
async fn ws_auth_of_an_unknown_device_or_account_is_closed_with_4001() {
    let server = TestServer::start().await;
    let bob = TestAccount::register(&server, "bob").await;

    let mut unknown_device = bob.primary().clone();
    unknown_device.device_id = 2;
    let mut ws = WsClient::open(&server).await;
    let auth = ws.auth_for(&unknown_device);
    ws.send_frame(client_frame::Frame::Auth(auth)).await;
    assert_eq!(ws.expect_close().await, close(AUTH_FAILED));

    let mut unknown_account = bob.primary().clone();
    unknown_account.account_id = uuid::Uuid::new_v4();
    let mut ws = WsClient::open(&server).await;
    let auth = ws.auth_for(&unknown_account);
    ws.send_frame(client_frame::Frame::Auth(auth)).await;
    assert_eq!(ws.expect_close().await, close(AUTH_FAILED));
}

#[tokio::test]
async fn ws_auth_replayed_on_a_new_connection_is_closed_with_4001() {
    let server = TestServer::start().await;
    let bob = TestAccount::register(&server, "bob").await;

    let mut first = WsClient::open(&server).await;
    let first_nonce = first.challenge().nonce.clone();
    let captured = first.auth_for(bob.primary());
    first.send_frame(client_frame::Frame::Auth(captured.clone())).await;
    first.expect_auth_ok().await;
    first.close().await;

    let mut second = WsClient::open(&server).await;
    assert_ne!(second.challenge().nonce, first_nonce, "challenge nonces must be fresh");
    second.send_frame(client_frame::Frame::Auth(captured)).await;
    assert_eq!(second.expect_close().await, close(AUTH_FAILED));
}

#[tokio::test]
async fn ws_without_auth_times_out_with_4002() {
    let server = TestServer::builder().arg("--auth-timeout-secs").arg("1").start().await;
    let mut ws = WsClient::open(&server).await;
    assert_eq!(ws.expect_close().await, (4002, "auth_timeout".to_owned()));
}

#[tokio::test]
async fn ws_frames_before_auth_or_auth_twice_are_closed_with_4004() {
    let server = TestServer::start().await;
    let bob = TestAccount::register(&server, "bob").await;

    let mut ws = WsClient::open(&server).await;
    ws.send_frame(client_frame::Frame::Ack(Ack { seqs: vec![1], groups: Vec::new() })).await;
    assert_eq!(ws.expect_close().await, (4004, "malformed_frame".to_owned()));

    let mut ws = WsClient::connect_drained(&server, bob.primary()).await;
    let auth = ws.auth_for(bob.primary());
    ws.send_frame(client_frame::Frame::Auth(auth)).await;
    assert_eq!(ws.expect_close().await, (4004, "malformed_frame".to_owned()));
}

#[tokio::test]
async fn rest_replayed_authorization_is_refused_with_auth_replayed() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let bob = TestAccount::register(&server, "bob").await;
    let header = bob.primary().authorization("GET", "/v1/keys/count", b"");
    rest.raw("GET", "/v1/keys/count", None, Some(&header)).await.assert_status(200);
    rest.raw("GET", "/v1/keys/count", None, Some(&header)).await.assert_error(401, "auth_replayed");
}

#[tokio::test]
async fn rest_stale_or_future_timestamp_is_refused_with_auth_expired() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let bob = TestAccount::register(&server, "bob").await;
    let ten_minutes = 10 * 60 * 1000;
    for ts in [hush_e2e::now_ms() - ten_minutes, hush_e2e::now_ms() + ten_minutes] {
        let header = bob.primary().authorization_at("GET", "/v1/keys/count", b"", ts, rand::random());
        rest.raw("GET", "/v1/keys/count", None, Some(&header)).await.assert_error(401, "auth_expired");
    }
}

#[tokio::test]
async fn rest_bad_signature_is_refused_with_auth_failed() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let bob = TestAccount::register(&server, "bob").await;

    let mut impostor = bob.primary().clone();
    impostor.signing_key = DeviceSigningKey::generate(&mut rand::rng());
    rest.signed_get(&impostor, "/v1/keys/count").await.assert_error(401, "auth_failed");

    // Signed for one path, sent to another.
    let header = bob.primary().authorization("GET", "/v1/keys/count", b"");
    let other = format!("/v1/accounts/{}/devices", bob.account_id);
    rest.raw("GET", &other, None, Some(&header)).await.assert_error(401, "auth_failed");

    // Signed over one body, sent with another.
    let header = bob.primary().authorization("PUT", "/v1/keys", b"{}");
    rest.raw("PUT", "/v1/keys", Some(b"{ }".to_vec()), Some(&header)).await.assert_error(401, "auth_failed");
}

#[tokio::test]
async fn rest_missing_or_malformed_authorization_is_refused() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    rest.get("/v1/keys/count").await.assert_error(401, "auth_missing");
    rest.raw("GET", "/v1/keys/count", None, Some("Hush-Sig nonsense")).await.assert_error(401, "auth_malformed");
}
