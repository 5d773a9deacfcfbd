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
        Kind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
        Kind::PermissionDenied => StatusCode::FORBIDDEN,
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
    respond(e.kind, body)
}

/// The response for an error of `kind` with JSON `body`: status, and the headers the kind calls
/// for (when to retry; how to authenticate).
fn respond(kind: Kind, body: serde_json::Value) -> Response {
    let mut resp = (status_of(kind), Json(body)).into_response();
    if matches!(kind, Kind::Unavailable | Kind::ResourceExhausted) {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(super::limits::RETRY_AFTER_SECS),
        );
    }
    if kind == Kind::Unauthenticated {
        // The challenge makes ffmpeg and curl retry with the credentials in the URL.
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Basic realm=\"tapedeck\""),
        );
    }
    resp
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if self.kind == Kind::Internal {
            tracing::error!(error = %self.message, "internal error");
        }
        respond(self.kind, error_body(&self))
    }
}

/// Turns error responses made outside the handlers (axum's extractor rejections, 405 for a
/// wrong method) into the JSON error format, so every error a client sees has one shape.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::header;
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let code = match status.as_u16() {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        408 => "DEADLINE_EXCEEDED",
        409 => "CONFLICT",
        412 => "FAILED_PRECONDITION",
        413 => "TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA",
        416 => "RANGE_NOT_SATISFIABLE",
        429 => "RESOURCE_EXHAUSTED",
        431 => "TOO_LARGE",
        503 => "UNAVAILABLE",
        400..=499 => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    };
    let message = match (status.as_u16(), text.is_empty()) {
        (405, _) => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("this endpoint does not take that method; allowed: {allowed}")
        }
        (_, false) => String::from_utf8_lossy(&text).into_owned(),
        (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}
