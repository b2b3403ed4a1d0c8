//! Device authentication to the server (ed25519).
//!
//! Every device holds a [`DeviceSigningKey`]; the server stores only its public half, the
//! [`DeviceAuthKey`]. There are no passwords. The device proves itself in two ways
//! (see `docs/PROTOCOL.md`, "Authentication"):
//!
//! - **WebSocket:** the server sends a random nonce; the device signs
//!   `"hush-ws-auth-v1\0" || nonce || account (16 bytes) || device_id (u32 big-endian)`
//!   ([`DeviceSigningKey::sign_ws_challenge`], [`DeviceAuthKey::verify_ws_challenge`]).
//! - **REST:** each request carries `Authorization: Hush-Sig ...` ([`AuthHeader`]) with a
//!   signature over the [`RestSigningInput`] (method, path and query, timestamp, nonce, body hash).
//!   Checking the timestamp window and nonce replay is the server's job; this module only
//!   builds, parses and verifies.
//!
//! Verification uses ed25519 `verify_strict`, and weak (small-order) public keys are refused.

mod header;

pub use header::AuthHeader;

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::KeyError;

/// Domain separation prefix of the WebSocket challenge signature.
const WS_AUTH_PREFIX: &[u8] = b"hush-ws-auth-v1\0";
/// First line of the REST signing message.
const REST_PREFIX: &str = "hush-rest-v1\n";

/// A device's private authentication key (ed25519).
///
/// Its `Debug` output shows only the public key, never the secret bytes.
#[derive(Clone)]
pub struct DeviceSigningKey(SigningKey);

impl DeviceSigningKey {
    /// Makes a new random key.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        // ed25519-dalek 2 speaks rand_core 0.6, we speak rand 0.9: go through raw bytes.
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let key = Self::from_bytes(&seed);
        seed.fill(0);
        key
    }

    /// Rebuilds a key from the 32-byte secret seed returned by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(bytes))
    }

    /// The 32-byte secret seed, for the device's own key store. Never send or log it.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half, which the server stores for this device.
    pub fn public(&self) -> DeviceAuthKey {
        DeviceAuthKey(self.0.verifying_key())
    }

    /// Signs the server's WebSocket challenge:
    /// `"hush-ws-auth-v1\0" || nonce || account.as_bytes() (16) || device_id.to_be_bytes()`.
    pub fn sign_ws_challenge(&self, nonce: &[u8], account: Uuid, device_id: u32) -> [u8; 64] {
        self.0.sign(&ws_challenge_message(nonce, account, device_id)).to_bytes()
    }

    /// Signs a REST request description (see [`RestSigningInput::message`]).
    pub fn sign_rest(&self, input: &RestSigningInput<'_>) -> [u8; 64] {
        self.0.sign(&input.message()).to_bytes()
    }

    /// Builds the whole `Authorization` header value for a REST request:
    /// hashes `body`, signs the [`RestSigningInput`], and formats an [`AuthHeader`].
    ///
    /// `method` must be exactly the method sent (for example `"GET"`) and `path_and_query`
    /// exactly the request target (for example `"/v1/keys?device=2"`).
    #[allow(clippy::too_many_arguments)] // the shape of this call is part of the agreed API
    pub fn rest_authorization(
        &self,
        account: Uuid,
        device_id: u32,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp_ms: u64,
        nonce: [u8; 16],
    ) -> String {
        let input = RestSigningInput { method, path_and_query, timestamp_ms, nonce, body_sha256: body_sha256(body) };
        AuthHeader { account, device_id, timestamp_ms, nonce, signature: self.sign_rest(&input) }.to_header_value()
    }
}

impl fmt::Debug for DeviceSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSigningKey").field("public", &self.public()).finish_non_exhaustive()
    }
}

/// A device's public authentication key (ed25519), as stored by the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceAuthKey(VerifyingKey);

impl DeviceAuthKey {
    /// Parses a 32-byte ed25519 public key. Refuses other lengths, bytes that are not a
    /// curve point, and weak (small-order) points.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        const WHAT: &str = "device auth key (expected a 32-byte ed25519 public key)";
        let bytes: &[u8; 32] = bytes.try_into().map_err(|_| KeyError::InvalidKey(WHAT))?;
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidKey(WHAT))?;
        if key.is_weak() {
            return Err(KeyError::InvalidKey(WHAT));
        }
        Ok(Self(key))
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Checks a WebSocket challenge signature made by [`DeviceSigningKey::sign_ws_challenge`].
    pub fn verify_ws_challenge(
        &self,
        nonce: &[u8],
        account: Uuid,
        device_id: u32,
        signature: &[u8],
    ) -> Result<(), KeyError> {
        self.verify(&ws_challenge_message(nonce, account, device_id), signature)
    }

    /// Checks a REST signature made by [`DeviceSigningKey::sign_rest`] over the same input.
    pub fn verify_rest(&self, input: &RestSigningInput<'_>, signature: &[u8]) -> Result<(), KeyError> {
        self.verify(&input.message(), signature)
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let signature: &[u8; 64] = signature.try_into().map_err(|_| KeyError::BadSignature)?;
        self.0.verify_strict(message, &Signature::from_bytes(signature)).map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Debug for DeviceAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceAuthKey({})", hex::encode(self.to_bytes()))
    }
}

/// What a REST signature covers. Account and device are not in it: they select the key
/// that must have made the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestSigningInput<'a> {
    /// The HTTP method exactly as sent, e.g. `"POST"`.
    pub method: &'a str,
    /// The request target exactly as sent: path plus `?query` if any, e.g. `"/v1/messages"`.
    pub path_and_query: &'a str,
    /// The `ts` of the header: client clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The `nonce` of the header: 16 random bytes, fresh per request.
    pub nonce: [u8; 16],
    /// SHA-256 of the request body ([`body_sha256`]; an empty body hashes too).
    pub body_sha256: [u8; 32],
}

impl RestSigningInput<'_> {
    /// The bytes that are signed:
    /// `"hush-rest-v1\n" METHOD "\n" path_and_query "\n" ts "\n" hex(nonce) "\n" hex(body_sha256)`,
    /// with `ts` in decimal and hex in lowercase.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "{REST_PREFIX}{}\n{}\n{}\n{}\n{}",
            self.method,
            self.path_and_query,
            self.timestamp_ms,
            hex::encode(self.nonce),
            hex::encode(self.body_sha256),
        )
        .into_bytes()
    }
}

/// SHA-256 of a request body, as carried in [`RestSigningInput::body_sha256`].
pub fn body_sha256(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

fn ws_challenge_message(nonce: &[u8], account: Uuid, device_id: u32) -> Vec<u8> {
    let mut message = Vec::with_capacity(WS_AUTH_PREFIX.len() + nonce.len() + 16 + 4);
    message.extend_from_slice(WS_AUTH_PREFIX);
    message.extend_from_slice(nonce);
    message.extend_from_slice(account.as_bytes());
    message.extend_from_slice(&device_id.to_be_bytes());
    message
}
