//! Untrusted frames: each bad frame closes only its own connection with a
//! reason, and the server goes on serving everyone else.

use hush_e2e::{TestAccount, TestServer, WsClient, message, recipient, send_request};
use hush_wire::frames::{SendErrorCode, SendRequest};
use hush_wire::limits::{MAX_ENVELOPE_BYTES, MAX_FRAME_BYTES};
use tokio_tungstenite::tungstenite::Message;

/// Alice and Bob, both connected with empty mailboxes, and Carol (registered,
/// not connected) to misbehave.
struct Scene {
    server: TestServer,
    bob: TestAccount,
    carol: TestAccount,
    alice_ws: WsClient,
    bob_ws: WsClient,
}

impl Scene {
    async fn new() -> Scene {
        let server = TestServer::start().await;
        let alice = TestAccount::register(&server, "alice").await;
        let bob = TestAccount::register(&server, "bob").await;
        let carol = TestAccount::register(&server, "carol").await;
        let alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
        let bob_ws = WsClient::connect_drained(&server, bob.primary()).await;
        Scene { server, bob, carol, alice_ws, bob_ws }
    }

    fn to_bob(&self, content: impl Into<bytes::Bytes>) -> SendRequest {
        send_request(vec![recipient(self.bob.account_id, vec![message(self.bob.primary(), content)])])
    }

    /// Alice can still send to Bob and Bob still receives.
    async fn assert_others_unaffected(&mut self, label: &str) {
        let content = format!("still alive after {label}");
        self.alice_ws.send_ok(self.to_bob(content.clone())).await;
        let env = self.bob_ws.next_envelope().await;
        assert_eq!(env.content.as_ref(), content.as_bytes());
        self.bob_ws.ack(&[env.seq]).await;
    }

    async fn misbehaving_carol(&self) -> WsClient {
        WsClient::connect_drained(&self.server, self.carol.primary()).await
    }
}

#[tokio::test]
async fn garbage_binary_frame_is_closed_with_4004() {
    let mut scene = Scene::new().await;
    let mut carol = scene.misbehaving_carol().await;
    carol
        .send_raw(Message::binary(vec![0xff, 0xff, 0xff, 0x07]))
        .await
        .unwrap_or_else(|e| panic!("sending garbage failed: {e}"));
    assert_eq!(carol.expect_close().await, (4004, "malformed_frame".to_owned()));
    scene.assert_others_unaffected("garbage").await;

    // Before authentication too.
    let mut anon = WsClient::open(&scene.server).await;
    let _ = anon.send_raw(Message::binary(vec![0x0a, 0xff])).await;
    assert_eq!(anon.expect_close().await, (4004, "malformed_frame".to_owned()));
    scene.assert_others_unaffected("unauthenticated garbage").await;
}

#[tokio::test]
async fn text_frame_is_closed_with_1003() {
    let mut scene = Scene::new().await;
    let mut carol = scene.misbehaving_carol().await;
    carol.send_raw(Message::text("hello")).await.unwrap_or_else(|e| panic!("sending text failed: {e}"));
    assert_eq!(carol.expect_close().await, (1003, "binary_frames_only".to_owned()));
    scene.assert_others_unaffected("a text frame").await;
}

#[tokio::test]
async fn frame_over_272_kib_is_closed_with_1009() {
    let mut scene = Scene::new().await;
    let mut carol = scene.misbehaving_carol().await;
    // The server may cut the connection while the frame is still being
    // written; that is fine, what matters is how it ends.
    let _ = carol.send_raw(Message::binary(vec![0u8; MAX_FRAME_BYTES + 1024])).await;
    let closed = carol.wait_closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(1009), "frame_too_large"),
        "an oversize frame must end with close 1009 frame_too_large"
    );
    scene.assert_others_unaffected("an oversize frame").await;
}

#[tokio::test]
async fn envelope_over_96_kib_is_refused_and_the_connection_stays_open() {
    let mut scene = Scene::new().await;
    let too_big = vec![7u8; MAX_ENVELOPE_BYTES + 1];
    let req = scene.to_bob(too_big);
    scene.alice_ws.send_err(req, SendErrorCode::EnvelopeTooLarge).await;

    // Exactly the limit is fine, on the same connection.
    let at_limit = vec![9u8; MAX_ENVELOPE_BYTES];
    let req = scene.to_bob(at_limit.clone());
    scene.alice_ws.send_ok(req).await;
    let env = scene.bob_ws.next_envelope().await;
    assert_eq!(env.content.len(), MAX_ENVELOPE_BYTES, "the refused envelope must not be stored");
    assert_eq!(env.content.as_ref(), at_limit.as_slice());
    scene.bob_ws.ack(&[env.seq]).await;
    scene.assert_others_unaffected("an oversize envelope").await;
}
