//! The daemon's methods: the one-shot commands as JSON-RPC calls, plus the event stream.

use hush_client_core::{Client, MessageId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::hub::{HubCommand, Outbox};
use super::rpc::{self, Request, RpcError};
use crate::exit::Kind;
use crate::output;

/// What a connection's calls need.
#[derive(Debug)]
pub struct Session {
    /// The account.
    pub client: Client,
    /// The event hub.
    pub hub: mpsc::UnboundedSender<HubCommand>,
    /// This connection's number.
    pub conn: u64,
    /// This connection's output.
    pub out: Outbox,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendParams {
    to: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithParams {
    with: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    with: String,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    50
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceIdParams {
    id: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceNameParams {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkApproveParams {
    code: String,
}

/// `presence_sharing`: `{"on": bool}` changes the setting; without it, only reads.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SharingParams {
    on: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypingParams {
    to: String,
    typing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryParams {
    id: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SubscribeParams {
    after: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckParams {
    event_id: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupCreateParams {
    title: String,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupParams {
    group: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupMembersParams {
    group: String,
    members: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupMemberParams {
    group: String,
    member: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRoleParams {
    group: String,
    member: String,
    role: hush_client_core::GroupRole,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSettingParams {
    group: String,
    on: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupTitleParams {
    group: String,
    title: String,
}

fn names(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

fn params<T: DeserializeOwned>(value: Value) -> Result<T, RpcError> {
    serde_json::from_value(value).map_err(|e| RpcError::params(format!("invalid params: {e}")))
}

/// Parameters that may be left out entirely.
fn optional_params<T: DeserializeOwned + Default>(value: Value) -> Result<T, RpcError> {
    if value.is_null() { Ok(T::default()) } else { params(value) }
}

fn hub_gone() -> RpcError {
    RpcError::app(Kind::Other, "the daemon is shutting down")
}

impl Session {
    /// Handles one request; returns the answer line, if one is due now (`subscribe` is
    /// answered by the hub, before the replayed events, and notifications get no answer).
    pub async fn handle(&self, request: Request) -> Option<String> {
        let id = request.id.clone();
        if request.method == "subscribe" {
            return match optional_params::<SubscribeParams>(request.params) {
                Ok(p) => {
                    let cmd = HubCommand::Subscribe {
                        conn: self.conn,
                        out: self.out.clone(),
                        request_id: id,
                        after: p.after,
                    };
                    match self.hub.send(cmd) {
                        Ok(()) => None,
                        Err(_) => request.id.map(|id| rpc::error(id, &hub_gone())),
                    }
                }
                Err(e) => request.id.map(|id| rpc::error(id, &e)),
            };
        }
        let result = self.call(&request.method, request.params).await;
        let id = id?;
        Some(match result {
            Ok(value) => rpc::response(id, value),
            Err(e) => rpc::error(id, &e),
        })
    }

    async fn call(&self, method: &str, p: Value) -> Result<Value, RpcError> {
        let client = &self.client;
        match method {
            "send" => {
                let p: SendParams = params(p)?;
                let id = client.send_text(&p.to, &p.text).await?;
                Ok(json!({ "id": id.to_string(), "to": p.to, "status": "pending" }))
            }
            "history" => {
                let p: HistoryParams = params(p)?;
                let messages = client.history(&p.with, p.limit).await?;
                Ok(json!({ "messages": messages.iter().map(output::message_json).collect::<Vec<_>>() }))
            }
            "search" => Ok(crate::search::rpc(client, params(p)?).await?),
            "contacts" => {
                let contacts = crate::presence::contacts_with_presence(client).await?;
                let contacts: Vec<Value> = contacts.iter().map(|(c, p)| crate::presence::contact_json(c, p)).collect();
                Ok(json!({ "contacts": contacts }))
            }
            "presence" => {
                let p: WithParams = params(p)?;
                let presence = client.presence(&p.with).await?;
                Ok(json!({ "with": p.with, "presence": crate::presence::presence_json(&presence) }))
            }
            "presence_sharing" => {
                let p: SharingParams = optional_params(p)?;
                if let Some(on) = p.on {
                    client.set_presence_sharing(on).await?;
                }
                Ok(json!({ "presence_sharing": client.presence_sharing().await? }))
            }
            "safety_number" => {
                let p: WithParams = params(p)?;
                let n = client.safety_number(&p.with).await?;
                Ok(output::safety_json(&p.with, &n))
            }
            "trust" => {
                let p: WithParams = params(p)?;
                client.trust(&p.with).await?;
                Ok(json!({ "with": p.with, "trust": "trusted" }))
            }
            "status" => Ok(output::status_json(&client.status().await?, None)),
            "push_register" => {
                let target: hush_client_core::PushTargetBody = params(p)?;
                client.set_push_target(target).await?;
                Ok(crate::push::status_json(&client.push_target().await?))
            }
            "push_status" => Ok(crate::push::status_json(&client.push_target().await?)),
            "push_remove" => {
                client.remove_push_target().await?;
                Ok(json!({ "push": null }))
            }
            "mark_read" => {
                let p: WithParams = params(p)?;
                client.mark_read(&p.with).await?;
                Ok(json!({}))
            }
            "unread" => {
                let p: WithParams = params(p)?;
                Ok(json!({ "with": p.with, "unread": client.unread(&p.with).await? }))
            }
            "devices" => {
                let devices = client.devices().await?;
                Ok(json!({ "devices": devices.iter().map(crate::devices::device_json).collect::<Vec<_>>() }))
            }
            "device_remove" => {
                let p: DeviceIdParams = params(p)?;
                let this = client.status().await?.device_id;
                client.remove_device(p.id).await?;
                Ok(json!({ "removed": p.id, "this_device": p.id == this }))
            }
            "device_rename" => {
                let p: DeviceNameParams = params(p)?;
                let name = p.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
                client.rename_device(name).await?;
                Ok(json!({ "name": name }))
            }
            "link_approve" => {
                let p: LinkApproveParams = params(p)?;
                client.approve_link(&p.code).await?;
                Ok(json!({ "approved": true }))
            }
            "typing" => {
                let p: TypingParams = params(p)?;
                client.send_typing(&p.to, p.typing).await?;
                Ok(json!({}))
            }
            "retry" => {
                let p: RetryParams = params(p)?;
                let id = MessageId::parse_hex(&p.id).ok_or_else(|| RpcError::params("id must be 32 hex digits"))?;
                client.retry(id).await?;
                Ok(json!({ "id": p.id, "status": "pending" }))
            }
            "outbox" => {
                let entries = client.outbox().await?;
                Ok(json!({ "messages": entries.iter().map(output::outbox_json).collect::<Vec<_>>() }))
            }
            "cancel" => {
                let p: RetryParams = params(p)?;
                let id = MessageId::parse_hex(&p.id).ok_or_else(|| RpcError::params("id must be 32 hex digits"))?;
                client.cancel(id).await?;
                Ok(json!({ "id": p.id, "status": "cancelled" }))
            }
            "ack" => {
                let p: AckParams = params(p)?;
                let (reply, rx) = oneshot::channel();
                self.hub.send(HubCommand::Ack { event_id: p.event_id, reply }).map_err(|_| hub_gone())?;
                let acked = rx.await.map_err(|_| hub_gone())?.map_err(|e| RpcError::app(Kind::Other, e))?;
                Ok(json!({ "acked": acked }))
            }
            "group_create" => {
                let p: GroupCreateParams = params(p)?;
                Ok(output::group_json(&client.create_group(&p.title, &names(&p.members)).await?))
            }
            "group_add" => {
                let p: GroupMembersParams = params(p)?;
                Ok(output::group_json(&client.add_members(&p.group, &names(&p.members)).await?))
            }
            "group_remove" => {
                let p: GroupMemberParams = params(p)?;
                Ok(output::group_json(&client.remove_member(&p.group, &p.member).await?))
            }
            "group_leave" => {
                let p: GroupParams = params(p)?;
                client.leave_group(&p.group).await?;
                Ok(json!({ "group": p.group, "state": "left" }))
            }
            "group_members_can_add" => {
                let p: GroupSettingParams = params(p)?;
                Ok(output::group_json(&client.set_members_can_add(&p.group, p.on).await?))
            }
            "group_delete" => {
                let p: GroupParams = params(p)?;
                client.delete_group(&p.group).await?;
                Ok(json!({ "group": p.group, "state": "deleted" }))
            }
            "group_role" => {
                let p: GroupRoleParams = params(p)?;
                Ok(output::group_json(&client.set_role(&p.group, &p.member, p.role).await?))
            }
            "group_title" => {
                let p: GroupTitleParams = params(p)?;
                Ok(output::group_json(&client.set_group_title(&p.group, &p.title).await?))
            }
            "group_list" => {
                let groups = client.groups().await?;
                Ok(json!({ "groups": groups.iter().map(output::group_json).collect::<Vec<_>>() }))
            }
            "group_invites" => {
                let groups = client.invites().await?;
                Ok(json!({ "groups": groups.iter().map(output::group_json).collect::<Vec<_>>() }))
            }
            "group_info" => {
                let p: GroupParams = params(p)?;
                Ok(output::group_json(&client.group_info(&p.group).await?))
            }
            "group_accept" => {
                let p: GroupParams = params(p)?;
                Ok(output::group_json(&client.accept_invite(&p.group).await?))
            }
            "group_decline" => {
                let p: GroupParams = params(p)?;
                client.decline_invite(&p.group).await?;
                Ok(json!({ "group": p.group, "state": "left" }))
            }
            "unsubscribe" => {
                self.unsubscribe().await;
                Ok(json!({}))
            }
            other => Err(RpcError::new(rpc::METHOD_NOT_FOUND, format!("no method {other:?}"))),
        }
    }

    /// Stops this connection's event stream (also done when the connection closes).
    pub async fn unsubscribe(&self) {
        let (reply, rx) = oneshot::channel();
        if self.hub.send(HubCommand::Unsubscribe { conn: self.conn, reply }).is_ok() {
            let _ = rx.await;
        }
    }
}
