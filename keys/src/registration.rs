//! Proof of key ownership at registration.
//!
//! A new account's registration is signed by the identity key it registers (XEdDSA, as
//! signed prekeys are), over a challenge the server issued, the server's time from that
//! challenge, the username and the primary device's auth key and registration id
//! ([`RegistrationSigningInput`]). So a registration cannot be made from someone else's
//! *public* identity key, and a captured registration cannot be replayed under another
//! name or with another device key.
//!
//! The challenge needs no server state: its nonce is 16 random bytes followed by a
//! 16-byte HMAC-SHA256 tag over them and the issue time ([`ChallengeKey`]), keyed by a
//! secret derived from the trust root. Every node of a cluster has the same trust root,
//! so any node accepts a challenge any other node issued.

use hmac::{Hmac, Mac};
use libsignal_protocol::{IdentityKey, IdentityKeyPair, SignalProtocolError};
use sha2::Sha256;

use crate::KeyError;

/// Length of a registration challenge nonce.
pub const CHALLENGE_NONCE_LEN: usize = 32;
/// Random bytes at the start of a nonce; the rest is the tag.
const RANDOM_LEN: usize = 16;
/// Domain separation of the signed message.
const SIGNING_DOMAIN: &[u8] = b"hush-register-v1\0";
/// Domain separation of the challenge key derivation.
const KEY_DOMAIN: &[u8] = b"hush-registration-challenge-v1";

/// What a registration's identity-key signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationSigningInput<'a> {
    /// The normalized (lowercase) username.
    pub username: &'a str,
    /// The server time the challenge carried, ms since the epoch.
    pub server_time_ms: u64,
    /// The challenge nonce ([`CHALLENGE_NONCE_LEN`] bytes).
    pub nonce: &'a [u8],
    /// The primary device's ed25519 auth public key.
    pub auth_key: &'a [u8],
    /// The primary device's registration id.
    pub registration_id: u32,
}

impl RegistrationSigningInput<'_> {
    /// The bytes signed: the domain `hush-register-v1\0`, then each field with a u32
    /// big-endian length before the variable ones:
    /// `len(username) || username || server_time_ms (u64 BE) || len(nonce) || nonce ||
    /// len(auth_key) || auth_key || registration_id (u32 BE)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNING_DOMAIN.len() + 96 + self.username.len());
        out.extend_from_slice(SIGNING_DOMAIN);
        put_var(&mut out, self.username.as_bytes());
        out.extend_from_slice(&self.server_time_ms.to_be_bytes());
        put_var(&mut out, self.nonce);
        put_var(&mut out, self.auth_key);
        out.extend_from_slice(&self.registration_id.to_be_bytes());
        out
    }
}

fn put_var(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every field is far below 4 GiB (the server caps request bodies at 1 MiB).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Signs a registration with the identity key being registered (client side).
pub fn sign_registration<R: rand::Rng + rand::CryptoRng>(
    identity: &IdentityKeyPair,
    input: &RegistrationSigningInput<'_>,
    rng: &mut R,
) -> Result<Vec<u8>, KeyError> {
    let signature =
        identity.private_key().calculate_signature(&input.to_bytes(), rng).map_err(SignalProtocolError::from)?;
    Ok(signature.to_vec())
}

/// Checks a registration signature against the identity key it registers (server side).
pub fn verify_registration(
    identity: &IdentityKey,
    input: &RegistrationSigningInput<'_>,
    signature: &[u8],
) -> Result<(), KeyError> {
    if identity.public_key().verify_signature(&input.to_bytes(), signature) {
        Ok(())
    } else {
        Err(KeyError::BadSignature)
    }
}

/// The server's key for issuing and checking registration challenges.
///
/// `Debug` does not show it.
#[derive(Clone)]
pub struct ChallengeKey([u8; 32]);

impl std::fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeKey(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl ChallengeKey {
    /// Derives the key from a secret (the trust root's private key): HMAC-SHA256 of the
    /// domain `hush-registration-challenge-v1` keyed by the secret.
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(KEY_DOMAIN);
        ChallengeKey(mac.finalize().into_bytes().into())
    }

    fn tag(&self, random: &[u8], server_time_ms: u64) -> [u8; 32] {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(random);
        mac.update(&server_time_ms.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A fresh challenge nonce for `server_time_ms`: 16 random bytes and a 16-byte tag.
    pub fn issue<R: rand::Rng + rand::CryptoRng>(&self, server_time_ms: u64, rng: &mut R) -> [u8; CHALLENGE_NONCE_LEN] {
        let mut nonce = [0u8; CHALLENGE_NONCE_LEN];
        rng.fill_bytes(&mut nonce[..RANDOM_LEN]);
        let tag = self.tag(&nonce[..RANDOM_LEN], server_time_ms);
        nonce[RANDOM_LEN..].copy_from_slice(&tag[..CHALLENGE_NONCE_LEN - RANDOM_LEN]);
        nonce
    }

    /// True if `nonce` was issued by this key for `server_time_ms` (freshness is the caller's check).
    pub fn check(&self, nonce: &[u8], server_time_ms: u64) -> bool {
        if nonce.len() != CHALLENGE_NONCE_LEN {
            return false;
        }
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(&nonce[..RANDOM_LEN]);
        mac.update(&server_time_ms.to_be_bytes());
        mac.verify_truncated_left(&nonce[RANDOM_LEN..]).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(username: &'a str, nonce: &'a [u8]) -> RegistrationSigningInput<'a> {
        RegistrationSigningInput {
            username,
            server_time_ms: 1_700_000_000_000,
            nonce,
            auth_key: &[7; 32],
            registration_id: 42,
        }
    }

    #[test]
    fn a_signature_covers_the_username() {
        let mut rng = rand::rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let nonce = [1u8; 32];
        let sig = sign_registration(&identity, &input("alice", &nonce), &mut rng).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verify_registration(identity.identity_key(), &input("alice", &nonce), &sig), Ok(()));
        assert_eq!(
            verify_registration(identity.identity_key(), &input("mallory", &nonce), &sig),
            Err(KeyError::BadSignature)
        );
        let other = IdentityKeyPair::generate(&mut rng);
        assert_eq!(
            verify_registration(other.identity_key(), &input("alice", &nonce), &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn challenges_check_only_with_their_key_and_time() {
        let key = ChallengeKey::derive(&[9; 32]);
        let nonce = key.issue(1000, &mut rand::rng());
        assert!(key.check(&nonce, 1000));
        assert!(!key.check(&nonce, 1001));
        assert!(!ChallengeKey::derive(&[8; 32]).check(&nonce, 1000));
        let mut forged = nonce;
        forged[0] ^= 1;
        assert!(!key.check(&forged, 1000));
        assert!(!key.check(&nonce[..31], 1000));
    }
}
