//! `Range`, `If-None-Match` and caching for media responses. Players seek with byte ranges
//! (without them Chromium treats an MP4 as unseekable), and immutable media is cached by ETag.

use crate::error::Error;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// Immutable media: fragments never change once stored, and stream ids are never reused.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The byte range a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    Full,
    /// Inclusive bounds.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Parses a single-range `Range: bytes=` header against a body of `total` bytes. Multiple
/// ranges and other units are answered with the full body, which RFC 9110 allows.
pub fn parse_range(headers: &HeaderMap, total: u64) -> ByteRange {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (None, Some(suffix)) if a.is_empty() => {
            if suffix == 0 || total == 0 {
                return ByteRange::Unsatisfiable;
            }
            (total.saturating_sub(suffix), total - 1)
        }
        (Some(start), None) if b.is_empty() => (start, total.saturating_sub(1)),
        (Some(start), Some(end)) if end >= start => (start, end.min(total.saturating_sub(1))),
        _ => return ByteRange::Full,
    };
    if range.0 >= total {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Partial {
        start: range.0,
        end: range.1,
    }
}

/// Whether `If-None-Match` lists this ETag (or `*`); weak comparison, as RFC 9110 asks for
/// this header.
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// The range to serve, honouring `If-Range`: a validator other than the current ETag means the
/// client's copy is stale, so it gets the whole body.
pub fn requested_range(headers: &HeaderMap, total: u64, etag: &str) -> ByteRange {
    let applies = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    if applies {
        parse_range(headers, total)
    } else {
        ByteRange::Full
    }
}

/// The 416 answer, in the JSON error format, with the length the client may ask for.
pub fn unsatisfiable(total: u64) -> Response {
    let e = Error::invalid(format!(
        "the requested range is outside the {total} bytes of this resource"
    ));
    let mut r = (
        StatusCode::RANGE_NOT_SATISFIABLE,
        axum::Json(super::error::error_body(&e)),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    r
}

/// Answers a request for an in-memory body: 304, 206, 416 or 200, with ETag and caching.
pub fn serve_bytes(
    headers: &HeaderMap,
    data: Bytes,
    content_type: &'static str,
    etag: &str,
    cache_control: &'static str,
) -> Response {
    let mut base = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, etag);
    if not_modified(headers, etag) {
        return base
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default();
    }
    let total = data.len() as u64;
    match requested_range(headers, total, etag) {
        ByteRange::Full => base.body(Body::from(data)).unwrap_or_default(),
        ByteRange::Unsatisfiable => unsatisfiable(total),
        ByteRange::Partial { start, end } => {
            base = base.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{total}"),
            );
            base.body(Body::from(data.slice(start as usize..=end as usize)))
                .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(&HeaderMap::new(), 10), ByteRange::Full);
        assert_eq!(
            parse_range(&h("bytes=2-4"), 10),
            ByteRange::Partial { start: 2, end: 4 }
        );
        assert_eq!(
            parse_range(&h("bytes=2-"), 10),
            ByteRange::Partial { start: 2, end: 9 }
        );
        assert_eq!(
            parse_range(&h("bytes=-3"), 10),
            ByteRange::Partial { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(&h("bytes=-30"), 10),
            ByteRange::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(&h("bytes=5-100"), 10),
            ByteRange::Partial { start: 5, end: 9 }
        );
        assert_eq!(parse_range(&h("bytes=10-"), 10), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(&h("bytes=-0"), 10), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(&h("bytes=4-2"), 10), ByteRange::Full);
        assert_eq!(parse_range(&h("bytes=0-1,4-5"), 10), ByteRange::Full);
        assert_eq!(parse_range(&h("items=0-1"), 10), ByteRange::Full);
    }

    #[test]
    fn etag_match() {
        let mut m = HeaderMap::new();
        m.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", \"b\""),
        );
        assert!(not_modified(&m, "\"b\""));
        assert!(!not_modified(&m, "\"c\""));
    }
}
