//! Receiving in groups: roster changes (written by the server), sender-key distributions
//! (pairwise, sealed sender), group messages (one sender-key ciphertext), and messages held
//! until their distribution arrives.

use hush_wire::frames::{Envelope, RosterChange, roster_change};
use libsignal_protocol::{
    DeviceId, ProtocolAddress, SenderKeyDistributionMessage, SenderKeyMessage, SignalProtocolError, group_decrypt,
    process_sender_key_distribution_message,
};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::super::Machine;
use super::super::receive::Sender;
use super::{MASTER_KEY_BYTES, group_event, random_uuid};
use crate::content::{self, GroupDistribution, content::Body, receipt_message};
use crate::error::MachineError;
use crate::store::{Batch, DistributionBinding, GroupRow, HeldRow, MemberRow, MessageRow};
use crate::types::{
    ConversationId, Event, GroupRole, GroupState, MessageDirection, MessageId, MessageKind, MessageStatus,
};

/// A system entry as stored (rendered into a sentence with current usernames when shown).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SystemEntry {
    kind: String,
    actor: Uuid,
    accounts: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<GroupRole>,
}

/// A sample system entry as stored (for the snapshot of the stored form).
#[cfg(test)]
pub(super) fn system_entry_sample() -> serde_json::Value {
    let entry = SystemEntry {
        kind: kind_name(roster_change::Kind::RoleChanged).to_owned(),
        actor: Uuid::from_bytes([1; 16]),
        accounts: vec![Uuid::from_bytes([2; 16])],
        role: Some(GroupRole::Admin),
    };
    serde_json::to_value(entry).unwrap_or_default()
}

/// What opening a group message gave.
enum Opened {
    Text(Sender, Vec<u8>),
    /// Not decryptable yet: keep it until a distribution arrives.
    Hold,
    /// Never decryptable (or a duplicate): drop it.
    Drop,
}

/// The id of the system entry for a roster change: the same on every device.
fn system_id(group: Uuid, group_seq: u64) -> MessageId {
    let mut h = Sha256::new();
    h.update(b"hush-roster-change-v1");
    h.update(group.as_bytes());
    h.update(group_seq.to_be_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    MessageId(id)
}

fn group_of(envelope: &Envelope) -> Result<Uuid, MachineError> {
    Uuid::from_slice(&envelope.group_id).map_err(|_| MachineError::Content("group envelope without a group id".into()))
}

impl Machine {
    /// The group as the batch being built leaves it.
    async fn pending_group(&self, batch: &Batch, group: Uuid) -> Result<Option<GroupRow>, MachineError> {
        match batch.groups.get(&group) {
            Some(g) => Ok(g.clone()),
            None => Ok(self.store.group(group).await?),
        }
    }

    /// Whether `account` counts as a contact for invites (this account, or a stored contact).
    async fn known(&self, account: Uuid) -> Result<bool, MachineError> {
        Ok(account == self.account.account_id || self.store.contact(account).await?.is_some())
    }

    /// A roster change written by the server: the local roster follows it, and it becomes a
    /// system entry of the conversation.
    pub(in crate::machine) async fn open_roster_change<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        envelope: &Envelope,
        now: u64,
        rng: &mut R,
    ) -> Result<Batch, MachineError> {
        let gid = group_of(envelope)?;
        let change = RosterChange::decode(&envelope.content[..]).map_err(|e| MachineError::Content(e.to_string()))?;
        let id = system_id(gid, envelope.group_seq);
        let mut batch = Batch::default();
        if self.store.message(id).await?.is_some() {
            return Ok(batch);
        }
        let me = self.account.account_id;
        let actor = Uuid::from_slice(&change.actor).map_err(|_| MachineError::Content("roster change actor".into()))?;
        let accounts: Vec<Uuid> = change.accounts.iter().filter_map(|a| Uuid::from_slice(a).ok()).collect();
        let kind = roster_change::Kind::try_from(change.kind).unwrap_or(roster_change::Kind::Unspecified);
        let role = match hush_wire::frames::GroupRole::try_from(change.role) {
            Ok(hush_wire::frames::GroupRole::Owner) => Some(GroupRole::Owner),
            Ok(hush_wire::frames::GroupRole::Admin) => Some(GroupRole::Admin),
            Ok(hush_wire::frames::GroupRole::Member) => Some(GroupRole::Member),
            _ => None,
        };
        let existing = self.store.group(gid).await?;
        let was = existing.as_ref().map(|g| g.state);
        let joined =
            matches!(kind, roster_change::Kind::Created | roster_change::Kind::Added) && accounts.contains(&me);
        let join_state = if self.known(actor).await? { GroupState::Active } else { GroupState::Invited };
        let mut group = match existing {
            Some(g) => g,
            None => GroupRow::placeholder(gid, join_state, Some(actor), random_uuid(rng)),
        };
        let mut fetch = was.is_none();
        match kind {
            roster_change::Kind::Created => {
                if group.role_of(actor).is_none() {
                    group.members.push(MemberRow { account: actor, role: GroupRole::Owner });
                }
                add_members(&mut group, &accounts);
            }
            roster_change::Kind::Added => add_members(&mut group, &accounts),
            roster_change::Kind::Removed | roster_change::Kind::Left => {
                group.members.retain(|m| !accounts.contains(&m.account));
                group.distributed.retain(|(a, _)| !accounts.contains(a));
                if accounts.contains(&me) {
                    group.state = GroupState::Left;
                    fetch = false;
                }
            }
            roster_change::Kind::RoleChanged => {
                for m in group.members.iter_mut().filter(|m| accounts.contains(&m.account)) {
                    m.role = role.unwrap_or(m.role);
                }
            }
            roster_change::Kind::SettingsChanged => fetch = true,
            roster_change::Kind::Deleted => {
                group.state = GroupState::Left;
                fetch = false;
            }
            roster_change::Kind::Unspecified => {}
        }
        if joined && was == Some(GroupState::Left) {
            // Added again after leaving: a new membership, a new sender key.
            group.state = join_state;
            group.added_by = Some(actor);
            group.declined = false;
            group.key_epoch = None;
            group.distributed.clear();
            fetch = true;
        }
        group.roster_version = group.roster_version.max(change.roster_version);
        group.epoch = group.epoch.max(change.epoch);
        let invited = group.state == GroupState::Invited && was != Some(GroupState::Invited);
        let visible = group.state != GroupState::Invited;
        let entry = SystemEntry { kind: kind_name(kind).to_owned(), actor, accounts: accounts.clone(), role };
        let own = actor == me;
        let row = MessageRow {
            id,
            conversation: ConversationId::Group(gid),
            sender: actor,
            sender_device: 0,
            direction: if own { MessageDirection::Outgoing } else { MessageDirection::Incoming },
            body: serde_json::to_string(&entry).map_err(|e| MachineError::Content(e.to_string()))?,
            sent_at: change.server_timestamp,
            received_at: now,
            lamport: 0,
            group_seq: envelope.group_seq,
            kind: MessageKind::System,
            status: if own { MessageStatus::Sent } else { MessageStatus::Received },
            local_seq: 0,
        };
        let event = group_event(&group);
        batch.groups.insert(gid, Some(group));
        batch.messages.push(row.clone());
        for a in accounts.iter().chain([&actor]) {
            if !self.known(*a).await? {
                self.lookup(*a);
            }
        }
        if invited {
            if self.known(actor).await? {
                let from = self.username_of(actor).await?;
                self.events.push_back(Event::GroupInvite { group: ConversationId::group_name(gid), from });
            } else {
                self.deferred_invites.entry(actor).or_default().push(gid);
            }
        }
        if visible {
            self.announce(row, actor).await?;
            self.events.push_back(event);
        }
        if fetch {
            self.fetch_group(gid);
        }
        Ok(batch)
    }

    /// Emits a stored group entry, or defers it until `author`'s username is known.
    async fn announce(&mut self, row: MessageRow, author: Uuid) -> Result<(), MachineError> {
        if self.known(author).await? {
            let record = self.record(row, None).await?;
            self.events.push_back(Event::Message(record));
        } else {
            self.deferred.entry(author).or_default().push(row);
            self.lookup(author);
        }
        Ok(())
    }

    /// A group message: decrypted with the sender key of the member device its distribution
    /// id is bound to, or held until that distribution arrives.
    pub(in crate::machine) async fn open_group_message<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        envelope: &Envelope,
        now: u64,
        rng: &mut R,
    ) -> Result<Batch, MachineError> {
        let gid = group_of(envelope)?;
        let mut batch = Batch::default();
        match self.open_sender_key(gid, &envelope.content, None).await? {
            Opened::Text(sender, plain) => {
                self.store_group_text(&mut batch, gid, envelope.group_seq, &sender, &plain, now, rng).await?;
            }
            Opened::Hold => {
                tracing::debug!(group_seq = envelope.group_seq, "group message held until its distribution arrives");
                batch.held_add.push(HeldRow {
                    group: gid,
                    group_seq: envelope.group_seq,
                    server_timestamp: envelope.server_timestamp,
                    content: envelope.content.to_vec(),
                });
            }
            Opened::Drop => {}
        }
        let (more, _) = self.signal.take();
        batch.merge(more);
        Ok(batch)
    }

    /// Decrypts a SenderKeyMessage; `fresh` is a binding made by the input being processed.
    async fn open_sender_key(
        &mut self,
        gid: Uuid,
        bytes: &[u8],
        fresh: Option<(Uuid, &Sender)>,
    ) -> Result<Opened, MachineError> {
        let Ok(message) = SenderKeyMessage::try_from(bytes) else { return Ok(Opened::Drop) };
        let dist = message.distribution_id();
        let bound = match fresh {
            Some((d, s)) if d == dist => Some((s.account, s.device)),
            _ => self.store.distribution(gid, dist).await?,
        };
        if bound.is_none() && self.store.group(gid).await?.is_some_and(|g| g.distribution_id == dist) {
            // This device's own message, handed back by the group's stream: it is stored already.
            return Ok(Opened::Drop);
        }
        let Some((account, device)) = bound else { return Ok(Opened::Hold) };
        let Ok(device_id) = DeviceId::try_from(device) else { return Ok(Opened::Drop) };
        let address = ProtocolAddress::new(hush_keys::aci_string(account), device_id);
        let mut store = self.signal.clone();
        match group_decrypt(bytes, &mut store, &address).await {
            Ok(plain) => Ok(Opened::Text(Sender { account, device }, plain)),
            Err(SignalProtocolError::NoSenderKeyState { .. }) => Ok(Opened::Hold),
            Err(SignalProtocolError::InvalidState("local store", e)) => {
                Err(MachineError::Store(crate::error::StoreError::Corrupt(e)))
            }
            Err(e) => {
                tracing::debug!(error = %e, "group message dropped");
                Ok(Opened::Drop)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_group_text<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        batch: &mut Batch,
        gid: Uuid,
        group_seq: u64,
        sender: &Sender,
        plain: &[u8],
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let content = content::decode(plain).map_err(MachineError::Content)?;
        let Some(Body::Data(data)) = content.body else { return Ok(()) };
        if data.group_id != gid.as_bytes() {
            return Err(MachineError::Content("a group message names another group".into()));
        }
        let Some(id) = MessageId::from_slice(&data.message_id) else { return Ok(()) };
        if self.store.message(id).await?.is_some() || batch.messages.iter().any(|m| m.id == id) {
            return Ok(()); // a duplicate by message id
        }
        let own = sender.account == self.account.account_id;
        let row = MessageRow {
            id,
            conversation: ConversationId::Group(gid),
            sender: sender.account,
            sender_device: sender.device,
            direction: if own { MessageDirection::Outgoing } else { MessageDirection::Incoming },
            body: data.body,
            sent_at: data.sent_at,
            received_at: now,
            lamport: 0,
            group_seq,
            kind: MessageKind::Text,
            status: if own { MessageStatus::Sent } else { MessageStatus::Received },
            local_seq: 0,
        };
        batch.messages.push(row.clone());
        let visible = self.pending_group(batch, gid).await?.is_some_and(|g| g.state != GroupState::Invited);
        if !visible {
            return Ok(()); // stored; shown when the invite is accepted
        }
        if !own {
            let receipt = super::super::send::receipt(receipt_message::Kind::Delivered, &[id], now);
            self.queue_receipt(batch, sender.account, receipt, rng);
        }
        self.announce(row, sender.account).await
    }

    /// A member device's sender key, received pairwise: binds its distribution id to that
    /// device (refusing an id bound to another), then opens the messages held for it.
    pub(in crate::machine) async fn apply_distribution<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        batch: &mut Batch,
        sender: &Sender,
        d: GroupDistribution,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let me = self.account.account_id;
        if (sender.account, sender.device) == (me, self.account.device_id) {
            return Ok(());
        }
        let gid = Uuid::from_slice(&d.group_id).map_err(|_| MachineError::Content("distribution group id".into()))?;
        let skdm = SenderKeyDistributionMessage::try_from(&d.sender_key_distribution[..])?;
        let dist = skdm.distribution_id()?;
        let bound = match batch.distributions.iter().find(|b| b.group == gid && b.distribution == dist) {
            Some(b) => Some((b.account, b.device)),
            None => self.store.distribution(gid, dist).await?,
        };
        let own_dist = self.store.group(gid).await?.is_some_and(|g| g.distribution_id == dist);
        if own_dist || bound.is_some_and(|owner| owner != (sender.account, sender.device)) {
            tracing::warn!("refused a group distribution whose id another member device uses");
            let from = self.username_of(sender.account).await?;
            self.events.push_back(Event::DistributionRefused {
                group: ConversationId::group_name(gid),
                from,
                from_device: sender.device,
            });
            return Ok(());
        }
        let mut group = match self.pending_group(batch, gid).await? {
            Some(g) => g,
            None => {
                // The roster change comes first in the mailbox; should it not have, learn the group.
                self.fetch_group(gid);
                let state = if self.known(sender.account).await? { GroupState::Active } else { GroupState::Invited };
                GroupRow::placeholder(gid, state, Some(sender.account), random_uuid(rng))
            }
        };
        if group.master_key.is_empty() && d.master_key.len() == MASTER_KEY_BYTES {
            group.master_key = d.master_key.clone();
            group.decrypt_blobs();
            if group.state != GroupState::Invited {
                self.events.push_back(group_event(&group));
            }
        }
        batch.groups.insert(gid, Some(group));
        if bound.is_none() {
            batch.distributions.push(DistributionBinding {
                group: gid,
                distribution: dist,
                account: sender.account,
                device: sender.device,
            });
        }
        let device = DeviceId::try_from(sender.device).map_err(|_| MachineError::Content("device id".into()))?;
        let address = ProtocolAddress::new(hush_keys::aci_string(sender.account), device);
        let mut store = self.signal.clone();
        process_sender_key_distribution_message(&address, &skdm, &mut store).await?;
        // Messages that waited for this distribution, in group order.
        for held in self.store.held(gid).await? {
            match self.open_sender_key(gid, &held.content, Some((dist, sender))).await? {
                Opened::Text(from, plain) => {
                    batch.held_remove.push((gid, held.group_seq));
                    match self.store_group_text(batch, gid, held.group_seq, &from, &plain, now, rng).await {
                        Err(MachineError::Store(e)) => return Err(MachineError::Store(e)),
                        // A malformed held message must not cost the distribution that opened it.
                        Err(e) => tracing::debug!(error = %e, "held group message dropped"),
                        Ok(()) => {}
                    }
                }
                Opened::Drop => batch.held_remove.push((gid, held.group_seq)),
                Opened::Hold => {}
            }
        }
        Ok(())
    }

    /// The sentence for a stored system entry, with the usernames known now.
    pub(in crate::machine) async fn render_system(&self, body: &str) -> Result<String, MachineError> {
        let Ok(entry) = serde_json::from_str::<SystemEntry>(body) else { return Ok(body.to_owned()) };
        let actor = self.username_of(entry.actor).await?;
        let mut names = Vec::new();
        for a in entry.accounts.iter().filter(|a| entry.kind != "created" || **a != entry.actor) {
            names.push(self.username_of(*a).await?);
        }
        let names = names.join(", ");
        Ok(match entry.kind.as_str() {
            "created" if names.is_empty() => format!("{actor} created the group"),
            "created" => format!("{actor} created the group with {names}"),
            "added" => format!("{actor} added {names}"),
            "removed" => format!("{actor} removed {names}"),
            "left" => format!("{actor} left"),
            "role_changed" => {
                let role = match entry.role {
                    Some(GroupRole::Owner) => "an owner",
                    Some(GroupRole::Admin) => "an admin",
                    _ => "a member",
                };
                format!("{actor} made {names} {role}")
            }
            "settings_changed" => format!("{actor} changed the group's settings"),
            "deleted" => format!("{actor} deleted the group"),
            _ => format!("{actor} changed the group"),
        })
    }
}

fn add_members(group: &mut GroupRow, accounts: &[Uuid]) {
    for a in accounts {
        if group.role_of(*a).is_none() {
            group.members.push(MemberRow { account: *a, role: GroupRole::Member });
        }
    }
}

fn kind_name(kind: roster_change::Kind) -> &'static str {
    match kind {
        roster_change::Kind::Created => "created",
        roster_change::Kind::Added => "added",
        roster_change::Kind::Removed => "removed",
        roster_change::Kind::Left => "left",
        roster_change::Kind::RoleChanged => "role_changed",
        roster_change::Kind::SettingsChanged => "settings_changed",
        roster_change::Kind::Deleted => "deleted",
        roster_change::Kind::Unspecified => "changed",
    }
}
