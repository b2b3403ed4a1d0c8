//! Extractors whose refusals are JSON [`HttpError`]s like every other answer (axum's own
//! answer `text/plain`): path parameters and request bodies, and the JSON body parser.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::auth::MAX_BODY_BYTES;
use super::error::HttpError;

/// A path parameter; a malformed one is `400 invalid_request`.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(e) => Err(HttpError::bad_request("invalid_request", format!("bad path parameter: {}", e.body_text()))),
        }
    }
}

/// The raw request body; over [`MAX_BODY_BYTES`] it is `413 body_too_large`.
pub struct ApiBody(pub Bytes);

/// Reads a request body with JSON refusals.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, HttpError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is over {MAX_BODY_BYTES} bytes"),
            )
        } else {
            HttpError::bad_request("invalid_request", format!("cannot read the body: {}", e.body_text()))
        }
    })
}

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        read_body(req, state).await.map(ApiBody)
    }
}

/// Parses a JSON request body. Every body the API takes is an object, but serde also reads a
/// struct from an array of its fields in order (`[null, null]` was a valid prekey upload), so
/// anything but an object is refused first.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    let first = body.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(HttpError::bad_request("invalid_request", "the request body must be a JSON object"));
    }
    serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request("invalid_request", format!("request body is not valid: {e}")))
}

/// Any path that is not an endpoint.
pub async fn not_found() -> HttpError {
    HttpError::not_found("not_found", "no such endpoint; the API is described at /openapi.json")
}

/// An endpoint asked with a method it does not have.
pub async fn method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see /openapi.json",
    )
}
