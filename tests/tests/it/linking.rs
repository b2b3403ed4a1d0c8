//! Linking a new device: the provisioning socket and relay, link tokens, the new device's
//! registration with an identity-key proof, renaming, and what the server keeps of it all.

use hush_e2e::cluster::{RedisServer, ScratchDb, two_nodes};
use hush_e2e::keys::{DEFAULT_ONE_TIME_KEYS, DeviceKeys};
use hush_e2e::{
    ProvisioningClient, RestClient, TestAccount, TestServer, WsClient, link_request, random_bytes, send_request,
    to_all_devices,
};
use hush_wire::api::{AddDeviceResponse, B64, DeviceList, LinkArchive, LinkToken};
use hush_wire::close;
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tokio_tungstenite::tungstenite::Message;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every byte of every SQLite file of the server (database, WAL) and its log.
fn server_bytes(server: &TestServer) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("log".to_owned(), server.log().into_bytes())];
    for entry in std::fs::read_dir(server.data_dir()).unwrap_or_else(|e| panic!("cannot list the data dir: {e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.to_string_lossy().contains("hush.db") {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn assert_nowhere_on(server: &TestServer, what: &str, marker: &[u8]) {
    for (file, bytes) in server_bytes(server) {
        assert!(!contains(&bytes, marker), "{file} holds the {what}");
    }
}

async fn token(rest: &RestClient, account: &TestAccount) -> Vec<u8> {
    let token: LinkToken = rest.link_token(account.primary()).await.json(201);
    assert_eq!(token.token.0.len(), 32);
    token.token.0
}

fn new_keys(account: &TestAccount) -> DeviceKeys {
    DeviceKeys::generate(&account.identity, DEFAULT_ONE_TIME_KEYS)
}

#[tokio::test]
async fn linking_relays_the_link_message_then_the_new_device_registers_and_receives() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let mut alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;

    // The new device waits for its link message.
    let mut new_device = ProvisioningClient::open(&server).await;
    let address = new_device.address.address.clone();
    assert_eq!(address.len(), 22, "16 bytes, base64url without padding: {address}");
    assert!(new_device.address.expires_at > hush_e2e::now_ms());

    // The primary device asks for a token and sends the (here: pretend-encrypted) link message.
    let token = token(&rest, &alice).await;
    let marker = format!("LINK-MARKER-{}", uuid::Uuid::new_v4().simple()).into_bytes();
    let body = [marker.clone(), token.clone()].concat();
    rest.provision(alice.primary(), &address, &body).await.assert_status(204);
    assert_eq!(new_device.expect_message().await, body);
    assert_eq!(new_device.expect_close().await, (close::NORMAL, close::REASON_DELIVERED.to_owned()));
    // An address takes one message.
    rest.provision(alice.primary(), &address, b"again").await.assert_error(404, "unknown_channel");

    // The new device registers itself with the token it got.
    let keys = new_keys(&alice);
    let resp: AddDeviceResponse = rest.link_device(&link_request(&alice, &token, &keys)).await.json(201);
    assert_eq!(resp.device_id, 2);
    let linked = alice.adopt(resp.device_id, keys);
    let devices: DeviceList =
        rest.signed_get(&linked, &format!("/v1/accounts/{}/devices", alice.account_id)).await.json(200);
    assert_eq!(devices.devices.iter().map(|d| d.device_id).collect::<Vec<_>>(), vec![1, 2]);

    // It authenticates and gets what is sent to the account.
    let mut linked_ws = WsClient::connect_drained(&server, &linked).await;
    let mut bob_ws = WsClient::connect_drained(&server, bob.primary()).await;
    bob_ws.send_ok(send_request(vec![to_all_devices(&alice, b"hello new device")])).await;
    let env = linked_ws.next_envelope().await;
    assert_eq!(env.content.as_ref(), b"hello new device");
    linked_ws.ack(&[env.seq]).await;

    // The relayed body was never stored or logged.
    assert_nowhere_on(&server, "relayed link message", &marker);
    assert!(!server.log().contains(&address), "the log names the provisioning address");
}

#[tokio::test]
async fn link_tokens_are_single_use_for_the_primary_only_and_checked_with_the_identity_key() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let mut alice = TestAccount::register(&server, "alice").await;
    let eve = TestAccount::register(&server, "eve").await;

    // Unknown token (and a token of the wrong length, and an unknown account): 401.
    let keys = new_keys(&alice);
    rest.link_device(&link_request(&alice, &random_bytes(32), &keys)).await.assert_error(401, "link_token_unknown");
    rest.link_device(&link_request(&alice, &random_bytes(31), &keys)).await.assert_error(401, "link_token_unknown");
    let token = token(&rest, &alice).await;
    let mut foreign = link_request(&alice, &token, &keys);
    foreign.account_id = uuid::Uuid::new_v4();
    rest.link_device(&foreign).await.assert_error(401, "link_token_unknown");

    // A proof not made by the account's identity key, or over other bytes: 400.
    let forged = link_request(&eve, &token, &keys);
    let mut forged_for_alice = link_request(&alice, &token, &keys);
    forged_for_alice.proof = forged.proof;
    rest.link_device(&forged_for_alice).await.assert_error(400, "bad_signature");
    let mut other_device = link_request(&alice, &token, &keys);
    other_device.device = new_keys(&alice).new_device;
    rest.link_device(&other_device).await.assert_error(400, "bad_signature");
    // Prekeys not signed by the identity key: 400 too (as for POST /v1/devices).
    let eve_keys = new_keys(&eve);
    let mut bad_prekeys = link_request(&alice, &token, &keys);
    bad_prekeys.device.signed_prekey = eve_keys.new_device.signed_prekey.clone();
    rest.link_device(&bad_prekeys).await.assert_error(400, "bad_signature");

    // None of that used the token up; the right request does, once.
    let resp: AddDeviceResponse = rest.link_device(&link_request(&alice, &token, &keys)).await.json(201);
    let second = alice.adopt(resp.device_id, keys);
    rest.link_device(&link_request(&alice, &token, &new_keys(&alice))).await.assert_error(409, "link_token_used");

    // Only the primary device issues tokens.
    rest.link_token(&second).await.assert_error(403, "forbidden");
    assert_eq!(alice.devices.len(), 2);
}

#[tokio::test]
async fn two_concurrent_uses_of_a_token_add_one_device() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let token = token(&rest, &alice).await;
    let (a, b) = (link_request(&alice, &token, &new_keys(&alice)), link_request(&alice, &token, &new_keys(&alice)));
    let (first, second) = tokio::join!(rest.link_device(&a), rest.link_device(&b));
    let mut statuses = vec![first.status, second.status];
    statuses.sort_unstable();
    assert_eq!(statuses, vec![201, 409], "{} / {}", first.text(), second.text());
    let loser = if first.status == 409 { first } else { second };
    loser.assert_error(409, "link_token_used");
    let devices: DeviceList =
        rest.signed_get(alice.primary(), &format!("/v1/accounts/{}/devices", alice.account_id)).await.json(200);
    assert_eq!(devices.devices.len(), 2);
}

#[tokio::test]
async fn the_seventh_device_is_refused_and_keeps_its_token() {
    assert_eq!(hush_wire::limits::MAX_DEVICES_PER_ACCOUNT, 6, "the issue asks for up to 6 devices per account");
    let server = TestServer::builder().args(["--link-burst", "50"]).start().await;
    let rest = RestClient::new(&server);
    let mut alice = TestAccount::register(&server, "alice").await;
    for _ in 2..=6 {
        alice.link_new_device(&server).await;
    }
    let token = token(&rest, &alice).await;
    let keys = new_keys(&alice);
    rest.link_device(&link_request(&alice, &token, &keys)).await.assert_error(409, "too_many_devices");
    // Once a device is removed the same token still works.
    rest.signed::<()>(alice.primary(), "DELETE", "/v1/devices/4", None).await.assert_status(204);
    let resp: AddDeviceResponse = rest.link_device(&link_request(&alice, &token, &keys)).await.json(201);
    assert_eq!(resp.device_id, 4);
}

#[tokio::test]
async fn an_expired_token_and_an_expired_address_are_refused_and_the_socket_closes_with_4008() {
    let server = TestServer::builder().args(["--link-timeout-secs", "2"]).start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let token: LinkToken = rest.link_token(alice.primary()).await.json(201);
    let mut new_device = ProvisioningClient::open(&server).await;
    let address = new_device.address.address.clone();
    let expires_in = new_device.address.expires_at.saturating_sub(hush_e2e::now_ms());
    assert!(expires_in <= 2_000, "the address lives --link-timeout-secs: {expires_in} ms");
    // The socket closes at its expiry; the token, issued earlier, expired before it.
    assert_eq!(new_device.expect_close().await, (close::LINK_EXPIRED, close::REASON_LINK_EXPIRED.to_owned()));
    assert!(hush_e2e::now_ms() >= token.expires_at, "the token was issued before the socket opened");
    rest.provision(alice.primary(), &address, b"late").await.assert_error(404, "unknown_channel");
    rest.link_device(&link_request(&alice, &token.token.0, &new_keys(&alice)))
        .await
        .assert_error(401, "link_token_expired");
}

#[tokio::test]
async fn provisioning_puts_to_unknown_closed_or_oversize_are_refused() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    rest.provision(alice.primary(), "AAAAAAAAAAAAAAAAAAAAAA", b"x").await.assert_error(404, "unknown_channel");
    rest.provision(alice.primary(), "not-an-address", b"x").await.assert_error(404, "unknown_channel");

    let mut open = ProvisioningClient::open(&server).await;
    let max = hush_wire::limits::MAX_PROVISIONING_BODY;
    rest.provision(alice.primary(), &open.address.address, &vec![7; max + 1])
        .await
        .assert_error(413, "provisioning_body_too_large");
    // The refusal did not use the address; the largest body goes through.
    rest.provision(alice.primary(), &open.address.address, &vec![7; max]).await.assert_status(204);
    assert_eq!(open.expect_message().await.len(), max);

    let closed = ProvisioningClient::open(&server).await;
    let address = closed.address.address.clone();
    closed.close().await;
    rest.provision(alice.primary(), &address, b"x").await.assert_error(404, "unknown_channel");
}

#[tokio::test]
async fn a_provisioning_client_that_sends_a_frame_is_closed_as_malformed() {
    let server = TestServer::start().await;
    let mut binary = ProvisioningClient::open(&server).await;
    binary.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(binary.expect_close().await, (close::MALFORMED, close::REASON_MALFORMED.to_owned()));
    let mut text = ProvisioningClient::open(&server).await;
    text.send_raw(Message::Text("hello".into())).await;
    assert_eq!(text.expect_close().await.0, close::MALFORMED);
    // A ping is fine: the socket stays and still takes its message.
    let mut pinging = ProvisioningClient::open(&server).await;
    pinging.send_raw(Message::Ping(vec![1].into())).await;
    let alice = TestAccount::register(&server, "alice").await;
    RestClient::new(&server).provision(alice.primary(), &pinging.address.address, b"m").await.assert_status(204);
    assert_eq!(pinging.expect_message().await, b"m");
}

#[tokio::test]
async fn provisioning_sockets_count_against_the_unauthenticated_budget() {
    let server = TestServer::builder().args(["--max-handshakes-per-address", "2"]).start().await;
    let first = ProvisioningClient::open(&server).await;
    let _second = ProvisioningClient::open(&server).await;
    assert_eq!(ProvisioningClient::refused_status(&server).await, Some(429), "a third from one address");
    // A WebSocket handshake from the same address is refused the same way.
    let url = server.ws_url();
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 429),
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    first.close().await;
    let _third = ProvisioningClient::open(&server).await;
}

#[tokio::test]
async fn a_full_handshake_budget_drops_the_oldest_provisioning_socket_for_a_new_one() {
    let server = TestServer::builder().args(["--max-handshakes", "1"]).start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let mut oldest = ProvisioningClient::open(&server).await;
    let mut newer = ProvisioningClient::open(&server).await;
    assert_eq!(oldest.expect_close().await, (close::TRY_AGAIN_LATER, close::REASON_BUSY.to_owned()));
    let rest = RestClient::new(&server);
    rest.provision(alice.primary(), &oldest.address.address, b"x").await.assert_error(404, "unknown_channel");
    // A WebSocket handshake in turn drops the provisioning socket.
    let _ws = WsClient::open(&server).await;
    assert_eq!(newer.expect_close().await.0, close::TRY_AGAIN_LATER);
}

#[tokio::test]
async fn a_link_message_reaches_a_socket_held_by_another_node() {
    let db = ScratchDb::create().await;
    let redis = RedisServer::start().await;
    let (a, b) = two_nodes(&db, &redis, "30").await;
    let (rest_a, rest_b) = (RestClient::new(&a), RestClient::new(&b));
    let mut alice = TestAccount::register(&a, "alice").await;

    let mut new_device = ProvisioningClient::open(&b).await;
    let address = new_device.address.address.clone();
    let token = token(&rest_a, &alice).await;
    rest_a.provision(alice.primary(), &address, &token).await.assert_status(204);
    assert_eq!(new_device.expect_message().await, token);
    assert_eq!(new_device.expect_close().await.0, close::NORMAL);
    rest_b.provision(alice.primary(), &address, b"again").await.assert_error(404, "unknown_channel");
    rest_a.provision(alice.primary(), &address, b"again").await.assert_error(404, "unknown_channel");

    // A socket closed on node b is refused on node a as well.
    let closed = ProvisioningClient::open(&b).await;
    let gone = closed.address.address.clone();
    closed.close().await;
    rest_a.provision(alice.primary(), &gone, b"x").await.assert_error(404, "unknown_channel");

    // The token works on the other node too, and the device is there for both.
    let keys = new_keys(&alice);
    let resp: AddDeviceResponse = rest_b.link_device(&link_request(&alice, &token, &keys)).await.json(201);
    let linked = alice.adopt(resp.device_id, keys);
    WsClient::connect_drained(&a, &linked).await;

    // A history archive uploaded through one node is read through the other.
    let archive = new_archive(&rest_a, &alice).await;
    let chunk = random_bytes(5000);
    rest_a.put_archive_chunk(alice.primary(), &archive.archive_id, 0, chunk.clone()).await.assert_status(204);
    rest_a.complete_archive(alice.primary(), &archive.archive_id, 1).await.assert_status(204);
    let got = rest_b.get_archive_chunk(&linked, &archive.archive_id, 0).await;
    got.assert_status(200);
    assert_eq!(got.body, chunk);
    rest_b
        .signed::<()>(&linked, "DELETE", &format!("/v1/link-archives/{}", archive.archive_id), None)
        .await
        .assert_status(204);
    rest_a.get_archive_chunk(alice.primary(), &archive.archive_id, 0).await.assert_error(404, "unknown_archive");
}

#[tokio::test]
async fn a_device_renames_itself_and_the_device_list_shows_it() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let mut alice = TestAccount::register(&server, "alice").await;
    let second = alice.link_new_device(&server).await;
    let list = format!("/v1/accounts/{}/devices", alice.account_id);
    let rename = serde_json::json!({ "name": "laptop" });
    rest.signed(&second, "PATCH", "/v1/devices/self", Some(&rename)).await.assert_status(204);
    let devices: DeviceList = rest.signed_get(alice.primary(), &list).await.json(200);
    let names: Vec<_> = devices.devices.iter().map(|d| (d.device_id, d.name.clone())).collect();
    assert_eq!(names, vec![(1, None), (2, Some("laptop".to_owned()))]);

    let too_long = serde_json::json!({ "name": "x".repeat(65) });
    rest.signed(&second, "PATCH", "/v1/devices/self", Some(&too_long)).await.assert_error(400, "invalid_request");
    rest.signed(&second, "PATCH", "/v1/devices/self", Some(&serde_json::json!({ "name": null })))
        .await
        .assert_status(204);
    let devices: DeviceList = rest.signed_get(alice.primary(), &list).await.json(200);
    assert_eq!(devices.devices[1].name, None);
}

#[tokio::test]
async fn a_removed_device_is_closed_refused_and_its_mailbox_and_prekeys_are_gone() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let mut alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let second = alice.link_new_device(&server).await;
    let mut second_ws = WsClient::connect_drained(&server, &second).await;
    let mut bob_ws = WsClient::connect_drained(&server, bob.primary()).await;
    bob_ws.send_ok(send_request(vec![to_all_devices(&alice, b"unacked")])).await;
    second_ws.next_envelope().await; // delivered, never acked

    let opts = SqliteConnectOptions::new().filename(server.db_path()).read_only(true);
    let mut db = SqliteConnection::connect_with(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    let pk: i64 = sqlx::query_scalar("SELECT pk FROM devices WHERE account_id = ? AND device_id = 2")
        .bind(alice.account_id.as_bytes().as_slice())
        .fetch_one(&mut db)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let count = |table: &'static str| format!("SELECT COUNT(*) FROM {table} WHERE device_pk = ?");
    for table in ["envelopes", "one_time_prekeys", "one_time_kyber_prekeys"] {
        let n: i64 =
            sqlx::query_scalar(&count(table)).bind(pk).fetch_one(&mut db).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0, "device 2 has rows in {table} before its removal");
    }

    rest.signed::<()>(alice.primary(), "DELETE", "/v1/devices/2", None).await.assert_status(204);
    assert_eq!(second_ws.expect_close().await, (close::DEVICE_REMOVED, close::REASON_DEVICE_REMOVED.to_owned()));
    rest.signed_get(&second, "/v1/keys/count").await.assert_error(401, "auth_failed");
    let mut ws = WsClient::open(&server).await;
    let auth = ws.auth_for(&second);
    ws.send_frame(hush_wire::frames::client_frame::Frame::Auth(auth)).await;
    assert_eq!(ws.expect_close().await.0, close::AUTH_FAILED);
    for table in ["envelopes", "one_time_prekeys", "one_time_kyber_prekeys"] {
        let n: i64 =
            sqlx::query_scalar(&count(table)).bind(pk).fetch_one(&mut db).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 0, "device 2's rows in {table} outlived it");
    }
    rest.signed_get(bob.primary(), &format!("/v1/keys/{}/2", alice.account_id))
        .await
        .assert_error(404, "unknown_device");
    // A device linked later under the same id starts with an empty mailbox.
    let again = alice.link_new_device(&server).await;
    assert_eq!(again.device_id, 2);
    WsClient::connect_drained(&server, &again).await;
}

#[tokio::test]
async fn link_tokens_are_stored_as_hashes_only() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let token = token(&rest, &alice).await;
    assert_nowhere_on(&server, "link token", &token);
    let b64 = serde_json::to_string(&B64(token.clone())).unwrap_or_default();
    assert!(!server.log().contains(b64.trim_matches('"')), "the log holds the link token");
    // And the right request still finds it by its hash.
    rest.link_device(&link_request(&alice, &token, &new_keys(&alice))).await.assert_status(201);
}

async fn new_archive(rest: &RestClient, account: &TestAccount) -> LinkArchive {
    rest.signed::<()>(account.primary(), "POST", "/v1/link-archives", None).await.json(201)
}

#[tokio::test]
async fn a_history_archive_is_uploaded_by_the_primary_read_by_the_new_device_and_deleted() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let mut alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let linked = alice.link_new_device(&server).await;

    rest.signed::<()>(&linked, "POST", "/v1/link-archives", None).await.assert_error(403, "forbidden");
    let archive = new_archive(&rest, &alice).await;
    assert_eq!((archive.archive_id.len(), archive.chunk_bytes, archive.max_bytes), (22, 1 << 20, 64 << 20));
    let id = archive.archive_id.clone();
    let marker = format!("ARCHIVE-MARKER-{}", uuid::Uuid::new_v4().simple()).into_bytes();
    let chunks: Vec<Vec<u8>> = vec![
        [marker.clone(), random_bytes(archive.chunk_bytes as usize - marker.len())].concat(),
        [random_bytes(1000), marker.clone()].concat(),
    ];
    for (i, chunk) in chunks.iter().enumerate() {
        rest.put_archive_chunk(alice.primary(), &id, i as u32, chunk.clone()).await.assert_status(204);
    }
    // Not readable until complete, and only complete with every chunk.
    rest.get_archive_chunk(&linked, &id, 0).await.assert_error(404, "unknown_archive");
    rest.complete_archive(alice.primary(), &id, 3).await.assert_error(409, "archive_incomplete");
    rest.put_archive_chunk(alice.primary(), &id, 2, Vec::new()).await.assert_error(400, "invalid_request");
    rest.complete_archive(alice.primary(), &id, 2).await.assert_status(204);
    rest.put_archive_chunk(alice.primary(), &id, 2, b"late".to_vec()).await.assert_error(409, "archive_complete");

    for (i, chunk) in chunks.iter().enumerate() {
        let got = rest.get_archive_chunk(&linked, &id, i as u32).await;
        got.assert_status(200);
        assert_eq!(got.header("content-type"), Some("application/octet-stream"));
        assert_eq!(&got.body, chunk, "chunk {i}");
    }
    rest.get_archive_chunk(&linked, &id, 2).await.assert_error(404, "unknown_archive");
    // Another account sees nothing, and cannot delete it.
    rest.get_archive_chunk(bob.primary(), &id, 0).await.assert_error(404, "unknown_archive");
    rest.signed::<()>(bob.primary(), "DELETE", &format!("/v1/link-archives/{id}"), None)
        .await
        .assert_error(404, "unknown_archive");
    // The bytes were never logged.
    assert!(!contains(server.log().as_bytes(), &marker), "the log holds archive bytes");

    rest.signed::<()>(&linked, "DELETE", &format!("/v1/link-archives/{id}"), None).await.assert_status(204);
    rest.get_archive_chunk(&linked, &id, 0).await.assert_error(404, "unknown_archive");
    let opts = SqliteConnectOptions::new().filename(server.db_path()).read_only(true);
    let mut db = SqliteConnection::connect_with(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM link_archive_chunks")
        .fetch_one(&mut db)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left, 0, "the archive's chunks outlived its DELETE");
    drop(db);
    // Deleted archive bytes are wiped from the database file and its WAL, not just unlinked.
    assert_nowhere_on(&server, "deleted archive bytes", &marker);
}

#[tokio::test]
async fn a_history_archive_is_capped_and_expires() {
    let server =
        TestServer::builder().args(["--max-link-archive-bytes", "3000", "--link-archive-secs", "2"]).start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let archive = new_archive(&rest, &alice).await;
    assert_eq!(archive.max_bytes, 3000);
    let id = archive.archive_id.clone();
    rest.put_archive_chunk(alice.primary(), &id, 0, vec![1; 2000]).await.assert_status(204);
    rest.put_archive_chunk(alice.primary(), &id, 1, vec![2; 1001]).await.assert_error(413, "archive_too_large");
    rest.put_archive_chunk(alice.primary(), &id, 1, vec![2; 1000]).await.assert_status(204);
    // A chunk over chunk_bytes is refused whatever the archive's room.
    let big = TestServer::start().await;
    let big_rest = RestClient::new(&big);
    let bob = TestAccount::register(&big, "bob").await;
    let big_archive = new_archive(&big_rest, &bob).await;
    let over = vec![0; big_archive.chunk_bytes as usize + 1];
    let refused = big_rest.put_archive_chunk(bob.primary(), &big_archive.archive_id, 0, over).await;
    assert_eq!(refused.status, 413, "{}", refused.text());
    rest.put_archive_chunk(alice.primary(), "AAAAAAAAAAAAAAAAAAAAAA", 0, vec![1])
        .await
        .assert_error(404, "unknown_archive");

    rest.complete_archive(alice.primary(), &id, 2).await.assert_status(204);
    rest.get_archive_chunk(alice.primary(), &id, 1).await.assert_status(200);
    // At its expiry it is gone (read as absent at once; the sweeper deletes the rows).
    let deadline = tokio::time::Instant::now() + hush_e2e::WAIT;
    while hush_e2e::now_ms() < archive.expires_at {
        assert!(tokio::time::Instant::now() < deadline, "the archive's expiry never came");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    rest.get_archive_chunk(alice.primary(), &id, 0).await.assert_error(404, "unknown_archive");
    rest.put_archive_chunk(alice.primary(), &id, 2, vec![1]).await.assert_error(404, "unknown_archive");
}
