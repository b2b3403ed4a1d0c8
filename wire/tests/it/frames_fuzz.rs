//! Fuzzing the frame decoders on stable: structured frames and mutations of valid ones.
//!
//! Properties: decoding never panics and returns a frame or a [`FrameError`]; a decoded
//! frame re-encodes to bytes that decode to the same frame. Cases per property:
//! `HUSH_FUZZ_CASES` (see [`crate::support::fuzz_config`]).

use bytes::Bytes;
use hush_wire::frames::{
    Ack, Auth, ClientFrame, DeviceMessage, EnvelopeKind, RecipientMessages, SendRequest, ServerFrame, client_frame,
    server_frame,
};
use hush_wire::{FrameError, decode_client_frame, decode_server_frame};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use crate::support::{fuzz_config, mutated};

fn bytes_up_to(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// Account ids: mostly the 16 bytes of a UUID, sometimes another length.
fn account_id() -> impl Strategy<Value = Bytes> {
    prop_oneof![4 => proptest::collection::vec(any::<u8>(), 16).prop_map(Bytes::from), 1 => bytes_up_to(24)]
}

/// Envelope kinds: the known ones, and any other `i32` (unknown enum values must decode too).
fn kind() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => Just(EnvelopeKind::SealedSender as i32),
        1 => Just(EnvelopeKind::Plaintext as i32),
        1 => Just(EnvelopeKind::Unspecified as i32),
        1 => any::<i32>(),
    ]
}

fn device_message() -> impl Strategy<Value = DeviceMessage> {
    (prop_oneof![1..=127u32, any::<u32>()], any::<u32>(), kind(), bytes_up_to(64)).prop_map(
        |(device_id, registration_id, kind, content)| DeviceMessage { device_id, registration_id, kind, content },
    )
}

fn send_request() -> impl Strategy<Value = SendRequest> {
    let recipient = (account_id(), proptest::collection::vec(device_message(), 0..4))
        .prop_map(|(account_id, messages)| RecipientMessages { account_id, messages });
    (any::<u64>(), proptest::collection::vec(recipient, 0..4), any::<bool>(), bytes_up_to(80)).prop_map(
        |(request_id, recipients, online_only, idempotency_key)| SendRequest {
            request_id,
            recipients,
            online_only,
            idempotency_key,
            urgent: false,
        },
    )
}

/// Any client frame, built field by field.
fn any_client_frame() -> impl Strategy<Value = client_frame::Frame> {
    let auth = (account_id(), any::<u32>(), bytes_up_to(72)).prop_map(|(account_id, device_id, signature)| Auth {
        account_id,
        device_id,
        signature,
    });
    let ack = proptest::collection::vec(any::<u64>(), 0..16).prop_map(|seqs| Ack { seqs, groups: Vec::new() });
    prop_oneof![
        auth.prop_map(client_frame::Frame::Auth),
        send_request().prop_map(client_frame::Frame::Send),
        ack.prop_map(client_frame::Frame::Ack),
    ]
}

fn encode(frame: client_frame::Frame) -> Vec<u8> {
    ClientFrame::from(frame).to_bytes()
}

#[test]
fn arbitrary_bytes_never_panic_either_decoder() {
    let strategy = proptest::collection::vec(any::<u8>(), 0..512);
    TestRunner::new(fuzz_config())
        .run(&strategy, |bytes| {
            let _ = decode_client_frame(&bytes);
            let _ = decode_server_frame(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn every_client_frame_round_trips() {
    TestRunner::new(fuzz_config())
        .run(&any_client_frame(), |frame| {
            prop_assert_eq!(decode_client_frame(&encode(frame.clone())), Ok(frame));
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_client_frames_decode_or_fail_cleanly_and_decoded_ones_re_encode() {
    let strategy = any_client_frame().prop_flat_map(|frame| mutated(encode(frame)));
    TestRunner::new(fuzz_config())
        .run(&strategy, |bytes| {
            match decode_client_frame(&bytes) {
                Ok(frame) => prop_assert_eq!(decode_client_frame(&encode(frame.clone())), Ok(frame)),
                Err(FrameError::Decode(_) | FrameError::Empty) => {}
                Err(other) => prop_assert!(false, "a small frame failed with {other:?}"),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_server_frames_decode_or_fail_cleanly_and_decoded_ones_re_encode() {
    let envelope = (any::<u64>(), any::<u64>(), kind(), bytes_up_to(64)).prop_map(|(seq, ts, kind, content)| {
        server_frame::Frame::Envelope(hush_wire::frames::Envelope {
            seq,
            server_timestamp: ts,
            kind,
            content,
            ..Default::default()
        })
    });
    let strategy = envelope.prop_flat_map(|frame| mutated(ServerFrame::from(frame).to_bytes()));
    TestRunner::new(fuzz_config())
        .run(&strategy, |bytes| {
            if let Ok(frame) = decode_server_frame(&bytes) {
                prop_assert_eq!(decode_server_frame(&ServerFrame::from(frame.clone()).to_bytes()), Ok(frame));
            }
            Ok(())
        })
        .unwrap();
}
