//! Undecryptable envelopes: tell the user, ask the sender to send again, and answer such
//! requests, as Signal does.
//!
//! **Receiving side.** When `sealed_sender_decrypt` fails (a lost or corrupted session, a
//! used-up prekey...), the sealed layer is opened on its own with
//! `sealed_sender_decrypt_to_usmc`, which needs only this device's identity key. The sender
//! certificate in it is checked against the trust root, so we learn who sent the envelope
//! even though its content stays unreadable. The app gets [`Event::DecryptionFailed`], and
//! a [`DecryptionErrorMessage`] naming the message goes back to the sender: a
//! [`PlaintextContent`] inside sealed sender (no session needed), sent through the outbox as
//! an [`OutboxKind::RetryRequest`].
//!
//! **Naming the message.** A retry request names the message by the `timestamp` field of
//! `DecryptionErrorMessage`. hush envelopes carry no sender timestamp the receiver could read
//! without decrypting (only the server's), so the value is the message's *tag*: 63 bits of
//! SHA-256 over the inner Signal message (the bytes inside the sealed layer). The sender
//! computes it when it encrypts and the receiver when it unseals; it is unique per sender
//! device because every Signal message has its own ratchet key, counter and MAC.
//!
//! **Sending side.** Every text sent is kept per recipient device in the resend log of the
//! [`crate::store::ClientStore`] (bounded: [`crate::store::SENT_LOG_CAPACITY`] entries, the
//! oldest dropped first). A retry request for one of this device's messages drops the
//! session with the asking device if the request's ratchet key is the session's current one
//! (so the next send fetches a fresh bundle and starts a new session) and queues the logged
//! content again as an [`OutboxKind::Resend`]. The message keeps its id, so devices that
//! already have it drop the copy.
//!
//! **No storms.** A device sends at most [`MAX_REQUESTS_PER_WINDOW`] retry requests per
//! sender device per [`RETRY_WINDOW_MS`]; a sender rebuilds a session with one device at most
//! once per window; a logged message is resent at most once (its entry is removed), and a
//! resend is not logged, so it is never resent again. Two clients that cannot decrypt each
//! other exchange a bounded number of envelopes and then stop. These limits live in memory:
//! a restart resets them, which costs at most one more round.

use std::collections::HashMap;

use hush_wire::frames::{DeviceMessage, Envelope, EnvelopeKind, RecipientMessages, SendRequest};
use libsignal_protocol::{
    CiphertextMessageType, ContentHint, DecryptionErrorMessage, PlaintextContent, ProtocolAddress, SignalProtocolError,
    Timestamp, UnidentifiedSenderMessageContent, extract_decryption_error_message_from_serialized_content,
    sealed_sender_decrypt_to_usmc, sealed_sender_encrypt_from_usmc,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Machine, OutgoingRequest};
use crate::error::MachineError;
use crate::store::{Address, Batch, NewOutbox, OutboxKind, OutboxRow};
use crate::types::{ConversationId, Event, MessageId};

/// The window of the retry rate limits, ms.
pub const RETRY_WINDOW_MS: u64 = 60_000;
/// Retry requests sent per sender device per window.
pub const MAX_REQUESTS_PER_WINDOW: u32 = 5;

/// What the retry logic did since the machine started (for tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryStats {
    /// Envelopes that could not be decrypted (each reported as [`Event::DecryptionFailed`]).
    pub undecryptable: u64,
    /// Retry requests queued to senders.
    pub requests_sent: u64,
    /// Retry requests not sent because of the rate limit.
    pub requests_limited: u64,
    /// Retry requests received for this device's messages.
    pub requests_received: u64,
    /// Sessions dropped so that a new one is started.
    pub sessions_rebuilt: u64,
    /// Messages queued again from the resend log.
    pub resends: u64,
}

/// The in-memory rate limits and counters.
#[derive(Debug, Default)]
pub(super) struct RetryState {
    /// Per sender device: (window start, requests sent in it).
    requests: HashMap<Address, (u64, u32)>,
    /// Per peer device: when its session was last rebuilt because of a retry request.
    rebuilt: HashMap<Address, u64>,
    pub(super) stats: RetryStats,
}

impl RetryState {
    fn allow_request(&mut self, address: &Address, now: u64) -> bool {
        let entry = self.requests.entry(address.clone()).or_insert((now, 0));
        if now.saturating_sub(entry.0) >= RETRY_WINDOW_MS {
            *entry = (now, 0);
        }
        if entry.1 >= MAX_REQUESTS_PER_WINDOW {
            return false;
        }
        entry.1 += 1;
        true
    }

    fn allow_rebuild(&mut self, address: &Address, now: u64) -> bool {
        match self.rebuilt.get(address) {
            Some(&at) if now.saturating_sub(at) < RETRY_WINDOW_MS => false,
            _ => {
                self.rebuilt.insert(address.clone(), now);
                true
            }
        }
    }
}

/// The tag that names a message in a retry request: 63 bits of SHA-256 over the inner Signal
/// message (63 so that it fits a signed 64-bit database column).
pub fn message_tag(inner: &[u8]) -> u64 {
    let digest = Sha256::digest(inner);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) >> 1
}

/// Who sealed an envelope, from its verified sender certificate.
struct Sealer {
    account: Uuid,
    device: u32,
}

impl Machine {
    /// What the retry logic did so far.
    pub fn retry_stats(&self) -> RetryStats {
        self.retries.stats
    }

    /// `sealed_sender_decrypt` failed with `error`. Returns the batch to commit: a retry
    /// request to queue, or (for a retry request we received) a dropped session and a resend.
    /// An error means the envelope is dropped without more ado (a duplicate, a forgery, or
    /// something not meant for us).
    pub(super) async fn undecryptable<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        envelope: &Envelope,
        error: SignalProtocolError,
        now: u64,
        rng: &mut R,
    ) -> Result<Batch, MachineError> {
        if matches!(error, SignalProtocolError::DuplicatedMessage(..) | SignalProtocolError::SealedSenderSelfSend) {
            return Err(error.into());
        }
        let usmc = sealed_sender_decrypt_to_usmc(&envelope.content, &self.signal).await?;
        let cert = usmc.sender()?;
        let at = if envelope.server_timestamp > 0 { envelope.server_timestamp } else { now };
        if !cert.validate(&self.trust_root, Timestamp::from_epoch_millis(at))? {
            return Err(MachineError::Content("the sender certificate does not verify".into()));
        }
        let account = libsignal_protocol::Aci::parse_from_service_id_string(cert.sender_uuid()?)
            .map(Uuid::from)
            .ok_or_else(|| MachineError::Content("sender is not an account".into()))?;
        let sealer = Sealer { account, device: u32::from(cert.sender_device_id()?) };
        if (sealer.account, sealer.device) == (self.account.account_id, self.account.device_id) {
            return Err(MachineError::Content("an envelope from this device".into()));
        }
        match usmc.msg_type()? {
            CiphertextMessageType::Plaintext => self.retry_request_received(&usmc, sealer, now).await,
            CiphertextMessageType::Whisper | CiphertextMessageType::PreKey => {
                // The error may name the contact's address: only at debug level.
                tracing::debug!(error = %error, "undecryptable envelope");
                tracing::info!("an envelope could not be decrypted; asking its sender to send it again");
                self.request_retry(&usmc, sealer, now, rng).await
            }
            CiphertextMessageType::SenderKey => Err(error.into()),
        }
    }

    async fn request_retry<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        usmc: &UnidentifiedSenderMessageContent,
        sealer: Sealer,
        now: u64,
        rng: &mut R,
    ) -> Result<Batch, MachineError> {
        let contents = usmc.contents()?;
        let tag = Timestamp::from_epoch_millis(message_tag(contents));
        let request = DecryptionErrorMessage::for_original(contents, usmc.msg_type()?, tag, sealer.device)?;
        let address = (hush_keys::aci_string(sealer.account), sealer.device);
        self.retries.stats.undecryptable += 1;
        let mut batch = Batch::default();
        let retry_requested = self.retries.allow_request(&address, now);
        if retry_requested {
            self.retries.stats.requests_sent += 1;
            batch.outbox_add.push(NewOutbox {
                message_id: MessageId::random(rng),
                conversation: ConversationId::Direct(sealer.account),
                kind: OutboxKind::RetryRequest,
                content: request.serialized().to_vec(),
            });
        } else {
            self.retries.stats.requests_limited += 1;
            tracing::warn!("too many undecryptable envelopes from one device; not asking it to resend this one");
        }
        let from = self.username_of(sealer.account).await?;
        self.events.push_back(Event::DecryptionFailed { from, from_device: sealer.device, retry_requested });
        Ok(batch)
    }

    async fn retry_request_received(
        &mut self,
        usmc: &UnidentifiedSenderMessageContent,
        sealer: Sealer,
        now: u64,
    ) -> Result<Batch, MachineError> {
        let plaintext = PlaintextContent::try_from(usmc.contents()?)?;
        let request = extract_decryption_error_message_from_serialized_content(plaintext.body())?;
        if request.device_id() != self.account.device_id {
            return Ok(Batch::default()); // about a message another device of this account sent
        }
        self.retries.stats.requests_received += 1;
        let address = (hush_keys::aci_string(sealer.account), sealer.device);
        let mut batch = Batch::default();
        if let Some(key) = request.ratchet_key() {
            let protocol_address = ProtocolAddress::new(
                address.0.clone(),
                libsignal_protocol::DeviceId::try_from(sealer.device)
                    .map_err(|_| MachineError::Content("bad device id".into()))?,
            );
            let session = libsignal_protocol::SessionStore::load_session(&self.signal, &protocol_address).await?;
            let current = session.map(|s| s.current_ratchet_key_matches(key)).transpose()?.unwrap_or(false);
            if current && self.retries.allow_rebuild(&address, now) {
                self.retries.stats.sessions_rebuilt += 1;
                batch.sessions.insert(address.clone(), None);
            }
        }
        let timestamp = request.timestamp().epoch_millis();
        if let Some(logged) = self.store.sent_log(&address, timestamp).await? {
            self.retries.stats.resends += 1;
            batch.sent_log_remove.push((address, timestamp));
            // A copy logged for one of our own devices is a sent transcript: it goes back to
            // our own account (the device that asked), not to the contact it was written to.
            let to = if sealer.account == self.account.account_id { sealer.account } else { logged.peer };
            batch.outbox_add.push(NewOutbox {
                message_id: logged.message_id,
                conversation: ConversationId::Direct(to),
                kind: OutboxKind::Resend,
                content: logged.content,
            });
        }
        Ok(batch)
    }

    /// Sends the outbox head, a retry request, to every device of its peer that has a session
    /// (the server wants the whole device set; the devices it does not name ignore it). The
    /// usual device-set corrections fill in devices without a session.
    pub(super) async fn send_retry_request<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        head: OutboxRow,
        cert: &libsignal_protocol::SenderCertificate,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let own = self.account.account_id;
        let Some(peer) = head.conversation.peer() else { return Ok(()) };
        let mut accounts = vec![peer];
        if peer != own {
            // The server wants a copy for every other own device too; they ignore it (it names
            // a device of the peer).
            accounts.push(own);
        }
        let mut recipients = Vec::new();
        for account in accounts {
            let name = hush_keys::aci_string(account);
            let mut messages = Vec::new();
            for device in self.signal.session_devices(&name).await? {
                if (account, device) == (own, self.account.device_id) {
                    continue;
                }
                match self.seal_retry_request((&name, device), &head.content, cert, rng).await {
                    Ok(m) => messages.push(m),
                    Err(e) => {
                        self.signal.discard();
                        return self.head_failed_attempt(now, &e.to_string(), false).await;
                    }
                }
            }
            if !messages.is_empty() {
                recipients.push(RecipientMessages { account_id: account.as_bytes().to_vec().into(), messages });
            }
        }
        self.signal.discard();
        let request_id = self.next_request_id();
        self.in_flight = Some((request_id, vec![head.seq]));
        // Keyed by its outbox entry, so a resend after a lost answer is not stored twice.
        let idempotency_key = [head.message_id.0.as_slice(), &head.seq.to_be_bytes()].concat().into();
        // A retry request is protocol work: it never wakes a phone at once.
        let request = SendRequest { request_id, recipients, online_only: false, idempotency_key, urgent: false };
        self.requests.push_back(OutgoingRequest::Send(request));
        Ok(())
    }

    /// Seals a retry request (a [`PlaintextContent`]) for one device: no session is needed.
    async fn seal_retry_request<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        (name, device): (&str, u32),
        request: &[u8],
        cert: &libsignal_protocol::SenderCertificate,
        rng: &mut R,
    ) -> Result<DeviceMessage, MachineError> {
        let device_id = libsignal_protocol::DeviceId::try_from(device)
            .map_err(|_| MachineError::Content("bad device id".into()))?;
        let address = ProtocolAddress::new(name.to_owned(), device_id);
        let registration_id = libsignal_protocol::SessionStore::load_session(&self.signal, &address)
            .await?
            .map(|s| s.remote_registration_id())
            .transpose()?
            .unwrap_or(0);
        let request = DecryptionErrorMessage::try_from(request)?;
        let content = PlaintextContent::from(request);
        let usmc = UnidentifiedSenderMessageContent::new(
            CiphertextMessageType::Plaintext,
            cert.clone(),
            content.serialized().to_vec(),
            ContentHint::Default,
            None,
        )?;
        let content = sealed_sender_encrypt_from_usmc(&address, &usmc, &self.signal, rng).await?;
        Ok(DeviceMessage {
            device_id: device,
            registration_id,
            kind: EnvelopeKind::SealedSender as i32,
            content: content.into(),
        })
    }
}
