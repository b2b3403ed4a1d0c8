//! One-to-one sends (`SendRequest` with `online_only = false`): one sealed-sender ciphertext
//! per recipient device, committed through the writer. Online-only sends share the parsing
//! and are applied by [`super::online`].

use bytes::Bytes;
use hush_wire::frames::{EnvelopeKind, SendError, SendRequest};
use hush_wire::limits::MAX_SEND_BYTES;

use super::{Answer, Ctx, idempotency_key, invalid, parse_recipients, refuse, too_large};
use crate::push::Urgency;
use crate::store::{RecipientBatch, SendItem, Write};

/// A checked `SendRequest`.
#[derive(Debug)]
pub struct Parsed {
    /// Recipient accounts with one ciphertext per device.
    pub recipients: Vec<RecipientBatch>,
    /// Deliver only to connected devices; store nothing.
    pub online_only: bool,
    /// The idempotency key, if any.
    pub idempotency_key: Option<Bytes>,
    /// Wake offline devices now (else in the background).
    pub urgent: bool,
}

/// Checks a send request's shape and sizes and converts it; the error is the answer to send back.
pub fn parse(req: SendRequest) -> Result<Parsed, SendError> {
    if req.recipients.is_empty() {
        return Err(invalid("a send names at least one recipient account"));
    }
    let idempotency_key = idempotency_key(req.idempotency_key)?;
    let total: usize = req.recipients.iter().flat_map(|r| &r.messages).map(|m| m.content.len()).sum();
    if total > MAX_SEND_BYTES {
        return Err(too_large(total, MAX_SEND_BYTES));
    }
    let recipients = parse_recipients(req.recipients, &[EnvelopeKind::SealedSender, EnvelopeKind::Plaintext])?;
    Ok(Parsed { recipients, online_only: req.online_only, idempotency_key, urgent: req.urgent })
}

/// Applies a stored send: rate (a resend of a stored key is free), then the writer; answered once committed.
pub async fn apply(ctx: Ctx<'_>, parsed: Parsed) -> Answer {
    let (server_ts, expires_at) = ctx.times();
    let item = SendItem {
        sender: ctx.device,
        recipients: parsed.recipients,
        server_ts,
        expires_at,
        idempotency_key: parsed.idempotency_key,
    };
    let urgency = if parsed.urgent { Urgency::Urgent } else { Urgency::Background };
    ctx.commit_within_rate(Write::Direct(item), urgency).await
}

/// Parses and applies a `SendRequest` (stored or online-only).
pub async fn handle(ctx: Ctx<'_>, req: SendRequest) -> Answer {
    match parse(req) {
        Err(e) => refuse(e),
        Ok(parsed) if parsed.online_only => super::online::apply(ctx, parsed.recipients),
        Ok(parsed) => apply(ctx, parsed).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_wire::frames::{DeviceMessage, RecipientMessages, SendErrorCode};
    use hush_wire::limits::{MAX_ENVELOPE_BYTES, MAX_IDEMPOTENCY_KEY_BYTES};

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
            urgent: false,
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
