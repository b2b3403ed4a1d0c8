//! Prekeys: upload, count, and fetch bundles (one-time keys handed out once).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hush_wire::api::{ApiError, DeviceBundle, PreKey, PreKeyBundles, PreKeyCount, PreKeyUpload, SignedPreKey};
use hush_wire::limits::PREKEY_REFILL_THRESHOLD;
use uuid::Uuid;

use super::auth::Authed;
use super::error::HttpError;
use super::extract::ApiPath;
use super::validate;
use crate::state::AppState;
use crate::store::{DeviceKey, SignedKey, StoreError};

/// Adds one-time prekeys and optionally replaces the signed ones.
#[utoipa::path(put, path = "/v1/keys", request_body = PreKeyUpload, tag = "keys",
    responses((status = 204),
              (status = 400, body = ApiError, description = "invalid_key, bad_signature"),
              (status = 413, body = ApiError, description = "too_many_prekeys")),
    security(("hush_sig" = [])))]
pub async fn upload(State(state): State<AppState>, auth: Authed) -> Result<StatusCode, HttpError> {
    let up: PreKeyUpload = auth.json()?;
    let account = state.store.account(auth.key().account).await?.ok_or(StoreError::UnknownAccount)?;
    let identity = validate::identity(&account.identity_key)?;
    let record = validate::upload(&identity, &up)?;
    state.store.upload_prekeys(auth.key(), &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One-time prekeys left for the calling device.
#[utoipa::path(get, path = "/v1/keys/count", tag = "keys",
    responses((status = 200, body = PreKeyCount)), security(("hush_sig" = [])))]
pub async fn count(State(state): State<AppState>, auth: Authed) -> Result<Json<PreKeyCount>, HttpError> {
    let c = state.store.prekey_counts(auth.key()).await?;
    Ok(Json(PreKeyCount { ec: c.ec, kyber: c.kyber, refill_below: PREKEY_REFILL_THRESHOLD }))
}

fn signed(k: SignedKey) -> SignedPreKey {
    SignedPreKey { id: k.id, public_key: k.public_key.into(), signature: k.signature.into() }
}

/// Bundles for one device (`device` = its id) or every device (`*`) of an account.
///
/// Abuse limits: requests per calling account (429 beyond it), and one-time keys per
/// (calling account, target device): beyond that budget a bundle carries the signed prekey
/// and the last-resort Kyber key only (`kyber_last_resort: true`, no `prekey`).
#[utoipa::path(get, path = "/v1/keys/{account_id}/{device}", tag = "keys",
    params(("account_id" = Uuid, Path),
           ("device" = String, Path, description = "a device id, or * for all", pattern = r"^(\*|[0-9]{1,9})$")),
    responses((status = 200, body = PreKeyBundles),
              (status = 400, body = ApiError, description = "invalid_request"),
              (status = 404, body = ApiError, description = "unknown_account, unknown_device"),
              (status = 429, body = ApiError, description = "rate_limited (see Retry-After)")),
    security(("hush_sig" = [])))]
pub async fn bundles(
    State(state): State<AppState>,
    ApiPath((account_id, device)): ApiPath<(Uuid, String)>,
    auth: Authed,
) -> Result<Json<PreKeyBundles>, HttpError> {
    let requester = auth.key().account;
    state.abuse.bundles(requester)?;
    let bad = || HttpError::bad_request("invalid_request", "device must be a device id (1 to 9 digits) or *");
    let device_id = match device.as_str() {
        "*" => None,
        // As the document's pattern says: plain digits (`u32::from_str` would also take `+7`).
        id if (1..=9).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) => {
            Some(id.parse::<u32>().map_err(|_| bad())?)
        }
        _ => return Err(bad()),
    };
    let account = state.store.account(account_id).await?.ok_or(StoreError::UnknownAccount)?;
    let abuse = &state.abuse;
    let one_time = |device_id: u32| abuse.one_time_keys(requester, DeviceKey { account: account_id, device_id });
    let bundles = state.store.take_bundles(account_id, device_id, &one_time).await?;
    let devices = bundles
        .into_iter()
        .map(|b| DeviceBundle {
            device_id: b.device_id,
            registration_id: b.registration_id,
            signed_prekey: signed(b.signed_prekey),
            kyber_prekey: signed(b.kyber_prekey),
            kyber_last_resort: b.kyber_last_resort,
            prekey: b.prekey.map(|k| PreKey { id: k.id, public_key: k.public_key.into() }),
        })
        .collect();
    Ok(Json(PreKeyBundles { account_id, identity_key: account.identity_key.into(), devices }))
}
