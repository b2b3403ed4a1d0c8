//! The end-to-end content inside sealed-sender ciphertexts (`proto/content.proto`), its
//! padding, and one-to-one conversation ids.

#[allow(missing_docs, clippy::all)] // generated code; the .proto file documents every message
mod generated {
    include!(concat!(env!("OUT_DIR"), "/hush.content.v1.rs"));
}

pub use generated::*;

use prost::Message as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Plaintexts are padded to a multiple of this many bytes (as Signal does).
pub const PAD_BLOCK: usize = 160;

/// Pads `plain`: appends `0x80`, then zeros up to a multiple of [`PAD_BLOCK`].
pub fn pad(plain: &[u8]) -> Vec<u8> {
    let len = (plain.len() + 1).div_ceil(PAD_BLOCK) * PAD_BLOCK;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(plain);
    out.push(0x80);
    out.resize(len, 0);
    out
}

/// Removes the padding added by [`pad`]; `None` if there is no `0x80` marker after the zeros.
pub fn unpad(padded: &[u8]) -> Option<&[u8]> {
    let end = padded.iter().rposition(|&b| b != 0)?;
    (padded[end] == 0x80).then(|| &padded[..end])
}

/// Encodes and pads a content.
pub fn encode(content: &Content) -> Vec<u8> {
    pad(&content.encode_to_vec())
}

/// Unpads and decodes a content.
pub fn decode(padded: &[u8]) -> Result<Content, String> {
    let plain = unpad(padded).ok_or_else(|| "bad padding".to_owned())?;
    Content::decode(plain).map_err(|e| e.to_string())
}

/// The id both parties use for their one-to-one conversation: the same on every device of both.
pub fn direct_conversation_id(a: Uuid, b: Uuid) -> [u8; 16] {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(b"hush-direct-conversation-v1");
    h.update(lo.as_bytes());
    h.update(hi.as_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_round_trips_and_hides_length() {
        for n in [0usize, 1, 158, 159, 160, 161, 500] {
            let plain: Vec<u8> = (0..n).map(|i| (i % 251) as u8 + 1).collect();
            let padded = pad(&plain);
            assert_eq!(padded.len() % PAD_BLOCK, 0);
            assert!(padded.len() > n);
            assert_eq!(unpad(&padded), Some(&plain[..]));
        }
        assert_eq!(pad(&[1; 10]).len(), pad(&[1; 100]).len());
    }

    #[test]
    fn plaintext_ending_in_zeros_survives() {
        let plain = vec![0u8; 20];
        assert_eq!(unpad(&pad(&plain)), Some(&plain[..]));
        assert_eq!(unpad(&[0u8; 160]), None);
    }

    #[test]
    fn data_message_bytes_are_stable() {
        let content = Content {
            sender_username: "alice".into(),
            body: Some(content::Body::Data(DataMessage {
                message_id: vec![0xab; 16],
                lamport: 7,
                conversation_id: vec![1; 16],
                sent_at: 1_700_000_000_000,
                body: "hi".into(),
                group_id: Default::default(),
            })),
        };
        let padded = encode(&content);
        assert_eq!(padded.len(), PAD_BLOCK);
        insta::assert_snapshot!(hex::encode(unpad(&padded).unwrap_or_default()));
        assert_eq!(decode(&padded), Ok(content));
    }

    #[test]
    fn presence_message_bytes_are_stable() {
        let content = Content {
            sender_username: "alice".into(),
            body: Some(content::Body::Presence(PresenceMessage {
                state: presence_message::State::Online as i32,
                probe: true,
            })),
        };
        let padded = encode(&content);
        assert_eq!(padded.len(), PAD_BLOCK, "as long as any short content: the state does not show in the size");
        insta::assert_snapshot!(hex::encode(unpad(&padded).unwrap_or_default()));
        assert_eq!(decode(&padded), Ok(content));
    }

    #[test]
    fn conversation_id_is_symmetric() {
        let (a, b) = (Uuid::from_bytes([1; 16]), Uuid::from_bytes([2; 16]));
        assert_eq!(direct_conversation_id(a, b), direct_conversation_id(b, a));
        assert_ne!(direct_conversation_id(a, b), direct_conversation_id(a, a));
    }
}
