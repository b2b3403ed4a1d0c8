//! The server's durable state behind five traits split by concern — [`AccountStore`]
//! (accounts, devices, deployment facts), [`KeyStore`] (prekeys, bundles),
//! [`MailboxStore`] (sends, fetch, ack, expiry, counts), [`GroupStore`] (rosters) and
//! [`PushStore`] (push targets) —
//! and their union [`Store`], so that SQLite (the embedded default) and Postgres (for
//! several nodes) are interchangeable and pass the same conformance suite
//! (`server/tests/it/store.rs`).
//!
//! What is stored is ciphertext and the minimum of metadata: no envelope row
//! names its sender, and a group message is stored once, referenced from every
//! member device's mailbox.

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

pub mod batch;
mod group;
mod group_plan;
mod link;
mod plan;
pub mod postgres;
mod push;
pub mod sqlite;

pub use group::{
    ChangeCommitted, DistributeItem, GroupChange, GroupError, GroupMemberRecord, GroupOp, GroupRecord, GroupSendItem,
    GroupSettings, GroupSummaryRecord, NewGroup, Write,
};
pub use hush_wire::api::GroupRole;
pub use link::{
    ArchiveError, ArchiveKey, LINK_TOKEN_KEEP_MS, LinkDevice, LinkError, LinkStore, NewArchive, NewLinkToken,
};
pub use push::{PushRecord, PushStore, PushTarget};

/// A device, named by its account and its device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey {
    /// The account (ACI).
    pub account: Uuid,
    /// The device id, 1..=127.
    pub device_id: u32,
}

/// A device's mailbox, as the store names it internally (stable for the life of the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MailboxId(pub i64);

/// A signed prekey (EC or Kyber) as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedKey {
    /// Client-chosen key id.
    pub id: u32,
    /// Serialized public key.
    pub public_key: Vec<u8>,
    /// Signature by the identity key.
    pub signature: Vec<u8>,
}

/// A one-time EC prekey as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeKey {
    /// Client-chosen key id.
    pub id: u32,
    /// Serialized public key.
    pub public_key: Vec<u8>,
}

/// A device to create (its keys have been validated by the caller).
#[derive(Debug, Clone)]
pub struct NewDeviceRecord {
    /// libsignal registration id.
    pub registration_id: u32,
    /// ed25519 auth public key.
    pub auth_key: [u8; 32],
    /// Display name.
    pub name: Option<String>,
    /// Signed EC prekey.
    pub signed_prekey: SignedKey,
    /// Last-resort Kyber prekey.
    pub kyber_last_resort: SignedKey,
    /// One-time EC prekeys.
    pub one_time_prekeys: Vec<OneTimeKey>,
    /// One-time Kyber prekeys.
    pub one_time_kyber_prekeys: Vec<SignedKey>,
    /// Creation time, ms since the epoch.
    pub created_at: u64,
}

/// An account to create with its primary device (device id 1).
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The account id.
    pub id: Uuid,
    /// Normalized (lowercase) username.
    pub username: String,
    /// Identity public key.
    pub identity_key: Vec<u8>,
    /// The primary device.
    pub device: NewDeviceRecord,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account id.
    pub id: Uuid,
    /// Its username.
    pub username: String,
    /// Its identity public key.
    pub identity_key: Vec<u8>,
}

/// A device of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Account and device id.
    pub key: DeviceKey,
    /// Its mailbox.
    pub mailbox: MailboxId,
    /// libsignal registration id.
    pub registration_id: u32,
    /// ed25519 auth public key.
    pub auth_key: [u8; 32],
    /// Display name.
    pub name: Option<String>,
    /// Creation time, ms.
    pub created_at: u64,
    /// Last connection, ms (day precision), if any.
    pub last_seen: Option<u64>,
}

/// Prekeys to add or replace for one device.
#[derive(Debug, Clone, Default)]
pub struct PreKeyUploadRecord {
    /// Replaces the signed EC prekey.
    pub signed_prekey: Option<SignedKey>,
    /// Replaces the last-resort Kyber prekey.
    pub kyber_last_resort: Option<SignedKey>,
    /// One-time EC prekeys to add (an existing id is replaced).
    pub one_time_prekeys: Vec<OneTimeKey>,
    /// One-time Kyber prekeys to add (an existing id is replaced).
    pub one_time_kyber_prekeys: Vec<SignedKey>,
}

/// One-time prekeys left for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreKeyCounts {
    /// One-time EC prekeys.
    pub ec: u32,
    /// One-time Kyber prekeys.
    pub kyber: u32,
}

/// Keys handed out to start a session with one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// Device id.
    pub device_id: u32,
    /// Registration id.
    pub registration_id: u32,
    /// Signed EC prekey.
    pub signed_prekey: SignedKey,
    /// One-time Kyber prekey, or the last-resort one.
    pub kyber_prekey: SignedKey,
    /// Whether `kyber_prekey` is the last-resort key.
    pub kyber_last_resort: bool,
    /// A one-time EC prekey, if one was left.
    pub prekey: Option<OneTimeKey>,
}

/// One ciphertext for one device.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Target device id.
    pub device_id: u32,
    /// Registration id the sender believes the device has.
    pub registration_id: u32,
    /// Envelope kind (wire `EnvelopeKind`).
    pub kind: i32,
    /// Ciphertext.
    pub content: Bytes,
}

/// The ciphertexts for all devices of one account.
#[derive(Debug, Clone)]
pub struct RecipientBatch {
    /// Target account.
    pub account: Uuid,
    /// One message per device.
    pub messages: Vec<OutgoingMessage>,
}

/// One send request, ready to commit.
#[derive(Debug, Clone)]
pub struct SendItem {
    /// The sending device: for its own account, the expected device set is every other device.
    pub sender: DeviceKey,
    /// Target accounts.
    pub recipients: Vec<RecipientBatch>,
    /// Server timestamp given to every envelope, ms.
    pub server_ts: u64,
    /// When the envelopes expire, ms.
    pub expires_at: u64,
    /// The client's idempotency key (its outbox message id), if it gave one: a later send
    /// from the same device with the same key, within [`IDEMPOTENCY_RETENTION_MS`], is
    /// answered with this send's result and stores nothing.
    pub idempotency_key: Option<Bytes>,
}

/// How long a stored send's idempotency key is remembered (pruned by [`MailboxStore::expire`]).
pub const IDEMPOTENCY_RETENTION_MS: u64 = hush_wire::limits::IDEMPOTENCY_RETENTION_HOURS * 3_600_000;

/// A write the store accepted.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// Stored now.
    Stored {
        /// The envelopes written (for a group message: the references, with the payload).
        committed: Vec<Committed>,
        /// For a group message: its group seq.
        group_seq: Option<u64>,
        /// For a message of a group read from its stream: the message and the member
        /// devices to wake (no mailbox holds it, so `committed` is empty).
        streamed: Option<Box<Streamed>>,
    },
    /// Stored earlier by a write with the same idempotency key from the same device;
    /// nothing was stored now. `server_ts` (and `group_seq`) are the first write's.
    Duplicate {
        /// The first write's server timestamp.
        server_ts: u64,
        /// The first write's group seq, for a group message.
        group_seq: Option<u64>,
    },
}

/// One mailbox read: envelopes with `seq > after_seq`, oldest first, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxRead {
    /// The mailbox.
    pub mailbox: MailboxId,
    /// Read after this seq.
    pub after_seq: u64,
    /// At most this many.
    pub limit: u32,
}

/// Where a group envelope (a group message or a roster change) sits in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupPosition {
    /// The group.
    pub group: Uuid,
    /// The group's own seq.
    pub seq: u64,
}

/// An envelope in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// Mailbox sequence number.
    pub seq: u64,
    /// Server timestamp, ms.
    pub server_ts: u64,
    /// Envelope kind.
    pub kind: i32,
    /// Ciphertext (for a group envelope: the group message, stored once and joined in).
    pub content: Bytes,
    /// For group envelopes: the group and group seq.
    pub group: Option<GroupPosition>,
}

/// A message of a stream-read group just committed: stored once, in no mailbox; every
/// member device reads it after its own cursor, and those connected are woken with it.
#[derive(Debug, Clone)]
pub struct Streamed {
    /// The message: seq 0 (it is acknowledged by its group position), with its group position.
    pub envelope: StoredEnvelope,
    /// The member devices it is for (every device of every member but the sender's own).
    pub devices: Vec<DeviceKey>,
}

/// Where one device stands in one stream-read group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCursor {
    /// The group.
    pub group: Uuid,
    /// Every message up to this group seq is acknowledged.
    pub acked_seq: u64,
    /// The device's account left the group: this is the last seq it reads.
    pub until_seq: Option<u64>,
}

/// One read of a group's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRead {
    /// The group.
    pub group: Uuid,
    /// Read after this group seq.
    pub after_seq: u64,
    /// Up to and including this one, if set.
    pub until_seq: Option<u64>,
    /// At most this many.
    pub limit: u32,
}

/// One acknowledged stream position: the device has every message of `group` up to `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAck {
    /// The device's mailbox id.
    pub mailbox: MailboxId,
    /// The group.
    pub group: Uuid,
    /// Acknowledged up to here.
    pub seq: u64,
}

/// An envelope just committed to a device's mailbox.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The device.
    pub device: DeviceKey,
    /// The envelope.
    pub envelope: StoredEnvelope,
}

/// One account's device-set mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mismatch {
    /// The account.
    pub account: Uuid,
    /// Devices the request lacks.
    pub missing: Vec<u32>,
    /// Devices the request names that do not exist.
    pub extra: Vec<u32>,
    /// Devices whose registration id differs.
    pub stale: Vec<u32>,
}

/// Why a send was refused; nothing of it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendRejection {
    /// Device sets do not match.
    DeviceMismatch(Vec<Mismatch>),
    /// Accounts that do not exist.
    UnknownAccounts(Vec<Uuid>),
    /// Mailboxes that are full.
    MailboxFull(Vec<DeviceKey>),
    /// The group does not exist or the sender's account is not a member.
    NotAMember,
    /// The write names another epoch than the group's current one.
    StaleEpoch {
        /// The group's epoch.
        current_epoch: u64,
    },
    /// Member devices hold no distribution from the sending device for the current epoch.
    MissingDistributions {
        /// The group's epoch.
        current_epoch: u64,
        /// Per account, the devices lacking one (in `missing`).
        mismatches: Vec<Mismatch>,
    },
    /// A distribution names devices that are not current member devices (`extra`) or with
    /// another registration id (`stale`).
    GroupDeviceMismatch {
        /// The group's epoch.
        current_epoch: u64,
        /// Per account, what is wrong.
        mismatches: Vec<Mismatch>,
    },
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The username belongs to another account.
    #[error("username is taken")]
    UsernameTaken,
    /// The account does not exist.
    #[error("unknown account")]
    UnknownAccount,
    /// The device does not exist.
    #[error("unknown device")]
    UnknownDevice,
    /// The account already has the maximum number of devices.
    #[error("the account already has {0} devices")]
    TooManyDevices(u32),
    /// The database failed.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Decides, per device id of the target account, whether a bundle fetch may take one-time keys.
pub type OneTimeAllowed<'a> = &'a (dyn Fn(u32) -> bool + Send + Sync);

/// The result of committing one [`Write`].
pub type SendOutcome = Result<Accepted, SendRejection>;

/// What [`AccountStore::record_trust_root`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRootCheck {
    /// None was recorded; this one is now.
    Recorded,
    /// The same one was recorded before.
    Matches,
    /// Another one was recorded (by the first node that started on this database).
    Differs {
        /// The recorded trust root.
        recorded: Vec<u8>,
    },
}

/// Accounts and their devices, and the facts every node of a deployment shares.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account with its primary device (id 1).
    async fn create_account(&self, account: &NewAccount) -> Result<(), StoreError>;
    /// Adds a device with the lowest free id, refusing more than `max_devices`.
    async fn add_device(&self, account: Uuid, device: &NewDeviceRecord, max_devices: u32) -> Result<u32, StoreError>;
    /// Looks an account up by id.
    async fn account(&self, id: Uuid) -> Result<Option<Account>, StoreError>;
    /// Looks an account up by normalized username.
    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError>;
    /// The devices of an account, in id order.
    async fn devices(&self, account: Uuid) -> Result<Vec<Device>, StoreError>;
    /// One device.
    async fn device(&self, key: DeviceKey) -> Result<Option<Device>, StoreError>;
    /// Many devices in one query (authentication during a reconnect storm): one answer per key,
    /// in the order of `keys`.
    async fn devices_by_keys(&self, keys: &[DeviceKey]) -> Result<Vec<Option<Device>>, StoreError>;
    /// Removes a device with its prekeys, mailbox and distribution records, and in the same
    /// transaction increases the epoch of every group its account is a member of (its sender
    /// keys must be rotated). False if it did not exist.
    async fn remove_device(&self, key: DeviceKey) -> Result<bool, StoreError>;
    /// Sets (or with `None` removes) a device's display name. False if it does not exist.
    async fn rename_device(&self, key: DeviceKey, name: Option<&str>) -> Result<bool, StoreError>;
    /// Records that the device connected (the time is rounded down to the day).
    async fn touch_device(&self, key: DeviceKey, now_ms: u64) -> Result<(), StoreError>;
    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Records `trust_root` as the deployment's trust root if none is recorded yet, and
    /// says how it compares with the recorded one (several nodes must share one).
    async fn record_trust_root(&self, trust_root: &[u8]) -> Result<TrustRootCheck, StoreError>;
}

/// Prekeys and the bundles built from them.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Adds one-time prekeys and replaces signed ones.
    async fn upload_prekeys(&self, key: DeviceKey, upload: &PreKeyUploadRecord) -> Result<(), StoreError>;
    /// One-time prekeys left.
    async fn prekey_counts(&self, key: DeviceKey) -> Result<PreKeyCounts, StoreError>;
    /// Bundles for one device or all devices of an account, consuming one one-time key of each kind
    /// per device for which `one_time` says yes; the others get the signed prekey and the
    /// last-resort Kyber key only, and keep their one-time keys.
    async fn take_bundles(
        &self,
        account: Uuid,
        device_id: Option<u32>,
        one_time: OneTimeAllowed<'_>,
    ) -> Result<Vec<Bundle>, StoreError>;
}

/// Mailboxes: writes (one-to-one sends, group messages, distributions), reads, acks, expiry.
#[async_trait]
pub trait MailboxStore: Send + Sync + 'static {
    /// Checks device sets without storing anything (for online-only sends); the devices to deliver to.
    async fn check_devices(
        &self,
        sender: DeviceKey,
        recipients: &[RecipientBatch],
    ) -> Result<Result<Vec<DeviceKey>, SendRejection>, StoreError>;
    /// Commits many writes in one transaction, in order: each is checked and either fully
    /// written or refused, and later writes see earlier ones. A one-to-one send is refused for
    /// unknown accounts first, then device-set mismatches (including the sender's own other
    /// devices when its account is not listed), then full mailboxes. A group message is
    /// refused when the sender is not a member, the epoch is not current, or member devices
    /// lack a distribution from the sending device; it is stored once and referenced from
    /// every other member device's mailbox, full or not. A distribution is refused for
    /// non-member devices (`extra`) and changed registration ids (`stale`), and is written
    /// even to full mailboxes. A write whose idempotency key this device already used (in this
    /// batch or a stored one) is [`Accepted::Duplicate`]; a refused write does not record its key.
    async fn commit(&self, writes: &[Write], max_mailbox: u64) -> Result<Vec<SendOutcome>, StoreError>;
    /// What [`MailboxStore::commit`] would answer `write` with if its idempotency key is one
    /// its device already used in a stored write: the first write's server timestamp and group
    /// seq. Only reads (from the read pool); `None` for a write without a key or a new key.
    async fn stored_answer(&self, write: &Write) -> Result<Option<(u64, Option<u64>)>, StoreError>;
    /// Envelopes of a mailbox with `seq > after_seq`, oldest first, at most `limit`.
    async fn fetch(&self, mailbox: MailboxId, after_seq: u64, limit: u32) -> Result<Vec<StoredEnvelope>, StoreError>;
    /// Many mailbox reads in one query: for each read what [`MailboxStore::fetch`] would return,
    /// in the order of `reads` (the same mailbox may appear twice).
    async fn fetch_many(&self, reads: &[MailboxRead]) -> Result<Vec<Vec<StoredEnvelope>>, StoreError>;
    /// Deletes acknowledged envelopes, and every group message whose last reference that was;
    /// returns how many envelopes existed. Not durable on its own: a crash of the machine (or
    /// of Postgres) may undo the latest acks, and then their envelopes are delivered again
    /// (at least once); the next [`MailboxStore::commit`] makes them durable with it.
    async fn ack(&self, acks: &[(MailboxId, Vec<u64>)]) -> Result<u64, StoreError>;
    /// The cursors of each mailbox's device in the stream-read groups it reads, by group id.
    async fn stream_cursors(&self, mailboxes: &[MailboxId]) -> Result<Vec<Vec<StreamCursor>>, StoreError>;
    /// Reads group streams: the messages of each read, by group seq, with seq 0 and their
    /// group position; the reads' results in the order of `reads`.
    async fn fetch_streams(&self, reads: &[StreamRead]) -> Result<Vec<Vec<StoredEnvelope>>, StoreError>;
    /// Advances cursors (never back), drops those of departed accounts that reached their
    /// end, and deletes the stream messages of the groups concerned that every cursor is past.
    /// Durable as [`MailboxStore::ack`] is.
    async fn ack_streams(&self, acks: &[StreamAck]) -> Result<(), StoreError>;
    /// Deletes envelopes and group messages whose expiry is at or before `now_ms`, and
    /// idempotency keys older than [`IDEMPOTENCY_RETENTION_MS`]; returns how many envelopes.
    async fn expire(&self, now_ms: u64) -> Result<u64, StoreError>;
    /// Envelopes stored in all mailboxes.
    async fn envelope_count(&self) -> Result<u64, StoreError>;
    /// Group messages (and roster changes) stored, each once.
    async fn group_message_count(&self) -> Result<u64, StoreError>;
}

/// Group rosters and settings. Every change is one transaction that also stores the
/// server-built `RosterChange` once, with the group's next seq, and references it from the
/// mailbox of every member device (the removed or leaving member's included).
#[async_trait]
pub trait GroupStore: Send + Sync + 'static {
    /// Creates a group with `owner` as its owner and the others as members.
    async fn create_group(&self, group: &NewGroup) -> Result<ChangeCommitted, GroupError>;
    /// The group as `caller` may see it: [`GroupError::NotAMember`] unless it is a member.
    async fn group(&self, id: Uuid, caller: Uuid) -> Result<GroupRecord, GroupError>;
    /// The groups `account` is a member of, in id order.
    async fn groups_of(&self, account: Uuid) -> Result<Vec<GroupSummaryRecord>, StoreError>;
    /// Applies one roster or settings change (or the deletion), checked against the
    /// caller's role.
    async fn change_group(&self, change: &GroupChange) -> Result<ChangeCommitted, GroupError>;
}

/// Durable state of the relay: the union of the six stores.
pub trait Store: AccountStore + KeyStore + MailboxStore + GroupStore + PushStore + LinkStore {}

impl<T: AccountStore + KeyStore + MailboxStore + GroupStore + PushStore + LinkStore> Store for T {}

/// Compares the devices a request names with an account's devices.
/// `exclude` is the sending device when the account is the sender's own.
pub fn compare_device_sets(
    account: Uuid,
    existing: &[(u32, u32)],
    requested: &[OutgoingMessage],
    exclude: Option<u32>,
) -> Option<Mismatch> {
    let mut mismatch = Mismatch { account, ..Mismatch::default() };
    for &(device_id, registration_id) in existing {
        if Some(device_id) == exclude {
            continue;
        }
        match requested.iter().find(|m| m.device_id == device_id) {
            None => mismatch.missing.push(device_id),
            Some(m) if m.registration_id != registration_id => mismatch.stale.push(device_id),
            Some(_) => {}
        }
    }
    for m in requested {
        let known = existing.iter().any(|&(id, _)| id == m.device_id) && Some(m.device_id) != exclude;
        if !known {
            mismatch.extra.push(m.device_id);
        }
    }
    mismatch.missing.sort_unstable();
    mismatch.extra.sort_unstable();
    mismatch.stale.sort_unstable();
    let empty = mismatch.missing.is_empty() && mismatch.extra.is_empty() && mismatch.stale.is_empty();
    (!empty).then_some(mismatch)
}

/// For a stored send that does not list the sender's own account: the sender's
/// other devices, which must get a copy (a sent transcript), as a mismatch.
pub fn own_devices_missing(sender: DeviceKey, own: &[(u32, u32)]) -> Option<Mismatch> {
    let missing: Vec<u32> = own.iter().map(|&(id, _)| id).filter(|&id| id != sender.device_id).collect();
    (!missing.is_empty()).then(|| Mismatch { account: sender.account, missing, ..Mismatch::default() })
}

/// Rounds a time down to the start of its UTC day (last-seen is kept at day precision).
pub fn day_floor(ms: u64) -> u64 {
    ms - ms % 86_400_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(device_id: u32, registration_id: u32) -> OutgoingMessage {
        OutgoingMessage { device_id, registration_id, kind: 1, content: Bytes::new() }
    }

    #[test]
    fn device_set_lists_missing_extra_and_stale() {
        let acct = Uuid::nil();
        let existing = [(1, 100), (2, 200), (3, 300)];
        let got = compare_device_sets(acct, &existing, &[msg(1, 100), msg(3, 999), msg(4, 1)], None);
        assert_eq!(got, Some(Mismatch { account: acct, missing: vec![2], extra: vec![4], stale: vec![3] }));
        assert_eq!(compare_device_sets(acct, &existing, &[msg(1, 100), msg(2, 200), msg(3, 300)], None), None);
    }

    #[test]
    fn own_other_devices_are_required_when_own_account_is_not_listed() {
        let sender = DeviceKey { account: Uuid::nil(), device_id: 1 };
        assert_eq!(own_devices_missing(sender, &[(1, 100)]), None);
        let got = own_devices_missing(sender, &[(1, 100), (2, 200), (3, 300)]);
        assert_eq!(got.map(|m| m.missing), Some(vec![2, 3]));
    }

    #[test]
    fn own_sending_device_is_neither_expected_nor_allowed() {
        let acct = Uuid::nil();
        let existing = [(1, 100), (2, 200)];
        assert_eq!(compare_device_sets(acct, &existing, &[msg(2, 200)], Some(1)), None);
        let got = compare_device_sets(acct, &existing, &[msg(1, 100), msg(2, 200)], Some(1));
        assert_eq!(got.map(|m| m.extra), Some(vec![1]));
    }
}
