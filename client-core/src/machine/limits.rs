//! The server's size limits, applied before a message is queued and again before it is sent
//! (the device set may have grown in between), so the server never has to refuse one.

use hush_wire::frames::SendRequest;
use hush_wire::limits::{MAX_ENVELOPE_BYTES, MAX_SEND_BYTES};
use prost::Message as _;

use crate::content::{Content, PAD_BLOCK};
use crate::error::TooLarge;

/// Bytes sealing adds to a padded plaintext, at most: the sealed-sender wrapping (ephemeral
/// key, encrypted static key, MACs), the sender certificate, and the header of a PreKey message
/// with its Kyber ciphertext. The machine tests in `tests/outbox.rs` send the longest text
/// allowed, to one and to three devices, through a relay that checks the real ciphertexts.
pub(crate) const SEAL_OVERHEAD: usize = 4096;
/// Bytes of a `SendRequest` besides the ciphertexts: per device message, and per request.
const DEVICE_FRAMING: usize = 32;
const REQUEST_FRAMING: usize = 1024;

/// The longest padded plaintext that can go to each of `devices` devices in one send, within
/// the per-envelope and the per-send limit.
pub(crate) fn max_padded_plaintext(devices: usize) -> usize {
    let per_device = ((MAX_SEND_BYTES - REQUEST_FRAMING) / devices.max(1)).saturating_sub(DEVICE_FRAMING);
    per_device.min(MAX_ENVELOPE_BYTES).saturating_sub(SEAL_OVERHEAD) / PAD_BLOCK * PAD_BLOCK
}

/// Checks that `contents` (the message and its transcript) fit for `devices` devices; the error
/// names the longest text that would.
pub(super) fn check_size(body_len: usize, contents: &[&Content], devices: usize) -> Result<(), TooLarge> {
    let max = max_padded_plaintext(devices);
    let encoded = contents.iter().map(|c| c.encoded_len()).max().unwrap_or(0);
    // Padding appends at least one byte.
    if encoded < max {
        return Ok(());
    }
    let framing = encoded.saturating_sub(body_len);
    Err(TooLarge { size: body_len, longest: max.saturating_sub(1 + framing), devices })
}

/// Why a send request is over the server's limits, if it is.
pub(super) fn oversized(request: &SendRequest) -> Option<String> {
    let largest = request.recipients.iter().flat_map(|r| &r.messages).map(|m| m.content.len()).max().unwrap_or(0);
    if largest > MAX_ENVELOPE_BYTES {
        return Some(format!(
            "a ciphertext is {largest} bytes, over the server's {} KiB per device envelope",
            MAX_ENVELOPE_BYTES / 1024
        ));
    }
    let total = request.encoded_len();
    (total > MAX_SEND_BYTES).then(|| {
        format!(
            "the send is {total} bytes, over the server's {} KiB per send across all devices",
            MAX_SEND_BYTES / 1024
        )
    })
}
