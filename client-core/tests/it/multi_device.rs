//! Several devices of one account against a real hushd: every device gets every message once,
//! shows what the others sent in the same order, and follows their read and trust decisions.

use hush_client_core::{Event, MessageDirection, ReceiptKind, TrustState};

use crate::group_support::second_device;
use crate::support::{Hushd, TestClient};

/// Alice with three devices, and Bob.
async fn alice_with_three_devices(server: &Hushd) -> (TestClient, TestClient, TestClient, TestClient) {
    let alice = TestClient::register(server, "alice").await;
    let alice2 = second_device(server, &alice).await;
    let alice3 = second_device(server, &alice).await;
    let bob = TestClient::register(server, "bob").await;
    (alice, alice2, alice3, bob)
}

/// The conversation with `peer` as `who` shows it: (body, sent by this account).
async fn view(who: &TestClient, peer: &str) -> Vec<(String, bool)> {
    let history = who.client.history(peer, 1000).await.unwrap();
    history.into_iter().map(|m| (m.body, m.direction == MessageDirection::Outgoing)).collect()
}

async fn drain_all(devices: &[&TestClient]) {
    for d in devices {
        d.drain().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_get_each_message_once_and_show_the_same_conversation() {
    let server = Hushd::start().await;
    let (mut a1, mut a2, mut a3, bob) = alice_with_three_devices(&server).await;
    bob.client.send_text(&a1.name, "b1").await.unwrap();
    bob.drain().await;
    a1.drain().await;
    a1.client.send_text(&bob.name, "a1").await.unwrap();
    a1.drain().await;
    a2.drain().await;
    a2.client.send_text(&bob.name, "a2").await.unwrap();
    a2.drain().await;
    drain_all(&[&a3, &bob]).await;
    bob.client.send_text(&a1.name, "b2").await.unwrap();
    drain_all(&[&bob, &a1, &a2, &a3]).await;

    let expected: Vec<(String, bool)> =
        [("b1", false), ("a1", true), ("a2", true), ("b2", false)].iter().map(|(b, o)| ((*b).to_owned(), *o)).collect();
    for device in [&a1, &a2, &a3] {
        assert_eq!(view(device, &bob.name).await, expected, "device {}", device.dir.path().display());
    }
    let on_bob: Vec<(String, bool)> = view(&bob, &a1.name).await.into_iter().map(|(b, o)| (b, !o)).collect();
    assert_eq!(on_bob, expected);

    // Each device announced each message once (its own sends are not announced as messages).
    let mut a1_bodies = a1.drain_bodies();
    a1_bodies.sort();
    assert_eq!(a1_bodies, ["a2", "b1", "b2"]);
    let mut a2_bodies = a2.drain_bodies();
    a2_bodies.sort();
    assert_eq!(a2_bodies, ["a1", "b1", "b2"]);
    assert_eq!(a3.drain_bodies(), ["b1", "a1", "a2", "b2"], "in mailbox order, once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_on_one_device_clears_unread_on_the_others() {
    let server = Hushd::start().await;
    let (a1, mut a2, a3, mut bob) = alice_with_three_devices(&server).await;
    bob.client.send_text(&a1.name, "one").await.unwrap();
    bob.client.send_text(&a1.name, "two").await.unwrap();
    drain_all(&[&bob, &a1, &a2, &a3]).await;
    for d in [&a1, &a2, &a3] {
        assert_eq!(d.client.unread(&bob.name).await.unwrap(), 2);
    }
    a1.client.mark_read(&bob.name).await.unwrap();
    drain_all(&[&a1, &a2, &a3]).await;
    for d in [&a1, &a2, &a3] {
        assert_eq!(d.client.unread(&bob.name).await.unwrap(), 0, "device {}", d.dir.path().display());
    }
    let mut read_elsewhere = 0;
    while let Some(e) = a2.events.try_recv() {
        if let Event::ReadElsewhere { conversation, message_ids } = e {
            assert_eq!((conversation, message_ids.len()), (bob.name.clone(), 2));
            read_elsewhere += 1;
        }
    }
    assert_eq!(read_elsewhere, 1);

    bob.drain().await;
    let mut read_receipts = Vec::new();
    while let Some(e) = bob.events.try_recv() {
        if let Event::Receipt(r) = e
            && r.kind == ReceiptKind::Read
        {
            read_receipts.push((r.from_device, r.message_ids.len()));
        }
    }
    let a1_device = a1.client.status().await.unwrap().device_id;
    assert_eq!(read_receipts, vec![(a1_device, 2)], "read receipts only from the device that read");
}

/// Replaces the identity key `who` pinned for `peer` by another one (offline).
async fn pin_other_key(server: &Hushd, who: &mut TestClient, peer: uuid::Uuid) {
    who.client.shutdown().await.unwrap();
    let path = who.dir.path().join("client.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let other = libsignal_protocol::IdentityKeyPair::generate(&mut rand::rng());
    sqlx::query("UPDATE identities SET key = ? WHERE name = ?")
        .bind(other.identity_key().serialize().to_vec())
        .bind(hush_keys::aci_string(peer))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    who.client = hush_client_core::Client::open(who.config(server)).await.unwrap();
    who.events = who.client.events();
}

async fn trust_of(who: &TestClient, peer: &str) -> TrustState {
    who.client.contacts().await.unwrap().into_iter().find(|c| c.username == peer).unwrap().trust
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_decision_holds_on_the_devices_that_know_the_same_key() {
    let server = Hushd::start().await;
    let (mut a1, mut a2, mut a3, bob) = alice_with_three_devices(&server).await;
    bob.client.send_text(&a1.name, "hi").await.unwrap();
    drain_all(&[&bob, &a1, &a2, &a3]).await;
    let bob_id = bob.client.status().await.unwrap().account_id;
    // Every device of Alice had pinned another key for Bob; Bob's next message shows his real one.
    for d in [&mut a1, &mut a2, &mut a3] {
        pin_other_key(&server, d, bob_id).await;
    }
    bob.client.send_text(&a1.name, "my key").await.unwrap();
    drain_all(&[&bob, &a1, &a2, &a3]).await;
    for d in [&a1, &a2, &a3] {
        assert_eq!(trust_of(d, &bob.name).await, TrustState::Changed);
    }
    // Device 3 then pins yet another key: a trust in Bob's real key is not one in that key.
    pin_other_key(&server, &mut a3, bob_id).await;

    a1.client.trust(&bob.name).await.unwrap();
    drain_all(&[&a1, &a2, &a3]).await;
    assert_eq!(trust_of(&a1, &bob.name).await, TrustState::Trusted);
    assert_eq!(trust_of(&a2, &bob.name).await, TrustState::Trusted, "the decision synced");
    assert_eq!(trust_of(&a3, &bob.name).await, TrustState::Changed, "another key: the sync is ignored");
    let mut seen = Vec::new();
    a2.wait_for("TrustedElsewhere", &mut seen, |e| matches!(e, Event::TrustedElsewhere { .. })).await;
    a2.client.send_text(&bob.name, "from device 2").await.unwrap();
    drain_all(&[&a2, &bob]).await;
    let on_bob = view(&bob, &a1.name).await;
    assert_eq!(on_bob.last().map(|(b, _)| b.as_str()), Some("from device 2"));
}
