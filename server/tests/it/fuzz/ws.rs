//! WebSocket: the `Auth` frame and every frame after it, through the real connection
//! ([`hush_server::ws::conn::run`]) over an in-memory socket. A frame that is not valid
//! gets an answer or a close code with its reason, never a panic and never a hang.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ws::Message;
use bytes::Bytes;
use futures_util::{Sink, Stream};
use hush_wire::close;
use hush_wire::frames::{
    Ack, Auth, ClientFrame, DeviceMessage, DistributeRequest, EnvelopeKind, GroupSendRequest, RecipientMessages,
    SendRequest, client_frame, server_frame,
};
use hush_wire::{decode_client_frame, decode_server_frame};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::mutate::{Mutation, apply, edits, fuzz_config, mutated};
use super::{Fixture, STEP_TIMEOUT};

/// The server's end of an in-memory WebSocket.
struct Socket {
    incoming: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
    outgoing: mpsc::UnboundedSender<Message>,
}

impl Stream for Socket {
    type Item = Result<Message, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for Socket {
    type Error = axum::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), axum::Error> {
        self.outgoing.send(msg).map_err(|_| axum::Error::new("the test client is gone"))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// What the server sent next.
#[derive(Debug)]
enum Next {
    Frame(server_frame::Frame),
    Close(u16, String),
}

/// The client's end: a connection task running the real connection code.
struct Client {
    to_server: Option<mpsc::UnboundedSender<Result<Message, axum::Error>>>,
    from_server: mpsc::UnboundedReceiver<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn connect(fixture: &Fixture) -> Client {
        let (to_server, incoming) = mpsc::unbounded_channel();
        let (outgoing, from_server) = mpsc::unbounded_channel();
        let state = fixture.state.clone();
        let ticket = state
            .admission
            .admit(std::net::Ipv4Addr::LOCALHOST.into())
            .unwrap_or_else(|e| panic!("admission refused: {e:?}"));
        let task = tokio::spawn(hush_server::ws::conn::run(state, Socket { incoming, outgoing }, ticket));
        Client { to_server: Some(to_server), from_server, task }
    }

    fn send(&self, bytes: Vec<u8>) {
        self.send_message(Message::Binary(bytes.into()));
    }

    fn send_message(&self, msg: Message) {
        if let Some(tx) = &self.to_server {
            let _ = tx.send(Ok(msg));
        }
    }

    /// The next frame or close, skipping pings.
    async fn next(&mut self) -> Result<Next, TestCaseError> {
        loop {
            let msg = tokio::time::timeout(STEP_TIMEOUT, self.from_server.recv())
                .await
                .map_err(|_| TestCaseError::fail(format!("the server sent nothing for {STEP_TIMEOUT:?}")))?
                .ok_or_else(|| TestCaseError::fail("the connection ended without a close frame"))?;
            match msg {
                Message::Binary(bytes) => {
                    let frame = decode_server_frame(&bytes)
                        .map_err(|e| TestCaseError::fail(format!("the server sent a bad frame: {e}")))?;
                    return Ok(Next::Frame(frame));
                }
                Message::Close(Some(frame)) => return Ok(Next::Close(frame.code, frame.reason.to_string())),
                Message::Ping(_) | Message::Pong(_) => {}
                other => return Err(TestCaseError::fail(format!("unexpected message {other:?}"))),
            }
        }
    }

    /// Reads the Challenge and returns the valid Auth frame that answers it.
    async fn valid_auth(&mut self, fixture: &Fixture) -> Result<Auth, TestCaseError> {
        let Next::Frame(server_frame::Frame::Challenge(challenge)) = self.next().await? else {
            return Err(TestCaseError::fail("the first frame is not a Challenge"));
        };
        let signature = fixture.signing_key.sign_ws_challenge(&challenge.nonce, fixture.account, 1);
        Ok(Auth {
            account_id: Bytes::copy_from_slice(fixture.account.as_bytes()),
            device_id: 1,
            signature: Bytes::copy_from_slice(&signature),
        })
    }

    /// Hangs up and waits for the connection task, which must end without a panic.
    async fn finish(mut self) -> Result<(), TestCaseError> {
        self.to_server = None;
        match tokio::time::timeout(STEP_TIMEOUT, &mut self.task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TestCaseError::fail(format!("the connection task failed: {e}"))),
            Err(_) => Err(TestCaseError::fail("the connection task did not end after the client hung up")),
        }
    }
}

fn encode(frame: client_frame::Frame) -> Vec<u8> {
    ClientFrame::from(frame).to_bytes()
}

/// How a test edits the valid Auth frame.
#[derive(Debug, Clone)]
enum AuthEdit {
    /// Byte edits of the encoded frame.
    Bytes(Vec<Mutation>),
    /// Other field values (None keeps the valid one); signature edits apply to the valid one.
    Fields { account_id: Option<Vec<u8>>, device_id: Option<u32>, signature: Option<Vec<Mutation>> },
    /// Some other bytes entirely.
    Replace(Vec<u8>),
    /// The valid frame's bytes, sent as a text message.
    Text,
}

fn auth_edit() -> impl Strategy<Value = AuthEdit> {
    let account = prop_oneof![
        proptest::collection::vec(any::<u8>(), 16),
        proptest::collection::vec(any::<u8>(), 0..40),
        Just(Uuid::nil().as_bytes().to_vec()),
    ];
    let fields = (
        proptest::option::of(account),
        proptest::option::of(prop_oneof![0..8u32, any::<u32>()]),
        proptest::option::of(edits()),
    )
        .prop_map(|(account_id, device_id, signature)| AuthEdit::Fields { account_id, device_id, signature });
    prop_oneof![
        4 => edits().prop_map(AuthEdit::Bytes),
        4 => fields,
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(AuthEdit::Replace),
        1 => Just(AuthEdit::Replace(vec![0x0a; hush_wire::limits::MAX_FRAME_BYTES + 1])),
        1 => Just(AuthEdit::Text),
    ]
}

impl AuthEdit {
    fn apply(&self, valid: Auth) -> Vec<u8> {
        match self {
            AuthEdit::Bytes(edits) => apply(edits, &encode(client_frame::Frame::Auth(valid))),
            AuthEdit::Fields { account_id, device_id, signature } => {
                let mut auth = valid;
                if let Some(account) = account_id {
                    auth.account_id = account.clone().into();
                }
                if let Some(device) = device_id {
                    auth.device_id = *device;
                }
                if let Some(edits) = signature {
                    auth.signature = apply(edits, &auth.signature).into();
                }
                encode(client_frame::Frame::Auth(auth))
            }
            AuthEdit::Replace(bytes) => bytes.clone(),
            AuthEdit::Text => encode(client_frame::Frame::Auth(valid)),
        }
    }
}

/// The close a frame that does not decode must get: too large, or malformed.
fn undecodable_close(bytes: &[u8]) -> u16 {
    if bytes.len() > hush_wire::limits::MAX_FRAME_BYTES { close::TOO_BIG } else { close::MALFORMED }
}

#[test]
fn auth_frames_that_are_not_valid_are_closed_with_the_documented_code() {
    let fixture = Fixture::new();
    TestRunner::new(fuzz_config())
        .run(&auth_edit(), |edit| {
            fixture.block_on(async {
                let mut client = Client::connect(&fixture);
                let valid = client.valid_auth(&fixture).await?;
                let sent = edit.apply(valid.clone());
                let expected = if let AuthEdit::Text = edit {
                    client.send_message(Message::Text(String::from_utf8_lossy(&sent).into_owned().into()));
                    Some((close::UNSUPPORTED_DATA, close::REASON_TEXT_FRAME))
                } else {
                    client.send(sent.clone());
                    match decode_client_frame(&sent) {
                        Ok(client_frame::Frame::Auth(auth)) if auth == valid => None,
                        Ok(client_frame::Frame::Auth(_)) => Some((close::AUTH_FAILED, close::REASON_AUTH_FAILED)),
                        Ok(_) => Some((close::MALFORMED, close::REASON_MALFORMED)),
                        Err(_) if undecodable_close(&sent) == close::TOO_BIG => {
                            Some((close::TOO_BIG, close::REASON_TOO_BIG))
                        }
                        Err(_) => Some((close::MALFORMED, close::REASON_MALFORMED)),
                    }
                };
                match (client.next().await?, expected) {
                    (Next::Frame(server_frame::Frame::AuthOk(_)), None) => {}
                    (Next::Close(code, reason), Some((want, want_reason))) => {
                        prop_assert_eq!((code, reason.as_str()), (want, want_reason));
                    }
                    (got, want) => return Err(TestCaseError::fail(format!("got {got:?}, expected close {want:?}"))),
                }
                client.finish().await
            })
        })
        .unwrap();
}

/// Client frames after authentication: sends to this account, other accounts or no
/// account, with any device ids, kinds and contents; group sends and distributions to any
/// (mostly unknown) group; acks of any seqs; a second Auth.
fn session_frame(account: Uuid) -> impl Strategy<Value = client_frame::Frame> {
    let account_id = prop_oneof![
        2 => Just(account.as_bytes().to_vec()),
        2 => any::<u128>().prop_map(|n| n.to_be_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..20),
    ];
    let kind =
        prop_oneof![Just(EnvelopeKind::SealedSender as i32), Just(EnvelopeKind::Plaintext as i32), any::<i32>(),];
    let content = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => Just(vec![7u8; hush_wire::limits::MAX_ENVELOPE_BYTES + 1]),
    ];
    let message = (prop_oneof![1..4u32, any::<u32>()], prop_oneof![Just(4242u32), any::<u32>()], kind, content.clone())
        .prop_map(|(device_id, registration_id, kind, content)| DeviceMessage {
            device_id,
            registration_id,
            kind,
            content: content.into(),
        });
    let recipient = (account_id, proptest::collection::vec(message, 0..3))
        .prop_map(|(account_id, messages)| RecipientMessages { account_id: account_id.into(), messages });
    let group_id = prop_oneof![
        3 => any::<u128>().prop_map(|n| n.to_be_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..20),
    ];
    let epoch = prop_oneof![Just(1u64), any::<u64>()];
    let group_send = (any::<u64>(), group_id.clone(), epoch.clone(), content.clone()).prop_map(
        |(request_id, group_id, epoch, content)| GroupSendRequest {
            request_id,
            group_id: group_id.into(),
            epoch,
            content: content.into(),
            idempotency_key: Default::default(),
            urgent: false,
        },
    );
    let distribute = (any::<u64>(), group_id, epoch, proptest::collection::vec(recipient.clone(), 0..3)).prop_map(
        |(request_id, group_id, epoch, recipients)| DistributeRequest {
            request_id,
            group_id: group_id.into(),
            epoch,
            recipients,
            idempotency_key: Default::default(),
        },
    );
    let send = (any::<u64>(), proptest::collection::vec(recipient, 0..3), any::<bool>()).prop_map(
        |(request_id, recipients, online_only)| SendRequest {
            request_id,
            recipients,
            online_only,
            idempotency_key: Default::default(),
            urgent: false,
        },
    );
    let ack = prop_oneof![
        proptest::collection::vec(any::<u64>(), 0..8),
        proptest::collection::vec(0..4u64, 0..8),
        Just(vec![1u64; 4097]),
    ]
    .prop_map(|seqs| Ack { seqs, groups: Vec::new() });
    prop_oneof![
        6 => send.prop_map(client_frame::Frame::Send),
        2 => group_send.prop_map(client_frame::Frame::GroupSend),
        2 => distribute.prop_map(client_frame::Frame::Distribute),
        3 => ack.prop_map(client_frame::Frame::Ack),
        1 => Just(client_frame::Frame::Auth(Auth::default())),
    ]
}

/// The frame after it: a send to an unknown account, answered with this request id.
const PROBE_ID: u64 = u64::MAX;

fn probe() -> Vec<u8> {
    encode(client_frame::Frame::Send(SendRequest {
        request_id: PROBE_ID,
        recipients: vec![RecipientMessages {
            account_id: Uuid::from_u128(0xdead_beef).as_bytes().to_vec().into(),
            messages: vec![DeviceMessage {
                device_id: 1,
                registration_id: 1,
                kind: EnvelopeKind::SealedSender as i32,
                content: Bytes::from_static(b"probe"),
            }],
        }],
        online_only: false,
        idempotency_key: Default::default(),
        urgent: true,
    }))
}

/// What the server must do with a frame after authentication: close with a code, or
/// answer the sends (the frame's own, if it is one, and the probe after it).
fn expectation(bytes: &[u8]) -> Result<Vec<u64>, u16> {
    match decode_client_frame(bytes) {
        Err(_) => Err(undecodable_close(bytes)),
        Ok(client_frame::Frame::Auth(_)) => Err(close::MALFORMED),
        Ok(client_frame::Frame::Ack(ack)) if ack.seqs.len() > 4096 => Err(close::MALFORMED),
        Ok(client_frame::Frame::Ack(_)) => Ok(vec![PROBE_ID]),
        Ok(client_frame::Frame::Send(req)) => Ok(vec![req.request_id, PROBE_ID]),
        Ok(client_frame::Frame::GroupSend(req)) => Ok(vec![req.request_id, PROBE_ID]),
        Ok(client_frame::Frame::Distribute(req)) => Ok(vec![req.request_id, PROBE_ID]),
    }
}

#[test]
fn frames_after_auth_get_an_answer_or_the_documented_close_code() {
    let fixture = Fixture::new();
    let valid_send = encode(client_frame::Frame::Send(SendRequest {
        request_id: 9,
        recipients: vec![RecipientMessages {
            account_id: fixture.account.as_bytes().to_vec().into(),
            messages: vec![DeviceMessage {
                device_id: 2,
                registration_id: 4242,
                kind: EnvelopeKind::SealedSender as i32,
                content: Bytes::from_static(b"ciphertext"),
            }],
        }],
        online_only: false,
        idempotency_key: Default::default(),
        urgent: true,
    }));
    let strategy = prop_oneof![session_frame(fixture.account).prop_map(encode), mutated(valid_send)];
    TestRunner::new(fuzz_config())
        .run(&strategy, |bytes| {
            fixture.block_on(async {
                let mut client = Client::connect(&fixture);
                let auth = client.valid_auth(&fixture).await?;
                client.send(encode(client_frame::Frame::Auth(auth)));
                client.send(bytes.clone());
                client.send(probe());
                let mut waiting = match expectation(&bytes) {
                    Ok(ids) => ids,
                    Err(code) => {
                        loop {
                            match client.next().await? {
                                Next::Close(got, _) => {
                                    prop_assert_eq!(got, code);
                                    break;
                                }
                                Next::Frame(server_frame::Frame::SendResponse(r)) => {
                                    let message = format!("answered {r:?} instead of closing with {code}");
                                    return Err(TestCaseError::fail(message));
                                }
                                Next::Frame(_) => {}
                            }
                        }
                        return client.finish().await;
                    }
                };
                while !waiting.is_empty() {
                    match client.next().await? {
                        Next::Frame(server_frame::Frame::SendResponse(r)) => {
                            let Some(at) = waiting.iter().position(|id| *id == r.request_id) else {
                                return Err(TestCaseError::fail(format!("an answer to no request: {r:?}")));
                            };
                            waiting.remove(at);
                        }
                        Next::Frame(_) => {}
                        Next::Close(code, reason) => {
                            return Err(TestCaseError::fail(format!("closed with {code} {reason}")));
                        }
                    }
                }
                client.finish().await
            })
        })
        .unwrap();
}

/// A provisioning socket ([`hush_server::ws::provisioning::run`]) over the same in-memory
/// socket: any data frame its client sends (whatever the bytes, binary or text) closes it with
/// `4004 malformed_frame` after its address, the task ends, and the address takes no message.
#[test]
fn any_frame_from_a_provisioning_client_closes_it_as_malformed() {
    let fixture = Fixture::new();
    let frames = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| Message::Binary(b.into())),
        ".{0,100}".prop_map(|t| Message::Text(t.into())),
    ];
    TestRunner::new(fuzz_config())
        .run(&frames, |msg| {
            fixture.block_on(async {
                let (to_server, incoming) = mpsc::unbounded_channel();
                let (outgoing, mut from_server) = mpsc::unbounded_channel();
                let state = fixture.state.clone();
                let ticket = state
                    .admission
                    .admit(std::net::Ipv4Addr::LOCALHOST.into())
                    .unwrap_or_else(|e| panic!("admission refused: {e:?}"));
                let task = tokio::spawn(hush_server::ws::provisioning::run(
                    state.clone(),
                    Socket { incoming, outgoing },
                    ticket,
                ));
                let first = tokio::time::timeout(STEP_TIMEOUT, from_server.recv())
                    .await
                    .map_err(|_| TestCaseError::fail("no address frame"))?;
                let Some(Message::Binary(bytes)) = first else {
                    return Err(TestCaseError::fail(format!("the first message is not binary: {first:?}")));
                };
                let Ok(hush_wire::frames::provisioning_frame::Frame::Address(address)) =
                    hush_wire::frames::decode_provisioning_frame(&bytes)
                else {
                    return Err(TestCaseError::fail("the first frame is not the address"));
                };
                let _ = to_server.send(Ok(msg));
                let close = tokio::time::timeout(STEP_TIMEOUT, from_server.recv())
                    .await
                    .map_err(|_| TestCaseError::fail("no close"))?;
                let Some(Message::Close(Some(frame))) = close else {
                    return Err(TestCaseError::fail(format!("expected a close, got {close:?}")));
                };
                prop_assert_eq!((frame.code, frame.reason.as_str()), (close::MALFORMED, close::REASON_MALFORMED));
                drop(to_server);
                tokio::time::timeout(STEP_TIMEOUT, task)
                    .await
                    .map_err(|_| TestCaseError::fail("the provisioning task did not end"))?
                    .map_err(|e| TestCaseError::fail(format!("the provisioning task failed: {e}")))?;
                prop_assert!(!state.hub.provisioning.deliver(&address.address, Bytes::from_static(b"late")));
                let now = hush_server::state::now_ms();
                prop_assert_eq!(state.store.claim_channel(&address.address, now).await.ok().flatten(), None);
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
