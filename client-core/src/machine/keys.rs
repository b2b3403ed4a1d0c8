//! Key upkeep: the sender certificate, one-time prekey refills, safety numbers and trust.

use hush_wire::api::{PreKeyCount, PreKeyUpload, SenderCertificateResponse};
use hush_wire::limits::PREKEY_REFILL_THRESHOLD;
use libsignal_protocol::{Aci, Fingerprint, IdentityKey, SenderCertificate};

use super::{CERT_KEY, CERT_REFRESH_MARGIN_MS, Certificate, Machine, Purpose, RestCall};
use crate::account::{ONE_TIME_KEYS, one_time_keys};
use crate::error::MachineError;
use crate::store::{Batch, ContactRow};
use crate::types::{SafetyNumber, TrustState};

impl Machine {
    /// Whether the sender certificate can still be used for a send (valid for another minute).
    pub(super) fn certificate_usable(&self, now: u64) -> bool {
        self.cert.as_ref().is_some_and(|c| c.expires_at > now + 60_000)
    }

    /// Whether the sender certificate is present and not about to expire (no refresh needed).
    pub(super) fn certificate_ok(&self, now: u64) -> bool {
        self.cert.as_ref().is_some_and(|c| c.expires_at > now + CERT_REFRESH_MARGIN_MS)
    }

    /// Asks for a new certificate when it is missing or about to expire (one request at a time).
    /// Returns the id of the request in flight, if any.
    pub(super) fn refresh_certificate(&mut self, now: u64) -> Option<u64> {
        if self.certificate_ok(now) || now < self.cert_retry_at {
            return self.cert_fetch;
        }
        if self.cert_fetch.is_none() {
            self.cert_fetch = Some(self.rest_call(RestCall::FetchCertificate, Purpose::Certificate));
        }
        self.cert_fetch
    }

    /// A fetched sender certificate: verified against the pinned trust root, then kept.
    pub(super) async fn certificate(&mut self, c: SenderCertificateResponse, now: u64) -> Result<(), MachineError> {
        let info = hush_keys::certs::verify_sender_certificate(&c.certificate.0, &self.account.trust_root, now)?;
        let own_key = self.identity.identity_key().serialize().to_vec();
        if info.account != self.account.account_id
            || info.device_id != self.account.device_id
            || info.identity_key != own_key
        {
            return Err(MachineError::Keys(hush_keys::KeyError::CertificateInvalid));
        }
        let cert = SenderCertificate::deserialize(&c.certificate.0)?;
        let mut stored = info.expires_at_ms.to_be_bytes().to_vec();
        stored.extend_from_slice(&c.certificate.0);
        let mut batch = Batch::default();
        batch.values.insert(CERT_KEY.to_owned(), Some(stored));
        self.store.commit(batch).await?;
        self.cert = Some(Certificate { cert, expires_at: info.expires_at_ms });
        Ok(())
    }

    /// The server's count of one-time prekeys: refill when either kind runs low.
    pub(super) async fn prekey_count<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        count: PreKeyCount,
        _now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let threshold = count.refill_below.max(PREKEY_REFILL_THRESHOLD);
        if count.ec >= threshold && count.kyber >= threshold {
            return Ok(());
        }
        let mut batch = Batch::default();
        let mut account = self.account.clone();
        let keys = one_time_keys(&mut account, ONE_TIME_KEYS, &mut batch, rng)?;
        // The private halves are committed before the public halves are uploaded.
        self.store.commit(batch).await?;
        self.account = account;
        tracing::info!(ec = count.ec, kyber = count.kyber, "refilling one-time prekeys");
        let upload = PreKeyUpload {
            signed_prekey: None,
            kyber_last_resort: None,
            one_time_prekeys: keys.ec,
            one_time_kyber_prekeys: keys.kyber,
        };
        self.rest_call(RestCall::UploadPrekeys(upload), Purpose::Upload);
        Ok(())
    }

    /// The safety number with `peer` (whose identity key must be known).
    pub async fn safety_number(&self, peer: &ContactRow) -> Result<Option<SafetyNumber>, MachineError> {
        let Some(remote) = self.store.identity(&hush_keys::aci_string(peer.account_id)).await? else {
            return Ok(None);
        };
        let remote = IdentityKey::decode(&remote)?;
        let local_id = Aci::from(self.account.account_id).service_id_binary();
        let remote_id = Aci::from(peer.account_id).service_id_binary();
        let fp = Fingerprint::new(2, 5200, &local_id, self.identity.identity_key(), &remote_id, &remote)
            .map_err(|e| MachineError::Content(format!("safety number: {e:?}")))?;
        let digits = fp.display_string().map_err(|e| MachineError::Content(format!("safety number: {e:?}")))?;
        Ok(Some(SafetyNumber { digits }))
    }

    /// Trusts `peer`'s current identity key again; messages that failed because of the change
    /// can be retried. This account's other devices are told which key was trusted (they
    /// trust it too if it is the key they know for `peer`).
    pub async fn trust<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        peer: &ContactRow,
        now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        if peer.trust == TrustState::Trusted {
            return Ok(());
        }
        let mut batch = Batch::default();
        batch.contacts.push(ContactRow { trust: TrustState::Trusted, ..peer.clone() });
        if let Some(sync) = self.trust_sync(peer.account_id, &peer.username).await? {
            self.queue_sync(&mut batch, sync, rng);
        }
        self.store.commit(batch).await?;
        self.pump(now, rng).await
    }
}
