//! Linking a new device: single-use link tokens (kept as their SHA-256 only) and the open
//! provisioning channels, so that any node of a cluster knows which node holds a channel.

use async_trait::async_trait;
use uuid::Uuid;

use super::{NewDeviceRecord, StoreError};

/// How long a link token's row is kept after it expired, so that a late use is told
/// `link_token_expired` (or `link_token_used`) rather than `link_token_unknown`.
pub const LINK_TOKEN_KEEP_MS: u64 = 24 * 3600 * 1000;

/// A link token to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLinkToken {
    /// SHA-256 of the token (the token itself is never stored).
    pub hash: [u8; 32],
    /// The account it lets a device join.
    pub account: Uuid,
    /// When it stops being accepted, ms.
    pub expires_at: u64,
}

/// A new device joining an account with a link token.
#[derive(Debug, Clone)]
pub struct LinkDevice<'a> {
    /// The account.
    pub account: Uuid,
    /// SHA-256 of the token presented.
    pub token_hash: [u8; 32],
    /// The device (validated by the caller).
    pub device: &'a NewDeviceRecord,
    /// Devices the account may have.
    pub max_devices: u32,
    /// Now, ms.
    pub now_ms: u64,
}

/// Why a link was refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No token with that hash for that account.
    #[error("no such link token")]
    UnknownToken,
    /// The token's lifetime is over.
    #[error("the link token has expired")]
    ExpiredToken,
    /// The token already added a device.
    #[error("the link token was already used")]
    UsedToken,
    /// Adding the device failed (e.g. [`StoreError::TooManyDevices`]); the token stays unused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A history archive to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArchive {
    /// Its id (16 random bytes).
    pub id: [u8; 16],
    /// The account whose devices may write and read it.
    pub account: Uuid,
    /// The most bytes its chunks may hold together.
    pub max_bytes: u64,
    /// When it is deleted, ms.
    pub expires_at: u64,
}

/// One archive, as the account's devices name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveKey {
    /// The account.
    pub account: Uuid,
    /// The archive id.
    pub id: [u8; 16],
}

/// Why an archive call was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// No such archive for this account (or it expired).
    #[error("no such archive")]
    Unknown,
    /// The chunks would hold more than the archive's `max_bytes`.
    #[error("the archive would exceed its size limit")]
    TooLarge,
    /// The archive is complete: no more chunks, no second completion.
    #[error("the archive is already complete")]
    Complete,
    /// Completion named chunks that were not uploaded (or chunks beyond the count exist).
    #[error("the archive lacks chunks")]
    Incomplete,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Link tokens, provisioning channels and history archives.
#[async_trait]
pub trait LinkStore: Send + Sync + 'static {
    /// Stores a new link token.
    async fn create_link_token(&self, token: &NewLinkToken) -> Result<(), StoreError>;
    /// In one transaction: checks the token (known for this account, not expired, unused),
    /// adds the device as [`super::AccountStore::add_device`] does, and marks the token used.
    /// Of two concurrent uses of one token exactly one adds a device. Returns its id.
    async fn link_device(&self, link: &LinkDevice<'_>) -> Result<u32, LinkError>;
    /// Records that `node` holds the provisioning channel `address` until `expires_at`.
    async fn open_channel(&self, address: &str, node: &str, expires_at: u64) -> Result<(), StoreError>;
    /// Takes the channel `address` if it is open and not expired: its node, once (the row is
    /// gone after this, so an address takes one message).
    async fn claim_channel(&self, address: &str, now_ms: u64) -> Result<Option<String>, StoreError>;
    /// Forgets the channel `address` (its socket closed).
    async fn close_channel(&self, address: &str) -> Result<(), StoreError>;
    /// Creates an empty, incomplete archive.
    async fn create_archive(&self, archive: &NewArchive) -> Result<(), StoreError>;
    /// Stores (or replaces) chunk `index` of an incomplete, unexpired archive, keeping the
    /// total within its `max_bytes`.
    async fn put_archive_chunk(
        &self,
        key: ArchiveKey,
        index: u32,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<(), ArchiveError>;
    /// Marks the archive complete with chunks `0..chunks`, all of which must be there (and no other).
    async fn complete_archive(&self, key: ArchiveKey, chunks: u32, now_ms: u64) -> Result<(), ArchiveError>;
    /// Chunk `index` of a complete, unexpired archive.
    async fn archive_chunk(&self, key: ArchiveKey, index: u32, now_ms: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes an archive with its chunks. False if there was none.
    async fn delete_archive(&self, key: ArchiveKey) -> Result<bool, StoreError>;
    /// Removes expired channels and archives, and link tokens expired more than
    /// [`LINK_TOKEN_KEEP_MS`] ago. Returns how many rows went.
    async fn expire_links(&self, now_ms: u64) -> Result<u64, StoreError>;
}
