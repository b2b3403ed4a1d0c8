//! Groups: create, list, read, change settings, add and remove members, roles, delete.
//! Every change is one store transaction that also writes the server-built `RosterChange`
//! to every member device's mailbox (the removed or leaving member's included); it is
//! delivered after the commit, as a send is. A non-member learns nothing: a group it is
//! not in answers `404 not_a_member`, whether or not it exists.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hush_wire::api::{
    AddMembersRequest, ApiError, B64, CreateGroupRequest, GroupInfo, GroupList, GroupMember, GroupSummary,
    RosterChangeResult, SetRoleRequest, UpdateGroupRequest,
};
use hush_wire::limits::{MAX_GROUP_AVATAR_BYTES, MAX_GROUP_DESCRIPTION_BYTES, MAX_GROUP_TITLE_BYTES};
use uuid::Uuid;

use super::auth::Authed;
use super::error::HttpError;
use super::extract::ApiPath;
use crate::state::{AppState, now_ms};
use crate::store::{ChangeCommitted, GroupChange, GroupError, GroupOp, GroupRecord, GroupSettings, NewGroup};

impl From<GroupError> for HttpError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::NotAMember => {
                HttpError::not_found("not_a_member", "no such group, or you are not a member of it")
            }
            GroupError::Forbidden => {
                HttpError::new(StatusCode::FORBIDDEN, "forbidden", "your role in the group may not do this")
            }
            GroupError::LastOwner => HttpError::new(
                StatusCode::CONFLICT,
                "last_owner",
                "the last owner cannot leave, be demoted or removed: make another member owner first",
            ),
            GroupError::GroupFull(max) => HttpError::new(
                StatusCode::CONFLICT,
                "group_full",
                format!("the group would have more than {max} members"),
            ),
            GroupError::AlreadyMember(a) => {
                HttpError::new(StatusCode::CONFLICT, "already_member", format!("account {a} is already a member"))
            }
            GroupError::UnknownAccount(a) => {
                HttpError::not_found("unknown_account", format!("account {a} does not exist"))
            }
            GroupError::NotInGroup(a) => {
                HttpError::not_found("not_in_group", format!("account {a} is not a member of the group"))
            }
            GroupError::Store(e) => e.into(),
        }
    }
}

fn blob_too_large(what: &str, max: usize) -> HttpError {
    HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, "blob_too_large", format!("the encrypted {what} is over {max} bytes"))
}

/// Refuses blobs over their limits.
fn check_blobs(title: Option<&B64>, description: Option<&B64>, avatar: Option<&B64>) -> Result<(), HttpError> {
    let checks = [
        (title, "title", MAX_GROUP_TITLE_BYTES),
        (description, "description", MAX_GROUP_DESCRIPTION_BYTES),
        (avatar, "avatar", MAX_GROUP_AVATAR_BYTES),
    ];
    for (blob, what, max) in checks {
        if blob.is_some_and(|b| b.0.len() > max) {
            return Err(blob_too_large(what, max));
        }
    }
    Ok(())
}

fn info(state: &AppState, g: GroupRecord) -> GroupInfo {
    GroupInfo {
        group_id: g.id,
        roster_version: g.roster_version,
        epoch: g.epoch,
        seq: g.seq,
        members: g
            .members
            .into_iter()
            .map(|m| GroupMember { account_id: m.account, role: m.role, added_by: m.added_by, joined_at: m.joined_at })
            .collect(),
        title: B64(g.title),
        description: B64(g.description),
        avatar: B64(g.avatar),
        members_can_add: g.members_can_add,
        max_members: g.max_members.unwrap_or(state.config.limits.max_group_members),
    }
}

/// When what is written now expires.
fn expiry(state: &AppState, now: u64) -> u64 {
    now + state.config.retention.as_millis() as u64
}

/// Delivers a committed change and answers with its result.
fn delivered(state: &AppState, done: ChangeCommitted) -> RosterChangeResult {
    let result = RosterChangeResult {
        group_id: done.group,
        roster_version: done.roster_version,
        epoch: done.epoch,
        group_seq: done.group_seq,
    };
    let delivery =
        crate::commit::RosterDelivery { committed: done.committed, streamed: done.streamed, moved: done.moved };
    crate::commit::deliver(&state.hub, state.cluster.as_deref(), &state.pusher, delivery);
    result
}

/// Applies one change by the calling account.
async fn change(state: &AppState, auth: &Authed, group: Uuid, op: GroupOp) -> Result<RosterChangeResult, HttpError> {
    let now = now_ms();
    let change = GroupChange {
        group,
        actor: auth.key().account,
        op,
        server_ts: now,
        expires_at: expiry(state, now),
        max_members: state.config.limits.max_group_members,
        read_above: state.config.limits.group_fanout_read_above,
    };
    let done = state.store.change_group(&change).await?;
    Ok(delivered(state, done))
}

/// Creates a group; the caller becomes its owner, the accounts in `members` its members.
/// Every member device gets a `KIND_CREATED` roster change.
#[utoipa::path(post, path = "/v1/groups", request_body = CreateGroupRequest, tag = "groups",
    responses((status = 201, body = GroupInfo),
              (status = 400, body = ApiError, description = "invalid_request"),
              (status = 404, body = ApiError, description = "unknown_account (the message names it)"),
              (status = 409, body = ApiError, description = "group_full"),
              (status = 413, body = ApiError, description = "blob_too_large, body_too_large")),
    security(("hush_sig" = [])))]
pub async fn create(State(state): State<AppState>, auth: Authed) -> Result<(StatusCode, Json<GroupInfo>), HttpError> {
    let req: CreateGroupRequest = auth.json()?;
    check_blobs(Some(&req.title), Some(&req.description), Some(&req.avatar))?;
    let now = now_ms();
    let owner = auth.key().account;
    let new = NewGroup {
        id: Uuid::new_v4(),
        owner,
        members: req.members,
        title: req.title.0,
        description: req.description.0,
        avatar: req.avatar.0,
        members_can_add: req.members_can_add,
        server_ts: now,
        expires_at: expiry(&state, now),
        max_members: state.config.limits.max_group_members,
        read_above: state.config.limits.group_fanout_read_above,
    };
    let done = state.store.create_group(&new).await?;
    let id = done.group;
    delivered(&state, done);
    let group = state.store.group(id, owner).await?;
    tracing::info!(group = %id, "group created");
    Ok((StatusCode::CREATED, Json(info(&state, group))))
}

/// The groups the calling account is a member of.
#[utoipa::path(get, path = "/v1/groups", tag = "groups",
    responses((status = 200, body = GroupList)),
    security(("hush_sig" = [])))]
pub async fn list(State(state): State<AppState>, auth: Authed) -> Result<Json<GroupList>, HttpError> {
    let groups = state.store.groups_of(auth.key().account).await?;
    let groups = groups
        .into_iter()
        .map(|g| GroupSummary { group_id: g.id, roster_version: g.roster_version, role: g.role })
        .collect();
    Ok(Json(GroupList { groups }))
}

/// A group as its members see it.
#[utoipa::path(get, path = "/v1/groups/{group_id}", tag = "groups",
    params(("group_id" = Uuid, Path)),
    responses((status = 200, body = GroupInfo),
              (status = 404, body = ApiError, description = "not_a_member (no such group, or not a member)")),
    security(("hush_sig" = [])))]
pub async fn get_group(
    State(state): State<AppState>,
    ApiPath(group_id): ApiPath<Uuid>,
    auth: Authed,
) -> Result<Json<GroupInfo>, HttpError> {
    let group = state.store.group(group_id, auth.key().account).await?;
    Ok(Json(info(&state, group)))
}

/// Changes the title, description, avatar or settings (admins and owners).
#[utoipa::path(patch, path = "/v1/groups/{group_id}", request_body = UpdateGroupRequest, tag = "groups",
    params(("group_id" = Uuid, Path)),
    responses((status = 200, body = RosterChangeResult),
              (status = 400, body = ApiError, description = "invalid_request (nothing to change)"),
              (status = 403, body = ApiError, description = "forbidden (members)"),
              (status = 404, body = ApiError, description = "not_a_member"),
              (status = 413, body = ApiError, description = "blob_too_large, body_too_large")),
    security(("hush_sig" = [])))]
pub async fn update(
    State(state): State<AppState>,
    ApiPath(group_id): ApiPath<Uuid>,
    auth: Authed,
) -> Result<Json<RosterChangeResult>, HttpError> {
    let req: UpdateGroupRequest = auth.json()?;
    check_blobs(req.title.as_ref(), req.description.as_ref(), req.avatar.as_ref())?;
    let settings = GroupSettings {
        title: req.title.map(|b| b.0),
        description: req.description.map(|b| b.0),
        avatar: req.avatar.map(|b| b.0),
        members_can_add: req.members_can_add,
    };
    if settings == GroupSettings::default() {
        return Err(HttpError::bad_request("invalid_request", "the update changes nothing"));
    }
    Ok(Json(change(&state, &auth, group_id, GroupOp::Update(settings)).await?))
}

/// Deletes the group (owners): every member device gets a `KIND_DELETED` roster change, then
/// the group has no members.
#[utoipa::path(delete, path = "/v1/groups/{group_id}", tag = "groups",
    params(("group_id" = Uuid, Path)),
    responses((status = 204),
              (status = 403, body = ApiError, description = "forbidden (admins, members)"),
              (status = 404, body = ApiError, description = "not_a_member")),
    security(("hush_sig" = [])))]
pub async fn delete_group(
    State(state): State<AppState>,
    ApiPath(group_id): ApiPath<Uuid>,
    auth: Authed,
) -> Result<StatusCode, HttpError> {
    change(&state, &auth, group_id, GroupOp::Delete).await?;
    tracing::info!(group = %group_id, "group deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Adds members (admins and owners; members when `members_can_add`).
#[utoipa::path(post, path = "/v1/groups/{group_id}/members", request_body = AddMembersRequest, tag = "groups",
    params(("group_id" = Uuid, Path)),
    responses((status = 200, body = RosterChangeResult),
              (status = 400, body = ApiError, description = "invalid_request (no accounts)"),
              (status = 403, body = ApiError, description = "forbidden"),
              (status = 404, body = ApiError, description = "not_a_member, unknown_account (the message names it)"),
              (status = 409, body = ApiError, description = "already_member, group_full")),
    security(("hush_sig" = [])))]
pub async fn add_members(
    State(state): State<AppState>,
    ApiPath(group_id): ApiPath<Uuid>,
    auth: Authed,
) -> Result<Json<RosterChangeResult>, HttpError> {
    let req: AddMembersRequest = auth.json()?;
    if req.members.is_empty() {
        return Err(HttpError::bad_request("invalid_request", "name at least one account to add"));
    }
    Ok(Json(change(&state, &auth, group_id, GroupOp::Add(req.members)).await?))
}

/// Removes a member (admins and owners; only owners remove owners), or leaves (the caller itself).
#[utoipa::path(delete, path = "/v1/groups/{group_id}/members/{account_id}", tag = "groups",
    params(("group_id" = Uuid, Path), ("account_id" = Uuid, Path)),
    responses((status = 200, body = RosterChangeResult),
              (status = 403, body = ApiError, description = "forbidden"),
              (status = 404, body = ApiError, description = "not_a_member, not_in_group"),
              (status = 409, body = ApiError, description = "last_owner")),
    security(("hush_sig" = [])))]
pub async fn remove_member(
    State(state): State<AppState>,
    ApiPath((group_id, account_id)): ApiPath<(Uuid, Uuid)>,
    auth: Authed,
) -> Result<Json<RosterChangeResult>, HttpError> {
    Ok(Json(change(&state, &auth, group_id, GroupOp::Remove(account_id)).await?))
}

/// Gives a member a role (owners).
#[utoipa::path(put, path = "/v1/groups/{group_id}/members/{account_id}/role", request_body = SetRoleRequest,
    tag = "groups",
    params(("group_id" = Uuid, Path), ("account_id" = Uuid, Path)),
    responses((status = 200, body = RosterChangeResult),
              (status = 403, body = ApiError, description = "forbidden (admins, members)"),
              (status = 404, body = ApiError, description = "not_a_member, not_in_group"),
              (status = 409, body = ApiError, description = "last_owner")),
    security(("hush_sig" = [])))]
pub async fn set_role(
    State(state): State<AppState>,
    ApiPath((group_id, account_id)): ApiPath<(Uuid, Uuid)>,
    auth: Authed,
) -> Result<Json<RosterChangeResult>, HttpError> {
    let req: SetRoleRequest = auth.json()?;
    Ok(Json(change(&state, &auth, group_id, GroupOp::SetRole(account_id, req.role)).await?))
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    use crate::http::ApiDoc;

    #[test]
    fn every_group_operation_is_in_the_openapi_document_with_its_statuses() {
        let doc = ApiDoc::openapi();
        let expected: [(&str, &str, &[&str]); 8] = [
            ("/v1/groups", "post", &["201", "400", "401", "404", "409", "413"]),
            ("/v1/groups", "get", &["200", "401"]),
            ("/v1/groups/{group_id}", "get", &["200", "400", "401", "404"]),
            ("/v1/groups/{group_id}", "patch", &["200", "400", "401", "403", "404", "413"]),
            ("/v1/groups/{group_id}", "delete", &["204", "400", "401", "403", "404"]),
            ("/v1/groups/{group_id}/members", "post", &["200", "400", "401", "403", "404", "409", "413"]),
            ("/v1/groups/{group_id}/members/{account_id}", "delete", &["200", "400", "401", "403", "404", "409"]),
            ("/v1/groups/{group_id}/members/{account_id}/role", "put", &["200", "400", "401", "403", "404", "409"]),
        ];
        for (path, method, statuses) in expected {
            let item = doc.paths.paths.get(path).unwrap_or_else(|| panic!("{path} is not documented"));
            let op = match method {
                "get" => &item.get,
                "post" => &item.post,
                "put" => &item.put,
                "patch" => &item.patch,
                _ => &item.delete,
            };
            let op = op.as_ref().unwrap_or_else(|| panic!("{method} {path} is not documented"));
            for status in statuses {
                assert!(op.responses.responses.contains_key(*status), "{method} {path} does not declare {status}");
            }
        }
    }
}
