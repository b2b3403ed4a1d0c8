//! Client-side crypto cost per message, measured on libsignal directly.
//!
//! Every benchmark uses libsignal's in-memory stores (`InMemSignalProtocolStore`), so the
//! figures are the protocol's CPU cost alone, with no SQLite and no serialization of records.
//! All setup (identities, prekeys, the PQXDH session, one round trip, certificates, sender-key
//! distribution) happens once, outside the timed loop, and each benchmark checks its result once
//! before timing so that a broken setup cannot produce a fast, meaningless figure.
//!
//! - `session/process_prekey_bundle`: Alice starts a session from Bob's PQXDH bundle (with a
//!   Kyber1024 prekey and a one-time EC prekey), into an empty session store.
//! - `session/encrypt+decrypt`: on an established session (one round trip done, so messages are
//!   `SignalMessage`s), Alice `message_encrypt`s a 256-byte padded plaintext and Bob
//!   `message_decrypt`s it (a same-direction chain step).
//! - `sealed_sender/encrypt+decrypt`: the same through `sealed_sender_encrypt` (v1) and
//!   `sealed_sender_decrypt`, which validates the sender certificate on every message.
//! - `group/encrypt` and `group/decrypt`: sender keys, `group_encrypt` by Alice and
//!   `group_decrypt` by one receiving device, of the same 256-byte padded plaintext.
//!
//! Addresses are ACI service-id strings of random UUIDs, device 1.
//!
//! Run with `cargo bench -p hush-client-core --bench crypto`.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, criterion_main};
use futures_util::FutureExt;
use libsignal_protocol::{
    Aci, CiphertextMessage, CiphertextMessageType, DeviceId, GenericSignedPreKey, IdentityKeyPair, InMemSessionStore,
    InMemSignalProtocolStore, KeyPair, KyberPreKeyRecord, KyberPreKeyStore, PreKeyBundle, PreKeyRecord, PreKeyStore,
    ProtocolAddress, SenderCertificate, SenderKeyDistributionMessage, ServerCertificate, SessionStore,
    SignedPreKeyRecord, SignedPreKeyStore, Timestamp, create_sender_key_distribution_message, group_decrypt,
    group_encrypt, kem, message_decrypt, message_encrypt, process_prekey_bundle,
    process_sender_key_distribution_message, sealed_sender_decrypt, sealed_sender_encrypt,
};
use rand::{Rng, RngCore};
use uuid::Uuid;

/// Length of the application message before padding.
const MESSAGE_LEN: usize = 200;
/// Length after padding (Signal-style: content, 0x80, zeros).
const PADDED_LEN: usize = 256;

/// Drives a libsignal future. With in-memory stores they never suspend, so the first poll
/// completes; anything else is a setup error.
fn run<F: Future>(fut: F) -> F::Output {
    fut.now_or_never().expect("libsignal future with in-memory stores completes on first poll")
}

/// A 200-byte random message padded to 256 bytes.
fn padded_message() -> Vec<u8> {
    let mut msg = vec![0u8; MESSAGE_LEN];
    rand::rng().fill_bytes(&mut msg);
    msg.push(0x80);
    msg.resize(PADDED_LEN, 0);
    msg
}

fn now_millis() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// One device: its address (ACI service-id string, device 1) and its in-memory stores.
struct Party {
    aci: Aci,
    addr: ProtocolAddress,
    identity: IdentityKeyPair,
    registration_id: u32,
    store: InMemSignalProtocolStore,
}

impl Party {
    fn new() -> Self {
        let mut rng = rand::rng();
        let aci = Aci::from(Uuid::new_v4());
        let addr = ProtocolAddress::new(aci.service_id_string(), DeviceId::new(1).unwrap());
        let identity = IdentityKeyPair::generate(&mut rng);
        let registration_id = rng.random_range(1..=0x3FFF);
        let store = InMemSignalProtocolStore::new(identity, registration_id).unwrap();
        Self { aci, addr, identity, registration_id, store }
    }

    /// Generates and stores a signed prekey, a Kyber1024 prekey and a one-time EC prekey, and
    /// returns the bundle a server would serve for them.
    fn publish_bundle(&mut self) -> PreKeyBundle {
        let mut rng = rand::rng();
        let identity = self.identity;

        let spk_id = 1u32;
        let spk = KeyPair::generate(&mut rng);
        let spk_sig = identity.private_key().calculate_signature(&spk.public_key.serialize(), &mut rng).unwrap();
        let spk_record =
            SignedPreKeyRecord::new(spk_id.into(), Timestamp::from_epoch_millis(now_millis()), &spk, &spk_sig);
        run(self.store.signed_pre_key_store.save_signed_pre_key(spk_id.into(), &spk_record)).unwrap();

        let kyber_id = 2u32;
        let kyber =
            KyberPreKeyRecord::generate(kem::KeyType::Kyber1024, kyber_id.into(), identity.private_key()).unwrap();
        run(self.store.kyber_pre_key_store.save_kyber_pre_key(kyber_id.into(), &kyber)).unwrap();

        let otk_id = 3u32;
        let otk = KeyPair::generate(&mut rng);
        run(self.store.pre_key_store.save_pre_key(otk_id.into(), &PreKeyRecord::new(otk_id.into(), &otk))).unwrap();

        PreKeyBundle::new(
            self.registration_id,
            self.addr.device_id(),
            Some((otk_id.into(), otk.public_key)),
            spk_id.into(),
            spk.public_key,
            spk_sig.to_vec(),
            kyber_id.into(),
            kyber.public_key().unwrap(),
            kyber.signature().unwrap(),
            *identity.identity_key(),
        )
        .unwrap()
    }

    fn encrypt(&mut self, to: &ProtocolAddress, ptext: &[u8]) -> CiphertextMessage {
        run(message_encrypt(
            ptext,
            to,
            &mut self.store.session_store,
            &mut self.store.identity_store,
            SystemTime::now(),
            &mut rand::rng(),
        ))
        .unwrap()
    }

    fn decrypt(&mut self, from: &ProtocolAddress, msg: &CiphertextMessage) -> Vec<u8> {
        let s = &mut self.store;
        run(message_decrypt(
            msg,
            from,
            &mut s.session_store,
            &mut s.identity_store,
            &mut s.pre_key_store,
            &s.signed_pre_key_store,
            &mut s.kyber_pre_key_store,
            &mut rand::rng(),
        ))
        .unwrap()
    }

    fn group_encrypt(&mut self, distribution_id: Uuid, ptext: &[u8]) -> Vec<u8> {
        run(group_encrypt(&mut self.store.sender_key_store, &self.addr, distribution_id, ptext, &mut rand::rng()))
            .unwrap()
            .serialized()
            .to_vec()
    }

    fn group_decrypt(&mut self, from: &ProtocolAddress, skm: &[u8]) -> Vec<u8> {
        run(group_decrypt(skm, &mut self.store.sender_key_store, from)).unwrap()
    }
}

/// Alice and Bob with an established session: Alice processed Bob's PQXDH bundle, sent a
/// PreKey message, Bob replied, and Alice decrypted the reply, so Alice's next messages are
/// `SignalMessage`s.
fn established_pair() -> (Party, Party) {
    let mut alice = Party::new();
    let mut bob = Party::new();
    let (alice_addr, bob_addr) = (alice.addr.clone(), bob.addr.clone());
    let bundle = bob.publish_bundle();
    run(process_prekey_bundle(
        &bob_addr,
        &mut alice.store.session_store,
        &mut alice.store.identity_store,
        &bundle,
        SystemTime::now(),
        &mut rand::rng(),
    ))
    .unwrap();

    let first = alice.encrypt(&bob_addr, b"hello");
    assert_eq!(first.message_type(), CiphertextMessageType::PreKey);
    assert_eq!(bob.decrypt(&alice_addr, &first), b"hello");
    let reply = bob.encrypt(&alice_addr, b"hi");
    assert_eq!(reply.message_type(), CiphertextMessageType::Whisper);
    assert_eq!(alice.decrypt(&bob_addr, &reply), b"hi");
    (alice, bob)
}

fn bench_session(c: &mut Criterion) {
    let mut group = c.benchmark_group("session");

    // Session setup: Alice processes Bob's bundle into a fresh session store each time.
    {
        let alice = Party::new();
        let mut bob = Party::new();
        let bundle = bob.publish_bundle();
        let mut identity_store = alice.store.identity_store.clone();
        let mut rng = rand::rng();
        // Check once: the bundle verifies and a session is stored.
        let mut sessions = InMemSessionStore::new();
        run(process_prekey_bundle(&bob.addr, &mut sessions, &mut identity_store, &bundle, SystemTime::now(), &mut rng))
            .unwrap();
        assert!(run(sessions.load_session(&bob.addr)).unwrap().is_some());

        group.bench_function("process_prekey_bundle", |b| {
            b.iter_batched_ref(
                InMemSessionStore::new,
                |sessions| {
                    run(process_prekey_bundle(
                        &bob.addr,
                        sessions,
                        &mut identity_store,
                        black_box(&bundle),
                        SystemTime::now(),
                        &mut rng,
                    ))
                    .unwrap();
                },
                BatchSize::SmallInput,
            );
        });
    }

    // Steady state: Alice -> Bob SignalMessage, same direction (chain step).
    {
        let (mut alice, mut bob) = established_pair();
        let (alice_addr, bob_addr) = (alice.addr.clone(), bob.addr.clone());
        let ptext = padded_message();
        let msg = alice.encrypt(&bob_addr, &ptext);
        assert_eq!(msg.message_type(), CiphertextMessageType::Whisper);
        assert_eq!(bob.decrypt(&alice_addr, &msg), ptext);

        group.bench_function("encrypt+decrypt", |b| {
            b.iter(|| {
                let msg = alice.encrypt(&bob_addr, black_box(&ptext));
                black_box(bob.decrypt(&alice_addr, &msg))
            });
        });
    }
    group.finish();
}

fn bench_sealed_sender(c: &mut Criterion) {
    let mut rng = rand::rng();
    let (mut alice, mut bob) = established_pair();
    let (alice_addr, bob_addr) = (alice.addr.clone(), bob.addr.clone());

    // Trust root (pinned by clients) -> server certificate -> Alice's sender certificate.
    let trust_root = KeyPair::generate(&mut rng);
    let server_key = KeyPair::generate(&mut rng);
    let server_cert = ServerCertificate::new(1, server_key.public_key, &trust_root.private_key, &mut rng).unwrap();
    let expires = Timestamp::from_epoch_millis(now_millis() + 24 * 3600 * 1000);
    let sender_cert = SenderCertificate::new(
        alice.aci.service_id_string(),
        None,
        *alice.identity.public_key(),
        alice_addr.device_id(),
        expires,
        server_cert,
        &server_key.private_key,
        &mut rng,
    )
    .unwrap();
    assert!(sender_cert.validate(&trust_root.public_key, Timestamp::from_epoch_millis(now_millis())).unwrap());
    let bob_uuid = bob.aci.service_id_string();
    let bob_device = bob_addr.device_id();

    let seal = |alice: &mut Party, ptext: &[u8]| -> Vec<u8> {
        run(sealed_sender_encrypt(
            &bob_addr,
            &sender_cert,
            ptext,
            &mut alice.store.session_store,
            &mut alice.store.identity_store,
            SystemTime::now(),
            &mut rand::rng(),
        ))
        .unwrap()
    };
    let unseal = |bob: &mut Party, sealed: &[u8]| {
        let s = &mut bob.store;
        run(sealed_sender_decrypt(
            sealed,
            &trust_root.public_key,
            Timestamp::from_epoch_millis(now_millis()),
            None,
            bob_uuid.clone(),
            bob_device,
            &mut s.identity_store,
            &mut s.session_store,
            &mut s.pre_key_store,
            &s.signed_pre_key_store,
            &mut s.kyber_pre_key_store,
        ))
        .unwrap()
    };

    // Check once: the message round-trips and the sender is Alice.
    let ptext = padded_message();
    let result = unseal(&mut bob, &seal(&mut alice, &ptext));
    assert_eq!(result.message, ptext);
    assert_eq!(result.sender_uuid, alice_addr.name());
    assert_eq!(result.device_id, alice_addr.device_id());

    let mut group = c.benchmark_group("sealed_sender");
    group.bench_function("encrypt+decrypt", |b| {
        b.iter(|| {
            let sealed = seal(&mut alice, black_box(&ptext));
            black_box(unseal(&mut bob, &sealed))
        });
    });
    group.finish();
}

/// Alice creates a sender-key chain for a fresh distribution id and Bob processes her SKDM (as
/// it would arrive inside a 1:1 message). Returns (alice, bob, distribution id).
fn sender_key_pair() -> (Party, Party, Uuid) {
    let mut alice = Party::new();
    let mut bob = Party::new();
    let distribution_id = Uuid::new_v4();
    let skdm = run(create_sender_key_distribution_message(
        &alice.addr,
        distribution_id,
        &mut alice.store.sender_key_store,
        &mut rand::rng(),
    ))
    .unwrap();
    let skdm = SenderKeyDistributionMessage::try_from(skdm.serialized()).unwrap();
    run(process_sender_key_distribution_message(&alice.addr, &skdm, &mut bob.store.sender_key_store)).unwrap();

    // Check once: a group message round-trips.
    let ptext = padded_message();
    let skm = alice.group_encrypt(distribution_id, &ptext);
    assert_eq!(bob.group_decrypt(&alice.addr.clone(), &skm), ptext);
    (alice, bob, distribution_id)
}

fn bench_group(c: &mut Criterion) {
    let ptext = padded_message();
    let mut group = c.benchmark_group("group");

    // Encrypt only: Alice's chain advances by one per iteration.
    {
        let (mut alice, _bob, dist) = sender_key_pair();
        group.bench_function("encrypt", |b| {
            b.iter(|| alice.group_encrypt(dist, black_box(&ptext)));
        });
    }

    // Decrypt only, on its own pair so Bob never has to skip ahead: messages are made in the
    // untimed setup, in order, and decrypted in the same order.
    {
        let (mut alice, mut bob, dist) = sender_key_pair();
        let alice_addr = alice.addr.clone();
        group.bench_function("decrypt", |b| {
            b.iter_batched(
                || alice.group_encrypt(dist, &ptext),
                |skm| bob.group_decrypt(&alice_addr, &skm),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// Runs every benchmark with a short configuration, so the whole run takes about a minute.
/// (Written out instead of `criterion_group!`, whose generated function has no doc comment.)
fn benches() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    bench_session(&mut c);
    bench_sealed_sender(&mut c);
    bench_group(&mut c);
}

criterion_main!(benches);
