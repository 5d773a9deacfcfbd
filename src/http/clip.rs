//! `GET`/`HEAD /api/v1/streams/{name}/clip.mp4?start=&end=[&format=mp4|fmp4]`: a downloadable
//! MP4 of a time range, with `Content-Length`, single `Range`s, a strong `ETag` and
//! `If-None-Match`. Building the file is `playback::clip`'s work; this file only speaks HTTP.

use super::params::{self, QueryMap};
use super::AppState;
use crate::error::{Error, Result};
use crate::playback::clip::{self as playback, ClipFormat};
use crate::stream_name::validate_stream_name;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// Says why a clip ends before the requested end (e.g. the stream's tracks changed).
const TRUNCATED_HEADER: &str = "x-tapedeck-clip-truncated";

pub async fn clip(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QueryMap>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let required = |key: &str| -> Result<i64> {
        params::time(&q, key)?.ok_or_else(|| {
            Error::invalid(format!(
                "'{key}' is required: an RFC 3339 time like 2026-11-25T17:00:00Z or integer \
                 milliseconds since the Unix epoch"
            ))
        })
    };
    let start_us = required("start")?;
    let end_us = required("end")?;
    if end_us <= start_us {
        return Err(Error::invalid("'end' must be after 'start'"));
    }
    let max_secs = state.config.limits.max_clip_secs;
    let asked_us = i128::from(end_us) - i128::from(start_us);
    if asked_us > i128::from(max_secs) * 1_000_000 {
        return Err(Error::invalid(format!(
            "the clip asked for is {:.3} s long; the limit is {max_secs} s (limits.max_clip_secs): \
             ask for several shorter clips or raise the limit",
            asked_us as f64 / 1e6
        )));
    }
    let format = match q.get("format").map(String::as_str) {
        None | Some("mp4") => ClipFormat::Mp4,
        Some("fmp4") => ClipFormat::Fmp4,
        Some(other) => {
            return Err(Error::invalid(format!(
                "'format' must be 'mp4' (progressive, the default) or 'fmp4' (fragmented); got \
                 '{other}'"
            )))
        }
    };
    let stream = state.store.require_stream(&name).await?;
    let selection =
        playback::select(&state.store, stream.id, &name, start_us, end_us, format).await?;
    let etag = HeaderValue::from_str(&selection.etag)
        .map_err(|_| Error::internal("clip ETag is not a header value"))?;
    if if_none_match(&headers, &selection.etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let clip = playback::build(&state.store, selection).await?;
    let len = clip.len();

    // If-Range with another validator means "the whole new file", not a piece of it.
    let range_applies = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == clip.etag.as_bytes());
    let range = match headers.get(header::RANGE) {
        Some(v) if range_applies => parse_range(v.to_str().unwrap_or(""), len),
        _ => RangeRequest::Full,
    };
    let (status, first, last) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len.saturating_sub(1)),
        RangeRequest::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b),
        RangeRequest::Unsatisfiable => return Ok(unsatisfiable(len, etag)),
    };
    let body_len = if len == 0 { 0 } else { last - first + 1 };

    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "video/mp4")
        .header(header::CONTENT_LENGTH, body_len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{name}-{}.mp4\"",
                compact_time(start_us)
            ),
        );
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}"));
    }
    if let Some(why) = &clip.truncated {
        resp = resp.header(TRUNCATED_HEADER, why.as_str());
    }
    let body = if method == Method::HEAD || body_len == 0 {
        Body::empty()
    } else {
        Body::from_stream(playback::body(
            state.store.clone(),
            clip.clone(),
            first,
            last + 1,
        ))
    };
    resp.body(body)
        .map_err(|e| Error::internal(format!("cannot build the clip response: {e}")))
}

/// `If-None-Match` lists our ETag (or `*`). Weak comparison, as RFC 9110 asks for this header.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn unsatisfiable(len: u64, etag: HeaderValue) -> Response {
    let message = format!(
        "the requested range starts past the end of the clip, which is {len} bytes; ask for \
         bytes=0-{}",
        len.saturating_sub(1)
    );
    let body = serde_json::json!({"error": {"code": "RANGE_NOT_SATISFIABLE", "message": message}});
    (
        StatusCode::RANGE_NOT_SATISFIABLE,
        [
            (header::CONTENT_RANGE, format!("bytes */{len}")),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ],
        [(header::ETAG, etag)],
        axum::Json(body),
    )
        .into_response()
}

/// `2026-11-25T17:00:00Z` → `20261125T170000Z`: safe in file names on every system.
fn compact_time(us: i64) -> String {
    crate::timefmt::format_us(us).replace(['-', ':'], "")
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No usable range: the whole clip (absent, malformed, several ranges, another unit).
    Full,
    /// First and last byte, inclusive, within the clip.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range of RFC 9110 against a body of `len` bytes. Ranges this server does not
/// serve (several at once) and malformed headers are ignored, as the RFC allows.
fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(b) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Part(len.saturating_sub(n), len - 1),
            None => RangeRequest::Full,
        },
        // bytes=N-: from N to the end.
        (false, true) => match num(a) {
            Some(n) if n < len => RangeRequest::Part(n, len - 1),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(x), Some(y)) if x > y => RangeRequest::Full,
            (Some(x), Some(_)) if x >= len => RangeRequest::Unsatisfiable,
            (Some(x), Some(y)) => RangeRequest::Part(x, y.min(len - 1)),
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Part(0, 99));
        assert_eq!(parse_range("bytes=10-5000", 1000), Part(10, 999));
        assert_eq!(parse_range("bytes=900-", 1000), Part(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Part(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Part(0, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=1000-1001", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Full);
        assert_eq!(parse_range("items=0-1", 1000), Full);
        assert_eq!(parse_range("bytes=x-1", 1000), Full);
        assert_eq!(parse_range("bytes=-", 1000), Full);
    }

    #[test]
    fn etags() {
        let mut h = HeaderMap::new();
        assert!(!if_none_match(&h, "\"a\""));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"b\", W/\"a\""),
        );
        assert!(if_none_match(&h, "\"a\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&h, "\"a\""));
    }

    #[test]
    fn file_name_time() {
        assert_eq!(compact_time(1_764_090_000_000_000), "20251125T170000Z");
    }
}
