//! Several hushd nodes on one Postgres and one Redis: messages cross nodes in
//! real time, a killed node loses nothing, a Redis restart stops no send, and a
//! device connecting to a second node is closed on the first.

use std::time::{Duration, Instant};

use hush_e2e::cluster::{RedisServer, ScratchDb, two_nodes};
use hush_e2e::{RestClient, TestAccount, WsClient, message, recipient, send_request};
use hush_wire::close;
use hush_wire::frames::SendRequest;

fn to_primary(bob: &TestAccount, content: &[u8]) -> SendRequest {
    send_request(vec![recipient(bob.account_id, vec![message(bob.primary(), content.to_vec())])])
}

/// Connections re-read their mailbox every ping interval (the fallback for lost
/// wake-ups): long, so only a Redis wake-up can deliver quickly.
const SLOW_RECHECK: &str = "30";
/// Short, so a test of the fallback finishes quickly.
const FAST_RECHECK: &str = "1";

#[tokio::test]
async fn message_crosses_nodes_in_real_time_and_after_reconnect() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let (a, b) = two_nodes(&db, &redis, SLOW_RECHECK).await;
    let alice = TestAccount::register(&a, "alice").await;
    let bob = TestAccount::register(&b, "bob").await;
    let mut bob_ws = WsClient::connect_drained(&b, bob.primary()).await;
    let mut alice_ws = WsClient::connect_drained(&a, alice.primary()).await;

    // Real time: the wake-up goes through Redis, not the 1 s mailbox re-read.
    for i in 0..5 {
        let content = format!("live {i}").into_bytes();
        let sent = Instant::now();
        alice_ws.send_ok(to_primary(&bob, &content)).await;
        bob_ws.timeout = Duration::from_millis(900);
        let env = bob_ws.next_envelope().await;
        assert_eq!(env.content.as_ref(), content.as_slice());
        assert!(sent.elapsed() < Duration::from_millis(900), "took {:?}", sent.elapsed());
        bob_ws.ack(&[env.seq]).await;
    }
    bob_ws.close().await;

    for i in 0..3 {
        alice_ws.send_ok(to_primary(&bob, format!("offline {i}").as_bytes())).await;
    }
    let mut bob_ws = WsClient::connect(&b, bob.primary()).await;
    for i in 0..3 {
        assert_eq!(bob_ws.next_envelope().await.content.as_ref(), format!("offline {i}").as_bytes());
    }
    bob_ws.expect_queue_empty().await;
}

#[tokio::test]
async fn killed_node_loses_nothing_its_client_had_not_acked() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let (a, mut b) = two_nodes(&db, &redis, FAST_RECHECK).await;
    let alice = TestAccount::register(&a, "alice").await;
    let bob = TestAccount::register(&a, "bob").await;
    let mut bob_ws = WsClient::connect_drained(&b, bob.primary()).await;
    let mut alice_ws = WsClient::connect_drained(&a, alice.primary()).await;
    let mut seen = Vec::new();
    for i in 0..5 {
        alice_ws.send_ok(to_primary(&bob, format!("m{i}").as_bytes())).await;
        seen.push(bob_ws.next_envelope().await.seq); // received, never acked
    }
    b.kill9().await;

    let mut bob_ws = WsClient::connect(&a, bob.primary()).await;
    let mut again = Vec::new();
    for i in 0..5 {
        let env = bob_ws.next_envelope().await;
        assert_eq!(env.content.as_ref(), format!("m{i}").as_bytes());
        again.push(env.seq);
    }
    assert_eq!(again, seen, "the same envelopes, same seqs, in order");
    bob_ws.expect_queue_empty().await;
}

#[tokio::test]
async fn redis_restart_stops_no_send_and_every_envelope_arrives() {
    let db = ScratchDb::create().await;
    let mut redis = RedisServer::start().await;
    let (a, b) = two_nodes(&db, &redis, FAST_RECHECK).await;
    let alice = TestAccount::register(&a, "alice").await;
    let bob = TestAccount::register(&a, "bob").await;
    let mut bob_ws = WsClient::connect_drained(&b, bob.primary()).await;
    let mut alice_ws = WsClient::connect_drained(&a, alice.primary()).await;

    redis.kill().await;
    for i in 0..3 {
        alice_ws.send_ok(to_primary(&bob, format!("during {i}").as_bytes())).await;
    }
    redis.restart().await;
    for i in 0..3 {
        alice_ws.send_ok(to_primary(&bob, format!("after {i}").as_bytes())).await;
    }
    let mut got = Vec::new();
    for _ in 0..6 {
        let env = bob_ws.next_envelope().await;
        got.push(String::from_utf8_lossy(&env.content).into_owned());
        bob_ws.ack(&[env.seq]).await;
    }
    let want: Vec<String> = (0..3).map(|i| format!("during {i}")).chain((0..3).map(|i| format!("after {i}"))).collect();
    assert_eq!(got, want, "every envelope, in order, none twice");
}

#[tokio::test]
async fn connecting_to_a_second_node_closes_the_first_connection() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let (a, b) = two_nodes(&db, &redis, SLOW_RECHECK).await;
    let alice = TestAccount::register(&a, "alice").await;
    let bob = TestAccount::register(&a, "bob").await;
    let mut first = WsClient::connect_drained(&a, bob.primary()).await;
    let mut second = WsClient::connect_drained(&b, bob.primary()).await;
    let (code, reason) = first.expect_close().await;
    assert_eq!((code, reason.as_str()), (close::REPLACED, close::REASON_REPLACED));

    let mut alice_ws = WsClient::connect_drained(&a, alice.primary()).await;
    alice_ws.send_ok(to_primary(&bob, b"to the new connection")).await;
    assert_eq!(second.next_envelope().await.content.as_ref(), b"to the new connection");
}

#[tokio::test]
async fn online_only_envelopes_reach_a_device_on_another_node() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let (a, b) = two_nodes(&db, &redis, SLOW_RECHECK).await;
    let alice = TestAccount::register(&a, "alice").await;
    let bob = TestAccount::register(&a, "bob").await;
    let mut bob_ws = WsClient::connect_drained(&b, bob.primary()).await;
    let mut alice_ws = WsClient::connect_drained(&a, alice.primary()).await;

    let mut typing = to_primary(&bob, b"typing");
    typing.online_only = true;
    alice_ws.send_ok(typing).await;
    let env = bob_ws.next_envelope().await;
    assert_eq!((env.seq, env.content.as_ref()), (0, b"typing".as_slice()), "forwarded, never stored");
}

#[tokio::test]
async fn removing_a_device_closes_its_connection_on_another_node() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let (a, b) = two_nodes(&db, &redis, SLOW_RECHECK).await;
    let mut alice = TestAccount::register(&a, "alice").await;
    let alice2 = alice.add_device(&a).await;
    let mut alice2_ws = WsClient::connect_drained(&b, &alice2).await;

    RestClient::new(&a).signed::<()>(alice.primary(), "DELETE", "/v1/devices/2", None).await.assert_status(204);
    let (code, reason) = alice2_ws.expect_close().await;
    assert_eq!((code, reason.as_str()), (close::DEVICE_REMOVED, close::REASON_DEVICE_REMOVED));
}
