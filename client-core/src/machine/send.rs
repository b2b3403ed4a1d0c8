//! The send path: the persistent outbox, fan-out to every device, device-set corrections.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hush_wire::frames::{
    DeviceMessage, EnvelopeKind, RecipientMessages, SendErrorCode, SendRequest, SendResponse, send_response,
};
use libsignal_protocol::{
    ContentHint, DeviceId, ProtocolAddress, SignalProtocolError, UnidentifiedSenderMessageContent, message_encrypt,
    sealed_sender_encrypt_from_usmc,
};
use prost::Message as _;
use uuid::Uuid;

use super::limits::{check_size, oversized};
use super::{MAX_SEND_ATTEMPTS, Machine, OutgoingRequest};
use crate::content::{self, Content, DataMessage, ReceiptMessage, SentTranscript, TypingMessage, content::Body};
use crate::error::MachineError;
use crate::store::{Batch, ContactRow, MessageRow, NewOutbox, OutboxKind, OutboxRow, SentLogRow};
use crate::types::{
    ConversationId, Event, MessageDirection, MessageId, MessageKind, MessageStatus, OutboxEntry, OutboxState,
    TrustState,
};

/// Most receipts merged into one send.
const MAX_MERGED_RECEIPTS: usize = 200;

/// One device's ciphertext and the tag a retry request would name it by.
pub(super) struct Sealed {
    pub(super) message: DeviceMessage,
    pub(super) tag: u64,
}

/// What sealing needs besides the plaintext: the sender certificate and the time.
pub(super) struct Seal<'a> {
    pub(super) cert: &'a libsignal_protocol::SenderCertificate,
    pub(super) now: u64,
}

pub(crate) fn system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Backoff before attempt `n` (1-based): 1 s, 2 s, 4 s ... capped at 60 s.
/// A text this device wrote, to store and queue ([`Machine::queue_text`]).
pub(super) struct OutgoingText<'a> {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub body: &'a str,
    /// The conversation's Lamport clock (0 in groups, ordered by group seq).
    pub lamport: u64,
    /// `Text` or `GroupText`.
    pub kind: OutboxKind,
    pub content: &'a Content,
}

fn backoff_ms(attempts: u32) -> u64 {
    1000u64.saturating_mul(1 << attempts.saturating_sub(1).min(6)).min(60_000)
}

impl Machine {
    /// Queues a text message to `peer` (a known contact) and returns its id. Fails at once if
    /// the contact's identity key changed and is not trusted again.
    pub async fn enqueue_text<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        peer: &ContactRow,
        body: &str,
        now: u64,
        rng: &mut R,
    ) -> Result<MessageId, MachineError> {
        if body.is_empty() {
            return Err(MachineError::Invalid("empty message".into()));
        }
        if peer.account_id == self.account.account_id {
            return Err(MachineError::Invalid("cannot send a message to yourself".into()));
        }
        if peer.trust == TrustState::Changed {
            return Err(MachineError::IdentityUntrusted(peer.username.clone()));
        }
        let id = MessageId::random(rng);
        let conversation = ConversationId::Direct(peer.account_id);
        let lamport = self.store.clock(conversation).await? + 1;
        let data = DataMessage {
            message_id: id.0.to_vec(),
            lamport,
            conversation_id: content::direct_conversation_id(self.account.account_id, peer.account_id).to_vec(),
            sent_at: now,
            body: body.to_owned(),
            group_id: Default::default(),
        };
        let content = Content { sender_username: self.account.username.clone(), body: Some(Body::Data(data)) };
        let (peer_devices, own_devices) = self.device_counts(peer.account_id).await?;
        let transcript = if own_devices > 0 { self.transcript(&content, peer.account_id).await? } else { None };
        let contents: Vec<&Content> = std::iter::once(&content).chain(transcript.as_ref()).collect();
        check_size(body.len(), &contents, peer_devices + own_devices)?;
        let mut batch = Batch::default();
        batch.clocks.push((conversation, lamport));
        let text = OutgoingText { id, conversation, body, lamport, kind: OutboxKind::Text, content: &content };
        self.queue_text(batch, text, now, rng).await
    }

    /// Stores a text this device wrote (pending) with its outbox entry, in `batch`, then
    /// tries to send. Shared by one-to-one and group sends.
    pub(super) async fn queue_text<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        mut batch: Batch,
        text: OutgoingText<'_>,
        now: u64,
        rng: &mut R,
    ) -> Result<MessageId, MachineError> {
        batch.messages.push(MessageRow {
            id: text.id,
            conversation: text.conversation,
            sender: self.account.account_id,
            sender_device: self.account.device_id,
            direction: MessageDirection::Outgoing,
            body: text.body.to_owned(),
            sent_at: now,
            received_at: now,
            lamport: text.lamport,
            group_seq: 0,
            kind: MessageKind::Text,
            status: MessageStatus::Pending,
            local_seq: 0,
        });
        batch.outbox_add.push(NewOutbox {
            message_id: text.id,
            conversation: text.conversation,
            kind: text.kind,
            content: text.content.encode_to_vec(),
        });
        self.store.commit(batch).await?;
        self.pump(now, rng).await?;
        Ok(text.id)
    }

    /// How many devices a message to `peer` goes to: theirs (at least one, before their
    /// devices are known) and this account's other ones.
    async fn device_counts(&self, peer: Uuid) -> Result<(usize, usize), MachineError> {
        let peer_devices = self.signal.session_devices(&hush_keys::aci_string(peer)).await?.len().max(1);
        let own_devices = match &self.own_devices {
            Some(list) => list.len(),
            None => {
                let own = self.signal.session_devices(&hush_keys::aci_string(self.account.account_id)).await?;
                own.iter().filter(|d| **d != self.account.device_id).count()
            }
        };
        Ok((peer_devices, own_devices))
    }

    /// Queues a receipt to `peer` (into `batch`, committed by the caller).
    pub(crate) fn queue_receipt(
        &self,
        batch: &mut Batch,
        peer: Uuid,
        receipt: ReceiptMessage,
        rng: &mut impl rand::Rng,
    ) {
        let content = Content { sender_username: self.account.username.clone(), body: Some(Body::Receipt(receipt)) };
        batch.outbox_add.push(NewOutbox {
            message_id: MessageId::random(rng),
            conversation: ConversationId::Direct(peer),
            kind: OutboxKind::Receipt,
            content: content.encode_to_vec(),
        });
    }

    /// Marks everything received from `peer` as read, queues one read receipt, and tells this
    /// account's other devices which messages were read (they mark them read too, without a
    /// receipt).
    pub async fn mark_read<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        peer: &ContactRow,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let unread: Vec<MessageId> = self
            .store
            .messages(ConversationId::Direct(peer.account_id), usize::MAX)
            .await?
            .into_iter()
            .filter(|m| m.direction == MessageDirection::Incoming && m.status == MessageStatus::Received)
            .map(|m| m.id)
            .collect();
        if unread.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        batch.message_status.extend(unread.iter().map(|id| (*id, MessageStatus::Read)));
        let receipt = receipt(content::receipt_message::Kind::Read, &unread, now);
        self.queue_receipt(&mut batch, peer.account_id, receipt, rng);
        let sync = Machine::read_sync(ConversationId::Direct(peer.account_id), &unread, now);
        self.queue_sync(&mut batch, sync, rng);
        self.store.commit(batch).await?;
        self.pump(now, rng).await
    }

    /// Queues a failed message again, or makes a pending one due now. False if the outbox
    /// holds no text message `id`.
    pub async fn retry<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        id: MessageId,
        now: u64,
        rng: &mut R,
    ) -> Result<bool, MachineError> {
        let Some(mut row) = self.store.outbox_by_message(id).await?.filter(|r| r.kind.is_text()) else {
            return Ok(false);
        };
        if row.failed.is_none() {
            if row.not_before > now {
                row.not_before = 0;
                let mut batch = Batch::default();
                batch.outbox_update.push(row);
                self.store.commit(batch).await?;
            }
            self.pump(now, rng).await?;
            return Ok(true);
        }
        if let Some(peer) = row.conversation.peer()
            && let Some(contact) = self.store.contact(peer).await?
            && contact.trust == TrustState::Changed
        {
            return Err(MachineError::IdentityUntrusted(contact.username));
        }
        row.failed = None;
        row.last_error = None;
        row.attempts = 0;
        row.not_before = 0;
        let mut batch = Batch::default();
        batch.outbox_update.push(row);
        batch.message_status.push((id, MessageStatus::Pending));
        self.store.commit(batch).await?;
        self.pump(now, rng).await?;
        Ok(true)
    }

    /// Drops a pending or failed text message from the outbox and marks it failed
    /// ("cancelled"). False if the outbox holds no text message `id`; an error while the
    /// server's answer to it is awaited.
    pub async fn cancel<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        id: MessageId,
        now: u64,
        rng: &mut R,
    ) -> Result<bool, MachineError> {
        let Some(row) = self.store.outbox_by_message(id).await?.filter(|r| r.kind.is_text()) else {
            return Ok(false);
        };
        if self.in_flight.as_ref().is_some_and(|(_, seqs)| seqs.contains(&row.seq)) {
            return Err(MachineError::InFlight(id.to_string()));
        }
        let mut batch = Batch::default();
        batch.outbox_remove.push(row.seq);
        batch.message_status.push((id, MessageStatus::Failed("cancelled".into())));
        self.store.commit(batch).await?;
        self.pump(now, rng).await?;
        Ok(true)
    }

    /// The text messages in the outbox, pending and failed, in sending order.
    pub async fn outbox(&self) -> Result<Vec<OutboxEntry>, MachineError> {
        let mut out = Vec::new();
        for row in self.store.outbox_all(usize::MAX).await?.into_iter().filter(|r| r.kind.is_text()) {
            let body = self.store.message(row.message_id).await?.map(|m| m.body).unwrap_or_default();
            let (state, reason) = match row.failed {
                Some(reason) => (OutboxState::Failed, Some(reason)),
                None => (OutboxState::Pending, row.last_error),
            };
            out.push(OutboxEntry {
                id: row.message_id,
                to: self.conversation_name(row.conversation).await?,
                body,
                state,
                reason,
                attempts: row.attempts,
                not_before: row.not_before,
            });
        }
        Ok(out)
    }

    /// Sends a typing indicator to every known device of `peer` (online only; dropped offline).
    pub async fn send_typing<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        peer: &ContactRow,
        typing: bool,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        if peer.trust == TrustState::Changed {
            return Ok(());
        }
        let body = Body::Typing(TypingMessage { typing, timestamp: now });
        self.send_online_only(peer.account_id, body, now, rng).await.map(|_| ())
    }

    /// Seals `body` for every device of `account` this device has a session with and queues
    /// one online-only send (the server stores nothing and drops it for offline devices; its
    /// answer is ignored). Returns the request id, or `None` when nothing was sent
    /// (disconnected, no certificate yet, no session).
    pub(super) async fn send_online_only<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        account: Uuid,
        body: Body,
        now: u64,
        rng: &mut R,
    ) -> Result<Option<u64>, MachineError> {
        if !self.connected {
            return Ok(None);
        }
        let Some(cert) = self.cert.clone() else { return Ok(None) };
        let content = Content { sender_username: self.account.username.clone(), body: Some(body) };
        let name = hush_keys::aci_string(account);
        let devices = self.signal.session_devices(&name).await?;
        let plain = content::encode(&content);
        let mut messages = Vec::new();
        for device in devices {
            match self.encrypt_for((&name, device), &plain, &Seal { cert: &cert.cert, now }, rng).await {
                Ok(sealed) => messages.push(sealed.message),
                Err(e) => tracing::debug!(error = %e, "online-only content not encrypted for a device"),
            }
        }
        let (batch, _) = self.signal.take();
        if messages.is_empty() {
            return Ok(None);
        }
        self.store.commit(batch).await?;
        let request_id = self.next_request_id();
        let recipients = vec![RecipientMessages { account_id: account.as_bytes().to_vec().into(), messages }];
        self.requests.push_back(OutgoingRequest::Send(SendRequest {
            request_id,
            recipients,
            online_only: true,
            idempotency_key: Default::default(),
            urgent: false,
        }));
        Ok(Some(request_id))
    }

    /// Seals `plain` for one device (the ratchet step stays in the pending batch); the tag
    /// names the message in a retry request.
    pub(super) async fn encrypt_for<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        (name, device): (&str, u32),
        plain: &[u8],
        seal: &Seal<'_>,
        rng: &mut R,
    ) -> Result<Sealed, MachineError> {
        let (cert, now) = (seal.cert, seal.now);
        let device_id = DeviceId::try_from(device).map_err(|_| MachineError::Content("bad device id".into()))?;
        let address = ProtocolAddress::new(name.to_owned(), device_id);
        let (mut s1, mut s2) = (self.signal.clone(), self.signal.clone());
        let registration_id = libsignal_protocol::SessionStore::load_session(&s1, &address)
            .await?
            .map(|s| s.remote_registration_id())
            .transpose()?
            .unwrap_or(0);
        // What `sealed_sender_encrypt` does, keeping the inner message to compute its tag.
        let inner = message_encrypt(plain, &address, &mut s1, &mut s2, system_time(now), rng).await?;
        let tag = super::message_tag(inner.serialize());
        let usmc = UnidentifiedSenderMessageContent::new(
            inner.message_type(),
            cert.clone(),
            inner.serialize().to_vec(),
            ContentHint::Default,
            None,
        )?;
        let ciphertext = sealed_sender_encrypt_from_usmc(&address, &usmc, &s2, rng).await?;
        let message = DeviceMessage {
            device_id: device,
            registration_id,
            kind: EnvelopeKind::SealedSender as i32,
            content: ciphertext.into(),
        };
        Ok(Sealed { message, tag })
    }

    /// Sends the outbox head if everything it needs is at hand, or asks for what is missing.
    pub(super) async fn send_head<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        loop {
            if !self.connected || self.in_flight.is_some() || !self.send_waits.is_empty() {
                return Ok(());
            }
            let Some(head) = self.store.outbox_head().await? else { return Ok(()) };
            if head.not_before > now {
                return Ok(());
            }
            if !self.certificate_usable(now) {
                if let Some(id) = self.refresh_certificate(now) {
                    self.send_waits.insert(id);
                }
                return Ok(());
            }
            let Some(peer) = head.conversation.peer() else {
                if !self.send_group_head(head, now, rng).await? {
                    return Ok(());
                }
                continue;
            };
            let contact = self.store.contact(peer).await?;
            if let Some(c) = contact.as_ref().filter(|c| c.trust == TrustState::Changed) {
                let reason = MachineError::IdentityUntrusted(c.username.clone()).to_string();
                self.fail_head(&head, &reason).await?;
                continue;
            }
            // Wait for the own device list once per connection, so no own device misses a copy.
            if let (None, Some(id)) = (&self.own_devices, self.own_devices_fetch) {
                self.send_waits.insert(id);
                return Ok(());
            }
            if self.fetch_missing_devices(peer).await? {
                return Ok(());
            }
            if !self.encrypt_and_send(head, now, rng).await? {
                return Ok(());
            }
        }
    }

    /// Encrypts the head for every device and hands out the send. True if the head failed for
    /// good instead, so the next one may go.
    async fn encrypt_and_send<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        head: OutboxRow,
        now: u64,
        rng: &mut R,
    ) -> Result<bool, MachineError> {
        let Some(cert) = self.cert.clone() else { return Ok(false) };
        if head.kind == OutboxKind::RetryRequest {
            return self.send_retry_request(head, &cert.cert, now, rng).await.map(|()| false);
        }
        let Some(peer) = head.conversation.peer() else { return Ok(false) };
        let (content, seqs) = self.merged_content(&head).await?;
        let peer_name = hush_keys::aci_string(peer);
        let own_name = hush_keys::aci_string(self.account.account_id);
        let plain = content::encode(&content);
        let mut recipients = Vec::new();
        let mut peer_messages = Vec::new();
        let seal = Seal { cert: &cert.cert, now };
        // Texts are kept per device for a while, to be sent again if a device cannot decrypt
        // them; resends are not, so a message is resent at most once.
        let log = head.kind.is_text();
        let mut sent_log = Vec::new();
        let mut logged = |address: (&str, u32), tag: u64, content: &Content| {
            if log {
                sent_log.push(SentLogRow {
                    address: (address.0.to_owned(), address.1),
                    timestamp: tag,
                    peer,
                    message_id: head.message_id,
                    content: content.encode_to_vec(),
                    sent_at: now,
                });
            }
        };
        // A sync goes to the own account only: to its devices but this one.
        let to_self = peer == self.account.account_id;
        let result = async {
            for device in self.signal.session_devices(&peer_name).await? {
                if to_self && device == self.account.device_id {
                    continue;
                }
                let sealed = self.encrypt_for((&peer_name, device), &plain, &seal, rng).await?;
                logged((&peer_name, device), sealed.tag, &content);
                peer_messages.push(sealed.message);
            }
            let mut own_messages = Vec::new();
            // hushd wants every own device in a stored send. A text goes to them as a sent
            // transcript; a receipt as a copy, which those devices ignore.
            let own_copy = match self.transcript(&content, peer).await? {
                Some(transcript) => Some(transcript),
                None if head.kind == OutboxKind::Receipt => Some(content.clone()),
                None => None,
            };
            if let (Some(own_copy), false) = (own_copy, to_self) {
                let own_plain = content::encode(&own_copy);
                for device in self.signal.session_devices(&own_name).await? {
                    if device != self.account.device_id {
                        let sealed = self.encrypt_for((&own_name, device), &own_plain, &seal, rng).await?;
                        logged((&own_name, device), sealed.tag, &own_copy);
                        own_messages.push(sealed.message);
                    }
                }
            }
            Ok::<_, MachineError>(own_messages)
        }
        .await;
        let own_messages = match result {
            Ok(m) => m,
            Err(MachineError::Signal(SignalProtocolError::SessionNotFound(address))) => {
                // A session too old to use (or gone): drop it; the next attempt fetches a bundle.
                self.signal.discard();
                let mut batch = Batch::default();
                batch.sessions.insert((address.name().to_owned(), u32::from(address.device_id())), None);
                self.store.commit(batch).await?;
                self.head_failed_attempt(now, "a session had expired and is being renewed", false).await?;
                return Ok(false);
            }
            Err(e) => {
                self.signal.discard();
                self.head_failed_attempt(now, &e.to_string(), false).await?;
                return Ok(false);
            }
        };
        if to_self && peer_messages.is_empty() {
            // This account has no other device to tell.
            self.signal.discard();
            let mut batch = Batch::default();
            batch.outbox_remove.push(head.seq);
            self.store.commit(batch).await?;
            return Ok(true);
        }
        recipients.push(RecipientMessages { account_id: peer.as_bytes().to_vec().into(), messages: peer_messages });
        if !own_messages.is_empty() {
            let account_id = self.account.account_id.as_bytes().to_vec().into();
            recipients.push(RecipientMessages { account_id, messages: own_messages });
        }
        let request_id = self.next_request_id();
        // The idempotency key is the outbox message id (stable across reconnects and restarts)
        // and the last outbox entry merged into this send, so a resend that merges more receipts
        // is a new send rather than a duplicate that would drop them.
        let last = seqs.last().copied().unwrap_or(head.seq).to_be_bytes();
        let idempotency_key = [head.message_id.0.as_slice(), &last].concat().into();
        // A message (receipts merged into it included) wakes an offline phone now; a receipt alone waits
        // for the background wake-up.
        let urgent = head.kind.is_text() || head.kind == OutboxKind::Resend;
        let request = SendRequest { request_id, recipients, online_only: false, idempotency_key, urgent };
        // Refused here rather than by the server, which would close the connection on it.
        if let Some(reason) = oversized(&request) {
            self.signal.discard();
            self.fail_head(&head, &format!("the message is too large to send: {reason}")).await?;
            return Ok(true);
        }
        // The ratchet steps are committed before the ciphertexts leave: a message key is never
        // used twice, even if we crash right after sending.
        let (mut batch, _) = self.signal.take();
        batch.sent_log = sent_log;
        self.store.commit(batch).await?;
        self.in_flight = Some((request_id, seqs));
        self.requests.push_back(OutgoingRequest::Send(request));
        Ok(false)
    }

    /// The head's content and the outbox entries it covers: receipts of one kind to the same
    /// peer that follow each other in the outbox go out as one receipt.
    async fn merged_content(&self, head: &OutboxRow) -> Result<(Content, Vec<u64>), MachineError> {
        let decode =
            |row: &OutboxRow| Content::decode(&row.content[..]).map_err(|e| MachineError::Content(e.to_string()));
        let mut content = decode(head)?;
        let mut seqs = vec![head.seq];
        let Some(Body::Receipt(receipt)) = content.body.as_mut() else { return Ok((content, seqs)) };
        for row in self.store.outbox_pending(MAX_MERGED_RECEIPTS).await?.iter().skip(1) {
            if row.kind != OutboxKind::Receipt || row.conversation != head.conversation {
                break;
            }
            let Some(Body::Receipt(next)) = decode(row)?.body else { break };
            if next.kind != receipt.kind {
                break;
            }
            receipt.message_ids.extend(next.message_ids);
            receipt.timestamp = receipt.timestamp.max(next.timestamp);
            seqs.push(row.seq);
        }
        Ok((content, seqs))
    }

    /// The copy of an outgoing text for this account's other devices.
    async fn transcript(&self, content: &Content, peer: Uuid) -> Result<Option<Content>, MachineError> {
        let Some(Body::Data(data)) = &content.body else { return Ok(None) };
        let destination_username = self.store.contact(peer).await?.map(|c| c.username).unwrap_or_default();
        Ok(Some(Content {
            sender_username: self.account.username.clone(),
            body: Some(Body::Transcript(SentTranscript {
                destination_account: peer.as_bytes().to_vec(),
                destination_username,
                message: Some(data.clone()),
            })),
        }))
    }

    /// The server's answer to a send.
    pub async fn handle_send_response<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        response: SendResponse,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        self.presence_answered(response.request_id);
        let Some((_, seqs)) = self.in_flight.take_if(|(id, _)| *id == response.request_id) else {
            return Ok(()); // an online-only send (typing, presence), or an answer from an old connection
        };
        let Some(head) = self.store.outbox_head().await?.filter(|h| seqs.first() == Some(&h.seq)) else {
            return self.pump(now, rng).await;
        };
        if let ConversationId::Group(group) = head.conversation {
            self.group_send_response(group, head, response, now).await?;
            return self.pump(now, rng).await;
        }
        match response.result {
            Some(send_response::Result::Ok(ok)) => {
                self.device_fixes = 0;
                let mut batch = Batch::default();
                batch.outbox_remove.extend(seqs);
                if head.kind.is_text() {
                    batch.message_status.push((head.message_id, MessageStatus::Sent));
                }
                self.store.commit(batch).await?;
                if head.kind.is_text() {
                    let to = self.conversation_name(head.conversation).await?;
                    self.events.push_back(Event::Sent {
                        id: head.message_id,
                        to,
                        server_timestamp: ok.server_timestamp,
                    });
                }
            }
            Some(send_response::Result::Error(err)) => {
                let code = SendErrorCode::try_from(err.code).unwrap_or(SendErrorCode::Unspecified);
                match code {
                    SendErrorCode::DeviceMismatch => self.fix_devices(&head, &err.mismatches).await?,
                    _ => self.send_refused(&head, &err, now).await?,
                }
            }
            None => self.head_failed_attempt(now, "empty answer from the server", false).await?,
        }
        self.pump(now, rng).await
    }

    /// A refusal other than a device-set correction: wait (rate limit), back off (full
    /// mailbox, server error), or fail the head for good.
    pub(super) async fn send_refused(
        &mut self,
        head: &OutboxRow,
        err: &hush_wire::frames::SendError,
        now: u64,
    ) -> Result<(), MachineError> {
        let head = head.clone();
        let code = SendErrorCode::try_from(err.code).unwrap_or(SendErrorCode::Unspecified);
        match code {
            SendErrorCode::RateLimited => {
                let retry_after_ms = err.retry_after_ms.max(100);
                self.rate_limited_until = now + retry_after_ms;
                let mut row = head.clone();
                row.not_before = now + retry_after_ms;
                let mut batch = Batch::default();
                batch.outbox_update.push(row);
                self.store.commit(batch).await?;
                if head.kind.is_text() {
                    let to = self.conversation_name(head.conversation).await?;
                    self.events.push_back(Event::RateLimited { id: head.message_id, to, retry_after_ms });
                }
            }
            SendErrorCode::MailboxFull => {
                let reason = match err.message.as_str() {
                    "" => "a recipient's mailbox on the server is full".to_owned(),
                    said => format!("the server did not take the message: {said}"),
                };
                self.head_delayed(&head, now, "mailbox_full", &reason).await?;
            }
            SendErrorCode::Internal => {
                let reason = format!("the server could not store the message: {}", err.message);
                self.head_delayed(&head, now, "server_error", &reason).await?;
            }
            _ => self.fail_head(&head, &format!("the server refused the message: {}", err.message)).await?,
        }
        Ok(())
    }

    /// The server did not take the head for a reason that passes by itself: back off (at most
    /// a minute, and the next connection tries at once), never fail for good, tell the app.
    pub(super) async fn head_delayed(
        &mut self,
        head: &OutboxRow,
        now: u64,
        code: &str,
        reason: &str,
    ) -> Result<(), MachineError> {
        let mut row = head.clone();
        row.attempts = row.attempts.saturating_add(1);
        let retry_in_ms = backoff_ms(row.attempts);
        row.not_before = now + retry_in_ms;
        row.last_error = Some(reason.to_owned());
        tracing::info!(attempts = row.attempts, code, "the server did not take a message yet; backing off");
        let mut batch = Batch::default();
        batch.outbox_update.push(row);
        self.store.commit(batch).await?;
        if head.kind.is_text() {
            let to = self.conversation_name(head.conversation).await?;
            self.events.push_back(Event::SendDelayed {
                id: head.message_id,
                to,
                code: code.to_owned(),
                reason: reason.to_owned(),
                retry_in_ms,
            });
        }
        Ok(())
    }

    /// The connection closed with the server's close `code`. A close because a frame was too
    /// large refuses the send in flight for good: that message fails and the queue moves on
    /// (sending it again would only close the next connection too).
    pub async fn connection_closed(&mut self, code: Option<u16>) -> Result<(), MachineError> {
        let in_flight = self.in_flight.clone();
        self.disconnected();
        let Some((_, seqs)) = in_flight.filter(|_| code == Some(hush_wire::close::TOO_BIG)) else { return Ok(()) };
        let Some(head) = self.store.outbox_head().await?.filter(|h| seqs.first() == Some(&h.seq)) else {
            return Ok(());
        };
        let reason = format!(
            "the server refused the message as too large ({} {})",
            hush_wire::close::TOO_BIG,
            hush_wire::close::REASON_TOO_BIG
        );
        self.fail_head(&head, &reason).await
    }

    /// After a (re)connect the head is due at once, unless the server's rate limit holds it.
    pub(super) async fn head_due_on_connect(&mut self, now: u64) -> Result<(), MachineError> {
        let Some(mut head) = self.store.outbox_head().await? else { return Ok(()) };
        if head.not_before <= now || now < self.rate_limited_until {
            return Ok(());
        }
        head.not_before = now;
        let mut batch = Batch::default();
        batch.outbox_update.push(head);
        self.store.commit(batch).await?;
        Ok(())
    }

    /// One more failed attempt for the head: back off, or fail it for good.
    pub(super) async fn head_failed_attempt(
        &mut self,
        now: u64,
        reason: &str,
        permanent: bool,
    ) -> Result<(), MachineError> {
        let Some(mut head) = self.store.outbox_head().await? else { return Ok(()) };
        head.attempts += 1;
        if permanent || head.attempts >= MAX_SEND_ATTEMPTS {
            return self.fail_head(&head, reason).await;
        }
        tracing::info!(attempts = head.attempts, "send attempt failed; backing off");
        head.not_before = now + backoff_ms(head.attempts);
        head.last_error = Some(reason.to_owned());
        let mut batch = Batch::default();
        batch.outbox_update.push(head);
        self.store.commit(batch).await?;
        Ok(())
    }

    pub(super) async fn fail_head(&mut self, head: &OutboxRow, reason: &str) -> Result<(), MachineError> {
        let mut batch = Batch::default();
        if head.kind.is_text() {
            let mut row = head.clone();
            row.failed = Some(reason.to_owned());
            batch.outbox_update.push(row);
            batch.message_status.push((head.message_id, MessageStatus::Failed(reason.to_owned())));
        } else {
            batch.outbox_remove.push(head.seq);
        }
        self.store.commit(batch).await?;
        if head.kind.is_text() {
            let to = self.conversation_name(head.conversation).await?;
            self.events.push_back(Event::SendFailed { id: head.message_id, to, reason: reason.to_owned() });
        }
        Ok(())
    }
}

/// A receipt content for `ids`.
pub(crate) fn receipt(kind: content::receipt_message::Kind, ids: &[MessageId], now: u64) -> ReceiptMessage {
    ReceiptMessage { kind: kind as i32, message_ids: ids.iter().map(|i| i.0.to_vec()).collect(), timestamp: now }
}
