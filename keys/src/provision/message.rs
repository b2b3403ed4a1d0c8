//! The plaintext of a device link: what the new device needs to act for the account.

use std::fmt;

use libsignal_protocol::{IdentityKeyPair, PrivateKey};
use uuid::Uuid;

use super::{ArchiveKey, MAX_PROVISION_PLAINTEXT};
use crate::ProvisionError;
use crate::prekeys::validate_identity_key;

/// Version of the [`ProvisionMessage`] encoding, its first byte.
pub const PROVISION_MESSAGE_VERSION: u8 = 1;

const IDENTITY_PUBLIC_LEN: usize = 33;
const IDENTITY_PRIVATE_LEN: usize = 32;
const LINK_TOKEN_LEN: usize = 32;
/// Version, identity key pair, account id and link token.
const FIXED_LEN: usize = 1 + IDENTITY_PUBLIC_LEN + IDENTITY_PRIVATE_LEN + 16 + LINK_TOKEN_LEN;

/// Where the account's message history archive is, and the key that encrypts its chunks.
#[derive(Debug, Clone)]
pub struct ArchiveRef {
    /// The archive's id on the server.
    pub id: String,
    /// The key of its chunks ([`ArchiveKey::open_chunk`]).
    pub key: ArchiveKey,
}

/// What the existing device sends the new one (sealed with [`super::seal_provision`]).
///
/// `Debug` shows the account id and identity public key only: no private key, token, archive
/// key or name.
#[derive(Clone)]
pub struct ProvisionMessage {
    /// The account's identity key pair, which the new device shares.
    pub identity: IdentityKeyPair,
    /// The account.
    pub account_id: Uuid,
    /// The account's username.
    pub username: String,
    /// The token with which the new device proves to the server that an existing device
    /// approved it.
    pub link_token: [u8; 32],
    /// The message history archive to download, if the existing device made one.
    pub archive: Option<ArchiveRef>,
    /// The account's profile name, if it has one.
    pub profile_name: Option<String>,
}

impl ProvisionMessage {
    /// Encodes the message. Format (version 1), lengths in bytes, integers big-endian:
    ///
    /// | offset | length | content |
    /// |---|---|---|
    /// | 0 | 1 | version, `0x01` ([`PROVISION_MESSAGE_VERSION`]) |
    /// | 1 | 33 | identity public key, libsignal serialized (`0x05` + 32) |
    /// | 34 | 32 | identity private key (Curve25519, clamped, as libsignal serializes it) |
    /// | 66 | 16 | account id (UUID bytes) |
    /// | 82 | 32 | link token |
    /// | 114 | 2 + `u` | username: `u` as u16, then `u` bytes of UTF-8 |
    /// | ... | 1 | archive present: `0x00` (no) or `0x01` (yes) |
    /// | ... | 2 + `a` + 32 | if present: archive id (`a` as u16, then UTF-8), then archive key |
    /// | ... | 1 | profile name present: `0x00` or `0x01` |
    /// | ... | 2 + `p` | if present: profile name (`p` as u16, then UTF-8) |
    ///
    /// Nothing follows. Fails with [`ProvisionError::PlaintextTooLarge`] if the encoding would
    /// be larger than [`MAX_PROVISION_PLAINTEXT`] (which also keeps every string below 64 KiB).
    pub fn encode(&self) -> Result<Vec<u8>, ProvisionError> {
        let archive_len = self.archive.as_ref().map_or(0, |a| 2 + a.id.len() + 32);
        let profile_len = self.profile_name.as_ref().map_or(0, |p| 2 + p.len());
        let len = FIXED_LEN + 2 + self.username.len() + 1 + archive_len + 1 + profile_len;
        if len > MAX_PROVISION_PLAINTEXT {
            return Err(ProvisionError::PlaintextTooLarge { len, max: MAX_PROVISION_PLAINTEXT });
        }

        let mut out = Vec::with_capacity(len);
        out.push(PROVISION_MESSAGE_VERSION);
        out.extend_from_slice(&self.identity.identity_key().serialize());
        out.extend_from_slice(&self.identity.private_key().serialize());
        out.extend_from_slice(self.account_id.as_bytes());
        out.extend_from_slice(&self.link_token);
        put_str(&mut out, &self.username);
        match &self.archive {
            None => out.push(0),
            Some(archive) => {
                out.push(1);
                put_str(&mut out, &archive.id);
                out.extend_from_slice(archive.key.as_bytes());
            }
        }
        match &self.profile_name {
            None => out.push(0),
            Some(name) => {
                out.push(1);
                put_str(&mut out, name);
            }
        }
        Ok(out)
    }

    /// Decodes a message written by [`Self::encode`].
    ///
    /// Errors: [`ProvisionError::UnsupportedMessageVersion`] for another version;
    /// [`ProvisionError::BadMessage`], naming the field, if it ends early, has bytes after the
    /// last field, a presence byte other than 0 or 1, a string that is not UTF-8, an identity
    /// public key that does not parse, or an identity private key that is not clamped or not
    /// the public key's.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProvisionError> {
        let mut r = Reader(bytes);
        let version = r.take::<1>("version")?[0];
        if version != PROVISION_MESSAGE_VERSION {
            return Err(ProvisionError::UnsupportedMessageVersion(version));
        }
        let identity_public = r.take::<IDENTITY_PUBLIC_LEN>("identity public key")?;
        let identity_private = r.take::<IDENTITY_PRIVATE_LEN>("identity private key")?;
        let account_id = Uuid::from_bytes(r.take::<16>("account id")?);
        let link_token = r.take::<LINK_TOKEN_LEN>("link token")?;
        let username = r.string("username")?;
        let archive = if r.present("archive")? {
            let id = r.string("archive id")?;
            let key = ArchiveKey::from_bytes(r.take::<32>("archive key")?);
            Some(ArchiveRef { id, key })
        } else {
            None
        };
        let profile_name = if r.present("profile name")? { Some(r.string("profile name")?) } else { None };
        if !r.0.is_empty() {
            return Err(bad("message", "has bytes after its last field"));
        }

        let identity = identity_key_pair(&identity_public, &identity_private)?;
        Ok(Self { identity, account_id, username, link_token, archive, profile_name })
    }
}

impl fmt::Debug for ProvisionMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionMessage")
            .field("account_id", &self.account_id)
            .field("identity_public", &hex::encode(self.identity.identity_key().serialize()))
            .field("archive_id", &self.archive.as_ref().map(|a| &a.id))
            .finish_non_exhaustive()
    }
}

/// Rebuilds the identity key pair, checking that the private key is the public key's.
fn identity_key_pair(public: &[u8], private_bytes: &[u8]) -> Result<IdentityKeyPair, ProvisionError> {
    let identity =
        validate_identity_key(public).map_err(|_| bad("identity public key", "is not a valid Curve25519 key"))?;
    let private = PrivateKey::deserialize(private_bytes).map_err(|_| bad("identity private key", "does not parse"))?;
    // libsignal clamps private keys when it reads them, and serializes them clamped: refuse
    // other spellings, so that each message has one encoding.
    if private.serialize() != private_bytes {
        return Err(bad("identity private key", "is not clamped"));
    }
    let matches = private.public_key().is_ok_and(|derived| &derived == identity.public_key());
    if !matches {
        return Err(bad("identity private key", "does not belong to the identity public key"));
    }
    Ok(IdentityKeyPair::new(identity, private))
}

/// Appends a u16-length-prefixed string; `encode` has checked that every string fits.
fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// What a read reports when the message ends inside a field.
const CUT_SHORT: &str = "is cut short (the message ends inside it)";

fn bad(field: &'static str, problem: &'static str) -> ProvisionError {
    ProvisionError::BadMessage { field, problem }
}

/// Reads fields off the front of an encoded message. Each read names its field, for errors.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProvisionError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(bad(field, CUT_SHORT))?;
        self.0 = rest;
        Ok(*head)
    }

    fn string(&mut self, field: &'static str) -> Result<String, ProvisionError> {
        let len = usize::from(u16::from_be_bytes(self.take::<2>(field)?));
        if self.0.len() < len {
            return Err(bad(field, CUT_SHORT));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(head.to_vec()).map_err(|_| bad(field, "is not UTF-8"))
    }

    fn present(&mut self, field: &'static str) -> Result<bool, ProvisionError> {
        match self.take::<1>(field)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(bad(field, "presence byte is neither 0 nor 1")),
        }
    }
}
