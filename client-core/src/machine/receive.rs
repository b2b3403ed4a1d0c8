//! The receive path: decrypt, drop duplicates, store, and only then acknowledge.

use hush_wire::frames::{Envelope, EnvelopeKind, GroupAck};
use libsignal_protocol::{DeviceId, SignalProtocolError, Timestamp, sealed_sender_decrypt};
use uuid::Uuid;

use super::Machine;
use crate::content::{self, Content, DataMessage, content::Body, receipt_message};
use crate::error::MachineError;
use crate::store::{Batch, MessageRow};
use crate::types::{
    ConversationId, Event, MessageDirection, MessageId, MessageKind, MessageStatus, Receipt, ReceiptKind,
};

/// Who sent a decrypted content (from the verified sender certificate, or the distribution a
/// group message's distribution id is bound to).
pub(super) struct Sender {
    pub(super) account: Uuid,
    pub(super) device: u32,
}

/// Where a text comes from and which conversation it belongs to.
pub(super) struct Origin<'a> {
    pub(super) sender: &'a Sender,
    /// The other party of the conversation (one-to-one).
    pub(super) peer: Uuid,
    pub(super) direction: MessageDirection,
}

/// How an envelope came to this device, which decides how it is acknowledged.
#[derive(Debug, Clone, PartialEq)]
enum Arrival {
    /// From the device's mailbox (seq > 0, group envelopes too): acked by seq.
    Mailbox(u64),
    /// From a group's stream (seq 0, group seq > 0): acked by (group id, group seq).
    Stream(GroupAck),
    /// Online-only (seq 0, no group seq): never stored by the server, never acked.
    OnlineOnly,
}

impl Arrival {
    fn of(envelope: &Envelope) -> Arrival {
        match (envelope.seq, envelope.group_seq) {
            (0, group_seq) if group_seq > 0 && !envelope.group_id.is_empty() => {
                Arrival::Stream(GroupAck { group_id: envelope.group_id.clone(), seq: group_seq })
            }
            (0, _) => Arrival::OnlineOnly,
            (seq, _) => Arrival::Mailbox(seq),
        }
    }
}

/// The (group, group seq) a group message or roster change is known by, whichever way it came:
/// the same envelope may come by the group's stream and as a mailbox reference.
fn group_key(envelope: &Envelope) -> Option<(Uuid, u64)> {
    let kind = EnvelopeKind::try_from(envelope.kind).ok()?;
    if !matches!(kind, EnvelopeKind::GroupMessage | EnvelopeKind::RosterChange) || envelope.group_seq == 0 {
        return None;
    }
    Uuid::from_slice(&envelope.group_id).ok().map(|group| (group, envelope.group_seq))
}

impl Machine {
    /// Processes one envelope: decrypts it, drops it if it is a duplicate (by envelope seq, by
    /// (group, group seq), by message id, or by libsignal's duplicate detection), stores its
    /// effect, and only then queues its ack: by seq for a mailbox envelope, by (group, group
    /// seq) for a group-stream one, none for an online-only one. A duplicate is acked the way it
    /// came, so a group envelope that comes both by stream and by mailbox is processed once and
    /// acked twice. An envelope that cannot be decrypted is reported and its sender asked to
    /// send it again (see `machine/retry.rs`). An error means nothing was committed and nothing
    /// is acked: the server delivers the envelope again later.
    pub async fn receive_envelope<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        envelope: Envelope,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let arrival = Arrival::of(&envelope);
        self.presence.arrival = envelope.server_timestamp;
        let group_key = group_key(&envelope);
        let events_before = self.events.len();
        if self.already_processed(&arrival, group_key).await? {
            self.queue_ack(arrival);
            return Ok(());
        }
        let mut batch = match self.open_envelope(&envelope, now, rng).await {
            Ok(batch) => batch,
            Err(MachineError::Store(e)) => {
                self.pending_identity_events.clear();
                self.signal.discard();
                return Err(MachineError::Store(e));
            }
            Err(e) => {
                self.pending_identity_events.clear();
                // Undecryptable, malformed or a duplicate: it will never become readable, so it
                // is dropped (and acked) rather than redelivered forever.
                self.signal.discard();
                tracing::debug!(seq = envelope.seq, group_seq = envelope.group_seq, error = %e, "envelope dropped");
                Batch::default()
            }
        };
        if let Arrival::Mailbox(seq) = arrival {
            batch.processed_envelopes.push(seq);
        }
        batch.processed_group_seqs.extend(group_key);
        self.store.commit(batch).await?;
        self.queue_ack(arrival);
        self.number_new_messages(events_before).await?;
        for username in std::mem::take(&mut self.pending_identity_events) {
            self.identity_event(Some(username));
        }
        self.pump(now, rng).await
    }

    /// Whether the envelope's effects are already committed: its mailbox seq or its (group,
    /// group seq) was processed.
    async fn already_processed(&self, arrival: &Arrival, group_key: Option<(Uuid, u64)>) -> Result<bool, MachineError> {
        if let Arrival::Mailbox(seq) = arrival
            && self.store.envelope_processed(*seq).await?
        {
            return Ok(true);
        }
        match group_key {
            Some((group, group_seq)) => Ok(self.store.group_seq_processed(group, group_seq).await?),
            None => Ok(false),
        }
    }

    fn queue_ack(&mut self, arrival: Arrival) {
        match arrival {
            Arrival::Mailbox(seq) => self.pending_acks.seqs.push(seq),
            Arrival::Stream(ack) => self.pending_acks.groups.push(ack),
            Arrival::OnlineOnly => {}
        }
    }

    async fn open_envelope<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        envelope: &Envelope,
        now: u64,
        rng: &mut R,
    ) -> Result<Batch, MachineError> {
        match EnvelopeKind::try_from(envelope.kind) {
            Ok(EnvelopeKind::SealedSender) => {}
            Ok(EnvelopeKind::GroupMessage) => return self.open_group_message(envelope, now, rng).await,
            Ok(EnvelopeKind::RosterChange) => return self.open_roster_change(envelope, now, rng).await,
            _ => return Err(MachineError::Content("unsupported envelope kind".into())),
        }
        let device =
            DeviceId::try_from(self.account.device_id).map_err(|_| MachineError::Content("device id".into()))?;
        let (mut s1, mut s2, mut s3, s4, mut s5) =
            (self.signal.clone(), self.signal.clone(), self.signal.clone(), self.signal.clone(), self.signal.clone());
        let result = sealed_sender_decrypt(
            &envelope.content,
            &self.trust_root,
            // The certificate must have been valid when the server accepted the envelope, not now:
            // an envelope may wait in the mailbox far longer than a certificate lives.
            Timestamp::from_epoch_millis(if envelope.server_timestamp > 0 { envelope.server_timestamp } else { now }),
            None,
            hush_keys::aci_string(self.account.account_id),
            device,
            &mut s1,
            &mut s2,
            &mut s3,
            &s4,
            &mut s5,
        )
        .await;
        let result = match result {
            Ok(r) => r,
            Err(SignalProtocolError::InvalidState("local store", e)) => {
                return Err(MachineError::Store(crate::error::StoreError::Corrupt(e)));
            }
            Err(e) => {
                // Nothing of the failed attempt is kept; the sealed layer still names the sender.
                self.signal.discard();
                return self.undecryptable(envelope, e, now, rng).await;
            }
        };
        let account = libsignal_protocol::Aci::parse_from_service_id_string(&result.sender_uuid)
            .map(Uuid::from)
            .ok_or_else(|| MachineError::Content("sender is not an account".into()))?;
        let sender = Sender { account, device: u32::from(result.device_id) };
        let content = content::decode(&result.message).map_err(MachineError::Content)?;
        let (mut batch, changes) = self.signal.take();
        for name in changes {
            let Some(account) = libsignal_protocol::Aci::parse_from_service_id_string(&name).map(Uuid::from) else {
                continue;
            };
            let Some(key) = batch.identities.get(&name).cloned() else { continue };
            // The sender's device already has a session with the new key; the others are stale.
            let username = self.identity_change_into(&mut batch, account, &key, Some(sender.device)).await?;
            self.pending_identity_events.extend(username);
        }
        self.apply_content(&mut batch, sender, content, now, rng).await?;
        batch.values.extend(self.take_presence_values());
        // What a distribution did to the sender-key store (and the messages it opened).
        let (more, _) = self.signal.take();
        batch.merge(more);
        Ok(batch)
    }

    async fn apply_content<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        batch: &mut Batch,
        sender: Sender,
        content: Content,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let own = sender.account == self.account.account_id;
        match content.body {
            // Group texts travel only as sender-key messages.
            Some(Body::Data(data)) if !data.group_id.is_empty() => Ok(()),
            Some(Body::Data(data)) if !own => {
                self.presence_activity((sender.account, sender.device), now).await?;
                self.incoming_text(batch, &sender, data, now, rng).await
            }
            Some(Body::Distribution(d)) => self.apply_distribution(batch, &sender, d, now, rng).await,
            Some(Body::Transcript(t)) if own => {
                let Some(data) = t.message else { return Ok(()) };
                let Ok(peer) = Uuid::from_slice(&t.destination_account) else { return Ok(()) };
                if self.store.contact(peer).await?.is_none() && !t.destination_username.is_empty() {
                    // Learned from our own device; the username is checked with the server.
                    self.lookup(peer);
                }
                let origin = Origin { sender: &sender, peer, direction: MessageDirection::Outgoing };
                self.store_text(batch, origin, data, now).await
            }
            Some(Body::Sync(s)) if own => self.apply_sync(batch, &sender, s).await,
            Some(Body::Receipt(r)) if !own => {
                let kind = match receipt_message::Kind::try_from(r.kind) {
                    Ok(receipt_message::Kind::Read) => ReceiptKind::Read,
                    _ => ReceiptKind::Delivered,
                };
                let status = if kind == ReceiptKind::Read { MessageStatus::Read } else { MessageStatus::Delivered };
                let mut ids = Vec::new();
                for raw in &r.message_ids {
                    let Some(id) = MessageId::from_slice(raw) else { continue };
                    // Only the recipient of a message may acknowledge it.
                    if let Some(m) = self.store.message(id).await?
                        && m.direction == MessageDirection::Outgoing
                        && self.may_acknowledge(&m, sender.account).await?
                    {
                        batch.message_status.push((id, status.clone()));
                        ids.push(id);
                    }
                }
                if !ids.is_empty() {
                    let from = self.username_of(sender.account).await?;
                    let receipt =
                        Receipt { kind, from, from_device: sender.device, message_ids: ids, timestamp: r.timestamp };
                    self.events.push_back(Event::Receipt(receipt));
                }
                Ok(())
            }
            Some(Body::Presence(p)) if !own => self.apply_presence((sender.account, sender.device), p, now).await,
            Some(Body::Typing(t)) if !own => {
                self.presence_activity((sender.account, sender.device), now).await?;
                let from = self.username_of(sender.account).await?;
                self.events.push_back(Event::Typing { from, from_device: sender.device, typing: t.typing });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether `account` may send a receipt for `m`: its recipient (one-to-one), or a member
    /// of its group.
    async fn may_acknowledge(&self, m: &MessageRow, account: Uuid) -> Result<bool, MachineError> {
        Ok(match m.conversation {
            ConversationId::Direct(peer) => peer == account,
            ConversationId::Group(g) => self.store.group(g).await?.is_some_and(|g| g.role_of(account).is_some()),
        })
    }

    /// Fills in the store position of messages announced since `from` (known once committed).
    pub(super) async fn number_new_messages(&mut self, from: usize) -> Result<(), MachineError> {
        for i in from..self.events.len() {
            if let Some(Event::Message(m)) = self.events.get(i) {
                let local_seq = self.store.message(m.id).await?.map(|r| r.local_seq).unwrap_or(0);
                if let Some(Event::Message(m)) = self.events.get_mut(i) {
                    m.local_seq = local_seq;
                }
            }
        }
        Ok(())
    }

    async fn incoming_text<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        batch: &mut Batch,
        sender: &Sender,
        data: DataMessage,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let Some(id) = MessageId::from_slice(&data.message_id) else { return Ok(()) };
        let fresh = self.store.message(id).await?.is_none();
        let origin = Origin { sender, peer: sender.account, direction: MessageDirection::Incoming };
        self.store_text(batch, origin, data, now).await?;
        // The receipt is committed with the message, so it is queued exactly once.
        if fresh {
            let receipt = super::send::receipt(receipt_message::Kind::Delivered, &[id], now);
            self.queue_receipt(batch, sender.account, receipt, rng);
        }
        Ok(())
    }

    pub(super) async fn store_text(
        &mut self,
        batch: &mut Batch,
        origin: Origin<'_>,
        data: DataMessage,
        now: u64,
    ) -> Result<(), MachineError> {
        let Origin { sender, peer, direction } = origin;
        let Some(id) = MessageId::from_slice(&data.message_id) else { return Ok(()) };
        if data.conversation_id != content::direct_conversation_id(self.account.account_id, peer) {
            return Err(MachineError::Content("conversation id does not match the sender".into()));
        }
        if self.store.message(id).await?.is_some() || batch.messages.iter().any(|m| m.id == id) {
            return Ok(()); // a duplicate by message id: already stored and shown
        }
        let conversation = ConversationId::Direct(peer);
        let row = MessageRow {
            id,
            conversation,
            sender: sender.account,
            sender_device: sender.device,
            direction,
            body: data.body,
            sent_at: data.sent_at,
            received_at: now,
            lamport: data.lamport,
            group_seq: 0,
            kind: MessageKind::Text,
            status: if direction == MessageDirection::Incoming { MessageStatus::Received } else { MessageStatus::Sent },
            local_seq: 0,
        };
        batch.clocks.push((conversation, data.lamport));
        batch.messages.push(row.clone());
        match self.store.contact(peer).await? {
            Some(c) => {
                let record = self.record(row, Some(&c.username)).await?;
                self.events.push_back(Event::Message(record));
            }
            None => {
                self.deferred.entry(peer).or_default().push(row);
                self.lookup(peer);
            }
        }
        Ok(())
    }
}
