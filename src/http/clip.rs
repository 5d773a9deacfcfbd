//! `GET`/`HEAD /api/v1/streams/{name}/clip.mp4?start=&end=[&format=mp4|fmp4]`: a downloadable
//! MP4 of a time range, with `Content-Length`, single `Range`s, a strong `ETag` and
//! `If-None-Match`. Building the file is `playback::clip`'s work; this file only speaks HTTP.

use super::params::{self, Params};
use super::range::{not_modified, requested_range, unsatisfiable, ByteRange};
use super::AppState;
use crate::error::{Error, Result};
use crate::playback::clip::{self as playback, ClipFormat};
use crate::stream_name::validate_stream_name;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// Says why a clip ends before the requested end (e.g. the stream's tracks changed).
const TRUNCATED_HEADER: &str = "x-tapedeck-clip-truncated";

pub async fn clip(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
    method: Method,
    headers: HeaderMap,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let start_arg = params::required_time(&q, "start")?;
    let end_arg = params::required_time(&q, "end")?;
    params::check_order(start_arg.point(), end_arg.point())?;
    // Read before the length check when a word needs the stream; a 404 comes first then.
    let words = start_arg.is_relative() || end_arg.is_relative();
    let early_stream = if words {
        Some(state.store.require_stream(&name).await?)
    } else {
        None
    };
    let now_us = state.store.now_us();
    let first_us = early_stream.as_ref().and_then(|s| s.first_producer_us);
    let (start_us, end_us) = (
        start_arg.resolve(first_us, now_us),
        end_arg.resolve(first_us, now_us),
    );
    params::check_order(Some(start_us), Some(end_us))?;
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
    let stream = match early_stream {
        Some(s) => s,
        None => state.store.require_stream(&name).await?,
    };
    super::hls::require_archive(&stream)?;
    let selection =
        playback::select(&state.store, stream.id, &name, start_us, end_us, format).await?;
    let etag = HeaderValue::from_str(&selection.etag)
        .map_err(|_| Error::internal("clip ETag is not a header value"))?;
    if not_modified(&headers, &selection.etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let clip = playback::build(&state.store, selection).await?;
    let len = clip.len();

    let (status, first, last) = match requested_range(&headers, len, &clip.etag) {
        ByteRange::Full => (StatusCode::OK, 0, len.saturating_sub(1)),
        ByteRange::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        ByteRange::Unsatisfiable => return Ok(unsatisfiable(len)),
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

/// `2026-11-25T17:00:00Z` → `20261125T170000Z`: safe in file names on every system.
fn compact_time(us: i64) -> String {
    crate::timefmt::format_us(us).replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_time() {
        assert_eq!(compact_time(1_764_090_000_000_000), "20251125T170000Z");
    }
}
