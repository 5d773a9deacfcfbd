//! Decoded frames for analytics jobs:
//! - `GET /api/v1/streams/{name}/frame.jpg?at=[&width=&height=&quality=]` (and `frame.png`): the
//!   picture shown at producer time `at`;
//! - `GET .../latest.jpg`: the newest keyframe;
//! - `GET .../frames?start=&end=[&interval_ms=&format=jpeg|png&width=&height=&quality=&limit=]`:
//!   one picture per sampled time as base64 in JSON, paged with `next`.
//!
//! Images carry `X-Tapedeck-Frame-Time` (when the picture is shown, RFC 3339) and
//! `X-Tapedeck-Fragment`. "Nothing recorded then" is a 404 with code `NO_MEDIA`; media that
//! cannot be decoded is a 500 with code `DECODE_ERROR`; a saturated decoder a 503 with
//! `Retry-After`. Decoding itself is `analytics::frames`' work.

use super::error::status_of;
use super::params::{self, Params, QueryMap};
use super::AppState;
use crate::analytics::frames::{Outcome, RETRY_AFTER_SECS};
use crate::codec::encode::{Encoding, ImageFormat, MAX_DIMENSION, MIN_DIMENSION};
use crate::error::{Error, Kind, Result};
use crate::store::StreamRow;
use crate::stream_name::validate_stream_name;
use crate::timefmt::format_us;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};

const FRAME_TIME_HEADER: &str = "x-tapedeck-frame-time";
const FRAGMENT_HEADER: &str = "x-tapedeck-fragment";
/// `interval_ms` when a `frames` request does not say.
const DEFAULT_INTERVAL_MS: u64 = 1000;

pub async fn frame_jpg(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
) -> Response {
    respond(single(&state, &name, &q, ImageFormat::Jpeg).await)
}

pub async fn frame_png(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
) -> Response {
    respond(single(&state, &name, &q, ImageFormat::Png).await)
}

pub async fn latest_jpg(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
) -> Response {
    let result = async {
        let enc = encoding(&state, &q, ImageFormat::Jpeg)?;
        let stream = stream(&state, &name).await?;
        let outcome = state.frames.latest_keyframe(&stream, &enc).await?;
        Ok(image_response(outcome, enc.format))
    }
    .await;
    respond(result)
}

pub async fn frames(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
) -> Response {
    respond(
        frames_json(&state, &name, &q)
            .await
            .map(IntoResponse::into_response),
    )
}

async fn single(
    state: &AppState,
    name: &str,
    q: &QueryMap,
    format: ImageFormat,
) -> Result<Response> {
    let at = params::time(q, "at")?.ok_or_else(|| {
        Error::invalid(
            "'at' is required: the producer time of the frame, as RFC 3339 \
             (2026-11-25T17:00:00.040Z), integer milliseconds since the Unix epoch, 'earliest' \
             or 'now'",
        )
    })?;
    let enc = encoding(state, q, format)?;
    let stream = stream(state, name).await?;
    let at_us = at.resolve(stream.first_producer_us, state.store.now_us());
    let outcome = state.frames.frame_at(&stream, at_us, &enc).await?;
    Ok(image_response(outcome, format))
}

async fn stream(state: &AppState, name: &str) -> Result<StreamRow> {
    validate_stream_name(name)?;
    state.store.require_stream(name).await
}

/// Errors as JSON; a busy decoder also says when to come back.
fn respond(result: Result<Response>) -> Response {
    match result {
        Ok(r) => r,
        Err(e) => {
            let busy = e.kind == Kind::Unavailable;
            let mut resp = e.into_response();
            if busy {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            resp
        }
    }
}

/// An error body with a frames-specific code (`NO_MEDIA`, `DECODE_ERROR`); the status still
/// comes from the kind.
fn coded_error(kind: Kind, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (status_of(kind), Json(body)).into_response()
}

fn image_response(outcome: Outcome, format: ImageFormat) -> Response {
    match outcome {
        Outcome::Image(s) => {
            let mut resp = Response::new(Body::from(s.bytes));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            if let Ok(v) = HeaderValue::from_str(&format_us(s.time_us)) {
                h.insert(FRAME_TIME_HEADER, v);
            }
            h.insert(FRAGMENT_HEADER, HeaderValue::from(s.fragment));
            resp
        }
        Outcome::NoMedia(m) => coded_error(Kind::NotFound, "NO_MEDIA", &m),
        Outcome::DecodeError(m) => {
            tracing::warn!(error = %m, "frame decode failed");
            coded_error(Kind::Internal, "DECODE_ERROR", &m)
        }
    }
}

/// `width`, `height` and `quality` of a request, checked.
fn encoding(state: &AppState, q: &QueryMap, format: ImageFormat) -> Result<Encoding> {
    let dimension = |key: &str| -> Result<Option<u32>> {
        match params::int::<u32>(q, key)? {
            Some(v) if !(MIN_DIMENSION..=MAX_DIMENSION).contains(&v) => {
                Err(Error::invalid(format!(
                    "'{key}' must be between {MIN_DIMENSION} and {MAX_DIMENSION} pixels; got {v}"
                )))
            }
            v => Ok(v),
        }
    };
    let quality = match params::int::<u32>(q, "quality")? {
        None => state.config.frames.jpeg_quality,
        Some(v) if (1..=100).contains(&v) => v as u8,
        Some(v) => {
            return Err(Error::invalid(format!(
                "'quality' must be between 1 and 100 (JPEG quality); got {v}"
            )))
        }
    };
    Ok(Encoding {
        format,
        quality,
        width: dimension("width")?,
        height: dimension("height")?,
    })
}

/// The sampled times of a `frames` request and where the next page starts.
fn sample_times(
    start_us: i64,
    end_us: i64,
    interval_us: i64,
    limit: u32,
) -> (Vec<i64>, Option<i64>) {
    let mut times = Vec::new();
    let mut t = start_us;
    while t < end_us {
        if times.len() == limit as usize {
            return (times, Some(t));
        }
        times.push(t);
        match t.checked_add(interval_us) {
            Some(n) => t = n,
            None => break,
        }
    }
    (times, None)
}

async fn frames_json(state: &AppState, name: &str, q: &QueryMap) -> Result<Json<Value>> {
    let cfg = &state.config.frames;
    let start_arg = params::required_time(q, "start")?;
    let end_arg = params::required_time(q, "end")?;
    params::check_order(start_arg.point(), end_arg.point())?;
    let interval_ms = params::int::<u64>(q, "interval_ms")?.unwrap_or(DEFAULT_INTERVAL_MS);
    if interval_ms < cfg.min_interval_ms {
        return Err(Error::invalid(format!(
            "'interval_ms' must be at least {} (frames.min_interval_ms); got {interval_ms}",
            cfg.min_interval_ms
        )));
    }
    let interval_us = i64::try_from(interval_ms)
        .ok()
        .and_then(|ms| ms.checked_mul(1000))
        .ok_or_else(|| Error::invalid(format!("'interval_ms' is too large: {interval_ms}")))?;
    let max = cfg.max_frames_per_request;
    let limit = match params::int::<u32>(q, "limit")? {
        None => max,
        Some(n) if (1..=max).contains(&n) => n,
        Some(n) => {
            return Err(Error::invalid(format!(
                "'limit' is {n}, but one request returns at most {max} frames \
                 (frames.max_frames_per_request); ask for fewer and page through the range with \
                 'next' (the 'start' of the following request)"
            )))
        }
    };
    let format = match q.get("format").map(String::as_str) {
        None | Some("jpeg") | Some("jpg") => ImageFormat::Jpeg,
        Some("png") => ImageFormat::Png,
        Some(other) => {
            return Err(Error::invalid(format!(
                "'format' must be 'jpeg' (the default) or 'png'; got '{other}'"
            )))
        }
    };
    let enc = encoding(state, q, format)?;
    let stream = stream(state, name).await?;
    let now_us = state.store.now_us();
    let start_us = start_arg.resolve(stream.first_producer_us, now_us);
    let end_us = end_arg.resolve(stream.first_producer_us, now_us);
    params::check_order(Some(start_us), Some(end_us))?;
    let (times, next) = sample_times(start_us, end_us, interval_us, limit);
    let outcomes = state.frames.frames_at(&stream, &times, &enc).await?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let frames: Vec<Value> = times
        .iter()
        .zip(outcomes)
        .map(|(&t, o)| {
            let mut v = json!({"time": format_us(t), "time_us": t});
            let extra = match o {
                Outcome::Image(s) => json!({
                    "frame_time": format_us(s.time_us), "frame_time_us": s.time_us,
                    "fragment": s.fragment, "width": s.width, "height": s.height,
                    "image": b64.encode(&s.bytes),
                }),
                Outcome::NoMedia(m) => json!({"error": {"code": "NO_MEDIA", "message": m}}),
                Outcome::DecodeError(m) => {
                    json!({"error": {"code": "DECODE_ERROR", "message": m}})
                }
            };
            if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "stream": name,
        "content_type": format.content_type(),
        "interval_ms": interval_ms,
        "frames": frames,
        // More sampled times remain: ask again with start = next (same end and interval).
        "next": next.map(format_us),
        "next_us": next,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_and_paging() {
        assert_eq!(
            sample_times(0, 1000, 250, 10),
            (vec![0, 250, 500, 750], None)
        );
        assert_eq!(sample_times(0, 1000, 250, 2), (vec![0, 250], Some(500)));
        assert_eq!(
            sample_times(0, 1000, 250, 4),
            (vec![0, 250, 500, 750], None)
        );
        assert_eq!(sample_times(0, 1, 250, 4), (vec![0], None));
        let (t, next) = sample_times(i64::MAX - 10, i64::MAX, 5, 100);
        assert_eq!((t.len(), next), (2, None));
    }
}
