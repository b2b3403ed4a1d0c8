//! History archives for a newly linked device (see docs/PROTOCOL.md, "Linking a device"): the
//! primary device uploads client-encrypted bytes in chunks, completes the archive, and any
//! device of the account downloads it; deleted on request or at expiry. The bytes are stored
//! as given and never logged.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hush_wire::api::{ApiError, ArchiveChunk, CompleteArchive, LinkArchive};
use hush_wire::limits::{LINK_ARCHIVE_CHUNK_BYTES, MAX_LINK_ARCHIVE_CHUNKS};
use rand::RngCore;

use super::auth::Authed;
use super::error::HttpError;
use super::extract::ApiPath;
use crate::state::{AppState, now_ms};
use crate::store::{ArchiveError, ArchiveKey, NewArchive};

fn unknown_archive() -> HttpError {
    HttpError::not_found(
        "unknown_archive",
        "no such archive for this account (or it expired, or it is not complete yet)",
    )
}

fn refused(e: ArchiveError) -> HttpError {
    match e {
        ArchiveError::Unknown => unknown_archive(),
        ArchiveError::TooLarge => HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "archive_too_large",
            "the archive's chunks would exceed its max_bytes",
        ),
        ArchiveError::Complete => {
            HttpError::new(StatusCode::CONFLICT, "archive_complete", "the archive is complete; create a new one")
        }
        ArchiveError::Incomplete => HttpError::new(
            StatusCode::CONFLICT,
            "archive_incomplete",
            "the archive does not hold exactly the chunks 0..chunks; upload the missing ones",
        ),
        ArchiveError::Store(e) => e.into(),
    }
}

/// The archive `id` of the caller's account; a malformed id is an unknown archive.
fn key(auth: &Authed, id: &str) -> Result<ArchiveKey, HttpError> {
    let bytes = URL_SAFE_NO_PAD.decode(id).map_err(|_| unknown_archive())?;
    let id = <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| unknown_archive())?;
    Ok(ArchiveKey { account: auth.key().account, id })
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Creates an empty history archive (primary device only).
#[utoipa::path(post, path = "/v1/link-archives", tag = "devices",
    responses((status = 201, body = LinkArchive),
              (status = 403, body = ApiError, description = "forbidden: only the primary device uploads an archive"),
              (status = 429, body = ApiError, description = "rate_limited (see Retry-After)")),
    security(("hush_sig" = [])))]
pub async fn create(State(state): State<AppState>, auth: Authed) -> Result<(StatusCode, Json<LinkArchive>), HttpError> {
    let caller = auth.key();
    if caller.device_id != 1 {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the primary device may upload an archive",
        ));
    }
    state.abuse.link_token(caller.account)?;
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let expires_at = now_ms() + millis(state.config.link_archive_lifetime);
    let max_bytes = state.config.max_link_archive_bytes;
    state.store.create_archive(&NewArchive { id, account: caller.account, max_bytes, expires_at }).await?;
    tracing::info!(account = %caller.account, "link archive created");
    let archive = LinkArchive {
        archive_id: URL_SAFE_NO_PAD.encode(id),
        chunk_bytes: LINK_ARCHIVE_CHUNK_BYTES,
        max_bytes,
        expires_at,
    };
    Ok((StatusCode::CREATED, Json(archive)))
}

/// Uploads (or replaces) one chunk of an incomplete archive of the caller's account: the raw
/// bytes, at most `chunk_bytes`.
#[utoipa::path(put, path = "/v1/link-archives/{archive_id}/chunks/{index}", tag = "devices",
    request_body(content = ArchiveChunk, content_type = "application/octet-stream"),
    params(("archive_id" = String, Path, pattern = "^[A-Za-z0-9_-]{22}$"), ("index" = u32, Path, maximum = 4095)),
    responses((status = 204),
              (status = 400, body = ApiError, description = "invalid_request: an empty chunk, or an index of 4096 or more"),
              (status = 404, body = ApiError, description = "unknown_archive"),
              (status = 409, body = ApiError, description = "archive_complete"),
              (status = 413, body = ApiError, description = "archive_too_large: the chunks would exceed max_bytes; chunk_too_large, body_too_large: a chunk over chunk_bytes")),
    security(("hush_sig" = [])))]
pub async fn put_chunk(
    State(state): State<AppState>,
    ApiPath((id, index)): ApiPath<(String, u32)>,
    auth: Authed,
) -> Result<StatusCode, HttpError> {
    let key = key(&auth, &id)?;
    if auth.body.len() > LINK_ARCHIVE_CHUNK_BYTES as usize {
        return Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "chunk_too_large",
            format!("a chunk is at most {LINK_ARCHIVE_CHUNK_BYTES} bytes"),
        ));
    }
    if auth.body.is_empty() {
        return Err(HttpError::bad_request("invalid_request", "a chunk holds at least one byte"));
    }
    if index >= MAX_LINK_ARCHIVE_CHUNKS {
        return Err(HttpError::bad_request(
            "invalid_request",
            format!("a chunk index is below {MAX_LINK_ARCHIVE_CHUNKS}"),
        ));
    }
    state.store.put_archive_chunk(key, index, &auth.body, now_ms()).await.map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Completes the upload: the archive holds exactly chunks `0..chunks` and can be downloaded.
#[utoipa::path(post, path = "/v1/link-archives/{archive_id}/complete", request_body = CompleteArchive, tag = "devices",
    params(("archive_id" = String, Path, pattern = "^[A-Za-z0-9_-]{22}$")),
    responses((status = 204),
              (status = 404, body = ApiError, description = "unknown_archive"),
              (status = 409, body = ApiError, description = "archive_incomplete: not exactly the chunks 0..chunks were uploaded; archive_complete")),
    security(("hush_sig" = [])))]
pub async fn complete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    auth: Authed,
) -> Result<StatusCode, HttpError> {
    let key = key(&auth, &id)?;
    let req: CompleteArchive = auth.json()?;
    state.store.complete_archive(key, req.chunks, now_ms()).await.map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Downloads one chunk of a complete archive of the caller's account (any of its devices).
#[utoipa::path(get, path = "/v1/link-archives/{archive_id}/chunks/{index}", tag = "devices",
    params(("archive_id" = String, Path, pattern = "^[A-Za-z0-9_-]{22}$"), ("index" = u32, Path, maximum = 4095)),
    responses((status = 200, body = ArchiveChunk, content_type = "application/octet-stream"),
              (status = 404, body = ApiError, description = "unknown_archive: no such archive, not complete, expired, or no such chunk")),
    security(("hush_sig" = [])))]
pub async fn get_chunk(
    State(state): State<AppState>,
    ApiPath((id, index)): ApiPath<(String, u32)>,
    auth: Authed,
) -> Result<impl IntoResponse, HttpError> {
    let key = key(&auth, &id)?;
    if index >= MAX_LINK_ARCHIVE_CHUNKS {
        return Err(unknown_archive());
    }
    let bytes = state.store.archive_chunk(key, index, now_ms()).await?.ok_or_else(unknown_archive)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}

/// Deletes an archive of the caller's account with its chunks.
#[utoipa::path(delete, path = "/v1/link-archives/{archive_id}", tag = "devices",
    params(("archive_id" = String, Path, pattern = "^[A-Za-z0-9_-]{22}$")),
    responses((status = 204), (status = 404, body = ApiError, description = "unknown_archive")),
    security(("hush_sig" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    auth: Authed,
) -> Result<StatusCode, HttpError> {
    let key = key(&auth, &id)?;
    if !state.store.delete_archive(key).await? {
        return Err(unknown_archive());
    }
    Ok(StatusCode::NO_CONTENT)
}
