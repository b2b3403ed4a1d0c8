//! The delivery contract: persist, acknowledge, deliver, ack, redeliver.

use hush_e2e::{
    Event, TestAccount, TestServer, WsClient, message, random_bytes, recipient, send_request, to_all_devices,
};
use hush_wire::frames::{EnvelopeKind, SendRequest};

/// A send of `content` to Bob's primary device only.
fn to_primary(bob: &TestAccount, content: &[u8]) -> SendRequest {
    send_request(vec![recipient(bob.account_id, vec![message(bob.primary(), content.to_vec())])])
}

#[tokio::test]
async fn online_send_is_delivered_acked_and_not_redelivered() {
    let server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut bob_ws = WsClient::connect_drained(&server, bob.primary()).await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    assert_eq!(bob_ws.auth_ok().map(|ok| ok.window), Some(256));

    let content = random_bytes(300);
    let ok = alice_ws.send_ok(to_primary(&bob, &content)).await;
    assert!(ok.server_timestamp > 0);

    let env = bob_ws.next_envelope().await;
    assert!(env.seq > 0, "stored envelopes have a non-zero seq");
    assert_eq!(env.kind(), EnvelopeKind::SealedSender);
    assert_eq!(env.content.as_ref(), content.as_slice());
    assert!(env.server_timestamp > 0);
    bob_ws.ack(&[env.seq]).await;
    bob_ws.close().await;

    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    bob_ws.expect_queue_empty().await;
    // Nothing came before QueueEmpty, and the next thing is a new message.
    alice_ws.send_ok(to_primary(&bob, b"second")).await;
    let env2 = bob_ws.next_envelope().await;
    assert_eq!(env2.content.as_ref(), b"second");
    assert!(env2.seq > env.seq, "seq strictly increases per device");
}

#[tokio::test]
async fn offline_backlog_is_delivered_in_order_past_the_window() {
    const N: usize = 300;
    let server =
        TestServer::builder().arg("--rate-burst").arg("10000").arg("--rate-per-second").arg("10000").start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    let contents: Vec<Vec<u8>> = (0..N).map(|i| format!("backlog message {i}").into_bytes()).collect();
    for content in &contents {
        alice_ws.send_ok(to_primary(&bob, content)).await;
    }

    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    let mut last_seq = 0;
    for (i, content) in contents.iter().enumerate() {
        let env = bob_ws.next_envelope().await;
        assert!(env.seq > last_seq, "envelope {i}: seq {} after {last_seq}", env.seq);
        last_seq = env.seq;
        assert_eq!(env.content.as_ref(), content.as_slice(), "envelope {i} out of order");
        bob_ws.ack(&[env.seq]).await;
    }
    bob_ws.expect_queue_empty().await;

    // QueueEmpty came exactly once: the next event is a fresh envelope.
    alice_ws.send_ok(to_primary(&bob, b"after the backlog")).await;
    match bob_ws.next_event().await {
        Event::Envelope(env) => {
            assert_eq!(env.content.as_ref(), b"after the backlog");
            assert!(env.seq > last_seq);
        }
        Event::QueueEmpty => panic!("QueueEmpty was sent twice"),
    }
}

#[tokio::test]
async fn unacked_envelopes_are_delivered_again_after_reconnect() {
    let server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    alice_ws.send_ok(to_primary(&bob, b"one")).await;
    alice_ws.send_ok(to_primary(&bob, b"two")).await;

    let mut first = Vec::new();
    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    for _ in 0..2 {
        first.push(bob_ws.next_envelope().await);
    }
    bob_ws.expect_queue_empty().await;
    drop(bob_ws); // no ack, no close handshake: a lost connection

    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    for expected in &first {
        let env = bob_ws.next_envelope().await;
        assert_eq!(env.seq, expected.seq);
        assert_eq!(env.content, expected.content);
        assert_eq!(env.kind, expected.kind);
    }
    bob_ws.expect_queue_empty().await;
    assert_eq!(first[0].content.as_ref(), b"one");
    assert_eq!(first[1].content.as_ref(), b"two");
}

#[tokio::test]
async fn acknowledged_send_survives_kill9() {
    let mut server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    let content = random_bytes(1000);
    alice_ws.send_ok(to_primary(&bob, &content)).await;
    server.kill9().await;
    drop(alice_ws);

    server.restart().await;
    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    let env = bob_ws.next_envelope().await;
    assert_eq!(env.content.as_ref(), content.as_slice());
    bob_ws.expect_queue_empty().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_connections_with_1001_and_keeps_mailboxes() {
    let mut server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    alice_ws.send_ok(to_primary(&bob, b"kept")).await;

    let stop = async {
        server.stop().await;
    };
    let (_, closed) = tokio::join!(stop, alice_ws.expect_close());
    assert_eq!(closed, (1001, "server_shutdown".to_owned()));

    server.restart().await;
    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    assert_eq!(bob_ws.next_envelope().await.content.as_ref(), b"kept");
    bob_ws.expect_queue_empty().await;
}

#[tokio::test]
async fn online_only_reaches_connected_devices_and_is_never_stored() {
    let server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let mut bob = TestAccount::register(&server, "bob").await;
    let bob2 = bob.add_device(&server).await;
    let mut bob1_ws = WsClient::connect_drained(&server, bob.primary()).await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;

    let mut typing = send_request(vec![to_all_devices(&bob, b"typing")]);
    typing.online_only = true;
    alice_ws.send_ok(typing).await;
    let env = bob1_ws.next_envelope().await;
    assert_eq!(env.seq, 0, "online-only envelopes carry seq 0");
    assert_eq!(env.content.as_ref(), b"typing");

    alice_ws.send_ok(send_request(vec![to_all_devices(&bob, b"stored")])).await;
    assert_eq!(bob1_ws.next_envelope().await.content.as_ref(), b"stored");

    // The offline device gets the stored message only.
    let mut bob2_ws = WsClient::connect(&server, &bob2).await;
    let env = bob2_ws.next_envelope().await;
    assert_eq!(env.content.as_ref(), b"stored");
    assert!(env.seq > 0);
    bob2_ws.expect_queue_empty().await;
}

#[tokio::test]
async fn second_connection_of_a_device_replaces_the_first() {
    let server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut first = WsClient::connect_drained(&server, bob.primary()).await;
    let mut second = WsClient::connect(&server, bob.primary()).await;
    assert_eq!(first.expect_close().await, (4003, "connected_elsewhere".to_owned()));
    second.expect_queue_empty().await;

    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    alice_ws.send_ok(to_primary(&bob, b"to the new one")).await;
    assert_eq!(second.next_envelope().await.content.as_ref(), b"to the new one");
}

/// At most `window` envelopes are outstanding. Absence cannot be proven
/// without waiting, so this uses a round trip on the same connection as a
/// barrier: a server that ignores the window would have pushed the rest of
/// the backlog long before it answers the send.
#[tokio::test]
async fn unacked_backlog_stops_at_the_window_until_acked() {
    const N: usize = 300;
    let server =
        TestServer::builder().arg("--rate-burst").arg("10000").arg("--rate-per-second").arg("10000").start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    for i in 0..N {
        alice_ws.send_ok(to_primary(&bob, format!("w{i}").as_bytes())).await;
    }

    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    let window = bob_ws.auth_ok().map(|ok| ok.window as usize).unwrap_or(0);
    assert_eq!(window, 256);
    let mut seqs = Vec::new();
    for _ in 0..window {
        seqs.push(bob_ws.next_envelope().await.seq);
    }
    bob_ws.send_ok(to_primary(&alice, b"barrier")).await;
    assert_eq!(bob_ws.buffered_events(), 0, "more than {window} unacknowledged envelopes were sent");

    bob_ws.ack(&seqs).await;
    for i in window..N {
        let env = bob_ws.next_envelope().await;
        assert_eq!(env.content.as_ref(), format!("w{i}").as_bytes());
    }
    bob_ws.expect_queue_empty().await;
}
