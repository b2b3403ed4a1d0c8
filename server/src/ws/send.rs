//! Turning a `SendRequest` frame into store records, and refusals into `SendError` frames.

use std::collections::HashSet;

use bytes::Bytes;
use hush_wire::frames::{DeviceAddress, DeviceMismatch, EnvelopeKind, SendError, SendErrorCode, SendRequest};
use hush_wire::limits::{MAX_DEVICE_ID, MAX_ENVELOPE_BYTES, MAX_IDEMPOTENCY_KEY_BYTES, MAX_SEND_BYTES};
use uuid::Uuid;

use crate::store::{OutgoingMessage, RecipientBatch, SendRejection};

fn error(code: SendErrorCode, message: impl Into<String>) -> SendError {
    SendError { code: code as i32, message: message.into(), ..SendError::default() }
}

/// Checks a send request's shape and sizes and converts it; the error is the answer to send back.
pub fn parse(req: SendRequest) -> Result<Vec<RecipientBatch>, SendError> {
    let invalid = |m: &str| error(SendErrorCode::InvalidRequest, m);
    if req.recipients.is_empty() {
        return Err(invalid("a send names at least one recipient account"));
    }
    if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(invalid("idempotency_key is at most 64 bytes (use the outbox message id)"));
    }
    let total: usize = req.recipients.iter().flat_map(|r| &r.messages).map(|m| m.content.len()).sum();
    if total > MAX_SEND_BYTES {
        return Err(error(
            SendErrorCode::EnvelopeTooLarge,
            format!("the ciphertexts of one send total {total} bytes, over the {MAX_SEND_BYTES}-byte limit"),
        ));
    }
    let mut accounts = HashSet::new();
    let mut out = Vec::with_capacity(req.recipients.len());
    for recipient in req.recipients {
        let account = Uuid::from_slice(&recipient.account_id).map_err(|_| invalid("account_id must be 16 bytes"))?;
        if !accounts.insert(account) {
            return Err(invalid("an account is listed twice"));
        }
        if recipient.messages.is_empty() {
            return Err(invalid("a recipient account has no messages"));
        }
        let mut devices = HashSet::new();
        let mut messages = Vec::with_capacity(recipient.messages.len());
        for m in recipient.messages {
            if !(1..=MAX_DEVICE_ID).contains(&m.device_id) || !devices.insert(m.device_id) {
                return Err(invalid("device ids must be 1..=127 and listed once per account"));
            }
            match EnvelopeKind::try_from(m.kind) {
                Ok(EnvelopeKind::SealedSender | EnvelopeKind::Plaintext) => {}
                _ => return Err(invalid("unknown envelope kind")),
            }
            if m.content.len() > MAX_ENVELOPE_BYTES {
                return Err(error(
                    SendErrorCode::EnvelopeTooLarge,
                    format!("a ciphertext of {} bytes exceeds the {MAX_ENVELOPE_BYTES}-byte limit", m.content.len()),
                ));
            }
            if m.content.is_empty() {
                return Err(invalid("empty ciphertext"));
            }
            messages.push(OutgoingMessage {
                device_id: m.device_id,
                registration_id: m.registration_id,
                kind: m.kind,
                content: m.content,
            });
        }
        out.push(RecipientBatch { account, messages });
    }
    Ok(out)
}

/// The send's idempotency key for the store (`None` when the client gave none).
pub fn idempotency_key(key: Bytes) -> Option<Bytes> {
    (!key.is_empty()).then_some(key)
}

/// The answer for a refused send.
pub fn rejection(r: SendRejection) -> SendError {
    match r {
        SendRejection::DeviceMismatch(list) => SendError {
            mismatches: list
                .into_iter()
                .map(|m| DeviceMismatch {
                    account_id: m.account.as_bytes().to_vec().into(),
                    missing: m.missing,
                    extra: m.extra,
                    stale: m.stale,
                })
                .collect(),
            ..error(
                SendErrorCode::DeviceMismatch,
                "the device list is out of date: fetch missing and stale devices, drop extra ones, retry",
            )
        },
        SendRejection::UnknownAccounts(list) => SendError {
            unknown_accounts: list.into_iter().map(|a| a.as_bytes().to_vec().into()).collect(),
            ..error(SendErrorCode::UnknownAccount, "a recipient account does not exist")
        },
        SendRejection::MailboxFull(list) => SendError {
            full: list
                .into_iter()
                .map(|d| DeviceAddress { account_id: d.account.as_bytes().to_vec().into(), device_id: d.device_id })
                .collect(),
            ..error(SendErrorCode::MailboxFull, "a recipient mailbox is full; retry once the recipient has caught up")
        },
    }
}

/// The answer when the rate limit is hit.
pub fn rate_limited(retry_after_ms: u64) -> SendError {
    SendError {
        retry_after_ms: retry_after_ms.max(1),
        ..error(SendErrorCode::RateLimited, "too many sends; retry later")
    }
}

/// The answer for a group the sender is not a member of (or that does not exist).
pub fn not_a_member() -> SendError {
    error(SendErrorCode::NotAMember, "no such group, or this account is not a member of it")
}

/// The answer when the database failed.
pub fn internal() -> SendError {
    error(SendErrorCode::Internal, "the server could not store the message; nothing was stored; retry")
}

/// A short label of an error code, for metrics.
pub fn code_label(e: &SendError) -> &'static str {
    match SendErrorCode::try_from(e.code) {
        Ok(SendErrorCode::DeviceMismatch) => "device_mismatch",
        Ok(SendErrorCode::UnknownAccount) => "unknown_account",
        Ok(SendErrorCode::EnvelopeTooLarge) => "envelope_too_large",
        Ok(SendErrorCode::MailboxFull) => "mailbox_full",
        Ok(SendErrorCode::RateLimited) => "rate_limited",
        Ok(SendErrorCode::InvalidRequest) => "invalid_request",
        _ => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_wire::frames::{DeviceMessage, RecipientMessages};

    fn request(sizes: &[usize]) -> SendRequest {
        let messages = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| DeviceMessage {
                device_id: i as u32 + 1,
                registration_id: 1,
                kind: EnvelopeKind::SealedSender as i32,
                content: vec![7u8; n].into(),
            })
            .collect();
        SendRequest {
            request_id: 1,
            recipients: vec![RecipientMessages { account_id: vec![1; 16].into(), messages }],
            online_only: false,
            idempotency_key: Bytes::new(),
        }
    }

    #[test]
    fn a_send_over_the_total_limit_is_refused_though_each_envelope_fits() {
        let each = 90 * 1024; // under the 96 KiB per-device limit; three of them exceed 256 KiB
        let err = parse(request(&[each, each, each])).err().map(|e| e.code);
        assert_eq!(err, Some(SendErrorCode::EnvelopeTooLarge as i32));
        assert!(parse(request(&[each, each])).is_ok());
    }

    #[test]
    fn an_idempotency_key_over_64_bytes_is_refused() {
        let mut req = request(&[10]);
        req.idempotency_key = Bytes::from(vec![1u8; MAX_IDEMPOTENCY_KEY_BYTES + 1]);
        assert_eq!(parse(req).err().map(|e| e.code), Some(SendErrorCode::InvalidRequest as i32));
        let mut req = request(&[10]);
        req.idempotency_key = Bytes::from(vec![1u8; MAX_IDEMPOTENCY_KEY_BYTES]);
        assert!(parse(req).is_ok());
    }

    #[test]
    fn one_envelope_over_the_device_limit_is_refused() {
        let err = parse(request(&[MAX_ENVELOPE_BYTES + 1])).err().map(|e| e.code);
        assert_eq!(err, Some(SendErrorCode::EnvelopeTooLarge as i32));
        assert!(parse(request(&[MAX_ENVELOPE_BYTES])).is_ok());
    }
}
