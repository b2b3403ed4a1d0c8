//! Validation of uploaded keys and usernames, turning them into store records.

use hush_keys::KeyError;
use hush_keys::prekeys::{validate_ec_public_key, validate_identity_key, verify_kyber_prekey, verify_signed_ec_prekey};
use hush_wire::api::{NewDevice, PreKey, PreKeyUpload, SignedPreKey};
use hush_wire::limits::{MAX_DEVICE_NAME_CHARS, MAX_PREKEYS_PER_UPLOAD, MAX_REGISTRATION_ID};
use libsignal_protocol::IdentityKey;

use super::error::HttpError;
use crate::store::{NewDeviceRecord, OneTimeKey, PreKeyUploadRecord, SignedKey};

/// Normalizes a username (lowercase) and checks its alphabet and length.
pub fn username(raw: &str) -> Result<String, HttpError> {
    let name = raw.to_ascii_lowercase();
    let ok_len = (3..=32).contains(&name.len());
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if ok_len && ok_chars {
        Ok(name)
    } else {
        Err(HttpError::bad_request("invalid_username", "a username is 3 to 32 of a-z, 0-9, '_' and '.'"))
    }
}

/// Parses the account identity key.
pub fn identity(bytes: &[u8]) -> Result<IdentityKey, HttpError> {
    validate_identity_key(bytes).map_err(|e| key_error("identity_key", e))
}

fn key_error(what: &str, e: KeyError) -> HttpError {
    match e {
        KeyError::BadSignature => HttpError::bad_request(
            "bad_signature",
            format!("the signature of {what} does not verify with the identity key"),
        ),
        other => HttpError::bad_request("invalid_key", format!("{what} is not a valid key: {other}")),
    }
}

fn signed_ec(identity: &IdentityKey, k: &SignedPreKey, what: &str) -> Result<SignedKey, HttpError> {
    verify_signed_ec_prekey(identity, &k.public_key.0, &k.signature.0).map_err(|e| key_error(what, e))?;
    Ok(SignedKey { id: k.id, public_key: k.public_key.0.clone(), signature: k.signature.0.clone() })
}

fn signed_kyber(identity: &IdentityKey, k: &SignedPreKey, what: &str) -> Result<SignedKey, HttpError> {
    verify_kyber_prekey(identity, &k.public_key.0, &k.signature.0).map_err(|e| key_error(what, e))?;
    Ok(SignedKey { id: k.id, public_key: k.public_key.0.clone(), signature: k.signature.0.clone() })
}

fn one_time(k: &PreKey) -> Result<OneTimeKey, HttpError> {
    validate_ec_public_key(&k.public_key.0).map_err(|e| key_error("one_time_prekeys", e))?;
    Ok(OneTimeKey { id: k.id, public_key: k.public_key.0.clone() })
}

fn check_counts(ec: usize, kyber: usize) -> Result<(), HttpError> {
    if ec > MAX_PREKEYS_PER_UPLOAD || kyber > MAX_PREKEYS_PER_UPLOAD {
        return Err(HttpError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_prekeys",
            format!("at most {MAX_PREKEYS_PER_UPLOAD} one-time prekeys of each kind per upload"),
        ));
    }
    Ok(())
}

/// Validates a prekey upload against the account identity key.
pub fn upload(identity: &IdentityKey, up: &PreKeyUpload) -> Result<PreKeyUploadRecord, HttpError> {
    check_counts(up.one_time_prekeys.len(), up.one_time_kyber_prekeys.len())?;
    Ok(PreKeyUploadRecord {
        signed_prekey: up.signed_prekey.as_ref().map(|k| signed_ec(identity, k, "signed_prekey")).transpose()?,
        kyber_last_resort: up
            .kyber_last_resort
            .as_ref()
            .map(|k| signed_kyber(identity, k, "kyber_last_resort"))
            .transpose()?,
        one_time_prekeys: up.one_time_prekeys.iter().map(one_time).collect::<Result<_, _>>()?,
        one_time_kyber_prekeys: up
            .one_time_kyber_prekeys
            .iter()
            .map(|k| signed_kyber(identity, k, "one_time_kyber_prekeys"))
            .collect::<Result<_, _>>()?,
    })
}

/// Validates a new device's keys against the account identity key.
pub fn new_device(identity: &IdentityKey, d: &NewDevice, now_ms: u64) -> Result<NewDeviceRecord, HttpError> {
    if !(1..=MAX_REGISTRATION_ID).contains(&d.registration_id) {
        return Err(HttpError::bad_request(
            "invalid_registration_id",
            format!("registration_id must be 1..={MAX_REGISTRATION_ID}"),
        ));
    }
    let auth_key =
        hush_keys::auth::DeviceAuthKey::from_bytes(&d.auth_key.0).map_err(|e| key_error("auth_key", e))?.to_bytes();
    if d.name.as_ref().is_some_and(|n| n.chars().count() > MAX_DEVICE_NAME_CHARS) {
        return Err(HttpError::bad_request(
            "invalid_request",
            format!("a device name is at most {MAX_DEVICE_NAME_CHARS} characters"),
        ));
    }
    check_counts(d.one_time_prekeys.len(), d.one_time_kyber_prekeys.len())?;
    Ok(NewDeviceRecord {
        registration_id: d.registration_id,
        auth_key,
        name: d.name.clone(),
        signed_prekey: signed_ec(identity, &d.signed_prekey, "signed_prekey")?,
        kyber_last_resort: signed_kyber(identity, &d.kyber_last_resort, "kyber_last_resort")?,
        one_time_prekeys: d.one_time_prekeys.iter().map(one_time).collect::<Result<_, _>>()?,
        one_time_kyber_prekeys: d
            .one_time_kyber_prekeys
            .iter()
            .map(|k| signed_kyber(identity, k, "one_time_kyber_prekeys"))
            .collect::<Result<_, _>>()?,
        created_at: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalized_and_checked() {
        assert_eq!(username("Alice.B_1").ok(), Some("alice.b_1".to_owned()));
        for bad in ["al", "a b c", "émile", &"x".repeat(33), "bob!"] {
            assert_eq!(username(bad).err().map(|e| e.code()), Some("invalid_username"), "{bad}");
        }
    }
}
