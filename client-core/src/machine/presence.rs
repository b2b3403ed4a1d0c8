//! Presence: whether one-to-one contacts are connected, from end-to-end-encrypted online-only
//! envelopes (`PresenceMessage` in `proto/content.proto`) that the server never stores.
//!
//! Who: a device shares its presence with, and accepts presence from, its *presence peers*:
//! contacts with a trusted identity key and a one-to-one conversation (at least one message
//! either way). Group members it never wrote to one to one are not told.
//!
//! When (all times injected; the driver ticks the machine):
//! - once the connection is authenticated, the app wants to stay online
//!   ([`Machine::set_presence_active`]) and a sender certificate is at hand: ONLINE with
//!   `probe` set to every peer. Announced then rather than after the server's backlog drains,
//!   so a contact sees the flip within a second even when this device has much to catch up on;
//!   a peer first written to during the backlog learns at the next heartbeat or its own probe;
//! - a peer's probe is answered with ONLINE (`probe` unset), at most once per
//!   [`PresenceTiming::answer_every`] per peer;
//! - every [`PresenceTiming::heartbeat`] while connected: ONLINE again (envelopes to an offline
//!   device are dropped; a peer that connects later asks with its own probe);
//! - on a clean disconnect ([`Machine::going_offline`]): OFFLINE;
//! - when sharing is turned off: HIDDEN (peers forget what they knew).
//!
//! A receiver keeps per peer device whether it is online and when it was last heard from:
//! ONLINE (and typing, and a message the server accepted within the quiet period) mark it
//! online, OFFLINE marks it offline, and silence for [`PresenceTiming::quiet`] too (a crashed
//! client cannot say so). A peer is online while any of its devices is. Apps see [`Presence`]: `Online`, or `LastSeen` rounded down to the hour, and an
//! [`Event::Presence`] only when that changes. The last-seen hour is kept in the local store
//! (value `presence_seen:<account>`), so it outlives a restart; nothing of it reaches the server.
//!
//! Sharing off ([`Machine::set_presence_sharing`], kept as value `presence_sharing`): nothing
//! is sent, probes are not answered, incoming presence is ignored and every contact is
//! [`Presence::Unknown`].

use std::collections::{BTreeMap, HashMap, HashSet};

use uuid::Uuid;

use super::Machine;
use crate::content::{PresenceMessage, content::Body, presence_message::State};
use crate::error::MachineError;
use crate::presence::{Presence, PresenceTiming};
use crate::store::{Batch, ClientStore, ContactRow};
use crate::types::{ConversationId, Event, TrustState};

/// Key of the sharing setting: `[1]` on (also when absent), `[0]` off, `[2]` off and the
/// peers not told yet (HIDDEN goes out on the next connection).
const SHARING_KEY: &str = "presence_sharing";

fn seen_key(account: Uuid) -> String {
    format!("presence_seen:{account}")
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What is known of one peer: per device of theirs, so one device going offline does not
/// hide another that is still online.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Peer {
    /// Device id -> (online, when last heard from: ms, this device's clock).
    devices: BTreeMap<u32, (bool, u64)>,
    /// When any device of theirs was last heard from (kept in the store).
    last_seen: u64,
}

impl Peer {
    fn online(&self) -> bool {
        self.devices.values().any(|(online, _)| *online)
    }

    fn shown(&self) -> Presence {
        if self.online() { Presence::Online } else { Presence::last_seen_at(self.last_seen) }
    }

    /// Device `device` was heard from at `now`, saying it is online or not.
    fn heard(&mut self, device: u32, online: bool, now: u64) {
        self.devices.insert(device, (online, now));
        self.last_seen = self.last_seen.max(now);
    }
}

/// The presence state of a machine.
#[derive(Debug, Default)]
pub(super) struct PresenceState {
    sharing: bool,
    /// Sharing is off and the peers were not told (HIDDEN) yet.
    hide_pending: bool,
    timing: PresenceTiming,
    /// The app wants to stay online (not a drain-and-return run).
    active: bool,
    /// This connection's ONLINE probe went out.
    announced: bool,
    next_heartbeat: u64,
    /// Peers whose probe waits for an answer.
    owed: HashSet<Uuid>,
    /// When each peer's probe was last answered.
    answered: HashMap<Uuid, u64>,
    peers: HashMap<Uuid, Peer>,
    /// OFFLINE and HIDDEN sends waiting for the server's answer.
    offline_sends: HashSet<u64>,
    /// Server time of the envelope being processed (0 when not known).
    pub(super) arrival: u64,
    /// Last-seen values to write with the input's batch.
    unsaved: BTreeMap<String, Option<Vec<u8>>>,
}

impl PresenceState {
    /// The setting and the last-seen hours kept in `store`.
    pub(super) async fn load(store: &dyn ClientStore) -> Result<PresenceState, MachineError> {
        let setting = store.value(SHARING_KEY).await?.and_then(|v| v.first().copied());
        let (sharing, hide_pending) = match setting {
            Some(0) => (false, false),
            Some(2) => (false, true),
            _ => (true, false),
        };
        let mut peers = HashMap::new();
        if sharing {
            for c in store.contacts().await? {
                if let Some(bytes) = store.value(&seen_key(c.account_id)).await?
                    && let Ok(raw) = <[u8; 8]>::try_from(bytes.as_slice())
                {
                    let peer = Peer { devices: BTreeMap::new(), last_seen: u64::from_be_bytes(raw) };
                    peers.insert(c.account_id, peer);
                }
            }
        }
        Ok(PresenceState { sharing, hide_pending, peers, ..PresenceState::default() })
    }
}

impl Machine {
    /// Sets the presence timing (see [`PresenceTiming`]).
    pub fn set_presence_timing(&mut self, timing: PresenceTiming) {
        self.presence.timing = timing;
    }

    /// Whether this account shares its presence (and so sees its contacts').
    pub fn presence_sharing(&self) -> bool {
        self.presence.sharing
    }

    /// The app stays connected (`true`: presence is announced while connected) or is only
    /// draining (`false`: nothing is announced).
    pub fn set_presence_active(&mut self, active: bool) {
        self.presence.active = active;
    }

    /// What is known of `account`'s presence.
    pub fn presence(&self, account: Uuid) -> Presence {
        match self.presence.peers.get(&account) {
            Some(peer) if self.presence.sharing => peer.shown(),
            _ => Presence::Unknown,
        }
    }

    /// Turns sharing on or off (kept in the store). Off: peers are told to forget this
    /// account's presence (HIDDEN, now or once connected), and every contact becomes
    /// [`Presence::Unknown`] ([`Event::Presence`] for each one that was known). On: announced
    /// at the next step.
    pub async fn set_presence_sharing<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        on: bool,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        if on == self.presence.sharing {
            return Ok(());
        }
        let mut batch = Batch::default();
        batch.values.insert(SHARING_KEY.to_owned(), Some(vec![if on { 1 } else { 2 }]));
        if !on {
            for (account, _) in std::mem::take(&mut self.presence.peers) {
                batch.values.insert(seen_key(account), None);
                self.presence_event(account, Presence::Unknown).await?;
            }
        }
        batch.values.extend(std::mem::take(&mut self.presence.unsaved));
        self.store.commit(batch).await?;
        self.presence.sharing = on;
        self.presence.hide_pending = !on;
        self.presence.announced = false;
        self.presence.owed.clear();
        self.pump(now, rng).await
    }

    /// A clean disconnect is coming: tells the peers (OFFLINE) if they were told this device
    /// is online, and keeps their last-seen hours. Nothing is announced again until
    /// [`Machine::set_presence_active`]. [`Machine::offline_announced`] says when the server
    /// has taken every OFFLINE send (close the connection then, or after a short wait).
    pub async fn going_offline<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        self.presence.active = false;
        let mut batch = Batch::default();
        for (account, peer) in &mut self.presence.peers {
            if peer.online() {
                batch.values.insert(seen_key(*account), Some(peer.last_seen.to_be_bytes().to_vec()));
            }
        }
        if !batch.is_empty() {
            self.store.commit(batch).await?;
        }
        if self.presence.sharing && self.presence.announced && self.connected {
            self.presence.offline_sends = self.tell_peers(State::Offline, false, now, rng).await?;
        }
        self.presence.announced = false;
        Ok(())
    }

    /// True once the server answered every OFFLINE send of [`Machine::going_offline`] (and
    /// the HIDDEN sends of sharing turned off; a drain waits for those too).
    pub fn offline_announced(&self) -> bool {
        self.presence.offline_sends.is_empty()
    }

    /// The server answered send `request_id` (any outcome: presence is best effort).
    pub(super) fn presence_answered(&mut self, request_id: u64) {
        self.presence.offline_sends.remove(&request_id);
    }

    /// The connection closed: the next one announces again.
    pub(super) fn presence_disconnected(&mut self) {
        self.presence.announced = false;
        self.presence.owed.clear();
        self.presence.offline_sends.clear();
    }

    /// Runs whatever presence sends are due (from `pump`, while connected): the announcement,
    /// answers to probes, the heartbeat.
    pub(super) async fn presence_step<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        if self.cert.is_none() {
            return Ok(());
        }
        if self.presence.hide_pending {
            // Once, on whatever connection comes first (a drain too): peers forget this
            // account's presence. Nothing more is sent while sharing is off.
            self.presence.hide_pending = false;
            let mut batch = Batch::default();
            batch.values.insert(SHARING_KEY.to_owned(), Some(vec![0]));
            self.store.commit(batch).await?;
            self.presence.offline_sends = self.tell_peers(State::Hidden, false, now, rng).await?;
            return Ok(());
        }
        if !(self.presence.sharing && self.presence.active) {
            return Ok(());
        }
        let heartbeat = millis(self.presence.timing.heartbeat);
        if !self.presence.announced {
            self.presence.announced = true;
            self.presence.next_heartbeat = now.saturating_add(heartbeat);
            self.presence.owed.clear();
            self.tell_peers(State::Online, true, now, rng).await?;
            return Ok(());
        }
        if now >= self.presence.next_heartbeat {
            self.presence.next_heartbeat = now.saturating_add(heartbeat);
            self.presence.owed.clear();
            self.tell_peers(State::Online, false, now, rng).await?;
            return Ok(());
        }
        for account in std::mem::take(&mut self.presence.owed) {
            self.presence.answered.insert(account, now);
            let body = Body::Presence(PresenceMessage { state: State::Online as i32, probe: false });
            self.send_online_only(account, body, now, rng).await?;
        }
        Ok(())
    }

    /// Peers silent for the quiet period are offline now (from `tick`, connected or not).
    pub(super) async fn presence_expire(&mut self, now: u64) -> Result<(), MachineError> {
        let quiet = millis(self.presence.timing.quiet);
        let silent = |(online, at): &(bool, u64)| *online && now.saturating_sub(*at) >= quiet;
        let expired: Vec<Uuid> =
            self.presence.peers.iter().filter(|(_, p)| p.devices.values().any(silent)).map(|(a, _)| *a).collect();
        for account in expired {
            self.peer_update(account, |p| {
                for entry in p.devices.values_mut() {
                    if silent(entry) {
                        entry.0 = false;
                    }
                }
            })
            .await?;
        }
        if !self.presence.unsaved.is_empty() {
            let batch = Batch { values: std::mem::take(&mut self.presence.unsaved), ..Batch::default() };
            self.store.commit(batch).await?;
        }
        Ok(())
    }

    /// A `PresenceMessage` from `account` (another account's device; committed effects of
    /// the envelope are unaffected: presence lives in memory and in `presence_seen:` values,
    /// which go with the envelope's batch).
    pub(super) async fn apply_presence(
        &mut self,
        (account, device): (Uuid, u32),
        message: PresenceMessage,
        now: u64,
    ) -> Result<(), MachineError> {
        if !self.presence.sharing || !self.is_presence_peer(account).await? {
            return Ok(());
        }
        match State::try_from(message.state) {
            Ok(State::Online) => {
                if message.probe {
                    let last = self.presence.answered.get(&account).copied();
                    if last.is_none_or(|at| now.saturating_sub(at) >= millis(self.presence.timing.answer_every)) {
                        self.presence.owed.insert(account);
                    }
                }
                self.peer_update(account, |p| p.heard(device, true, now)).await
            }
            Ok(State::Offline) => self.peer_update(account, |p| p.heard(device, false, now)).await,
            Ok(State::Hidden) => {
                if self.presence.peers.remove(&account).is_some() {
                    self.presence.unsaved.insert(seen_key(account), None);
                    self.presence_event(account, Presence::Unknown).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Typing or a message from `account` that the server took within the quiet period: a
    /// peer whose presence is known (it shares it) is online.
    pub(super) async fn presence_activity(
        &mut self,
        (account, device): (Uuid, u32),
        now: u64,
    ) -> Result<(), MachineError> {
        // The server's time of the envelope (0 for none) against this device's clock.
        let fresh = now.saturating_sub(self.presence.arrival) < millis(self.presence.timing.quiet);
        if !self.presence.sharing || !fresh || !self.presence.peers.contains_key(&account) {
            return Ok(());
        }
        self.peer_update(account, |p| p.heard(device, true, now)).await
    }

    /// Changes what is known of `account`; emits [`Event::Presence`] and keeps the last-seen
    /// hour when what apps see changes.
    async fn peer_update(&mut self, account: Uuid, change: impl FnOnce(&mut Peer)) -> Result<(), MachineError> {
        let before = self.presence.peers.get(&account).map(Peer::shown).unwrap_or(Presence::Unknown);
        let peer = self.presence.peers.entry(account).or_default();
        change(peer);
        let (after, last_seen) = (peer.shown(), peer.last_seen);
        if after != before {
            self.presence.unsaved.insert(seen_key(account), Some(last_seen.to_be_bytes().to_vec()));
            self.presence_event(account, after).await?;
        }
        Ok(())
    }

    /// The last-seen values changed by the envelope being processed, for its batch.
    pub(super) fn take_presence_values(&mut self) -> BTreeMap<String, Option<Vec<u8>>> {
        std::mem::take(&mut self.presence.unsaved)
    }

    async fn presence_event(&mut self, account: Uuid, presence: Presence) -> Result<(), MachineError> {
        if let Some(c) = self.store.contact(account).await? {
            self.events.push_back(Event::Presence { contact: c.username, presence });
        }
        Ok(())
    }

    /// Whether `account` is a presence peer: a trusted contact with a one-to-one conversation.
    async fn is_presence_peer(&self, account: Uuid) -> Result<bool, MachineError> {
        match self.store.contact(account).await? {
            Some(c) => self.peer_row_qualifies(&c).await,
            None => Ok(false),
        }
    }

    async fn peer_row_qualifies(&self, c: &ContactRow) -> Result<bool, MachineError> {
        Ok(c.account_id != self.account.account_id
            && c.trust == TrustState::Trusted
            && !self.store.messages(ConversationId::Direct(c.account_id), 1).await?.is_empty())
    }

    /// Sends `state` to every presence peer (one online-only send each, so one peer's stale
    /// device set does not cost the others theirs); the request ids.
    async fn tell_peers<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        state: State,
        probe: bool,
        now: u64,
        rng: &mut R,
    ) -> Result<HashSet<u64>, MachineError> {
        let mut sent = HashSet::new();
        for c in self.store.contacts().await? {
            if !self.peer_row_qualifies(&c).await? {
                continue;
            }
            let body = Body::Presence(PresenceMessage { state: state as i32, probe });
            sent.extend(self.send_online_only(c.account_id, body, now, rng).await?);
        }
        Ok(sent)
    }
}
