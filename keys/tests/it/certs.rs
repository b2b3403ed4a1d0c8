//! Sealed-sender certificates and the server's key file.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use hush_keys::KeyError;
use hush_keys::certs::{
    SERVER_CERTIFICATE_KEY_ID, SenderCertificateInfo, ServerKeys, aci_string, verify_sender_certificate,
};
use libsignal_protocol::{
    DeviceId, GenericSignedPreKey, IdentityKeyPair, IdentityKeyStore, InMemSignalProtocolStore, KeyPair,
    KyberPreKeyRecord, KyberPreKeyStore, PreKeyBundle, ProtocolAddress, SenderCertificate, SignedPreKeyRecord,
    SignedPreKeyStore, Timestamp, kem, process_prekey_bundle, sealed_sender_decrypt, sealed_sender_encrypt,
};
use rand::SeedableRng;
use uuid::Uuid;

use crate::support::{ACCOUNT, DEVICE, bit_flips};

const EXPIRES_MS: u64 = 1_800_000_000_000;

fn identity_key() -> Vec<u8> {
    IdentityKeyPair::generate(&mut rand::rng()).identity_key().serialize().into_vec()
}

fn issue(keys: &ServerKeys, identity: &[u8]) -> Vec<u8> {
    keys.issue_sender_certificate(ACCOUNT, DEVICE, identity, EXPIRES_MS, &mut rand::rng()).unwrap()
}

/// Runs a future that never waits (libsignal with in-memory stores) to completion.
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("in-memory libsignal stores should never suspend"),
    }
}

#[test]
fn aci_string_is_the_lowercase_hyphenated_uuid() {
    assert_eq!(aci_string(ACCOUNT), "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0");
}

#[test]
fn sender_certificate_verifies_and_says_who() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let identity = identity_key();
    let cert = issue(&keys, &identity);
    let info = verify_sender_certificate(&cert, &keys.trust_root_public(), EXPIRES_MS - 1).unwrap();
    assert_eq!(
        info,
        SenderCertificateInfo {
            account: ACCOUNT,
            device_id: DEVICE,
            expires_at_ms: EXPIRES_MS,
            identity_key: identity,
        }
    );
}

#[test]
fn sender_certificate_is_valid_up_to_and_including_its_expiry() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let cert = issue(&keys, &identity_key());
    let root = keys.trust_root_public();
    assert!(verify_sender_certificate(&cert, &root, EXPIRES_MS).is_ok());
    assert_eq!(verify_sender_certificate(&cert, &root, EXPIRES_MS + 1), Err(KeyError::CertificateExpired));
}

#[test]
fn sender_certificate_under_another_trust_root_is_refused() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let other = ServerKeys::generate(&mut rand::rng()).unwrap();
    let cert = issue(&keys, &identity_key());
    assert_eq!(
        verify_sender_certificate(&cert, &other.trust_root_public(), EXPIRES_MS - 1),
        Err(KeyError::CertificateInvalid)
    );
    // Invalid wins over expired: an untrusted certificate is never reported as merely expired.
    assert_eq!(
        verify_sender_certificate(&cert, &other.trust_root_public(), EXPIRES_MS + 1),
        Err(KeyError::CertificateInvalid)
    );
}

#[test]
fn tampered_sender_certificate_is_refused() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let cert = issue(&keys, &identity_key());
    let root = keys.trust_root_public();
    // Every single-bit change, wherever it lands (protobuf framing, fields, signatures).
    for flipped in bit_flips(&cert) {
        assert_eq!(verify_sender_certificate(&flipped, &root, EXPIRES_MS - 1), Err(KeyError::CertificateInvalid));
    }
}

#[test]
fn garbage_sender_certificate_is_refused() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let root = keys.trust_root_public();
    for garbage in [&b""[..], b"not a certificate", &[0xff; 300]] {
        assert_eq!(verify_sender_certificate(garbage, &root, 0), Err(KeyError::CertificateInvalid));
    }
}

#[test]
fn malformed_trust_root_is_refused() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let cert = issue(&keys, &identity_key());
    let root = keys.trust_root_public();
    assert!(matches!(verify_sender_certificate(&cert, &root[..32], 0), Err(KeyError::InvalidKey(_))));
}

#[test]
fn sender_certificate_uses_hush_key_id_and_canonical_aci() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let cert = SenderCertificate::deserialize(&issue(&keys, &identity_key())).unwrap();
    assert_eq!(cert.signer().unwrap().key_id().unwrap(), SERVER_CERTIFICATE_KEY_ID);
    assert_eq!(cert.sender_uuid().unwrap(), aci_string(ACCOUNT));
    assert_eq!(cert.sender_e164().unwrap(), None);
}

#[test]
fn issuing_refuses_bad_device_ids_and_identity_keys() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let identity = identity_key();
    for device in [0, 128, u32::MAX] {
        assert_eq!(
            keys.issue_sender_certificate(ACCOUNT, device, &identity, EXPIRES_MS, &mut rand::rng()),
            Err(KeyError::InvalidDeviceId(device))
        );
    }
    assert!(matches!(
        keys.issue_sender_certificate(ACCOUNT, DEVICE, &identity[..32], EXPIRES_MS, &mut rand::rng()),
        Err(KeyError::InvalidKey(_))
    ));
}

#[test]
fn server_keys_round_trip_and_keep_issuing_under_the_same_root() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let bytes = keys.to_bytes();
    let restored = ServerKeys::from_bytes(&bytes).unwrap();
    assert_eq!(restored.to_bytes(), bytes);
    assert_eq!(restored.trust_root_public(), keys.trust_root_public());

    let cert = issue(&restored, &identity_key());
    let info = verify_sender_certificate(&cert, &keys.trust_root_public(), 0).unwrap();
    assert_eq!(info.account, ACCOUNT);
}

#[test]
fn server_keys_file_layout_snapshot() {
    // A seeded RNG makes the keys and the XEdDSA signature deterministic.
    let keys = ServerKeys::generate(&mut rand::rngs::StdRng::seed_from_u64(7)).unwrap();
    let bytes = keys.to_bytes();
    let (magic, rest) = bytes.split_at(9);
    let (root, rest) = rest.split_at(32);
    let (signer, rest) = rest.split_at(32);
    let (len, cert) = rest.split_at(4);
    let layout = format!(
        "magic: {}\nroot private: {}\nsigner private: {}\ncert length: {}\ncert: {}\ntotal: {}",
        String::from_utf8_lossy(magic),
        hex::encode(root),
        hex::encode(signer),
        hex::encode(len),
        hex::encode(cert),
        bytes.len()
    );
    insta::assert_snapshot!(layout);
}

fn invalid_server_keys(bytes: &[u8]) -> String {
    match ServerKeys::from_bytes(bytes) {
        Err(KeyError::InvalidServerKeys(reason)) => reason,
        other => panic!("expected InvalidServerKeys, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn server_keys_from_bytes_rejects_garbage() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let bytes = keys.to_bytes();

    assert!(invalid_server_keys(b"").contains("wrong magic"));
    assert!(invalid_server_keys(&[0x42; 200]).contains("wrong magic"));
    let mut version2 = bytes.clone();
    version2[8] = b'2';
    assert!(invalid_server_keys(&version2).contains("unsupported format version"));
    assert!(invalid_server_keys(&bytes[..40]).contains("truncated"));
    assert!(invalid_server_keys(&bytes[..bytes.len() - 1]).contains("length"));
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(invalid_server_keys(&padded).contains("length"));
    let mut bad_cert = bytes.clone();
    bad_cert[77..].fill(0xff);
    assert!(invalid_server_keys(&bad_cert).contains("does not parse"));
}

#[test]
fn server_keys_from_bytes_rejects_mismatched_parts() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let other = ServerKeys::generate(&mut rand::rng()).unwrap();
    let (bytes, other_bytes) = (keys.to_bytes(), other.to_bytes());

    // Another signer key than the certificate names.
    let mut swapped_signer = bytes.clone();
    swapped_signer[41..73].copy_from_slice(&other_bytes[41..73]);
    assert!(invalid_server_keys(&swapped_signer).contains("another signing key"));

    // Another trust root than the one that signed the certificate.
    let mut swapped_root = bytes.clone();
    swapped_root[9..41].copy_from_slice(&other_bytes[9..41]);
    assert!(invalid_server_keys(&swapped_root).contains("not signed by this file's trust root"));

    // A flipped bit in the certificate's signature.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last - 5] ^= 1;
    assert!(ServerKeys::from_bytes(&flipped).is_err());
}

#[test]
fn server_keys_debug_hides_private_keys() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let bytes = keys.to_bytes();
    let debug = format!("{keys:?}");
    assert!(!debug.contains(&hex::encode(&bytes[9..41])), "{debug}");
    assert!(!debug.contains(&hex::encode(&bytes[41..73])), "{debug}");
    assert!(debug.contains(&hex::encode(keys.trust_root_public())), "{debug}");
}

/// The certificates work with libsignal's own sealed sender, and the sender address it
/// reports is [`aci_string`] of the account.
#[test]
fn libsignal_sealed_sender_accepts_issued_certificates() {
    let mut rng = rand::rng();
    let server = ServerKeys::generate(&mut rng).unwrap();
    let (alice, bob) = (Uuid::from_u128(0xa11ce), Uuid::from_u128(0xb0b));
    let (alice_device, bob_device) = (DeviceId::new(2).unwrap(), DeviceId::new(1).unwrap());

    let alice_identity = IdentityKeyPair::generate(&mut rng);
    let bob_identity = IdentityKeyPair::generate(&mut rng);
    let mut alice_store = InMemSignalProtocolStore::new(alice_identity, 1001).unwrap();
    let mut bob_store = InMemSignalProtocolStore::new(bob_identity, 2002).unwrap();

    let spk = KeyPair::generate(&mut rng);
    let spk_sig = bob_identity.private_key().calculate_signature(&spk.public_key.serialize(), &mut rng).unwrap();
    let spk_record = SignedPreKeyRecord::new(1.into(), Timestamp::from_epoch_millis(0), &spk, &spk_sig);
    run(bob_store.save_signed_pre_key(1.into(), &spk_record)).unwrap();
    let kyber = KyberPreKeyRecord::generate(kem::KeyType::Kyber1024, 1.into(), bob_identity.private_key()).unwrap();
    run(bob_store.save_kyber_pre_key(1.into(), &kyber)).unwrap();
    let bundle = PreKeyBundle::new(
        run(bob_store.get_local_registration_id()).unwrap(),
        bob_device,
        None,
        1.into(),
        spk.public_key,
        spk_sig.into_vec(),
        1.into(),
        kyber.public_key().unwrap(),
        kyber.signature().unwrap(),
        *bob_identity.identity_key(),
    )
    .unwrap();

    let bob_address = ProtocolAddress::new(aci_string(bob), bob_device);
    run(process_prekey_bundle(
        &bob_address,
        &mut alice_store.session_store,
        &mut alice_store.identity_store,
        &bundle,
        SystemTime::now(),
        &mut rng,
    ))
    .unwrap();

    let now_ms = 1_700_000_000_000;
    let cert_bytes = server
        .issue_sender_certificate(
            alice,
            u32::from(alice_device),
            &alice_identity.identity_key().serialize(),
            now_ms + 86_400_000,
            &mut rng,
        )
        .unwrap();
    let cert = SenderCertificate::deserialize(&cert_bytes).unwrap();
    let sealed = run(sealed_sender_encrypt(
        &bob_address,
        &cert,
        b"hi bob",
        &mut alice_store.session_store,
        &mut alice_store.identity_store,
        SystemTime::now(),
        &mut rng,
    ))
    .unwrap();

    let root = libsignal_protocol::PublicKey::deserialize(&server.trust_root_public()).unwrap();
    let opened = run(sealed_sender_decrypt(
        &sealed,
        &root,
        Timestamp::from_epoch_millis(now_ms),
        None,
        aci_string(bob),
        bob_device,
        &mut bob_store.identity_store,
        &mut bob_store.session_store,
        &mut bob_store.pre_key_store,
        &bob_store.signed_pre_key_store,
        &mut bob_store.kyber_pre_key_store,
    ))
    .unwrap();
    assert_eq!(opened.message, b"hi bob");
    assert_eq!(opened.sender_uuid, aci_string(alice));
    assert_eq!(opened.device_id, alice_device);
}
