//! The store's records for groups: rosters, settings, the writes of the send path
//! ([`Write`]) and roster changes ([`GroupChange`]).

use bytes::Bytes;
use uuid::Uuid;

use super::{Committed, DeviceKey, GroupRole, RecipientBatch, SendItem, StoreError, Streamed};

/// A group message from one member device, ready to commit.
#[derive(Debug, Clone)]
pub struct GroupSendItem {
    /// The sending device (authorized from its connection; not stored with the message).
    pub sender: DeviceKey,
    /// The group.
    pub group: Uuid,
    /// The epoch the sender key was made under.
    pub epoch: u64,
    /// The `SenderKeyMessage`.
    pub content: Bytes,
    /// Server timestamp, ms.
    pub server_ts: u64,
    /// When the message and its references expire, ms.
    pub expires_at: u64,
    /// As [`SendItem::idempotency_key`].
    pub idempotency_key: Option<Bytes>,
}

/// A sender-key distribution from one member device to other member devices.
#[derive(Debug, Clone)]
pub struct DistributeItem {
    /// The sending device.
    pub sender: DeviceKey,
    /// The group.
    pub group: Uuid,
    /// Must be the group's current epoch.
    pub epoch: u64,
    /// One sealed-sender ciphertext per named member device.
    pub recipients: Vec<RecipientBatch>,
    /// Server timestamp, ms.
    pub server_ts: u64,
    /// When the envelopes expire, ms.
    pub expires_at: u64,
    /// As [`SendItem::idempotency_key`].
    pub idempotency_key: Option<Bytes>,
}

/// One write of the send path, committed together with others by [`super::MailboxStore::commit`].
#[derive(Debug, Clone)]
pub enum Write {
    /// A one-to-one (sealed-sender) send.
    Direct(SendItem),
    /// A group message.
    Group(GroupSendItem),
    /// A sender-key distribution.
    Distribute(DistributeItem),
}

impl Write {
    /// The device that makes the write.
    pub fn sender(&self) -> DeviceKey {
        match self {
            Write::Direct(i) => i.sender,
            Write::Group(i) => i.sender,
            Write::Distribute(i) => i.sender,
        }
    }

    /// Its server timestamp.
    pub fn server_ts(&self) -> u64 {
        match self {
            Write::Direct(i) => i.server_ts,
            Write::Group(i) => i.server_ts,
            Write::Distribute(i) => i.server_ts,
        }
    }

    /// Its idempotency key, if any.
    pub fn idempotency_key(&self) -> Option<&Bytes> {
        match self {
            Write::Direct(i) => i.idempotency_key.as_ref(),
            Write::Group(i) => i.idempotency_key.as_ref(),
            Write::Distribute(i) => i.idempotency_key.as_ref(),
        }
    }

    /// The group it writes to, if any.
    pub fn group(&self) -> Option<Uuid> {
        match self {
            Write::Direct(_) => None,
            Write::Group(i) => Some(i.group),
            Write::Distribute(i) => Some(i.group),
        }
    }
}

/// The client-encrypted blobs and settings of a group; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSettings {
    /// Encrypted title.
    pub title: Option<Vec<u8>>,
    /// Encrypted description.
    pub description: Option<Vec<u8>>,
    /// Encrypted avatar.
    pub avatar: Option<Vec<u8>>,
    /// Whether members may add others.
    pub members_can_add: Option<bool>,
}

/// A group to create.
#[derive(Debug, Clone)]
pub struct NewGroup {
    /// Its id (random, chosen by the server).
    pub id: Uuid,
    /// The creating account: the owner.
    pub owner: Uuid,
    /// The other first members.
    pub members: Vec<Uuid>,
    /// Encrypted title.
    pub title: Vec<u8>,
    /// Encrypted description.
    pub description: Vec<u8>,
    /// Encrypted avatar.
    pub avatar: Vec<u8>,
    /// Whether members may add others.
    pub members_can_add: bool,
    /// When, ms.
    pub server_ts: u64,
    /// When the `RosterChange` envelopes expire, ms.
    pub expires_at: u64,
    /// Most members.
    pub max_members: u32,
    /// Above this many members the group is read from its stream (fan-out on read).
    pub read_above: u32,
}

/// One roster or settings change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOp {
    /// Title, description, avatar, settings (admins, owners).
    Update(GroupSettings),
    /// Add accounts as members (admins, owners; members when `members_can_add`).
    Add(Vec<Uuid>),
    /// Remove a member (admins, owners; not an owner unless by an owner), or leave (itself).
    Remove(Uuid),
    /// Give a member a role (owners).
    SetRole(Uuid, GroupRole),
    /// Delete the group (owners): every member device gets a `KIND_DELETED` change.
    Delete,
}

/// A change asked for by `actor`.
#[derive(Debug, Clone)]
pub struct GroupChange {
    /// The group.
    pub group: Uuid,
    /// The calling account.
    pub actor: Uuid,
    /// What to change.
    pub op: GroupOp,
    /// When, ms.
    pub server_ts: u64,
    /// When the `RosterChange` envelopes expire, ms.
    pub expires_at: u64,
    /// Most members.
    pub max_members: u32,
    /// Above this many members the group is read from its stream (fan-out on read).
    pub read_above: u32,
}

/// A committed roster change.
#[derive(Debug, Clone)]
pub struct ChangeCommitted {
    /// The group.
    pub group: Uuid,
    /// Roster version after the change.
    pub roster_version: u64,
    /// Epoch after the change.
    pub epoch: u64,
    /// The change's group seq.
    pub group_seq: u64,
    /// The `RosterChange` references written, with the payload, to deliver.
    pub committed: Vec<Committed>,
    /// The `RosterChange` of a stream-read group, to deliver.
    pub streamed: Option<Streamed>,
    /// Devices whose unread stream messages were moved into their mailboxes (the group fell
    /// to the fan-out-on-write size): they must re-read their mailbox.
    pub moved: Vec<DeviceKey>,
}

/// One member as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberRecord {
    /// The member account.
    pub account: Uuid,
    /// Its role.
    pub role: GroupRole,
    /// Who added it.
    pub added_by: Uuid,
    /// When, ms.
    pub joined_at: u64,
}

/// A group as its members see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// The group.
    pub id: Uuid,
    /// Grows with every change.
    pub roster_version: u64,
    /// Grows when a member leaves, is removed, or a member account removes a device.
    pub epoch: u64,
    /// The last group seq handed out.
    pub seq: u64,
    /// Owners first, then admins, then members, each by account id.
    pub members: Vec<GroupMemberRecord>,
    /// Encrypted title.
    pub title: Vec<u8>,
    /// Encrypted description.
    pub description: Vec<u8>,
    /// Encrypted avatar.
    pub avatar: Vec<u8>,
    /// Whether members may add others.
    pub members_can_add: bool,
    /// A member limit of this group, if it has its own.
    pub max_members: Option<u32>,
    /// Member devices read the group from its stream (it has more members than the
    /// fan-out-on-read threshold) rather than from references in their mailboxes.
    pub read_path: bool,
}

/// One entry of an account's group list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummaryRecord {
    /// The group.
    pub id: Uuid,
    /// Its roster version.
    pub roster_version: u64,
    /// The account's role.
    pub role: GroupRole,
}

/// Why a roster change was refused; nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The group does not exist, or the caller is not a member (never told apart).
    #[error("no such group, or the caller is not a member")]
    NotAMember,
    /// The caller's role may not do this.
    #[error("the caller's role may not do this")]
    Forbidden,
    /// The change would leave the group without an owner.
    #[error("the last owner cannot leave, be demoted or removed")]
    LastOwner,
    /// The roster would exceed the member limit.
    #[error("the group would have more than {0} members")]
    GroupFull(u32),
    /// An account to add is a member already.
    #[error("account {0} is already a member")]
    AlreadyMember(Uuid),
    /// An account to add does not exist.
    #[error("account {0} does not exist")]
    UnknownAccount(Uuid),
    /// The account to remove or change is not a member.
    #[error("account {0} is not a member of the group")]
    NotInGroup(Uuid),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
