//! Push targets over REST (`/v1/devices/self/push`) against a real hushd.

use hush_e2e::{RestClient, TestAccount, TestServer};
use hush_wire::api::{PushStatus, PushTargetBody};

const PATH: &str = "/v1/devices/self/push";

#[tokio::test]
async fn a_device_sets_reads_replaces_and_removes_its_push_target() {
    let server = TestServer::builder().arg("--push-allow-hosts").arg("127.0.0.1").start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let device = alice.primary();
    rest.signed_get(device, PATH).await.assert_error(404, "no_push_target");
    rest.signed::<()>(device, "DELETE", PATH, None).await.assert_error(404, "no_push_target");

    let up = PushTargetBody::UnifiedPush { endpoint: "http://127.0.0.1:9/up/alice".into() };
    rest.signed(device, "PUT", PATH, Some(&up)).await.assert_status(204);
    let status: PushStatus = rest.signed_get(device, PATH).await.json(200);
    assert_eq!(status.target, up);

    let apns = PushTargetBody::Apns { token: "ab".repeat(32), topic: "org.example.hush".into(), sandbox: true };
    rest.signed(device, "PUT", PATH, Some(&apns)).await.assert_status(204);
    let status: PushStatus = rest.signed_get(device, PATH).await.json(200);
    assert_eq!(status.target, apns, "a PUT replaces the target");

    rest.signed::<()>(device, "DELETE", PATH, None).await.assert_status(204);
    rest.signed_get(device, PATH).await.assert_error(404, "no_push_target");
}

#[tokio::test]
async fn unifiedpush_endpoints_inside_the_network_are_refused_unless_allowlisted() {
    let server = TestServer::builder().arg("--push-allow-hosts").arg("127.0.0.1").start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    for endpoint in [
        "http://push.example.org/up",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/up",
        "https://[::1]/up",
        "https://localhost/up",
        "http://127.0.0.2/up",
    ] {
        let body = PushTargetBody::UnifiedPush { endpoint: endpoint.into() };
        rest.signed(alice.primary(), "PUT", PATH, Some(&body)).await.assert_error(400, "invalid_push_endpoint");
    }
    let bad_token = PushTargetBody::Fcm { token: String::new() };
    rest.signed(alice.primary(), "PUT", PATH, Some(&bad_token)).await.assert_error(400, "invalid_push_token");
    let garbage = serde_json::json!({ "provider": "carrier_pigeon", "token": "x" });
    rest.signed(alice.primary(), "PUT", PATH, Some(&garbage)).await.assert_error(400, "invalid_request");
    rest.signed_get(alice.primary(), PATH).await.assert_error(404, "no_push_target");
}

#[tokio::test]
async fn the_push_endpoints_are_in_the_openapi_document_with_every_status() {
    let server = TestServer::start().await;
    let doc: serde_json::Value = RestClient::new(&server).get("/openapi.json").await.json(200);
    let item = &doc["paths"][PATH];
    let statuses = |method: &str| -> Vec<String> {
        item[method]["responses"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default()
    };
    for (method, expected) in [
        ("put", &["204", "400", "401", "404", "413", "503"][..]),
        ("get", &["200", "401", "404", "503"][..]),
        ("delete", &["204", "401", "404", "503"][..]),
    ] {
        let got = statuses(method);
        for status in expected {
            assert!(got.iter().any(|s| s == status), "{method} {PATH} lacks {status}: {got:?}");
        }
    }
}

// ---- wake-ups against a real hushd and a local stand-in for the providers ----

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hush_e2e::cluster::{RedisServer, ScratchDb, two_nodes_with};
use hush_e2e::push::{FakePush, PushRequest};
use hush_e2e::{
    TestServerBuilder, WsClient, distribute_request, group_send_request, message, recipient, send_request,
    to_member_devices,
};

/// Flags of a server whose UnifiedPush endpoints may be on 127.0.0.1, with a long window
/// and a background delay no test waits for.
fn push_server() -> TestServerBuilder {
    TestServer::builder().args([
        "--push-allow-hosts",
        "127.0.0.1",
        "--push-window-secs",
        "600",
        "--push-background-delay-secs",
        "3600",
    ])
}

async fn register_unifiedpush(server: &TestServer, account: &TestAccount, endpoint: String) {
    let body = PushTargetBody::UnifiedPush { endpoint };
    RestClient::new(server).signed(account.primary(), "PUT", PATH, Some(&body)).await.assert_status(204);
}

fn to_primary(bob: &TestAccount, content: &[u8]) -> hush_wire::frames::SendRequest {
    send_request(vec![recipient(bob.account_id, vec![message(bob.primary(), content.to_vec())])])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Registers a fresh account with a UnifiedPush target at `/up/<name>`, sends it one message
/// and waits for its wake-up: every request the fake got before it is returned.
async fn until_sentinel(
    server: &TestServer,
    fake: &mut FakePush,
    sender: &mut WsClient,
    name: &str,
) -> Vec<PushRequest> {
    let sentinel = TestAccount::register(server, name).await;
    let path = format!("/up/{name}");
    register_unifiedpush(server, &sentinel, fake.url(&path)).await;
    sender.send_ok(to_primary(&sentinel, b"sentinel")).await;
    let mut before = Vec::new();
    loop {
        let request = fake.next().await;
        if request.path == path {
            return before;
        }
        before.push(request);
    }
}

#[tokio::test]
async fn an_offline_device_gets_one_content_free_wake_up_for_a_burst_and_none_while_online_or_for_typing() {
    let server = push_server().start().await;
    let mut fake = FakePush::accepting().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    register_unifiedpush(&server, &bob, fake.url("/up/bob")).await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;

    let secret = b"the secret message body";
    for n in 0..50 {
        alice_ws.send_ok(to_primary(&bob, &[&secret[..], format!(" {n}").as_bytes()].concat())).await;
    }
    let wake = fake.next().await;
    assert_eq!((wake.method.as_str(), wake.path.as_str()), ("POST", "/up/bob"));
    assert_eq!(wake.body, b"1", "the body is one opaque byte");
    assert!(!contains(&wake.body, secret) && !contains(&wake.body, alice.account_id.as_bytes()));
    assert!(!contains(&wake.body, alice.account_id.to_string().as_bytes()) && !contains(&wake.body, b"alice"));
    assert_eq!(wake.header("urgency"), Some("high"));
    let extra = until_sentinel(&server, &mut fake, &mut alice_ws, "carol").await;
    assert!(extra.is_empty(), "50 messages, one wake-up: {extra:?}");

    // Typing (online-only) never wakes a device.
    let dave = TestAccount::register(&server, "dave").await;
    register_unifiedpush(&server, &dave, fake.url("/up/dave")).await;
    let mut typing = to_primary(&dave, b"typing");
    typing.online_only = true;
    alice_ws.send_ok(typing).await;
    // A connected device is not woken either.
    let erin = TestAccount::register(&server, "erin").await;
    register_unifiedpush(&server, &erin, fake.url("/up/erin")).await;
    let _erin_ws = WsClient::connect_drained(&server, erin.primary()).await;
    alice_ws.send_ok(to_primary(&erin, b"while online")).await;
    let extra = until_sentinel(&server, &mut fake, &mut alice_ws, "frank").await;
    assert!(extra.is_empty(), "no wake-up for typing or a connected device: {extra:?}");
}

#[tokio::test]
async fn a_provider_outage_is_retried_and_does_not_slow_delivery_to_online_devices() {
    let server = push_server().start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let mut fake = FakePush::start(Arc::new(move |_| {
        // The first two attempts meet an outage.
        if seen.fetch_add(1, Ordering::SeqCst) < 2 { (503, "{}".into()) } else { (200, "{}".into()) }
    }))
    .await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let carol = TestAccount::register(&server, "carol").await;
    register_unifiedpush(&server, &bob, fake.url("/up/bob")).await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    let mut carol_ws = WsClient::connect_drained(&server, carol.primary()).await;

    alice_ws.send_ok(to_primary(&bob, b"to the offline one")).await;
    assert_eq!(fake.next().await.path, "/up/bob", "first attempt (503)");
    // While the provider is down, an online device gets its message at once.
    alice_ws.send_ok(to_primary(&carol, b"to the online one")).await;
    assert_eq!(carol_ws.next_envelope().await.content.as_ref(), b"to the online one");
    assert_eq!(fake.next().await.path, "/up/bob", "second attempt (503)");
    assert_eq!(fake.next().await.path, "/up/bob", "third attempt (200)");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let status: PushStatus = RestClient::new(&server).signed_get(bob.primary(), PATH).await.json(200);
    assert!(matches!(status.target, PushTargetBody::UnifiedPush { .. }), "an outage keeps the target");
}

#[tokio::test]
async fn an_invalid_token_answer_removes_the_target() {
    let server = push_server().start().await;
    let mut fake = FakePush::start(Arc::new(|_| (410, "{}".into()))).await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    register_unifiedpush(&server, &bob, fake.url("/up/bob")).await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    alice_ws.send_ok(to_primary(&bob, b"hello")).await;
    assert_eq!(fake.next().await.path, "/up/bob");
    let rest = RestClient::new(&server);
    let deadline = std::time::Instant::now() + hush_e2e::push::DEADLINE;
    loop {
        let response = rest.signed_get(bob.primary(), PATH).await;
        if response.status == 404 {
            response.assert_error(404, "no_push_target");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the target was not removed");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn fcm_wake_ups_use_the_oauth_token_endpoint_and_carry_one_opaque_flag() {
    let mut fake = FakePush::start(Arc::new(|r: &PushRequest| match r.path.as_str() {
        "/token" => (200, r#"{"access_token":"test-access-token","expires_in":3600,"token_type":"Bearer"}"#.into()),
        _ if r.body.windows(13).any(|w| w == b"invalid-token") => (404, r#"{"error":{"status":"NOT_FOUND"}}"#.into()),
        _ => (200, r#"{"name":"projects/hush-test/messages/1"}"#.into()),
    }))
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = include_str!("../../fixtures/fcm-test-key.pem");
    let account = serde_json::json!({
        "type": "service_account", "project_id": "hush-test", "client_email": "hushd@hush-test.iam.gserviceaccount.com",
        "private_key": key, "token_uri": fake.url("/token"),
    });
    let file = dir.path().join("service-account.json");
    std::fs::write(&file, account.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let server = push_server()
        .arg("--fcm-service-account")
        .arg(file.as_os_str())
        .arg("--fcm-endpoint")
        .arg(fake.url(""))
        .start()
        .await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let rest = RestClient::new(&server);
    let fcm = PushTargetBody::Fcm { token: "bob-registration-token".into() };
    rest.signed(bob.primary(), "PUT", PATH, Some(&fcm)).await.assert_status(204);
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    alice_ws.send_ok(to_primary(&bob, b"secret")).await;

    let token = fake.next().await;
    assert_eq!(token.path, "/token");
    let form = String::from_utf8_lossy(&token.body).into_owned();
    assert!(form.starts_with("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="), "{form}");
    let send = fake.next().await;
    assert_eq!(send.path, "/v1/projects/hush-test/messages:send");
    assert_eq!(send.header("authorization"), Some("Bearer test-access-token"));
    let body: serde_json::Value = serde_json::from_slice(&send.body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body["message"]["token"], "bob-registration-token");
    assert_eq!(body["message"]["data"], serde_json::json!({ "hush": "1" }), "one opaque flag");
    assert!(body["message"].get("notification").is_none(), "a data message, nothing to show");
    assert!(!contains(&send.body, b"secret") && !contains(&send.body, alice.account_id.to_string().as_bytes()));

    // An UNREGISTERED answer removes the token.
    let carol = TestAccount::register(&server, "carol").await;
    let bad = PushTargetBody::Fcm { token: "invalid-token".into() };
    rest.signed(carol.primary(), "PUT", PATH, Some(&bad)).await.assert_status(204);
    alice_ws.send_ok(to_primary(&carol, b"hi")).await;
    assert!(contains(&fake.next_except("/token").await.body, b"invalid-token"));
    let deadline = std::time::Instant::now() + hush_e2e::push::DEADLINE;
    while rest.signed_get(carol.primary(), PATH).await.status != 404 {
        assert!(std::time::Instant::now() < deadline, "the invalid FCM token was not removed");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn group_messages_wake_offline_members() {
    let server = push_server().start().await;
    let mut fake = FakePush::accepting().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    register_unifiedpush(&server, &bob, fake.url("/up/bob")).await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    let info = RestClient::new(&server).new_group(alice.primary(), &[&bob]).await;
    alice_ws
        .distribute_ok(distribute_request(info.group_id, info.epoch, to_member_devices(alice.primary(), &[&bob])))
        .await;
    // The roster change and the distribution are background work; the message is urgent.
    alice_ws.group_send_ok(group_send_request(info.group_id, info.epoch, b"group secret".to_vec())).await;
    let wake = fake.next().await;
    assert_eq!((wake.path.as_str(), wake.header("urgency")), ("/up/bob", Some("high")));
    assert!(!contains(&wake.body, b"group secret") && !contains(&wake.body, info.group_id.as_bytes()));
}

#[tokio::test]
async fn two_nodes_on_postgres_and_redis_send_one_wake_up_not_two() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let flags =
        ["--push-allow-hosts", "127.0.0.1", "--push-window-secs", "600", "--push-background-delay-secs", "3600"];
    let (a, b) = two_nodes_with(&db, &redis, "30", &flags).await;
    let mut fake = FakePush::accepting().await;
    let alice = TestAccount::register(&a, "alice").await;
    let carol = TestAccount::register(&b, "carol").await;
    let bob = TestAccount::register(&a, "bob").await;
    register_unifiedpush(&a, &bob, fake.url("/up/bob")).await;
    let mut alice_ws = WsClient::connect_drained(&a, alice.primary()).await;
    let mut carol_ws = WsClient::connect_drained(&b, carol.primary()).await;
    // Both nodes commit for offline bob in one window.
    alice_ws.send_ok(to_primary(&bob, b"from node a")).await;
    carol_ws.send_ok(to_primary(&bob, b"from node b")).await;
    assert_eq!(fake.next().await.path, "/up/bob");
    for (server, ws) in [(&a, &mut alice_ws), (&b, &mut carol_ws)] {
        let name = format!("sentinel{}", server.addr().port());
        let extra = until_sentinel(server, &mut fake, ws, &name).await;
        assert!(extra.is_empty(), "a second wake-up for bob: {extra:?}");
    }
}

#[tokio::test]
async fn online_only_envelopes_left_unacknowledged_at_a_disconnect_wake_no_one() {
    let server = TestServer::builder()
        .args(["--push-allow-hosts", "127.0.0.1", "--push-window-secs", "600"])
        .args(["--push-background-delay-secs", "3600", "--push-disconnect-delay-secs", "0"])
        .start()
        .await;
    let mut fake = FakePush::accepting().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let carol = TestAccount::register(&server, "carol").await;
    register_unifiedpush(&server, &bob, fake.url("/up/bob")).await;
    register_unifiedpush(&server, &carol, fake.url("/up/carol")).await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;

    // Bob gets an online-only envelope (presence, typing) and leaves without a word.
    let mut bob_ws = WsClient::connect_drained(&server, bob.primary()).await;
    let mut presence = to_primary(&bob, b"presence");
    presence.online_only = true;
    alice_ws.send_ok(presence).await;
    assert_eq!(bob_ws.next_envelope().await.seq, 0);
    bob_ws.close().await;
    // Carol leaves a stored envelope unacknowledged: she is woken, Bob is not.
    let mut carol_ws = WsClient::connect_drained(&server, carol.primary()).await;
    alice_ws.send_ok(to_primary(&carol, b"stored")).await;
    assert!(carol_ws.next_envelope().await.seq > 0);
    carol_ws.close().await;
    let wake = fake.next().await;
    assert_eq!(wake.path, "/up/carol", "no wake-up for an online-only envelope");
    let extra = until_sentinel(&server, &mut fake, &mut alice_ws, "dave").await;
    assert!(extra.iter().all(|r| r.path != "/up/bob"), "{extra:?}");
}
