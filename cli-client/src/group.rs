//! `hush group ...`: create groups, change their roster, list them, answer invites.

use std::time::Duration;

use anyhow::Context as _;
use hush_client_core::{Client, GroupInfo, GroupRole};
use serde_json::json;

use crate::cli::GroupAction;
use crate::commands::Ctx;
use crate::output;

/// The role named on the command line (clap has checked it).
pub fn parse_role(role: &str) -> GroupRole {
    match role {
        "owner" => GroupRole::Owner,
        "admin" => GroupRole::Admin,
        _ => GroupRole::Member,
    }
}

/// Runs one `hush group` action. Changes wait for the server, then send what they queued
/// (this device's key to new members) before returning, within `timeout`.
pub async fn run(ctx: &Ctx, action: GroupAction, timeout: Duration) -> anyhow::Result<()> {
    let client = ctx.open().await?;
    let result = act(ctx, &client, action, timeout).await;
    let _ = client.shutdown().await;
    result
}

async fn act(ctx: &Ctx, client: &Client, action: GroupAction, timeout: Duration) -> anyhow::Result<()> {
    let changed = |info: GroupInfo| async move {
        client.run_until_queue_empty(timeout).await.context("the change is made; sending the group key")?;
        ctx.printer.emit(&output::group_json(&info), &output::group_text(&info, true))
    };
    match action {
        GroupAction::Create { title, members } => {
            let names: Vec<&str> = members.iter().map(String::as_str).collect();
            let info = client.create_group(&title, &names).await.context("cannot create the group")?;
            changed(info).await
        }
        GroupAction::Add { group, members } => {
            let names: Vec<&str> = members.iter().map(String::as_str).collect();
            let info = client.add_members(&group, &names).await.with_context(|| format!("cannot add to {group}"))?;
            changed(info).await
        }
        GroupAction::Remove { group, member } => {
            let info =
                client.remove_member(&group, &member).await.with_context(|| format!("cannot remove {member}"))?;
            changed(info).await
        }
        GroupAction::Role { group, member, role } => {
            let info = client
                .set_role(&group, &member, parse_role(&role))
                .await
                .with_context(|| format!("cannot change the role of {member}"))?;
            changed(info).await
        }
        GroupAction::Title { group, title } => {
            let info = client.set_group_title(&group, &title).await.context("cannot change the title")?;
            changed(info).await
        }
        GroupAction::Leave { group } => {
            client.leave_group(&group).await.with_context(|| format!("cannot leave {group}"))?;
            ctx.printer.emit(&json!({ "group": group, "state": "left" }), &format!("left {group}"))
        }
        GroupAction::MembersCanAdd { group, setting } => {
            let info = client
                .set_members_can_add(&group, setting == "on")
                .await
                .context("cannot change who may add members")?;
            changed(info).await
        }
        GroupAction::Delete { group } => {
            client.delete_group(&group).await.with_context(|| format!("cannot delete {group}"))?;
            ctx.printer.emit(&json!({ "group": group, "state": "deleted" }), &format!("deleted {group}"))
        }
        GroupAction::Decline { group } => {
            client.decline_invite(&group).await.with_context(|| format!("cannot decline {group}"))?;
            ctx.printer.emit(&json!({ "group": group, "state": "left" }), &format!("declined {group}"))
        }
        GroupAction::Accept { group } => {
            let info = client.accept_invite(&group).await.with_context(|| format!("cannot accept {group}"))?;
            ctx.printer.emit(&output::group_json(&info), &output::group_text(&info, true))
        }
        GroupAction::Info { group } => {
            let info = client.group_info(&group).await?;
            ctx.printer.emit(&output::group_json(&info), &output::group_text(&info, true))
        }
        GroupAction::List => {
            let mut all = client.groups().await?;
            all.extend(client.invites().await?);
            for g in &all {
                ctx.printer.emit(&output::group_json(g), &output::group_text(g, false))?;
            }
            Ok(())
        }
    }
}
