//! `hush-client-core`: the client library of the hush end-to-end-encrypted messenger.
//!
//! Apps (the `hush` CLI, the TUI, bots) link this crate to message each other through a
//! `hushd` relay with the Signal protocol (PQXDH sessions, double ratchet, sealed sender).
//!
//! # Shape
//! - [`Client`] is the `Send + Sync` handle apps use. It talks over channels to one actor
//!   thread that owns everything of the account (libsignal's futures are `!Send`, and an
//!   account's protocol operations must run one at a time).
//! - [`machine::Machine`] is the protocol as a state machine without sockets: envelopes and
//!   server answers go in; requests to send, acks and [`Event`]s come out. Time and randomness
//!   are passed in. Tests drive two machines back to back without a network.
//! - The driver (private) runs the WebSocket (challenge, auth, envelopes, reconnect with
//!   backoff) and REST calls for the machine.
//! - [`store::ClientStore`] is the local store: SQLite ([`store::SqliteStore`]) or in memory
//!   ([`store::MemoryStore`]), both checked by one conformance suite. Every change caused by one
//!   input is committed in one transaction, and an envelope is acknowledged to the server only
//!   after its effect is committed, so a crash at any point loses nothing and shows nothing twice.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), hush_client_core::ClientError> {
//! use hush_client_core::{Client, ClientConfig, Event};
//! let alice = Client::register(ClientConfig::new("/tmp/alice", "http://127.0.0.1:8080"), "alice").await?;
//! let id = alice.send_text("bob", "hello").await?; // queued; sent when connected
//! alice.run_until_queue_empty(std::time::Duration::from_secs(30)).await?;
//! let mut events = alice.events();
//! while let Some(event) = events.recv().await {
//!     if let Event::Message(m) = event { println!("{}: {}", m.from, m.body); }
//! }
//! # let _ = id; Ok(()) }
//! ```
//!
//! Logging: this crate logs through `tracing` without message bodies, keys or tokens, and never
//! installs a logger. libsignal logs contact addresses at `info`: apps that install one should
//! add [`LOG_FILTER_QUIET_LIBSIGNAL`] to their filter.
//!
//! A complete program is in `examples/chat.rs`.

pub mod account;
pub mod content;
mod driver;
mod error;
pub mod machine;
mod presence;
mod search;
pub mod signal_store;
pub mod store;
mod types;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use error::{ClientError, MachineError, StoreError, TooLarge};
/// A new device's link code ([`Client::link`], [`Client::approve_link`]).
pub use hush_keys::provision::LinkCode;
/// Push targets, as the server takes them ([`Client::set_push_target`]).
pub use hush_wire::api::{PushStatus, PushTargetBody};
pub use types::{
    ClientConfig, ConnectionState, Contact, ConversationId, DeviceEntry, Event, GROUP_PREFIX, GroupInfo,
    GroupMemberInfo, GroupRole, GroupState, HistoryImport, LinkOptions, MessageDirection, MessageId, MessageKind,
    MessageRecord, MessageStatus, OutboxEntry, OutboxState, Receipt, ReceiptKind, ReceivedMessage, SafetyNumber,
    Status, TrustState,
};

/// Contacts' presence ([`Client::presence`], [`Event::Presence`]) and its timing
/// ([`ClientConfig::presence`]).
pub use presence::{HOUR_MS, Presence, PresenceTiming};
pub use search::{DEFAULT_SEARCH_LIMIT, SearchHit, SearchOptions};

/// When signed prekeys are rotated ([`ClientConfig::prekey_schedule`]).
pub use machine::PrekeySchedule;

use driver::{Command, GroupCommand, GroupReply};

/// Filter directives (for `tracing_subscriber::EnvFilter` or `env_logger`) that keep
/// libsignal's `info` logs, which name contacts, out of an app's logs. Append them to the app's
/// own filter, e.g. `format!("info,{LOG_FILTER_QUIET_LIBSIGNAL}")`.
pub const LOG_FILTER_QUIET_LIBSIGNAL: &str =
    "libsignal_protocol=warn,libsignal_protocol_syft=warn,libsignal_core=warn,libsignal_core_syft=warn,spqr_syft=warn";

/// A stream of [`Event`]s for one subscriber. Every subscriber sees every event emitted after
/// it subscribed; nothing is dropped while the subscriber keeps up or not.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl EventStream {
    /// The next event, or `None` once the client has shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

// The handle must stay usable from any task and thread.
const _: fn() = || {
    fn is<T: Send + Sync + Clone + 'static>() {}
    is::<Client>();
};

/// A link in progress on a new device ([`Client::link`]): show [`PendingLink::code`], then
/// wait in [`PendingLink::finish`].
#[derive(Debug)]
pub struct PendingLink {
    channel: driver::LinkChannel,
    config: ClientConfig,
    name: Option<String>,
}

impl PendingLink {
    /// The code to approve on the primary device (`Display` gives the `hush://link?...` URI,
    /// [`LinkCode::to_text`] the shorter text form).
    pub fn code(&self) -> &LinkCode {
        &self.channel.code
    }

    /// When the code stops working (ms since the Unix epoch; the server's link timeout).
    pub fn expires_at(&self) -> u64 {
        self.channel.expires_at
    }

    /// Waits for the approval, registers this device under the approving account, imports
    /// the history the primary sent (if any) and opens it. Fails with [`ClientError::Timeout`]
    /// when the code expired unapproved. A history archive that cannot be read does not fail
    /// the link; [`PendingLink::finish_with_history`] says what became of it.
    pub async fn finish(self) -> Result<Client, ClientError> {
        self.finish_with_history().await.map(|(client, _)| client)
    }

    /// As [`PendingLink::finish`], and says what became of the primary's history archive:
    /// imported (with counts), none sent, or failed (expired, tampered...; the device is
    /// linked without history). Imported messages raise no [`Event::Message`] and send no
    /// receipts; they appear in [`Client::history`] in the primary's order, and in
    /// [`Client::messages_after`] like any stored message.
    pub async fn finish_with_history(self) -> Result<(Client, HistoryImport), ClientError> {
        let (handle, history) = driver::Handle::finish_link(self.config, self.channel, self.name).await?;
        Ok((Client { inner: Arc::new(handle) }, history))
    }
}

/// A hush account on this device: the handle apps use. Cheap to clone; `Send + Sync`.
///
/// Methods return once the actor has done the work; sending only queues (the outbox is
/// persistent, so a message written offline is sent when the connection returns).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<driver::Handle>,
}

impl Client {
    /// Creates a new account named `username` on the server and stores it in `config.data_dir`
    /// (created if needed; it must not already hold an account). Generates the identity key,
    /// registration id, device auth key, signed EC and Kyber prekeys and 100 one-time keys of
    /// each kind, and pins the server's trust root.
    pub async fn register(config: ClientConfig, username: &str) -> Result<Client, ClientError> {
        Ok(Client { inner: Arc::new(driver::Handle::register(config, username).await?) })
    }

    /// Opens the account stored in `config.data_dir`. Does not connect: call [`Client::connect`]
    /// (stay online) or [`Client::run_until_queue_empty`] (drain and return).
    pub async fn open(config: ClientConfig) -> Result<Client, ClientError> {
        Ok(Client { inner: Arc::new(driver::Handle::open(config).await?) })
    }

    /// Registers a new device of this account on the server (`POST /v1/devices`, signed by this
    /// device, with keys made under the account's identity key, which this device holds) and
    /// opens it from `config.data_dir`, which must not hold an account yet (it is created if
    /// needed). The new device has none of this device's history or contacts: it starts empty
    /// and receives from now on, like any device (groups it learns from their next roster
    /// change and from the distributions members send it). This is for a device whose data
    /// directory this process can write; a device on another machine links with
    /// [`Client::link`].
    pub async fn add_device(&self, config: ClientConfig) -> Result<Client, ClientError> {
        Ok(Client { inner: Arc::new(self.inner.add_device(config).await?) })
    }

    /// Starts linking this machine to an existing account (the new device's side): opens a
    /// provisioning channel on `config.server_url` and returns the link code to show. The
    /// person approves it on the account's primary device ([`Client::approve_link`]); then
    /// [`PendingLink::finish`] registers this device and opens it from `config.data_dir`.
    /// `name` is the device's display name in the account's device list.
    pub async fn link(config: ClientConfig, name: Option<&str>) -> Result<PendingLink, ClientError> {
        let channel = driver::Handle::open_link(&config.server_url).await?;
        Ok(PendingLink { channel, config, name: name.map(str::to_owned) })
    }

    /// Approves a new device's link code (its text form or `hush://link?...` URI; from the
    /// primary device only): the server issues a single-use link token, and this device sends
    /// it with the account's identity key pair, encrypted to the new device's key in the code,
    /// through the server (which sees only ciphertext). The new device then registers itself.
    ///
    /// It also sends the new device this device's history ([`LinkOptions::default`]: the last
    /// 500 messages of every conversation, contacts with their trust, groups), as an archive
    /// encrypted with a key that only the sealed link message carries; the server stores
    /// only ciphertext, and the new device deletes it once imported. See
    /// [`Client::approve_link_with`] to send less or none.
    pub async fn approve_link(&self, code: &str) -> Result<(), ClientError> {
        self.approve_link_with(code, LinkOptions::default()).await
    }

    /// [`Client::approve_link`] with options: `history: false` sends no history (the new
    /// device starts empty); `messages_per_conversation` limits how much is sent. If the
    /// archive would exceed the server's limit (`max_bytes`), the oldest messages are left out
    /// until it fits. Fails with a clear error if the archive cannot be uploaded; nothing is
    /// then sent to the new device, which keeps waiting for another approval.
    pub async fn approve_link_with(&self, code: &str, options: LinkOptions) -> Result<(), ClientError> {
        let code = LinkCode::parse(code).map_err(|e| ClientError::Invalid(format!("not a link code: {e}")))?;
        self.call(|reply| Command::ApproveLink { code, options, reply }).await
    }

    /// Subscribes to events from now on.
    pub fn events(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.subscribe(tx);
        EventStream { rx }
    }

    /// Starts (or keeps) a connection to the server that reconnects with backoff until
    /// [`Client::disconnect`] or [`Client::shutdown`].
    pub async fn connect(&self) -> Result<(), ClientError> {
        self.call(|reply| Command::Connect { reply }).await
    }

    /// Closes the connection and stops reconnecting.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.call(|reply| Command::Disconnect { reply }).await
    }

    /// Queues a text message to `username` (or to a group: `group:<uuid>`) and returns its id
    /// at once. The message is sent when connected; [`Event::Sent`] or [`Event::SendFailed`]
    /// follows. Fails at once if sending to `username` is blocked by a changed identity key.
    pub async fn send_text(&self, username: &str, text: &str) -> Result<MessageId, ClientError> {
        let (to, text) = (username.to_owned(), text.to_owned());
        self.call(|reply| Command::SendText { to, text, reply }).await
    }

    /// Tells `username` this account started (`true`) or stopped typing. Online only: dropped
    /// when either side is offline.
    pub async fn send_typing(&self, username: &str, typing: bool) -> Result<(), ClientError> {
        let to = username.to_owned();
        self.call(|reply| Command::SendTyping { to, typing, reply }).await
    }

    /// What is known of `username`'s presence: online, or last seen within an hour; unknown
    /// when they do not share it, this account does not share its own, or nothing was heard.
    /// Changes come as [`Event::Presence`]. Presence is announced only while the client stays
    /// connected ([`Client::connect`]), not during [`Client::run_until_queue_empty`] alone.
    pub async fn presence(&self, username: &str) -> Result<Presence, ClientError> {
        let peer = username.to_owned();
        self.call(|reply| Command::Presence { peer, reply }).await
    }

    /// Shares this account's presence with its one-to-one contacts (`true`, the default) or
    /// stops (`false`: contacts are told to forget it, and this account sees no one's
    /// presence either). Kept in the local store.
    pub async fn set_presence_sharing(&self, on: bool) -> Result<(), ClientError> {
        self.call(|reply| Command::SetPresenceSharing { on, reply }).await
    }

    /// Whether this account shares its presence ([`Client::set_presence_sharing`]).
    pub async fn presence_sharing(&self) -> Result<bool, ClientError> {
        self.call(|reply| Command::PresenceSharing { reply }).await
    }

    /// Marks every received message from `username` (or in a group: `group:<uuid>`) as read
    /// and sends read receipts (in a group: to each author). This account's other devices
    /// mark the same messages read (and send no receipts): [`Event::ReadElsewhere`] there.
    pub async fn mark_read(&self, username: &str) -> Result<(), ClientError> {
        let peer = username.to_owned();
        self.call(|reply| Command::MarkRead { peer, reply }).await
    }

    /// Queues a failed message again, or sends a pending one now instead of after its backoff.
    pub async fn retry(&self, id: MessageId) -> Result<(), ClientError> {
        self.call(|reply| Command::Retry { id, reply }).await
    }

    /// Drops a pending or failed message from the outbox; it is marked failed ("cancelled") in
    /// the history. Fails with [`ClientError::MessageInFlight`] while the server's answer to
    /// it is awaited.
    pub async fn cancel(&self, id: MessageId) -> Result<(), ClientError> {
        self.call(|reply| Command::Cancel { id, reply }).await
    }

    /// The text messages in the outbox, pending and failed, oldest first.
    pub async fn outbox(&self) -> Result<Vec<OutboxEntry>, ClientError> {
        self.call(|reply| Command::Outbox { reply }).await
    }

    /// The last `limit` messages of the conversation with `username` (or of a group:
    /// `group:<uuid>`, with its system entries), oldest first, in the order every device shows.
    pub async fn history(&self, username: &str, limit: usize) -> Result<Vec<MessageRecord>, ClientError> {
        let peer = username.to_owned();
        self.call(|reply| Command::History { peer, limit, reply }).await
    }

    /// How many messages of the conversation with `username` (or of a group: `group:<uuid>`)
    /// were received and not read yet. Reading on any device of this account
    /// ([`Client::mark_read`]) clears it on every device.
    pub async fn unread(&self, username: &str) -> Result<usize, ClientError> {
        let peer = username.to_owned();
        self.call(|reply| Command::Unread { peer, reply }).await
    }

    /// Up to `limit` messages of every conversation stored after position `after` (see
    /// [`MessageRecord::local_seq`]), oldest first. With the `local_seq` of the last message an
    /// app has handled, this gives exactly what arrived since, also across restarts and crashes
    /// (an [`Event::Message`] can be missed if the process dies right after storing it). A
    /// message whose sender's username is not confirmed yet is held back, with everything after it.
    pub async fn messages_after(&self, after: u64, limit: usize) -> Result<Vec<MessageRecord>, ClientError> {
        self.call(|reply| Command::MessagesAfter { after, limit, reply }).await
    }

    /// Searches this device's history for text messages containing `query` (leading and
    /// trailing whitespace ignored; an empty query is refused), in every conversation or in
    /// `options.conversation`, and returns at most `options.limit` hits, best first: the most
    /// and densest occurrences first, then the newest. Case is ignored; substrings match, so
    /// parts of words, emoji and CJK text are found too. Queries of one or two characters are
    /// answered by a scan of the bodies instead of the index (slower on a large history) and
    /// come newest first. Local only: nothing is sent to the server. See [`SearchHit`] for
    /// highlighting and for jumping to a hit in [`Client::history`].
    pub async fn search(&self, query: &str, options: SearchOptions) -> Result<Vec<SearchHit>, ClientError> {
        let query = query.trim().to_owned();
        if query.is_empty() {
            return Err(ClientError::Invalid("the search query is empty".into()));
        }
        self.call(|reply| Command::Search { query, options, reply }).await
    }

    /// Deletes message `id` from this device's history and search index. Local only: the
    /// account's other devices and the correspondents keep their copies. Fails with
    /// [`ClientError::NoSuchMessage`] if no such message is stored, and refuses a message
    /// still in the outbox ([`Client::cancel`] it first).
    pub async fn delete_message(&self, id: MessageId) -> Result<(), ClientError> {
        self.call(|reply| Command::DeleteMessage { id, reply }).await
    }

    /// Everyone this account has exchanged messages with.
    pub async fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        self.call(|reply| Command::Contacts { reply }).await
    }

    /// The safety number with `username` (fetches their identity key if not known yet).
    pub async fn safety_number(&self, username: &str) -> Result<SafetyNumber, ClientError> {
        let peer = username.to_owned();
        self.call(|reply| Command::SafetyNumber { peer, reply }).await
    }

    /// Trusts the current identity key of `username` (after a change), which unblocks sending.
    /// This account's other devices trust it too if it is the key they know for `username`
    /// ([`Event::TrustedElsewhere`] there); otherwise they keep asking.
    pub async fn trust(&self, username: &str) -> Result<(), ClientError> {
        let peer = username.to_owned();
        self.call(|reply| Command::Trust { peer, reply }).await
    }

    /// A snapshot of the account, the connection and the outbox.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(|reply| Command::Status { reply }).await
    }

    /// The devices of this account, as the server lists them (at most 6), the one this client
    /// runs on marked. A device added since the last send is sent to from now on.
    pub async fn devices(&self) -> Result<Vec<DeviceEntry>, ClientError> {
        self.call(|reply| Command::Devices { reply }).await
    }

    /// Removes device `id` from this account. The primary device (1) may remove any other
    /// device; any device may remove itself, and then stops for good
    /// ([`ConnectionState::Stopped`]; a removed device's client reports the same when the
    /// server closes its connection). Correspondents stop encrypting for a removed device on
    /// their next send (the server's device-set check tells them).
    pub async fn remove_device(&self, id: u32) -> Result<(), ClientError> {
        self.call(|reply| Command::RemoveDevice { id, reply }).await
    }

    /// Names this device (`None` or an empty name clears it): other devices see it in
    /// [`Client::devices`]. Needs a server with `PATCH /v1/devices/self`.
    pub async fn rename_device(&self, name: Option<&str>) -> Result<(), ClientError> {
        let name = name.map(str::to_owned);
        self.call(|reply| Command::RenameDevice { name, reply }).await
    }

    /// Registers (or replaces) where the server sends this device's wake-ups while it is
    /// offline: an APNs or FCM token, or a UnifiedPush endpoint. A wake-up carries no content,
    /// no sender and no conversation; the app then connects and drains its mailbox.
    pub async fn set_push_target(&self, target: hush_wire::api::PushTargetBody) -> Result<(), ClientError> {
        self.call(|reply| Command::SetPush { target: Some(target), reply }).await
    }

    /// This device's push target, if it has one.
    pub async fn push_target(&self) -> Result<Option<hush_wire::api::PushStatus>, ClientError> {
        self.call(|reply| Command::Push { reply }).await
    }

    /// Stops wake-ups for this device (nothing happens if it had no push target).
    pub async fn remove_push_target(&self) -> Result<(), ClientError> {
        self.call(|reply| Command::SetPush { target: None, reply }).await
    }

    /// Connects (if not connected), receives every stored envelope, sends the whole outbox, and
    /// returns; disconnects again if it was not connected before. Fails after `timeout`.
    pub async fn run_until_queue_empty(&self, timeout: Duration) -> Result<(), ClientError> {
        let waiter = self.call(|reply| Command::WaitQueueEmpty { reply }).await?;
        let outcome = match tokio::time::timeout(timeout, waiter).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(ClientError::Shutdown),
            Err(_) => {
                let waiting = self.call(|reply| Command::WaitingFor { reply }).await.unwrap_or_default();
                Err(ClientError::Timeout(format!(
                    "the mailbox and the outbox were not both empty within {timeout:?}; still waiting for {waiting}"
                )))
            }
        };
        self.call(|reply| Command::EndDrain { reply }).await?;
        outcome
    }

    /// Creates a group titled `title` with `members` (usernames; this account becomes its
    /// owner) and returns it once the server has made it. The members' devices get this
    /// device's sender key, the group's key and the title at once; members who are not
    /// contacts of this account see it as an invite. Send to it with `send_text("group:<uuid>", ...)`.
    pub async fn create_group(&self, title: &str, members: &[&str]) -> Result<GroupInfo, ClientError> {
        let op = GroupCommand::Create {
            title: title.to_owned(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        };
        self.group_info_of(op).await
    }

    /// Adds members (usernames) to a group (`group:<uuid>`); admins and owners, or any member
    /// when the group allows it.
    pub async fn add_members(&self, group: &str, members: &[&str]) -> Result<GroupInfo, ClientError> {
        let members = members.iter().map(|m| (*m).to_owned()).collect();
        self.group_info_of(GroupCommand::Add { group: group.to_owned(), members }).await
    }

    /// Removes a member (admins and owners; not an owner). Every remaining member makes a new
    /// sender key before its next message, so the removed member reads nothing sent later.
    pub async fn remove_member(&self, group: &str, member: &str) -> Result<GroupInfo, ClientError> {
        self.group_info_of(GroupCommand::Remove { group: group.to_owned(), member: member.to_owned() }).await
    }

    /// Leaves a group (the last owner must hand over first).
    pub async fn leave_group(&self, group: &str) -> Result<(), ClientError> {
        self.group_call(GroupCommand::Leave { group: group.to_owned() }).await.map(|_| ())
    }

    /// Lets members of a group (not only admins and owners) add others, or stops it (admins and
    /// owners may change this).
    pub async fn set_members_can_add(&self, group: &str, on: bool) -> Result<GroupInfo, ClientError> {
        self.group_info_of(GroupCommand::MembersCanAdd { group: group.to_owned(), on }).await
    }

    /// Deletes a group for every member (owners only): their devices are told, and it ends on
    /// this device as if left.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        self.group_call(GroupCommand::Delete { group: group.to_owned() }).await.map(|_| ())
    }

    /// Gives a member another role (owners only).
    pub async fn set_role(&self, group: &str, member: &str, role: GroupRole) -> Result<GroupInfo, ClientError> {
        self.group_info_of(GroupCommand::Role { group: group.to_owned(), member: member.to_owned(), role }).await
    }

    /// Changes a group's title (admins and owners); it is encrypted with the group's key.
    pub async fn set_group_title(&self, group: &str, title: &str) -> Result<GroupInfo, ClientError> {
        self.group_info_of(GroupCommand::Title { group: group.to_owned(), title: title.to_owned() }).await
    }

    /// The groups this account is a member of (invites are listed by [`Client::invites`]).
    pub async fn groups(&self) -> Result<Vec<GroupInfo>, ClientError> {
        match self.group_call(GroupCommand::List).await? {
            GroupReply::List(list) => Ok(list),
            _ => Ok(Vec::new()),
        }
    }

    /// Groups this account was added to by someone who is not a contact, not yet accepted or
    /// declined ([`Event::GroupInvite`]).
    pub async fn invites(&self) -> Result<Vec<GroupInfo>, ClientError> {
        match self.group_call(GroupCommand::Invites).await? {
            GroupReply::List(list) => Ok(list),
            _ => Ok(Vec::new()),
        }
    }

    /// A group as this device knows it.
    pub async fn group_info(&self, group: &str) -> Result<GroupInfo, ClientError> {
        self.group_info_of(GroupCommand::Info { group: group.to_owned() }).await
    }

    /// Accepts an invite: the group appears, with what arrived meanwhile.
    pub async fn accept_invite(&self, group: &str) -> Result<GroupInfo, ClientError> {
        self.group_info_of(GroupCommand::Accept { group: group.to_owned() }).await
    }

    /// Declines an invite: leaves the group.
    pub async fn decline_invite(&self, group: &str) -> Result<(), ClientError> {
        self.group_call(GroupCommand::Decline { group: group.to_owned() }).await.map(|_| ())
    }

    async fn group_call(&self, op: GroupCommand) -> Result<GroupReply, ClientError> {
        self.call(|reply| Command::Group { op, reply }).await
    }

    async fn group_info_of(&self, op: GroupCommand) -> Result<GroupInfo, ClientError> {
        match self.group_call(op).await? {
            GroupReply::Info(info) => Ok(info),
            other => Err(ClientError::Invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// Stops the actor: closes the connection and the store. Other clones of this handle fail
    /// with [`ClientError::Shutdown`] afterwards.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.inner.shutdown().await
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.inner.send(make(tx))?;
        rx.await.map_err(|_| ClientError::Shutdown)?
    }
}
