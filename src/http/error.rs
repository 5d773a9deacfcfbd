//! The one place where error kinds become HTTP statuses. Every error body is
//! `{"error":{"code":"...","message":"..."}}`.

use crate::error::{Error, Kind};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

pub fn status_of(kind: Kind) -> StatusCode {
    match kind {
        Kind::InvalidArgument => StatusCode::BAD_REQUEST,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Kind::DeadlineExceeded => StatusCode::REQUEST_TIMEOUT,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub fn error_body(e: &Error) -> serde_json::Value {
    serde_json::json!({"error": {"code": e.kind.code(), "message": e.message}})
}

/// An error response with extra top-level fields (e.g. what an upload stored before it failed).
pub fn error_response_with(e: &Error, extra: serde_json::Value) -> Response {
    let mut body = error_body(e);
    if let (Some(b), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    (status_of(e.kind), Json(body)).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if self.kind == Kind::Internal {
            tracing::error!(error = %self.message, "internal error");
        }
        (status_of(self.kind), Json(error_body(&self))).into_response()
    }
}
