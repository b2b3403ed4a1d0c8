//! Sender-key distributions (`DistributeRequest`): one sealed-sender ciphertext per named
//! member device, stored in its mailbox (even a full one) and recorded as "holds a
//! distribution from this device for this epoch" by the store in the commit transaction.

use hush_wire::frames::{DistributeRequest, EnvelopeKind, SendError};
use hush_wire::limits::MAX_SEND_BYTES;
use uuid::Uuid;

use super::{Answer, Ctx, group_id, idempotency_key, invalid, parse_recipients, refuse, too_large};
use crate::store::{DistributeItem, RecipientBatch, Write};

/// A checked `DistributeRequest`.
#[derive(Debug)]
pub struct Parsed {
    /// The group.
    pub group: Uuid,
    /// The epoch distributed for.
    pub epoch: u64,
    /// One ciphertext per named device.
    pub recipients: Vec<RecipientBatch>,
    /// The idempotency key, if any.
    pub idempotency_key: Option<bytes::Bytes>,
}

/// Checks a distribution's shape and sizes.
pub fn parse(req: DistributeRequest) -> Result<Parsed, SendError> {
    let group = group_id(&req.group_id)?;
    if req.recipients.is_empty() {
        return Err(invalid("a distribution names at least one member account"));
    }
    let idempotency_key = idempotency_key(req.idempotency_key)?;
    let total: usize = req.recipients.iter().flat_map(|r| &r.messages).map(|m| m.content.len()).sum();
    if total > MAX_SEND_BYTES {
        return Err(too_large(total, MAX_SEND_BYTES));
    }
    let recipients = parse_recipients(req.recipients, &[EnvelopeKind::SealedSender])?;
    Ok(Parsed { group, epoch: req.epoch, recipients, idempotency_key })
}

/// Applies a distribution: rate (a resend of a stored key is free), then the writer; answered once committed.
pub async fn apply(ctx: Ctx<'_>, parsed: Parsed) -> Answer {
    let (server_ts, expires_at) = ctx.times();
    let item = DistributeItem {
        sender: ctx.device,
        group: parsed.group,
        epoch: parsed.epoch,
        recipients: parsed.recipients,
        server_ts,
        expires_at,
        idempotency_key: parsed.idempotency_key,
    };
    // A distribution precedes the message it opens, which wakes the device itself.
    ctx.commit_within_rate(Write::Distribute(item), crate::push::Urgency::Background).await
}

/// Parses and applies a `DistributeRequest`.
pub async fn handle(ctx: Ctx<'_>, req: DistributeRequest) -> Answer {
    match parse(req) {
        Ok(parsed) => apply(ctx, parsed).await,
        Err(e) => refuse(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_wire::frames::{DeviceMessage, RecipientMessages, SendErrorCode};

    fn request(kind: EnvelopeKind) -> DistributeRequest {
        DistributeRequest {
            request_id: 1,
            group_id: vec![7; 16].into(),
            epoch: 1,
            recipients: vec![RecipientMessages {
                account_id: vec![1; 16].into(),
                messages: vec![DeviceMessage {
                    device_id: 1,
                    registration_id: 1,
                    kind: kind as i32,
                    content: vec![1; 10].into(),
                }],
            }],
            idempotency_key: bytes::Bytes::new(),
        }
    }

    #[test]
    fn distributions_are_sealed_sender_only_and_name_someone() {
        assert!(parse(request(EnvelopeKind::SealedSender)).is_ok());
        let code = |r| parse(r).err().map(|e: SendError| e.code);
        assert_eq!(code(request(EnvelopeKind::Plaintext)), Some(SendErrorCode::InvalidRequest as i32));
        let mut empty = request(EnvelopeKind::SealedSender);
        empty.recipients.clear();
        assert_eq!(code(empty), Some(SendErrorCode::InvalidRequest as i32));
    }
}
