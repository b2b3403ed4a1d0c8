//! Configured limits: mailbox size, send rate, connections.

use hush_e2e::{TestAccount, TestServer, WsClient, message, recipient, send_request};
use hush_wire::frames::{SendErrorCode, SendRequest};

fn to_primary(bob: &TestAccount, content: &str) -> SendRequest {
    send_request(vec![recipient(bob.account_id, vec![message(bob.primary(), content.to_owned())])])
}

#[tokio::test]
async fn full_mailbox_refuses_with_mailbox_full_naming_the_device() {
    let server = TestServer::builder().arg("--max-mailbox").arg("3").start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    for i in 0..3 {
        alice_ws.send_ok(to_primary(&bob, &format!("m{i}"))).await;
    }
    let err = alice_ws.send_err(to_primary(&bob, "m3"), SendErrorCode::MailboxFull).await;
    assert_eq!(err.full.len(), 1, "{err:?}");
    assert_eq!(err.full[0].account_id.as_ref(), bob.account_id.as_bytes());
    assert_eq!(err.full[0].device_id, 1);

    // Bob holds exactly the three accepted envelopes.
    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    let mut seqs = Vec::new();
    for i in 0..3 {
        let env = bob_ws.next_envelope().await;
        assert_eq!(env.content.as_ref(), format!("m{i}").as_bytes());
        seqs.push(env.seq);
    }
    bob_ws.expect_queue_empty().await;

    // Once Bob acks, there is room again.
    bob_ws.ack(&seqs).await;
    bob_ws.close().await;
    alice_ws.send_ok(to_primary(&bob, "m4")).await;
}

#[tokio::test]
async fn sending_faster_than_the_rate_limit_is_refused_with_retry_after() {
    let server = TestServer::builder().arg("--rate-burst").arg("2").arg("--rate-per-second").arg("0.01").start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    alice_ws.send_ok(to_primary(&bob, "one")).await;
    alice_ws.send_ok(to_primary(&bob, "two")).await;
    let err = alice_ws.send_err(to_primary(&bob, "three"), SendErrorCode::RateLimited).await;
    assert!(err.retry_after_ms > 0, "{err:?}");

    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    assert_eq!(bob_ws.next_envelope().await.content.as_ref(), b"one");
    assert_eq!(bob_ws.next_envelope().await.content.as_ref(), b"two");
    bob_ws.expect_queue_empty().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_503_and_the_others_keep_working() {
    let server = TestServer::builder().arg("--max-connections").arg("1").start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;

    let refused = tokio_tungstenite::connect_async(server.ws_url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            assert!(body.contains("too_many_connections"), "{body}");
        }
        other => panic!("expected a 503 refusal, got {:?}", other.map(|_| "a connection")),
    }
    // The connection that was there is untouched.
    alice_ws.send_ok(to_primary(&bob, "still served")).await;
}

fn online_only_to_primary(bob: &TestAccount, content: &str) -> SendRequest {
    SendRequest { online_only: true, urgent: false, ..to_primary(bob, content) }
}

#[tokio::test]
async fn exhausting_the_online_only_budget_does_not_block_real_messages() {
    let server =
        TestServer::builder().args(["--online-only-burst", "2", "--online-only-per-second", "0.01"]).start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut bob_ws = WsClient::connect_drained(&server, bob.primary()).await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    alice_ws.send_ok(online_only_to_primary(&bob, "typing 1")).await;
    alice_ws.send_ok(online_only_to_primary(&bob, "typing 2")).await;
    let err = alice_ws.send_err(online_only_to_primary(&bob, "typing 3"), SendErrorCode::RateLimited).await;
    assert!(err.retry_after_ms > 0, "{err:?}");

    // The send budget is untouched: a real message goes through at once.
    alice_ws.send_ok(to_primary(&bob, "a real message")).await;
    for expected in ["typing 1", "typing 2", "a real message"] {
        let env = bob_ws.next_envelope().await;
        assert_eq!(env.content.as_ref(), expected.as_bytes());
        assert_eq!(env.seq == 0, expected.starts_with("typing"), "online-only envelopes have seq 0: {env:?}");
    }
}

#[tokio::test]
async fn exhausting_the_send_rate_does_not_block_typing_or_presence() {
    let server = TestServer::builder().args(["--rate-burst", "2", "--rate-per-second", "0.01"]).start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut bob_ws = WsClient::connect_drained(&server, bob.primary()).await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    alice_ws.send_ok(to_primary(&bob, "one")).await;
    alice_ws.send_ok(to_primary(&bob, "two")).await;
    alice_ws.send_err(to_primary(&bob, "three"), SendErrorCode::RateLimited).await;

    // Online-only sends have a budget of their own.
    for n in 0..5 {
        alice_ws.send_ok(online_only_to_primary(&bob, &format!("presence {n}"))).await;
    }
    // Stored envelopes come in seq order and online-only ones in the order sent; an online-only
    // envelope may overtake a stored one (a stored one is handed over after its sender's answer).
    let (mut stored, mut online) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let env = bob_ws.next_envelope().await;
        let body = String::from_utf8_lossy(&env.content).into_owned();
        if env.seq == 0 { online.push(body) } else { stored.push(body) }
    }
    assert_eq!(stored, ["one", "two"]);
    assert_eq!(online, ["presence 0", "presence 1", "presence 2", "presence 3", "presence 4"]);
}
