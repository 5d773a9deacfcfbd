//! HLS endpoints: multivariant, live (LL-HLS, blocking reload) and archive playlists; init,
//! segment and part media. Playlists are built in `playback`; this maps requests and headers.

use super::auth::PlaybackQuery;
use super::params::{self, Params};
use super::range::{serve_bytes, IMMUTABLE};
use super::AppState;
use crate::error::{Error, Result};
use crate::playback::hls::{Blocking, Connected};
use crate::store::StreamRow;
use crate::stream_name::validate_stream_name;
use crate::timefmt::TimeSpec;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

const M3U8: &str = "application/vnd.apple.mpegurl";
const SEGMENT: &str = "video/iso.segment";
const MP4: &str = "video/mp4";

/// Archive reads of a live-only stream are a conflict with its settings, not a missing range.
pub fn require_archive(s: &StreamRow) -> Result<()> {
    if s.retention_hours == 0 {
        return Err(Error::conflict(format!(
            "stream '{}' keeps no archive (retention_hours = 0: live only, the last few minutes); \
             set retention_hours to keep one",
            s.name
        )));
    }
    Ok(())
}

async fn stream(state: &AppState, name: &str) -> Result<StreamRow> {
    validate_stream_name(name)?;
    state.store.require_stream(name).await
}

fn connected(state: &AppState, name: &str) -> Connected {
    let ingest = state.ingest.clone();
    let name = name.to_string();
    Arc::new(move || ingest.is_connected(&name))
}

fn playlist(text: String, cache_control: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, M3U8),
            (header::CACHE_CONTROL, cache_control),
        ],
        text,
    )
        .into_response()
}

/// Parses `{n}.{ext}` or `{n}.{i}.{ext}` file names into numbers.
fn numbers(file: &str, ext: &str, count: usize) -> Result<Vec<i64>> {
    let bad = || Error::not_found(format!("no such media file '{file}'"));
    let stem = file.strip_suffix(ext).ok_or_else(bad)?;
    let parts: Vec<i64> = stem
        .split('.')
        .map(|p| p.parse::<i64>().ok().filter(|n| *n >= 0))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    if parts.len() != count {
        return Err(bad());
    }
    Ok(parts)
}

pub async fn master(
    State(state): State<AppState>,
    Path(name): Path<String>,
    token: PlaybackQuery,
) -> Result<Response> {
    let s = stream(&state, &name).await?;
    let text = state.hls.master(&s, &token.0).await?;
    Ok(playlist(text, "no-cache"))
}

pub async fn live(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
    token: PlaybackQuery,
) -> Result<Response> {
    let s = stream(&state, &name).await?;
    let blocking = Blocking {
        msn: params::int::<i64>(&q, "_HLS_msn")?,
        part: params::int::<i64>(&q, "_HLS_part")?,
    };
    let text = state
        .hls
        .live(&s, connected(&state, &name), blocking, &token.0)
        .await?;
    Ok(playlist(text, "no-cache"))
}

pub async fn archive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
    token: PlaybackQuery,
) -> Result<Response> {
    let s = stream(&state, &name).await?;
    require_archive(&s)?;
    let (start_arg, end_arg) = (params::time(&q, "start")?, params::time(&q, "end")?);
    let now_us = state.store.now_us();
    let resolve = |t: Option<TimeSpec>| t.map(|t| t.resolve(s.first_producer_us, now_us));
    let (start, end) = playlist_range(
        resolve(start_arg),
        resolve(end_arg),
        s.first_producer_us,
        now_us,
        state.config.limits.max_playlist_secs,
    )?;
    // `end=now` closes the range at this instant, but the same URL means a later one next time.
    let relative = [start_arg, end_arg]
        .iter()
        .flatten()
        .any(|t| t.is_relative());
    let closed = !relative && end.is_some_and(|e| e <= now_us);
    let text = state
        .hls
        .archive(&s, start, end, state.ingest.is_connected(&name), &token.0)
        .await?;
    // A closed range never changes (until retention removes it); an open one grows.
    Ok(playlist(
        text,
        if closed {
            "public, max-age=60"
        } else {
            "no-cache"
        },
    ))
}

/// The range an archive playlist covers, within `limits.max_playlist_secs` (counting only the
/// part between the first recorded media and now). An explicit range that is longer is refused;
/// an open one is cut to the limit: no `start` means the newest stretch of that length, no `end`
/// means that length from `start`.
fn playlist_range(
    start_us: Option<i64>,
    end_us: Option<i64>,
    first_us: Option<i64>,
    now_us: i64,
    max_secs: u64,
) -> Result<(Option<i64>, Option<i64>)> {
    let max_us = i64::try_from(max_secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    // What the range covers of the recording: before the first fragment and after now there
    // is nothing to list.
    let covered = |s: i64, e: i64| e.min(now_us).saturating_sub(s.max(first_us.unwrap_or(s)));
    match (start_us, end_us) {
        (Some(s), Some(e)) if covered(s, e) > max_us => Err(Error::invalid(format!(
            "the range asked for is {:.0} s; one archive playlist covers at most {max_secs} s \
             (limits.max_playlist_secs): ask for a shorter range",
            covered(s, e) as f64 / 1e6
        ))),
        (Some(s), None) if covered(s, now_us) > max_us => {
            let s = s.max(first_us.unwrap_or(s));
            Ok((Some(s), Some(s.saturating_add(max_us))))
        }
        (None, e) => {
            let until = e.unwrap_or(now_us);
            let first = first_us.unwrap_or(until);
            let start = (until.saturating_sub(first) > max_us).then(|| until - max_us);
            Ok((start, e))
        }
        other => Ok(other),
    }
}

pub async fn init(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let s = stream(&state, &name).await?;
    let id = numbers(&file, ".mp4", 1)?[0];
    let (bytes, etag) = state.hls.init(&s, id).await?;
    Ok(serve_bytes(&headers, bytes, MP4, &etag, IMMUTABLE))
}

pub async fn segment(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let n = numbers(&file, ".m4s", 1)?[0];
    // What every viewer of a stream asks for again and again: straight from memory.
    if let Some((bytes, etag)) = state.hls.cached_segment(&name, n) {
        return Ok(serve_bytes(&headers, bytes, SEGMENT, &etag, IMMUTABLE));
    }
    let s = stream(&state, &name).await?;
    let (bytes, etag) = state
        .hls
        .segment(&s, n, state.ingest.is_connected(&name))
        .await?;
    Ok(serve_bytes(&headers, bytes, SEGMENT, &etag, IMMUTABLE))
}

pub async fn part(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let s = stream(&state, &name).await?;
    let v = numbers(&file, ".m4s", 2)?;
    let (bytes, etag) = state
        .hls
        .part(&s, v[0], v[1], connected(&state, &name))
        .await?;
    Ok(serve_bytes(&headers, bytes, SEGMENT, &etag, IMMUTABLE))
}

#[cfg(test)]
mod tests {
    use super::playlist_range;

    const H: i64 = 3_600_000_000;

    #[test]
    fn playlist_ranges_within_the_limit() {
        let day = 24 * 3600;
        // Short explicit ranges pass untouched; long ones are refused.
        assert_eq!(
            playlist_range(Some(0), Some(H), Some(0), 100 * H, day).unwrap(),
            (Some(0), Some(H))
        );
        let err = playlist_range(Some(0), Some(25 * H), Some(0), 100 * H, day).unwrap_err();
        assert!(err.message.contains("max_playlist_secs"), "{err}");
        // Open ends are cut to the limit.
        assert_eq!(
            playlist_range(Some(0), None, Some(0), 100 * H, day).unwrap(),
            (Some(0), Some(24 * H))
        );
        assert_eq!(
            playlist_range(None, None, Some(0), 100 * H, day).unwrap(),
            (Some(76 * H), None)
        );
        assert_eq!(
            playlist_range(None, Some(50 * H), Some(0), 100 * H, day).unwrap(),
            (Some(26 * H), Some(50 * H))
        );
        // Only the recorded part counts: a wide range over a short recording is fine.
        assert_eq!(
            playlist_range(Some(0), Some(200 * H), Some(90 * H), 100 * H, day).unwrap(),
            (Some(0), Some(200 * H))
        );
        // A recording shorter than the limit is not touched.
        assert_eq!(
            playlist_range(None, None, Some(90 * H), 100 * H, day).unwrap(),
            (None, None)
        );
        assert_eq!(
            playlist_range(Some(i64::MIN), Some(i64::MAX), None, 0, day)
                .unwrap_err()
                .kind,
            crate::error::Kind::InvalidArgument
        );
    }
}
