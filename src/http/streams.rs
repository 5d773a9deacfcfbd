//! Stream API: create, list, describe, update, delete, sessions.

use super::params::{self, Params};
use super::AppState;
use crate::error::{Error, Result};
use crate::source::SourceSpec;
use crate::store::StreamRow;
use crate::stream_name::validate_stream_name;
use crate::timefmt::format_us;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const MAX_TAGS: usize = 50;
const MAX_TAG_LEN: usize = 256;
/// A century: longer than anyone keeps video, and far from where hours in microseconds
/// overflow or expiry times leave the years RFC 3339 can write.
const MAX_RETENTION_HOURS: u64 = 100 * 366 * 24;
/// The index keeps byte counts as SQLite integers (i64).
const MAX_RETENTION_BYTES: u64 = i64::MAX as u64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    retention_hours: Option<u64>,
    /// Per-stream byte quota; 0 or absent means none.
    retention_bytes: Option<u64>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// Where tapedeck pulls the stream from (an RTSP camera); absent: producers push it.
    source: Option<SourceSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    retention_hours: Option<u64>,
    retention_bytes: Option<u64>,
    tags: Option<BTreeMap<String, String>>,
    /// Absent: unchanged; `null`: removed (the pull stops); an object: set or replaced.
    #[serde(default, deserialize_with = "present")]
    source: Option<Option<SourceSpec>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`, via `default`).
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn validate_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(format!(
            "at most {MAX_TAGS} tags per stream"
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > MAX_TAG_LEN || v.len() > MAX_TAG_LEN {
            return Err(Error::invalid(format!(
                "tag keys must be 1 to {MAX_TAG_LEN} bytes and values at most {MAX_TAG_LEN}; '{}' is not",
                k.chars().take(40).collect::<String>()
            )));
        }
    }
    Ok(())
}

fn validate_retention(hours: Option<u64>, bytes: Option<u64>) -> Result<()> {
    if let Some(h) = hours.filter(|h| *h > MAX_RETENTION_HOURS) {
        return Err(Error::invalid(format!(
            "'retention_hours' is at most {MAX_RETENTION_HOURS} (a century); got {h}"
        )));
    }
    if let Some(b) = bytes.filter(|b| *b > MAX_RETENTION_BYTES) {
        return Err(Error::invalid(format!(
            "'retention_bytes' is at most {MAX_RETENTION_BYTES}; got {b}"
        )));
    }
    Ok(())
}

/// The describe document of a stream.
pub(super) async fn describe_json(state: &AppState, s: &StreamRow) -> Result<Value> {
    let init = match s.last_init_id {
        Some(id) => state.store.init(s.id, id).await?,
        None => None,
    };
    let connected = state.ingest.is_connected(&s.name);
    let status = if connected {
        "live"
    } else if s.fragment_count == 0 {
        "empty"
    } else {
        "idle"
    };
    let video = init
        .as_ref()
        .and_then(|i| i.tracks.iter().find(|t| t.kind == "video"));
    let holds = state.store.holds(s.id).await?;
    let keep_us = if s.retention_hours == 0 {
        state.config.retention.live_buffer_secs as i64 * 1_000_000
    } else {
        (s.retention_hours as i64).saturating_mul(3_600_000_000)
    };
    let next_expiry = state
        .store
        .oldest_unheld_server_time(s.id)
        .await?
        .map(|t| format_us(t.saturating_add(keep_us)));
    let last_sweep = state.sweeper.status().last;
    let held_only =
        last_sweep.as_ref().is_some_and(|r| r.held_only_over_budget) && !holds.is_empty();
    Ok(json!({
        "name": s.name,
        "status": status,
        "producer_connected": connected,
        "created": format_us(s.created_us),
        "retention_hours": s.retention_hours,
        "retention_bytes": s.retention_bytes,
        "live_only": s.retention_hours == 0,
        "holds": holds.iter().map(super::holds::hold_json).collect::<Vec<_>>(),
        "next_expiry": next_expiry,
        // The disk budget is crossed and held media (some of it this stream's) is all that is left.
        "held_media_over_budget": held_only,
        "tags": s.tags,
        "fragment_count": s.fragment_count,
        "bytes": s.total_bytes,
        // Where the bytes are (storage.object): on this server's disk, and in the bucket.
        "local_bytes": s.local_bytes(),
        "remote_bytes": s.remote_bytes,
        "first_time": s.first_producer_us.map(format_us),
        "last_time": s.last_end_us.map(format_us),
        "last_fragment": (s.last_number > 0).then_some(s.last_number),
        "codecs": init.as_ref().map(|i| i.codecs.clone()),
        "resolution": video.and_then(|v| Some(format!("{}x{}", v.width?, v.height?))),
        "tracks": init.as_ref().map(|i| i.tracks.clone()).unwrap_or_default(),
        "init": init.as_ref().map(|i| i.id),
        // Credentials redacted; with the pull's state (connecting, streaming, retrying, ...).
        "source": state.sources.describe(&s.name),
    }))
}

pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<impl IntoResponse> {
    let b: CreateBody = params::json_body(&body)?;
    validate_stream_name(&b.name)?;
    validate_tags(&b.tags)?;
    validate_retention(b.retention_hours, b.retention_bytes)?;
    // Checked before the stream exists, so a bad source creates nothing.
    let source = b.source.map(SourceSpec::validated).transpose()?;
    let retention = b
        .retention_hours
        .unwrap_or(state.config.retention.default_hours);
    let row = state
        .store
        .create_stream(&b.name, retention, b.retention_bytes, b.tags)
        .await?;
    if source.is_some() {
        state.sources.set(row.id, &row.name, source).await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(describe_json(&state, &row).await?),
    ))
}

pub async fn list(State(state): State<AppState>, Params(q): Params) -> Result<Json<Value>> {
    let limit = params::limit(&q, 100, 1000)?;
    let prefix = q.get("prefix").cloned();
    if let Some(p) = prefix.as_deref().filter(|p| !p.is_empty()) {
        validate_stream_name(p).map_err(|_| {
            Error::invalid(format!(
                "invalid 'prefix' '{p}': stream names use A-Z, a-z, 0-9, '_', '.', '-'"
            ))
        })?;
    }
    let after = q.get("after").cloned();
    let rows = state.store.list_streams(prefix, after, limit).await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.name.clone()))
        .flatten();
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(describe_json(&state, r).await?);
    }
    Ok(Json(json!({"streams": out, "next": next})))
}

pub async fn describe(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    validate_stream_name(&name)?;
    let row = state.store.require_stream(&name).await?;
    Ok(Json(describe_json(&state, &row).await?))
}

pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    validate_stream_name(&name)?;
    let b: UpdateBody = params::json_body(&body)?;
    if let Some(t) = &b.tags {
        validate_tags(t)?;
    }
    validate_retention(b.retention_hours, b.retention_bytes)?;
    let source = b
        .source
        .map(|s| s.map(SourceSpec::validated).transpose())
        .transpose()?;
    let before = state.store.require_stream(&name).await?;
    if let Some(source) = source {
        state.sources.set(before.id, &name, source).await?;
    }
    let row = state
        .store
        .update_stream(&name, b.retention_hours, b.retention_bytes, b.tags)
        .await?;
    // `retention_hours = 0` refuses the archive: no playlist cached before may be served.
    state.hls.forget_archive(&name);
    let shorter = row.retention_hours < before.retention_hours
        || row.retention_bytes.unwrap_or(u64::MAX) < before.retention_bytes.unwrap_or(u64::MAX);
    if shorter {
        // A decrease takes effect at once, not at the next interval.
        state.sweeper.wake();
    }
    Ok(Json(describe_json(&state, &row).await?))
}

pub async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode> {
    validate_stream_name(&name)?;
    state.store.delete_stream(&name).await?;
    state.sources.stop(&name);
    state.ingest.stream_deleted(&name);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn sessions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
) -> Result<Json<Value>> {
    validate_stream_name(&name)?;
    let limit = params::limit(&q, 50, 1000)?;
    let s = state.store.require_stream(&name).await?;
    let rows = state.store.sessions(s.id, limit).await?;
    let out: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "session": r.id, "kind": r.kind, "remote": r.remote,
                "started": format_us(r.started_us), "ended": r.ended_us.map(format_us),
                "end_reason": r.end_reason,
            })
        })
        .collect();
    Ok(Json(json!({"sessions": out})))
}
