//! Sending to a group: one `group_encrypt` per message with this device's sender key, the
//! distributions the server asks for (`MISSING_DISTRIBUTIONS`), rotation when the epoch moved
//! (`STALE_EPOCH`, or a removal this device learned of first).

use hush_wire::frames::{
    DistributeRequest, GroupSendRequest, RecipientMessages, SendErrorCode, SendResponse, send_response,
};
use libsignal_protocol::{
    DeviceId, ProtocolAddress, SignalProtocolError, create_sender_key_distribution_message, group_encrypt,
};
use prost::Message as _;
use uuid::Uuid;

use super::super::limits::check_size;
use super::super::send::Seal;
use super::super::{MAX_DEVICE_FIXES, Machine, OutgoingRequest, Purpose, RestCall};
use crate::content::{self, Content, DataMessage, GroupDistribution, content::Body};
use crate::error::MachineError;
use crate::store::{Batch, GroupRow, OutboxKind, OutboxRow, SentLogRow};
use crate::types::{ConversationId, Event, GroupState, MessageDirection, MessageId, MessageKind, MessageStatus};

/// The distribution the outbox head (`seq`) waits for: per account, the devices to reach
/// (`None`: every device with a session, or all of them from fresh bundles).
#[derive(Debug, Clone)]
pub(in crate::machine) struct GroupDist {
    seq: u64,
    targets: Vec<(Uuid, Option<Vec<u32>>)>,
}

/// What the head does after a distribution step.
enum Step {
    /// Wait for bundles or the server's answer.
    Wait,
    /// The head is done with; the next may go.
    Done,
    /// Nothing to distribute: send the text.
    Proceed,
}

fn device_id(d: u32) -> Result<DeviceId, MachineError> {
    DeviceId::try_from(d).map_err(|_| MachineError::Content("bad device id".into()))
}

impl Machine {
    /// Queues a text to a group this account is a member of and returns its id.
    pub async fn enqueue_group_text<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        group: Uuid,
        body: &str,
        now: u64,
        rng: &mut R,
    ) -> Result<MessageId, MachineError> {
        if body.is_empty() {
            return Err(MachineError::Invalid("empty message".into()));
        }
        self.active_group(group).await?;
        let id = MessageId::random(rng);
        let data = DataMessage {
            message_id: id.0.to_vec(),
            lamport: 0,
            conversation_id: group.as_bytes().to_vec(),
            sent_at: now,
            body: body.to_owned(),
            group_id: group.as_bytes().to_vec(),
        };
        let content = Content { sender_username: self.account.username.clone(), body: Some(Body::Data(data)) };
        check_size(body.len(), &[&content], 1)?;
        let conversation = ConversationId::Group(group);
        let text = crate::machine::send::OutgoingText {
            id,
            conversation,
            body,
            lamport: 0,
            kind: OutboxKind::GroupText,
            content: &content,
        };
        self.queue_text(Batch::default(), text, now, rng).await
    }

    /// Marks every received text of a group as read, and tells each author (pairwise, one
    /// receipt per author).
    pub async fn mark_group_read<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        group: Uuid,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let mut by_author: std::collections::BTreeMap<Uuid, Vec<MessageId>> = Default::default();
        for m in self.store.messages(ConversationId::Group(group), usize::MAX).await? {
            if m.kind == MessageKind::Text
                && m.direction == MessageDirection::Incoming
                && m.status == MessageStatus::Received
            {
                by_author.entry(m.sender).or_default().push(m.id);
            }
        }
        if by_author.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        let mut read = Vec::new();
        for (author, ids) in by_author {
            batch.message_status.extend(ids.iter().map(|id| (*id, MessageStatus::Read)));
            let receipt = super::super::send::receipt(content::receipt_message::Kind::Read, &ids, now);
            self.queue_receipt(&mut batch, author, receipt, rng);
            read.extend(ids);
        }
        let sync = Machine::read_sync(ConversationId::Group(group), &read, now);
        self.queue_sync(&mut batch, sync, rng);
        self.store.commit(batch).await?;
        self.pump(now, rng).await
    }

    fn own_address(&self) -> Result<ProtocolAddress, MachineError> {
        Ok(ProtocolAddress::new(hush_keys::aci_string(self.account.account_id), device_id(self.account.device_id)?))
    }

    /// Sends the group outbox head (a text or a distribution), or asks for what it needs.
    /// True if the head is done with (failed for good) and the next one may go.
    pub(in crate::machine) async fn send_group_head<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        head: OutboxRow,
        now: u64,
        rng: &mut R,
    ) -> Result<bool, MachineError> {
        let ConversationId::Group(gid) = head.conversation else { return Ok(true) };
        let group = match self.store.group(gid).await? {
            Some(g) if g.state == GroupState::Active => g,
            _ => {
                self.fail_head(&head, "this account is not a member of the group").await?;
                return Ok(true);
            }
        };
        if self.group_dist.as_ref().is_some_and(|d| d.seq != head.seq) {
            self.group_dist = None;
        }
        let group = self.rotate_if_stale(group, &head).await?;
        let own = self.own_address()?;
        let has_key = self
            .signal
            .inner()
            .sender_key(&(own.name().to_owned(), self.account.device_id), group.distribution_id)
            .await?
            .is_some();
        if self.group_dist.is_none() && (!has_key || head.kind == OutboxKind::GroupDistribute) {
            let targets = if has_key && head.kind == OutboxKind::GroupDistribute {
                head.content.chunks_exact(16).filter_map(|c| Uuid::from_slice(c).ok()).map(|a| (a, None)).collect()
            } else {
                all_members(&group)
            };
            self.group_dist = Some(GroupDist { seq: head.seq, targets });
        }
        if let Some(dist) = self.group_dist.clone() {
            match self.distribute(&head, &group, dist, now, rng).await? {
                Step::Wait => return Ok(false),
                Step::Done => return Ok(true),
                Step::Proceed => {}
            }
        }
        if head.kind == OutboxKind::GroupDistribute {
            let mut batch = Batch::default();
            batch.outbox_remove.push(head.seq);
            self.store.commit(batch).await?;
            return Ok(true);
        }
        let content = Content::decode(&head.content[..]).map_err(|e| MachineError::Content(e.to_string()))?;
        let plain = content::encode(&content);
        let mut store = self.signal.clone();
        let message = match group_encrypt(&mut store, &own, group.distribution_id, &plain, rng).await {
            Ok(m) => m,
            Err(e) => {
                self.signal.discard();
                self.head_failed_attempt(now, &e.to_string(), false).await?;
                return Ok(false);
            }
        };
        // The chain step is committed before the ciphertext leaves.
        let (batch, _) = self.signal.take();
        self.store.commit(batch).await?;
        let request_id = self.next_request_id();
        let request = GroupSendRequest {
            request_id,
            group_id: gid.as_bytes().to_vec().into(),
            epoch: group.key_epoch.unwrap_or(group.epoch),
            content: message.serialized().to_vec().into(),
            idempotency_key: head.message_id.0.to_vec().into(),
            // A group text: offline members are woken now.
            urgent: true,
        };
        self.in_flight = Some((request_id, vec![head.seq]));
        self.requests.push_back(OutgoingRequest::GroupSend(request));
        Ok(false)
    }

    /// A sender key made under an older epoch is replaced: the own record is deleted (the next
    /// distribution makes a new chain under the same distribution id) and every member device
    /// gets the new one before the next message.
    async fn rotate_if_stale(&mut self, mut group: GroupRow, head: &OutboxRow) -> Result<GroupRow, MachineError> {
        if group.key_epoch == Some(group.epoch) {
            return Ok(group);
        }
        let own = (hush_keys::aci_string(self.account.account_id), self.account.device_id);
        let mut batch = Batch::default();
        if group.key_epoch.is_some() {
            tracing::info!("the group's epoch moved; making a new sender key");
        }
        batch.sender_keys.insert((own, group.distribution_id), None);
        group.key_epoch = Some(group.epoch);
        group.distributed.clear();
        batch.groups.insert(group.id, Some(group.clone()));
        self.store.commit(batch).await?;
        self.group_dist = Some(GroupDist { seq: head.seq, targets: all_members(&group) });
        Ok(group)
    }

    /// Sends this device's sender key to the targets' devices (fetching bundles first where
    /// there is no session).
    async fn distribute<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        head: &OutboxRow,
        group: &GroupRow,
        dist: GroupDist,
        now: u64,
        rng: &mut R,
    ) -> Result<Step, MachineError> {
        let me = self.account.account_id;
        // Only current members (the roster may have changed since the targets were named).
        let mut dist = dist;
        dist.targets.retain(|(a, _)| *a == me || group.role_of(*a).is_some());
        for (account, devices) in &dist.targets {
            let have = self.signal.session_devices(&hush_keys::aci_string(*account)).await?;
            let missing: Option<Vec<u32>> = match devices {
                Some(list) => Some(list.iter().copied().filter(|d| !have.contains(d)).collect()),
                None if *account == me => {
                    Some(self.own_devices.iter().flatten().copied().filter(|d| !have.contains(d)).collect())
                }
                None if have.is_empty() => None,
                None => Some(vec![]),
            };
            if missing.as_ref().is_some_and(|m| m.is_empty()) {
                continue;
            }
            let id = self
                .rest_call(RestCall::FetchBundles { account: *account, devices: missing }, Purpose::Bundles(*account));
            self.send_waits.insert(id);
        }
        if !self.send_waits.is_empty() {
            return Ok(Step::Wait);
        }
        let Some(cert) = self.cert.clone() else { return Ok(Step::Wait) };
        let own = self.own_address()?;
        let mut store = self.signal.clone();
        let skdm = create_sender_key_distribution_message(&own, group.distribution_id, &mut store, rng).await?;
        let content = Content {
            sender_username: self.account.username.clone(),
            body: Some(Body::Distribution(GroupDistribution {
                group_id: group.id.as_bytes().to_vec(),
                epoch: group.key_epoch.unwrap_or(group.epoch),
                sender_key_distribution: skdm.serialized().to_vec(),
                master_key: group.master_key.clone(),
            })),
        };
        let plain = content::encode(&content);
        let seal = Seal { cert: &cert.cert, now };
        let mut recipients = Vec::new();
        let mut reached = Vec::new();
        // Kept in the resend log like a text: a device that cannot decrypt its copy asks for
        // it again, and the messages it holds for this key then open.
        let mut sent_log = Vec::new();
        let unpadded = content.encode_to_vec();
        for (account, devices) in &dist.targets {
            let name = hush_keys::aci_string(*account);
            let have = self.signal.session_devices(&name).await?;
            let list: Vec<u32> = match devices {
                Some(list) => list.iter().copied().filter(|d| have.contains(d)).collect(),
                None => have,
            };
            let mut messages = Vec::new();
            let own_device = self.account.device_id;
            for device in list.into_iter().filter(|d| (*account, *d) != (me, own_device)) {
                match self.encrypt_for((&name, device), &plain, &seal, rng).await {
                    Ok(sealed) => {
                        sent_log.push(SentLogRow {
                            address: (name.clone(), device),
                            timestamp: sealed.tag,
                            peer: *account,
                            message_id: head.message_id,
                            content: unpadded.clone(),
                            sent_at: now,
                        });
                        messages.push(sealed.message);
                        reached.push((*account, device));
                    }
                    Err(MachineError::Signal(SignalProtocolError::SessionNotFound(address))) => {
                        self.signal.discard();
                        let mut batch = Batch::default();
                        batch.sessions.insert((address.name().to_owned(), u32::from(address.device_id())), None);
                        self.store.commit(batch).await?;
                        self.head_failed_attempt(now, "a session had expired and is being renewed", false).await?;
                        return Ok(Step::Wait);
                    }
                    Err(e) => {
                        self.signal.discard();
                        self.head_failed_attempt(now, &e.to_string(), false).await?;
                        return Ok(Step::Wait);
                    }
                }
            }
            if !messages.is_empty() {
                recipients.push(RecipientMessages { account_id: account.as_bytes().to_vec().into(), messages });
            }
        }
        // The new chain (if any) and the ratchet steps are committed before anything leaves.
        let (mut batch, _) = self.signal.take();
        batch.sent_log = sent_log;
        self.store.commit(batch).await?;
        if recipients.is_empty() {
            self.group_dist = None;
            if head.kind == OutboxKind::GroupDistribute {
                let mut batch = Batch::default();
                batch.outbox_remove.push(head.seq);
                self.store.commit(batch).await?;
                return Ok(Step::Done);
            }
            // A text with no one else to reach yet: send it (the server says who is missing).
            return Ok(Step::Proceed);
        }
        let request_id = self.next_request_id();
        let request = DistributeRequest {
            request_id,
            group_id: group.id.as_bytes().to_vec().into(),
            epoch: group.key_epoch.unwrap_or(group.epoch),
            recipients,
            idempotency_key: Default::default(),
        };
        self.in_flight = Some((request_id, vec![head.seq]));
        self.distributing = Some((request_id, reached));
        self.requests.push_back(OutgoingRequest::Distribute(request));
        Ok(Step::Wait)
    }

    /// The server's answer to a group send or a distribution for the head.
    pub(in crate::machine) async fn group_send_response(
        &mut self,
        gid: Uuid,
        head: OutboxRow,
        response: SendResponse,
        now: u64,
    ) -> Result<(), MachineError> {
        let distributed = self.distributing.take_if(|(id, _)| *id == response.request_id).map(|(_, d)| d);
        let Some(mut group) = self.store.group(gid).await? else { return Ok(()) };
        match response.result {
            Some(send_response::Result::Ok(ok)) => {
                self.device_fixes = 0;
                let mut batch = Batch::default();
                if let Some(devices) = distributed {
                    self.group_dist = None;
                    group.distributed.extend(devices);
                    batch.groups.insert(gid, Some(group));
                    if head.kind == OutboxKind::GroupDistribute {
                        batch.outbox_remove.push(head.seq);
                    }
                    self.store.commit(batch).await?;
                    return Ok(());
                }
                batch.outbox_remove.push(head.seq);
                batch.message_status.push((head.message_id, MessageStatus::Sent));
                batch.message_group_seq.push((head.message_id, ok.group_seq));
                if ok.group_seq > 0 {
                    // The group's stream may hand this device its own message back: nothing to do then.
                    batch.processed_group_seqs.push((gid, ok.group_seq));
                }
                self.store.commit(batch).await?;
                let to = ConversationId::group_name(gid);
                self.events.push_back(Event::Sent { id: head.message_id, to, server_timestamp: ok.server_timestamp });
            }
            Some(send_response::Result::Error(err)) => {
                let code = SendErrorCode::try_from(err.code).unwrap_or(SendErrorCode::Unspecified);
                let corrections = matches!(
                    code,
                    SendErrorCode::MissingDistributions | SendErrorCode::StaleEpoch | SendErrorCode::DeviceMismatch
                );
                if corrections {
                    self.device_fixes += 1;
                    if self.device_fixes > MAX_DEVICE_FIXES * 2 {
                        self.device_fixes = 0;
                        self.group_dist = None;
                        return self.fail_head(&head, "the group's members kept changing; retry later").await;
                    }
                }
                match code {
                    SendErrorCode::MissingDistributions => {
                        let targets = err
                            .mismatches
                            .iter()
                            .filter_map(|m| Uuid::from_slice(&m.account_id).ok().map(|a| (a, Some(m.missing.clone()))))
                            .collect();
                        self.group_dist = Some(GroupDist { seq: head.seq, targets });
                    }
                    SendErrorCode::StaleEpoch => {
                        // The next attempt makes a new sender key for the current epoch.
                        group.epoch = err.current_epoch;
                        self.group_dist = None;
                        let mut batch = Batch::default();
                        batch.groups.insert(gid, Some(group));
                        self.store.commit(batch).await?;
                    }
                    SendErrorCode::DeviceMismatch => {
                        // A named device is no member device (any more): learn the roster again.
                        self.fix_devices(&head, &err.mismatches).await?;
                        if let Some(d) = self.group_dist.as_mut() {
                            for m in &err.mismatches {
                                let Ok(account) = Uuid::from_slice(&m.account_id) else { continue };
                                d.targets.retain(|(a, _)| *a != account || m.extra.is_empty());
                            }
                        }
                        self.fetch_group(gid);
                    }
                    SendErrorCode::NotAMember => {
                        self.group_dist = None;
                        self.fail_head(&head, "the server says this account is not a member of the group").await?;
                    }
                    _ => self.send_refused(&head, &err, now).await?,
                }
            }
            None => self.head_failed_attempt(now, "empty answer from the server", false).await?,
        }
        Ok(())
    }
}

/// Every member account (this one too: its other devices), every device.
fn all_members(group: &GroupRow) -> Vec<(Uuid, Option<Vec<u32>>)> {
    group.members.iter().map(|m| (m.account, None)).collect()
}
