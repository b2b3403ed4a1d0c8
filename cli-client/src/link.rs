//! `hush link` (a new device joins an existing account) and `hush link-approve` (the
//! account's primary device lets it in).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hush_client_core::{Client, ClientError, HistoryImport, LinkCode};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use serde_json::{Value, json};

use crate::commands::Ctx;
use crate::cursor::{Cursor, DAEMON_CURSOR, RECEIVE_CURSOR};
use crate::exit::{CliError, Kind};
use crate::output::format_ms;

/// `hush link [--name NAME]`: shows a link code, waits for its approval, and opens the new device.
pub async fn link(ctx: &Ctx, name: Option<&str>) -> anyhow::Result<()> {
    refuse_an_existing_account(ctx).await?;
    let server = &ctx.config.server_url;
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let pending =
        Client::link(ctx.config.clone(), name).await.with_context(|| format!("cannot start linking on {server}"))?;
    let code = pending.code();
    let expires_at = pending.expires_at();
    let text = if ctx.printer.json { String::new() } else { code_text(code, expires_at, now_ms())? };
    ctx.printer.emit(&code_json(code, expires_at), &text)?;
    let (client, history) = match pending.finish_with_history().await {
        Ok(done) => done,
        Err(ClientError::Timeout(_)) => {
            let msg = format!(
                "the link code expired at {} UTC before the primary device approved it; \
                 run `hush link` again for a new code",
                format_ms(expires_at)
            );
            return Err(CliError::new(Kind::Network, msg).into());
        }
        Err(e) => return Err(anyhow::Error::new(e).context("linking this device failed")),
    };
    let result = async {
        skip_imported_history(ctx, &client).await?;
        let s = client.status().await?;
        let (history_json, history_text) = match &history {
            HistoryImport::None => (json!({"imported": false}), "no history came with it".to_owned()),
            HistoryImport::Imported { messages, contacts, groups } => (
                json!({"imported": true, "messages": messages, "contacts": contacts, "groups": groups}),
                format!("history: {messages} messages, {contacts} contacts, {groups} groups"),
            ),
            HistoryImport::Failed(why) => (
                json!({"imported": false, "error": why}),
                format!("the history could not be imported ({why}); the device is linked without it"),
            ),
        };
        let value = json!({
            "event": "linked",
            "username": s.username,
            "account_id": s.account_id.to_string(),
            "device_id": s.device_id,
            "history": history_json,
        });
        let text = format!(
            "linked: this machine is device {} of {} (account {}) in {}; later commands use {}\n{history_text}",
            s.device_id,
            s.username,
            s.account_id,
            ctx.config.data_dir.display(),
            s.server_url
        );
        ctx.printer.emit(&value, &text)
    }
    .await;
    let _ = client.shutdown().await;
    result
}

/// Moves the `receive` and daemon cursors past the imported history: it is the account's
/// past (`hush history` shows it), not messages that arrived for this device.
async fn skip_imported_history(ctx: &Ctx, client: &Client) -> anyhow::Result<()> {
    let mut last = 0;
    while let Some(m) = client.messages_after(last, 1000).await?.last() {
        last = m.local_seq;
    }
    for name in [RECEIVE_CURSOR, DAEMON_CURSOR] {
        Cursor::load(&ctx.config.data_dir, name)?.advance(last)?;
    }
    Ok(())
}

/// Fails at once if the data directory holds an account already: client-core would refuse
/// it too, but only after the approval, which would waste the link token.
async fn refuse_an_existing_account(ctx: &Ctx) -> anyhow::Result<()> {
    let dir = ctx.config.data_dir.display();
    match Client::open(ctx.config.clone()).await {
        Err(ClientError::NotRegistered) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot use {dir} for a new device"))),
        Ok(client) => {
            let status = client.status().await;
            let _ = client.shutdown().await;
            let who = status.map(|s| format!("{} (device {})", s.username, s.device_id))?;
            let msg = format!(
                "{dir} already holds the account {who}; link into an empty data directory \
                 (pick another --data-dir)"
            );
            Err(CliError::new(Kind::Other, msg).into())
        }
    }
}

/// The first `--json` line of `hush link`.
fn code_json(code: &LinkCode, expires_at: u64) -> Value {
    json!({ "event": "link_code", "text": code.to_text(), "uri": code.to_uri(), "expires_at": expires_at })
}

/// What `hush link` shows a person: the instruction, the code in both forms, its QR code and
/// when it expires.
fn code_text(code: &LinkCode, expires_at: u64, now: u64) -> anyhow::Result<String> {
    let qr = QrCode::new(code.to_uri()).context("cannot draw the link code as a QR code")?;
    // Light modules (and the quiet zone) as blocks: right on the usual dark terminal background.
    let qr = qr.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).build();
    Ok(format!(
        "To link this machine to your hush account, on your primary device run:\n\
         \n    hush link-approve {text}\n\n\
         link code: {text}\n\
         link URI:  {uri}\n\
         the URI as a QR code:\n{qr}\n\
         The code works until {until} UTC ({left}). Waiting for the approval...",
        text = code.to_text(),
        uri = code.to_uri(),
        until = format_ms(expires_at),
        left = time_left(expires_at.saturating_sub(now)),
    ))
}

/// A duration in ms as "in 10 minutes" / "in 30 seconds".
fn time_left(ms: u64) -> String {
    let secs = ms.div_ceil(1000);
    match secs {
        0 => "already expired".to_owned(),
        1 => "in 1 second".to_owned(),
        s if s < 120 => format!("in {s} seconds"),
        s => format!("in {} minutes", s.div_ceil(60)),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `hush link-approve CODE`, on the primary device.
pub async fn approve(ctx: &Ctx, code: &str, options: hush_client_core::LinkOptions) -> anyhow::Result<()> {
    let client = ctx.open().await?;
    let result = async {
        if let Err(e) = client.approve_link_with(code, options).await {
            return Err(approve_error(e, &client).await);
        }
        let text = "approved: the new device is joining the account (`hush devices` lists it once it has)";
        ctx.printer.emit(&json!({ "approved": true }), text)
    }
    .await;
    let _ = client.shutdown().await;
    result
}

/// The error of a failed approval; a non-primary device is told where to approve instead.
async fn approve_error(e: ClientError, client: &Client) -> anyhow::Error {
    if let ClientError::Server { status: 403, code, .. } = &e
        && code == "forbidden"
    {
        let this = client.status().await.map(|s| format!("this is device {}", s.device_id)).unwrap_or_default();
        let msg = format!(
            "only the account's primary device (device 1) may approve a new device ({this}): \
             run `hush link-approve` there; the server said: {e}"
        );
        return CliError::new(Kind::Other, msg).into();
    }
    anyhow::Error::new(e).context("cannot approve the link code")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> LinkCode {
        LinkCode::new("AbCdEf0123456789", [9; 32]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_link_code_line_has_the_documented_fields() {
        let v = code_json(&code(), 1_700_000_000_000);
        assert_eq!(v["event"], json!("link_code"));
        assert_eq!(v["text"], json!(code().to_text()));
        assert_eq!(v["uri"], json!(code().to_uri()));
        assert_eq!(v["expires_at"], json!(1_700_000_000_000_u64));
    }

    #[test]
    fn the_text_names_the_command_both_forms_and_the_expiry_and_draws_a_qr_code() {
        let text = code_text(&code(), 1_700_000_600_000, 1_700_000_000_000).unwrap_or_else(|e| panic!("{e}"));
        let c = code();
        assert!(
            text.contains(&format!("on your primary device run:\n\n    hush link-approve {}", c.to_text())),
            "{text}"
        );
        assert!(text.contains(&c.to_uri()), "{text}");
        assert!(text.contains("until 2023-11-14 22:23:20 UTC (in 10 minutes)"), "{text}");
        assert!(text.contains('\u{2588}') || text.contains('\u{2580}'), "no QR code in {text}");
    }

    #[test]
    fn time_left_reads_naturally() {
        assert_eq!(time_left(0), "already expired");
        assert_eq!(time_left(1), "in 1 second");
        assert_eq!(time_left(2_000), "in 2 seconds");
        assert_eq!(time_left(600_000), "in 10 minutes");
    }
}
