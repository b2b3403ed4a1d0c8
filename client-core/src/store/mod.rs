//! The local store: a trait ([`ClientStore`]) with a SQLite ([`SqliteStore`]) and an in-memory
//! ([`MemoryStore`]) implementation, both run through one conformance suite.
//!
//! Reads are fine-grained; every write goes through [`ClientStore::commit`], which applies one
//! [`Batch`] atomically. The protocol machine collects everything one input changes (ratchet
//! state, identities, used prekeys, the stored message, the processed envelope, the outbox) into
//! one batch, so a crash leaves either all of it or none of it.
//!
//! libsignal records are stored as the bytes libsignal serializes them to; the adapter that
//! implements libsignal's store traits is [`crate::signal_store::SignalStore`].

mod memory;
pub mod search;
mod sqlite;

#[cfg(test)]
#[macro_use]
mod conformance;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use memory::MemoryStore;
pub use search::{SearchQuery, SearchRow};
pub use sqlite::SqliteStore;

use crate::error::StoreError;
use crate::types::{
    ConversationId, GroupRole, GroupState, MessageDirection, MessageId, MessageKind, MessageStatus, TrustState,
};

/// A libsignal address: account name (ACI string) and device id.
pub type Address = (String, u32);

/// Everything about this device's own account that is not a libsignal record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAccount {
    /// Username.
    pub username: String,
    /// Account id (ACI).
    pub account_id: Uuid,
    /// This device's id.
    pub device_id: u32,
    /// This device's registration id (14 bits).
    pub registration_id: u32,
    /// The account identity key pair, libsignal-serialized.
    pub identity_key_pair: Vec<u8>,
    /// This device's ed25519 auth key seed.
    pub auth_key: Vec<u8>,
    /// The server's trust root (33 bytes), pinned at registration.
    pub trust_root: Vec<u8>,
    /// Server base URL.
    pub server_url: String,
    /// Next one-time EC prekey id to use.
    pub next_prekey_id: u32,
    /// Next Kyber prekey id to use.
    pub next_kyber_id: u32,
}

impl std::fmt::Debug for LocalAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAccount")
            .field("username", &self.username)
            .field("account_id", &self.account_id)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// A contact: someone this account has talked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRow {
    /// Their account id.
    pub account_id: Uuid,
    /// Their username.
    pub username: String,
    /// Trust in their current identity key.
    pub trust: TrustState,
}

/// A stored message (incoming or outgoing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRow {
    /// The sender's message id (for a group's system entry: derived from the group and seq).
    pub id: MessageId,
    /// The conversation (the other party, or the group).
    pub conversation: ConversationId,
    /// The author's account.
    pub sender: Uuid,
    /// The author's device.
    pub sender_device: u32,
    /// Incoming or outgoing.
    pub direction: MessageDirection,
    /// Text.
    pub body: String,
    /// Author's clock, ms.
    pub sent_at: u64,
    /// When stored here, ms.
    pub received_at: u64,
    /// Lamport clock (one-to-one).
    pub lamport: u64,
    /// The group seq (groups; 0 until an outgoing message is sent).
    pub group_seq: u64,
    /// Text or system entry.
    pub kind: MessageKind,
    /// Status.
    pub status: MessageStatus,
    /// Position in this device's store, assigned on insert (0 before): increases with every
    /// new message, so an app can resume after the last one it handled.
    pub local_seq: u64,
}

/// What an outbox entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    /// A text message (its [`MessageRow`] is in the history).
    Text,
    /// A delivery or read receipt.
    Receipt,
    /// A text sent again because a recipient device could not decrypt it (no new
    /// [`MessageRow`]; never resent a second time).
    Resend,
    /// A sealed `DecryptionErrorMessage` asking the sender of an undecryptable envelope to
    /// send it again (`content` is the serialized message).
    RetryRequest,
    /// A text to a group (its [`MessageRow`] is in the history): one `GroupSendRequest`.
    GroupText,
    /// This device's sender key for a group, to every device of the accounts in `content`
    /// (16-byte account ids, concatenated): sent after creating a group or adding members.
    GroupDistribute,
    /// A `SyncMessage` (read or trust decision) for this account's other devices only; its
    /// conversation is the own account.
    Sync,
}

impl OutboxKind {
    /// A text the user wrote (one-to-one or to a group): it has a history entry and events.
    pub fn is_text(self) -> bool {
        matches!(self, OutboxKind::Text | OutboxKind::GroupText)
    }
}

/// One entry of the persistent outbox, sent in `seq` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// Position in the outbox (assigned by the store, increasing).
    pub seq: u64,
    /// The message id (for receipts: a fresh id).
    pub message_id: MessageId,
    /// The recipient account, or the group.
    pub conversation: ConversationId,
    /// What it is.
    pub kind: OutboxKind,
    /// The unpadded encoded `Content` to encrypt for each device.
    pub content: Vec<u8>,
    /// Send attempts so far.
    pub attempts: u32,
    /// Not before this time (ms).
    pub not_before: u64,
    /// `Some(reason)` once failed for good; failed entries are skipped until retried.
    pub failed: Option<String>,
    /// Why the last attempt did not go through (while still pending), for people.
    pub last_error: Option<String>,
}

/// A new outbox entry ([`OutboxRow`] without `seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutbox {
    /// The message id.
    pub message_id: MessageId,
    /// The recipient account, or the group.
    pub conversation: ConversationId,
    /// What it is.
    pub kind: OutboxKind,
    /// Encoded `Content`.
    pub content: Vec<u8>,
}

/// How far below the newest processed mailbox seq the store still remembers which mailbox
/// seqs were processed (see [`ClientStore::envelope_processed`]); older ones are forgotten as
/// newer ones are recorded. Mailbox seqs count up by one per device, and the server delivers
/// again only envelopes that are not acked, at most its in-flight window (256) of them, so a
/// redelivered envelope is always far inside the window.
pub const PROCESSED_ENVELOPE_WINDOW: u64 = 10_000;

/// How far below the newest processed group seq of a group the store still remembers which
/// group seqs were processed (see [`ClientStore::group_seq_processed`]); older ones are
/// forgotten as newer ones are recorded.
///
/// A group envelope comes twice only close to where it was first read: a stream envelope
/// whose ack was lost comes again from the server's cursor, and around a switch between the
/// mailbox and the stream the two paths overlap by a few messages. A duplicate older than the
/// window is still caught, later and at more cost, by its message id (texts), its system
/// entry id (roster changes) or libsignal's duplicate detection.
pub const PROCESSED_GROUP_SEQ_WINDOW: u64 = 10_000;

/// How many sent messages the resend log keeps (the oldest go first).
pub const SENT_LOG_CAPACITY: usize = 500;

/// One entry of the resend log: what was encrypted for one device, kept for a while after the
/// send so that it can be sent again if that device asks (see `machine::retry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentLogRow {
    /// The recipient device.
    pub address: Address,
    /// The message's tag, unique per sender device (the `timestamp` a retry request names).
    pub timestamp: u64,
    /// The account the outbox entry was addressed to (the conversation peer).
    pub peer: Uuid,
    /// The message id.
    pub message_id: MessageId,
    /// The unpadded encoded `Content` that was encrypted for this device.
    pub content: Vec<u8>,
    /// When it was sent (ms).
    pub sent_at: u64,
}

/// A stored Kyber prekey with the flag libsignal does not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KyberRow {
    /// libsignal-serialized `KyberPreKeyRecord`.
    pub record: Vec<u8>,
    /// The last-resort key is kept after use; one-time keys are deleted.
    pub last_resort: bool,
}

/// Bytes in stored JSON records, as lowercase hex.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A member of a group as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    /// The member account.
    pub account: Uuid,
    /// Its role.
    pub role: GroupRole,
}

/// A group as this device knows it (stored as one record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRow {
    /// The group id (the server's).
    pub id: Uuid,
    /// The 32-byte master key that encrypts title and description (empty until it arrives).
    #[serde(with = "hex_bytes")]
    pub master_key: Vec<u8>,
    /// Decrypted title and description (empty while the key is unknown).
    pub title: String,
    /// Description.
    pub description: String,
    /// The server's encrypted title and description, kept to decrypt once the key arrives.
    #[serde(with = "hex_bytes")]
    pub title_blob: Vec<u8>,
    /// Encrypted description.
    #[serde(with = "hex_bytes")]
    pub description_blob: Vec<u8>,
    /// Roster, owners first.
    pub members: Vec<MemberRow>,
    /// Whether members may add others.
    pub members_can_add: bool,
    /// Roster version and epoch as last learned.
    pub roster_version: u64,
    /// The epoch.
    pub epoch: u64,
    /// This account's standing.
    pub state: GroupState,
    /// Who added this account (for an invite).
    pub added_by: Option<Uuid>,
    /// The invite was declined: what arrived meanwhile stays hidden.
    #[serde(default)]
    pub declined: bool,
    /// This device's distribution id in the group.
    pub distribution_id: Uuid,
    /// The epoch this device's current sender key was made under (`None`: no key yet).
    pub key_epoch: Option<u64>,
    /// Member devices (account, device) that hold this device's current sender key.
    pub distributed: std::collections::BTreeSet<(Uuid, u32)>,
}

impl GroupRow {
    /// The role of `account`, if a member.
    pub fn role_of(&self, account: Uuid) -> Option<GroupRole> {
        self.members.iter().find(|m| m.account == account).map(|m| m.role)
    }
}

/// A distribution id bound to the member device that first distributed it in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributionBinding {
    /// The group.
    pub group: Uuid,
    /// The distribution id (from the SKDM).
    pub distribution: Uuid,
    /// The sender account.
    pub account: Uuid,
    /// The sender device.
    pub device: u32,
}

/// A group message that could not be decrypted yet (its distribution has not arrived); it
/// was acked and is tried again when a distribution arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRow {
    /// The group.
    pub group: Uuid,
    /// Its group seq (unique per group).
    pub group_seq: u64,
    /// When the server stored it.
    pub server_timestamp: u64,
    /// The SenderKeyMessage.
    pub content: Vec<u8>,
}

/// All changes of one step, applied atomically by [`ClientStore::commit`].
/// `None` values delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Own account record.
    pub account: Option<LocalAccount>,
    /// Session records by address.
    pub sessions: BTreeMap<Address, Option<Vec<u8>>>,
    /// Identity keys by account name.
    pub identities: BTreeMap<String, Vec<u8>>,
    /// One-time EC prekeys.
    pub pre_keys: BTreeMap<u32, Option<Vec<u8>>>,
    /// Signed EC prekeys (`None` deletes one: rotated out and past its grace period).
    pub signed_pre_keys: BTreeMap<u32, Option<Vec<u8>>>,
    /// Kyber prekeys.
    pub kyber_pre_keys: BTreeMap<u32, Option<KyberRow>>,
    /// Uses of the last-resort Kyber key: (kyber id, signed prekey id, base key).
    pub kyber_used: Vec<(u32, u32, Vec<u8>)>,
    /// Sender-key records by (sender address, distribution id); `None` deletes (rotation).
    pub sender_keys: BTreeMap<(Address, Uuid), Option<Vec<u8>>>,
    /// Contacts to insert or replace.
    pub contacts: Vec<ContactRow>,
    /// Messages to insert (an existing id is left as it is).
    pub messages: Vec<MessageRow>,
    /// Messages to delete from the history (and the search index), by id; applied after
    /// `messages`. A deleted message's `local_seq` is never given to another message.
    pub messages_remove: Vec<MessageId>,
    /// Status changes of stored messages.
    pub message_status: Vec<(MessageId, MessageStatus)>,
    /// Group seqs of sent group messages (from `SendOk.group_seq`).
    pub message_group_seq: Vec<(MessageId, u64)>,
    /// Envelope seqs now fully processed; the store then forgets those more than
    /// [`PROCESSED_ENVELOPE_WINDOW`] below the newest.
    pub processed_envelopes: Vec<u64>,
    /// Group envelopes now fully processed, by (group, group seq), whichever way they came
    /// (group stream or mailbox); the store then forgets those more than
    /// [`PROCESSED_GROUP_SEQ_WINDOW`] below the newest of their group.
    pub processed_group_seqs: Vec<(Uuid, u64)>,
    /// Conversation Lamport clocks to raise (`max(old, new)`).
    pub clocks: Vec<(ConversationId, u64)>,
    /// Outbox entries to append.
    pub outbox_add: Vec<NewOutbox>,
    /// Outbox entries to replace (by `seq`).
    pub outbox_update: Vec<OutboxRow>,
    /// Outbox entries to remove (by `seq`).
    pub outbox_remove: Vec<u64>,
    /// Small named values (sender certificate...).
    pub values: BTreeMap<String, Option<Vec<u8>>>,
    /// Resend-log entries to add (replacing one with the same address and timestamp); the
    /// store then keeps only the newest [`SENT_LOG_CAPACITY`].
    pub sent_log: Vec<SentLogRow>,
    /// Resend-log entries to remove, by (address, timestamp).
    pub sent_log_remove: Vec<(Address, u64)>,
    /// Groups to insert or replace (`None` deletes).
    pub groups: BTreeMap<Uuid, Option<GroupRow>>,
    /// Distribution bindings to add (an existing binding is kept).
    pub distributions: Vec<DistributionBinding>,
    /// Group messages to hold (an existing (group, seq) is kept).
    pub held_add: Vec<HeldRow>,
    /// Held group messages to drop, by (group, group seq).
    pub held_remove: Vec<(Uuid, u64)>,
}

impl Batch {
    /// True if the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Batch::default()
    }

    /// Moves every change of `other` into `self` (later changes win).
    pub fn merge(&mut self, other: Batch) {
        if other.account.is_some() {
            self.account = other.account;
        }
        self.sessions.extend(other.sessions);
        self.identities.extend(other.identities);
        self.pre_keys.extend(other.pre_keys);
        self.signed_pre_keys.extend(other.signed_pre_keys);
        self.kyber_pre_keys.extend(other.kyber_pre_keys);
        self.kyber_used.extend(other.kyber_used);
        self.sender_keys.extend(other.sender_keys);
        self.contacts.extend(other.contacts);
        self.messages.extend(other.messages);
        self.messages_remove.extend(other.messages_remove);
        self.message_status.extend(other.message_status);
        self.message_group_seq.extend(other.message_group_seq);
        self.processed_envelopes.extend(other.processed_envelopes);
        self.processed_group_seqs.extend(other.processed_group_seqs);
        self.clocks.extend(other.clocks);
        self.outbox_add.extend(other.outbox_add);
        self.outbox_update.extend(other.outbox_update);
        self.outbox_remove.extend(other.outbox_remove);
        self.values.extend(other.values);
        self.sent_log.extend(other.sent_log);
        self.sent_log_remove.extend(other.sent_log_remove);
        self.groups.extend(other.groups);
        self.distributions.extend(other.distributions);
        self.held_add.extend(other.held_add);
        self.held_remove.extend(other.held_remove);
    }
}

/// The local store of one device. Implementations must make [`ClientStore::commit`] atomic
/// and durable before it returns.
#[async_trait]
pub trait ClientStore: Send + Sync + 'static {
    /// Applies every change of `batch` in one transaction.
    async fn commit(&self, batch: Batch) -> Result<(), StoreError>;

    /// The own account, if registered.
    async fn account(&self) -> Result<Option<LocalAccount>, StoreError>;
    /// A session record.
    async fn session(&self, address: &Address) -> Result<Option<Vec<u8>>, StoreError>;
    /// Device ids that have a session under account name `name`.
    async fn session_devices(&self, name: &str) -> Result<Vec<u32>, StoreError>;
    /// The identity key stored for account name `name`.
    async fn identity(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A one-time EC prekey.
    async fn pre_key(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError>;
    /// A signed EC prekey.
    async fn signed_pre_key(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError>;
    /// A Kyber prekey.
    async fn kyber_pre_key(&self, id: u32) -> Result<Option<KyberRow>, StoreError>;
    /// Whether this last-resort use was seen before.
    async fn kyber_used(&self, kyber_id: u32, signed_id: u32, base_key: &[u8]) -> Result<bool, StoreError>;
    /// A sender-key record.
    async fn sender_key(&self, sender: &Address, distribution: Uuid) -> Result<Option<Vec<u8>>, StoreError>;

    /// A contact by account id.
    async fn contact(&self, account: Uuid) -> Result<Option<ContactRow>, StoreError>;
    /// A contact by username (lowercase).
    async fn contact_by_username(&self, username: &str) -> Result<Option<ContactRow>, StoreError>;
    /// Every contact, by username.
    async fn contacts(&self) -> Result<Vec<ContactRow>, StoreError>;
    /// A message by id.
    async fn message(&self, id: MessageId) -> Result<Option<MessageRow>, StoreError>;
    /// The last `limit` messages of a conversation, in display order ([`display_order`]).
    async fn messages(&self, conversation: ConversationId, limit: usize) -> Result<Vec<MessageRow>, StoreError>;
    /// Up to `limit` messages (any conversation) with `local_seq > after`, in `local_seq` order.
    async fn messages_after(&self, after: u64, limit: usize) -> Result<Vec<MessageRow>, StoreError>;
    /// Whether envelope `seq` was processed, as far as [`PROCESSED_ENVELOPE_WINDOW`] remembers.
    async fn envelope_processed(&self, seq: u64) -> Result<bool, StoreError>;
    /// Whether the group envelope (`group`, `group_seq`) was processed (by stream or by
    /// mailbox), as far as [`PROCESSED_GROUP_SEQ_WINDOW`] remembers.
    async fn group_seq_processed(&self, group: Uuid, group_seq: u64) -> Result<bool, StoreError>;
    /// The Lamport clock of a conversation (0 if none).
    async fn clock(&self, conversation: ConversationId) -> Result<u64, StoreError>;
    /// The first outbox entry that has not failed, in `seq` order.
    async fn outbox_head(&self) -> Result<Option<OutboxRow>, StoreError>;
    /// The first `limit` outbox entries that have not failed, in `seq` order.
    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;
    /// Up to `limit` outbox entries, pending and failed, in `seq` order.
    async fn outbox_all(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;
    /// The outbox entry for a message id.
    async fn outbox_by_message(&self, id: MessageId) -> Result<Option<OutboxRow>, StoreError>;
    /// (pending, failed) outbox counts.
    async fn outbox_counts(&self) -> Result<(u64, u64), StoreError>;
    /// A named value.
    async fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The resend-log entry for a message sent to `address` with `timestamp`.
    async fn sent_log(&self, address: &Address, timestamp: u64) -> Result<Option<SentLogRow>, StoreError>;
    /// A group.
    async fn group(&self, id: Uuid) -> Result<Option<GroupRow>, StoreError>;
    /// Every group, by id.
    async fn groups(&self) -> Result<Vec<GroupRow>, StoreError>;
    /// The sender (account, device) a distribution id is bound to in a group.
    async fn distribution(&self, group: Uuid, distribution: Uuid) -> Result<Option<(Uuid, u32)>, StoreError>;
    /// The held messages of a group, in group-seq order.
    async fn held(&self, group: Uuid) -> Result<Vec<HeldRow>, StoreError>;
    /// Text messages whose body contains `query.text` (see [`search`] for the rules), best
    /// first: ranked by BM25 (more occurrences in a shorter body first), then newest
    /// (`sent_at`, then `local_seq`) first; queries shorter than
    /// [`search::MIN_INDEXED_CHARS`] characters are not ranked, only newest first.
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchRow>, StoreError>;
}

/// Display order of messages. One-to-one: Lamport clock, then author, then device, then id.
/// Groups: the server's group seq (the same on every device), outgoing messages not sent yet
/// last, in the order they were written.
pub fn display_order(a: &MessageRow, b: &MessageRow) -> std::cmp::Ordering {
    if let (ConversationId::Group(_), ConversationId::Group(_)) = (a.conversation, b.conversation) {
        return (a.group_seq == 0, a.group_seq, a.local_seq).cmp(&(b.group_seq == 0, b.group_seq, b.local_seq));
    }
    (a.lamport, a.sender, a.sender_device, a.id).cmp(&(b.lamport, b.sender, b.sender_device, b.id))
}

/// Whether a status change is an upgrade (statuses never go backwards).
pub(crate) fn status_rank(s: &MessageStatus) -> u8 {
    match s {
        MessageStatus::Failed(_) => 0,
        MessageStatus::Pending => 1,
        MessageStatus::Sent | MessageStatus::Received => 2,
        MessageStatus::Delivered => 3,
        MessageStatus::Read => 4,
    }
}

/// The status a stored message should have after `new` is applied.
pub(crate) fn next_status(old: &MessageStatus, new: &MessageStatus) -> MessageStatus {
    match (old, new) {
        // Retry and failure move an outgoing message in either direction while it is unsent.
        (MessageStatus::Failed(_) | MessageStatus::Pending, MessageStatus::Pending | MessageStatus::Failed(_)) => {
            new.clone()
        }
        _ if status_rank(new) > status_rank(old) => new.clone(),
        _ => old.clone(),
    }
}
