//! Idempotent sends: a resend with the same idempotency key (the client's outbox message
//! id) is answered with the first result and stored once, across reconnects, restarts and
//! nodes. Regression for "a resent send is stored twice" (822 duplicates in the crash test).

use bytes::Bytes;
use hush_e2e::cluster::{RedisServer, ScratchDb};
use hush_e2e::{TestAccount, TestServer, WsClient, message, recipient, send_request};
use hush_wire::frames::SendRequest;

/// A send to Bob's primary device with `key`, always as request 1 (as a reloaded client numbers it).
fn keyed(bob: &TestAccount, content: &str, key: &str) -> SendRequest {
    let mut req = send_request(vec![recipient(bob.account_id, vec![message(bob.primary(), content.to_owned())])]);
    req.request_id = 1;
    req.idempotency_key = Bytes::from(key.to_owned());
    req
}

/// Bob's mailbox, oldest first, as (content) strings, up to the queue-empty marker.
async fn mailbox_of(server: &TestServer, bob: &TestAccount) -> Vec<String> {
    let mut ws = WsClient::connect(server, bob.primary()).await;
    let mut got = Vec::new();
    while let hush_e2e::Event::Envelope(env) = ws.next_event().await {
        got.push(String::from_utf8_lossy(&env.content).into_owned());
    }
    got
}

#[tokio::test]
async fn resend_after_reconnect_and_restart_is_answered_with_the_first_result_and_stored_once() {
    let mut server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;

    let mut ws = WsClient::connect_drained(&server, alice.primary()).await;
    let first = ws.send_ok(keyed(&bob, "hello", "outbox-1")).await;
    ws.close().await;

    // The answer was lost: the client reconnects, re-encrypts and resends with the same key.
    let mut ws = WsClient::connect_drained(&server, alice.primary()).await;
    let again = ws.send_ok(keyed(&bob, "hello, re-encrypted", "outbox-1")).await;
    assert_eq!(again.server_timestamp, first.server_timestamp, "the first send's answer");
    ws.close().await;

    // The key is durable: a crash between commit and answer is covered too.
    server.restart().await;
    let mut ws = WsClient::connect_drained(&server, alice.primary()).await;
    let after_restart = ws.send_ok(keyed(&bob, "hello, third try", "outbox-1")).await;
    assert_eq!(after_restart.server_timestamp, first.server_timestamp);
    // Request ids restart at 1 on every connection; the key, not the request id, names a send.
    ws.send_ok(keyed(&bob, "next message", "outbox-2")).await;
    ws.close().await;

    assert_eq!(mailbox_of(&server, &bob).await, ["hello", "next message"], "each message stored once");
}

#[tokio::test]
async fn resend_to_another_node_is_answered_with_the_first_result_and_stored_once() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let node = |id: &str| {
        TestServer::builder()
            .arg("--db")
            .arg(db.url.clone())
            .arg("--redis")
            .arg(redis.url())
            .arg("--node-id")
            .arg(id.to_owned())
    };
    let a = node("node-a").start().await;
    let b = node("node-b").keys_from(&a).start().await;
    let alice = TestAccount::register(&a, "alice").await;
    let bob = TestAccount::register(&a, "bob").await;

    let mut on_a = WsClient::connect_drained(&a, alice.primary()).await;
    let first = on_a.send_ok(keyed(&bob, "hello", "outbox-9")).await;
    on_a.close().await;
    // The load balancer sends the reconnect to the other node.
    let mut on_b = WsClient::connect_drained(&b, alice.primary()).await;
    let again = on_b.send_ok(keyed(&bob, "hello, re-encrypted", "outbox-9")).await;
    assert_eq!(again.server_timestamp, first.server_timestamp);
    on_b.close().await;

    assert_eq!(mailbox_of(&b, &bob).await, ["hello"]);
}
