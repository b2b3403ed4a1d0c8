//! Device linking: the sealed format, link codes, the provisioning message, archive chunks.

use hush_keys::ProvisionError;
use hush_keys::provision::{
    ARCHIVE_CHUNK_OVERHEAD, ArchiveKey, ArchiveRef, LinkCode, MAX_ARCHIVE_CHUNK_PLAINTEXT, MAX_PROVISION_PLAINTEXT,
    PROVISION_VERSION, ProvisionMessage, ProvisioningKeyPair, SEALED_OVERHEAD, seal, seal_provision,
};
use libsignal_protocol::{IdentityKeyPair, KeyPair, PrivateKey};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::fuzz_support::{mutated, run};
use crate::support::{ACCOUNT, bit_flips};

/// The new device's key pair, from fixed bytes.
fn recipient() -> ProvisioningKeyPair {
    ProvisioningKeyPair::from_bytes(&[0x11; 32])
}

fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A fixed provisioning channel address.
const ADDRESS: &str = "pRoV_chan-0123456789";

/// Low-order X25519 points (the point at infinity spelled two ways, order 2, and order 8).
const LOW_ORDER_POINTS: [&str; 5] = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
];

fn low_order_points() -> impl Iterator<Item = [u8; 32]> {
    LOW_ORDER_POINTS.iter().map(|h| hex::decode(h).unwrap().try_into().unwrap())
}

/// A message with every optional field set, from fixed (seeded) keys.
fn full_message() -> ProvisionMessage {
    ProvisionMessage {
        identity: IdentityKeyPair::generate(&mut seeded(2)),
        account_id: ACCOUNT,
        username: "alice".to_owned(),
        link_token: [0x5a; 32],
        archive: Some(ArchiveRef { id: "archive-7".to_owned(), key: ArchiveKey::from_bytes([0x33; 32]) }),
        profile_name: Some("Alice Ünlü".to_owned()),
    }
}

fn minimal_message() -> ProvisionMessage {
    ProvisionMessage { archive: None, profile_name: None, ..full_message() }
}

fn sealed_sample() -> Vec<u8> {
    seal(&recipient().public(), b"hello, new device", &mut seeded(1)).unwrap()
}

// ---------------------------------------------------------------------------------------
// The sealed format

#[test]
fn sealed_message_opens_with_the_recipient_key() {
    let pair = ProvisioningKeyPair::generate(&mut rand::rng());
    for len in [0, 1, 17, 1000, MAX_PROVISION_PLAINTEXT] {
        let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let sealed = seal(&pair.public(), &plaintext, &mut rand::rng()).unwrap();
        assert_eq!(sealed.len(), len + SEALED_OVERHEAD);
        assert_eq!(pair.open(&sealed).unwrap(), plaintext);
    }
}

#[test]
fn key_pair_survives_its_secret_bytes() {
    let pair = ProvisioningKeyPair::generate(&mut rand::rng());
    let restored = ProvisioningKeyPair::from_bytes(&pair.to_bytes());
    assert_eq!(restored.public(), pair.public());
    let sealed = seal(&pair.public(), b"x", &mut rand::rng()).unwrap();
    assert_eq!(restored.open(&sealed).unwrap(), b"x");
}

#[test]
fn sealing_twice_gives_different_bytes() {
    let a = seal(&recipient().public(), b"same", &mut rand::rng()).unwrap();
    let b = seal(&recipient().public(), b"same", &mut rand::rng()).unwrap();
    assert_ne!(a, b);
}

#[test]
fn sealed_layout_snapshot() {
    let pair = recipient();
    let sealed = sealed_sample();
    let (version, rest) = sealed.split_at(1);
    let (ephemeral, rest) = rest.split_at(32);
    let (nonce, ciphertext) = rest.split_at(12);
    let layout = format!(
        "recipient public: {}\nversion: {}\nephemeral public: {}\nnonce: {}\nciphertext+tag: {}\ntotal: {}",
        hex::encode(pair.public()),
        hex::encode(version),
        hex::encode(ephemeral),
        hex::encode(nonce),
        hex::encode(ciphertext),
        sealed.len()
    );
    insta::assert_snapshot!(layout);
    assert_eq!(pair.open(&sealed).unwrap(), b"hello, new device");
}

/// Rebuilds [`sealed_sample`] from the documented construction with the crates directly, so
/// that the rustdoc of `seal` and the code agree (and the snapshot is not merely self-consistent).
#[test]
fn sealed_message_is_the_documented_construction() {
    use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
    use rand::RngCore;

    let recipient_public = recipient().public();
    let mut rng = seeded(1);
    let mut ephemeral_secret = [0u8; 32];
    rng.fill_bytes(&mut ephemeral_secret);
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);

    let ephemeral_public = x25519_dalek::x25519(ephemeral_secret, x25519_dalek::X25519_BASEPOINT_BYTES);
    let shared = x25519_dalek::x25519(ephemeral_secret, recipient_public);
    let info = [&b"hush-provision-v1"[..], &ephemeral_public, &recipient_public].concat();
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, &shared).expand(&info, &mut key).unwrap();
    let header = [&[1u8][..], &ephemeral_public, &nonce].concat();
    let ciphertext = aes_gcm_siv::Aes256GcmSiv::new(&key.into())
        .encrypt(&nonce.into(), Payload { msg: b"hello, new device", aad: &header })
        .unwrap();

    assert_eq!(sealed_sample(), [header, ciphertext].concat());
}

#[test]
fn sealed_message_for_another_key_is_refused() {
    let other = ProvisioningKeyPair::generate(&mut rand::rng());
    assert_eq!(other.open(&sealed_sample()), Err(ProvisionError::DecryptionFailed));
}

#[test]
fn every_flipped_bit_of_a_sealed_message_is_refused() {
    let pair = recipient();
    for (bit, flipped) in bit_flips(&sealed_sample()).enumerate() {
        let expected = if bit < 8 {
            ProvisionError::UnsupportedVersion(PROVISION_VERSION ^ (1 << bit))
        } else {
            ProvisionError::DecryptionFailed
        };
        assert_eq!(pair.open(&flipped), Err(expected), "bit {bit}");
    }
}

#[test]
fn flipped_bit_anywhere_in_any_sealed_message_is_refused() {
    let pair = recipient();
    let public = pair.public();
    let cases = (proptest::collection::vec(any::<u8>(), 0..300), any::<u64>(), any::<prop::sample::Index>());
    run(cases, |(plaintext, seed, bit)| {
        let mut sealed = seal(&public, &plaintext, &mut seeded(seed)).unwrap();
        let bit = bit.index(sealed.len() * 8);
        sealed[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(pair.open(&sealed).is_err());
        Ok(())
    });
}

#[test]
fn truncated_sealed_message_is_refused_at_every_length() {
    let pair = recipient();
    let sealed = sealed_sample();
    for len in 0..sealed.len() {
        let expected = if len < SEALED_OVERHEAD {
            ProvisionError::Truncated { len, min: SEALED_OVERHEAD }
        } else {
            ProvisionError::DecryptionFailed
        };
        assert_eq!(pair.open(&sealed[..len]), Err(expected), "length {len}");
    }
}

#[test]
fn sealed_message_of_another_version_is_refused_before_its_length_is_checked() {
    let pair = recipient();
    let mut sealed = sealed_sample();
    for version in [0, 2, 0xff] {
        sealed[0] = version;
        assert_eq!(pair.open(&sealed), Err(ProvisionError::UnsupportedVersion(version)));
        assert_eq!(pair.open(&[version]), Err(ProvisionError::UnsupportedVersion(version)));
    }
}

#[test]
fn oversize_plaintext_is_refused_on_both_sides() {
    let pair = recipient();
    let too_big = vec![0u8; MAX_PROVISION_PLAINTEXT + 1];
    let expected = ProvisionError::PlaintextTooLarge { len: MAX_PROVISION_PLAINTEXT + 1, max: MAX_PROVISION_PLAINTEXT };
    assert_eq!(seal(&pair.public(), &too_big, &mut rand::rng()), Err(expected.clone()));

    // A forged message that claims a larger plaintext is refused before any decryption.
    let mut forged = vec![0u8; MAX_PROVISION_PLAINTEXT + 1 + SEALED_OVERHEAD];
    forged[0] = PROVISION_VERSION;
    assert_eq!(pair.open(&forged), Err(expected));
}

#[test]
fn low_order_keys_are_refused_on_both_sides() {
    let pair = recipient();
    for point in low_order_points() {
        assert_eq!(seal(&point, b"x", &mut rand::rng()), Err(ProvisionError::WeakPublicKey));

        let mut sealed = sealed_sample();
        sealed[1..33].copy_from_slice(&point);
        assert_eq!(pair.open(&sealed), Err(ProvisionError::WeakPublicKey));
    }
}

#[test]
fn key_pair_debug_shows_only_the_public_key() {
    let pair = recipient();
    let debug = format!("{pair:?}");
    assert!(debug.contains(&hex::encode(pair.public())));
    assert!(!debug.contains(&hex::encode(pair.to_bytes())));
}

// ---------------------------------------------------------------------------------------
// Link codes

fn link_code() -> LinkCode {
    recipient().link_code(ADDRESS).unwrap()
}

#[test]
fn link_code_snapshot() {
    let code = link_code();
    insta::assert_snapshot!(format!("uri: {}\ntext: {}", code.to_uri(), code.to_text()));
}

#[test]
fn link_code_round_trips_through_both_forms() {
    let code = link_code();
    assert_eq!(code.address(), ADDRESS);
    assert_eq!(code.public_key(), &recipient().public());
    assert_eq!(LinkCode::parse(&code.to_uri()), Ok(code.clone()));
    assert_eq!(LinkCode::parse(&code.to_text()), Ok(code.clone()));
    assert_eq!(code.to_string(), code.to_uri());
    assert_eq!(code.to_text().parse::<LinkCode>(), Ok(code));
}

#[test]
fn link_code_parse_is_lenient_where_it_is_harmless() {
    let code = link_code();
    let key = code.to_text().split_once('.').unwrap().1.to_owned();
    for input in [
        format!("  {}\n", code.to_uri()),
        format!("\t{} ", code.to_text()),
        code.to_uri().replace("hush://link?", "HUSH://Link?"),
        format!("hush://link?key={key}&address={ADDRESS}"),
    ] {
        assert_eq!(LinkCode::parse(&input), Ok(code.clone()), "{input:?}");
    }
}

#[test]
fn address_of_every_allowed_length_and_character_is_accepted() {
    let public = recipient().public();
    for address in ["a", "Z", "0", "_", "-", &"x".repeat(64), "AZaz09_-"] {
        let code = LinkCode::new(address, public).unwrap();
        assert_eq!(LinkCode::parse(&code.to_uri()).unwrap().address(), address);
        assert_eq!(LinkCode::parse(&code.to_text()).unwrap().address(), address);
    }
}

#[test]
fn malformed_link_codes_are_refused_with_the_reason() {
    let code = link_code();
    let key = code.to_text().split_once('.').unwrap().1.to_owned();
    // The last character's low 2 bits are padding, zero in the canonical spelling; set one.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = alphabet.iter().position(|&c| c == key.as_bytes()[42]).unwrap();
    let noncanonical = format!("{}{}", &key[..42], char::from(alphabet[last | 1]));
    assert_ne!(noncanonical, key);
    let low_order = base64_url(&low_order_points().next().unwrap());
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "it is empty"),
        ("   \n".to_owned(), "it is empty"),
        (
            format!("hush://other?address={ADDRESS}&key={key}"),
            "it is a hush: URI but does not start with `hush://link?`",
        ),
        (format!("hush:link?address={ADDRESS}&key={key}"), "it is a hush: URI but does not start with `hush://link?`"),
        (format!("hush://link?address={ADDRESS}"), "the URI has no `key` parameter"),
        (format!("hush://link?key={key}"), "the URI has no `address` parameter"),
        (format!("hush://link?address={ADDRESS}&key={key}&key={key}"), "the URI repeats a parameter"),
        (
            format!("hush://link?address={ADDRESS}&key={key}&v=2"),
            "the URI has a parameter other than `address` and `key`",
        ),
        (format!("hush://link?address={ADDRESS}&key"), "a URI parameter has no `=`"),
        (format!("hush://link?address={ADDRESS}&key={key}&"), "a URI parameter has no `=`"),
        ("hush://link?".to_owned(), "a URI parameter has no `=`"),
        (format!("hush://link?address=&key={key}"), "the address is empty"),
        (format!(".{key}"), "the address is empty"),
        (format!("{}.{key}", "a".repeat(65)), "the address is longer than 64 characters"),
        (format!("ab%20c.{key}"), "the address has a character other than A-Z a-z 0-9 _ -"),
        (format!("adr\u{e9}ss.{key}"), "the address has a character other than A-Z a-z 0-9 _ -"),
        (format!("hush://link?address=a+b&key={key}"), "the address has a character other than A-Z a-z 0-9 _ -"),
        (format!("{ADDRESS} {key}"), "no `.` between the address and the key"),
        (format!("{ADDRESS}.{key}.x"), "the key is not 43 characters of base64url without padding (32 bytes)"),
        (format!("{ADDRESS}.a.{key}"), "the key is not 43 characters of base64url without padding (32 bytes)"),
        (format!("{ADDRESS}.{key}="), "the key is not 43 characters of base64url without padding (32 bytes)"),
        (format!("{ADDRESS}.{}", &key[..42]), "the key is not 43 characters of base64url without padding (32 bytes)"),
        (
            format!("{ADDRESS}.{}", key.replace(&key[..2], "+/")),
            "the key is not 43 characters of base64url without padding (32 bytes)",
        ),
        (format!("{ADDRESS}.{noncanonical}"), "the key is not 43 characters of base64url without padding (32 bytes)"),
        (format!("{ADDRESS}.{low_order}"), "the key is a low-order X25519 point"),
    ];
    for (input, reason) in cases {
        assert_eq!(LinkCode::parse(&input), Err(ProvisionError::BadLinkCode(reason)), "{input:?}");
    }
}

#[test]
fn link_code_constructor_checks_like_parse() {
    let public = recipient().public();
    assert_eq!(LinkCode::new("", public), Err(ProvisionError::BadLinkCode("the address is empty")));
    assert_eq!(
        LinkCode::new("a.b", public),
        Err(ProvisionError::BadLinkCode("the address has a character other than A-Z a-z 0-9 _ -"))
    );
    for point in low_order_points() {
        assert_eq!(
            LinkCode::new(ADDRESS, point),
            Err(ProvisionError::BadLinkCode("the key is a low-order X25519 point"))
        );
    }
}

#[test]
fn arbitrary_strings_never_panic_link_code_parse() {
    run(any::<String>(), |input| {
        if let Ok(code) = LinkCode::parse(&input) {
            prop_assert_eq!(LinkCode::parse(&code.to_uri()), Ok(code.clone()));
        }
        Ok(())
    });
}

#[test]
fn mutated_link_codes_never_panic_and_parse_only_to_valid_codes() {
    let code = link_code();
    let inputs = prop_oneof![mutated(code.to_uri().into_bytes()), mutated(code.to_text().into_bytes())];
    run(inputs, |bytes| {
        let input = String::from_utf8_lossy(&bytes);
        if let Ok(parsed) = LinkCode::parse(&input) {
            prop_assert_eq!(LinkCode::parse(&parsed.to_text()), Ok(parsed.clone()));
            prop_assert_eq!(LinkCode::parse(&parsed.to_uri()), Ok(parsed));
        }
        Ok(())
    });
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------
// The provisioning message

fn assert_same_message(a: &ProvisionMessage, b: &ProvisionMessage) {
    assert_eq!(a.encode().unwrap(), b.encode().unwrap());
    assert_eq!(a.identity.serialize(), b.identity.serialize());
    assert_eq!(a.account_id, b.account_id);
    assert_eq!(a.username, b.username);
    assert_eq!(a.link_token, b.link_token);
    assert_eq!(
        a.archive.as_ref().map(|x| (&x.id, *x.key.as_bytes())),
        b.archive.as_ref().map(|x| (&x.id, *x.key.as_bytes()))
    );
    assert_eq!(a.profile_name, b.profile_name);
}

#[test]
fn provision_message_round_trips() {
    let only_archive = ProvisionMessage { profile_name: None, ..full_message() };
    let only_profile = ProvisionMessage { archive: None, ..full_message() };
    let empty_strings = ProvisionMessage {
        username: String::new(),
        profile_name: Some(String::new()),
        archive: Some(ArchiveRef { id: String::new(), key: ArchiveKey::from_bytes([0; 32]) }),
        ..full_message()
    };
    for message in [full_message(), minimal_message(), only_archive, only_profile, empty_strings] {
        let decoded = ProvisionMessage::decode(&message.encode().unwrap()).unwrap();
        assert_same_message(&decoded, &message);
    }
}

fn message_layout(bytes: &[u8]) -> String {
    let (version, rest) = bytes.split_at(1);
    let (identity_public, rest) = rest.split_at(33);
    let (identity_private, rest) = rest.split_at(32);
    let (account, rest) = rest.split_at(16);
    let (token, rest) = rest.split_at(32);
    format!(
        "version: {}\nidentity public: {}\nidentity private: {}\naccount id: {}\nlink token: {}\nvariable part: {}\ntotal: {}",
        hex::encode(version),
        hex::encode(identity_public),
        hex::encode(identity_private),
        hex::encode(account),
        hex::encode(token),
        hex::encode(rest),
        bytes.len()
    )
}

#[test]
fn provision_message_full_snapshot() {
    insta::assert_snapshot!(message_layout(&full_message().encode().unwrap()));
}

#[test]
fn provision_message_minimal_snapshot() {
    insta::assert_snapshot!(message_layout(&minimal_message().encode().unwrap()));
}

#[test]
fn sealed_provision_message_snapshot() {
    let sealed = seal_provision(&link_code(), &full_message(), &mut seeded(3)).unwrap();
    insta::assert_snapshot!(format!("{}\ntotal: {}", hex::encode(&sealed), sealed.len()));
}

#[test]
fn provision_message_travels_from_link_code_to_new_device() {
    let new_device = ProvisioningKeyPair::generate(&mut rand::rng());
    let shown = new_device.link_code(ADDRESS).unwrap().to_uri();

    let scanned = LinkCode::parse(&shown).unwrap();
    let sealed = seal_provision(&scanned, &full_message(), &mut rand::rng()).unwrap();

    let received = new_device.open_provision(&sealed).unwrap();
    assert_same_message(&received, &full_message());
    // The identity key pair still signs as the account.
    let signature = received.identity.private_key().calculate_signature(b"m", &mut rand::rng()).unwrap();
    assert!(full_message().identity.public_key().verify_signature(b"m", &signature));

    let other = ProvisioningKeyPair::generate(&mut rand::rng());
    assert_eq!(other.open_provision(&sealed).unwrap_err(), ProvisionError::DecryptionFailed);
}

fn bad(field: &'static str, problem: &'static str) -> ProvisionError {
    ProvisionError::BadMessage { field, problem }
}

const CUT_SHORT: &str = "is cut short (the message ends inside it)";

#[test]
fn truncated_provision_message_names_the_field_it_ends_in() {
    let bytes = full_message().encode().unwrap();
    let username_end = 114 + 2 + "alice".len();
    let archive_end = username_end + 1 + 2 + "archive-7".len() + 32;
    for len in 0..bytes.len() {
        let field = match len {
            0 => "version",
            1..34 => "identity public key",
            34..66 => "identity private key",
            66..82 => "account id",
            82..114 => "link token",
            _ if len < username_end => "username",
            _ if len == username_end => "archive",
            _ if len < username_end + 1 + 2 + "archive-7".len() => "archive id",
            _ if len < archive_end => "archive key",
            _ => "profile name",
        };
        assert_eq!(ProvisionMessage::decode(&bytes[..len]).unwrap_err(), bad(field, CUT_SHORT), "length {len}");
    }
}

#[test]
fn provision_message_with_trailing_bytes_is_refused() {
    let mut bytes = minimal_message().encode().unwrap();
    bytes.push(0);
    assert_eq!(ProvisionMessage::decode(&bytes).unwrap_err(), bad("message", "has bytes after its last field"));
}

#[test]
fn provision_message_of_another_version_is_refused() {
    let mut bytes = minimal_message().encode().unwrap();
    for version in [0, 2, 0xff] {
        bytes[0] = version;
        assert_eq!(ProvisionMessage::decode(&bytes).unwrap_err(), ProvisionError::UnsupportedMessageVersion(version));
    }
}

#[test]
fn provision_message_presence_byte_must_be_0_or_1() {
    let mut bytes = minimal_message().encode().unwrap();
    let archive_flag = 114 + 2 + "alice".len();
    bytes[archive_flag] = 2;
    assert_eq!(ProvisionMessage::decode(&bytes).unwrap_err(), bad("archive", "presence byte is neither 0 nor 1"));
    bytes[archive_flag] = 0;
    bytes[archive_flag + 1] = 0xff;
    assert_eq!(ProvisionMessage::decode(&bytes).unwrap_err(), bad("profile name", "presence byte is neither 0 nor 1"));
}

#[test]
fn provision_message_strings_must_be_utf8() {
    let bytes = full_message().encode().unwrap();
    let username_at = 114 + 2;
    let archive_id_at = username_at + "alice".len() + 1 + 2;
    let profile_at = archive_id_at + "archive-7".len() + 32 + 1 + 2;
    for (at, field) in [(username_at, "username"), (archive_id_at, "archive id"), (profile_at, "profile name")] {
        let mut broken = bytes.clone();
        broken[at] = 0xff;
        assert_eq!(ProvisionMessage::decode(&broken).unwrap_err(), bad(field, "is not UTF-8"));
    }
}

#[test]
fn provision_message_identity_keys_must_be_a_pair() {
    let bytes = minimal_message().encode().unwrap();

    let mut wrong_type = bytes.clone();
    wrong_type[1] = 0x06;
    assert_eq!(
        ProvisionMessage::decode(&wrong_type).unwrap_err(),
        bad("identity public key", "is not a valid Curve25519 key")
    );

    let mut other_private = bytes.clone();
    let other = KeyPair::generate(&mut rand::rng());
    other_private[34..66].copy_from_slice(&other.private_key.serialize());
    assert_eq!(
        ProvisionMessage::decode(&other_private).unwrap_err(),
        bad("identity private key", "does not belong to the identity public key")
    );

    // Bit 0 is one that clamping clears: the same key, spelled another way.
    let mut unclamped = bytes.clone();
    unclamped[34] |= 1;
    assert_eq!(ProvisionMessage::decode(&unclamped).unwrap_err(), bad("identity private key", "is not clamped"));
}

#[test]
fn oversize_provision_message_is_refused_when_encoding() {
    let message = ProvisionMessage { username: "u".repeat(MAX_PROVISION_PLAINTEXT), ..minimal_message() };
    assert!(matches!(
        message.encode(),
        Err(ProvisionError::PlaintextTooLarge { len, max: MAX_PROVISION_PLAINTEXT }) if len > MAX_PROVISION_PLAINTEXT
    ));
    assert!(matches!(
        seal_provision(&link_code(), &message, &mut rand::rng()),
        Err(ProvisionError::PlaintextTooLarge { .. })
    ));

    // The largest encoding that fits is sealed and opened.
    let fixed = minimal_message().encode().unwrap().len() - "alice".len();
    let largest = ProvisionMessage { username: "u".repeat(MAX_PROVISION_PLAINTEXT - fixed), ..minimal_message() };
    assert_eq!(largest.encode().unwrap().len(), MAX_PROVISION_PLAINTEXT);
    let sealed = seal_provision(&link_code(), &largest, &mut rand::rng()).unwrap();
    assert_eq!(recipient().open_provision(&sealed).unwrap().username.len(), MAX_PROVISION_PLAINTEXT - fixed);
}

#[test]
fn mutated_provision_messages_never_panic_decode() {
    let inputs = prop_oneof![mutated(full_message().encode().unwrap()), mutated(minimal_message().encode().unwrap())];
    run(inputs, |bytes| {
        if let Ok(message) = ProvisionMessage::decode(&bytes) {
            // Whatever decodes encodes back to the same bytes: one spelling per message.
            prop_assert_eq!(message.encode().unwrap(), bytes);
        }
        Ok(())
    });
}

#[test]
fn provision_message_debug_shows_no_secrets() {
    let message = full_message();
    let debug = format!("{message:?}");
    assert!(debug.contains(&ACCOUNT.to_string()));
    for secret in [
        hex::encode(message.identity.private_key().serialize()),
        hex::encode(message.link_token),
        hex::encode([0x33; 32]),
        "alice".to_owned(),
        "Alice".to_owned(),
    ] {
        assert!(!debug.contains(&secret), "{debug}");
    }
    assert_eq!(format!("{:?}", ArchiveKey::from_bytes([0x33; 32])), "ArchiveKey(..)");
}

#[test]
fn identity_private_key_bytes_are_the_libsignal_serialization() {
    let message = full_message();
    let bytes = message.encode().unwrap();
    let private = PrivateKey::deserialize(&bytes[34..66]).unwrap();
    assert_eq!(private.public_key().unwrap(), *message.identity.public_key());
}

// ---------------------------------------------------------------------------------------
// History archive chunks

fn archive_key() -> ArchiveKey {
    ArchiveKey::from_bytes([0x33; 32])
}

#[test]
fn archive_chunks_round_trip() {
    let key = ArchiveKey::generate(&mut rand::rng());
    let chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; usize::from(i) * 100]).collect();
    let sealed: Vec<Vec<u8>> =
        chunks.iter().zip(0u32..).map(|(c, i)| key.seal_chunk(i, c, &mut rand::rng()).unwrap()).collect();
    for ((chunk, sealed), index) in chunks.iter().zip(&sealed).zip(0u32..) {
        assert_eq!(sealed.len(), chunk.len() + ARCHIVE_CHUNK_OVERHEAD);
        assert_eq!(&key.open_chunk(index, sealed).unwrap(), chunk);
    }
    let largest = vec![7u8; MAX_ARCHIVE_CHUNK_PLAINTEXT];
    let sealed = key.seal_chunk(u32::MAX, &largest, &mut rand::rng()).unwrap();
    assert_eq!(key.open_chunk(u32::MAX, &sealed).unwrap(), largest);
}

#[test]
fn archive_chunk_snapshot() {
    let sealed = archive_key().seal_chunk(7, b"chunk seven", &mut seeded(4)).unwrap();
    let (nonce, ciphertext) = sealed.split_at(12);
    insta::assert_snapshot!(format!(
        "nonce: {}\nciphertext+tag: {}\ntotal: {}",
        hex::encode(nonce),
        hex::encode(ciphertext),
        sealed.len()
    ));
}

/// Rebuilds the snapshot chunk from the documented construction with the crate directly.
#[test]
fn archive_chunk_is_the_documented_construction() {
    use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
    use rand::RngCore;

    let mut nonce = [0u8; 12];
    seeded(4).fill_bytes(&mut nonce);
    let aad = [&b"hush-archive-chunk-v1"[..], &7u32.to_be_bytes()].concat();
    let ciphertext = aes_gcm_siv::Aes256GcmSiv::new(&[0x33; 32].into())
        .encrypt(&nonce.into(), Payload { msg: b"chunk seven", aad: &aad })
        .unwrap();
    let sealed = archive_key().seal_chunk(7, b"chunk seven", &mut seeded(4)).unwrap();
    assert_eq!(sealed, [&nonce[..], &ciphertext].concat());
}

#[test]
fn swapped_or_reordered_archive_chunks_are_refused() {
    let key = archive_key();
    let first = key.seal_chunk(0, b"first", &mut rand::rng()).unwrap();
    let second = key.seal_chunk(1, b"second", &mut rand::rng()).unwrap();
    assert_eq!(key.open_chunk(0, &second), Err(ProvisionError::DecryptionFailed));
    assert_eq!(key.open_chunk(1, &first), Err(ProvisionError::DecryptionFailed));
    for index in [2, 256, 1 << 24, u32::MAX] {
        assert_eq!(key.open_chunk(index, &first), Err(ProvisionError::DecryptionFailed));
    }
}

#[test]
fn archive_chunk_under_another_key_is_refused() {
    let sealed = archive_key().seal_chunk(0, b"x", &mut rand::rng()).unwrap();
    let other = ArchiveKey::generate(&mut rand::rng());
    assert_eq!(other.open_chunk(0, &sealed), Err(ProvisionError::DecryptionFailed));
}

#[test]
fn every_flipped_bit_of_an_archive_chunk_is_refused() {
    let key = archive_key();
    let sealed = key.seal_chunk(3, b"some history", &mut seeded(5)).unwrap();
    for (bit, flipped) in bit_flips(&sealed).enumerate() {
        assert_eq!(key.open_chunk(3, &flipped), Err(ProvisionError::DecryptionFailed), "bit {bit}");
    }
}

#[test]
fn truncated_archive_chunk_is_refused_at_every_length() {
    let key = archive_key();
    let sealed = key.seal_chunk(0, b"some history", &mut seeded(6)).unwrap();
    for len in 0..sealed.len() {
        let expected = if len < ARCHIVE_CHUNK_OVERHEAD {
            ProvisionError::Truncated { len, min: ARCHIVE_CHUNK_OVERHEAD }
        } else {
            ProvisionError::DecryptionFailed
        };
        assert_eq!(key.open_chunk(0, &sealed[..len]), Err(expected), "length {len}");
    }
}

#[test]
fn oversize_archive_chunk_is_refused_on_both_sides() {
    let key = archive_key();
    let expected =
        ProvisionError::PlaintextTooLarge { len: MAX_ARCHIVE_CHUNK_PLAINTEXT + 1, max: MAX_ARCHIVE_CHUNK_PLAINTEXT };
    assert_eq!(key.seal_chunk(0, &vec![0; MAX_ARCHIVE_CHUNK_PLAINTEXT + 1], &mut rand::rng()), Err(expected.clone()));
    assert_eq!(key.open_chunk(0, &vec![0; MAX_ARCHIVE_CHUNK_PLAINTEXT + 1 + ARCHIVE_CHUNK_OVERHEAD]), Err(expected));
}
