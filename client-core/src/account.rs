//! Account creation and prekey generation (no I/O: the caller sends the requests).

use hush_keys::auth::DeviceSigningKey;
use hush_keys::provision::ProvisionMessage;
use hush_keys::registration::{RegistrationSigningInput, sign_registration};
use hush_wire::api::{
    AddDeviceRequest, AddDeviceResponse, B64, LinkDeviceRequest, NewDevice, PreKey, RegisterRequest, RegisterResponse,
    RegistrationChallenge, RegistrationProof, SignedPreKey,
};
use libsignal_protocol::{
    GenericSignedPreKey as _, IdentityKeyPair, KeyPair, KyberPreKeyRecord, PreKeyRecord, SignalProtocolError,
    SignedPreKeyRecord, Timestamp, kem,
};
use rand::{CryptoRng, Rng};

use crate::error::MachineError;
use crate::store::{Batch, KyberRow, LocalAccount};

/// One-time keys of each kind made at registration and at each refill.
pub const ONE_TIME_KEYS: u32 = hush_wire::limits::MAX_PREKEYS_PER_UPLOAD as u32;

/// Makes a signed EC prekey with `id`, buffers its private record in `batch`, returns the upload.
pub fn signed_prekey<R: Rng + CryptoRng>(
    identity: &IdentityKeyPair,
    id: u32,
    now_ms: u64,
    batch: &mut Batch,
    rng: &mut R,
) -> Result<SignedPreKey, MachineError> {
    let pair = KeyPair::generate(rng);
    let public = pair.public_key.serialize().to_vec();
    let signature = identity.private_key().calculate_signature(&public, rng).map_err(SignalProtocolError::from)?;
    let record = SignedPreKeyRecord::new(id.into(), Timestamp::from_epoch_millis(now_ms), &pair, &signature);
    batch.signed_pre_keys.insert(id, Some(record.serialize()?));
    Ok(SignedPreKey { id, public_key: B64(public), signature: B64(signature.to_vec()) })
}

/// Makes a signed Kyber1024 prekey with `id`, buffers it in `batch`, returns the upload.
pub fn kyber_prekey(
    identity: &IdentityKeyPair,
    id: u32,
    last_resort: bool,
    batch: &mut Batch,
) -> Result<SignedPreKey, MachineError> {
    let record = KyberPreKeyRecord::generate(kem::KeyType::Kyber1024, id.into(), identity.private_key())?;
    let upload = SignedPreKey {
        id,
        public_key: B64(record.public_key()?.serialize().to_vec()),
        signature: B64(record.signature()?),
    };
    batch.kyber_pre_keys.insert(id, Some(KyberRow { record: record.serialize()?, last_resort }));
    Ok(upload)
}

/// One-time keys just made, ready to upload.
#[derive(Debug, Clone, Default)]
pub struct OneTimeKeys {
    /// One-time EC prekeys.
    pub ec: Vec<PreKey>,
    /// One-time Kyber prekeys.
    pub kyber: Vec<SignedPreKey>,
}

/// Makes `count` one-time keys of each kind, taking ids from (and advancing) the account's
/// counters; private records and the new counters go into `batch`.
pub fn one_time_keys<R: Rng + CryptoRng>(
    account: &mut LocalAccount,
    count: u32,
    batch: &mut Batch,
    rng: &mut R,
) -> Result<OneTimeKeys, MachineError> {
    let identity = IdentityKeyPair::try_from(&account.identity_key_pair[..])?;
    let mut keys = OneTimeKeys::default();
    for _ in 0..count {
        let id = account.next_prekey_id;
        account.next_prekey_id = next_id(id);
        let pair = KeyPair::generate(rng);
        batch.pre_keys.insert(id, Some(PreKeyRecord::new(id.into(), &pair).serialize()?));
        keys.ec.push(PreKey { id, public_key: B64(pair.public_key.serialize().to_vec()) });

        let kid = account.next_kyber_id;
        account.next_kyber_id = next_id(kid);
        keys.kyber.push(kyber_prekey(&identity, kid, false, batch)?);
    }
    batch.account = Some(account.clone());
    Ok(keys)
}

/// Key ids are 24-bit (as in Signal) and skip 0.
fn next_id(id: u32) -> u32 {
    let next = (id + 1) & 0x00FF_FFFF;
    next.max(1)
}

/// A registration in progress: the request to send and the keys to keep once it succeeds.
#[derive(Debug)]
pub struct Registration {
    /// The body of `POST /v1/accounts`.
    pub request: RegisterRequest,
    account: LocalAccount,
    batch: Batch,
}

/// What [`Registration::generate`] needs.
#[derive(Debug, Clone)]
pub struct RegistrationParams {
    /// The username to register (lowercased).
    pub username: String,
    /// Server base URL.
    pub server_url: String,
    /// The server's trust root, to pin.
    pub trust_root: Vec<u8>,
    /// Now, ms since the epoch.
    pub now_ms: u64,
}

impl Registration {
    /// Makes every key of a new account: identity key pair, registration id, device auth key,
    /// signed EC prekey, last-resort Kyber prekey and [`ONE_TIME_KEYS`] one-time keys of each kind.
    pub fn generate<R: Rng + CryptoRng>(params: RegistrationParams, rng: &mut R) -> Result<Self, MachineError> {
        let identity = IdentityKeyPair::generate(rng);
        let registration_id = rng.random_range(1..=hush_wire::limits::MAX_REGISTRATION_ID);
        let auth = DeviceSigningKey::generate(rng);
        let mut batch = Batch::default();
        let mut account = LocalAccount {
            username: params.username.to_lowercase(),
            account_id: uuid::Uuid::nil(),
            device_id: 1,
            registration_id,
            identity_key_pair: identity.serialize().to_vec(),
            auth_key: auth.to_bytes().to_vec(),
            trust_root: params.trust_root,
            server_url: params.server_url,
            next_prekey_id: 1,
            next_kyber_id: 2,
        };
        let device = device_keys(&identity, &mut account, &auth, params.now_ms, &mut batch, rng)?;
        let request = RegisterRequest {
            username: account.username.clone(),
            identity_key: B64(identity.identity_key().serialize().to_vec()),
            device,
            // Filled in by `sign`, over the server's challenge.
            proof: RegistrationProof { nonce: B64::default(), server_time: 0, signature: B64::default() },
        };
        Ok(Self { request, account, batch })
    }

    /// Signs the request with the new identity key over the server's challenge
    /// (`POST /v1/accounts/challenge`), proving the registration owns the key it registers.
    pub fn sign<R: Rng + CryptoRng>(
        &mut self,
        challenge: &RegistrationChallenge,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let identity = IdentityKeyPair::try_from(&self.account.identity_key_pair[..])?;
        let input = RegistrationSigningInput {
            username: &self.request.username,
            server_time_ms: challenge.server_time,
            nonce: &challenge.nonce.0,
            auth_key: &self.request.device.auth_key.0,
            registration_id: self.request.device.registration_id,
        };
        let signature = sign_registration(&identity, &input, rng)?;
        self.request.proof = RegistrationProof {
            nonce: challenge.nonce.clone(),
            server_time: challenge.server_time,
            signature: B64(signature),
        };
        Ok(())
    }

    /// The batch to commit once the server accepted the registration.
    pub fn finish(mut self, response: &RegisterResponse) -> (LocalAccount, Batch) {
        self.account.account_id = response.account_id;
        self.account.device_id = response.device_id;
        self.batch.account = Some(self.account.clone());
        (self.account, self.batch)
    }
}

/// Makes the keys of one device of the account whose identity is `identity`: signed EC prekey,
/// last-resort Kyber prekey and [`ONE_TIME_KEYS`] one-time keys of each kind; private records go
/// into `batch`, the upload is returned.
fn device_keys<R: Rng + CryptoRng>(
    identity: &IdentityKeyPair,
    account: &mut LocalAccount,
    auth: &DeviceSigningKey,
    now_ms: u64,
    batch: &mut Batch,
    rng: &mut R,
) -> Result<NewDevice, MachineError> {
    let signed_prekey = signed_prekey(identity, 1, now_ms, batch, rng)?;
    let kyber_last_resort = kyber_prekey(identity, 1, true, batch)?;
    let one_time = one_time_keys(account, ONE_TIME_KEYS, batch, rng)?;
    Ok(NewDevice {
        registration_id: account.registration_id,
        auth_key: B64(auth.public().to_bytes().to_vec()),
        name: None,
        signed_prekey,
        kyber_last_resort,
        one_time_prekeys: one_time.ec,
        one_time_kyber_prekeys: one_time.kyber,
    })
}

/// Another device of an existing account, made by a device that holds the account's identity
/// key: the body of `POST /v1/devices` and the keys the new device keeps once it succeeds.
#[derive(Debug)]
pub struct DeviceRegistration {
    /// The body of `POST /v1/devices` (sent signed by the existing device).
    pub request: AddDeviceRequest,
    account: LocalAccount,
    batch: Batch,
}

impl DeviceRegistration {
    /// Makes the new device's keys (registration id, auth key, prekeys) under `existing`'s
    /// identity key; username, account id, trust root and server stay those of `existing`.
    pub fn generate<R: Rng + CryptoRng>(
        existing: &LocalAccount,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Self, MachineError> {
        let identity = IdentityKeyPair::try_from(&existing.identity_key_pair[..])?;
        let auth = DeviceSigningKey::generate(rng);
        let mut batch = Batch::default();
        let mut account = LocalAccount {
            device_id: 0,
            registration_id: rng.random_range(1..=hush_wire::limits::MAX_REGISTRATION_ID),
            auth_key: auth.to_bytes().to_vec(),
            next_prekey_id: 1,
            next_kyber_id: 2,
            ..existing.clone()
        };
        let device = device_keys(&identity, &mut account, &auth, now_ms, &mut batch, rng)?;
        Ok(Self { request: AddDeviceRequest { device }, account, batch })
    }

    /// The batch the new device commits once the server added it.
    pub fn finish(mut self, response: &AddDeviceResponse) -> (LocalAccount, Batch) {
        self.account.device_id = response.device_id;
        self.batch.account = Some(self.account.clone());
        (self.account, self.batch)
    }
}

/// A device linked to an existing account from another machine: it got the account's
/// identity key pair and a link token from the primary device (a [`ProvisionMessage`]) and
/// registers itself with `POST /v1/devices/link`.
#[derive(Debug)]
pub struct LinkedDevice {
    /// The body of `POST /v1/devices/link` (not `Hush-Sig` signed: the token and the
    /// identity key's proof vouch for it).
    pub request: LinkDeviceRequest,
    account: LocalAccount,
    batch: Batch,
}

/// What [`LinkedDevice::generate`] needs besides the provisioning message.
#[derive(Debug, Clone)]
pub struct LinkParams {
    /// Server base URL.
    pub server_url: String,
    /// The server's trust root, to pin.
    pub trust_root: Vec<u8>,
    /// The device's display name, if any.
    pub name: Option<String>,
    /// Now, ms since the epoch.
    pub now_ms: u64,
}

impl LinkedDevice {
    /// Makes the new device's keys (registration id, auth key, prekeys) under the identity
    /// key `provision` carries, and signs the link proof
    /// ([`hush_wire::link::link_proof_input`]) with it.
    pub fn generate<R: Rng + CryptoRng>(
        provision: &ProvisionMessage,
        params: LinkParams,
        rng: &mut R,
    ) -> Result<Self, MachineError> {
        let identity = provision.identity;
        let auth = DeviceSigningKey::generate(rng);
        let mut batch = Batch::default();
        let mut account = LocalAccount {
            username: provision.username.to_lowercase(),
            account_id: provision.account_id,
            device_id: 0,
            registration_id: rng.random_range(1..=hush_wire::limits::MAX_REGISTRATION_ID),
            identity_key_pair: identity.serialize().to_vec(),
            auth_key: auth.to_bytes().to_vec(),
            trust_root: params.trust_root,
            server_url: params.server_url,
            next_prekey_id: 1,
            next_kyber_id: 2,
        };
        let mut device = device_keys(&identity, &mut account, &auth, params.now_ms, &mut batch, rng)?;
        device.name = params.name;
        let input = hush_wire::link::link_proof_input(
            provision.account_id,
            &provision.link_token,
            &device.auth_key.0,
            device.registration_id,
        );
        let proof = identity.private_key().calculate_signature(&input, rng).map_err(SignalProtocolError::from)?;
        let request = LinkDeviceRequest {
            account_id: provision.account_id,
            token: B64(provision.link_token.to_vec()),
            device,
            proof: B64(proof.to_vec()),
        };
        Ok(Self { request, account, batch })
    }

    /// The batch the new device commits once the server added it.
    pub fn finish(mut self, response: &AddDeviceResponse) -> (LocalAccount, Batch) {
        self.account.device_id = response.device_id;
        self.batch.account = Some(self.account.clone());
        (self.account, self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_keys_verify_like_the_server_checks_them() {
        let params = RegistrationParams {
            username: "Alice".into(),
            server_url: "http://x".into(),
            trust_root: vec![5; 33],
            now_ms: 1,
        };
        let reg = Registration::generate(params, &mut rand::rng()).unwrap_or_else(|e| panic!("{e}"));
        let identity =
            hush_keys::prekeys::validate_identity_key(&reg.request.identity_key.0).unwrap_or_else(|e| panic!("{e}"));
        let d = &reg.request.device;
        hush_keys::prekeys::verify_signed_ec_prekey(
            &identity,
            &d.signed_prekey.public_key.0,
            &d.signed_prekey.signature.0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for k in d.one_time_kyber_prekeys.iter().chain([&d.kyber_last_resort]) {
            hush_keys::prekeys::verify_kyber_prekey(&identity, &k.public_key.0, &k.signature.0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(d.one_time_prekeys.len(), 100);
        assert_eq!(reg.request.username, "alice");
        let mut reg = reg;
        let challenge = RegistrationChallenge { nonce: B64(vec![3; 32]), server_time: 77, expires_at: 99 };
        reg.sign(&challenge, &mut rand::rng()).unwrap_or_else(|e| panic!("{e}"));
        let d = &reg.request.device;
        let input = RegistrationSigningInput {
            username: "alice",
            server_time_ms: 77,
            nonce: &[3; 32],
            auth_key: &d.auth_key.0,
            registration_id: d.registration_id,
        };
        hush_keys::registration::verify_registration(&identity, &input, &reg.request.proof.signature.0)
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = RegisterResponse { account_id: uuid::Uuid::from_bytes([7; 16]), device_id: 1 };
        let (account, batch) = reg.finish(&resp);
        assert_eq!(account.next_prekey_id, 101);
        assert_eq!(batch.kyber_pre_keys.len(), 101);
        assert!(batch.kyber_pre_keys.get(&1).and_then(|k| k.as_ref()).is_some_and(|k| k.last_resort));
    }
}
