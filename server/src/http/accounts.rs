//! Accounts and devices: register, look up, list, add, remove.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hush_keys::registration::{RegistrationSigningInput, verify_registration};
use hush_wire::api::{
    AccountInfo, AddDeviceRequest, AddDeviceResponse, ApiError, B64, DeviceInfo, DeviceList, RegisterRequest,
    RegisterResponse, RegistrationChallenge,
};
use hush_wire::limits::REGISTRATION_CHALLENGE_SECS;
use libsignal_protocol::IdentityKey;
use uuid::Uuid;

use super::auth::Authed;
use super::error::HttpError;
use super::extract::{ApiBody, ApiPath};
use super::limits::ClientIp;
use super::validate;
use crate::state::{AppState, now_ms};
use crate::store::{Account, DeviceKey, NewAccount};

/// How far in the future a challenge's server time may be (another node's clock may run ahead).
const CHALLENGE_CLOCK_SLACK_MS: u64 = 5_000;

/// A challenge to sign for a registration (valid 5 minutes, on any node of the cluster).
#[utoipa::path(post, path = "/v1/accounts/challenge", tag = "accounts",
    responses((status = 200, body = RegistrationChallenge),
              (status = 429, body = ApiError, description = "rate_limited (see Retry-After)")))]
pub async fn challenge(
    State(state): State<AppState>,
    ClientIp(source): ClientIp,
) -> Result<Json<RegistrationChallenge>, HttpError> {
    state.abuse.lookup(source)?;
    let server_time = now_ms();
    let nonce = state.keys.challenge_key().issue(server_time, &mut rand::rng());
    Ok(Json(RegistrationChallenge {
        nonce: B64(nonce.to_vec()),
        server_time,
        expires_at: server_time + REGISTRATION_CHALLENGE_SECS * 1000,
    }))
}

/// Checks that the registration answers a fresh challenge of ours (an HMAC and a clock
/// comparison: cheap, so not charged to the registration limit).
fn check_challenge(state: &AppState, req: &RegisterRequest) -> Result<(), HttpError> {
    let proof = &req.proof;
    if !state.keys.challenge_key().check(&proof.nonce.0, proof.server_time) {
        return Err(HttpError::bad_request(
            "registration_challenge_invalid",
            "the proof's nonce and server_time are not a challenge this server issued; \
             fetch one from POST /v1/accounts/challenge and copy both unchanged",
        ));
    }
    let now = now_ms();
    let fresh = proof.server_time <= now + CHALLENGE_CLOCK_SLACK_MS
        && now.saturating_sub(proof.server_time) <= REGISTRATION_CHALLENGE_SECS * 1000;
    if !fresh {
        return Err(HttpError::bad_request(
            "registration_challenge_expired",
            "the registration challenge has expired (they last 5 minutes); fetch a new one and sign again",
        ));
    }
    Ok(())
}

/// Checks that the registration was signed, over its challenge, by the identity key it registers.
fn check_signature(req: &RegisterRequest, username: &str, identity: &IdentityKey) -> Result<(), HttpError> {
    let proof = &req.proof;
    let input = RegistrationSigningInput {
        username,
        server_time_ms: proof.server_time,
        nonce: &proof.nonce.0,
        auth_key: &req.device.auth_key.0,
        registration_id: req.device.registration_id,
    };
    verify_registration(identity, &input, &proof.signature.0).map_err(|_| {
        HttpError::bad_request(
            "registration_signature_invalid",
            "the proof's signature does not verify with identity_key over this username, challenge and \
             device: sign with the identity key being registered (see docs/PROTOCOL.md, Registration)",
        )
    })
}

/// Creates an account with its primary device (device 1). The body must carry a proof: the
/// identity key's signature over a challenge from `POST /v1/accounts/challenge`.
///
/// The per-address registration limit charges every attempt whose signature is checked
/// (a bad signature included: that is what a guessing client sends, and verifying it is the
/// server's work). Requests refused before that are not charged, so a shared address does not
/// lose registrations to mistakes: a malformed body, username or key, a challenge that is not
/// ours or has expired (all checked without the database), and a username that is taken
/// (charged to the lookup limit instead: it tells what a username lookup tells).
#[utoipa::path(post, path = "/v1/accounts", request_body = RegisterRequest, tag = "accounts",
    responses((status = 201, body = RegisterResponse),
              (status = 400, body = ApiError, description = "invalid_username, invalid_key, bad_signature, invalid_registration_id, invalid_request, registration_challenge_invalid, registration_challenge_expired, registration_signature_invalid"),
              (status = 409, body = ApiError, description = "username_taken"),
              (status = 413, body = ApiError, description = "too_many_prekeys, body_too_large"),
              (status = 429, body = ApiError, description = "rate_limited (see Retry-After)")))]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(source): ClientIp,
    ApiBody(body): ApiBody,
) -> Result<(StatusCode, Json<RegisterResponse>), HttpError> {
    let req: RegisterRequest = super::extract::json_body(&body)?;
    let username = validate::username(&req.username)?;
    let identity = validate::identity(&req.identity_key.0)?;
    check_challenge(&state, &req)?;
    if state.store.account_by_username(&username).await?.is_some() {
        state.abuse.lookup(source)?;
        return Err(crate::store::StoreError::UsernameTaken.into());
    }
    state.abuse.register(source)?;
    check_signature(&req, &username, &identity)?;
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
    params(("username" = String, Path, description = "case-insensitive", pattern = "^[A-Za-z0-9_.]{3,32}$")),
    responses((status = 200, body = AccountInfo), (status = 404, body = ApiError, description = "unknown_account"),
              (status = 429, body = ApiError, description = "rate_limited (see Retry-After)")),
    security(("hush_sig" = [])))]
pub async fn by_username(
    State(state): State<AppState>,
    ClientIp(source): ClientIp,
    ApiPath(username): ApiPath<String>,
    _auth: Authed,
) -> Result<Json<AccountInfo>, HttpError> {
    state.abuse.lookup(source)?;
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
    ApiPath(account_id): ApiPath<Uuid>,
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
    ApiPath(account_id): ApiPath<Uuid>,
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
    params(("device_id" = u32, Path, minimum = 1, maximum = 127)),
    responses((status = 204),
              (status = 403, body = ApiError, description = "forbidden: only the primary device removes others; the primary cannot be removed"),
              (status = 404, body = ApiError, description = "unknown_device")),
    security(("hush_sig" = [])))]
pub async fn remove_device(
    State(state): State<AppState>,
    ApiPath(device_id): ApiPath<u32>,
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
