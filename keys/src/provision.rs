//! Device linking ("provisioning") and history archive encryption.
//!
//! A new device joins an existing account like this:
//!
//! 1. The **new** device makes a [`ProvisioningKeyPair`], asks the server for a provisioning
//!    channel address, and shows a [`LinkCode`] (the address and its X25519 public key) as a
//!    QR code ([`LinkCode::to_uri`]) or as text to type or paste ([`LinkCode::to_text`]).
//! 2. The **existing** device reads the code ([`LinkCode::parse`]), builds a
//!    [`ProvisionMessage`] (the account's identity key pair, account id, username, a link token
//!    and, optionally, where the message history archive is and its [`ArchiveKey`]), and seals
//!    it to the code's key ([`seal_provision`]). The server relays the sealed bytes to the
//!    address and learns nothing from them.
//! 3. The new device opens them ([`ProvisioningKeyPair::open_provision`]).
//!
//! The sealed format is in [`seal`]; the plaintext encoding in [`ProvisionMessage::encode`];
//! archive chunks in [`ArchiveKey::seal_chunk`]. All use AES-256-GCM-SIV with a random nonce.
//!
//! Every failure is a [`ProvisionError`]. No `Debug` output shows a private key, the link
//! token or an archive key.

mod archive;
mod cipher;
mod link_code;
mod message;

pub use crate::error::ProvisionError;
pub use archive::{ARCHIVE_CHUNK_OVERHEAD, ArchiveKey, MAX_ARCHIVE_CHUNK_PLAINTEXT};
pub use cipher::{MAX_PROVISION_PLAINTEXT, PROVISION_VERSION, ProvisioningKeyPair, SEALED_OVERHEAD, seal};
pub use link_code::{LinkCode, MAX_ADDRESS_LEN};
pub use message::{ArchiveRef, PROVISION_MESSAGE_VERSION, ProvisionMessage};

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};

/// Length of an AES-256-GCM-SIV key.
const AEAD_KEY_LEN: usize = 32;
/// Length of an AES-GCM-SIV nonce.
const NONCE_LEN: usize = 12;
/// Length of an AES-GCM-SIV authentication tag.
const TAG_LEN: usize = 16;

/// Seals a message to the new device's link code: [`ProvisionMessage::encode`], then [`seal`]
/// to the code's public key. Send the result to the code's address.
pub fn seal_provision<R: rand::CryptoRng + ?Sized>(
    link: &LinkCode,
    message: &ProvisionMessage,
    rng: &mut R,
) -> Result<Vec<u8>, ProvisionError> {
    seal(link.public_key(), &message.encode()?, rng)
}

/// AES-256-GCM-SIV encryption of `plaintext` with `aad`; returns ciphertext and tag.
/// Its only failure is a plaintext over the cipher's limit (2^36 bytes), reported as over
/// `max`, the caller's own (much lower) limit, which the caller has checked already.
fn aead_seal(
    key: &[u8; AEAD_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
    max: usize,
) -> Result<Vec<u8>, ProvisionError> {
    Aes256GcmSiv::new(key.into())
        .encrypt(Nonce::from_slice(nonce), Payload { msg: plaintext, aad })
        .map_err(|_| ProvisionError::PlaintextTooLarge { len: plaintext.len(), max })
}

/// AES-256-GCM-SIV decryption of `ciphertext` (with its tag) under `aad`.
fn aead_open(key: &[u8; AEAD_KEY_LEN], nonce: &[u8], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, ProvisionError> {
    if nonce.len() != NONCE_LEN {
        return Err(ProvisionError::DecryptionFailed);
    }
    Aes256GcmSiv::new(key.into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad })
        .map_err(|_| ProvisionError::DecryptionFailed)
}
