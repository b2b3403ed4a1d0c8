//! Signed prekey rotation: every device replaces its signed EC prekey and its last-resort
//! Kyber prekey on a schedule ([`PrekeySchedule`], weekly by default) through `PUT /v1/keys`,
//! and keeps the replaced ones for a grace period (30 days by default), so a session a
//! correspondent started from an older bundle still opens; then it deletes them.
//!
//! What was made when is kept in the store (value `prekey_rotation`), with whether the
//! current keys reached the server: an upload that failed is made again on the next check.

use std::time::Duration;

use hush_wire::api::PreKeyUpload;
use serde::{Deserialize, Serialize};

use super::{Machine, Purpose, RestCall};
use crate::account::{kyber_prekey, signed_prekey};
use crate::error::MachineError;
use crate::store::Batch;

/// Key of the rotation state in the store.
const ROTATION_KEY: &str = "prekey_rotation";
/// How often (ms) the machine looks whether a rotation or a deletion is due.
const CHECK_EVERY_MS: u64 = 60 * 60 * 1000;

/// When signed prekeys are replaced, and how long replaced ones are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrekeySchedule {
    /// How long a signed EC prekey and a last-resort Kyber prekey are used before new ones
    /// replace them.
    pub rotate_every: Duration,
    /// How long replaced keys are kept (sessions started from them still open), counted from
    /// their replacement.
    pub keep_replaced: Duration,
}

impl Default for PrekeySchedule {
    /// Weekly rotation; replaced keys kept for 30 days.
    fn default() -> Self {
        PrekeySchedule {
            rotate_every: Duration::from_secs(7 * 24 * 3600),
            keep_replaced: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// One generation of signed keys: the EC and the Kyber one made together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Generation {
    signed_id: u32,
    kyber_id: u32,
    made_at: u64,
}

/// The generations this device keeps, newest (in use) first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RotationState {
    generations: Vec<Generation>,
    /// Whether the newest generation reached the server.
    uploaded: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Machine {
    /// Sets when signed prekeys are replaced (see [`PrekeySchedule`]).
    pub fn set_prekey_schedule(&mut self, schedule: PrekeySchedule) {
        self.rotation.schedule = schedule;
        self.rotation.check_at = 0;
    }

    async fn rotation_state(&self, now: u64) -> Result<RotationState, MachineError> {
        if let Some(bytes) = self.store.value(ROTATION_KEY).await?
            && let Ok(state) = serde_json::from_slice::<RotationState>(&bytes)
        {
            return Ok(state);
        }
        // Before the first rotation: the keys made at registration (id 1 of each kind), counted
        // from the first check.
        Ok(RotationState { generations: vec![Generation { signed_id: 1, kyber_id: 1, made_at: now }], uploaded: true })
    }

    /// Rotates the signed keys when due, uploads keys that did not reach the server, and
    /// deletes replaced keys past their grace period. Checked at most hourly, while connected.
    pub(super) async fn rotate_prekeys_if_due<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        if now < self.rotation.check_at || self.rotation.upload.is_some() {
            return Ok(());
        }
        self.rotation.check_at = now.saturating_add(CHECK_EVERY_MS);
        let schedule = self.rotation.schedule;
        let mut state = self.rotation_state(now).await?;
        let mut batch = Batch::default();
        let mut upload = None;
        let newest = state.generations.first().cloned();
        let due = newest.as_ref().is_none_or(|g| now >= g.made_at.saturating_add(millis(schedule.rotate_every)));
        if due {
            let signed_id = state.generations.iter().map(|g| g.signed_id).max().unwrap_or(0) + 1;
            let mut account = self.account.clone();
            let kyber_id = account.next_kyber_id;
            account.next_kyber_id = kyber_id.checked_add(1).filter(|id| *id < 0x00FF_FFFF).unwrap_or(1);
            let signed = signed_prekey(&self.identity, signed_id, now, &mut batch, rng)?;
            let kyber = kyber_prekey(&self.identity, kyber_id, true, &mut batch)?;
            batch.account = Some(account.clone());
            self.account = account;
            state.generations.insert(0, Generation { signed_id, kyber_id, made_at: now });
            state.uploaded = false;
            tracing::info!(signed_id, kyber_id, "rotating the signed prekeys");
            upload = Some(PreKeyUpload {
                signed_prekey: Some(signed),
                kyber_last_resort: Some(kyber),
                ..Default::default()
            });
        } else if !state.uploaded {
            upload = Some(self.current_upload(&state).await?);
        }
        // A generation is replaced when the next newer one was made; it goes after the grace.
        let keep = millis(schedule.keep_replaced);
        let mut kept = vec![];
        for (i, g) in state.generations.iter().enumerate() {
            let replaced_at = if i == 0 { None } else { Some(state.generations[i - 1].made_at) };
            match replaced_at {
                Some(at) if now >= at.saturating_add(keep) => {
                    batch.signed_pre_keys.insert(g.signed_id, None);
                    batch.kyber_pre_keys.insert(g.kyber_id, None);
                    tracing::info!(signed_id = g.signed_id, "deleting a replaced signed prekey");
                }
                _ => kept.push(g.clone()),
            }
        }
        state.generations = kept;
        let bytes = serde_json::to_vec(&state).map_err(|e| MachineError::Content(e.to_string()))?;
        batch.values.insert(ROTATION_KEY.to_owned(), Some(bytes));
        // The private halves are committed before the public halves are uploaded.
        self.store.commit(batch).await?;
        if let Some(upload) = upload {
            self.rotation.upload = Some(self.rest_call(RestCall::UploadPrekeys(upload), Purpose::Rotation));
        }
        Ok(())
    }

    /// The upload of the newest generation, from the stored records (after a failed upload).
    async fn current_upload(&self, state: &RotationState) -> Result<PreKeyUpload, MachineError> {
        use libsignal_protocol::{GenericSignedPreKey as _, KyberPreKeyRecord, SignedPreKeyRecord};
        let Some(g) = state.generations.first() else { return Ok(PreKeyUpload::default()) };
        let missing = || MachineError::Content("a rotated prekey is missing from the store".into());
        let signed =
            SignedPreKeyRecord::deserialize(&self.store.signed_pre_key(g.signed_id).await?.ok_or_else(missing)?)?;
        let kyber =
            KyberPreKeyRecord::deserialize(&self.store.kyber_pre_key(g.kyber_id).await?.ok_or_else(missing)?.record)?;
        let b64 = hush_wire::api::B64;
        Ok(PreKeyUpload {
            signed_prekey: Some(hush_wire::api::SignedPreKey {
                id: g.signed_id,
                public_key: b64(signed.public_key()?.serialize().to_vec()),
                signature: b64(signed.signature()?),
            }),
            kyber_last_resort: Some(hush_wire::api::SignedPreKey {
                id: g.kyber_id,
                public_key: b64(kyber.public_key()?.serialize().to_vec()),
                signature: b64(kyber.signature()?),
            }),
            ..Default::default()
        })
    }

    /// The server's answer to a rotation upload: on success the keys are marked uploaded; on
    /// failure the next check (within the hour, or at the next connection) uploads them again.
    pub(super) async fn rotation_uploaded(&mut self, ok: bool, now: u64) -> Result<(), MachineError> {
        self.rotation.upload = None;
        if !ok {
            tracing::warn!("the rotated signed prekeys did not reach the server; trying again later");
            self.rotation.check_at = now.saturating_add(CHECK_EVERY_MS).min(self.rotation.check_at);
            return Ok(());
        }
        let mut state = self.rotation_state(now).await?;
        state.uploaded = true;
        let bytes = serde_json::to_vec(&state).map_err(|e| MachineError::Content(e.to_string()))?;
        let mut batch = Batch::default();
        batch.values.insert(ROTATION_KEY.to_owned(), Some(bytes));
        self.store.commit(batch).await?;
        Ok(())
    }
}

/// The machine's rotation bookkeeping (not persisted: the state is in the store).
#[derive(Debug, Default)]
pub(super) struct Rotation {
    pub(super) schedule: PrekeySchedule,
    /// When to look again (ms).
    pub(super) check_at: u64,
    /// The upload in flight.
    pub(super) upload: Option<u64>,
}
