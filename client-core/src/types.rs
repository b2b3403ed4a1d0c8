//! Public data types of the client API: ids, events, messages, contacts, status.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a client keeps its data and which server it talks to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Directory of the local store (`client.db` is created in it). One directory per device.
    pub data_dir: PathBuf,
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`. The WebSocket URL is derived from it
    /// (`ws://…/v1/websocket`, or `wss://` for `https://`).
    pub server_url: String,
    /// When this device replaces its signed EC and last-resort Kyber prekeys, and how long it
    /// keeps replaced ones (default: weekly, kept 30 days).
    #[serde(default)]
    pub prekey_schedule: crate::machine::PrekeySchedule,
    /// When presence is announced and when a silent contact counts as offline (default: a
    /// heartbeat every 4 minutes, offline after 9 silent minutes).
    #[serde(default)]
    pub presence: crate::presence::PresenceTiming,
    /// Whether [`crate::Client::connect`] announces this account's presence to its contacts
    /// (default: yes). A one-shot tool that connects only to send sets it to `false`: it then
    /// still sees its contacts' presence, and says nothing itself.
    #[serde(default = "yes")]
    pub announce_presence: bool,
}

fn yes() -> bool {
    true
}

impl ClientConfig {
    /// A configuration for `data_dir` and `server_url`, with the default prekey schedule.
    pub fn new(data_dir: impl Into<PathBuf>, server_url: impl Into<String>) -> Self {
        Self {
            data_dir: data_dir.into(),
            server_url: server_url.into(),
            prekey_schedule: Default::default(),
            presence: Default::default(),
            announce_presence: true,
        }
    }
}

/// The id of a message: 16 random bytes chosen by its sender, the same on every device.
/// Written as 32 lowercase hex characters (`Display`, JSON).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MessageId::parse_hex(&s).ok_or_else(|| serde::de::Error::custom("a message id is 32 hex characters"))
    }
}

impl MessageId {
    /// A fresh random id.
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        Self(b)
    }

    /// Parses the 16 raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(Self)
    }

    /// Parses the 32-character lowercase hex form written by `Display`.
    pub fn parse_hex(s: &str) -> Option<Self> {
        hex::decode(s).ok().and_then(|b| Self::from_slice(&b))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// A conversation: with one peer account, or a group. Written (`Display`, `FromStr`, and in the
/// store) as the peer's account id, or `group:<uuid>`; in events and JSON the peer appears by
/// username instead (see [`MessageRecord::conversation`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum ConversationId {
    /// One-to-one with this account.
    Direct(Uuid),
    /// The group with this id.
    Group(Uuid),
}

/// The prefix of a group conversation in its written form.
pub const GROUP_PREFIX: &str = "group:";

impl ConversationId {
    /// The peer account of a one-to-one conversation.
    pub fn peer(&self) -> Option<Uuid> {
        match self {
            ConversationId::Direct(p) => Some(*p),
            ConversationId::Group(_) => None,
        }
    }

    /// The group of a group conversation.
    pub fn group(&self) -> Option<Uuid> {
        match self {
            ConversationId::Group(g) => Some(*g),
            ConversationId::Direct(_) => None,
        }
    }

    /// `group:<uuid>` for a group id.
    pub fn group_name(group: Uuid) -> String {
        format!("{GROUP_PREFIX}{group}")
    }

    /// Parses the written form; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s.strip_prefix(GROUP_PREFIX) {
            Some(g) => Uuid::parse_str(g).ok().map(ConversationId::Group),
            None => Uuid::parse_str(s).ok().map(ConversationId::Direct),
        }
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConversationId::Direct(p) => write!(f, "{p}"),
            ConversationId::Group(g) => write!(f, "{GROUP_PREFIX}{g}"),
        }
    }
}

impl Serialize for ConversationId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ConversationId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ConversationId::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("a conversation is an account id or group:<uuid>"))
    }
}

/// What a stored message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageKind {
    /// Written by a person (or a bot).
    #[default]
    Text,
    /// A change of a group's roster or settings, written by the server ("alice added bob"); the
    /// body is the sentence, the author the account that made the change.
    System,
}

/// Whether a message was written on this account (by this or another own device) or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageDirection {
    /// Received from the other party.
    Incoming,
    /// Written by this account (on this device, or on another own device: a sent transcript).
    Outgoing,
}

/// Where a message is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum MessageStatus {
    /// Outgoing, waiting in the outbox.
    Pending,
    /// Outgoing, accepted by the server (stored in every recipient mailbox).
    Sent,
    /// Outgoing, a device of the recipient has stored it.
    Delivered,
    /// Outgoing, the recipient has read it.
    Read,
    /// Outgoing, could not be sent; the reason says why. [`crate::Client::retry`] queues it again.
    Failed(String),
    /// Incoming, stored on this device.
    Received,
}

/// A message as stored in the local history (incoming or outgoing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The sender's message id.
    pub id: MessageId,
    /// The conversation: the other party's username, or `group:<uuid>` for a group.
    pub conversation: String,
    /// Username of the author.
    pub from: String,
    /// The author's device id.
    pub from_device: u32,
    /// Incoming or outgoing.
    pub direction: MessageDirection,
    /// The text.
    pub body: String,
    /// When the author wrote it (ms since the Unix epoch, author's clock).
    pub sent_at: u64,
    /// When this device stored it (ms since the Unix epoch).
    pub received_at: u64,
    /// Lamport clock carried in a one-to-one message; its history is ordered by it (ties:
    /// author, device, id). 0 in groups.
    pub lamport: u64,
    /// In a group: the server's group seq, which orders the conversation on every device (0
    /// while an outgoing message is not sent yet: it is shown last).
    #[serde(default)]
    pub group_seq: u64,
    /// A text, or a group's system entry.
    #[serde(default)]
    pub kind: MessageKind,
    /// Delivery state.
    pub status: MessageStatus,
    /// Position in this device's store: increases with every message stored here (incoming,
    /// outgoing, or copied from another own device). Keep the last one handled and call
    /// [`crate::Client::messages_after`] after a restart to get what came since.
    pub local_seq: u64,
}

/// A message that has just arrived (from a contact, or as a transcript from another own device).
pub type ReceivedMessage = MessageRecord;

/// Which kind of receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// A device of the recipient stored the messages.
    Delivered,
    /// The recipient read the messages.
    Read,
}

/// A delivery or read receipt from a contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// Who sent the receipt.
    pub from: String,
    /// From which of their devices.
    pub from_device: u32,
    /// The messages it is about.
    pub message_ids: Vec<MessageId>,
    /// When (ms since the Unix epoch, their clock).
    pub timestamp: u64,
}

/// State of the connection to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not connected and not trying.
    Offline,
    /// Trying to connect (attempt number since the last success).
    Connecting(u32),
    /// Authenticated; envelopes flow.
    Connected,
    /// The connection was lost; a reconnect follows after a backoff. The text says why and
    /// when the next attempt is.
    Disconnected(String),
    /// Not connected, and not trying again by itself: the server ended the connection for a
    /// reason reconnecting cannot fix (this device was removed, the server does not know this
    /// account, or a copy of this device connected from elsewhere). The text says why and what
    /// to do. [`crate::Client::connect`] tries again.
    Stopped(String),
}

/// Something that happened, in the order it happened. More kinds may be added: match with a
/// `_` arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum Event {
    /// A new message (stored before this event is emitted; never emitted twice for one id).
    Message(ReceivedMessage),
    /// A receipt for messages this account sent.
    Receipt(Receipt),
    /// A contact started or stopped typing (online only; never stored).
    Typing {
        /// Who.
        from: String,
        /// On which device.
        from_device: u32,
        /// Started (true) or stopped (false).
        typing: bool,
    },
    /// What is known of a one-to-one contact's presence changed (online only; never sent on a
    /// heartbeat that changes nothing). See [`crate::Presence`].
    Presence {
        /// Whose.
        contact: String,
        /// What is known now.
        presence: crate::presence::Presence,
    },
    /// A contact's identity key changed: their safety number is different, and sending to them
    /// is blocked until [`crate::Client::trust`] is called.
    IdentityChanged {
        /// Whose key changed.
        username: String,
    },
    /// An outgoing message was accepted by the server.
    Sent {
        /// Which message.
        id: MessageId,
        /// To whom.
        to: String,
        /// When the server stored it (ms since the Unix epoch).
        server_timestamp: u64,
    },
    /// An outgoing message failed for good; [`crate::Client::retry`] queues it again.
    SendFailed {
        /// Which message.
        id: MessageId,
        /// To whom.
        to: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// The server refused an outgoing message because this device sends too fast. The message
    /// stays queued and is sent again after `retry_after_ms` (no need to send it again).
    RateLimited {
        /// Which message.
        id: MessageId,
        /// To whom.
        to: String,
        /// How long until it is tried again, in milliseconds.
        retry_after_ms: u64,
    },
    /// The server did not take an outgoing message for a reason that may pass (the
    /// recipient's mailbox is full, the server had an error). The message stays queued and is
    /// tried again after `retry_in_ms`, and at once on every reconnect.
    SendDelayed {
        /// Which message.
        id: MessageId,
        /// To whom.
        to: String,
        /// Machine-readable cause: `mailbox_full` or `server_error`.
        code: String,
        /// What happened, for people.
        reason: String,
        /// How long until the next attempt, in milliseconds (at most a minute).
        retry_in_ms: u64,
    },
    /// A message from a contact could not be decrypted (e.g. their session with this device
    /// was lost). Unless `retry_requested` is false (too many failures from that device in a
    /// short time), their client was asked to send it again; the message then arrives as an
    /// ordinary [`Event::Message`].
    DecryptionFailed {
        /// Who sent it.
        from: String,
        /// From which of their devices.
        from_device: u32,
        /// Whether the sender was asked to send it again.
        retry_requested: bool,
    },
    /// Someone who is not a contact added this account to a group: it stays hidden (no
    /// events, no receipts) until [`crate::Client::accept_invite`]; [`crate::Client::decline_invite`]
    /// leaves it.
    GroupInvite {
        /// `group:<uuid>`.
        group: String,
        /// Who added this account (username).
        from: String,
    },
    /// A group's roster, settings, title or this account's membership changed (also when a
    /// group is first learned). [`crate::Client::group_info`] has the details.
    GroupUpdated {
        /// `group:<uuid>`.
        group: String,
        /// The title (empty while the group's key has not arrived).
        title: String,
        /// This account's standing in the group.
        state: GroupState,
    },
    /// A group member sent a sender-key distribution whose distribution id another member
    /// already uses: it was refused (someone tried to speak as another member).
    DistributionRefused {
        /// `group:<uuid>`.
        group: String,
        /// Who sent the refused distribution (username).
        from: String,
        /// From which of their devices.
        from_device: u32,
    },
    /// Messages were read on another device of this account: they are marked read here too
    /// (no read receipt is sent from this device; the reading device sent it).
    ReadElsewhere {
        /// The conversation (a username, or `group:<uuid>`).
        conversation: String,
        /// The messages now marked read.
        message_ids: Vec<MessageId>,
    },
    /// A contact's current identity key was trusted on another device of this account, so
    /// sending to them is unblocked here too.
    TrustedElsewhere {
        /// Whose key.
        username: String,
    },
    /// A new device was linked to this account (it announced itself): this device sends to
    /// it from now on.
    DeviceLinked {
        /// Its device id.
        device_id: u32,
        /// Its display name, if it has one.
        name: Option<String>,
    },
    /// The server has delivered every stored envelope and the outbox is empty.
    QueueEmpty,
    /// The connection state changed.
    Connection(ConnectionState),
}

/// This account's standing in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GroupState {
    /// A member; the group is shown.
    Active,
    /// Added by someone who is not a contact: hidden until accepted.
    Invited,
    /// Not a member any more (left, declined, removed, or the group was deleted).
    Left,
}

pub use hush_wire::api::GroupRole;

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberInfo {
    /// Username (the account id while it is not known yet).
    pub username: String,
    /// Account id.
    pub account_id: Uuid,
    /// Role.
    pub role: GroupRole,
}

/// A group as this device knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// `group:<uuid>`: the conversation to send to.
    pub group: String,
    /// The group's id.
    pub group_id: Uuid,
    /// Title (empty while the group's key has not arrived).
    pub title: String,
    /// Description.
    pub description: String,
    /// This account's standing.
    pub state: GroupState,
    /// Members, owners first.
    pub members: Vec<GroupMemberInfo>,
    /// Roster version.
    pub roster_version: u64,
    /// Epoch (grows when someone leaves or is removed).
    pub epoch: u64,
    /// Whether members (not only admins and owners) may add others.
    #[serde(default)]
    pub members_can_add: bool,
}

/// How far a contact's identity key is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustState {
    /// Trusted on first use (the default), or trusted again after a change.
    Trusted,
    /// The key changed since it was trusted: sending is blocked until [`crate::Client::trust`].
    Changed,
}

/// Someone this account has talked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Their username.
    pub username: String,
    /// Their account id (ACI).
    pub account_id: Uuid,
    /// Trust in their current identity key.
    pub trust: TrustState,
}

/// A safety number: 60 digits that both parties compute identically from their identity keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyNumber {
    /// The 60 digits, without spaces.
    pub digits: String,
}

impl SafetyNumber {
    /// The digits in 12 groups of 5, separated by spaces.
    pub fn grouped(&self) -> String {
        let chars: Vec<char> = self.digits.chars().collect();
        chars.chunks(5).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join(" ")
    }
}

impl fmt::Display for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.grouped())
    }
}

/// Where an outbox message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting to be sent (or being sent right now).
    Pending,
    /// Failed for good; [`crate::Client::retry`] queues it again, [`crate::Client::cancel`]
    /// drops it.
    Failed,
}

/// A text message in the outbox (see [`crate::Client::outbox`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The message id.
    pub id: MessageId,
    /// The recipient's username.
    pub to: String,
    /// The text.
    pub body: String,
    /// Pending or failed.
    pub state: OutboxState,
    /// Why it failed, or why the last attempt did not go through.
    pub reason: Option<String>,
    /// Send attempts that did not go through so far.
    pub attempts: u32,
    /// Not sent before this time (ms since the Unix epoch; 0: as soon as connected).
    pub not_before: u64,
}

/// One device of this account, as the server lists it ([`crate::Client::devices`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// Device id (1 is the primary device, which may remove the others).
    pub id: u32,
    /// Display name, if one was given ([`crate::Client::rename_device`]).
    pub name: Option<String>,
    /// When it was added (ms since the Unix epoch).
    pub created_at: u64,
    /// When it last connected (ms since the Unix epoch, day precision), if ever.
    pub last_seen: Option<u64>,
    /// Whether it is the device this client runs on.
    pub this_device: bool,
}

/// A snapshot of the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This account's username.
    pub username: String,
    /// This account's id (ACI).
    pub account_id: Uuid,
    /// This device's id.
    pub device_id: u32,
    /// The server base URL.
    pub server_url: String,
    /// The connection.
    pub connection: ConnectionState,
    /// Messages waiting in the outbox.
    pub outbox_pending: u64,
    /// Messages that failed for good (see [`crate::Client::retry`]).
    pub outbox_failed: u64,
}

/// How the primary device approves a link ([`crate::Client::approve_link_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkOptions {
    /// Send the new device an end-to-end-encrypted archive of this device's history:
    /// contacts (with their identity keys and trust), groups, and the last messages of every
    /// conversation. On by default.
    pub history: bool,
    /// How many of the newest messages of each conversation the archive carries (500 by
    /// default). Fewer go if the server's archive limit is smaller: the oldest are left out.
    pub messages_per_conversation: usize,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self { history: true, messages_per_conversation: crate::machine::archive::DEFAULT_MESSAGES_PER_CONVERSATION }
    }
}

/// What became of the history a linked device was sent ([`crate::PendingLink::finish_with_history`]).
/// A failed archive never fails the link: the device is linked without history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryImport {
    /// The primary sent no archive (`history: false`, or a server without archives).
    None,
    /// The archive was imported.
    Imported {
        /// Messages imported.
        messages: usize,
        /// Contacts imported.
        contacts: usize,
        /// Groups imported.
        groups: usize,
    },
    /// The archive could not be downloaded, opened or imported (expired, tampered, another
    /// account's); the reason says why. The device is linked, without history.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Event> {
        let message = MessageRecord {
            id: MessageId([0xab; 16]),
            conversation: "bob".into(),
            from: "bob".into(),
            from_device: 1,
            direction: MessageDirection::Incoming,
            body: "hello".into(),
            sent_at: 1_700_000_000_000,
            received_at: 1_700_000_000_500,
            lamport: 7,
            group_seq: 0,
            kind: MessageKind::Text,
            status: MessageStatus::Received,
            local_seq: 3,
        };
        let group_message = MessageRecord {
            conversation: "group:11111111-1111-1111-1111-111111111111".into(),
            lamport: 0,
            group_seq: 4,
            kind: MessageKind::System,
            body: "alice added bob".into(),
            from: "alice".into(),
            ..message.clone()
        };
        vec![
            Event::Message(message),
            Event::Message(group_message),
            Event::GroupInvite { group: "group:11111111-1111-1111-1111-111111111111".into(), from: "alice".into() },
            Event::GroupUpdated {
                group: "group:11111111-1111-1111-1111-111111111111".into(),
                title: "friends".into(),
                state: GroupState::Active,
            },
            Event::DistributionRefused {
                group: "group:11111111-1111-1111-1111-111111111111".into(),
                from: "mallory".into(),
                from_device: 1,
            },
            Event::Receipt(Receipt {
                kind: ReceiptKind::Read,
                from: "bob".into(),
                from_device: 2,
                message_ids: vec![MessageId([1; 16])],
                timestamp: 5,
            }),
            Event::Typing { from: "bob".into(), from_device: 1, typing: true },
            Event::Presence { contact: "bob".into(), presence: crate::presence::Presence::Online },
            Event::Presence {
                contact: "bob".into(),
                presence: crate::presence::Presence::LastSeen { hour: 1_699_999_200_000 },
            },
            Event::IdentityChanged { username: "bob".into() },
            Event::Sent { id: MessageId([2; 16]), to: "bob".into(), server_timestamp: 9 },
            Event::SendFailed { id: MessageId([3; 16]), to: "bob".into(), reason: "why".into() },
            Event::RateLimited { id: MessageId([4; 16]), to: "bob".into(), retry_after_ms: 1500 },
            Event::SendDelayed {
                id: MessageId([5; 16]),
                to: "bob".into(),
                code: "mailbox_full".into(),
                reason: "full".into(),
                retry_in_ms: 2000,
            },
            Event::ReadElsewhere { conversation: "bob".into(), message_ids: vec![MessageId([6; 16])] },
            Event::TrustedElsewhere { username: "bob".into() },
            Event::QueueEmpty,
            Event::Connection(ConnectionState::Disconnected("gone".into())),
            Event::Connection(ConnectionState::Stopped("removed".into())),
            Event::Connection(ConnectionState::Connected),
            Event::DecryptionFailed { from: "bob".into(), from_device: 2, retry_requested: true },
        ]
    }

    #[test]
    fn events_have_a_stable_json_form_and_round_trip() {
        let events = sample();
        let json = serde_json::to_value(&events).unwrap_or_else(|e| panic!("{e}"));
        insta::assert_json_snapshot!(json);
        let back: Vec<Event> = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, events);
    }

    #[test]
    fn message_ids_parse_back_and_refuse_garbage() {
        let id = MessageId([0x5a; 16]);
        assert_eq!(MessageId::parse_hex(&id.to_string()), Some(id));
        assert!(serde_json::from_str::<MessageId>("\"zz\"").is_err());
    }

    #[test]
    fn conversation_ids_are_written_as_account_or_group() {
        let g = Uuid::from_bytes([0x11; 16]);
        let p = Uuid::from_bytes([0x22; 16]);
        assert_eq!(ConversationId::Group(g).to_string(), "group:11111111-1111-1111-1111-111111111111");
        assert_eq!(ConversationId::parse(&ConversationId::Group(g).to_string()), Some(ConversationId::Group(g)));
        assert_eq!(ConversationId::parse(&p.to_string()), Some(ConversationId::Direct(p)));
        assert_eq!(ConversationId::parse("group:nope"), None);
    }
}
