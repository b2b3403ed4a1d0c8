//! Device authentication: WebSocket challenge and REST request signatures.

use hush_keys::KeyError;
use hush_keys::auth::{AuthHeader, DeviceAuthKey, DeviceSigningKey, RestSigningInput, body_sha256};
use uuid::Uuid;

use crate::support::{ACCOUNT, DEVICE, NONCE, TS_MS, bit_flips, fixed_key};

const WS_NONCE: [u8; 32] = [9; 32];

fn rest_input<'a>(method: &'a str, path: &'a str, body: &[u8]) -> RestSigningInput<'a> {
    RestSigningInput { method, path_and_query: path, timestamp_ms: TS_MS, nonce: NONCE, body_sha256: body_sha256(body) }
}

#[test]
fn ws_challenge_round_trip() {
    let key = DeviceSigningKey::generate(&mut rand::rng());
    let sig = key.sign_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE);
    key.public().verify_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE, &sig).unwrap();
}

#[test]
fn ws_challenge_refused_with_another_key() {
    let key = DeviceSigningKey::generate(&mut rand::rng());
    let other = DeviceSigningKey::generate(&mut rand::rng());
    let sig = key.sign_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE);
    assert_eq!(other.public().verify_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE, &sig), Err(KeyError::BadSignature));
}

#[test]
fn ws_challenge_refused_for_another_nonce() {
    let key = fixed_key();
    let sig = key.sign_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE);
    let mut other_nonce = WS_NONCE;
    other_nonce[31] ^= 1;
    assert_eq!(key.public().verify_ws_challenge(&other_nonce, ACCOUNT, DEVICE, &sig), Err(KeyError::BadSignature));
    // A prefix of the nonce is another nonce too.
    assert_eq!(key.public().verify_ws_challenge(&WS_NONCE[..31], ACCOUNT, DEVICE, &sig), Err(KeyError::BadSignature));
}

#[test]
fn ws_challenge_refused_for_another_account() {
    let key = fixed_key();
    let sig = key.sign_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE);
    let other = Uuid::from_u128(ACCOUNT.as_u128() ^ 1);
    assert_eq!(key.public().verify_ws_challenge(&WS_NONCE, other, DEVICE, &sig), Err(KeyError::BadSignature));
}

#[test]
fn ws_challenge_refused_for_another_device_id() {
    let key = fixed_key();
    let sig = key.sign_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE);
    assert_eq!(key.public().verify_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE + 1, &sig), Err(KeyError::BadSignature));
}

#[test]
fn ws_challenge_refused_with_any_flipped_signature_bit() {
    let key = fixed_key();
    let sig = key.sign_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE);
    for flipped in bit_flips(&sig) {
        assert_eq!(key.public().verify_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE, &flipped), Err(KeyError::BadSignature));
    }
}

#[test]
fn signature_of_wrong_length_is_refused() {
    let key = fixed_key();
    let sig = key.sign_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE);
    for len in [0, 63, 65] {
        let mut wrong = sig.to_vec();
        wrong.resize(len, 0);
        assert_eq!(key.public().verify_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE, &wrong), Err(KeyError::BadSignature));
    }
}

#[test]
fn ws_challenge_message_layout_is_the_documented_one() {
    // Verify with a plain ed25519 verifier over the bytes PROTOCOL.md describes.
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let key = fixed_key();
    let sig = key.sign_ws_challenge(&WS_NONCE, ACCOUNT, DEVICE);
    let mut message = b"hush-ws-auth-v1\0".to_vec();
    message.extend_from_slice(&WS_NONCE);
    message.extend_from_slice(ACCOUNT.as_bytes());
    message.extend_from_slice(&DEVICE.to_be_bytes());
    let verifier = VerifyingKey::from_bytes(&key.public().to_bytes()).unwrap();
    verifier.verify(&message, &Signature::from_bytes(&sig)).unwrap();
}

#[test]
fn rest_round_trip() {
    let key = DeviceSigningKey::generate(&mut rand::rng());
    let input = rest_input("PUT", "/v1/keys?device=3", b"{\"k\":1}");
    let sig = key.sign_rest(&input);
    key.public().verify_rest(&input, &sig).unwrap();
}

#[test]
fn rest_refused_when_any_field_changes() {
    let key = fixed_key();
    let body = b"{\"k\":1}";
    let input = rest_input("PUT", "/v1/keys?device=3", body);
    let sig = key.sign_rest(&input);

    let changed = [
        ("method", RestSigningInput { method: "POST", ..input }),
        ("path", RestSigningInput { path_and_query: "/v1/keys?device=4", ..input }),
        ("ts", RestSigningInput { timestamp_ms: TS_MS + 1, ..input }),
        ("nonce", RestSigningInput { nonce: [0; 16], ..input }),
        ("body", RestSigningInput { body_sha256: body_sha256(b"{\"k\":2}"), ..input }),
        ("empty body", RestSigningInput { body_sha256: body_sha256(b""), ..input }),
    ];
    for (field, changed) in changed {
        assert_eq!(
            key.public().verify_rest(&changed, &sig),
            Err(KeyError::BadSignature),
            "a change of {field} must break the signature"
        );
    }
    for flipped in bit_flips(&sig) {
        assert_eq!(key.public().verify_rest(&input, &flipped), Err(KeyError::BadSignature));
    }
}

#[test]
fn ws_signature_is_not_a_rest_signature() {
    let key = fixed_key();
    let input = rest_input("GET", "/v1/devices", b"");
    let ws_sig = key.sign_ws_challenge(&input.message(), ACCOUNT, DEVICE);
    assert_eq!(key.public().verify_rest(&input, &ws_sig), Err(KeyError::BadSignature));
}

#[test]
fn rest_authorization_header_verifies_on_the_server_side() {
    let key = DeviceSigningKey::generate(&mut rand::rng());
    let body = b"hello";
    let value = key.rest_authorization(ACCOUNT, DEVICE, "POST", "/v1/messages", body, TS_MS, NONCE);

    let header = AuthHeader::parse(&value).unwrap();
    assert_eq!(header.account, ACCOUNT);
    assert_eq!(header.device_id, DEVICE);
    assert_eq!(header.timestamp_ms, TS_MS);
    assert_eq!(header.nonce, NONCE);
    let input = RestSigningInput {
        method: "POST",
        path_and_query: "/v1/messages",
        timestamp_ms: header.timestamp_ms,
        nonce: header.nonce,
        body_sha256: body_sha256(body),
    };
    key.public().verify_rest(&input, &header.signature).unwrap();
}

#[test]
fn rest_message_snapshot() {
    let input = rest_input("POST", "/v1/messages?urgent=true", b"{\"hello\":\"world\"}");
    let message = String::from_utf8(input.message()).unwrap();
    insta::assert_snapshot!(message);
}

#[test]
fn rest_authorization_header_value_snapshot() {
    let value = fixed_key().rest_authorization(
        ACCOUNT,
        DEVICE,
        "POST",
        "/v1/messages?urgent=true",
        b"{\"hello\":\"world\"}",
        TS_MS,
        NONCE,
    );
    insta::assert_snapshot!(value);
}

#[test]
fn body_sha256_is_sha256() {
    assert_eq!(hex::encode(body_sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

#[test]
fn signing_key_bytes_round_trip() {
    let key = DeviceSigningKey::generate(&mut rand::rng());
    let restored = DeviceSigningKey::from_bytes(&key.to_bytes());
    assert_eq!(restored.public(), key.public());
    assert_eq!(restored.to_bytes(), key.to_bytes());
}

#[test]
fn generated_keys_differ() {
    let a = DeviceSigningKey::generate(&mut rand::rng());
    let b = DeviceSigningKey::generate(&mut rand::rng());
    assert_ne!(a.to_bytes(), b.to_bytes());
}

#[test]
fn auth_key_bytes_round_trip() {
    let public = fixed_key().public();
    assert_eq!(DeviceAuthKey::from_bytes(&public.to_bytes()).unwrap(), public);
}

#[test]
fn auth_key_of_wrong_length_is_refused() {
    let bytes = fixed_key().public().to_bytes();
    for len in [0, 31, 33] {
        let mut wrong = bytes.to_vec();
        wrong.resize(len, 0);
        assert!(matches!(DeviceAuthKey::from_bytes(&wrong), Err(KeyError::InvalidKey(_))));
    }
}

#[test]
fn auth_key_that_is_not_a_point_is_refused() {
    let not_a_point = (0u8..=255)
        .map(|b| {
            let mut bytes = [0u8; 32];
            bytes[0] = b;
            bytes
        })
        .find(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_err())
        .unwrap();
    assert!(matches!(DeviceAuthKey::from_bytes(&not_a_point), Err(KeyError::InvalidKey(_))));
}

#[test]
fn weak_auth_key_is_refused() {
    // The identity point: a valid encoding, but of small order.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(ed25519_dalek::VerifyingKey::from_bytes(&identity).is_ok());
    assert!(matches!(DeviceAuthKey::from_bytes(&identity), Err(KeyError::InvalidKey(_))));
}

#[test]
fn signing_key_debug_hides_the_secret() {
    let key = fixed_key();
    let debug = format!("{key:?}");
    assert!(!debug.contains(&hex::encode(key.to_bytes())), "{debug}");
    assert!(!debug.contains("66, 66"), "{debug}");
    assert!(debug.contains(&hex::encode(key.public().to_bytes())), "{debug}");
}
