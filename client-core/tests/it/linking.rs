//! Linking a device on another machine against a real hushd: the new device shows a code,
//! the primary approves it, the new device registers itself with the relayed link token and
//! shares the account (identity, username, messages), and the server stores nothing of it.

use hush_client_core::{Client, ClientConfig, ClientError, Event, LinkCode, MessageDirection};
use tokio::time::timeout;

use crate::support::{Hushd, TestClient, WAIT};

/// Links a new device (in its own data directory) to `primary`'s account, approving with the
/// code in `form` ("uri" or "text").
pub async fn linked_device(server: &Hushd, primary: &TestClient, name: &str, form: &str) -> TestClient {
    let dir = tempfile::Builder::new().prefix("client-").tempdir().unwrap();
    let pending = Client::link(ClientConfig::new(dir.path(), server.url()), Some(name)).await.unwrap();
    let code = match form {
        "uri" => pending.code().to_string(),
        _ => pending.code().to_text(),
    };
    assert!(pending.expires_at() > 0);
    let (linked, approved) =
        timeout(WAIT, async { tokio::join!(pending.finish(), primary.client.approve_link(&code)) })
            .await
            .expect("the link finishes");
    approved.unwrap();
    let client = linked.unwrap();
    let events = client.events();
    TestClient { client, name: primary.name.clone(), dir, events, backlog: Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_joins_the_account_and_gets_its_messages() {
    let server = Hushd::start().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let laptop = linked_device(&server, &alice, "laptop", "uri").await;
    let desktop = linked_device(&server, &alice, "desktop", "text").await;

    let a = alice.client.status().await.unwrap();
    for (who, id) in [(&laptop, 2), (&desktop, 3)] {
        let s = who.client.status().await.unwrap();
        assert_eq!((s.username.as_str(), s.account_id, s.device_id), (a.username.as_str(), a.account_id, id));
    }
    // Each linked device announced itself to the devices already there.
    laptop.drain().await;
    desktop.drain().await;
    alice.drain().await;
    let mut linked = Vec::new();
    while let Some(e) = alice.events.try_recv() {
        if let Event::DeviceLinked { device_id, name } = e {
            linked.push((device_id, name));
        }
    }
    assert_eq!(linked, vec![(2, Some("laptop".to_owned())), (3, Some("desktop".to_owned()))]);
    let devices = alice.client.devices().await.unwrap();
    let names: Vec<(u32, Option<&str>)> = devices.iter().map(|d| (d.id, d.name.as_deref())).collect();
    assert_eq!(names, vec![(1, None), (2, Some("laptop")), (3, Some("desktop"))]);

    // A correspondent's message reaches all three, and a linked device can send as alice.
    let mut bob = TestClient::register(&server, "bob").await;
    let alice_on_bob = bob.client.safety_number(&alice.name).await.unwrap();
    bob.client.send_text(&alice.name, "hello all of you").await.unwrap();
    bob.drain().await;
    let alice_name = alice.name.clone();
    let mut devices = [alice, laptop, desktop];
    for who in devices.iter_mut() {
        who.drain().await;
        assert_eq!(who.drain_bodies(), vec!["hello all of you".to_owned()], "device {}", who.dir.path().display());
        // The same identity key on every device: the same safety number with bob.
        let sn = who.client.safety_number(&bob.name).await.unwrap();
        assert_eq!(sn.digits, alice_on_bob.digits, "every device has the account's identity key");
    }
    let [alice, laptop, desktop] = &mut devices;
    laptop.client.send_text(&bob.name, "from the laptop").await.unwrap();
    laptop.drain().await;
    // The other two show it as sent by this account (a sent transcript).
    for who in [alice, desktop] {
        who.drain().await;
        assert_eq!(who.drain_bodies(), vec!["from the laptop".to_owned()]);
        let mine = who.client.history(&bob.name, 10).await.unwrap();
        assert_eq!(
            mine.last().map(|m| (m.body.as_str(), m.direction)),
            Some(("from the laptop", MessageDirection::Outgoing))
        );
    }
    bob.drain().await;
    assert_eq!(bob.drain_bodies(), vec!["from the laptop".to_owned()]);
    let history = bob.client.history(&alice_name, 10).await.unwrap();
    assert!(history.iter().any(|m| m.body == "from the laptop" && m.from == alice_name), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_primary_approves_and_a_code_nobody_waits_on_is_refused_clearly() {
    let server = Hushd::start().await;
    let alice = TestClient::register(&server, "alice").await;
    let laptop = linked_device(&server, &alice, "laptop", "text").await;

    // A linked device cannot approve: the server refuses it a link token.
    let dir = tempfile::Builder::new().prefix("client-").tempdir().unwrap();
    let pending = Client::link(ClientConfig::new(dir.path(), server.url()), None).await.unwrap();
    match laptop.client.approve_link(&pending.code().to_text()).await {
        Err(ClientError::Server { status: 403, code, .. }) => assert_eq!(code, "forbidden"),
        other => panic!("a linked device approved a link: {other:?}"),
    }

    // The new device gave up (its channel closed): the approval says nobody waits there.
    let code = pending.code().to_text();
    drop(pending);
    let err = wait_refused(&alice, &code).await;
    assert!(err.contains("no new device is waiting"), "{err}");

    // Not a code at all.
    match alice.client.approve_link("hush://link?address=abc").await {
        Err(ClientError::Invalid(why)) => assert!(why.contains("not a link code"), "{why}"),
        other => panic!("a malformed code was accepted: {other:?}"),
    }
    // An unknown address with a well-formed key: refused like a closed one.
    let unknown = LinkCode::new("AAAAAAAAAAAAAAAAAAAAAA", *LinkCode::parse(&code).unwrap().public_key()).unwrap();
    let err = wait_refused(&alice, &unknown.to_text()).await;
    assert!(err.contains("no new device is waiting"), "{err}");
    assert_eq!(alice.client.devices().await.unwrap().len(), 2, "nothing was added");
}

/// Approves `code`, which must be refused as having no waiting device; the server drops a
/// closed channel when it notices the socket went, so this retries until then (bounded).
async fn wait_refused(primary: &TestClient, code: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match primary.client.approve_link(code).await {
            Err(ClientError::Invalid(why)) => return why,
            Ok(()) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_nobody_approves_expires_with_a_clear_error_and_leaves_no_account() {
    let server = Hushd::start_with(&["--link-timeout-secs", "1"]).await;
    let dir = tempfile::Builder::new().prefix("client-").tempdir().unwrap();
    let config = ClientConfig::new(dir.path(), server.url());
    let pending = Client::link(config.clone(), None).await.unwrap();
    match timeout(WAIT, pending.finish()).await.expect("the server closes the channel at its expiry") {
        Err(ClientError::Timeout(why)) => assert!(why.contains("expired"), "{why}"),
        other => panic!("expected the code to expire, got {other:?}"),
    }
    assert!(matches!(Client::open(config).await, Err(ClientError::NotRegistered)), "no half-made account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_never_stores_the_identity_private_key() {
    let server = Hushd::start().await;
    let alice = TestClient::register(&server, "alice").await;
    let _laptop = linked_device(&server, &alice, "laptop", "text").await;
    // The identity private key is in alice's own store; it must appear nowhere on the server.
    let db = hush_client_core::store::SqliteStore::open(&alice.dir.path().join("client.db")).await;
    let private = match db {
        Ok(store) => {
            use hush_client_core::store::ClientStore as _;
            let account = store.account().await.unwrap().unwrap();
            store.close().await;
            account.identity_key_pair
        }
        Err(e) => panic!("cannot read alice's store: {e}"),
    };
    let pair = libsignal_protocol::IdentityKeyPair::try_from(&private[..]).unwrap();
    let secret = pair.private_key().serialize();
    let on_disk = server.db_bytes();
    assert!(!contains(&on_disk, &secret), "the identity private key is in the server's database");
    assert!(!server.log().contains(&hex::encode(&secret)), "the identity private key is in the server's log");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
