//! Group messages (`GroupSendRequest`): one sender-key ciphertext, stored once and
//! referenced from every other member device's mailbox. Membership, epoch and
//! distributions are checked by the store in the commit transaction.

use hush_wire::frames::{GroupSendRequest, SendError};
use uuid::Uuid;

use super::{Answer, Ctx, check_size, group_id, idempotency_key, refuse};
use crate::push::Urgency;
use crate::store::{GroupSendItem, Write};

/// A checked `GroupSendRequest`.
#[derive(Debug)]
pub struct Parsed {
    /// The group.
    pub group: Uuid,
    /// The sender key's epoch.
    pub epoch: u64,
    /// The `SenderKeyMessage`.
    pub content: bytes::Bytes,
    /// The idempotency key, if any.
    pub idempotency_key: Option<bytes::Bytes>,
    /// Wake offline member devices now (else in the background).
    pub urgent: bool,
}

/// Checks a group send's shape and size.
pub fn parse(req: GroupSendRequest) -> Result<Parsed, SendError> {
    let group = group_id(&req.group_id)?;
    check_size(req.content.len())?;
    let idempotency_key = idempotency_key(req.idempotency_key)?;
    Ok(Parsed { group, epoch: req.epoch, content: req.content, idempotency_key, urgent: req.urgent })
}

/// Applies a group send: rate (a resend of a stored key is free), then the writer; answered (with the group
/// seq) once committed.
pub async fn apply(ctx: Ctx<'_>, parsed: Parsed) -> Answer {
    let (server_ts, expires_at) = ctx.times();
    let item = GroupSendItem {
        sender: ctx.device,
        group: parsed.group,
        epoch: parsed.epoch,
        content: parsed.content,
        server_ts,
        expires_at,
        idempotency_key: parsed.idempotency_key,
    };
    let urgency = if parsed.urgent { Urgency::Urgent } else { Urgency::Background };
    ctx.commit_within_rate(Write::Group(item), urgency).await
}

/// Parses and applies a `GroupSendRequest`.
pub async fn handle(ctx: Ctx<'_>, req: GroupSendRequest) -> Answer {
    match parse(req) {
        Ok(parsed) => apply(ctx, parsed).await,
        Err(e) => refuse(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_wire::frames::SendErrorCode;
    use hush_wire::limits::MAX_ENVELOPE_BYTES;

    fn request(group_id: Vec<u8>, size: usize) -> GroupSendRequest {
        GroupSendRequest {
            request_id: 1,
            group_id: group_id.into(),
            epoch: 1,
            content: vec![1u8; size].into(),
            idempotency_key: bytes::Bytes::new(),
            urgent: false,
        }
    }

    #[test]
    fn a_group_send_needs_a_16_byte_group_and_a_ciphertext_within_the_limit() {
        let code = |r| parse(r).err().map(|e: SendError| e.code);
        assert_eq!(code(request(vec![1; 15], 10)), Some(SendErrorCode::InvalidRequest as i32));
        assert_eq!(code(request(vec![1; 16], 0)), Some(SendErrorCode::InvalidRequest as i32));
        assert_eq!(code(request(vec![1; 16], MAX_ENVELOPE_BYTES + 1)), Some(SendErrorCode::EnvelopeTooLarge as i32));
        assert!(parse(request(vec![1; 16], MAX_ENVELOPE_BYTES)).is_ok());
    }
}
