//! The protocol state machine: no sockets, no clock, no global randomness.
//!
//! Inputs: [`Machine::connected`], [`Machine::receive_envelope`], [`Machine::queue_empty`],
//! [`Machine::handle_send_response`], [`Machine::rest_response`], [`Machine::tick`] and the
//! user's actions ([`Machine::enqueue_text`], ...). Each takes `now` (ms since the epoch) and,
//! where it encrypts, an RNG. Outputs: [`Machine::take_requests`] (frames to send on the
//! WebSocket, REST calls to make) and [`Machine::take_events`] (what the app sees).
//!
//! Every input commits all of its effects in one store transaction *before* any request that
//! depends on them is handed out: an `Ack` only after the decrypted message (or the decision to
//! drop it) is committed; a ciphertext only after the ratchet step that produced it is committed.

pub mod archive;
mod devices;
mod groups;
mod keys;
mod limits;
mod presence;
mod receive;
mod retry;
mod rotation;
mod search;
mod send;
mod sync;

pub use groups::{GroupOutcome, open_blob, seal_blob};
pub use retry::{MAX_REQUESTS_PER_WINDOW, RETRY_WINDOW_MS, RetryStats, message_tag};
pub use rotation::PrekeySchedule;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use hush_wire::api::{
    AccountInfo, AddMembersRequest, CreateGroupRequest, DeviceList, GroupInfo as ApiGroupInfo, PreKeyBundles,
    PreKeyCount, PreKeyUpload, RosterChangeResult, SenderCertificateResponse, SetRoleRequest, UpdateGroupRequest,
};
use hush_wire::frames::{Ack, DistributeRequest, GroupSendRequest, SendRequest};
use libsignal_protocol::{IdentityKeyPair, PublicKey, SenderCertificate, SignalProtocolError};
use uuid::Uuid;

use crate::error::MachineError;
use crate::signal_store::SignalStore;
use crate::store::{ClientStore, ContactRow, LocalAccount, MessageRow};
use crate::types::{Contact, ConversationId, Event, MessageKind, MessageRecord};

/// A request for the driver to carry out.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum OutgoingRequest {
    /// Send this frame on the WebSocket; the answer goes to [`Machine::handle_send_response`].
    Send(SendRequest),
    /// Send this group message frame; the answer (a `SendResponse`) goes to
    /// [`Machine::handle_send_response`].
    GroupSend(GroupSendRequest),
    /// Send this sender-key distribution frame; the answer (a `SendResponse`) goes to
    /// [`Machine::handle_send_response`].
    Distribute(DistributeRequest),
    /// Send this `Ack` frame (the effects of every envelope it names are committed): mailbox
    /// envelopes by seq in `seqs`, group-stream envelopes (seq 0, group seq > 0) by (group id,
    /// group seq) in `groups`. Never empty.
    Ack(Ack),
    /// Make a REST call; the answer goes to [`Machine::rest_response`] with the same `id`.
    Rest {
        /// Matches the answer to the call.
        id: u64,
        /// What to call.
        call: RestCall,
    },
}

/// A REST call the machine needs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RestCall {
    /// `GET /v1/accounts/{id}`.
    LookupAccount(Uuid),
    /// `GET /v1/keys/{account}/{device or *}`: `None` means every device.
    FetchBundles {
        /// The account.
        account: Uuid,
        /// The devices, or all.
        devices: Option<Vec<u32>>,
    },
    /// `GET /v1/certificate`.
    FetchCertificate,
    /// `GET /v1/accounts/{own id}/devices`.
    FetchOwnDevices,
    /// `GET /v1/keys/count`.
    PrekeyCount,
    /// `PUT /v1/keys`.
    UploadPrekeys(PreKeyUpload),
    /// `POST /v1/groups`.
    CreateGroup(CreateGroupRequest),
    /// `GET /v1/groups/{group}`.
    GetGroup(Uuid),
    /// `PATCH /v1/groups/{group}`.
    UpdateGroup {
        /// The group.
        group: Uuid,
        /// What changes.
        request: UpdateGroupRequest,
    },
    /// `POST /v1/groups/{group}/members`.
    AddMembers {
        /// The group.
        group: Uuid,
        /// Whom to add.
        request: AddMembersRequest,
    },
    /// `DELETE /v1/groups/{group}` (owners).
    DeleteGroup(Uuid),
    /// `DELETE /v1/groups/{group}/members/{account}` (also leaving: the own account).
    RemoveMember {
        /// The group.
        group: Uuid,
        /// Whom to remove.
        account: Uuid,
    },
    /// `PUT /v1/groups/{group}/members/{account}/role`.
    SetRole {
        /// The group.
        group: Uuid,
        /// Whose role.
        account: Uuid,
        /// The new role.
        request: SetRoleRequest,
    },
}

/// A successful REST answer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RestAnswer {
    /// To [`RestCall::LookupAccount`].
    Account(AccountInfo),
    /// To [`RestCall::FetchBundles`].
    Bundles(PreKeyBundles),
    /// To [`RestCall::FetchCertificate`].
    Certificate(SenderCertificateResponse),
    /// To [`RestCall::FetchOwnDevices`].
    Devices(DeviceList),
    /// To [`RestCall::PrekeyCount`].
    PrekeyCount(PreKeyCount),
    /// To [`RestCall::CreateGroup`] and [`RestCall::GetGroup`].
    Group(ApiGroupInfo),
    /// To the roster and settings changes.
    RosterChange(RosterChangeResult),
    /// To calls without a body ([`RestCall::UploadPrekeys`]).
    Done,
}

/// A failed REST call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestFailure {
    /// HTTP status, or `None` when the server was not reached.
    pub status: Option<u16>,
    /// The server's error code (or a transport description).
    pub code: String,
    /// The server's message.
    pub message: String,
}

impl RestFailure {
    /// True for a refusal that will not change on retry (4xx other than 408/429).
    pub fn is_permanent(&self) -> bool {
        self.status.is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429)
    }
}

impl std::fmt::Display for RestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "{s} {}: {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

/// What a pending REST call was for.
#[derive(Debug, Clone)]
enum Purpose {
    Lookup(Uuid),
    Bundles(Uuid),
    Certificate,
    OwnDevices,
    PrekeyCount,
    Upload,
    /// New signed prekeys (see `rotation.rs`).
    Rotation,
    /// A group operation the app waits for (completed through `take_completions`).
    Group(groups::GroupPurpose),
}

/// The sender certificate in use.
#[derive(Debug, Clone)]
struct Certificate {
    cert: SenderCertificate,
    expires_at: u64,
}

/// Refresh the sender certificate when it expires within this many ms.
const CERT_REFRESH_MARGIN_MS: u64 = 60 * 60 * 1000;
/// Wait before asking again for a certificate after a failure.
const CERT_RETRY_MS: u64 = 5_000;
/// Send attempts before a message fails for good.
const MAX_SEND_ATTEMPTS: u32 = 8;
/// Device-set corrections before a message fails for good.
const MAX_DEVICE_FIXES: u32 = 5;
/// Key of the stored sender certificate.
const CERT_KEY: &str = "sender_certificate";

/// The protocol state machine of one account on one device.
pub struct Machine {
    store: Arc<dyn ClientStore>,
    signal: SignalStore,
    account: LocalAccount,
    identity: IdentityKeyPair,
    trust_root: PublicKey,
    connected: bool,
    server_queue_empty: bool,
    idle_reported: bool,
    requests: VecDeque<OutgoingRequest>,
    events: VecDeque<Event>,
    /// Acks of envelopes whose effects are committed, handed out by `take_requests`.
    pending_acks: Ack,
    next_id: u64,
    rest: HashMap<u64, Purpose>,
    /// REST calls the outbox head waits for.
    send_waits: HashSet<u64>,
    /// The `SendRequest` in flight for the outbox head.
    /// (request id, outbox seqs it carries: the head, plus receipts merged into it).
    in_flight: Option<(u64, Vec<u64>)>,
    device_fixes: u32,
    cert: Option<Certificate>,
    /// The certificate request in flight, and when a failed one may be retried.
    cert_fetch: Option<u64>,
    cert_retry_at: u64,
    /// Own devices (id, registration id) as the server last listed them.
    own_devices: Option<Vec<u32>>,
    own_devices_fetch: Option<u64>,
    /// Messages from senders whose username is being looked up.
    deferred: HashMap<Uuid, Vec<MessageRow>>,
    lookups: HashSet<Uuid>,
    /// Contacts whose identity key changed in the envelope being processed.
    pending_identity_events: Vec<String>,
    /// Until when the server's rate limit holds sends back (ms).
    rate_limited_until: u64,
    /// Rate limits and counters of retry requests and resends.
    retries: retry::RetryState,
    /// Group sends in progress: the distribution the outbox head waits for, the one in flight.
    group_dist: Option<groups::GroupDist>,
    distributing: Option<(u64, Vec<(Uuid, u32)>)>,
    /// Group invites whose inviter's username is being looked up.
    deferred_invites: HashMap<Uuid, Vec<Uuid>>,
    /// Finished group operations, for the app.
    completions: VecDeque<(u64, Result<GroupOutcome, MachineError>)>,
    /// Signed prekey rotation.
    rotation: rotation::Rotation,
    /// Own presence announcements and what is known of the contacts' (`presence.rs`).
    presence: presence::PresenceState,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("account", &self.account)
            .field("connected", &self.connected)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Machine {
    /// A machine for the account stored in `store`.
    pub async fn load(store: Arc<dyn ClientStore>) -> Result<Option<Machine>, MachineError> {
        let Some(account) = store.account().await? else { return Ok(None) };
        let identity = IdentityKeyPair::try_from(&account.identity_key_pair[..])?;
        let trust_root = PublicKey::deserialize(&account.trust_root).map_err(SignalProtocolError::from)?;
        let signal = SignalStore::new(store.clone(), identity, account.registration_id);
        let cert = match store.value(CERT_KEY).await? {
            Some(bytes) if bytes.len() > 8 => {
                let (exp, raw) = bytes.split_at(8);
                let mut e = [0u8; 8];
                e.copy_from_slice(exp);
                SenderCertificate::deserialize(raw)
                    .ok()
                    .map(|cert| Certificate { cert, expires_at: u64::from_be_bytes(e) })
            }
            _ => None,
        };
        let presence = presence::PresenceState::load(store.as_ref()).await?;
        Ok(Some(Machine {
            store,
            signal,
            account,
            identity,
            trust_root,
            connected: false,
            server_queue_empty: false,
            idle_reported: false,
            requests: VecDeque::new(),
            events: VecDeque::new(),
            pending_acks: Ack::default(),
            next_id: 1,
            rest: HashMap::new(),
            send_waits: HashSet::new(),
            in_flight: None,
            device_fixes: 0,
            cert,
            cert_fetch: None,
            cert_retry_at: 0,
            own_devices: None,
            own_devices_fetch: None,
            deferred: HashMap::new(),
            lookups: HashSet::new(),
            pending_identity_events: Vec::new(),
            rate_limited_until: 0,
            retries: retry::RetryState::default(),
            group_dist: None,
            distributing: None,
            deferred_invites: HashMap::new(),
            completions: VecDeque::new(),
            rotation: rotation::Rotation::default(),
            presence,
        }))
    }

    /// The own account.
    pub fn account(&self) -> &LocalAccount {
        &self.account
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ClientStore> {
        &self.store
    }

    /// Whether the WebSocket is authenticated.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The WebSocket is authenticated: fetch what is missing, then start sending.
    pub async fn connected<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        self.connected = true;
        self.server_queue_empty = false;
        self.idle_reported = false;
        self.in_flight = None;
        self.send_waits.clear();
        // A rotation is checked (and an upload that did not reach the server made again) on
        // every connection.
        self.rotation.check_at = 0;
        self.rotation.upload = None;
        self.rest_call(RestCall::PrekeyCount, Purpose::PrekeyCount);
        self.own_devices_fetch = Some(self.rest_call(RestCall::FetchOwnDevices, Purpose::OwnDevices));
        for account in self.deferred.keys().copied().collect::<Vec<_>>() {
            self.lookup(account);
        }
        self.head_due_on_connect(now).await?;
        self.pump(now, rng).await
    }

    /// The WebSocket closed. An unanswered send is sent again after the next `connected`
    /// (see also [`Machine::connection_closed`], which knows the close code).
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.server_queue_empty = false;
        self.in_flight = None;
        self.distributing = None;
        self.send_waits.clear();
        self.pending_acks = Ack::default();
        self.presence_disconnected();
        self.requests.retain(|r| matches!(r, OutgoingRequest::Rest { .. }));
    }

    /// The server sent `QueueEmpty`: every stored envelope has been delivered.
    pub async fn queue_empty<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        self.server_queue_empty = true;
        self.pump(now, rng).await
    }

    /// Time passed: retries whose backoff has run out, certificate refresh, signed prekey
    /// rotation, presence heartbeats and contacts silent for the quiet period.
    pub async fn tick<R: rand::Rng + rand::CryptoRng>(&mut self, now: u64, rng: &mut R) -> Result<(), MachineError> {
        self.presence_expire(now).await?;
        self.pump(now, rng).await
    }

    /// Requests for the driver, oldest first (acks are merged into one).
    pub fn take_requests(&mut self) -> Vec<OutgoingRequest> {
        let mut out: Vec<OutgoingRequest> = self.requests.drain(..).collect();
        if !(self.pending_acks.seqs.is_empty() && self.pending_acks.groups.is_empty()) {
            out.push(OutgoingRequest::Ack(std::mem::take(&mut self.pending_acks)));
        }
        out
    }

    /// Events for the app, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// True when connected, the server's backlog is delivered and announced, and nothing is
    /// waiting to send.
    pub async fn is_idle(&self) -> Result<bool, MachineError> {
        Ok(self.connected
            && self.server_queue_empty
            && self.lookups.is_empty()
            && self.in_flight.is_none()
            && self.send_waits.is_empty()
            && self.group_fetches() == 0
            && self.offline_announced()
            && self.store.outbox_head().await?.is_none())
    }

    /// Group reads in flight: a roster change or distribution for a group not yet known here
    /// asks the server for the group (its members and encrypted title); a drain waits for them,
    /// or it could end with an invite whose title is still unknown.
    fn group_fetches(&self) -> usize {
        self.rest.values().filter(|p| matches!(p, Purpose::Group(groups::GroupPurpose::Fetch(_)))).count()
    }

    /// What keeps the machine from being idle, for people (e.g. in a timeout error).
    pub async fn waiting_for(&self) -> Result<String, MachineError> {
        let mut parts = Vec::new();
        if !self.connected {
            parts.push("a connection to the server".to_owned());
        } else if !self.server_queue_empty {
            parts.push("the server's backlog".to_owned());
        }
        if !self.lookups.is_empty() {
            parts.push(format!("{} account lookup(s)", self.lookups.len()));
        }
        if self.in_flight.is_some() {
            parts.push("the server's answer to a send".to_owned());
        }
        if self.group_fetches() > 0 {
            parts.push(format!("{} group read(s)", self.group_fetches()));
        }
        if !self.send_waits.is_empty() {
            parts.push(format!("{} key or certificate request(s)", self.send_waits.len()));
        }
        if let Some(head) = self.store.outbox_head().await? {
            let (pending, _) = self.store.outbox_counts().await?;
            parts.push(format!("{pending} outbox message(s), the first after {} attempt(s)", head.attempts));
        }
        Ok(if parts.is_empty() { "nothing".to_owned() } else { parts.join(", ") })
    }

    /// Answer to a [`RestCall`].
    pub async fn rest_response<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        id: u64,
        answer: Result<RestAnswer, RestFailure>,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let Some(purpose) = self.rest.remove(&id) else { return Ok(()) };
        let waited = self.send_waits.remove(&id);
        match (purpose, answer) {
            (Purpose::Lookup(account), Ok(RestAnswer::Account(info))) => self.lookup_done(account, info).await?,
            (Purpose::Lookup(account), Err(_)) => {
                self.lookups.remove(&account);
            }
            (Purpose::Bundles(account), Ok(RestAnswer::Bundles(b))) => {
                if let Err(e) = self.process_bundles(account, b, now, rng).await {
                    self.head_failed_attempt(now, &e.to_string(), true).await?;
                }
            }
            (Purpose::Bundles(_), Err(f)) => self.head_failed_attempt(now, &f.to_string(), f.is_permanent()).await?,
            (Purpose::Certificate, answer) => {
                self.cert_fetch = None;
                let result = match answer {
                    Ok(RestAnswer::Certificate(c)) => self.certificate(c, now).await.map_err(|e| e.to_string()),
                    Ok(_) => Err("unexpected answer".to_owned()),
                    Err(f) => Err(f.to_string()),
                };
                if let Err(reason) = result {
                    tracing::warn!(%reason, "cannot get a sender certificate");
                    self.cert_retry_at = now + CERT_RETRY_MS;
                    if waited {
                        self.head_failed_attempt(now, &reason, false).await?;
                    }
                }
            }
            (Purpose::OwnDevices, answer) => {
                self.own_devices_fetch = None;
                let Ok(RestAnswer::Devices(list)) = answer else { return self.pump(now, rng).await };
                self.own_devices_listed(&list);
            }
            (Purpose::PrekeyCount, Ok(RestAnswer::PrekeyCount(count))) => self.prekey_count(count, now, rng).await?,
            (Purpose::Rotation, answer) => self.rotation_uploaded(answer.is_ok(), now).await?,
            (Purpose::Group(purpose), answer) => self.group_rest_response(id, purpose, answer, now, rng).await?,
            (purpose, Err(f)) => tracing::warn!(?purpose, error = %f, "REST call failed"),
            (purpose, Ok(_)) => tracing::debug!(?purpose, "REST call done"),
        }
        if waited || self.send_waits.is_empty() {
            self.pump(now, rng).await?;
        }
        Ok(())
    }

    /// The server listed this account's devices (from [`RestCall::FetchOwnDevices`] or an
    /// app's request): the next send goes to every one of them but this one.
    pub fn own_devices_listed(&mut self, list: &DeviceList) {
        let own = self.account.device_id;
        self.own_devices = Some(list.devices.iter().map(|d| d.device_id).filter(|d| *d != own).collect());
    }

    /// Another device of this account was removed: no more copies for it, and its sessions
    /// are dropped.
    pub async fn own_device_removed<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        device: u32,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        if let Some(list) = self.own_devices.as_mut() {
            list.retain(|d| *d != device);
        }
        let mut batch = crate::store::Batch::default();
        batch.sessions.insert((hush_keys::aci_string(self.account.account_id), device), None);
        self.store.commit(batch).await?;
        self.pump(now, rng).await
    }

    fn rest_call(&mut self, call: RestCall, purpose: Purpose) -> u64 {
        let id = self.next_request_id();
        self.rest.insert(id, purpose);
        self.requests.push_back(OutgoingRequest::Rest { id, call });
        id
    }

    fn next_request_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn lookup(&mut self, account: Uuid) {
        if self.lookups.insert(account) {
            self.rest_call(RestCall::LookupAccount(account), Purpose::Lookup(account));
        }
    }

    /// Adds or updates a contact from the server's account info (trust on first use).
    pub async fn learn_contact(&mut self, info: &AccountInfo) -> Result<ContactRow, MachineError> {
        let existing = self.store.contact(info.account_id).await?;
        let row = ContactRow {
            account_id: info.account_id,
            username: info.username.to_lowercase(),
            trust: existing.as_ref().map(|c| c.trust).unwrap_or(crate::types::TrustState::Trusted),
        };
        let name = hush_keys::aci_string(info.account_id);
        let mut batch = crate::store::Batch::default();
        if self.store.identity(&name).await?.is_none() {
            batch.identities.insert(name, info.identity_key.0.clone());
        }
        if existing.as_ref() != Some(&row) {
            batch.contacts.push(row.clone());
        }
        self.store.commit(batch).await?;
        Ok(row)
    }

    async fn lookup_done(&mut self, account: Uuid, info: AccountInfo) -> Result<(), MachineError> {
        self.lookups.remove(&account);
        if info.account_id != account {
            return Ok(());
        }
        let contact = self.learn_contact(&info).await?;
        for row in self.deferred.remove(&account).unwrap_or_default() {
            let row = self.store.message(row.id).await?.unwrap_or(row);
            let record = self.record(row, None).await?;
            self.events.push_back(Event::Message(record));
        }
        for group in self.deferred_invites.remove(&account).unwrap_or_default() {
            let group = ConversationId::group_name(group);
            self.events.push_back(Event::GroupInvite { group, from: contact.username.clone() });
        }
        Ok(())
    }

    /// Turns a stored row into the public record (usernames instead of account ids).
    /// `peer_name` is the conversation's name when the caller knows it (saves a lookup).
    pub async fn record(&self, row: MessageRow, peer_name: Option<&str>) -> Result<MessageRecord, MachineError> {
        let conversation = match peer_name {
            Some(p) => p.to_owned(),
            None => self.conversation_name(row.conversation).await?,
        };
        let from = match (row.conversation, peer_name) {
            (ConversationId::Direct(_), Some(p)) if row.sender != self.account.account_id => p.to_owned(),
            _ => self.username_of(row.sender).await?,
        };
        let body = match row.kind {
            MessageKind::System => self.render_system(&row.body).await?,
            MessageKind::Text => row.body,
        };
        Ok(MessageRecord {
            id: row.id,
            conversation,
            from,
            from_device: row.sender_device,
            direction: row.direction,
            body,
            sent_at: row.sent_at,
            received_at: row.received_at,
            lamport: row.lamport,
            group_seq: row.group_seq,
            kind: row.kind,
            status: row.status,
            local_seq: row.local_seq,
        })
    }

    /// How a conversation is written in events and JSON: the peer's username, or `group:<uuid>`.
    pub async fn conversation_name(&self, conversation: ConversationId) -> Result<String, MachineError> {
        match conversation {
            ConversationId::Direct(peer) => self.username_of(peer).await,
            ConversationId::Group(g) => Ok(ConversationId::group_name(g)),
        }
    }

    async fn username_of(&self, account: Uuid) -> Result<String, MachineError> {
        if account == self.account.account_id {
            return Ok(self.account.username.clone());
        }
        Ok(self.store.contact(account).await?.map(|c| c.username).unwrap_or_else(|| account.to_string()))
    }

    /// Every contact.
    pub async fn contacts(&self) -> Result<Vec<Contact>, MachineError> {
        Ok(self
            .store
            .contacts()
            .await?
            .into_iter()
            .map(|c| Contact { username: c.username, account_id: c.account_id, trust: c.trust })
            .collect())
    }

    /// The conversation with `peer`, oldest first.
    pub async fn history(&self, peer: &ContactRow, limit: usize) -> Result<Vec<MessageRecord>, MachineError> {
        let mut out = Vec::new();
        for row in self.store.messages(ConversationId::Direct(peer.account_id), limit).await? {
            out.push(self.record(row, Some(&peer.username)).await?);
        }
        Ok(out)
    }

    /// The last `limit` entries of a group conversation (texts and system entries), in group
    /// seq order, the same on every member device.
    pub async fn group_history(&self, group: Uuid, limit: usize) -> Result<Vec<MessageRecord>, MachineError> {
        let mut out = Vec::new();
        for row in self.store.messages(ConversationId::Group(group), limit).await? {
            out.push(self.record(row, None).await?);
        }
        Ok(out)
    }

    /// Up to `limit` stored messages (any conversation) after store position `after`.
    ///
    /// Stops before the first message whose peer's username the server has not confirmed
    /// yet: that message (whose [`Event::Message`] also waits for the lookup) and everything
    /// after it come in a later call, so callers never see an account id as a sender and
    /// never get messages out of order.
    pub async fn messages_after(&self, after: u64, limit: usize) -> Result<Vec<MessageRecord>, MachineError> {
        let mut out = Vec::new();
        for row in self.store.messages_after(after, limit).await? {
            let named = match row.conversation {
                ConversationId::Direct(peer) => peer,
                ConversationId::Group(_) => row.sender,
            };
            let resolved = named == self.account.account_id || self.store.contact(named).await?.is_some();
            if !resolved {
                break;
            }
            if let ConversationId::Group(g) = row.conversation
                && self
                    .store
                    .group(g)
                    .await?
                    .is_some_and(|g| g.state == crate::types::GroupState::Invited || g.declined)
            {
                continue; // hidden until the invite is accepted (and for good once declined)
            }
            out.push(self.record(row, None).await?);
        }
        Ok(out)
    }

    /// Runs whatever can run now: certificate refresh, the outbox head, the idle report.
    async fn pump<R: rand::Rng + rand::CryptoRng>(&mut self, now: u64, rng: &mut R) -> Result<(), MachineError> {
        if !self.connected {
            return Ok(());
        }
        self.refresh_certificate(now);
        self.rotate_prekeys_if_due(now, rng).await?;
        self.send_head(now, rng).await?;
        self.presence_step(now, rng).await?;
        if self.is_idle().await? {
            if !self.idle_reported {
                self.idle_reported = true;
                self.events.push_back(Event::QueueEmpty);
            }
        } else {
            self.idle_reported = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
