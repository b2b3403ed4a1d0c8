//! Checks the server runs on uploaded identity keys and prekeys.
//!
//! The server cannot tell whether an identity key really belongs to a user (safety numbers
//! are for that), but it can refuse keys that would only make sessions fail later:
//!
//! - identity keys and EC prekeys must be exactly 33 bytes (`0x05` type byte + 32), and a
//!   canonical Curve25519 point, as every libsignal-generated key is;
//! - Kyber prekeys must be Kyber1024 (`0x08` type byte + 1568 bytes), the only KEM hush uses;
//! - signed prekeys (EC and Kyber) must carry a valid XEdDSA signature by the identity key
//!   over their serialized form.
//!
//! One-time EC prekeys are unsigned in the Signal protocol; [`validate_ec_public_key`] is all
//! that can be checked for them.

use libsignal_protocol::{IdentityKey, PublicKey, kem};

use crate::KeyError;

/// Length of a serialized Curve25519 public key: the `0x05` type byte plus 32 bytes.
const EC_PUBLIC_KEY_LEN: usize = 33;

/// Parses an account identity key (33 bytes, `IdentityKey::serialize`).
pub fn validate_identity_key(bytes: &[u8]) -> Result<IdentityKey, KeyError> {
    const WHAT: &str = "identity key (expected 33 bytes: 0x05 then a Curve25519 point)";
    let key = parse_ec_public_key(bytes, WHAT)?;
    Ok(IdentityKey::new(key))
}

/// Checks an EC prekey (signed or one-time) public key: 33 bytes, `0x05` type byte, canonical point.
pub fn validate_ec_public_key(bytes: &[u8]) -> Result<(), KeyError> {
    const WHAT: &str = "EC prekey (expected 33 bytes: 0x05 then a Curve25519 point)";
    parse_ec_public_key(bytes, WHAT).map(|_| ())
}

/// Checks a signed EC prekey: the key parses ([`validate_ec_public_key`]) and `signature` is
/// the identity key's XEdDSA signature over the 33-byte serialized key.
pub fn verify_signed_ec_prekey(identity: &IdentityKey, public_key: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    validate_ec_public_key(public_key)?;
    verify_identity_signature(identity, public_key, signature)
}

/// Checks a signed Kyber prekey (one-time or last resort): the key is a serialized Kyber1024
/// public key (1569 bytes) and `signature` is the identity key's XEdDSA signature over it.
pub fn verify_kyber_prekey(identity: &IdentityKey, public_key: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    const WHAT: &str = "Kyber prekey (expected a serialized Kyber1024 public key, 1569 bytes)";
    let key = kem::PublicKey::deserialize(public_key).map_err(|_| KeyError::InvalidKey(WHAT))?;
    if key.key_type() != kem::KeyType::Kyber1024 {
        return Err(KeyError::InvalidKey(WHAT));
    }
    verify_identity_signature(identity, public_key, signature)
}

fn verify_identity_signature(identity: &IdentityKey, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    if identity.public_key().verify_signature(message, signature) { Ok(()) } else { Err(KeyError::BadSignature) }
}

/// Parses a serialized Curve25519 public key strictly. libsignal's own parser accepts (and
/// only logs) trailing bytes after the key; hush refuses them, and refuses points that no
/// honest client produces (small-order components or a non-reduced coordinate).
pub(crate) fn parse_ec_public_key(bytes: &[u8], what: &'static str) -> Result<PublicKey, KeyError> {
    if bytes.len() != EC_PUBLIC_KEY_LEN {
        return Err(KeyError::InvalidKey(what));
    }
    let key = PublicKey::deserialize(bytes).map_err(|_| KeyError::InvalidKey(what))?;
    if !key.is_canonical() {
        return Err(KeyError::InvalidKey(what));
    }
    Ok(key)
}
