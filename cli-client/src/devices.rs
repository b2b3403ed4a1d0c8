//! `hush devices ...`: the devices of this account.

use anyhow::Context as _;
use hush_client_core::DeviceEntry;
use serde_json::{Value, json};

use crate::cli::DevicesAction;
use crate::commands::Ctx;
use crate::output::format_ms;

/// A device as JSON (the `hush devices --json` lines and the daemon's `devices` answer).
pub fn device_json(d: &DeviceEntry) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "created_at": d.created_at,
        "last_seen": d.last_seen,
        "this_device": d.this_device,
    })
}

/// A device as one line of text.
pub fn device_text(d: &DeviceEntry) -> String {
    let name = d.name.as_deref().map(|n| format!(" {n:?}")).unwrap_or_default();
    let seen = match d.last_seen {
        Some(ms) => format!("last seen {}", &format_ms(ms)[..10]),
        None => "never connected".to_owned(),
    };
    let this = if d.this_device { " (this device)" } else { "" };
    format!("device {}{name}{this}: added {}, {seen}", d.id, format_ms(d.created_at))
}

/// Runs one `hush devices` action.
pub async fn run(ctx: &Ctx, action: Option<DevicesAction>) -> anyhow::Result<()> {
    let client = ctx.open().await?;
    let result = async {
        match action.unwrap_or(DevicesAction::List) {
            DevicesAction::List => {
                for d in client.devices().await.context("cannot list the devices")? {
                    ctx.printer.emit(&device_json(&d), &device_text(&d))?;
                }
                Ok(())
            }
            DevicesAction::Remove { id } => {
                let this = client.status().await?.device_id;
                client.remove_device(id).await.with_context(|| format!("cannot remove device {id}"))?;
                let text = if id == this {
                    format!(
                        "removed this device ({id}) from the account; it stopped for good, and {} can be deleted",
                        ctx.config.data_dir.display()
                    )
                } else {
                    format!("removed device {id}")
                };
                ctx.printer.emit(&json!({ "removed": id, "this_device": id == this }), &text)
            }
            DevicesAction::Rename { name } => {
                let name = Some(name.trim()).filter(|n| !n.is_empty());
                client.rename_device(name).await.context("cannot rename this device")?;
                let text = match name {
                    Some(n) => format!("this device is now named {n:?}"),
                    None => "this device has no name now".to_owned(),
                };
                ctx.printer.emit(&json!({ "name": name }), &text)
            }
        }
    }
    .await;
    let _ = client.shutdown().await;
    result
}
