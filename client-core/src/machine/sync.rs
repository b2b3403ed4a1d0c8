//! Keeping the devices of one account in step: read and trust decisions made on one device
//! travel as a `SyncMessage` to the account's other devices only (sealed, like a sent
//! transcript), and are applied there without any message to the contact.

use uuid::Uuid;

use super::Machine;
use super::receive::Sender;
use crate::content::{Content, DeviceLinked, ReadSync, SyncMessage, TrustSync, content::Body, sync_message};
use crate::error::MachineError;
use crate::store::{Batch, NewOutbox, OutboxKind};
use crate::types::{ConversationId, Event, MessageDirection, MessageId, MessageKind, MessageStatus, TrustState};

impl Machine {
    /// Queues `sync` for this account's other devices (into `batch`, committed by the caller).
    /// Nothing is queued when the server said this account has no other device; when that is
    /// not known yet, the send waits for the device list and is dropped if there is none.
    pub(super) fn queue_sync(&self, batch: &mut Batch, sync: sync_message::Kind, rng: &mut impl rand::Rng) {
        if self.own_devices.as_ref().is_some_and(Vec::is_empty) {
            return;
        }
        let content = Content {
            sender_username: self.account.username.clone(),
            body: Some(Body::Sync(SyncMessage { kind: Some(sync) })),
        };
        batch.outbox_add.push(NewOutbox {
            message_id: MessageId::random(rng),
            conversation: ConversationId::Direct(self.account.account_id),
            kind: OutboxKind::Sync,
            content: prost::Message::encode_to_vec(&content),
        });
    }

    /// A read sync for `ids` of `conversation` (read at `now`), to queue with
    /// [`Machine::queue_sync`].
    pub(super) fn read_sync(conversation: ConversationId, ids: &[MessageId], now: u64) -> sync_message::Kind {
        let (peer_account, group_id) = match conversation {
            ConversationId::Direct(peer) => (peer.as_bytes().to_vec(), Vec::new()),
            ConversationId::Group(g) => (Vec::new(), g.as_bytes().to_vec()),
        };
        sync_message::Kind::Read(ReadSync {
            peer_account,
            group_id,
            message_ids: ids.iter().map(|i| i.0.to_vec()).collect(),
            timestamp: now,
        })
    }

    /// A trust sync for the key this device knows for `account`, if it knows one.
    pub(super) async fn trust_sync(
        &self,
        account: Uuid,
        username: &str,
    ) -> Result<Option<sync_message::Kind>, MachineError> {
        let Some(identity_key) = self.store.identity(&hush_keys::aci_string(account)).await? else {
            return Ok(None);
        };
        Ok(Some(sync_message::Kind::Trust(TrustSync {
            account: account.as_bytes().to_vec(),
            username: username.to_owned(),
            identity_key,
        })))
    }

    /// Applies a sync from another device of this account (the caller checked the sender's
    /// account).
    pub(super) async fn apply_sync(
        &mut self,
        batch: &mut Batch,
        sender: &Sender,
        sync: SyncMessage,
    ) -> Result<(), MachineError> {
        if sender.account != self.account.account_id || sender.device == self.account.device_id {
            return Ok(());
        }
        match sync.kind {
            Some(sync_message::Kind::Read(read)) => self.apply_read_sync(batch, read).await,
            Some(sync_message::Kind::Trust(trust)) => self.apply_trust_sync(batch, trust).await,
            Some(sync_message::Kind::Linked(linked)) => {
                self.apply_device_linked(sender.device, linked);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Marks read exactly the listed messages this device has, in that conversation, that it
    /// has not read yet. Sends no receipt.
    async fn apply_read_sync(&mut self, batch: &mut Batch, read: ReadSync) -> Result<(), MachineError> {
        let conversation = match (Uuid::from_slice(&read.peer_account), Uuid::from_slice(&read.group_id)) {
            (_, Ok(group)) => ConversationId::Group(group),
            (Ok(peer), _) => ConversationId::Direct(peer),
            _ => return Ok(()),
        };
        let mut ids = Vec::new();
        for raw in &read.message_ids {
            let Some(id) = MessageId::from_slice(raw) else { continue };
            if let Some(m) = self.store.message(id).await?
                && m.conversation == conversation
                && m.direction == MessageDirection::Incoming
                && m.status == MessageStatus::Received
            {
                batch.message_status.push((id, MessageStatus::Read));
                ids.push(id);
            }
        }
        if !ids.is_empty() {
            let conversation = self.conversation_name(conversation).await?;
            self.events.push_back(Event::ReadElsewhere { conversation, message_ids: ids });
        }
        Ok(())
    }

    /// Trusts the contact again if the key this device knows for them is the trusted one;
    /// otherwise (another key, or no contact) ignores the sync.
    async fn apply_trust_sync(&mut self, batch: &mut Batch, trust: TrustSync) -> Result<(), MachineError> {
        let Ok(account) = Uuid::from_slice(&trust.account) else { return Ok(()) };
        let Some(contact) = self.store.contact(account).await? else { return Ok(()) };
        let known = self.store.identity(&hush_keys::aci_string(account)).await?;
        if known.as_deref() != Some(&trust.identity_key[..]) {
            tracing::info!("a trust decision from another own device names another identity key; ignored");
            return Ok(());
        }
        if contact.trust == TrustState::Trusted {
            return Ok(());
        }
        let username = contact.username.clone();
        batch.contacts.push(crate::store::ContactRow { trust: TrustState::Trusted, ..contact });
        self.events.push_back(Event::TrustedElsewhere { username });
        Ok(())
    }

    /// Tells this account's other devices that this device was just linked
    /// ([`DeviceLinked`]), and sends it.
    pub async fn announce_linked(
        &mut self,
        name: Option<String>,
        now: u64,
        rng: &mut (impl rand::Rng + rand::CryptoRng),
    ) -> Result<(), MachineError> {
        let mut batch = Batch::default();
        self.queue_sync(&mut batch, sync_message::Kind::Linked(DeviceLinked { name: name.unwrap_or_default() }), rng);
        self.store.commit(batch).await?;
        self.pump(now, rng).await
    }

    /// Another device of this account announced it was linked: it gets copies from now on.
    fn apply_device_linked(&mut self, device: u32, linked: DeviceLinked) {
        if let Some(list) = self.own_devices.as_mut()
            && !list.contains(&device)
        {
            list.push(device);
            list.sort_unstable();
        }
        let name = Some(linked.name).filter(|n| !n.is_empty());
        self.events.push_back(Event::DeviceLinked { device_id: device, name });
    }

    /// How many messages of `conversation` were received and not read yet on this device.
    pub async fn unread(&self, conversation: ConversationId) -> Result<usize, MachineError> {
        Ok(self
            .store
            .messages(conversation, usize::MAX)
            .await?
            .iter()
            .filter(|m| {
                m.kind == MessageKind::Text
                    && m.direction == MessageDirection::Incoming
                    && m.status == MessageStatus::Received
            })
            .count())
    }
}
