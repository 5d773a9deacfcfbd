//! Holds: `POST/GET /api/v1/streams/{name}/holds`, `DELETE .../holds/{id}`; and the sweeper:
//! `POST /api/v1/retention/sweep` (sweep now, returns what it did), `GET /api/v1/retention`.

use super::params;
use super::AppState;
use crate::error::{Error, Result};
use crate::store::HoldRow;
use crate::stream_name::validate_stream_name;
use crate::timefmt::{format_us, from_epoch_ms, parse_time, TimeSpec};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

const MAX_REASON_LEN: usize = 1024;

pub fn hold_json(h: &HoldRow) -> Value {
    json!({
        "id": h.id, "start": format_us(h.start_us), "end": format_us(h.end_us),
        "start_us": h.start_us, "end_us": h.end_us, "reason": h.reason,
        "created": format_us(h.created_us),
    })
}

/// A time in a JSON body: an RFC 3339 string, milliseconds since the epoch (number or string),
/// `earliest` or `now` (the same parser as query times).
fn body_time(body: &Value, key: &str) -> Result<TimeSpec> {
    match body.get(key) {
        Some(Value::String(s)) => parse_time(key, s),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(ms) => from_epoch_ms(key, ms).map(TimeSpec::At),
            None => Err(Error::invalid(format!(
                "'{key}' must be integer milliseconds since the epoch"
            ))),
        },
        _ => Err(Error::invalid(format!(
            "'{key}' is required: an RFC 3339 time or milliseconds since the epoch"
        ))),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    validate_stream_name(&name)?;
    let v: Value = params::json_body(&body)?;
    if let Some(k) = v.as_object().and_then(|o| {
        o.keys()
            .find(|k| !["start", "end", "reason"].contains(&k.as_str()))
    }) {
        return Err(Error::invalid(format!(
            "unknown field '{k}'; a hold has start, end and reason"
        )));
    }
    let start = body_time(&v, "start")?;
    let end = body_time(&v, "end")?;
    params::check_order(start.point(), end.point())?;
    let reason = v
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if reason.len() > MAX_REASON_LEN {
        return Err(Error::invalid(format!(
            "'reason' is limited to {MAX_REASON_LEN} bytes"
        )));
    }
    let stream = state.store.require_stream(&name).await?;
    // A hold is a fixed range: words are resolved now, once.
    let now_us = state.store.now_us();
    let start = start.resolve(stream.first_producer_us, now_us);
    let end = end.resolve(stream.first_producer_us, now_us);
    params::check_order(Some(start), Some(end))?;
    let hold = state.store.add_hold(stream.id, start, end, reason).await?;
    Ok((StatusCode::CREATED, Json(hold_json(&hold))))
}

pub async fn list(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>> {
    validate_stream_name(&name)?;
    let stream = state.store.require_stream(&name).await?;
    let holds = state.store.holds(stream.id).await?;
    Ok(Json(
        json!({"holds": holds.iter().map(hold_json).collect::<Vec<_>>()}),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    validate_stream_name(&name)?;
    let id: i64 = id
        .parse()
        .map_err(|_| Error::invalid(format!("hold id must be an integer; got '{id}'")))?;
    let stream = state.store.require_stream(&name).await?;
    if !state.store.remove_hold(stream.id, id).await? {
        return Err(Error::not_found(format!(
            "stream '{name}' has no hold {id}"
        )));
    }
    // Media the hold protected may be overdue.
    state.sweeper.wake();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn sweep_now(State(state): State<AppState>) -> Result<Json<Value>> {
    let report = state.sweeper.sweep().await?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}

pub async fn status(State(state): State<AppState>) -> Json<Value> {
    Json(serde_json::to_value(state.sweeper.status()).unwrap_or_default())
}
