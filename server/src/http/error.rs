//! REST errors: an HTTP status plus a stable machine-readable code.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hush_wire::api::ApiError;

use crate::store::StoreError;

/// An error answer.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl HttpError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError { status, code, message: message.into(), retry_after: None }
    }

    /// 429 `rate_limited` with a `Retry-After` header (whole seconds, rounded up).
    pub fn rate_limited(what: &str, wait: Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let secs = secs.max(1);
        HttpError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: format!("too many {what} from here; retry in {secs} s"),
            retry_after: Some(Duration::from_secs(secs)),
        }
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

    /// The status (for tests).
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ApiError { code: self.code.into(), message: self.message })).into_response();
        if let Some(wait) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
        }
        response
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
