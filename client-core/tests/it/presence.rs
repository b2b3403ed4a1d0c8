//! Presence between two real clients through a real hushd: online within seconds of
//! connecting, offline at once after a clean shutdown or after the quiet period when the
//! connection dies without a word; nothing either way with sharing off.

use std::time::Duration;

use hush_client_core::{Event, Presence, PresenceTiming};
use tokio::time::Instant;

use crate::support::{Hushd, TestClient};

/// How long a presence flip may take (a clean one takes a round trip; the quiet period is 3 s).
const FLIP: Duration = Duration::from_secs(15);

fn short_timing() -> PresenceTiming {
    PresenceTiming {
        heartbeat: Duration::from_millis(500),
        quiet: Duration::from_millis(3000),
        answer_every: Duration::from_millis(500),
    }
}

async fn client(server: &Hushd, prefix: &str) -> TestClient {
    TestClient::register_with(server, prefix, |c| c.presence = short_timing()).await
}

/// Waits (at most [`FLIP`]) for a presence event about `contact` matching `want`; returns it
/// and the events seen before it.
async fn presence_of(me: &mut TestClient, contact: &str, want: impl Fn(&Presence) -> bool) -> (Presence, Vec<Event>) {
    let deadline = Instant::now() + FLIP;
    let mut before = Vec::new();
    loop {
        match me.next_event(&format!("{contact}'s presence"), deadline).await {
            Some(Event::Presence { contact: c, presence }) if c == contact && want(&presence) => {
                return (presence, before);
            }
            Some(other) => before.push(other),
            None => panic!("{}: client stopped", me.name),
        }
    }
}

/// Alice and Bob with a one-to-one conversation, both offline.
async fn pair(server: &Hushd) -> (TestClient, TestClient) {
    let alice = client(server, "alice").await;
    let bob = client(server, "bob").await;
    alice.client.send_text(&bob.name, "hi").await.unwrap();
    alice.drain().await;
    bob.drain().await;
    (alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_is_seen_online_within_seconds_and_offline_after_a_clean_shutdown() {
    let server = Hushd::start().await;
    let (mut alice, mut bob) = pair(&server).await;
    bob.client.connect().await.unwrap();
    alice.client.connect().await.unwrap();
    presence_of(&mut bob, &alice.name, |p| *p == Presence::Online).await;
    presence_of(&mut alice, &bob.name, |p| *p == Presence::Online).await;
    assert_eq!(bob.client.presence(&alice.name).await.unwrap(), Presence::Online);

    alice.client.shutdown().await.unwrap();
    let (seen, _) = presence_of(&mut bob, &alice.name, |p| matches!(p, Presence::LastSeen { .. })).await;
    let Presence::LastSeen { hour } = seen else { unreachable!() };
    assert_eq!(hour % hush_client_core::HOUR_MS, 0);
    assert!(!server.log().to_lowercase().contains("presence"), "hushd knows nothing of presence");
    bob.client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_whose_connection_dies_without_a_word_is_offline_after_the_quiet_period() {
    let mut server = Hushd::start().await;
    let (alice, mut bob) = pair(&server).await;
    bob.client.connect().await.unwrap();
    alice.client.connect().await.unwrap();
    presence_of(&mut bob, &alice.name, |p| *p == Presence::Online).await;

    // The relay is killed: no OFFLINE can reach Bob. He infers it from the silence.
    let killed = Instant::now();
    server.kill().await;
    presence_of(&mut bob, &alice.name, |p| matches!(p, Presence::LastSeen { .. })).await;
    assert!(killed.elapsed() >= Duration::from_millis(1000), "not before the quiet period ran");
    alice.client.shutdown().await.unwrap();
    bob.client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sharing_off_contacts_see_nothing_and_you_see_no_one() {
    let server = Hushd::start().await;
    let (mut alice, mut bob) = pair(&server).await;
    alice.client.set_presence_sharing(false).await.unwrap();
    assert!(!alice.client.presence_sharing().await.unwrap());
    alice.client.connect().await.unwrap();
    bob.client.connect().await.unwrap();
    // Bob's announcement goes out on connect, before his first message is answered; his
    // second message reaches Alice after it.
    let mut bob_seen = Vec::new();
    bob.client.send_text(&alice.name, "there?").await.unwrap();
    bob.wait_for("Sent", &mut bob_seen, |e| matches!(e, Event::Sent { .. })).await;
    bob.client.send_text(&alice.name, "still there?").await.unwrap();
    let mut alice_seen = Vec::new();
    alice
        .wait_for("Bob's message", &mut alice_seen, |e| matches!(e, Event::Message(m) if m.body == "still there?"))
        .await;
    // Alice was connected before writing: an announcement of hers would have come first.
    alice.client.send_text(&bob.name, "yes").await.unwrap();
    bob.wait_for("Alice's message", &mut bob_seen, |e| matches!(e, Event::Message(m) if m.body == "yes")).await;
    assert!(!bob_seen.iter().any(|e| matches!(e, Event::Presence { .. })), "Bob sees nothing: {bob_seen:?}");
    assert!(!alice_seen.iter().any(|e| matches!(e, Event::Presence { .. })), "Alice sees no one: {alice_seen:?}");
    assert_eq!(bob.client.presence(&alice.name).await.unwrap(), Presence::Unknown);
    assert_eq!(alice.client.presence(&bob.name).await.unwrap(), Presence::Unknown);
    alice.client.shutdown().await.unwrap();
    bob.client.shutdown().await.unwrap();
}
