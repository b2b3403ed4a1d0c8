//! One module per request kind a connection handles, each a `parse` (frame -> store
//! records, or the refusal to answer with) and an `apply` (check the rate, queue the write,
//! answer once committed): [`direct`] (one-to-one sends), [`online`] (online-only sends),
//! [`group`] (group messages), [`distribute`] (sender-key distributions), [`ack`].
//! What they share lives here: the answer type and the refusal frames.

use std::pin::Pin;

use bytes::Bytes;
use hush_wire::frames::{
    DeviceAddress, DeviceMismatch, EnvelopeKind, RecipientMessages, SendError, SendErrorCode, SendOk, send_response,
};
use hush_wire::limits::{MAX_DEVICE_ID, MAX_ENVELOPE_BYTES, MAX_IDEMPOTENCY_KEY_BYTES};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::commit::SendResult;
use crate::state::AppState;
use crate::store::{DeviceKey, Mismatch, OutgoingMessage, RecipientBatch, SendRejection, Write};

pub mod ack;
pub mod direct;
pub mod distribute;
pub mod group;
pub mod online;

/// The answer to a request, once it is known.
pub type Answer = Pin<Box<dyn Future<Output = send_response::Result> + Send>>;

/// An answer known now.
pub fn ready(r: send_response::Result) -> Answer {
    Box::pin(std::future::ready(r))
}

/// A refusal known now.
pub fn refuse(e: SendError) -> Answer {
    ready(send_response::Result::Error(e))
}

/// What a request is applied with: the shared state and the authenticated device.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// Shared state.
    pub state: &'a AppState,
    /// The connection's device.
    pub device: DeviceKey,
}

impl Ctx<'_> {
    /// Takes one token of the device's send rate (every stored send, group message and
    /// distribution takes one; online-only sends have [`Ctx::check_online_rate`]).
    pub fn check_rate(&self) -> Result<(), SendError> {
        self.state.rate.check(self.device).map_err(|wait| rate_limited(wait.as_millis() as u64))
    }

    /// Takes one token of the device's online-only budget (typing, presence), which is apart
    /// from the send rate: neither uses up the other.
    pub fn check_online_rate(&self) -> Result<(), SendError> {
        self.state.online_rate.check(self.device).map_err(|wait| rate_limited(wait.as_millis() as u64))
    }

    /// Milliseconds since the epoch, now, and when what is stored now expires.
    pub fn times(&self) -> (u64, u64) {
        let now = crate::state::now_ms();
        (now, now + self.state.config.retention.as_millis() as u64)
    }

    /// Queues `write` with the writer if the device's send rate allows it (see
    /// [`Ctx::check_rate`]). Past the rate, a write whose idempotency key is already stored
    /// (a resend after a reconnect, which stores nothing) is answered with the first result
    /// and costs no token; anything else is refused `RATE_LIMITED`. Within the rate, the
    /// writer checks the key in its transaction as always, so the common path reads nothing
    /// more; the extra read is for a limited device's keyed sends only, on the read pool.
    pub async fn commit_within_rate(&self, write: Write, urgency: crate::push::Urgency) -> Answer {
        let limited = match self.check_rate() {
            Ok(()) => return self.commit(write, urgency).await,
            Err(limited) => limited,
        };
        if write.idempotency_key().is_none() {
            return refuse(limited);
        }
        let store = self.state.store.clone();
        Box::pin(async move {
            match store.stored_answer(&write).await {
                Ok(Some((server_ts, group_seq))) => {
                    metrics::counter!(crate::metrics::SENDS_DEDUPLICATED).increment(1);
                    send_response::Result::Ok(SendOk { server_timestamp: server_ts, group_seq: group_seq.unwrap_or(0) })
                }
                Ok(None) => send_response::Result::Error(limited),
                Err(e) => {
                    tracing::warn!(error = %e, "looking up the idempotency key of a rate-limited send failed");
                    send_response::Result::Error(limited)
                }
            }
        })
    }

    /// Queues `write` with the writer and answers once it is committed or refused; offline
    /// target devices are then woken as `urgency` says.
    pub async fn commit(&self, write: Write, urgency: crate::push::Urgency) -> Answer {
        let Ok(reply) = self.state.committer.write(write, urgency).await else {
            return refuse(internal());
        };
        Box::pin(answer_when_committed(reply))
    }
}

async fn answer_when_committed(reply: oneshot::Receiver<SendResult>) -> send_response::Result {
    use send_response::Result as R;
    match reply.await {
        Ok(SendResult::Stored { server_ts, group_seq }) => {
            R::Ok(SendOk { server_timestamp: server_ts, group_seq: group_seq.unwrap_or(0) })
        }
        Ok(SendResult::Rejected(rejection)) => R::Error(rejection_error(rejection)),
        Ok(SendResult::Failed) | Err(_) => R::Error(internal()),
    }
}

fn error(code: SendErrorCode, message: impl Into<String>) -> SendError {
    SendError { code: code as i32, message: message.into(), ..SendError::default() }
}

/// An `INVALID_REQUEST` refusal.
pub fn invalid(message: &str) -> SendError {
    error(SendErrorCode::InvalidRequest, message)
}

/// The request's idempotency key for the store (`None` when the client gave none), or the
/// refusal of one that is too long.
pub fn idempotency_key(key: Bytes) -> Result<Option<Bytes>, SendError> {
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(invalid("idempotency_key is at most 64 bytes (use the outbox message id)"));
    }
    Ok((!key.is_empty()).then_some(key))
}

/// A group id from a frame.
pub fn group_id(bytes: &[u8]) -> Result<Uuid, SendError> {
    Uuid::from_slice(bytes).map_err(|_| invalid("group_id must be 16 bytes"))
}

/// Checks and converts the recipients of a send or distribution: accounts once each, devices
/// 1..=127 once each, each ciphertext of an allowed kind, not empty and within the per-device limit.
pub fn parse_recipients(
    recipients: Vec<RecipientMessages>,
    allowed: &[EnvelopeKind],
) -> Result<Vec<RecipientBatch>, SendError> {
    let mut accounts = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        let account = Uuid::from_slice(&recipient.account_id).map_err(|_| invalid("account_id must be 16 bytes"))?;
        if !accounts.insert(account) {
            return Err(invalid("an account is listed twice"));
        }
        if recipient.messages.is_empty() {
            return Err(invalid("a recipient account has no messages"));
        }
        let mut devices = std::collections::HashSet::new();
        let mut messages = Vec::with_capacity(recipient.messages.len());
        for m in recipient.messages {
            if !(1..=MAX_DEVICE_ID).contains(&m.device_id) || !devices.insert(m.device_id) {
                return Err(invalid("device ids must be 1..=127 and listed once per account"));
            }
            if !EnvelopeKind::try_from(m.kind).is_ok_and(|k| allowed.contains(&k)) {
                return Err(invalid("unknown envelope kind"));
            }
            check_size(m.content.len())?;
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

/// Refuses an empty ciphertext or one over the per-device limit.
pub fn check_size(len: usize) -> Result<(), SendError> {
    if len > MAX_ENVELOPE_BYTES {
        return Err(error(
            SendErrorCode::EnvelopeTooLarge,
            format!("a ciphertext of {len} bytes exceeds the {MAX_ENVELOPE_BYTES}-byte limit"),
        ));
    }
    if len == 0 {
        return Err(invalid("empty ciphertext"));
    }
    Ok(())
}

/// The total-size refusal of a send or distribution.
pub fn too_large(total: usize, limit: usize) -> SendError {
    error(
        SendErrorCode::EnvelopeTooLarge,
        format!("the ciphertexts of one send total {total} bytes, over the {limit}-byte limit"),
    )
}

fn mismatches(list: Vec<Mismatch>) -> Vec<DeviceMismatch> {
    list.into_iter()
        .map(|m| DeviceMismatch {
            account_id: m.account.as_bytes().to_vec().into(),
            missing: m.missing,
            extra: m.extra,
            stale: m.stale,
        })
        .collect()
}

/// The answer for a refused write.
pub fn rejection_error(r: SendRejection) -> SendError {
    match r {
        SendRejection::DeviceMismatch(list) => SendError {
            mismatches: mismatches(list),
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
        SendRejection::NotAMember => not_a_member(),
        SendRejection::StaleEpoch { current_epoch } => SendError {
            current_epoch,
            ..error(
                SendErrorCode::StaleEpoch,
                "the group's epoch has changed: make a new sender key, distribute it for current_epoch, resend",
            )
        },
        SendRejection::MissingDistributions { current_epoch, mismatches: list } => SendError {
            current_epoch,
            mismatches: mismatches(list),
            ..error(
                SendErrorCode::MissingDistributions,
                "member devices hold no sender key of this device: distribute to the `missing` devices, resend",
            )
        },
        SendRejection::GroupDeviceMismatch { current_epoch, mismatches: list } => SendError {
            current_epoch,
            mismatches: mismatches(list),
            ..error(
                SendErrorCode::DeviceMismatch,
                "the distribution names devices that are not member devices (extra) or were re-registered (stale)",
            )
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
        Ok(SendErrorCode::NotAMember) => "not_a_member",
        Ok(SendErrorCode::StaleEpoch) => "stale_epoch",
        Ok(SendErrorCode::MissingDistributions) => "missing_distributions",
        _ => "internal",
    }
}
