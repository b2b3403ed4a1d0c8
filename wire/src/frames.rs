//! WebSocket frames, generated from `proto/hush/v1/frames.proto`.

#![allow(missing_docs)] // generated code; the .proto file documents every message

include!(concat!(env!("OUT_DIR"), "/hush.v1.rs"));

use prost::Message;

use crate::limits::MAX_FRAME_BYTES;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// The bytes are not a valid protobuf message of the expected type.
    #[error("frame does not decode: {0}")]
    Decode(String),
    /// The frame decoded but carries no message (empty `oneof`).
    #[error("frame carries no message")]
    Empty,
}

fn check_len(bytes: &[u8]) -> Result<(), FrameError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    Ok(())
}

/// Decodes a frame sent by a client. Never panics, whatever the bytes.
pub fn decode_client_frame(bytes: &[u8]) -> Result<client_frame::Frame, FrameError> {
    check_len(bytes)?;
    let frame = ClientFrame::decode(bytes).map_err(|e| FrameError::Decode(e.to_string()))?;
    frame.frame.ok_or(FrameError::Empty)
}

/// Decodes a frame sent by the server. Never panics, whatever the bytes.
pub fn decode_server_frame(bytes: &[u8]) -> Result<server_frame::Frame, FrameError> {
    check_len(bytes)?;
    let frame = ServerFrame::decode(bytes).map_err(|e| FrameError::Decode(e.to_string()))?;
    frame.frame.ok_or(FrameError::Empty)
}

/// Decodes a frame the server sends on a provisioning socket (`/v1/provisioning`). Never
/// panics, whatever the bytes.
pub fn decode_provisioning_frame(bytes: &[u8]) -> Result<provisioning_frame::Frame, FrameError> {
    check_len(bytes)?;
    let frame = ProvisioningFrame::decode(bytes).map_err(|e| FrameError::Decode(e.to_string()))?;
    frame.frame.ok_or(FrameError::Empty)
}

impl From<provisioning_frame::Frame> for ProvisioningFrame {
    fn from(frame: provisioning_frame::Frame) -> Self {
        ProvisioningFrame { frame: Some(frame) }
    }
}

impl ProvisioningFrame {
    /// Encodes the frame into a fresh buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

impl From<client_frame::Frame> for ClientFrame {
    fn from(frame: client_frame::Frame) -> Self {
        ClientFrame { frame: Some(frame) }
    }
}

impl From<server_frame::Frame> for ServerFrame {
    fn from(frame: server_frame::Frame) -> Self {
        ServerFrame { frame: Some(frame) }
    }
}

impl ClientFrame {
    /// Encodes the frame into a fresh buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

impl ServerFrame {
    /// Encodes the frame into a fresh buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_frame_is_an_error_not_a_panic() {
        assert_eq!(decode_client_frame(&[]), Err(FrameError::Empty));
        assert_eq!(decode_server_frame(&[]), Err(FrameError::Empty));
    }

    #[test]
    fn oversize_frame_is_refused_before_decoding() {
        let big = vec![0u8; MAX_FRAME_BYTES + 1];
        assert_eq!(decode_client_frame(&big), Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1)));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(decode_client_frame(&[0xff, 0xff, 0xff]), Err(FrameError::Decode(_))));
    }

    #[test]
    fn send_request_round_trips() {
        let frame: ClientFrame = client_frame::Frame::Send(SendRequest {
            request_id: 7,
            recipients: vec![RecipientMessages {
                account_id: vec![1; 16].into(),
                messages: vec![DeviceMessage {
                    device_id: 2,
                    registration_id: 1234,
                    kind: EnvelopeKind::SealedSender as i32,
                    content: bytes::Bytes::from_static(b"ciphertext"),
                }],
            }],
            online_only: false,
            idempotency_key: bytes::Bytes::new(),
            urgent: false,
        })
        .into();
        let bytes = frame.to_bytes();
        insta::assert_snapshot!("send_request_bytes", hex_string(&bytes));
        assert_eq!(decode_client_frame(&bytes), Ok(frame.frame.clone().unwrap_or_else(|| unreachable!())));
    }

    #[test]
    fn provisioning_frames_are_stable_and_round_trip() {
        let address: ProvisioningFrame = provisioning_frame::Frame::Address(ProvisioningAddress {
            address: "AAECAwQFBgcICQoLDA0ODw".into(),
            expires_at: 1_700_000_600_000,
        })
        .into();
        insta::assert_snapshot!("provisioning_address_bytes", hex_string(&address.to_bytes()));
        let message: ProvisioningFrame =
            provisioning_frame::Frame::Message(ProvisioningMessage { body: vec![0xAB; 4].into() }).into();
        insta::assert_snapshot!("provisioning_message_bytes", hex_string(&message.to_bytes()));
        for frame in [address, message] {
            assert_eq!(
                decode_provisioning_frame(&frame.to_bytes()),
                Ok(frame.frame.clone().unwrap_or_else(|| unreachable!()))
            );
        }
        assert_eq!(decode_provisioning_frame(&[]), Err(FrameError::Empty));
    }

    #[test]
    fn send_request_idempotency_key_is_field_4() {
        let frame: ClientFrame = client_frame::Frame::Send(SendRequest {
            request_id: 1,
            recipients: vec![],
            online_only: false,
            idempotency_key: bytes::Bytes::from_static(&[0xA5; 4]),
            urgent: false,
        })
        .into();
        let bytes = frame.to_bytes();
        insta::assert_snapshot!("send_request_with_key_bytes", hex_string(&bytes));
        assert_eq!(decode_client_frame(&bytes), Ok(frame.frame.clone().unwrap_or_else(|| unreachable!())));
    }

    #[test]
    fn urgent_is_field_5_of_a_send() {
        let send: ClientFrame = client_frame::Frame::Send(SendRequest {
            request_id: 1,
            recipients: vec![],
            online_only: false,
            idempotency_key: bytes::Bytes::new(),
            urgent: true,
        })
        .into();
        insta::assert_snapshot!("send_request_urgent_bytes", hex_string(&send.to_bytes()));
        assert_eq!(decode_client_frame(&send.to_bytes()), Ok(send.frame.clone().unwrap_or_else(|| unreachable!())));
    }

    #[test]
    fn urgent_is_field_6_of_a_group_send() {
        let group: ClientFrame = client_frame::Frame::GroupSend(GroupSendRequest {
            request_id: 2,
            group_id: vec![0x11; 16].into(),
            epoch: 1,
            content: vec![0xCD; 2].into(),
            idempotency_key: bytes::Bytes::new(),
            urgent: true,
        })
        .into();
        insta::assert_snapshot!("group_send_urgent_bytes", hex_string(&group.to_bytes()));
        assert_eq!(decode_client_frame(&group.to_bytes()), Ok(group.frame.clone().unwrap_or_else(|| unreachable!())));
    }

    #[test]
    fn envelope_frame_bytes_are_stable() {
        let frame: ServerFrame = server_frame::Frame::Envelope(Envelope {
            seq: 42,
            server_timestamp: 1_700_000_000_000,
            kind: EnvelopeKind::SealedSender as i32,
            content: vec![0xAB; 4].into(),
            ..Envelope::default()
        })
        .into();
        insta::assert_snapshot!("envelope_bytes", hex_string(&frame.to_bytes()));
    }

    #[test]
    fn group_frames_bytes_are_stable() {
        let send: ClientFrame = client_frame::Frame::GroupSend(GroupSendRequest {
            request_id: 3,
            group_id: vec![0x11; 16].into(),
            epoch: 2,
            content: vec![0xCD; 4].into(),
            idempotency_key: vec![0xA5; 2].into(),
            urgent: false,
        })
        .into();
        let distribute: ClientFrame = client_frame::Frame::Distribute(DistributeRequest {
            request_id: 4,
            group_id: vec![0x11; 16].into(),
            epoch: 2,
            recipients: vec![RecipientMessages {
                account_id: vec![1; 16].into(),
                messages: vec![DeviceMessage {
                    device_id: 1,
                    registration_id: 77,
                    kind: EnvelopeKind::SealedSender as i32,
                    content: vec![0xEE; 3].into(),
                }],
            }],
            idempotency_key: bytes::Bytes::new(),
        })
        .into();
        let envelope: ServerFrame = server_frame::Frame::Envelope(Envelope {
            seq: 9,
            server_timestamp: 1_700_000_000_000,
            kind: EnvelopeKind::GroupMessage as i32,
            content: vec![0xCD; 4].into(),
            group_id: vec![0x11; 16].into(),
            group_seq: 5,
        })
        .into();
        let change = RosterChange {
            group_id: vec![0x11; 16].into(),
            kind: roster_change::Kind::Added as i32,
            actor: vec![1; 16].into(),
            accounts: vec![vec![2; 16].into()],
            role: GroupRole::Member as i32,
            roster_version: 3,
            epoch: 2,
            server_timestamp: 1_700_000_000_000,
        };
        insta::assert_snapshot!("group_send_bytes", hex_string(&send.to_bytes()));
        insta::assert_snapshot!("distribute_bytes", hex_string(&distribute.to_bytes()));
        insta::assert_snapshot!("group_envelope_bytes", hex_string(&envelope.to_bytes()));
        insta::assert_snapshot!("roster_change_bytes", hex_string(&change.encode_to_vec()));
        assert_eq!(decode_client_frame(&send.to_bytes()), Ok(send.frame.clone().unwrap_or_else(|| unreachable!())));
        assert_eq!(RosterChange::decode(change.encode_to_vec().as_slice()), Ok(change));
    }

    fn hex_string(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // The fuzz properties (arbitrary bytes, structured frames, mutations of valid frames)
    // are in `wire/tests/it/frames_fuzz.rs`.
}
