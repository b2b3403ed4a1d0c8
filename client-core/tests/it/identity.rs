//! Safety numbers and identity-key changes.

use hush_client_core::{ClientError, Event, TrustState};

use crate::support::{Hushd, TestClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_numbers_agree_on_both_sides() {
    let server = Hushd::start().await;
    let alice = TestClient::register(&server, "alice").await;
    let bob = TestClient::register(&server, "bob").await;
    let a = alice.client.safety_number(&bob.name).await.unwrap();
    let b = bob.client.safety_number(&alice.name).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a.digits.len(), 60);
    assert!(a.digits.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(a.grouped().split(' ').count(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_identity_key_is_detected_and_blocks_sending_until_trusted() {
    let server = Hushd::start().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let mut bob = TestClient::register(&server, "bob").await;
    alice.client.send_text(&bob.name, "hi").await.unwrap();
    alice.drain().await;
    bob.drain().await;
    let real = bob.client.safety_number(&alice.name).await.unwrap();

    // Alice's device had pinned another key for Bob (as if Bob's key had changed since).
    alice.client.shutdown().await.unwrap();
    let bob_id = bob.client.status().await.unwrap().account_id;
    let path = alice.dir.path().join("client.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let other = libsignal_protocol::IdentityKeyPair::generate(&mut rand::rng());
    sqlx::query("UPDATE identities SET key = ? WHERE name = ?")
        .bind(other.identity_key().serialize().to_vec())
        .bind(hush_keys::aci_string(bob_id))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    alice.client = hush_client_core::Client::open(alice.config(&server)).await.unwrap();
    alice.events = alice.client.events();
    assert_ne!(alice.client.safety_number(&bob.name).await.unwrap(), real);

    // Bob writes: Alice sees the message and the change.
    bob.client.send_text(&alice.name, "my key").await.unwrap();
    bob.drain().await;
    alice.client.connect().await.unwrap();
    let mut seen = Vec::new();
    let changed = alice.wait_for("IdentityChanged", &mut seen, |e| matches!(e, Event::IdentityChanged { .. })).await;
    assert_eq!(changed, Event::IdentityChanged { username: bob.name.clone() });
    let contact = alice.client.contacts().await.unwrap().into_iter().find(|c| c.username == bob.name).unwrap();
    assert_eq!(contact.trust, TrustState::Changed);
    match alice.client.send_text(&bob.name, "blocked?").await {
        Err(ClientError::IdentityUntrusted(name)) => assert_eq!(name, bob.name),
        other => panic!("sending must be blocked: {other:?}"),
    }
    assert_eq!(alice.client.safety_number(&bob.name).await.unwrap(), real, "the new key is the real one");

    alice.client.trust(&bob.name).await.unwrap();
    alice.client.send_text(&bob.name, "trusted again").await.unwrap();
    alice.drain().await;
    bob.drain().await;
    let bodies = bob.drain_bodies();
    assert_eq!(bodies.last().map(String::as_str), Some("trusted again"), "{bodies:?}");
}
