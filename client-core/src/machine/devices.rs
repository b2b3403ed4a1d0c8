//! Device sets and sessions: bundles of devices without a session, the server's device-set
//! corrections, new sessions from bundles, and identity-key changes seen on the way.

use hush_wire::api::PreKeyBundles;
use libsignal_protocol::{
    DeviceId, IdentityKey, PreKeyBundle, ProtocolAddress, PublicKey, SignalProtocolError, kem, process_prekey_bundle,
};
use uuid::Uuid;

use super::send::system_time;
use super::{MAX_DEVICE_FIXES, Machine, Purpose, RestCall};
use crate::error::MachineError;
use crate::store::{Batch, OutboxRow};
use crate::types::{Event, TrustState};

impl Machine {
    /// Asks for bundles of devices without a session; true if the head must wait for them.
    pub(super) async fn fetch_missing_devices(&mut self, peer: Uuid) -> Result<bool, MachineError> {
        let own = self.account.account_id;
        let peer_devices = self.signal.session_devices(&hush_keys::aci_string(peer)).await?;
        // A sync goes to the own account: its devices are the own device list below.
        if peer != own && peer_devices.is_empty() {
            let id = self.rest_call(RestCall::FetchBundles { account: peer, devices: None }, Purpose::Bundles(peer));
            self.send_waits.insert(id);
        }
        let own_sessions = self.signal.session_devices(&hush_keys::aci_string(own)).await?;
        let missing: Vec<u32> =
            self.own_devices.iter().flatten().copied().filter(|d| !own_sessions.contains(d)).collect();
        if !missing.is_empty() {
            let id =
                self.rest_call(RestCall::FetchBundles { account: own, devices: Some(missing) }, Purpose::Bundles(own));
            self.send_waits.insert(id);
        }
        Ok(!self.send_waits.is_empty())
    }

    /// Fixes this device's idea of a recipient's (or its own) device set after the server's
    /// refusal: drops sessions of devices that are gone or stale, asks for bundles of the
    /// missing ones.
    pub(super) async fn fix_devices(
        &mut self,
        head: &OutboxRow,
        mismatches: &[hush_wire::frames::DeviceMismatch],
    ) -> Result<(), MachineError> {
        self.device_fixes += 1;
        if self.device_fixes > MAX_DEVICE_FIXES {
            self.device_fixes = 0;
            return self.fail_head(head, "the recipient's device list kept changing; retry later").await;
        }
        let mut batch = Batch::default();
        for m in mismatches {
            let Ok(account) = Uuid::from_slice(&m.account_id) else { continue };
            let name = hush_keys::aci_string(account);
            for device in m.extra.iter().chain(&m.stale) {
                batch.sessions.insert((name.clone(), *device), None);
            }
            if account == self.account.account_id {
                let known = self.own_devices.get_or_insert_with(Vec::new);
                known.retain(|d| !m.extra.contains(d));
                for d in &m.missing {
                    if !known.contains(d) {
                        known.push(*d);
                    }
                }
            }
            let fetch: Vec<u32> = m.missing.iter().chain(&m.stale).copied().collect();
            if !fetch.is_empty() {
                let id =
                    self.rest_call(RestCall::FetchBundles { account, devices: Some(fetch) }, Purpose::Bundles(account));
                self.send_waits.insert(id);
            }
        }
        self.store.commit(batch).await?;
        Ok(())
    }

    /// Starts sessions from fetched bundles. A changed identity key marks the contact as
    /// changed (which blocks sending) and drops the old sessions.
    pub(super) async fn process_bundles<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        account: Uuid,
        bundles: PreKeyBundles,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        if bundles.account_id != account {
            return Err(MachineError::Content("the server sent bundles of another account".into()));
        }
        if bundles.devices.is_empty() {
            return Ok(());
        }
        let name = hush_keys::aci_string(account);
        let identity = IdentityKey::decode(&bundles.identity_key.0)?;
        if let Some(stored) = self.store.identity(&name).await?
            && stored != bundles.identity_key.0
        {
            self.identity_changed(account, &bundles.identity_key.0).await?;
        }
        for d in &bundles.devices {
            let bundle = to_bundle(d, identity)?;
            let device_id =
                DeviceId::try_from(d.device_id).map_err(|_| MachineError::Content("bad device id".into()))?;
            let address = ProtocolAddress::new(name.clone(), device_id);
            let (mut s1, mut s2) = (self.signal.clone(), self.signal.clone());
            if let Err(e) = process_prekey_bundle(&address, &mut s1, &mut s2, &bundle, system_time(now), rng).await {
                self.signal.discard();
                return Err(e.into());
            }
        }
        let (batch, _) = self.signal.take();
        self.store.commit(batch).await?;
        Ok(())
    }

    /// Records a new identity key for `account`: drops its sessions, marks the contact as
    /// changed (which blocks sending) and tells the app.
    pub(super) async fn identity_changed(&mut self, account: Uuid, new_key: &[u8]) -> Result<(), MachineError> {
        let mut batch = Batch::default();
        let username = self.identity_change_into(&mut batch, account, new_key, None).await?;
        self.store.commit(batch).await?;
        self.identity_event(username);
        Ok(())
    }

    /// Adds an identity change to `batch`: the new key, no more sessions (but `keep_device`'s,
    /// which already uses the new key), the contact marked as changed. Returns the username to
    /// report once the batch is committed.
    pub(super) async fn identity_change_into(
        &mut self,
        batch: &mut Batch,
        account: Uuid,
        new_key: &[u8],
        keep_device: Option<u32>,
    ) -> Result<Option<String>, MachineError> {
        let name = hush_keys::aci_string(account);
        batch.identities.insert(name.clone(), new_key.to_vec());
        if account == self.account.account_id {
            return Ok(None);
        }
        for device in self.signal.session_devices(&name).await?.into_iter().filter(|d| Some(*d) != keep_device) {
            batch.sessions.insert((name.clone(), device), None);
        }
        let Some(mut contact) = self.store.contact(account).await? else { return Ok(None) };
        contact.trust = TrustState::Changed;
        let username = contact.username.clone();
        batch.contacts.push(contact);
        Ok(Some(username))
    }

    pub(super) fn identity_event(&mut self, username: Option<String>) {
        if let Some(username) = username {
            tracing::warn!("a contact's identity key changed; sending to them is blocked until trusted");
            self.events.push_back(Event::IdentityChanged { username });
        }
    }
}

fn to_bundle(d: &hush_wire::api::DeviceBundle, identity: IdentityKey) -> Result<PreKeyBundle, MachineError> {
    let device_id = DeviceId::try_from(d.device_id).map_err(|_| MachineError::Content("bad device id".into()))?;
    let pre_key = d
        .prekey
        .as_ref()
        .map(|p| PublicKey::deserialize(&p.public_key.0).map(|k| (p.id.into(), k)))
        .transpose()
        .map_err(SignalProtocolError::from)?;
    Ok(PreKeyBundle::new(
        d.registration_id,
        device_id,
        pre_key,
        d.signed_prekey.id.into(),
        PublicKey::deserialize(&d.signed_prekey.public_key.0).map_err(SignalProtocolError::from)?,
        d.signed_prekey.signature.0.clone(),
        d.kyber_prekey.id.into(),
        kem::PublicKey::deserialize(&d.kyber_prekey.public_key.0)?,
        d.kyber_prekey.signature.0.clone(),
        identity,
    )?)
}
