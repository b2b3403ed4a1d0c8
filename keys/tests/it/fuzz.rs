//! Fuzzing every decoder of this crate that the server runs on client bytes, on stable:
//! the `Hush-Sig` header parser, key and prekey validation, and signature checks; plus the
//! sender-certificate check clients run on server bytes. Structured inputs and mutations of
//! valid ones; `HUSH_FUZZ_CASES` cases per property (see [`crate::fuzz_support::fuzz_config`]).

use hush_keys::KeyError;
use hush_keys::auth::{AuthHeader, DeviceAuthKey, RestSigningInput, body_sha256};
use hush_keys::certs::{ServerKeys, verify_sender_certificate};
use hush_keys::prekeys::{validate_ec_public_key, validate_identity_key, verify_kyber_prekey, verify_signed_ec_prekey};
use libsignal_protocol::{GenericSignedPreKey as _, IdentityKeyPair, KeyPair, KyberPreKeyRecord, kem};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::fuzz_support::{mutated, run};
use crate::support::{ACCOUNT, DEVICE, NONCE, TS_MS, fixed_key};

fn canonical_header() -> AuthHeader {
    AuthHeader { account: ACCOUNT, device_id: DEVICE, timestamp_ms: TS_MS, nonce: NONCE, signature: [0xab; 64] }
}

const PARAM_NAMES: [&str; 5] = ["account", "device", "ts", "nonce", "sig"];

/// One change to the parameter list of a valid header.
#[derive(Debug, Clone)]
enum ParamEdit {
    Drop(Index),
    Duplicate(Index),
    Swap(Index, Index),
    Rename(Index, String),
    Revalue(Index, String),
}

/// Parameter values a client could plausibly get wrong (never a `,`, so the parameter
/// structure stays the one the edits describe).
fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}",
        "[+-][0-9]{1,5}",
        "[0-9a-fA-F]{0,140}",
        "[0-9a-fA-F-]{30,40}",
        "\\{?[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\\}?",
        "[ -+\\--~]{0,40}",
        "[^,]{0,12}",
    ]
}

fn param_edit() -> impl Strategy<Value = ParamEdit> {
    let name = prop_oneof![proptest::sample::select(PARAM_NAMES.to_vec()).prop_map(str::to_owned), "[a-zA-Z]{0,8}"];
    prop_oneof![
        any::<Index>().prop_map(ParamEdit::Drop),
        any::<Index>().prop_map(ParamEdit::Duplicate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| ParamEdit::Swap(a, b)),
        (any::<Index>(), name).prop_map(|(i, n)| ParamEdit::Rename(i, n)),
        (any::<Index>(), param_value()).prop_map(|(i, v)| ParamEdit::Revalue(i, v)),
    ]
}

/// A header built from the canonical one: another scheme spelling, another separator,
/// and zero to three parameter edits. Also returns the parameter names as assembled.
fn edited_header() -> impl Strategy<Value = (String, Vec<String>, String)> {
    let scheme = prop_oneof![Just("Hush-Sig".to_owned()), Just("hush-SIG".to_owned()), "[A-Za-z-]{0,10}"];
    let separator = proptest::sample::select(vec![",", ", ", ",\t", " , ", ",  "]);
    (scheme, separator, proptest::collection::vec(param_edit(), 0..4)).prop_map(|(scheme, separator, edits)| {
        let value = canonical_header().to_header_value();
        let (_, canonical_params) = value.split_once(' ').unwrap();
        let mut params: Vec<(String, String)> = canonical_params
            .split(',')
            .map(|p| p.split_once('=').unwrap())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for edit in edits {
            if params.is_empty() {
                break;
            }
            let len = params.len();
            match edit {
                ParamEdit::Drop(i) => drop(params.remove(i.index(len))),
                ParamEdit::Duplicate(i) => params.push(params[i.index(len)].clone()),
                ParamEdit::Swap(a, b) => params.swap(a.index(len), b.index(len)),
                ParamEdit::Rename(i, name) => params[i.index(len)].0 = name,
                ParamEdit::Revalue(i, value) => params[i.index(len)].1 = value,
            }
        }
        let names = params.iter().map(|(k, _)| k.clone()).collect();
        let joined: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        (scheme.clone(), names, format!("{scheme} {}", joined.join(separator)))
    })
}

/// Whatever the header says, parsing returns a header or `MalformedAuthHeader`, and a
/// parsed header formats to a canonical value that parses back to it.
fn check_parse(value: &str) -> Result<Option<AuthHeader>, TestCaseError> {
    match AuthHeader::parse(value) {
        Ok(header) => {
            prop_assert_eq!(AuthHeader::parse(&header.to_header_value()), Ok(header.clone()));
            Ok(Some(header))
        }
        Err(KeyError::MalformedAuthHeader(_)) => Ok(None),
        Err(other) => Err(TestCaseError::fail(format!("{value:?} failed with {other:?}"))),
    }
}

#[test]
fn auth_header_parser_never_panics_on_arbitrary_text() {
    run(prop_oneof![any::<String>(), "[ -~]{0,1100}", "(?i)hush-sig [ -~]{0,300}"], |value| {
        check_parse(&value)?;
        Ok(())
    });
}

#[test]
fn edited_auth_headers_parse_only_with_the_right_scheme_and_each_parameter_once() {
    run(edited_header(), |(scheme, names, value)| {
        let parsed = check_parse(&value)?;
        let each_once = PARAM_NAMES.iter().all(|p| names.iter().filter(|n| n == p).count() == 1);
        let well_formed = scheme.eq_ignore_ascii_case("Hush-Sig") && each_once && names.len() == PARAM_NAMES.len();
        prop_assert!(parsed.is_none() || well_formed, "{value:?} parsed though it is not well formed");
        Ok(())
    });
}

#[test]
fn mutated_auth_header_bytes_parse_or_are_malformed() {
    run(mutated(canonical_header().to_header_value().into_bytes()), |bytes| {
        if let Ok(value) = std::str::from_utf8(&bytes) {
            check_parse(value)?;
        }
        Ok(())
    });
}

/// Applies `which` (key, signature or both) to a valid (key, signature) pair.
fn mutated_pair(key: Vec<u8>, sig: Vec<u8>) -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let (k, s) = (key.clone(), sig.clone());
    prop_oneof![
        mutated(key.clone()).prop_map(move |key| (key, s.clone())),
        mutated(sig.clone()).prop_map(move |sig| (k.clone(), sig)),
        (mutated(key), mutated(sig)),
    ]
}

#[test]
fn mutated_identity_and_ec_keys_are_refused_unless_well_formed() {
    let key = IdentityKeyPair::generate(&mut rand::rng()).identity_key().serialize().into_vec();
    run(prop_oneof![mutated(key), proptest::collection::vec(any::<u8>(), 0..40)], |bytes| {
        let identity = validate_identity_key(&bytes);
        let ec = validate_ec_public_key(&bytes);
        prop_assert_eq!(identity.is_ok(), ec.is_ok());
        if let Err(e) = ec {
            prop_assert!(matches!(e, KeyError::InvalidKey(_)), "{e:?}");
        } else {
            prop_assert!(bytes.len() == 33 && bytes[0] == 0x05);
        }
        Ok(())
    });
}

// A changed signature could still verify only by hitting another valid encoding of the
// same signature (XEdDSA's scalar is taken mod the group order); random edits never do.
#[test]
fn mutated_signed_ec_prekeys_never_verify() {
    let mut rng = rand::rng();
    let identity = IdentityKeyPair::generate(&mut rng);
    let key = KeyPair::generate(&mut rng).public_key.serialize().into_vec();
    let sig = identity.private_key().calculate_signature(&key, &mut rng).unwrap().into_vec();
    let (valid_key, valid_sig) = (key.clone(), sig.clone());
    run(mutated_pair(key, sig), |(key, sig)| {
        let result = verify_signed_ec_prekey(identity.identity_key(), &key, &sig);
        prop_assert_eq!(result.is_ok(), key == valid_key && sig == valid_sig, "{:?}", result);
        Ok(())
    });
}

#[test]
fn mutated_kyber_prekeys_never_verify() {
    let identity = IdentityKeyPair::generate(&mut rand::rng());
    let record = KyberPreKeyRecord::generate(kem::KeyType::Kyber1024, 7.into(), identity.private_key()).unwrap();
    let key = record.public_key().unwrap().serialize().into_vec();
    let sig = record.signature().unwrap();
    let (valid_key, valid_sig) = (key.clone(), sig.clone());
    run(mutated_pair(key, sig), |(key, sig)| {
        let result = verify_kyber_prekey(identity.identity_key(), &key, &sig);
        prop_assert_eq!(result.is_ok(), key == valid_key && sig == valid_sig, "{:?}", result);
        Ok(())
    });
}

#[test]
fn mutated_device_auth_keys_and_signatures_never_verify() {
    let signer = fixed_key();
    let nonce = [7u8; 32];
    let key = signer.public().to_bytes().to_vec();
    let sig = signer.sign_ws_challenge(&nonce, ACCOUNT, DEVICE).to_vec();
    let (valid_key, valid_sig) = (key.clone(), sig.clone());
    let body = b"{}";
    let input = RestSigningInput {
        method: "PUT",
        path_and_query: "/v1/keys",
        timestamp_ms: TS_MS,
        nonce: NONCE,
        body_sha256: body_sha256(body),
    };
    let rest_sig = signer.sign_rest(&input).to_vec();
    run(mutated_pair(key, sig), |(key, sig)| {
        let unchanged = key == valid_key && sig == valid_sig;
        match DeviceAuthKey::from_bytes(&key) {
            Ok(auth_key) => {
                let ws = auth_key.verify_ws_challenge(&nonce, ACCOUNT, DEVICE, &sig);
                prop_assert_eq!(ws.is_ok(), unchanged, "{:?}", ws);
                let rest = auth_key.verify_rest(&input, &sig);
                prop_assert!(rest.is_err(), "a WebSocket signature verified as a REST one");
                let rest = auth_key.verify_rest(&input, &rest_sig);
                prop_assert_eq!(rest.is_ok(), key == valid_key, "{:?}", rest);
            }
            Err(e) => prop_assert!(matches!(e, KeyError::InvalidKey(_)) && key != valid_key, "{e:?}"),
        }
        Ok(())
    });
}

#[test]
fn mutated_sender_certificates_are_refused_or_say_the_same() {
    let keys = ServerKeys::generate(&mut rand::rng()).unwrap();
    let identity = IdentityKeyPair::generate(&mut rand::rng()).identity_key().serialize().into_vec();
    let cert = keys.issue_sender_certificate(ACCOUNT, DEVICE, &identity, TS_MS + 1000, &mut rand::rng()).unwrap();
    let root = keys.trust_root_public();
    let genuine = verify_sender_certificate(&cert, &root, TS_MS).unwrap();
    run(mutated(cert), |bytes| {
        match verify_sender_certificate(&bytes, &root, TS_MS) {
            // Only unknown protobuf fields can change without breaking a signature.
            Ok(info) => prop_assert_eq!(info, genuine.clone()),
            Err(e) => prop_assert!(matches!(e, KeyError::CertificateInvalid | KeyError::CertificateExpired), "{e:?}"),
        }
        Ok(())
    });
}
