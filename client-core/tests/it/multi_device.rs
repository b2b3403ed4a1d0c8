//! Several devices of one account against a real hushd: every device gets every message once,
//! shows what the others sent in the same order, and follows their read and trust decisions.

use hush_client_core::{ConnectionState, Event, MessageDirection, ReceiptKind, TrustState};

use crate::linking::linked_device;
use crate::support::{Hushd, TestClient};

/// Alice with three devices (two linked as on other machines: code, approval, link token), and Bob.
async fn alice_with_three_devices(server: &Hushd) -> (TestClient, TestClient, TestClient, TestClient) {
    let alice = TestClient::register(server, "alice").await;
    let alice2 = linked_device(server, &alice, "laptop", "uri").await;
    let alice3 = linked_device(server, &alice, "desktop", "text").await;
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

/// The devices `who`'s correspondent has sessions with for `account`, from its database
/// (read after `who` shut down).
async fn session_devices(who: &TestClient, account: uuid::Uuid) -> Vec<i64> {
    let path = who.dir.path().join("client.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await.unwrap();
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT device FROM sessions WHERE name = ? ORDER BY device")
        .bind(hush_keys::aci_string(account))
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.into_iter().map(|(d,)| d).collect()
}

async fn wait_stopped(who: &mut TestClient) -> String {
    let mut seen = Vec::new();
    match who.wait_for("Stopped", &mut seen, |e| matches!(e, Event::Connection(ConnectionState::Stopped(_)))).await {
        Event::Connection(ConnectionState::Stopped(reason)) => reason,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_listed_and_removed_and_correspondents_stop_encrypting_for_them() {
    let server = Hushd::start().await;
    let (mut a1, mut a2, mut a3, mut bob) = alice_with_three_devices(&server).await;
    bob.client.send_text(&a1.name, "before").await.unwrap();
    drain_all(&[&bob, &a1, &a2, &a3]).await;
    for d in [&mut a1, &mut a2, &mut a3] {
        assert_eq!(d.drain_bodies(), ["before"]);
    }
    let alice_id = a1.client.status().await.unwrap().account_id;

    let list = a1.client.devices().await.unwrap();
    assert_eq!(list.iter().map(|d| d.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(list.iter().filter(|d| d.this_device).map(|d| d.id).collect::<Vec<_>>(), [1]);
    assert!(list.iter().all(|d| d.created_at > 0));
    let on_3 = a3.client.devices().await.unwrap();
    assert_eq!(on_3.iter().filter(|d| d.this_device).map(|d| d.id).collect::<Vec<_>>(), [3]);

    // Only the primary removes others.
    assert!(a2.client.remove_device(3).await.is_err());

    // The primary removes device 2 while it is online: it stops and says why.
    a2.client.connect().await.unwrap();
    let mut seen = Vec::new();
    a2.wait_for("Connected", &mut seen, |e| matches!(e, Event::Connection(ConnectionState::Connected))).await;
    a1.client.remove_device(2).await.unwrap();
    let reason = wait_stopped(&mut a2).await;
    assert!(reason.contains("removed"), "{reason}");

    // Device 3 removes itself: it stops at once.
    a3.client.remove_device(3).await.unwrap();
    let reason = wait_stopped(&mut a3).await;
    assert!(reason.contains("removed"), "{reason}");
    assert!(matches!(a3.client.status().await.unwrap().connection, ConnectionState::Stopped(_)));
    assert_eq!(a1.client.devices().await.unwrap().iter().map(|d| d.id).collect::<Vec<_>>(), [1]);

    // Bob's next message reaches the one device left, and Bob drops his sessions with the others.
    bob.client.send_text(&a1.name, "after").await.unwrap();
    bob.drain().await;
    a1.drain().await;
    assert_eq!(a1.drain_bodies(), ["after"]);
    a1.client.send_text(&bob.name, "still here").await.unwrap();
    a1.drain().await;
    bob.drain().await;
    assert_eq!(bob.drain_bodies(), ["still here"]);
    bob.client.shutdown().await.unwrap();
    assert_eq!(session_devices(&bob, alice_id).await, [1], "no session left with a removed device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_device_shows_its_name_on_the_others() {
    let server = Hushd::start().await;
    let a1 = TestClient::register(&server, "alice").await;
    let a2 = linked_device(&server, &a1, "laptop", "text").await;
    a2.client.rename_device(Some("laptop")).await.unwrap();
    let list = a1.client.devices().await.unwrap();
    assert_eq!(list.iter().find(|d| d.id == 2).and_then(|d| d.name.clone()).as_deref(), Some("laptop"));
    a2.client.rename_device(None).await.unwrap();
    let list = a1.client.devices().await.unwrap();
    assert_eq!(list.iter().find(|d| d.id == 2).and_then(|d| d.name.clone()), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_added_after_the_first_message_gets_later_transcripts() {
    let server = Hushd::start().await;
    let a1 = TestClient::register(&server, "alice").await;
    let bob = TestClient::register(&server, "bob").await;
    a1.client.send_text(&bob.name, "alone").await.unwrap();
    a1.drain().await;
    let mut a2 = linked_device(&server, &a1, "laptop", "text").await;
    a1.client.send_text(&bob.name, "with two").await.unwrap();
    a1.drain().await;
    a2.drain().await;
    bob.drain().await;
    // Only the later message is new on the linked device; the earlier one came with the
    // history the primary sent when it approved the link.
    assert_eq!(a2.drain_bodies(), ["with two"]);
    assert_eq!(view(&a2, &bob.name).await, [("alone".to_owned(), true), ("with two".to_owned(), true)]);
    assert_eq!(view(&bob, &a1.name).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hushd_takes_rotated_prekeys_and_old_bundles_still_open_sessions() {
    let server = Hushd::start().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let bob = TestClient::register(&server, "bob").await;
    bob.client.send_text(&alice.name, "from the old bundle").await.unwrap();
    bob.drain().await;
    // Alice reopens with a schedule that rotates at every connection.
    alice.client.shutdown().await.unwrap();
    let mut config = alice.config(&server);
    config.prekey_schedule = hush_client_core::PrekeySchedule {
        rotate_every: std::time::Duration::ZERO,
        keep_replaced: std::time::Duration::from_secs(3600),
    };
    alice.client = hush_client_core::Client::open(config).await.unwrap();
    alice.events = alice.client.events();
    alice.drain().await;
    assert_eq!(alice.drain_bodies(), ["from the old bundle"]);
    let path = alice.dir.path().join("client.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await.unwrap();
    let signed: Vec<(i64,)> =
        sqlx::query_as("SELECT id FROM signed_pre_keys ORDER BY id").fetch_all(&pool).await.unwrap();
    pool.close().await;
    assert_eq!(signed, [(1,), (2,)], "rotated once, the old one kept");

    // A new contact starts from the new bundle.
    let carol = TestClient::register(&server, "carol").await;
    carol.client.send_text(&alice.name, "from the new bundle").await.unwrap();
    carol.drain().await;
    alice.drain().await;
    assert_eq!(alice.drain_bodies(), ["from the new bundle"]);
}
