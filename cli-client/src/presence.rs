//! `hush presence [on|off|status]` and how presence is printed (`hush contacts`, `receive`
//! events, the daemon's `contacts` method).

use anyhow::Context as _;
use hush_client_core::{Client, Contact, Event, Presence};
use serde_json::{Value, json};

use crate::cli::PresenceAction;
use crate::commands::Ctx;
use crate::output;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A presence as JSON: `{"state": "online"}`, `{"state": "last_seen", "hour": MS}` (the start
/// of the hour they were last seen in), `{"state": "unknown"}`.
pub fn presence_json(p: &Presence) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

/// A contact as JSON, with what is known of their presence.
pub fn contact_json(c: &Contact, p: &Presence) -> Value {
    let mut v = output::contact_json(c);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("presence".into(), presence_json(p));
    }
    v
}

/// A contact as text, with their presence when known (`alice  online`).
pub fn contact_text(c: &Contact, p: &Presence) -> String {
    let line = output::contact_text(c);
    match p {
        Presence::Unknown => line,
        known => format!("{line}  {}", known.describe(now_ms())),
    }
}

/// The text line of an [`Event::Presence`] (`alice is online`), `None` for other events.
pub fn event_text(event: &Event) -> Option<String> {
    let Event::Presence { contact, presence } = event else { return None };
    Some(match presence {
        Presence::Online => format!("{contact} is online"),
        Presence::Unknown => format!("{contact}: presence unknown"),
        last_seen => format!("{contact}: {}", last_seen.describe(now_ms())),
    })
}

/// Every contact with their presence.
pub async fn contacts_with_presence(client: &Client) -> anyhow::Result<Vec<(Contact, Presence)>> {
    let mut out = Vec::new();
    for c in client.contacts().await? {
        let p = client.presence(&c.username).await?;
        out.push((c, p));
    }
    Ok(out)
}

fn sharing_json(on: bool) -> Value {
    json!({ "presence_sharing": on })
}

fn sharing_text(on: bool) -> &'static str {
    if on {
        "presence sharing is on: your one-to-one contacts see when you are online, and you see theirs"
    } else {
        "presence sharing is off: no one sees when you are online, and you see no one's presence"
    }
}

/// Runs one `hush presence` action.
pub async fn run(ctx: &Ctx, action: Option<PresenceAction>) -> anyhow::Result<()> {
    let client = ctx.open().await?;
    let result = async {
        match action {
            Some(PresenceAction::On) => client.set_presence_sharing(true).await.context("cannot turn sharing on")?,
            Some(PresenceAction::Off) => client.set_presence_sharing(false).await.context("cannot turn sharing off")?,
            Some(PresenceAction::Status) | None => {}
        }
        let on = client.presence_sharing().await?;
        ctx.printer.emit(&sharing_json(on), sharing_text(on))
    }
    .await;
    let _ = client.shutdown().await;
    result
}
