//! Offline delivery, order, exactly-once, a server outage, and what the server stores.

use hush_client_core::{Event, MessageDirection, MessageStatus};

use crate::support::{Hushd, TestClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_messages_to_an_offline_recipient_arrive_once_and_in_order() {
    let server = Hushd::start().await;
    let alice = TestClient::register(&server, "alice").await;
    let mut bob = TestClient::register(&server, "bob").await;
    let texts: Vec<String> = (0..100).map(|i| format!("message number {i}")).collect();
    for t in &texts {
        alice.client.send_text(&bob.name, t).await.unwrap();
    }
    alice.drain().await;
    let status = alice.client.status().await.unwrap();
    assert_eq!((status.outbox_pending, status.outbox_failed), (0, 0));

    bob.drain().await;
    assert_eq!(bob.drain_bodies(), texts, "every message exactly once, in order");
    let history = bob.client.history(&alice.name, 1000).await.unwrap();
    assert_eq!(history.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), texts);
    assert!(history.iter().all(|m| m.direction == MessageDirection::Incoming && m.from == alice.name));

    // Opening again (and draining again) shows nothing twice.
    bob.reopen(&server).await;
    bob.drain().await;
    assert!(bob.drain_bodies().is_empty());
    assert_eq!(bob.client.history(&alice.name, 1000).await.unwrap().len(), 100);

    // Bob's delivery receipts reach Alice.
    alice.drain().await;
    let mine = alice.client.history(&bob.name, 1000).await.unwrap();
    assert_eq!(mine.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), texts);
    assert!(mine.iter().all(|m| m.status == MessageStatus::Delivered), "{:?}", mine.last());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_written_while_the_server_is_down_are_sent_when_it_returns() {
    let mut server = Hushd::start().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let mut bob = TestClient::register(&server, "bob").await;
    alice.client.send_text(&bob.name, "before the outage").await.unwrap();
    alice.drain().await;
    bob.drain().await;
    assert_eq!(bob.drain_bodies(), vec!["before the outage".to_owned()]);

    alice.client.connect().await.unwrap();
    let mut seen = Vec::new();
    alice
        .wait_for("connected", &mut seen, |e| *e == Event::Connection(hush_client_core::ConnectionState::Connected))
        .await;
    server.kill().await;
    alice
        .wait_for("disconnected", &mut seen, |e| {
            matches!(e, Event::Connection(hush_client_core::ConnectionState::Disconnected(_)))
        })
        .await;
    let offline: Vec<String> = (0..5).map(|i| format!("written offline {i}")).collect();
    for t in &offline {
        alice.client.send_text(&bob.name, t).await.unwrap();
    }
    assert_eq!(alice.client.status().await.unwrap().outbox_pending, 5);

    server.restart().await;
    for _ in 0..5 {
        alice.wait_for("Sent", &mut seen, |e| matches!(e, Event::Sent { .. })).await;
    }
    bob.drain().await;
    assert_eq!(bob.drain_bodies(), offline);
    alice.client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_database_holds_no_text_and_no_sender() {
    let server = Hushd::start().await;
    let alice = TestClient::register(&server, "alice").await;
    let bob = TestClient::register(&server, "bob").await;
    let marker = format!("plaintext-marker-{:016x}", rand::random::<u64>());
    for i in 0..5 {
        alice.client.send_text(&bob.name, &format!("{marker} from alice {i}")).await.unwrap();
    }
    alice.drain().await;

    // While the envelopes wait in Bob's mailbox, none names Alice.
    let alice_id = alice.client.status().await.unwrap().account_id;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", server.db_path().display())).await.unwrap();
    let contents: Vec<Vec<u8>> = sqlx::query_scalar("SELECT content FROM envelopes").fetch_all(&pool).await.unwrap();
    pool.close().await;
    assert!(contents.len() >= 5, "the envelopes are stored: {}", contents.len());
    for c in &contents {
        assert!(!contains(c, alice.name.as_bytes()), "an envelope holds the sender's username");
        assert!(!contains(c, alice_id.as_bytes()), "an envelope holds the sender's account id");
        assert!(!contains(c, alice_id.to_string().as_bytes()), "an envelope holds the sender's account id");
        assert!(!contains(c, marker.as_bytes()));
    }

    bob.drain().await;
    bob.client.send_text(&alice.name, &format!("{marker} reply from bob")).await.unwrap();
    bob.drain().await;
    alice.drain().await;
    let files = server.db_bytes();
    assert!(!files.is_empty());
    assert!(!contains(&files, marker.as_bytes()), "the server's database files hold a message text");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_typing_flow_between_online_clients() {
    let server = Hushd::start().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let mut bob = TestClient::register(&server, "bob").await;
    alice.client.connect().await.unwrap();
    bob.client.connect().await.unwrap();
    let id = alice.client.send_text(&bob.name, "are you typing?").await.unwrap();
    let mut seen = Vec::new();
    bob.wait_for("the message", &mut seen, |e| matches!(e, Event::Message(m) if m.body == "are you typing?")).await;
    alice
        .wait_for("a delivery receipt", &mut seen, |e| {
            matches!(e, Event::Receipt(r) if r.kind == hush_client_core::ReceiptKind::Delivered && r.message_ids == [id])
        })
        .await;

    bob.client.send_typing(&alice.name, true).await.unwrap();
    let typing = alice.wait_for("typing", &mut seen, |e| matches!(e, Event::Typing { .. })).await;
    assert_eq!(typing, Event::Typing { from: bob.name.clone(), from_device: 1, typing: true });

    bob.client.mark_read(&alice.name).await.unwrap();
    alice
        .wait_for("a read receipt", &mut seen, |e| {
            matches!(e, Event::Receipt(r) if r.kind == hush_client_core::ReceiptKind::Read && r.message_ids == [id])
        })
        .await;
    let mine = alice.client.history(&bob.name, 10).await.unwrap();
    assert_eq!(mine[0].status, MessageStatus::Read);
    alice.client.shutdown().await.unwrap();
    bob.client.shutdown().await.unwrap();
}
