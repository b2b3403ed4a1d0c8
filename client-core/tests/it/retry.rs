//! An envelope the recipient cannot decrypt: reported, asked for again, and resent, through a
//! real hushd.

use hush_client_core::Event;
use hush_client_core::store::{Batch, ClientStore, SqliteStore};

use crate::support::{Hushd, TestClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_over_a_session_the_recipient_lost_is_reported_and_resent() {
    let server = Hushd::start().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let mut bob = TestClient::register(&server, "bob").await;
    alice.client.send_text(&bob.name, "hello").await.unwrap();
    alice.drain().await;
    bob.drain().await;
    alice.drain().await; // Bob's receipt: Alice's session with Bob is now acknowledged
    assert_eq!(bob.drain_bodies(), vec!["hello".to_owned()]);

    // Bob loses his session with Alice (as restoring an old backup of his store would).
    let alice_id = alice.client.status().await.unwrap().account_id;
    bob.client.shutdown().await.unwrap();
    let store = SqliteStore::open(&bob.dir.path().join("client.db")).await.unwrap();
    let mut batch = Batch::default();
    batch.sessions.insert((hush_keys::aci_string(alice_id), 1), None);
    store.commit(batch).await.unwrap();
    store.close().await;
    bob.client = hush_client_core::Client::open(bob.config(&server)).await.unwrap();
    bob.events = bob.client.events();

    alice.client.send_text(&bob.name, "lost and found").await.unwrap();
    alice.drain().await;
    alice.client.connect().await.unwrap();
    bob.client.connect().await.unwrap();
    let mut seen = Vec::new();
    let failed =
        bob.wait_for("the decryption failure", &mut seen, |e| matches!(e, Event::DecryptionFailed { .. })).await;
    assert_eq!(failed, Event::DecryptionFailed { from: alice.name.clone(), from_device: 1, retry_requested: true });
    let resent = bob.wait_for("the resent message", &mut seen, |e| matches!(e, Event::Message(_))).await;
    let Event::Message(m) = resent else { unreachable!() };
    assert_eq!(m.body, "lost and found");
    bob.drain().await;
    alice.drain().await;
    bob.drain().await;
    assert!(bob.drain_bodies().is_empty(), "the message arrives once");
    let history = bob.client.history(&alice.name, 10).await.unwrap();
    let bodies: Vec<&str> = history.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["hello", "lost and found"]);

    // The rebuilt session carries new messages both ways.
    bob.client.send_text(&alice.name, "got it").await.unwrap();
    bob.drain().await;
    alice.drain().await;
    assert_eq!(alice.drain_bodies(), vec!["got it".to_owned()]);
}
