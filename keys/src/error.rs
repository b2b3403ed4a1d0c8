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

/// Everything that can go wrong while linking a device (see [`crate::provision`]) or
/// sealing and opening history archive chunks.
///
/// Messages never contain key bytes, plaintext or the raw untrusted input.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProvisionError {
    /// The sealed message starts with a format version this library does not know.
    #[error(
        "provisioning message has unsupported format version {0} (this client reads version 1); update hush on both devices"
    )]
    UnsupportedVersion(u8),

    /// The sealed data is shorter than its fixed header and authentication tag.
    #[error("sealed data is truncated: {len} bytes, at least {min} needed; it was cut short in transit")]
    Truncated {
        /// Length of the data received.
        len: usize,
        /// The shortest length a valid message can have.
        min: usize,
    },

    /// The plaintext is larger than the format allows (on sealing), or the sealed data
    /// would hold such a plaintext (on opening).
    #[error("plaintext of {len} bytes is larger than the limit of {max} bytes")]
    PlaintextTooLarge {
        /// Length of the plaintext (or the length it would have).
        len: usize,
        /// The limit.
        max: usize,
    },

    /// An X25519 public key is a low-order point, which would make the shared secret
    /// predictable: the recipient key given to a sealing call, or the ephemeral key in a
    /// sealed message (which only a forged message has).
    #[error("X25519 public key is a low-order point and cannot be used; scan or paste the link code again")]
    WeakPublicKey,

    /// Decryption failed: the data was sealed to another key (or, for an archive chunk,
    /// under another key or chunk index), or it was altered in transit.
    #[error(
        "cannot decrypt: sealed for another key or position, or altered in transit; start the device link (or the download) again"
    )]
    DecryptionFailed,

    /// A link code did not parse or is not valid. The payload says what is wrong; it
    /// never echoes the input.
    #[error(
        "invalid link code: {0}; expected `hush://link?address=<address>&key=<key>` or `<address>.<key>` as shown on the new device"
    )]
    BadLinkCode(&'static str),

    /// A decrypted provisioning message did not decode.
    #[error(
        "malformed provisioning message: the {field} {problem}; the sending device may run an incompatible hush version"
    )]
    BadMessage {
        /// The part that is wrong, for example `"username"`.
        field: &'static str,
        /// What is wrong with it, for example `"is not UTF-8"`.
        problem: &'static str,
    },

    /// A decrypted provisioning message has a version of its plaintext encoding that this
    /// library does not know.
    #[error(
        "provisioning message content has unsupported version {0} (this client reads version 1); update hush on both devices"
    )]
    UnsupportedMessageVersion(u8),
}
