//! REST request authentication: the `Authorization: Hush-Sig ...` header
//! (see docs/PROTOCOL.md), verified against the device's ed25519 auth key,
//! within a ±5 minute clock window, each nonce accepted once.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use hush_keys::auth::{AuthHeader, DeviceAuthKey, RestSigningInput, body_sha256};
use hush_wire::limits::REST_AUTH_SKEW_SECS;

use super::error::HttpError;
use crate::state::{AppState, now_ms};
use crate::store::{Device, DeviceKey};

/// Largest REST body accepted (a full prekey upload with 100 Kyber keys is ~230 KB of JSON).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// An authenticated request: the calling device and the raw body.
pub struct Authed {
    /// The device that signed the request.
    pub device: Device,
    /// The body, as signed.
    pub body: Bytes,
}

impl Authed {
    /// The calling device's key.
    pub fn key(&self) -> DeviceKey {
        self.device.key
    }

    /// Parses the body as a JSON object.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        super::extract::json_body(&self.body)
    }
}

impl FromRequest<AppState> for Authed {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, HttpError> {
        let header = req
            .headers()
            .get(hush_wire::api::AUTH_HEADER)
            .ok_or_else(|| HttpError::unauthorized("auth_missing", "this endpoint needs an Authorization header"))?
            .to_str()
            .map_err(|_| HttpError::unauthorized("auth_malformed", "the Authorization header is not ASCII"))?;
        let header = AuthHeader::parse(header).map_err(|e| HttpError::unauthorized("auth_malformed", e.to_string()))?;
        let method = req.method().as_str().to_owned();
        let path_and_query = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
        let body = super::extract::read_body(req, state).await?;
        let device = verify(state, &header, &method, &path_and_query, &body).await?;
        Ok(Authed { device, body })
    }
}

async fn verify(
    state: &AppState,
    header: &AuthHeader,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<Device, HttpError> {
    let now = now_ms();
    let skew_ms = REST_AUTH_SKEW_SECS * 1000;
    if header.timestamp_ms.abs_diff(now) > skew_ms {
        return Err(HttpError::unauthorized(
            "auth_expired",
            "the request timestamp is more than 5 minutes from the server clock; check the clock and sign again",
        ));
    }
    let key = DeviceKey { account: header.account, device_id: header.device_id };
    let failed = || HttpError::unauthorized("auth_failed", "unknown device or bad signature");
    let device = state.store.device(key).await?.ok_or_else(failed)?;
    let auth_key = DeviceAuthKey::from_bytes(&device.auth_key).map_err(|_| failed())?;
    let input = RestSigningInput {
        method,
        path_and_query,
        timestamp_ms: header.timestamp_ms,
        nonce: header.nonce,
        body_sha256: body_sha256(body),
    };
    auth_key.verify_rest(&input, &header.signature).map_err(|_| failed())?;
    let replayed = || HttpError::unauthorized("auth_replayed", "this request was already accepted once; sign it again");
    let valid_until = header.timestamp_ms + skew_ms;
    if !state.replay.insert(key, header.nonce, valid_until) {
        return Err(replayed());
    }
    // Clustered, the nonce must also be new to every other node.
    if let Some(cluster) = &state.cluster {
        match cluster.claim_nonce(key, header.nonce, valid_until.saturating_sub(now)).await {
            Ok(true) => {}
            Ok(false) => return Err(replayed()),
            // Redis stays off the path that must work: with it down, each node still refuses
            // replays it saw itself.
            Err(e) => tracing::warn!(error = %e, "cannot record a REST nonce in Redis; replay check is per node"),
        }
    }
    Ok(device)
}
