//! Accounts and devices: register, look up, list, add, remove.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hush_wire::api::{
    AccountInfo, AddDeviceRequest, AddDeviceResponse, ApiError, B64, DeviceInfo, DeviceList, RegisterRequest,
    RegisterResponse,
};
use uuid::Uuid;

use super::auth::Authed;
use super::error::HttpError;
use super::validate;
use crate::state::{AppState, now_ms};
use crate::store::{Account, DeviceKey, NewAccount};

/// Creates an account with its primary device (device 1).
#[utoipa::path(post, path = "/v1/accounts", request_body = RegisterRequest, tag = "accounts",
    responses((status = 201, body = RegisterResponse),
              (status = 400, body = ApiError, description = "invalid_username, invalid_key, bad_signature, invalid_registration_id, invalid_request"),
              (status = 409, body = ApiError, description = "username_taken"),
              (status = 413, body = ApiError, description = "too_many_prekeys")))]
pub async fn register(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<RegisterResponse>), HttpError> {
    let req: RegisterRequest = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request("invalid_request", format!("request body is not valid: {e}")))?;
    let username = validate::username(&req.username)?;
    let identity = validate::identity(&req.identity_key.0)?;
    let device = validate::new_device(&identity, &req.device, now_ms())?;
    let account = NewAccount { id: Uuid::new_v4(), username, identity_key: req.identity_key.0, device };
    state.store.create_account(&account).await?;
    tracing::info!(account = %account.id, "account registered");
    Ok((StatusCode::CREATED, Json(RegisterResponse { account_id: account.id, device_id: 1 })))
}

fn info(account: Account) -> AccountInfo {
    AccountInfo { account_id: account.id, username: account.username, identity_key: B64(account.identity_key) }
}

/// Finds an account by username.
#[utoipa::path(get, path = "/v1/accounts/username/{username}", tag = "accounts",
    params(("username" = String, Path, description = "case-insensitive")),
    responses((status = 200, body = AccountInfo), (status = 404, body = ApiError, description = "unknown_account")),
    security(("hush_sig" = [])))]
pub async fn by_username(
    State(state): State<AppState>,
    Path(username): Path<String>,
    _auth: Authed,
) -> Result<Json<AccountInfo>, HttpError> {
    let name = username.to_ascii_lowercase();
    let account = state.store.account_by_username(&name).await?;
    account
        .map(|a| Json(info(a)))
        .ok_or_else(|| HttpError::not_found("unknown_account", "no account has that username"))
}

/// Gets an account by id.
#[utoipa::path(get, path = "/v1/accounts/{account_id}", tag = "accounts",
    params(("account_id" = Uuid, Path)),
    responses((status = 200, body = AccountInfo), (status = 404, body = ApiError, description = "unknown_account")),
    security(("hush_sig" = [])))]
pub async fn by_id(
    State(state): State<AppState>,
    Path(account_id): Path<Uuid>,
    _auth: Authed,
) -> Result<Json<AccountInfo>, HttpError> {
    let account = state.store.account(account_id).await?;
    account.map(|a| Json(info(a))).ok_or_else(|| HttpError::not_found("unknown_account", "no such account"))
}

/// Lists an account's devices.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/devices", tag = "accounts",
    params(("account_id" = Uuid, Path)),
    responses((status = 200, body = DeviceList), (status = 404, body = ApiError, description = "unknown_account")),
    security(("hush_sig" = [])))]
pub async fn devices(
    State(state): State<AppState>,
    Path(account_id): Path<Uuid>,
    _auth: Authed,
) -> Result<Json<DeviceList>, HttpError> {
    let devices = state.store.devices(account_id).await?;
    if devices.is_empty() {
        return Err(HttpError::not_found("unknown_account", "no such account"));
    }
    let devices = devices
        .into_iter()
        .map(|d| DeviceInfo {
            device_id: d.key.device_id,
            registration_id: d.registration_id,
            name: d.name,
            created_at: d.created_at,
            last_seen: d.last_seen,
        })
        .collect();
    Ok(Json(DeviceList { devices }))
}

/// Adds a device to the caller's account (the caller vouches for it).
#[utoipa::path(post, path = "/v1/devices", request_body = AddDeviceRequest, tag = "devices",
    responses((status = 201, body = AddDeviceResponse),
              (status = 400, body = ApiError, description = "invalid_key, bad_signature, invalid_registration_id"),
              (status = 409, body = ApiError, description = "too_many_devices")),
    security(("hush_sig" = [])))]
pub async fn add_device(
    State(state): State<AppState>,
    auth: Authed,
) -> Result<(StatusCode, Json<AddDeviceResponse>), HttpError> {
    let req: AddDeviceRequest = auth.json()?;
    let account = state.store.account(auth.key().account).await?.ok_or(crate::store::StoreError::UnknownAccount)?;
    let identity = validate::identity(&account.identity_key)?;
    let device = validate::new_device(&identity, &req.device, now_ms())?;
    let device_id = state.store.add_device(account.id, &device, state.config.limits.max_devices).await?;
    tracing::info!(account = %account.id, device_id, "device added");
    Ok((StatusCode::CREATED, Json(AddDeviceResponse { device_id })))
}

/// Removes a device: itself, or (from the primary device) any other device of the account.
#[utoipa::path(delete, path = "/v1/devices/{device_id}", tag = "devices",
    params(("device_id" = u32, Path)),
    responses((status = 204),
              (status = 403, body = ApiError, description = "forbidden: only the primary device removes others; the primary cannot be removed"),
              (status = 404, body = ApiError, description = "unknown_device")),
    security(("hush_sig" = [])))]
pub async fn remove_device(
    State(state): State<AppState>,
    Path(device_id): Path<u32>,
    auth: Authed,
) -> Result<StatusCode, HttpError> {
    let caller = auth.key();
    if device_id == 1 {
        return Err(HttpError::new(StatusCode::FORBIDDEN, "forbidden", "the primary device cannot be removed"));
    }
    if caller.device_id != 1 && caller.device_id != device_id {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the primary device may remove another device",
        ));
    }
    let target = DeviceKey { account: caller.account, device_id };
    if !state.store.remove_device(target).await? {
        return Err(HttpError::not_found("unknown_device", "no such device"));
    }
    state.hub.remove_device(target);
    if let Some(cluster) = &state.cluster {
        cluster.removed(target);
    }
    tracing::info!(account = %caller.account, device_id, "device removed");
    Ok(StatusCode::NO_CONTENT)
}
