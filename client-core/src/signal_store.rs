//! [`SignalStore`]: libsignal's six store traits over a [`ClientStore`], with writes buffered.
//!
//! libsignal's functions take several `&mut dyn XStore` at once, so the adapter is a cheap
//! `Clone` handle: clone it once per argument. Every write goes into a shared pending
//! [`Batch`] (reads see it first) instead of the database. The machine takes the batch after
//! the operation, adds its own changes (the stored message, the processed envelope...) and
//! commits everything in one transaction. If the operation fails, the batch is dropped: libsignal
//! never leaves partial state, and neither do we.
//!
//! The handle uses `Rc`: it lives inside the one actor that runs the account's protocol
//! operations, as libsignal's `!Send` futures require.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use async_trait::async_trait;
use libsignal_protocol::{
    Direction, GenericSignedPreKey as _, IdentityChange, IdentityKey, IdentityKeyPair, IdentityKeyStore, KyberPreKeyId,
    KyberPreKeyRecord, KyberPreKeyStore, PreKeyId, PreKeyRecord, PreKeyStore, ProtocolAddress, PublicKey,
    SenderKeyRecord, SenderKeyStore, SessionRecord, SessionStore, SignalProtocolError, SignedPreKeyId,
    SignedPreKeyRecord, SignedPreKeyStore,
};
use uuid::Uuid;

use crate::error::StoreError;
use crate::store::{Address, Batch, ClientStore, KyberRow};

type Result<T> = std::result::Result<T, SignalProtocolError>;

fn store_err(e: StoreError) -> SignalProtocolError {
    SignalProtocolError::InvalidState("local store", e.to_string())
}

fn address(a: &ProtocolAddress) -> Address {
    (a.name().to_owned(), u32::from(a.device_id()))
}

#[derive(Default)]
struct Pending {
    batch: Batch,
    /// Account names whose stored identity key was replaced by this operation.
    identity_changes: Vec<String>,
}

/// libsignal's store traits for one local account, writing into a pending batch.
#[derive(Clone)]
pub struct SignalStore {
    store: Arc<dyn ClientStore>,
    identity: IdentityKeyPair,
    registration_id: u32,
    pending: Rc<RefCell<Pending>>,
}

impl std::fmt::Debug for SignalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalStore").field("registration_id", &self.registration_id).finish_non_exhaustive()
    }
}

impl SignalStore {
    /// An adapter for the account with `identity` and `registration_id`.
    pub fn new(store: Arc<dyn ClientStore>, identity: IdentityKeyPair, registration_id: u32) -> Self {
        Self { store, identity, registration_id, pending: Rc::new(RefCell::new(Pending::default())) }
    }

    /// Takes the buffered writes (and the names whose identity key was replaced), leaving the
    /// buffer empty.
    pub fn take(&self) -> (Batch, Vec<String>) {
        let p = std::mem::take(&mut *self.pending.borrow_mut());
        (p.batch, p.identity_changes)
    }

    /// Drops the buffered writes (after a failed operation).
    pub fn discard(&self) {
        drop(self.take());
    }

    /// Buffers a write made outside libsignal (e.g. a deleted session).
    pub fn with_batch<T>(&self, f: impl FnOnce(&mut Batch) -> T) -> T {
        f(&mut self.pending.borrow_mut().batch)
    }

    /// The underlying store.
    pub fn inner(&self) -> &Arc<dyn ClientStore> {
        &self.store
    }

    async fn identity_bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        if let Some(k) = self.pending.borrow().batch.identities.get(name) {
            return Ok(Some(k.clone()));
        }
        self.store.identity(name).await.map_err(store_err)
    }

    async fn stored_identity(&self, name: &str) -> Result<Option<IdentityKey>> {
        self.identity_bytes(name).await?.map(|b| IdentityKey::decode(&b)).transpose()
    }

    /// Device ids with a session for account name `name`, including buffered changes.
    pub async fn session_devices(&self, name: &str) -> std::result::Result<Vec<u32>, StoreError> {
        let mut devices = self.store.session_devices(name).await?;
        for ((n, d), v) in &self.pending.borrow().batch.sessions {
            if n == name {
                devices.retain(|x| x != d);
                if v.is_some() {
                    devices.push(*d);
                }
            }
        }
        devices.sort_unstable();
        Ok(devices)
    }
}

#[async_trait(?Send)]
impl IdentityKeyStore for SignalStore {
    async fn get_identity_key_pair(&self) -> Result<IdentityKeyPair> {
        Ok(self.identity)
    }

    async fn get_local_registration_id(&self) -> Result<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(&mut self, address: &ProtocolAddress, identity: &IdentityKey) -> Result<IdentityChange> {
        let name = address.name();
        let existing = self.stored_identity(name).await?;
        if existing.as_ref() == Some(identity) {
            return Ok(IdentityChange::NewOrUnchanged);
        }
        let mut p = self.pending.borrow_mut();
        p.batch.identities.insert(name.to_owned(), identity.serialize().to_vec());
        if existing.is_some() {
            p.identity_changes.push(name.to_owned());
            return Ok(IdentityChange::ReplacedExisting);
        }
        Ok(IdentityChange::NewOrUnchanged)
    }

    async fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        direction: Direction,
    ) -> Result<bool> {
        // Receiving: always trusted (decrypt checks after decrypting and would lose the message);
        // the machine surfaces the change and blocks sending instead.
        if matches!(direction, Direction::Receiving) {
            return Ok(true);
        }
        Ok(self.stored_identity(address.name()).await?.is_none_or(|k| &k == identity))
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> Result<Option<IdentityKey>> {
        self.stored_identity(address.name()).await
    }
}

#[async_trait(?Send)]
impl SessionStore for SignalStore {
    async fn load_session(&self, address_: &ProtocolAddress) -> Result<Option<SessionRecord>> {
        let a = address(address_);
        let pending = self.pending.borrow().batch.sessions.get(&a).cloned();
        let bytes = match pending {
            Some(v) => v,
            None => self.store.session(&a).await.map_err(store_err)?,
        };
        bytes.map(|b| SessionRecord::deserialize(&b)).transpose()
    }

    async fn store_session(&mut self, address_: &ProtocolAddress, record: &SessionRecord) -> Result<()> {
        let bytes = record.serialize()?;
        self.pending.borrow_mut().batch.sessions.insert(address(address_), Some(bytes));
        Ok(())
    }
}

#[async_trait(?Send)]
impl PreKeyStore for SignalStore {
    async fn get_pre_key(&self, id: PreKeyId) -> Result<PreKeyRecord> {
        let id = u32::from(id);
        let pending = self.pending.borrow().batch.pre_keys.get(&id).cloned();
        let bytes = match pending {
            Some(v) => v,
            None => self.store.pre_key(id).await.map_err(store_err)?,
        };
        PreKeyRecord::deserialize(&bytes.ok_or(SignalProtocolError::InvalidPreKeyId)?)
    }

    async fn save_pre_key(&mut self, id: PreKeyId, record: &PreKeyRecord) -> Result<()> {
        self.pending.borrow_mut().batch.pre_keys.insert(u32::from(id), Some(record.serialize()?));
        Ok(())
    }

    async fn remove_pre_key(&mut self, id: PreKeyId) -> Result<()> {
        self.pending.borrow_mut().batch.pre_keys.insert(u32::from(id), None);
        Ok(())
    }
}

#[async_trait(?Send)]
impl SignedPreKeyStore for SignalStore {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> Result<SignedPreKeyRecord> {
        let id = u32::from(id);
        let pending = self.pending.borrow().batch.signed_pre_keys.get(&id).cloned();
        let bytes = match pending {
            Some(v) => v,
            None => self.store.signed_pre_key(id).await.map_err(store_err)?,
        };
        SignedPreKeyRecord::deserialize(&bytes.ok_or(SignalProtocolError::InvalidSignedPreKeyId)?)
    }

    async fn save_signed_pre_key(&mut self, id: SignedPreKeyId, record: &SignedPreKeyRecord) -> Result<()> {
        self.pending.borrow_mut().batch.signed_pre_keys.insert(u32::from(id), Some(record.serialize()?));
        Ok(())
    }
}

impl SignalStore {
    async fn kyber_row(&self, id: u32) -> Result<Option<KyberRow>> {
        let pending = self.pending.borrow().batch.kyber_pre_keys.get(&id).cloned();
        match pending {
            Some(v) => Ok(v),
            None => self.store.kyber_pre_key(id).await.map_err(store_err),
        }
    }

    /// Buffers a Kyber prekey with its one-time / last-resort flag.
    pub fn save_kyber(&self, id: u32, record: &KyberPreKeyRecord, last_resort: bool) -> Result<()> {
        let row = KyberRow { record: record.serialize()?, last_resort };
        self.pending.borrow_mut().batch.kyber_pre_keys.insert(id, Some(row));
        Ok(())
    }
}

#[async_trait(?Send)]
impl KyberPreKeyStore for SignalStore {
    async fn get_kyber_pre_key(&self, id: KyberPreKeyId) -> Result<KyberPreKeyRecord> {
        let row = self.kyber_row(u32::from(id)).await?.ok_or(SignalProtocolError::InvalidKyberPreKeyId)?;
        KyberPreKeyRecord::deserialize(&row.record)
    }

    async fn save_kyber_pre_key(&mut self, id: KyberPreKeyId, record: &KyberPreKeyRecord) -> Result<()> {
        // Keys saved through libsignal's trait are one-time keys; last-resort keys go through
        // `save_kyber`.
        self.save_kyber(u32::from(id), record, false)
    }

    async fn mark_kyber_pre_key_used(
        &mut self,
        id: KyberPreKeyId,
        signed_id: SignedPreKeyId,
        base_key: &PublicKey,
    ) -> Result<()> {
        let (id, signed_id) = (u32::from(id), u32::from(signed_id));
        let row = self.kyber_row(id).await?.ok_or(SignalProtocolError::InvalidKyberPreKeyId)?;
        if !row.last_resort {
            self.pending.borrow_mut().batch.kyber_pre_keys.insert(id, None);
            return Ok(());
        }
        let base = base_key.serialize().to_vec();
        let seen_pending = self.pending.borrow().batch.kyber_used.contains(&(id, signed_id, base.clone()));
        if seen_pending || self.store.kyber_used(id, signed_id, &base).await.map_err(store_err)? {
            return Err(SignalProtocolError::InvalidMessage(
                libsignal_protocol::CiphertextMessageType::PreKey,
                "last-resort Kyber prekey reused with the same base key",
            ));
        }
        self.pending.borrow_mut().batch.kyber_used.push((id, signed_id, base));
        Ok(())
    }
}

#[async_trait(?Send)]
impl SenderKeyStore for SignalStore {
    async fn store_sender_key(&mut self, sender: &ProtocolAddress, dist: Uuid, record: &SenderKeyRecord) -> Result<()> {
        self.pending.borrow_mut().batch.sender_keys.insert((address(sender), dist), Some(record.serialize()?));
        Ok(())
    }

    async fn load_sender_key(&mut self, sender: &ProtocolAddress, dist: Uuid) -> Result<Option<SenderKeyRecord>> {
        let key = (address(sender), dist);
        let pending = self.pending.borrow().batch.sender_keys.get(&key).cloned();
        let bytes = match pending {
            Some(v) => v,
            None => self.store.sender_key(&key.0, dist).await.map_err(store_err)?,
        };
        bytes.map(|b| SenderKeyRecord::deserialize(&b)).transpose()
    }
}
