//! Parsing and formatting of `Authorization: Hush-Sig ...`.

use hush_keys::KeyError;
use hush_keys::auth::AuthHeader;

use crate::support::{ACCOUNT, DEVICE, NONCE, TS_MS};

const SIG: [u8; 64] = [0xab; 64];

fn header() -> AuthHeader {
    AuthHeader { account: ACCOUNT, device_id: DEVICE, timestamp_ms: TS_MS, nonce: NONCE, signature: SIG }
}

/// The parameters of the canonical form, for building variants.
fn params() -> Vec<(&'static str, String)> {
    vec![
        ("account", ACCOUNT.to_string()),
        ("device", DEVICE.to_string()),
        ("ts", TS_MS.to_string()),
        ("nonce", hex::encode(NONCE)),
        ("sig", hex::encode(SIG)),
    ]
}

fn join(params: &[(&str, String)], separator: &str) -> String {
    let parts: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("Hush-Sig {}", parts.join(separator))
}

/// Parses `value` and returns the error message, failing the test if it parsed.
fn reason(value: &str) -> String {
    match AuthHeader::parse(value) {
        Err(KeyError::MalformedAuthHeader(reason)) => reason,
        other => panic!("expected MalformedAuthHeader for {value:?}, got {other:?}"),
    }
}

#[test]
fn header_value_snapshot() {
    insta::assert_snapshot!(header().to_header_value());
}

#[test]
fn parses_canonical_form() {
    let value = header().to_header_value();
    assert_eq!(value, join(&params(), ","));
    assert_eq!(AuthHeader::parse(&value).unwrap(), header());
}

#[test]
fn parses_spaced_form() {
    assert_eq!(AuthHeader::parse(&join(&params(), ", ")).unwrap(), header());
    assert_eq!(AuthHeader::parse(&join(&params(), ",   ")).unwrap(), header());
}

#[test]
fn parses_any_order() {
    let mut reversed = params();
    reversed.reverse();
    assert_eq!(AuthHeader::parse(&join(&reversed, ",")).unwrap(), header());
}

#[test]
fn parses_uppercase_hex_and_uuid_and_scheme_case() {
    let value = header().to_header_value().to_uppercase().replace("HUSH-SIG", "hush-sig");
    let value = value
        .replace("ACCOUNT=", "account=")
        .replace("DEVICE=", "device=")
        .replace("TS=", "ts=")
        .replace("NONCE=", "nonce=")
        .replace("SIG=", "sig=");
    assert_eq!(AuthHeader::parse(&value).unwrap(), header());
}

#[test]
fn missing_key_is_named() {
    for (i, (name, _)) in params().iter().enumerate() {
        let mut without = params();
        without.remove(i);
        let reason = reason(&join(&without, ","));
        assert!(reason.contains(&format!("`{name}` is missing")), "{reason}");
    }
}

#[test]
fn duplicate_key_is_named() {
    for (name, value) in params() {
        let mut twice = params();
        twice.push((name, value));
        let reason = reason(&join(&twice, ","));
        assert!(reason.contains(&format!("`{name}` appears more than once")), "{reason}");
    }
}

#[test]
fn unknown_key_is_refused() {
    let mut extra = params();
    extra.push(("extra", "1".to_owned()));
    assert!(reason(&join(&extra, ",")).contains("unknown parameter"));
}

#[test]
fn bad_hex_is_refused() {
    for name in ["nonce", "sig"] {
        let mut bad = params();
        let entry = bad.iter_mut().find(|(k, _)| *k == name).unwrap();
        entry.1 = entry.1.replacen('0', "g", 1).replacen('a', "g", 1);
        let reason = reason(&join(&bad, ","));
        assert!(reason.contains(&format!("`{name}` is not valid hex")), "{reason}");
    }
}

#[test]
fn wrong_lengths_are_refused() {
    let cases = [
        ("nonce", hex::encode([0u8; 15]), "`nonce` must be 32 hex characters"),
        ("nonce", hex::encode([0u8; 17]), "`nonce` must be 32 hex characters"),
        ("nonce", "0".repeat(31), "`nonce` must be 32 hex characters"),
        ("sig", hex::encode([0u8; 63]), "`sig` must be 128 hex characters"),
        ("sig", hex::encode([0u8; 65]), "`sig` must be 128 hex characters"),
        ("account", ACCOUNT.simple().to_string(), "`account` must be a hyphenated UUID"),
        ("account", String::new(), "`account` must be a hyphenated UUID"),
    ];
    for (name, value, expected) in cases {
        let mut bad = params();
        bad.iter_mut().find(|(k, _)| *k == name).unwrap().1 = value;
        let reason = reason(&join(&bad, ","));
        assert!(reason.contains(expected), "{reason}");
    }
}

#[test]
fn bad_numbers_are_refused() {
    let cases = [
        ("device", "+3", "`device` must be a decimal number"),
        ("device", "-3", "`device` must be a decimal number"),
        ("device", "", "`device` must be a decimal number"),
        ("device", "4294967296", "`device` is too large"),
        ("ts", "1e12", "`ts` must be a decimal number"),
        ("ts", "18446744073709551616", "`ts` is too large"),
    ];
    for (name, value, expected) in cases {
        let mut bad = params();
        bad.iter_mut().find(|(k, _)| *k == name).unwrap().1 = value.to_owned();
        let reason = reason(&join(&bad, ","));
        assert!(reason.contains(expected), "{reason}");
    }
}

#[test]
fn bad_account_uuid_is_refused() {
    let mut bad = params();
    bad[0].1 = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1fz".to_owned();
    assert!(reason(&join(&bad, ",")).contains("`account` is not a valid UUID"));
}

#[test]
fn wrong_scheme_is_refused() {
    let canonical = header().to_header_value();
    let params_only = canonical.trim_start_matches("Hush-Sig ");
    for value in [format!("Bearer {params_only}"), format!("Hush-Sig2 {params_only}"), format!("Basic {params_only}")] {
        assert!(reason(&value).contains("scheme must be `Hush-Sig`"), "{value}");
    }
    assert!(reason(params_only).contains("scheme"));
    assert!(reason("Hush-Sig").contains("scheme"));
    assert!(reason("").contains("scheme"));
}

#[test]
fn stray_commas_and_bare_words_are_refused() {
    let canonical = header().to_header_value();
    assert!(reason(&format!("{canonical},")).contains("empty parameter"));
    assert!(reason(&canonical.replace(",device=", ",,device=")).contains("empty parameter"));
    assert!(reason(&format!("{canonical},token")).contains("`name=value`"));
}

#[test]
fn overlong_value_is_refused_unread() {
    let value = format!("{}{}", header().to_header_value(), " ".repeat(2000));
    assert!(reason(&value).contains("the limit is"));
}

#[test]
fn error_message_says_what_to_send() {
    let err = AuthHeader::parse("Bearer x").unwrap_err().to_string();
    assert!(err.starts_with("malformed Authorization header"), "{err}");
    assert!(err.contains("Hush-Sig account=<uuid>"), "{err}");
}
