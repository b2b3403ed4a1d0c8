//! `hush push ...`: where the server sends this device's wake-ups while it is offline.

use anyhow::Context as _;
use hush_client_core::{PushStatus, PushTargetBody};
use serde_json::{Value, json};

use crate::cli::PushAction;
use crate::commands::Ctx;

/// The target named on the command line (clap has checked that exactly one kind is given,
/// and a topic with an APNs token).
fn target(action: PushAction) -> anyhow::Result<Option<PushTargetBody>> {
    let PushAction::Register { unifiedpush, fcm, apns, topic, sandbox } = action else { return Ok(None) };
    Ok(Some(match (unifiedpush, fcm, apns) {
        (Some(endpoint), None, None) => PushTargetBody::UnifiedPush { endpoint },
        (None, Some(token), None) => PushTargetBody::Fcm { token },
        (None, None, Some(token)) => PushTargetBody::Apns { token, topic: topic.unwrap_or_default(), sandbox },
        _ => anyhow::bail!("name one target: --unifiedpush URL, --fcm TOKEN or --apns TOKEN --topic BUNDLE_ID"),
    }))
}

/// A push status as JSON (`null` when the device has no target).
pub fn status_json(status: &Option<PushStatus>) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

fn status_text(status: &Option<PushStatus>) -> String {
    match status.as_ref().map(|s| &s.target) {
        None => "no push target: this device is not woken while offline".to_owned(),
        Some(PushTargetBody::UnifiedPush { endpoint }) => format!("woken through UnifiedPush at {endpoint}"),
        Some(PushTargetBody::Fcm { .. }) => "woken through FCM".to_owned(),
        Some(PushTargetBody::Apns { topic, sandbox, .. }) => {
            format!("woken through APNs ({topic}{})", if *sandbox { ", sandbox" } else { "" })
        }
    }
}

/// Runs one `hush push` action.
pub async fn run(ctx: &Ctx, action: PushAction) -> anyhow::Result<()> {
    let client = ctx.open().await?;
    let result = async {
        match action {
            PushAction::Status => {
                let status = client.push_target().await.context("cannot read the push target")?;
                ctx.printer.emit(&status_json(&status), &status_text(&status))
            }
            PushAction::Remove => {
                client.remove_push_target().await.context("cannot remove the push target")?;
                ctx.printer.emit(&json!({ "push": null }), "push target removed")
            }
            register => {
                let Some(t) = target(register)? else { return Ok(()) };
                client.set_push_target(t).await.context("the server did not take the push target")?;
                let status = client.push_target().await.context("cannot read the push target back")?;
                ctx.printer.emit(&status_json(&status), &status_text(&status))
            }
        }
    }
    .await;
    let _ = client.shutdown().await;
    result
}
