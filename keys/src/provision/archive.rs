//! Encryption of the message history archive, chunk by chunk.

use std::fmt;

use super::{AEAD_KEY_LEN, NONCE_LEN, TAG_LEN, aead_open, aead_seal};
use crate::ProvisionError;

/// The largest chunk plaintext [`ArchiveKey::seal_chunk`] seals and
/// [`ArchiveKey::open_chunk`] opens: 1 MiB.
pub const MAX_ARCHIVE_CHUNK_PLAINTEXT: usize = 1024 * 1024;

/// Bytes a sealed chunk adds to its plaintext: the 12-byte nonce and the 16-byte tag. It is
/// also the length of the shortest sealed chunk.
pub const ARCHIVE_CHUNK_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Start of a chunk's associated data; the chunk index (u32 big-endian) follows it.
const CHUNK_AAD_PREFIX: &[u8] = b"hush-archive-chunk-v1";

/// The AES-256-GCM-SIV key of one history archive. The existing device makes it, encrypts
/// the archive's chunks with it and sends it in the [`super::ProvisionMessage`].
///
/// `Debug` does not show the key.
#[derive(Clone)]
pub struct ArchiveKey([u8; AEAD_KEY_LEN]);

impl ArchiveKey {
    /// Makes a new random key.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut key = [0u8; AEAD_KEY_LEN];
        rng.fill_bytes(&mut key);
        Self(key)
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// The key's 32 bytes. Never send them except inside a sealed provisioning message.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Seals chunk number `index` of an archive. Format, lengths in bytes:
    ///
    /// | offset | length | content |
    /// |---|---|---|
    /// | 0 | 12 | random nonce |
    /// | 12 | `n` + 16 | AES-256-GCM-SIV ciphertext of the `n`-byte plaintext, then its tag |
    ///
    /// The associated data is `"hush-archive-chunk-v1" || index (u32 big-endian)`, so a chunk
    /// opens only at its own index. The index does not say how many chunks there are: the
    /// reader must learn the count elsewhere to notice chunks missing at the end.
    ///
    /// Fails with [`ProvisionError::PlaintextTooLarge`] above [`MAX_ARCHIVE_CHUNK_PLAINTEXT`].
    pub fn seal_chunk<R: rand::CryptoRng + ?Sized>(
        &self,
        index: u32,
        plaintext: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, ProvisionError> {
        if plaintext.len() > MAX_ARCHIVE_CHUNK_PLAINTEXT {
            return Err(ProvisionError::PlaintextTooLarge { len: plaintext.len(), max: MAX_ARCHIVE_CHUNK_PLAINTEXT });
        }
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let ciphertext = aead_seal(&self.0, &nonce, &chunk_aad(index), plaintext, MAX_ARCHIVE_CHUNK_PLAINTEXT)?;
        Ok([nonce.as_slice(), &ciphertext].concat())
    }

    /// Opens chunk number `index`, sealed by [`Self::seal_chunk`].
    ///
    /// Errors: [`ProvisionError::Truncated`] below [`ARCHIVE_CHUNK_OVERHEAD`] bytes;
    /// [`ProvisionError::PlaintextTooLarge`] if the plaintext would exceed
    /// [`MAX_ARCHIVE_CHUNK_PLAINTEXT`]; [`ProvisionError::DecryptionFailed`] for another key,
    /// another index (a reordered or swapped chunk) or any changed byte.
    pub fn open_chunk(&self, index: u32, sealed: &[u8]) -> Result<Vec<u8>, ProvisionError> {
        if sealed.len() < ARCHIVE_CHUNK_OVERHEAD {
            return Err(ProvisionError::Truncated { len: sealed.len(), min: ARCHIVE_CHUNK_OVERHEAD });
        }
        let plaintext_len = sealed.len() - ARCHIVE_CHUNK_OVERHEAD;
        if plaintext_len > MAX_ARCHIVE_CHUNK_PLAINTEXT {
            return Err(ProvisionError::PlaintextTooLarge { len: plaintext_len, max: MAX_ARCHIVE_CHUNK_PLAINTEXT });
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        aead_open(&self.0, nonce, &chunk_aad(index), ciphertext)
    }
}

impl fmt::Debug for ArchiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArchiveKey(..)")
    }
}

fn chunk_aad(index: u32) -> Vec<u8> {
    [CHUNK_AAD_PREFIX, &index.to_be_bytes()].concat()
}
