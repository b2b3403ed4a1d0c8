//! Valid key material for registrations: a libsignal identity, signed EC and
//! Kyber prekeys, one-time prekeys and a device auth key.

use hush_keys::auth::DeviceSigningKey;
use hush_wire::api::{B64, NewDevice, PreKey, SignedPreKey};
use libsignal_protocol::{GenericSignedPreKey as _, IdentityKeyPair, KeyPair, KyberPreKeyRecord, kem};
use rand::Rng as _;

/// One-time prekeys of each kind a test device uploads unless told otherwise.
pub const DEFAULT_ONE_TIME_KEYS: u32 = 3;

/// A fresh account identity key pair (shared by all devices of the account).
pub fn identity() -> IdentityKeyPair {
    IdentityKeyPair::generate(&mut rand::rng())
}

/// The serialized (33-byte) public identity key.
pub fn identity_public(identity: &IdentityKeyPair) -> Vec<u8> {
    identity.identity_key().serialize().to_vec()
}

/// Everything a new device uploads, plus its private auth key.
#[derive(Debug, Clone)]
pub struct DeviceKeys {
    /// The upload body for `POST /v1/accounts` or `POST /v1/devices`.
    pub new_device: NewDevice,
    /// The device's ed25519 authentication key.
    pub signing_key: DeviceSigningKey,
}

impl DeviceKeys {
    /// Keys for a new device of the account `identity`, with `one_time` one-time
    /// EC and `one_time` one-time Kyber prekeys; every signature is valid.
    pub fn generate(identity: &IdentityKeyPair, one_time: u32) -> DeviceKeys {
        let mut rng = rand::rng();
        // Random, spread-out key ids, so two devices never share ids by accident.
        let base: u32 = rng.random_range(1..1_000_000) * 1000;
        let registration_id = rng.random_range(1..=hush_wire::limits::MAX_REGISTRATION_ID);

        let spk = KeyPair::generate(&mut rng);
        let spk_public = spk.public_key.serialize().to_vec();
        let spk_sig = identity
            .private_key()
            .calculate_signature(&spk_public, &mut rng)
            .unwrap_or_else(|e| panic!("cannot sign the signed prekey: {e}"));
        let signed_prekey =
            SignedPreKey { id: base + 1, public_key: B64(spk_public), signature: B64(spk_sig.to_vec()) };

        let kyber_last_resort = kyber_prekey(identity, base + 2);
        let one_time_prekeys = (0..one_time)
            .map(|i| PreKey {
                id: base + 100 + i,
                public_key: B64(KeyPair::generate(&mut rng).public_key.serialize().to_vec()),
            })
            .collect();
        let one_time_kyber_prekeys = (0..one_time).map(|i| kyber_prekey(identity, base + 500 + i)).collect();

        let signing_key = DeviceSigningKey::generate(&mut rng);
        DeviceKeys {
            new_device: NewDevice {
                registration_id,
                auth_key: B64(signing_key.public().to_bytes().to_vec()),
                name: None,
                signed_prekey,
                kyber_last_resort,
                one_time_prekeys,
                one_time_kyber_prekeys,
            },
            signing_key,
        }
    }
}

/// A signed Kyber1024 prekey with id `id`, signed by `identity`.
pub fn kyber_prekey(identity: &IdentityKeyPair, id: u32) -> SignedPreKey {
    let record = KyberPreKeyRecord::generate(kem::KeyType::Kyber1024, id.into(), identity.private_key())
        .unwrap_or_else(|e| panic!("cannot make a Kyber prekey: {e}"));
    let public = record.public_key().unwrap_or_else(|e| panic!("Kyber public key: {e}")).serialize().to_vec();
    let signature = record.signature().unwrap_or_else(|e| panic!("Kyber signature: {e}"));
    SignedPreKey { id, public_key: B64(public), signature: B64(signature) }
}
