//! REST errors: an HTTP status plus a stable machine-readable code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hush_wire::api::ApiError;

use crate::store::StoreError;

/// An error answer.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HttpError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError { status, code, message: message.into() }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 with a code.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 404 with a code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The code (for tests and logs).
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, Json(ApiError { code: self.code.into(), message: self.message })).into_response()
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => Self::new(
                StatusCode::CONFLICT,
                "username_taken",
                "that username belongs to another account; pick another",
            ),
            StoreError::UnknownAccount => Self::not_found("unknown_account", "no such account"),
            StoreError::UnknownDevice => Self::not_found("unknown_device", "no such device"),
            StoreError::TooManyDevices(max) => Self::new(
                StatusCode::CONFLICT,
                "too_many_devices",
                format!("the account already has {max} devices; remove one first"),
            ),
            StoreError::Backend(e) => {
                tracing::error!(error = %e, "database error");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database failed; retry later")
            }
        }
    }
}
