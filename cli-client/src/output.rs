//! What the commands print: one JSON object per line (`--json`, and the daemon) or text.

use std::io::Write as _;

use hush_client_core::{
    ConnectionState, Contact, Event, GroupInfo, GroupRole, GroupState, MessageDirection, MessageKind, MessageRecord,
    MessageStatus, OutboxEntry, OutboxState, ReceiptKind, SafetyNumber, Status, TrustState,
};
use serde_json::{Value, json};

/// Where results go: stdout as JSON lines or as text.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// JSON lines instead of text.
    pub json: bool,
}

impl Printer {
    /// Prints one result: `value` as a JSON line, or `text` (which may span lines). Flushes, so
    /// a reader sees it at once and a cursor written afterwards never runs ahead of the output.
    pub fn emit(&self, value: &Value, text: &str) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{value}")?;
        } else {
            writeln!(out, "{text}")?;
        }
        out.flush()?;
        Ok(())
    }
}

/// The status of a message as one word.
pub fn status_name(status: &MessageStatus) -> &'static str {
    match status {
        MessageStatus::Pending => "pending",
        MessageStatus::Sent => "sent",
        MessageStatus::Delivered => "delivered",
        MessageStatus::Read => "read",
        MessageStatus::Failed(_) => "failed",
        MessageStatus::Received => "received",
    }
}

fn direction_name(direction: MessageDirection) -> &'static str {
    match direction {
        MessageDirection::Incoming => "incoming",
        MessageDirection::Outgoing => "outgoing",
    }
}

fn trust_name(trust: TrustState) -> &'static str {
    match trust {
        TrustState::Trusted => "trusted",
        TrustState::Changed => "changed",
    }
}

/// A message as JSON (`receive`, `history`, daemon events and `history` results).
pub fn message_json(m: &MessageRecord) -> Value {
    let mut v = json!({
        "id": m.id.to_string(),
        "from": m.from,
        "from_device": m.from_device,
        "conversation": m.conversation,
        "direction": direction_name(m.direction),
        "body": m.body,
        "sent_at": m.sent_at,
        "received_at": m.received_at,
        "status": status_name(&m.status),
        "local_seq": m.local_seq,
    });
    if let (MessageStatus::Failed(reason), Some(obj)) = (&m.status, v.as_object_mut()) {
        obj.insert("failed_reason".into(), json!(reason));
    }
    if m.conversation.starts_with(hush_client_core::GROUP_PREFIX)
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("group_seq".into(), json!(m.group_seq));
        obj.insert("kind".into(), json!(if m.kind == MessageKind::System { "system" } else { "text" }));
    }
    v
}

/// A message as one line of text.
pub fn message_text(m: &MessageRecord) -> String {
    let when = format_ms(m.sent_at);
    if m.kind == MessageKind::System {
        return format!("[{when}] {}: * {}", m.conversation, m.body);
    }
    if m.conversation.starts_with(hush_client_core::GROUP_PREFIX) {
        return match m.direction {
            MessageDirection::Incoming => format!("[{when}] {} in {}: {}", m.from, m.conversation, m.body),
            MessageDirection::Outgoing => {
                format!("[{when}] {} -> {}: {} ({})", m.from, m.conversation, m.body, status_name(&m.status))
            }
        };
    }
    match m.direction {
        MessageDirection::Incoming => format!("[{when}] {}: {}", m.from, m.body),
        MessageDirection::Outgoing => {
            format!("[{when}] {} -> {}: {} ({})", m.from, m.conversation, m.body, status_name(&m.status))
        }
    }
}

/// A group as JSON (`hush group`, daemon `group_*` results): its `group` (group:<uuid>),
/// `group_id`, `title`, `description`, `state` (active, invited, left), `members` (username,
/// account_id, role), `roster_version`, `epoch`.
pub fn group_json(g: &GroupInfo) -> Value {
    serde_json::to_value(g).unwrap_or(Value::Null)
}

/// A group as text: one line, or with `members` one more line per member.
pub fn group_text(g: &GroupInfo, members: bool) -> String {
    let state = match g.state {
        GroupState::Active => String::new(),
        GroupState::Invited => " [invite: `hush group accept` or `decline`]".to_owned(),
        GroupState::Left => " [left]".to_owned(),
        _ => String::new(),
    };
    let title = if g.title.is_empty() { "(title not received yet)" } else { g.title.as_str() };
    let mut out = format!("{}  {title}  ({} members){state}", g.group, g.members.len());
    if members {
        for m in &g.members {
            let role = match m.role {
                GroupRole::Owner => "owner",
                GroupRole::Admin => "admin",
                GroupRole::Member => "member",
            };
            out.push_str(&format!("\n  {} ({role})", m.username));
        }
    }
    out
}

/// A contact as JSON.
pub fn contact_json(c: &Contact) -> Value {
    json!({ "username": c.username, "account_id": c.account_id.to_string(), "trust": trust_name(c.trust) })
}

/// A contact as text.
pub fn contact_text(c: &Contact) -> String {
    match c.trust {
        TrustState::Trusted => c.username.clone(),
        TrustState::Changed => {
            format!("{} (identity key changed: compare safety numbers, then `hush trust`)", c.username)
        }
    }
}

/// A safety number as JSON.
pub fn safety_json(with: &str, n: &SafetyNumber) -> Value {
    json!({ "with": with, "safety_number": n.digits, "grouped": n.grouped() })
}

/// A connection state as one word.
pub fn connection_name(c: &ConnectionState) -> &'static str {
    match c {
        ConnectionState::Offline => "offline",
        ConnectionState::Connecting(_) => "connecting",
        ConnectionState::Connected => "connected",
        ConnectionState::Disconnected(_) => "disconnected",
        ConnectionState::Stopped(_) => "stopped",
        _ => "unknown",
    }
}

/// Why the connection is down (disconnected: and when it retries; stopped: what to do).
pub fn connection_detail(c: &ConnectionState) -> Option<&str> {
    match c {
        ConnectionState::Disconnected(reason) | ConnectionState::Stopped(reason) => Some(reason),
        _ => None,
    }
}

/// An outbox entry as JSON (`hush outbox`, the daemon's `outbox`).
pub fn outbox_json(e: &OutboxEntry) -> Value {
    json!({
        "id": e.id.to_string(),
        "to": e.to,
        "body": e.body,
        "state": match e.state { OutboxState::Pending => "pending", OutboxState::Failed => "failed" },
        "reason": e.reason,
        "attempts": e.attempts,
        "not_before": e.not_before,
    })
}

/// An outbox entry as one line of text.
pub fn outbox_text(e: &OutboxEntry) -> String {
    let preview: String = e.body.chars().take(40).collect();
    let more = if e.body.chars().count() > 40 { "…" } else { "" };
    let state = match e.state {
        OutboxState::Pending => "pending",
        OutboxState::Failed => "FAILED",
    };
    let why = e.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    format!("{} {state} to {} ({} bytes, \"{preview}{more}\"){why}", e.id, e.to, e.body.len())
}

/// The account status as JSON.
pub fn status_json(s: &Status, server_reachable: Option<bool>) -> Value {
    let mut v = json!({
        "username": s.username,
        "account_id": s.account_id.to_string(),
        "device_id": s.device_id,
        "server": s.server_url,
        "connection": connection_name(&s.connection),
        "connection_detail": connection_detail(&s.connection),
        "outbox_pending": s.outbox_pending,
        "outbox_failed": s.outbox_failed,
    });
    if let (Some(reachable), Some(obj)) = (server_reachable, v.as_object_mut()) {
        obj.insert("server_reachable".into(), json!(reachable));
    }
    v
}

/// The account status as text.
pub fn status_text(s: &Status, server_reachable: Option<bool>) -> String {
    let reach = match server_reachable {
        Some(true) => "reachable",
        Some(false) => "UNREACHABLE",
        None => connection_name(&s.connection),
    };
    let detail = connection_detail(&s.connection).map(|d| format!("\nconnection: {d}")).unwrap_or_default();
    format!(
        "{} (device {}, account {})\nserver: {} ({reach}){detail}\noutbox: {} pending, {} failed",
        s.username, s.device_id, s.account_id, s.server_url, s.outbox_pending, s.outbox_failed
    )
}

/// A client event other than a message as JSON (the daemon's live notifications); `None` for
/// messages (numbered separately) and events not passed on.
pub fn live_event_json(event: &Event) -> Option<Value> {
    Some(match event {
        Event::Message(_) | Event::QueueEmpty => return None,
        Event::Receipt(r) => json!({
            "type": "receipt",
            "kind": match r.kind { ReceiptKind::Delivered => "delivered", ReceiptKind::Read => "read" },
            "from": r.from,
            "from_device": r.from_device,
            "message_ids": r.message_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "timestamp": r.timestamp,
        }),
        Event::Typing { from, from_device, typing } => {
            json!({ "type": "typing", "from": from, "from_device": from_device, "typing": typing })
        }
        Event::IdentityChanged { username } => json!({ "type": "identity_changed", "username": username }),
        Event::Sent { id, to, server_timestamp } => {
            json!({ "type": "sent", "id": id.to_string(), "to": to, "server_timestamp": server_timestamp })
        }
        Event::SendFailed { id, to, reason } => {
            json!({ "type": "send_failed", "id": id.to_string(), "to": to, "reason": reason })
        }
        Event::RateLimited { id, to, retry_after_ms } => {
            json!({ "type": "rate_limited", "id": id.to_string(), "to": to, "retry_after_ms": retry_after_ms })
        }
        Event::SendDelayed { id, to, code, reason, retry_in_ms } => json!({
            "type": "send_delayed", "id": id.to_string(), "to": to, "code": code, "reason": reason,
            "retry_in_ms": retry_in_ms,
        }),
        Event::DecryptionFailed { from, from_device, retry_requested } => json!({
            "type": "decryption_failed", "from": from, "from_device": from_device, "retry_requested": retry_requested,
        }),
        Event::Connection(state) => {
            let mut v = json!({ "type": "connection", "state": connection_name(state) });
            if let (Some(reason), Some(obj)) = (connection_detail(state), v.as_object_mut()) {
                obj.insert("reason".into(), json!(reason));
            }
            v
        }
        // Group events (group_invite, group_updated, distribution_refused) and later kinds:
        // the library's own JSON form.
        other => serde_json::to_value(other).ok()?,
    })
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_client_core::MessageId;

    #[test]
    fn timestamps_format_as_utc() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14 22:13:20");
    }

    #[test]
    fn a_message_has_the_documented_json_fields() {
        let m = MessageRecord {
            id: MessageId([7; 16]),
            conversation: "alice".into(),
            from: "alice".into(),
            from_device: 1,
            direction: MessageDirection::Incoming,
            body: "hi".into(),
            sent_at: 10,
            received_at: 20,
            lamport: 3,
            group_seq: 0,
            kind: MessageKind::Text,
            status: MessageStatus::Received,
            local_seq: 5,
        };
        let v = message_json(&m);
        assert_eq!(
            v,
            json!({"id": "07070707070707070707070707070707", "from": "alice", "from_device": 1,
                   "conversation": "alice", "direction": "incoming", "body": "hi", "sent_at": 10,
                   "received_at": 20, "status": "received", "local_seq": 5})
        );
    }

    #[test]
    fn a_group_has_the_documented_json_fields_and_a_text_line() {
        let v = json!({"group": "group:11111111-1111-1111-1111-111111111111",
               "group_id": "11111111-1111-1111-1111-111111111111", "title": "friends", "description": "",
               "state": "invited", "members": [{"username": "alice",
               "account_id": "22222222-2222-2222-2222-222222222222", "role": "owner"}],
               "roster_version": 2, "epoch": 0, "members_can_add": false});
        let g: GroupInfo = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(group_json(&g), v);
        assert_eq!(
            group_text(&g, true),
            "group:11111111-1111-1111-1111-111111111111  friends  (1 members) \
             [invite: `hush group accept` or `decline`]\n  alice (owner)"
        );
    }
}
