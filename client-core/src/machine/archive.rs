//! The history archive a primary device hands a device it links: what is in it
//! ([`HistoryArchive`]), how it is built from the store ([`build`]), cut into sealed chunks
//! ([`seal`]) and read back ([`ArchiveReader`]), and the store batch that imports it
//! ([`import_batch`]). No I/O here: the driver uploads and downloads the chunks.
//!
//! # Format (version 1)
//! The payload is the JSON encoding of [`HistoryArchive`] (it is never stored or sent in the
//! clear: every chunk is sealed with the archive's [`ArchiveKey`], which travels only inside
//! the sealed provisioning message). It is not compressed (no compression crate is a
//! dependency of the workspace). Chunk 0's plaintext starts with a 45-byte header; the payload
//! follows it and goes on in chunks 1, 2, ...:
//!
//! | offset | length | content |
//! |---|---|---|
//! | 0 | 1 | header version, `0x01` ([`ARCHIVE_HEADER_VERSION`]) |
//! | 1 | 4 | chunk count (u32 big-endian) |
//! | 5 | 8 | payload length in bytes (u64 big-endian) |
//! | 13 | 32 | SHA-256 of the whole payload |
//!
//! Every chunk but the last is exactly the chunk size the writer chose; the chunk index is
//! bound by the cipher, the count, the length and the hash by the header, so a reordered,
//! swapped, changed, missing or cut-off chunk is detected.

use std::collections::BTreeSet;

use hush_keys::provision::{ARCHIVE_CHUNK_OVERHEAD, ArchiveKey, MAX_ARCHIVE_CHUNK_PLAINTEXT};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::error::StoreError;
use crate::store::{Batch, ClientStore, ContactRow, GroupRow, MemberRow, MessageRow};
use crate::types::{ConversationId, GroupState, TrustState};

/// Version of the [`HistoryArchive`] JSON payload.
pub const ARCHIVE_FORMAT_VERSION: u32 = 1;
/// Version of the chunk-0 header.
pub const ARCHIVE_HEADER_VERSION: u8 = 1;
/// Length of the chunk-0 header.
pub const ARCHIVE_HEADER_LEN: usize = 1 + 4 + 8 + 32;
/// Most chunks an archive may have (the server's chunk indexes are below 4096).
pub const MAX_ARCHIVE_CHUNKS: u32 = 4096;
/// Messages per conversation the primary sends by default.
pub const DEFAULT_MESSAGES_PER_CONVERSATION: usize = 500;

/// Why a history archive could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A chunk did not open with the archive key at its index: changed, swapped or from
    /// another archive.
    #[error("history archive chunk {0} does not open: it was changed or belongs elsewhere")]
    BadChunk(u32),
    /// The header is malformed or of an unknown version.
    #[error("the history archive header is malformed: {0}")]
    BadHeader(&'static str),
    /// Fewer or more chunks than the header names, or a length that does not match.
    #[error("the history archive is incomplete: {0}")]
    Truncated(String),
    /// The payload's hash is not the header's.
    #[error("the history archive's content does not match its hash")]
    HashMismatch,
    /// The payload does not decode, or has a version this client does not read.
    #[error("the history archive does not decode: {0}")]
    Payload(String),
    /// Even without messages the archive is larger than the server takes.
    #[error("the history archive needs {needed} bytes, more than the server's {max}")]
    TooLarge {
        /// Sealed bytes needed.
        needed: u64,
        /// The server's limit.
        max: u64,
    },
    /// The chunk size is too small to hold the header.
    #[error("a chunk size of {0} bytes cannot hold a history archive")]
    ChunkSize(usize),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A contact as archived, with the identity key the primary holds for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedContact {
    /// Their account id.
    pub account_id: Uuid,
    /// Their username.
    pub username: String,
    /// Trust in their current identity key on the primary.
    pub trust: TrustState,
    /// Their identity key (libsignal-serialized, hex), if the primary has one.
    #[serde(default, with = "opt_hex")]
    pub identity_key: Option<Vec<u8>>,
}

/// A group as archived: what the new device needs to show it and keep using it. The
/// primary's own sender-key state is not included: the new device makes its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedGroup {
    /// The group id.
    pub id: Uuid,
    /// The 32-byte master key (hex; empty if the primary has none yet).
    #[serde(with = "hex_vec")]
    pub master_key: Vec<u8>,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Encrypted title as the server holds it (hex).
    #[serde(with = "hex_vec")]
    pub title_blob: Vec<u8>,
    /// Encrypted description (hex).
    #[serde(with = "hex_vec")]
    pub description_blob: Vec<u8>,
    /// Roster as the primary knows it.
    pub members: Vec<MemberRow>,
    /// Whether members may add others.
    pub members_can_add: bool,
    /// Roster version.
    pub roster_version: u64,
    /// Epoch.
    pub epoch: u64,
    /// This account's standing.
    pub state: GroupState,
    /// Who added this account.
    pub added_by: Option<Uuid>,
    /// The invite was declined.
    pub declined: bool,
}

/// One conversation: its Lamport clock and its last messages, in display order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedConversation {
    /// The conversation.
    pub id: ConversationId,
    /// Its Lamport clock on the primary.
    pub clock: u64,
    /// Its last messages, oldest first (`local_seq` is not meaningful and is reassigned).
    pub messages: Vec<MessageRow>,
}

/// What the primary hands a new device: the payload of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryArchive {
    /// [`ARCHIVE_FORMAT_VERSION`].
    pub version: u32,
    /// The account it belongs to (the new device refuses another account's archive).
    pub account: Uuid,
    /// When it was made (ms).
    pub created_at: u64,
    /// Contacts, by username.
    pub contacts: Vec<ArchivedContact>,
    /// Groups, by id.
    pub groups: Vec<ArchivedGroup>,
    /// Conversations, one-to-one and groups.
    pub conversations: Vec<ArchivedConversation>,
}

impl HistoryArchive {
    /// How many messages it holds.
    pub fn message_count(&self) -> usize {
        self.conversations.iter().map(|c| c.messages.len()).sum()
    }

    /// Drops messages so that each conversation keeps at most its newest `keep`.
    pub fn keep_newest(&mut self, keep: usize) {
        for c in &mut self.conversations {
            let drop = c.messages.len().saturating_sub(keep);
            c.messages.drain(..drop);
        }
    }
}

/// Builds the archive of `account` from `store`: every contact (with identity key and trust),
/// every group, and the last `per_conversation` messages of every conversation.
pub async fn build(
    store: &dyn ClientStore,
    account: Uuid,
    per_conversation: usize,
    now: u64,
) -> Result<HistoryArchive, ArchiveError> {
    let mut contacts = Vec::new();
    let mut conversations = Vec::new();
    for c in store.contacts().await? {
        let identity_key = store.identity(&hush_keys::aci_string(c.account_id)).await?;
        let id = ConversationId::Direct(c.account_id);
        conversations.push(conversation(store, id, per_conversation).await?);
        contacts.push(ArchivedContact { account_id: c.account_id, username: c.username, trust: c.trust, identity_key });
    }
    let mut groups = Vec::new();
    for g in store.groups().await? {
        conversations.push(conversation(store, ConversationId::Group(g.id), per_conversation).await?);
        groups.push(ArchivedGroup {
            id: g.id,
            master_key: g.master_key,
            title: g.title,
            description: g.description,
            title_blob: g.title_blob,
            description_blob: g.description_blob,
            members: g.members,
            members_can_add: g.members_can_add,
            roster_version: g.roster_version,
            epoch: g.epoch,
            state: g.state,
            added_by: g.added_by,
            declined: g.declined,
        });
    }
    conversations.retain(|c| !c.messages.is_empty() || c.clock > 0);
    Ok(HistoryArchive { version: ARCHIVE_FORMAT_VERSION, account, created_at: now, contacts, groups, conversations })
}

async fn conversation(
    store: &dyn ClientStore,
    id: ConversationId,
    limit: usize,
) -> Result<ArchivedConversation, ArchiveError> {
    let messages = if limit == 0 { Vec::new() } else { store.messages(id, limit).await? };
    Ok(ArchivedConversation { id, clock: store.clock(id).await?, messages })
}

/// The sealed chunks of `archive`, each holding at most `chunk_plaintext` bytes of plaintext
/// (at most [`MAX_ARCHIVE_CHUNK_PLAINTEXT`]).
pub fn seal<R: rand::CryptoRng + ?Sized>(
    archive: &HistoryArchive,
    key: &ArchiveKey,
    chunk_plaintext: usize,
    rng: &mut R,
) -> Result<Vec<Vec<u8>>, ArchiveError> {
    let chunk = chunk_plaintext.min(MAX_ARCHIVE_CHUNK_PLAINTEXT);
    if chunk <= ARCHIVE_HEADER_LEN {
        return Err(ArchiveError::ChunkSize(chunk_plaintext));
    }
    let payload = serde_json::to_vec(archive).map_err(|e| ArchiveError::Payload(e.to_string()))?;
    let total = ARCHIVE_HEADER_LEN + payload.len();
    let count = total.div_ceil(chunk);
    let count32 = u32::try_from(count).ok().filter(|c| *c <= MAX_ARCHIVE_CHUNKS).ok_or(ArchiveError::TooLarge {
        needed: sealed_len(total, chunk),
        max: u64::from(MAX_ARCHIVE_CHUNKS) * chunk as u64,
    })?;
    let mut plain = Vec::with_capacity(total);
    plain.push(ARCHIVE_HEADER_VERSION);
    plain.extend_from_slice(&count32.to_be_bytes());
    plain.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    plain.extend_from_slice(&Sha256::digest(&payload));
    plain.extend_from_slice(&payload);
    plain
        .chunks(chunk)
        .zip(0u32..)
        .map(|(part, index)| key.seal_chunk(index, part, rng).map_err(|_| ArchiveError::ChunkSize(chunk_plaintext)))
        .collect()
}

/// Sealed bytes of a `total`-byte plaintext cut into `chunk`-byte chunks.
pub fn sealed_len(total: usize, chunk: usize) -> u64 {
    (total + total.div_ceil(chunk) * ARCHIVE_CHUNK_OVERHEAD) as u64
}

/// Seals `archive` so that all its chunks together take at most `max_bytes`, dropping the
/// oldest messages of every conversation until it fits. Returns the chunks and how many
/// messages they hold.
pub fn seal_within<R: rand::CryptoRng + ?Sized>(
    mut archive: HistoryArchive,
    key: &ArchiveKey,
    chunk_plaintext: usize,
    max_bytes: u64,
    rng: &mut R,
) -> Result<(Vec<Vec<u8>>, usize), ArchiveError> {
    let mut keep = archive.conversations.iter().map(|c| c.messages.len()).max().unwrap_or(0);
    loop {
        archive.keep_newest(keep);
        let needed = match seal(&archive, key, chunk_plaintext, rng) {
            Ok(chunks) => {
                let bytes: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                if bytes <= max_bytes {
                    return Ok((chunks, archive.message_count()));
                }
                bytes
            }
            Err(ArchiveError::TooLarge { needed, .. }) => needed,
            Err(e) => return Err(e),
        };
        if keep == 0 {
            return Err(ArchiveError::TooLarge { needed, max: max_bytes });
        }
        keep = keep * 3 / 4;
    }
}

/// Reads an archive chunk by chunk: chunk 0 first ([`Self::new`]), then the others in order
/// ([`Self::push`]), then [`Self::finish`] checks the count, length and hash and decodes.
#[derive(Debug)]
pub struct ArchiveReader {
    key: ArchiveKey,
    chunks: u32,
    len: u64,
    hash: [u8; 32],
    next: u32,
    payload: Vec<u8>,
}

impl ArchiveReader {
    /// Opens chunk 0 and reads the header.
    pub fn new(key: ArchiveKey, sealed: &[u8]) -> Result<Self, ArchiveError> {
        let plain = key.open_chunk(0, sealed).map_err(|_| ArchiveError::BadChunk(0))?;
        if plain.len() < ARCHIVE_HEADER_LEN {
            return Err(ArchiveError::BadHeader("chunk 0 is shorter than the header"));
        }
        if plain[0] != ARCHIVE_HEADER_VERSION {
            return Err(ArchiveError::BadHeader("unknown header version"));
        }
        let chunks = u32::from_be_bytes(plain[1..5].try_into().map_err(|_| ArchiveError::BadHeader("count"))?);
        let len = u64::from_be_bytes(plain[5..13].try_into().map_err(|_| ArchiveError::BadHeader("length"))?);
        let hash: [u8; 32] = plain[13..45].try_into().map_err(|_| ArchiveError::BadHeader("hash"))?;
        if chunks == 0 || chunks > MAX_ARCHIVE_CHUNKS {
            return Err(ArchiveError::BadHeader("chunk count out of range"));
        }
        if len > u64::from(chunks) * MAX_ARCHIVE_CHUNK_PLAINTEXT as u64 {
            return Err(ArchiveError::BadHeader("length larger than the chunks can hold"));
        }
        let payload = plain[ARCHIVE_HEADER_LEN..].to_vec();
        Ok(Self { key, chunks, len, hash, next: 1, payload })
    }

    /// How many chunks the header names.
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// The index of the next chunk to [`Self::push`], or `None` when all are in.
    pub fn next_index(&self) -> Option<u32> {
        (self.next < self.chunks).then_some(self.next)
    }

    /// Opens the next chunk.
    pub fn push(&mut self, sealed: &[u8]) -> Result<(), ArchiveError> {
        if self.next >= self.chunks {
            return Err(ArchiveError::Truncated(format!("more than the {} chunks the header names", self.chunks)));
        }
        let plain = self.key.open_chunk(self.next, sealed).map_err(|_| ArchiveError::BadChunk(self.next))?;
        self.payload.extend_from_slice(&plain);
        if self.payload.len() as u64 > self.len {
            return Err(ArchiveError::Truncated("longer than the header says".into()));
        }
        self.next += 1;
        Ok(())
    }

    /// Checks that every chunk came and the hash matches, and decodes the payload.
    pub fn finish(self) -> Result<HistoryArchive, ArchiveError> {
        if self.next != self.chunks {
            return Err(ArchiveError::Truncated(format!("{} of {} chunks", self.next, self.chunks)));
        }
        if self.payload.len() as u64 != self.len {
            return Err(ArchiveError::Truncated(format!("{} of {} bytes", self.payload.len(), self.len)));
        }
        if Sha256::digest(&self.payload).as_slice() != self.hash {
            return Err(ArchiveError::HashMismatch);
        }
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version = serde_json::from_slice(&self.payload).map_err(|e| ArchiveError::Payload(e.to_string()))?;
        if v.version != ARCHIVE_FORMAT_VERSION {
            return Err(ArchiveError::Payload(format!(
                "version {} (this client reads {ARCHIVE_FORMAT_VERSION})",
                v.version
            )));
        }
        serde_json::from_slice(&self.payload).map_err(|e| ArchiveError::Payload(e.to_string()))
    }
}

/// The store changes that import `archive` on a new device: contacts with their identity
/// keys and trust, groups (with a fresh distribution id of this device and no sender key, so
/// the first send makes and distributes one), messages in the primary's display order, and
/// the conversations' Lamport clocks. Fails if the archive is of another account.
pub fn import_batch(archive: &HistoryArchive, account: Uuid, rng: &mut impl rand::Rng) -> Result<Batch, ArchiveError> {
    if archive.account != account {
        return Err(ArchiveError::Payload("it belongs to another account".into()));
    }
    let mut batch = Batch::default();
    for c in &archive.contacts {
        if let Some(key) = &c.identity_key {
            batch.identities.insert(hush_keys::aci_string(c.account_id), key.clone());
        }
        batch.contacts.push(ContactRow { account_id: c.account_id, username: c.username.clone(), trust: c.trust });
    }
    for g in &archive.groups {
        let row = GroupRow {
            id: g.id,
            master_key: g.master_key.clone(),
            title: g.title.clone(),
            description: g.description.clone(),
            title_blob: g.title_blob.clone(),
            description_blob: g.description_blob.clone(),
            members: g.members.clone(),
            members_can_add: g.members_can_add,
            roster_version: g.roster_version,
            epoch: g.epoch,
            state: g.state,
            added_by: g.added_by,
            declined: g.declined,
            distribution_id: super::groups::random_uuid(rng),
            key_epoch: None,
            distributed: BTreeSet::new(),
        };
        batch.groups.insert(g.id, Some(row));
    }
    for c in &archive.conversations {
        if c.clock > 0 {
            batch.clocks.push((c.id, c.clock));
        }
        for m in &c.messages {
            if m.conversation == c.id {
                batch.messages.push(MessageRow { local_seq: 0, ..m.clone() });
            }
        }
    }
    Ok(batch)
}

mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?.map(|h| hex::decode(h).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
#[path = "tests/archive.rs"]
mod tests;
