//! Sealed-sender certificates.
//!
//! Sealed sender hides the sender of a one-to-one envelope from the server. The recipient
//! still learns (and trusts) who sent it through a **sender certificate** inside the
//! encryption, issued by the server:
//!
//! ```text
//! trust root key pair ──signs──▶ ServerCertificate (key id, signer public key)
//! signer key pair     ──signs──▶ SenderCertificate (account ACI, device, identity key, expiry)
//! ```
//!
//! Clients pin the trust root's public key ([`ServerKeys::trust_root_public`]) and check each
//! certificate with [`verify_sender_certificate`] (libsignal's `sealed_sender_decrypt` does the
//! same check internally). [`ServerKeys`] is what `hushd` keeps in its data directory.
//!
//! Accounts are named in libsignal by their ACI ServiceId string; [`aci_string`] is the one
//! place that spelling is made.

use std::fmt;

use libsignal_protocol::{Aci, DeviceId, KeyPair, PrivateKey, SenderCertificate, ServerCertificate, Timestamp};
use uuid::Uuid;

use crate::KeyError;
use crate::prekeys::{parse_ec_public_key, validate_identity_key};

/// Key id of the server certificate hush issues ("HUSH" in ASCII). It avoids the ids that
/// libsignal treats specially: `0xDEADC357` (hard-coded as revoked) and 2, 3, `0x7357C357`
/// (Signal's built-in certificates).
pub const SERVER_CERTIFICATE_KEY_ID: u32 = 0x4855_5348;

/// Magic and format version at the start of [`ServerKeys::to_bytes`].
const MAGIC: &[u8; 9] = b"HUSHKEYS1";
/// Common prefix of every version of the magic, to tell "other version" from "not ours".
const MAGIC_FAMILY: &[u8] = b"HUSHKEYS";
const PRIVATE_KEY_LEN: usize = 32;
/// Magic, two private keys, and the u32 length of the server certificate.
const HEADER_LEN: usize = MAGIC.len() + 2 * PRIVATE_KEY_LEN + 4;

/// The libsignal address name of an account: its ACI ServiceId string (the lowercase,
/// hyphenated UUID). Every `ProtocolAddress`, session row and sender certificate uses it.
pub fn aci_string(account: Uuid) -> String {
    Aci::from(account).service_id_string()
}

/// The server's sealed-sender keys: the trust root, the signing key, and the server
/// certificate in which the root vouches for the signing key.
///
/// `Debug` shows only public data.
pub struct ServerKeys {
    root: KeyPair,
    signer: KeyPair,
    server_cert: ServerCertificate,
    /// `server_cert` serialized, kept so [`Self::to_bytes`] cannot fail.
    server_cert_bytes: Vec<u8>,
}

impl ServerKeys {
    /// Makes a new trust root and signing key, and the server certificate
    /// (key id [`SERVER_CERTIFICATE_KEY_ID`]) binding them.
    pub fn generate<R: rand::Rng + rand::CryptoRng>(rng: &mut R) -> Result<Self, KeyError> {
        let root = KeyPair::generate(rng);
        let signer = KeyPair::generate(rng);
        let server_cert = ServerCertificate::new(SERVER_CERTIFICATE_KEY_ID, signer.public_key, &root.private_key, rng)?;
        let server_cert_bytes = server_cert.serialized()?.to_vec();
        Ok(Self { root, signer, server_cert, server_cert_bytes })
    }

    /// Serializes the keys for the server's data directory. The file holds private keys:
    /// store it readable by the server only.
    ///
    /// Format (version 1), all lengths in bytes:
    ///
    /// | offset | length | content |
    /// |---|---|---|
    /// | 0 | 9 | magic `HUSHKEYS1` |
    /// | 9 | 32 | trust root private key (Curve25519) |
    /// | 41 | 32 | signer private key (Curve25519) |
    /// | 73 | 4 | `n`, length of the server certificate, u32 big-endian |
    /// | 77 | `n` | libsignal `ServerCertificate`, serialized |
    ///
    /// Nothing may follow the certificate.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.server_cert_bytes.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.root.private_key.serialize());
        out.extend_from_slice(&self.signer.private_key.serialize());
        // The certificate is about 105 bytes, far below u32::MAX.
        let cert_len = u32::try_from(self.server_cert_bytes.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&cert_len.to_be_bytes());
        out.extend_from_slice(&self.server_cert_bytes);
        out
    }

    /// Reads keys written by [`Self::to_bytes`]. Refuses another format or version, a
    /// truncated or padded file, and a server certificate that is not the trust root's
    /// signature over this file's signing key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bad = |reason: &str| KeyError::InvalidServerKeys(reason.to_owned());
        if !bytes.starts_with(MAGIC_FAMILY) {
            return Err(bad("not a hush server key file (wrong magic bytes)"));
        }
        if !bytes.starts_with(MAGIC) {
            return Err(bad("unsupported format version (this hushd reads `HUSHKEYS1`)"));
        }
        if bytes.len() < HEADER_LEN {
            return Err(bad("file is truncated"));
        }
        let (root_bytes, rest) = bytes[MAGIC.len()..].split_at(PRIVATE_KEY_LEN);
        let (signer_bytes, rest) = rest.split_at(PRIVATE_KEY_LEN);
        let (len_bytes, cert_bytes) = rest.split_at(4);
        let mut cert_len = [0u8; 4];
        cert_len.copy_from_slice(len_bytes);
        let cert_len = u32::from_be_bytes(cert_len);
        if u32::try_from(cert_bytes.len()).ok() != Some(cert_len) {
            return Err(bad("server certificate length does not match the file length (truncated or padded file)"));
        }

        let key_pair = |raw: &[u8], what: &str| {
            PrivateKey::deserialize(raw)
                .ok()
                .and_then(|private| KeyPair::try_from(private).ok())
                .ok_or_else(|| KeyError::InvalidServerKeys(format!("{what} is not a valid key")))
        };
        let root = key_pair(root_bytes, "trust root private key")?;
        let signer = key_pair(signer_bytes, "signer private key")?;

        let server_cert =
            ServerCertificate::deserialize(cert_bytes).map_err(|_| bad("server certificate does not parse"))?;
        if server_cert.public_key()? != signer.public_key {
            return Err(bad("server certificate is for another signing key than the one in this file"));
        }
        if !server_cert.validate(&root.public_key)? {
            return Err(bad("server certificate is not signed by this file's trust root, or its key id is revoked"));
        }
        Ok(Self { root, signer, server_cert, server_cert_bytes: cert_bytes.to_vec() })
    }

    /// The trust root's public key (33 bytes, `0x05` + 32), which clients pin.
    pub fn trust_root_public(&self) -> Vec<u8> {
        self.root.public_key.serialize().into_vec()
    }

    /// The key for registration challenges ([`crate::registration::ChallengeKey`]), derived
    /// from the trust root's private key, so every node with this trust root has it.
    pub fn challenge_key(&self) -> crate::registration::ChallengeKey {
        crate::registration::ChallengeKey::derive(&self.root.private_key.serialize())
    }

    /// Issues a sender certificate for one device of an account, valid until
    /// `expires_at_ms` (milliseconds since the Unix epoch, inclusive).
    ///
    /// `identity_key` is the account's 33-byte identity public key. Returns the serialized
    /// libsignal `SenderCertificate` (about 260 bytes).
    pub fn issue_sender_certificate<R: rand::Rng + rand::CryptoRng>(
        &self,
        account: Uuid,
        device_id: u32,
        identity_key: &[u8],
        expires_at_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<u8>, KeyError> {
        let identity = validate_identity_key(identity_key)?;
        let device = DeviceId::try_from(device_id).map_err(|_| KeyError::InvalidDeviceId(device_id))?;
        let cert = SenderCertificate::new(
            aci_string(account),
            None,
            *identity.public_key(),
            device,
            Timestamp::from_epoch_millis(expires_at_ms),
            self.server_cert.clone(),
            &self.signer.private_key,
            rng,
        )?;
        Ok(cert.serialized()?.to_vec())
    }
}

impl fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKeys")
            .field("trust_root_public", &hex::encode(self.trust_root_public()))
            .field("signer_public", &hex::encode(self.signer.public_key.serialize()))
            .field("server_certificate_key_id", &self.server_cert.key_id().ok())
            .finish_non_exhaustive()
    }
}

/// What a verified sender certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderCertificateInfo {
    /// The sender's account (ACI).
    pub account: Uuid,
    /// The sender's device.
    pub device_id: u32,
    /// Last millisecond (since the Unix epoch) at which the certificate is valid.
    pub expires_at_ms: u64,
    /// The sender account's identity public key, 33 bytes.
    pub identity_key: Vec<u8>,
}

/// Verifies a serialized sender certificate against the pinned trust root (33 bytes) at
/// time `now_ms`, and returns what it certifies.
///
/// Errors: [`KeyError::InvalidKey`] for a malformed trust root;
/// [`KeyError::CertificateInvalid`] if the certificate is malformed, not issued under this
/// trust root, or does not name an account in canonical ACI form;
/// [`KeyError::CertificateExpired`] if it is genuine but `now_ms` is past its expiry.
pub fn verify_sender_certificate(
    cert: &[u8],
    trust_root: &[u8],
    now_ms: u64,
) -> Result<SenderCertificateInfo, KeyError> {
    let root = parse_ec_public_key(trust_root, "trust root (expected 33 bytes: 0x05 then a Curve25519 point)")?;
    let cert = SenderCertificate::deserialize(cert).map_err(|_| KeyError::CertificateInvalid)?;
    let expiration = cert.expiration()?;
    // Check the signatures at the expiry instant, so that an expired certificate is reported
    // as expired only when it is genuine; then apply libsignal's rule (valid while now <= expiry).
    if !cert.validate(&root, expiration)? {
        return Err(KeyError::CertificateInvalid);
    }
    if Timestamp::from_epoch_millis(now_ms) > expiration {
        return Err(KeyError::CertificateExpired);
    }

    let sender = cert.sender_uuid()?;
    let account = Aci::parse_from_service_id_string(sender).map(Uuid::from).ok_or(KeyError::CertificateInvalid)?;
    // Sessions are keyed by the exact string, so only the canonical spelling is accepted.
    if sender != aci_string(account) {
        return Err(KeyError::CertificateInvalid);
    }
    Ok(SenderCertificateInfo {
        account,
        device_id: u32::from(cert.sender_device_id()?),
        expires_at_ms: expiration.epoch_millis(),
        identity_key: cert.key()?.serialize().into_vec(),
    })
}
