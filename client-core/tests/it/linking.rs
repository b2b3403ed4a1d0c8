//! Linking a device on another machine against a real hushd: the new device shows a code,
//! the primary approves it, the new device registers itself with the relayed link token and
//! shares the account (identity, username, messages), and the server stores nothing of it.

use hush_client_core::{
    Client, ClientConfig, ClientError, Event, HistoryImport, LinkCode, LinkOptions, MessageDirection, MessageRecord,
};
use tokio::time::timeout;

use crate::group_support::{bodies, history, join, sent, texts};
use crate::support::{Hushd, TestClient, WAIT};

/// Links a new device to `primary`'s account, approving with `options`; says what became
/// of the history.
pub async fn linked_device_with(
    server: &Hushd,
    primary: &TestClient,
    name: &str,
    options: LinkOptions,
) -> (TestClient, HistoryImport) {
    let dir = tempfile::Builder::new().prefix("client-").tempdir().unwrap();
    let pending = Client::link(ClientConfig::new(dir.path(), server.url()), Some(name)).await.unwrap();
    let code = pending.code().to_text();
    let (linked, approved) = timeout(WAIT, async {
        tokio::join!(pending.finish_with_history(), primary.client.approve_link_with(&code, options))
    })
    .await
    .expect("the link finishes");
    approved.unwrap();
    let (client, imported) = linked.unwrap();
    let events = client.events();
    (TestClient { client, name: primary.name.clone(), dir, events, backlog: Default::default() }, imported)
}

/// Rows of `sql` (one integer column) in the server's SQLite database.
async fn server_ints(server: &Hushd, sql: &str) -> Vec<i64> {
    let url = format!("sqlite://{}?mode=ro", server.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(i64,)> = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows.into_iter().map(|(v,)| v).collect()
}

/// What two devices must agree on about a message.
fn shown(records: &[MessageRecord]) -> Vec<(String, String, MessageDirection, u64, u64)> {
    records.iter().map(|m| (m.id.to_string(), m.body.clone(), m.direction, m.lamport, m.group_seq)).collect()
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_linked_with_history_shows_the_primarys_conversations_contacts_and_groups() {
    let server = Hushd::start().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let mut bob = TestClient::register(&server, "bob").await;
    let marker = "marker-7f3a9c-never-in-the-clear";
    for i in 0..3 {
        alice.client.send_text(&bob.name, &format!("alice {i}")).await.unwrap();
        alice.drain().await;
        bob.drain().await;
        bob.client.send_text(&alice.name, &format!("bob {i}")).await.unwrap();
        bob.drain().await;
        alice.drain().await;
    }
    alice.client.send_text(&bob.name, marker).await.unwrap();
    alice.drain().await;
    bob.drain().await;

    for c in [&alice, &bob] {
        c.client.connect().await.unwrap();
    }
    let info = alice.client.create_group("club", &[&bob.name]).await.unwrap();
    let group = info.group.clone();
    join(&mut bob, &group).await;
    let ids = vec![alice.client.send_text(&group, "group hello").await.unwrap()];
    sent(&mut alice, &ids).await;
    assert_eq!(texts(&mut bob, &group, 1).await, vec!["group hello".to_owned()]);
    let ids = vec![bob.client.send_text(&group, "group reply").await.unwrap()];
    sent(&mut bob, &ids).await;
    assert_eq!(texts(&mut alice, &group, 1).await, vec!["group reply".to_owned()]);

    // A device linked without history starts empty.
    let (laptop, none) =
        linked_device_with(&server, &alice, "laptop", LinkOptions { history: false, ..LinkOptions::default() }).await;
    assert_eq!(none, HistoryImport::None);
    let own = laptop.client.contacts().await.unwrap();
    assert!(own.is_empty(), "{own:?}");
    assert!(laptop.client.groups().await.unwrap().is_empty());
    assert!(laptop.client.history(&bob.name, 100).await.unwrap().is_empty());

    // The third device, linked with history, shows what the primary shows.
    let (mut desktop, imported) = linked_device_with(&server, &alice, "desktop", LinkOptions::default()).await;
    let HistoryImport::Imported { messages, contacts, groups } = imported else { panic!("{imported:?}") };
    assert_eq!((contacts, groups), (1, 1));
    let on_alice = alice.client.history(&bob.name, 100).await.unwrap();
    let on_desktop = desktop.client.history(&bob.name, 100).await.unwrap();
    assert_eq!(on_alice.len(), 7);
    assert_eq!(shown(&on_desktop), shown(&on_alice), "the same conversation in the same order");
    assert_eq!(desktop.client.contacts().await.unwrap(), alice.client.contacts().await.unwrap(), "trust carried over");
    assert_eq!(
        desktop.client.safety_number(&bob.name).await.unwrap(),
        alice.client.safety_number(&bob.name).await.unwrap()
    );
    let group_on_desktop = desktop.client.group_info(&group).await.unwrap();
    assert_eq!((group_on_desktop.title.as_str(), group_on_desktop.members.len()), ("club", 2));
    assert_eq!(shown(&history(&desktop, &group).await), shown(&history(&alice, &group).await));
    assert_eq!(bodies(&history(&desktop, &group).await), vec!["group hello", "group reply"]);
    assert!(messages >= 9, "{messages} messages imported");
    assert!(desktop.drain_bodies().is_empty(), "imported messages are not announced as new");

    // The archive is gone from the server, and the marker never was there in the clear.
    assert_eq!(server_ints(&server, "SELECT COUNT(*) FROM link_archive_chunks").await, vec![0]);
    assert_eq!(server_ints(&server, "SELECT COUNT(*) FROM link_archives").await, vec![0]);
    assert!(!contains(&server.db_bytes(), marker.as_bytes()), "the marker is in the server's database");
    assert!(!server.log().contains(marker), "the marker is in the server's log");

    // The group goes on: the new device reads what members send and sends to the group.
    desktop.client.connect().await.unwrap();
    desktop.drain().await;
    let ids = vec![bob.client.send_text(&group, "after the link").await.unwrap()];
    sent(&mut bob, &ids).await;
    assert_eq!(texts(&mut desktop, &group, 1).await, vec!["after the link".to_owned()]);
    let ids = vec![desktop.client.send_text(&group, "from the desktop").await.unwrap()];
    sent(&mut desktop, &ids).await;
    assert_eq!(texts(&mut bob, &group, 1).await, vec!["from the desktop".to_owned()]);
    assert_eq!(texts(&mut alice, &group, 1).await, vec!["after the link".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_whose_key_changed_on_the_primary_stays_untrusted_on_a_device_linked_with_history() {
    use hush_client_core::{Event, TrustState};
    let server = Hushd::start().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let bob = TestClient::register(&server, "bob").await;
    alice.client.send_text(&bob.name, "hi").await.unwrap();
    alice.drain().await;
    bob.drain().await;

    // Alice's primary had pinned another key for Bob, so Bob's real key shows as changed.
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
    alice.client = Client::open(alice.config(&server)).await.unwrap();
    alice.events = alice.client.events();
    bob.client.send_text(&alice.name, "my key").await.unwrap();
    bob.drain().await;
    alice.client.connect().await.unwrap();
    let mut seen = Vec::new();
    alice.wait_for("IdentityChanged", &mut seen, |e| matches!(e, Event::IdentityChanged { .. })).await;
    alice.client.disconnect().await.unwrap();

    let (desktop, imported) = linked_device_with(&server, &alice, "desktop", LinkOptions::default()).await;
    assert!(matches!(imported, HistoryImport::Imported { contacts: 1, .. }), "{imported:?}");
    let contact = desktop.client.contacts().await.unwrap().into_iter().find(|c| c.username == bob.name).unwrap();
    assert_eq!(contact.trust, TrustState::Changed, "the primary's decision carried over");
    match desktop.client.send_text(&bob.name, "blocked?").await {
        Err(ClientError::IdentityUntrusted(name)) => assert_eq!(name, bob.name),
        other => panic!("sending must be blocked on the new device too: {other:?}"),
    }
    // Trusting on the new device unblocks it there.
    desktop.client.trust(&bob.name).await.unwrap();
    let contact = desktop.client.contacts().await.unwrap().into_iter().find(|c| c.username == bob.name).unwrap();
    assert_eq!(contact.trust, TrustState::Trusted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_archive_links_the_device_without_history_and_says_why() {
    let server = Hushd::start_with(&["--link-archive-secs", "1"]).await;
    let alice = TestClient::register(&server, "alice").await;
    let bob = TestClient::register(&server, "bob").await;
    alice.client.send_text(&bob.name, "before the link").await.unwrap();
    alice.drain().await;

    let dir = tempfile::Builder::new().prefix("client-").tempdir().unwrap();
    let pending = Client::link(ClientConfig::new(dir.path(), server.url()), None).await.unwrap();
    // The approval is relayed and waits in the new device's socket while the archive expires.
    alice.client.approve_link(&pending.code().to_text()).await.unwrap();
    let expires_at = server_ints(&server, "SELECT expires_at FROM link_archives").await;
    let expires_at = u64::try_from(expires_at[0]).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    tokio::time::sleep(std::time::Duration::from_millis(expires_at.saturating_sub(now) + 50)).await;

    let (client, imported) = timeout(WAIT, pending.finish_with_history()).await.unwrap().unwrap();
    match imported {
        HistoryImport::Failed(why) => assert!(why.contains("expired"), "{why}"),
        other => panic!("an expired archive was imported: {other:?}"),
    }
    assert_eq!(client.status().await.unwrap().device_id, 2, "linked all the same");
    assert!(client.groups().await.unwrap().is_empty());
    assert!(client.contacts().await.unwrap().is_empty(), "no history");
}
