//! The one error type of this crate.

use libsignal_protocol::SignalProtocolError;

/// Everything that can go wrong while checking or using hush key material.
///
/// Messages never contain key bytes, signatures or the raw untrusted input.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// A key did not parse: wrong length, wrong type byte, or not a usable curve point.
    /// The payload names the kind of key (for example `"device auth key"`).
    #[error(
        "invalid {0}: wrong length, wrong type byte or not a valid curve point; send the key exactly as the hush client library serialized it"
    )]
    InvalidKey(&'static str),

    /// A signature did not verify against the key it should have been made with
    /// (or it was not 64 bytes long).
    #[error("signature does not verify: it was made by another key, over other data, or was altered in transit")]
    BadSignature,

    /// A device id is outside the range libsignal accepts (1..=127).
    #[error("device id {0} is out of range: device ids are 1..=127")]
    InvalidDeviceId(u32),

    /// An `Authorization: Hush-Sig ...` header value could not be parsed.
    /// The payload says which part is wrong; it never echoes the raw header.
    #[error(
        "malformed Authorization header: {0}; expected `Hush-Sig account=<uuid>,device=<id>,ts=<unix ms>,nonce=<32 hex chars>,sig=<128 hex chars>`"
    )]
    MalformedAuthHeader(String),

    /// A sender certificate is malformed, names something that is not an account,
    /// or is not signed by a server certificate that the trust root signed.
    #[error(
        "sender certificate is invalid or not issued under the pinned trust root; fetch a new certificate from the server"
    )]
    CertificateInvalid,

    /// A sender certificate was genuine but its expiry time has passed.
    #[error("sender certificate has expired; fetch a new certificate from the server")]
    CertificateExpired,

    /// The server's stored key file (see [`crate::certs::ServerKeys::to_bytes`]) is unusable.
    #[error(
        "server key file is unusable: {0}; restore it from a backup or generate new server keys (clients then need the new trust root)"
    )]
    InvalidServerKeys(String),

    /// libsignal reported an error that this crate has no more specific variant for.
    #[error("libsignal error: {0}")]
    Signal(String),
}

impl From<SignalProtocolError> for KeyError {
    fn from(err: SignalProtocolError) -> Self {
        KeyError::Signal(err.to_string())
    }
}
