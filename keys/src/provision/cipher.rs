//! The provisioning key pair and the sealed format (ephemeral X25519, HKDF-SHA256,
//! AES-256-GCM-SIV).

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use super::{AEAD_KEY_LEN, LinkCode, NONCE_LEN, ProvisionMessage, TAG_LEN, aead_open, aead_seal};
use crate::ProvisionError;

/// The format version, the first byte of every sealed provisioning message.
pub const PROVISION_VERSION: u8 = 1;

/// The largest plaintext that [`seal`] seals and [`ProvisioningKeyPair::open`] opens: 48 KiB.
pub const MAX_PROVISION_PLAINTEXT: usize = 48 * 1024;

/// Length of an X25519 public key.
const X25519_LEN: usize = 32;
/// Version byte, ephemeral public key and nonce.
const HEADER_LEN: usize = 1 + X25519_LEN + NONCE_LEN;

/// Bytes that [`seal`] adds to a plaintext: the 45-byte header and the 16-byte tag. It is also
/// the length of the shortest sealed message (an empty plaintext).
pub const SEALED_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Start of the HKDF `info`; both public keys follow it.
const HKDF_INFO_PREFIX: &[u8] = b"hush-provision-v1";

/// The new device's X25519 key pair, made for one device link. Its public half goes into the
/// [`LinkCode`]; the existing device seals to it.
///
/// `Debug` shows only the public key.
pub struct ProvisioningKeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl ProvisioningKeyPair {
    /// Makes a new random key pair.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        // x25519-dalek 2 speaks rand_core 0.6, we speak rand 0.9: go through raw bytes.
        let mut secret = [0u8; X25519_LEN];
        rng.fill_bytes(&mut secret);
        let pair = Self::from_bytes(&secret);
        secret.fill(0);
        pair
    }

    /// Rebuilds a key pair from the 32-byte secret returned by [`Self::to_bytes`]
    /// (any 32 bytes are a valid X25519 secret).
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        let secret = StaticSecret::from(*secret);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The 32-byte secret, for a device that must keep the key while it waits for the
    /// message. Never send or log it.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The 32-byte X25519 public key, to show in the [`LinkCode`].
    pub fn public(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// The link code to show for the server's provisioning channel `address`.
    /// Fails with [`ProvisionError::BadLinkCode`] if the address is not valid
    /// (see [`LinkCode::new`]).
    pub fn link_code(&self, address: &str) -> Result<LinkCode, ProvisionError> {
        LinkCode::new(address, self.public())
    }

    /// Opens a message made by [`seal`] for this key pair's public key.
    ///
    /// Errors, checked in this order: [`ProvisionError::Truncated`] for empty input,
    /// [`ProvisionError::UnsupportedVersion`] if the first byte is not [`PROVISION_VERSION`],
    /// [`ProvisionError::Truncated`] for fewer than [`SEALED_OVERHEAD`] bytes,
    /// [`ProvisionError::PlaintextTooLarge`] if the plaintext would exceed
    /// [`MAX_PROVISION_PLAINTEXT`], [`ProvisionError::WeakPublicKey`] for a low-order
    /// ephemeral key, and [`ProvisionError::DecryptionFailed`] if it was sealed to another key
    /// or any byte was changed.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, ProvisionError> {
        let truncated = ProvisionError::Truncated { len: sealed.len(), min: SEALED_OVERHEAD };
        let Some(&version) = sealed.first() else { return Err(truncated) };
        if version != PROVISION_VERSION {
            return Err(ProvisionError::UnsupportedVersion(version));
        }
        if sealed.len() < SEALED_OVERHEAD {
            return Err(truncated);
        }
        let plaintext_len = sealed.len() - SEALED_OVERHEAD;
        if plaintext_len > MAX_PROVISION_PLAINTEXT {
            return Err(ProvisionError::PlaintextTooLarge { len: plaintext_len, max: MAX_PROVISION_PLAINTEXT });
        }

        let (header, ciphertext) = sealed.split_at(HEADER_LEN);
        let mut ephemeral = [0u8; X25519_LEN];
        ephemeral.copy_from_slice(&header[1..1 + X25519_LEN]);
        let nonce = &header[1 + X25519_LEN..];
        let shared = self.secret.diffie_hellman(&PublicKey::from(ephemeral));
        if !shared.was_contributory() {
            return Err(ProvisionError::WeakPublicKey);
        }
        let key = derive_key(shared.as_bytes(), &ephemeral, self.public.as_bytes());
        aead_open(&key, nonce, header, ciphertext)
    }

    /// Opens a sealed [`ProvisionMessage`] ([`Self::open`], then [`ProvisionMessage::decode`]).
    pub fn open_provision(&self, sealed: &[u8]) -> Result<ProvisionMessage, ProvisionError> {
        ProvisionMessage::decode(&self.open(sealed)?)
    }
}

impl fmt::Debug for ProvisioningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisioningKeyPair")
            .field("public", &hex::encode(self.public.as_bytes()))
            .finish_non_exhaustive()
    }
}

/// Seals `plaintext` to the X25519 public key `recipient_public` (from the new device's
/// [`LinkCode`]), so that only the holder of its [`ProvisioningKeyPair`] can open it.
///
/// A fresh ephemeral X25519 key is agreed with the recipient's key; HKDF-SHA256 (no salt,
/// `info = "hush-provision-v1" || ephemeral public || recipient public`) turns the shared
/// secret into a 32-byte AES-256-GCM-SIV key. Format (version 1), lengths in bytes:
///
/// | offset | length | content |
/// |---|---|---|
/// | 0 | 1 | version, `0x01` ([`PROVISION_VERSION`]) |
/// | 1 | 32 | ephemeral X25519 public key |
/// | 33 | 12 | random nonce |
/// | 45 | `n` + 16 | AES-256-GCM-SIV ciphertext of the `n`-byte plaintext, then its tag |
///
/// The 45-byte header (version, ephemeral key, nonce) is the associated data, so none of it can
/// be changed unnoticed. The total is `n` + [`SEALED_OVERHEAD`] (61) bytes.
///
/// Errors: [`ProvisionError::PlaintextTooLarge`] above [`MAX_PROVISION_PLAINTEXT`];
/// [`ProvisionError::WeakPublicKey`] if `recipient_public` is a low-order point.
pub fn seal<R: rand::CryptoRng + ?Sized>(
    recipient_public: &[u8; 32],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, ProvisionError> {
    if plaintext.len() > MAX_PROVISION_PLAINTEXT {
        return Err(ProvisionError::PlaintextTooLarge { len: plaintext.len(), max: MAX_PROVISION_PLAINTEXT });
    }
    let ephemeral = ProvisioningKeyPair::generate(rng);
    let shared = ephemeral.secret.diffie_hellman(&PublicKey::from(*recipient_public));
    if !shared.was_contributory() {
        return Err(ProvisionError::WeakPublicKey);
    }
    let key = derive_key(shared.as_bytes(), ephemeral.public.as_bytes(), recipient_public);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);

    let mut sealed = Vec::with_capacity(plaintext.len() + SEALED_OVERHEAD);
    sealed.push(PROVISION_VERSION);
    sealed.extend_from_slice(ephemeral.public.as_bytes());
    sealed.extend_from_slice(&nonce);
    let ciphertext = aead_seal(&key, &nonce, &sealed, plaintext, MAX_PROVISION_PLAINTEXT)?;
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// Whether an X25519 public key is a low-order point, with which every shared secret is zero.
pub(super) fn is_low_order(public: &[u8; 32]) -> bool {
    // A clamped scalar is a multiple of the cofactor 8, so the product is zero exactly for
    // points in the small subgroup, whatever (nonzero) scalar is used.
    let probe = StaticSecret::from([1u8; 32]);
    !probe.diffie_hellman(&PublicKey::from(*public)).was_contributory()
}

/// The AEAD key of one sealed message, bound to both public keys as sent.
fn derive_key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> [u8; AEAD_KEY_LEN] {
    let mut info = Vec::with_capacity(HKDF_INFO_PREFIX.len() + 2 * X25519_LEN);
    info.extend_from_slice(HKDF_INFO_PREFIX);
    info.extend_from_slice(ephemeral);
    info.extend_from_slice(recipient);
    let mut key = [0u8; AEAD_KEY_LEN];
    // Expanding fails only for outputs over 255 hash lengths (8160 bytes).
    Hkdf::<Sha256>::new(None, shared).expand(&info, &mut key).expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}
