//! Linking a new device (see docs/PROTOCOL.md, "Linking a device"): link tokens, the
//! provisioning relay, the new device's own registration, and renaming a device.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hush_wire::api::{AddDeviceResponse, ApiError, B64, LinkDeviceRequest, LinkToken, ProvisioningBody, RenameDevice};
use hush_wire::limits::{LINK_TOKEN_BYTES, MAX_DEVICE_NAME_CHARS, MAX_PROVISIONING_BODY};
use hush_wire::link::link_proof_input;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::auth::Authed;
use super::error::HttpError;
use super::extract::{ApiBody, ApiPath};
use super::limits::ClientIp;
use super::validate;
use crate::state::{AppState, now_ms};
use crate::store::{LinkDevice, LinkError, NewLinkToken, StoreError};

fn token_hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// A single-use token for linking one new device to the caller's account (primary device only).
#[utoipa::path(post, path = "/v1/devices/link-tokens", tag = "devices",
    responses((status = 201, body = LinkToken),
              (status = 403, body = ApiError, description = "forbidden: only the primary device links devices"),
              (status = 429, body = ApiError, description = "rate_limited (see Retry-After)")),
    security(("hush_sig" = [])))]
pub async fn link_token(
    State(state): State<AppState>,
    auth: Authed,
) -> Result<(StatusCode, Json<LinkToken>), HttpError> {
    let caller = auth.key();
    if caller.device_id != 1 {
        return Err(HttpError::new(StatusCode::FORBIDDEN, "forbidden", "only the primary device may link a device"));
    }
    state.abuse.link_token(caller.account)?;
    let mut token = [0u8; LINK_TOKEN_BYTES];
    rand::rng().fill_bytes(&mut token);
    let expires_at = now_ms() + u64::try_from(state.config.link_timeout.as_millis()).unwrap_or(u64::MAX);
    state
        .store
        .create_link_token(&NewLinkToken { hash: token_hash(&token), account: caller.account, expires_at })
        .await?;
    tracing::info!(account = %caller.account, "link token issued");
    Ok((StatusCode::CREATED, Json(LinkToken { token: B64(token.to_vec()), expires_at })))
}

fn unknown_channel() -> HttpError {
    HttpError::not_found(
        "unknown_channel",
        "no provisioning socket is waiting at that address (closed, expired or already used); \
         ask the new device for a fresh link code",
    )
}

/// Hands one message to the provisioning socket at `address`, on whichever node holds it.
#[utoipa::path(put, path = "/v1/provisioning/{address}", request_body = ProvisioningBody, tag = "devices",
    params(("address" = String, Path, description = "from the new device's ProvisioningAddress", pattern = "^[A-Za-z0-9_-]{22}$")),
    responses((status = 204, description = "handed to the socket"),
              (status = 404, body = ApiError, description = "unknown_channel: no open socket at that address (closed, expired, already used)"),
              (status = 413, body = ApiError, description = "provisioning_body_too_large: body over 64 KiB decoded; body_too_large")),
    security(("hush_sig" = [])))]
pub async fn provision(
    State(state): State<AppState>,
    ApiPath(address): ApiPath<String>,
    auth: Authed,
) -> Result<StatusCode, HttpError> {
    let req: ProvisioningBody = auth.json()?;
    if req.body.0.len() > MAX_PROVISIONING_BODY {
        return Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "provisioning_body_too_large",
            format!("a provisioning body is at most {MAX_PROVISIONING_BODY} bytes (decoded)"),
        ));
    }
    if !crate::ws::provisioning::is_address(&address) {
        return Err(unknown_channel());
    }
    let Some(node) = state.store.claim_channel(&address, now_ms()).await? else { return Err(unknown_channel()) };
    let body = bytes::Bytes::from(req.body.0);
    let delivered = if node == state.config.node_id {
        state.hub.provisioning.deliver(&address, body)
    } else if let Some(cluster) = &state.cluster {
        match cluster.provision(&node, &address, &body).await {
            Ok(delivered) => delivered,
            Err(e) => {
                tracing::warn!(error = %e, "relaying a provisioning message failed");
                return Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the cluster bus failed; retry later",
                ));
            }
        }
    } else {
        false
    };
    if !delivered {
        return Err(unknown_channel());
    }
    tracing::info!(account = %auth.key().account, "provisioning message relayed");
    Ok(StatusCode::NO_CONTENT)
}

fn link_refused(e: LinkError) -> HttpError {
    match e {
        LinkError::UnknownToken => unknown_token(),
        LinkError::ExpiredToken => HttpError::unauthorized(
            "link_token_expired",
            "the link token has expired; ask the primary device for a new link",
        ),
        LinkError::UsedToken => HttpError::new(
            StatusCode::CONFLICT,
            "link_token_used",
            "the link token has already added a device; ask the primary device for a new link",
        ),
        LinkError::Store(e) => e.into(),
    }
}

fn unknown_token() -> HttpError {
    HttpError::unauthorized("link_token_unknown", "no such link token for that account")
}

/// A new device joins an account with a link token (no `Hush-Sig`: the token and the identity
/// key's proof authenticate). The token is used up only when the device is added.
#[utoipa::path(post, path = "/v1/devices/link", request_body = LinkDeviceRequest, tag = "devices",
    responses((status = 201, body = AddDeviceResponse),
              (status = 400, body = ApiError, description = "bad_signature (the proof or a prekey signature), invalid_key, invalid_registration_id, invalid_request"),
              (status = 401, body = ApiError, description = "link_token_unknown, link_token_expired"),
              (status = 409, body = ApiError, description = "link_token_used, too_many_devices"),
              (status = 413, body = ApiError, description = "too_many_prekeys, body_too_large"),
              (status = 429, body = ApiError, description = "rate_limited (see Retry-After)")))]
pub async fn link_device(
    State(state): State<AppState>,
    ClientIp(source): ClientIp,
    ApiBody(body): ApiBody,
) -> Result<(StatusCode, Json<AddDeviceResponse>), HttpError> {
    let req: LinkDeviceRequest = super::extract::json_body(&body)?;
    state.abuse.link(source)?;
    if req.token.0.len() != LINK_TOKEN_BYTES {
        return Err(unknown_token());
    }
    let account = state.store.account(req.account_id).await?.ok_or_else(unknown_token)?;
    let identity = validate::identity(&account.identity_key)?;
    let input = link_proof_input(account.id, &req.token.0, &req.device.auth_key.0, req.device.registration_id);
    if !identity.public_key().verify_signature(&input, &req.proof.0) {
        return Err(HttpError::bad_request(
            "bad_signature",
            "the proof does not verify with the account identity key over this account, token and device \
             (see docs/PROTOCOL.md, Linking a device)",
        ));
    }
    let now = now_ms();
    let device = validate::new_device(&identity, &req.device, now)?;
    let link = LinkDevice {
        account: account.id,
        token_hash: token_hash(&req.token.0),
        device: &device,
        max_devices: state.config.limits.max_devices,
        now_ms: now,
    };
    let device_id = state.store.link_device(&link).await.map_err(link_refused)?;
    tracing::info!(account = %account.id, device_id, "device linked");
    Ok((StatusCode::CREATED, Json(AddDeviceResponse { device_id })))
}

/// Renames the calling device (or removes its name).
#[utoipa::path(patch, path = "/v1/devices/self", request_body = RenameDevice, tag = "devices",
    responses((status = 204),
              (status = 400, body = ApiError, description = "invalid_request: a name over 64 characters")),
    security(("hush_sig" = [])))]
pub async fn rename(State(state): State<AppState>, auth: Authed) -> Result<StatusCode, HttpError> {
    let req: RenameDevice = auth.json()?;
    if req.name.as_ref().is_some_and(|n| n.chars().count() > MAX_DEVICE_NAME_CHARS) {
        return Err(HttpError::bad_request(
            "invalid_request",
            format!("a device name is at most {MAX_DEVICE_NAME_CHARS} characters"),
        ));
    }
    if !state.store.rename_device(auth.key(), req.name.as_deref()).await? {
        return Err(StoreError::UnknownDevice.into());
    }
    Ok(StatusCode::NO_CONTENT)
}
