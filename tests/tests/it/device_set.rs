//! Client fan-out: device-set checks, own devices, and mailbox isolation.

use hush_e2e::{TestAccount, TestServer, WsClient, message, recipient, send_request};
use hush_wire::frames::{DeviceMismatch, SendError, SendErrorCode};

/// The mismatch entry for `account`, or a panic listing what came instead.
fn mismatch_for<'a>(err: &'a SendError, account: &TestAccount) -> &'a DeviceMismatch {
    err.mismatches
        .iter()
        .find(|m| m.account_id.as_ref() == account.account_id.as_bytes())
        .unwrap_or_else(|| panic!("no mismatch entry for {}: {:?}", account.username, err.mismatches))
}

fn sorted(v: &[u32]) -> Vec<u32> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

#[tokio::test]
async fn device_mismatch_names_missing_extra_and_stale_devices_and_stores_nothing() {
    let server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let mut bob = TestAccount::register(&server, "bob").await;
    let bob2 = bob.add_device(&server).await;
    let bob1 = bob.primary().clone();
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;

    // Only device 1: device 2 is missing.
    let err = alice_ws
        .send_err(
            send_request(vec![recipient(bob.account_id, vec![message(&bob1, "a")])]),
            SendErrorCode::DeviceMismatch,
        )
        .await;
    let m = mismatch_for(&err, &bob);
    assert_eq!((sorted(&m.missing), sorted(&m.extra), sorted(&m.stale)), (vec![2], vec![], vec![]));

    // Devices 1, 2 and 3: device 3 does not exist.
    let mut bob3 = bob2.clone();
    bob3.device_id = 3;
    let err = alice_ws
        .send_err(
            send_request(vec![recipient(
                bob.account_id,
                vec![message(&bob1, "a"), message(&bob2, "b"), message(&bob3, "c")],
            )]),
            SendErrorCode::DeviceMismatch,
        )
        .await;
    let m = mismatch_for(&err, &bob);
    assert_eq!((sorted(&m.missing), sorted(&m.extra), sorted(&m.stale)), (vec![], vec![3], vec![]));

    // Device 2 with a registration id it does not have: stale.
    let mut stale2 = bob2.clone();
    stale2.registration_id = bob2.registration_id % hush_wire::limits::MAX_REGISTRATION_ID + 1;
    let err = alice_ws
        .send_err(
            send_request(vec![recipient(bob.account_id, vec![message(&bob1, "a"), message(&stale2, "b")])]),
            SendErrorCode::DeviceMismatch,
        )
        .await;
    let m = mismatch_for(&err, &bob);
    assert_eq!((sorted(&m.missing), sorted(&m.extra), sorted(&m.stale)), (vec![], vec![], vec![2]));

    // None of the refused sends stored anything, for either device.
    for device in [&bob1, &bob2] {
        let mut ws = WsClient::connect(&server, device).await;
        ws.expect_queue_empty().await;
    }
}

#[tokio::test]
async fn sender_must_include_its_own_other_devices() {
    let server = TestServer::start().await;
    let mut alice = TestAccount::register(&server, "alice").await;
    let alice2 = alice.add_device(&server).await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;

    let err = alice_ws
        .send_err(
            send_request(vec![recipient(bob.account_id, vec![message(bob.primary(), "hi")])]),
            SendErrorCode::DeviceMismatch,
        )
        .await;
    let m = mismatch_for(&err, &alice);
    assert_eq!((sorted(&m.missing), sorted(&m.extra), sorted(&m.stale)), (vec![2], vec![], vec![]));
    assert!(
        !err.mismatches.iter().any(|m| m.account_id.as_ref() == bob.account_id.as_bytes()),
        "Bob's device set was right: {:?}",
        err.mismatches
    );

    // With the sent transcript for device 2 it goes through, and device 2 gets it.
    alice_ws
        .send_ok(send_request(vec![
            recipient(bob.account_id, vec![message(bob.primary(), "hi")]),
            recipient(alice.account_id, vec![message(&alice2, "transcript")]),
        ]))
        .await;
    let mut alice2_ws = WsClient::connect(&server, &alice2).await;
    assert_eq!(alice2_ws.next_envelope().await.content.as_ref(), b"transcript");
    alice2_ws.expect_queue_empty().await;
    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    assert_eq!(bob_ws.next_envelope().await.content.as_ref(), b"hi");
    bob_ws.expect_queue_empty().await;
}

#[tokio::test]
async fn acks_from_another_device_do_not_delete_this_devices_envelopes() {
    let server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let mut bob = TestAccount::register(&server, "bob").await;
    let bob2 = bob.add_device(&server).await;
    let bob1 = bob.primary().clone();
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    for i in 0..3 {
        alice_ws
            .send_ok(send_request(vec![recipient(
                bob.account_id,
                vec![message(&bob1, format!("for device 1, #{i}")), message(&bob2, format!("for device 2, #{i}"))],
            )]))
            .await;
    }

    // Device 1 reads its envelopes without acking them.
    let mut bob1_ws = WsClient::connect(&server, &bob1).await;
    let mut seqs1 = Vec::new();
    for i in 0..3 {
        let env = bob1_ws.next_envelope().await;
        assert_eq!(env.content.as_ref(), format!("for device 1, #{i}").as_bytes());
        seqs1.push(env.seq);
    }
    bob1_ws.expect_queue_empty().await;
    bob1_ws.close().await;

    // Device 2 only ever sees its own envelopes, then acks device 1's seqs.
    let mut bob2_ws = WsClient::connect(&server, &bob2).await;
    for i in 0..3 {
        let env = bob2_ws.next_envelope().await;
        assert_eq!(env.content.as_ref(), format!("for device 2, #{i}").as_bytes());
    }
    bob2_ws.expect_queue_empty().await;
    bob2_ws.ack(&seqs1).await;
    // The server may close a connection that acks seqs it never sent (4008);
    // either way, the acks have been read once the close handshake is done.
    bob2_ws.close().await;

    let mut bob1_ws = WsClient::connect(&server, &bob1).await;
    for (i, seq) in seqs1.iter().enumerate() {
        let env = bob1_ws.next_envelope().await;
        assert_eq!(env.seq, *seq);
        assert_eq!(env.content.as_ref(), format!("for device 1, #{i}").as_bytes());
    }
    bob1_ws.expect_queue_empty().await;
}

#[tokio::test]
async fn removed_device_is_disconnected_with_4005_and_leaves_the_device_set() {
    let server = TestServer::start().await;
    let rest = hush_e2e::RestClient::new(&server);
    let mut alice = TestAccount::register(&server, "alice").await;
    let alice2 = alice.add_device(&server).await;
    let alice3 = alice.add_device(&server).await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice2_ws = WsClient::connect_drained(&server, &alice2).await;

    // Only the primary device removes others.
    rest.signed::<()>(&alice3, "DELETE", "/v1/devices/2", None).await.assert_error(403, "forbidden");
    rest.signed::<()>(alice.primary(), "DELETE", "/v1/devices/2", None).await.assert_status(204);
    assert_eq!(alice2_ws.expect_close().await, (4005, "device_removed".to_owned()));
    rest.signed::<()>(alice.primary(), "DELETE", "/v1/devices/2", None).await.assert_error(404, "unknown_device");

    // Its key no longer opens anything.
    rest.signed_get(&alice2, "/v1/keys/count").await.assert_error(401, "auth_failed");
    let mut ws = WsClient::open(&server).await;
    let auth = ws.auth_for(&alice2);
    ws.send_frame(hush_wire::frames::client_frame::Frame::Auth(auth)).await;
    assert_eq!(ws.expect_close().await, (4001, "auth_failed".to_owned()));

    // A sender still listing it is told it is extra.
    let mut bob_ws = WsClient::connect_drained(&server, bob.primary()).await;
    let err = bob_ws
        .send_err(
            send_request(vec![recipient(
                alice.account_id,
                vec![message(alice.primary(), "a"), message(&alice2, "b"), message(&alice3, "c")],
            )]),
            SendErrorCode::DeviceMismatch,
        )
        .await;
    let m = mismatch_for(&err, &alice);
    assert_eq!((sorted(&m.missing), sorted(&m.extra), sorted(&m.stale)), (vec![], vec![2], vec![]));
}

#[tokio::test]
async fn send_to_an_unknown_account_or_with_no_recipients_is_refused() {
    let server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;

    let ghost = uuid::Uuid::new_v4();
    let mut ghost_device = bob.primary().clone();
    ghost_device.account_id = ghost;
    let err = alice_ws
        .send_err(
            send_request(vec![
                recipient(bob.account_id, vec![message(bob.primary(), "x")]),
                recipient(ghost, vec![message(&ghost_device, "y")]),
            ]),
            SendErrorCode::UnknownAccount,
        )
        .await;
    assert_eq!(err.unknown_accounts.len(), 1, "{err:?}");
    assert_eq!(err.unknown_accounts[0].as_ref(), ghost.as_bytes());

    alice_ws.send_err(send_request(vec![]), SendErrorCode::InvalidRequest).await;

    // Neither refused send stored anything for Bob.
    let mut bob_ws = WsClient::connect(&server, bob.primary()).await;
    bob_ws.expect_queue_empty().await;
}
