//! Server facts, health, metrics and sender certificates.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use hush_wire::api::{ApiError, Health, SenderCertificateResponse, ServerInfo};

use super::auth::Authed;
use super::error::HttpError;
use crate::state::{AppState, now_ms};
use crate::store::StoreError;

/// Liveness and database health.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = ApiError, description = "unhealthy")))]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, HttpError> {
    state
        .store
        .ping()
        .await
        .map_err(|_| HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", "the database does not answer"))?;
    Ok(Json(Health { status: "ok".into() }))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// The trust root clients pin, and the server version.
#[utoipa::path(get, path = "/v1/server", tag = "accounts", responses((status = 200, body = ServerInfo)))]
pub async fn server_info(State(state): State<AppState>) -> Json<ServerInfo> {
    Json(ServerInfo { trust_root: state.keys.trust_root_public().into(), version: env!("CARGO_PKG_VERSION").into() })
}

/// A sender certificate for the calling device.
#[utoipa::path(get, path = "/v1/certificate", tag = "keys",
    responses((status = 200, body = SenderCertificateResponse)), security(("hush_sig" = [])))]
pub async fn certificate(
    State(state): State<AppState>,
    auth: Authed,
) -> Result<Json<SenderCertificateResponse>, HttpError> {
    let key = auth.key();
    let account = state.store.account(key.account).await?.ok_or(StoreError::UnknownAccount)?;
    let lifetime: Duration = state.config.certificate_lifetime;
    let expires_at = now_ms() + lifetime.as_millis() as u64;
    let cert = state
        .keys
        .issue_sender_certificate(key.account, key.device_id, &account.identity_key, expires_at, &mut rand::rng())
        .map_err(|e| {
            tracing::error!(error = %e, "issuing a sender certificate failed");
            HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "could not issue a certificate; retry")
        })?;
    Ok(Json(SenderCertificateResponse { certificate: cert.into(), expires_at }))
}
