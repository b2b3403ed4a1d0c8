//! Groups in the raw protocol: the REST calls of `/v1/groups` (on [`RestClient`]) and the
//! group frames (on [`WsClient`]: [`WsClient::group_send`], [`WsClient::distribute`]), plus
//! builders for them.

use hush_wire::api::{AddMembersRequest, CreateGroupRequest, GroupInfo, SetRoleRequest, UpdateGroupRequest};
use hush_wire::frames::{DistributeRequest, GroupSendRequest, RecipientMessages};
use uuid::Uuid;

use crate::device::{TestAccount, TestDevice};
use crate::rest::{ApiResponse, RestClient};
use crate::ws::{message, recipient};

impl RestClient {
    /// `POST /v1/groups` as `device`.
    pub async fn create_group(&self, device: &TestDevice, req: &CreateGroupRequest) -> ApiResponse {
        self.signed(device, "POST", "/v1/groups", Some(req)).await
    }

    /// Creates a group with `members` and returns it (asserting 201).
    pub async fn new_group(&self, device: &TestDevice, members: &[&TestAccount]) -> GroupInfo {
        let req = CreateGroupRequest {
            members: members.iter().map(|a| a.account_id).collect(),
            title: vec![1, 2, 3].into(),
            ..CreateGroupRequest::default()
        };
        self.create_group(device, &req).await.json(201)
    }

    /// `GET /v1/groups` as `device`.
    pub async fn list_groups(&self, device: &TestDevice) -> ApiResponse {
        self.signed_get(device, "/v1/groups").await
    }

    /// `GET /v1/groups/{group}` as `device`.
    pub async fn get_group(&self, device: &TestDevice, group: Uuid) -> ApiResponse {
        self.signed_get(device, &format!("/v1/groups/{group}")).await
    }

    /// `PATCH /v1/groups/{group}` as `device`.
    pub async fn update_group(&self, device: &TestDevice, group: Uuid, req: &UpdateGroupRequest) -> ApiResponse {
        self.signed(device, "PATCH", &format!("/v1/groups/{group}"), Some(req)).await
    }

    /// `DELETE /v1/groups/{group}` as `device`.
    pub async fn delete_group(&self, device: &TestDevice, group: Uuid) -> ApiResponse {
        self.signed::<()>(device, "DELETE", &format!("/v1/groups/{group}"), None).await
    }

    /// `POST /v1/groups/{group}/members` as `device`.
    pub async fn add_members(&self, device: &TestDevice, group: Uuid, members: &[Uuid]) -> ApiResponse {
        let req = AddMembersRequest { members: members.to_vec() };
        self.signed(device, "POST", &format!("/v1/groups/{group}/members"), Some(&req)).await
    }

    /// `DELETE /v1/groups/{group}/members/{account}` as `device` (leaving, when it is its own).
    pub async fn remove_member(&self, device: &TestDevice, group: Uuid, account: Uuid) -> ApiResponse {
        self.signed::<()>(device, "DELETE", &format!("/v1/groups/{group}/members/{account}"), None).await
    }

    /// `PUT /v1/groups/{group}/members/{account}/role` as `device`.
    pub async fn set_role(
        &self,
        device: &TestDevice,
        group: Uuid,
        account: Uuid,
        role: hush_wire::api::GroupRole,
    ) -> ApiResponse {
        let req = SetRoleRequest { role };
        self.signed(device, "PUT", &format!("/v1/groups/{group}/members/{account}/role"), Some(&req)).await
    }
}

/// A group send of `content` under `epoch` (its request id is filled in by [`WsClient::group_send`]).
pub fn group_send_request(group: Uuid, epoch: u64, content: impl Into<bytes::Bytes>) -> GroupSendRequest {
    GroupSendRequest {
        request_id: 0,
        group_id: group.as_bytes().to_vec().into(),
        epoch,
        content: content.into(),
        idempotency_key: bytes::Bytes::new(),
        urgent: true,
    }
}

/// A distribution for `epoch` to the given devices (one made-up ciphertext each).
pub fn distribute_request(group: Uuid, epoch: u64, recipients: Vec<RecipientMessages>) -> DistributeRequest {
    DistributeRequest {
        request_id: 0,
        group_id: group.as_bytes().to_vec().into(),
        epoch,
        recipients,
        idempotency_key: bytes::Bytes::new(),
    }
}

/// Distribution ciphertexts for every device of `accounts` except `sender`.
pub fn to_member_devices(sender: &TestDevice, accounts: &[&TestAccount]) -> Vec<RecipientMessages> {
    accounts
        .iter()
        .filter_map(|a| {
            let messages: Vec<_> = a
                .devices
                .iter()
                .filter(|d| !(d.account_id == sender.account_id && d.device_id == sender.device_id))
                .map(|d| message(d, format!("skdm from {}.{}", sender.account_id, sender.device_id).into_bytes()))
                .collect();
            (!messages.is_empty()).then(|| recipient(a.account_id, messages))
        })
        .collect()
}
