//! HLS endpoints: multivariant, live (LL-HLS, blocking reload) and archive playlists; init,
//! segment and part media. Playlists are built in `playback`; this maps requests and headers.

use super::auth::PlaybackQuery;
use super::params::{self, Params};
use super::range::{not_modified, serve_bytes, IMMUTABLE};
use super::AppState;
use crate::error::{Error, Result};
use crate::playback::archive_cache::{ArchiveKey, CachedPlaylist};
use crate::playback::hls::{Blocking, Connected};
use crate::store::StreamRow;
use crate::stream_name::validate_stream_name;
use crate::timefmt::TimeSpec;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

const M3U8: &str = "application/vnd.apple.mpegurl";
const SEGMENT: &str = "video/iso.segment";
const MP4: &str = "video/mp4";
/// A closed archive playlist that is not settled (see `playback/archive_cache.rs`): a
/// producer may still add to the end of its range, so caches hold it briefly.
const CLOSED: &str = "public, max-age=60";
/// A settled archive playlist: its text changes only when retention removes media in its
/// range. A day, not a year with `immutable`: a player or CDN holding it long after that
/// removal would ask for segments that are gone, while a day saves every re-request of a
/// viewing session; after it, revalidating with the ETag costs a 304.
const SETTLED: &str = "public, max-age=86400";

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
    headers: HeaderMap,
) -> Result<Response> {
    // Before any index read (the stream row's too): a build that raced a removal is not kept.
    let ticket = state.hls.archive_ticket();
    validate_stream_name(&name)?;
    let (start_arg, end_arg) = (params::time(&q, "start")?, params::time(&q, "end")?);
    let now_us = state.store.now_us();
    // `end=now` closes the range at this instant, but the same URL means a later one next time.
    let relative = [start_arg, end_arg]
        .iter()
        .flatten()
        .any(|t| t.is_relative());
    // A range that may be settled: keyed by all the request gives that shapes the text.
    let key = match end_arg.and_then(|e| e.point()) {
        Some(end_us) if !relative && end_us <= now_us => Some(ArchiveKey {
            stream: name.clone(),
            start_us: start_arg.and_then(|t| t.point()),
            end_us,
            query: token.0.clone(),
        }),
        _ => None,
    };
    // What viewers scrubbing the archive ask for again and again: straight from memory.
    if let Some(hit) = key.as_ref().and_then(|k| state.hls.cached_archive(k)) {
        return Ok(settled(&headers, &hit));
    }
    let s = stream(&state, &name).await?;
    require_archive(&s)?;
    let resolve = |t: Option<TimeSpec>| t.map(|t| t.resolve(s.first_producer_us, now_us));
    let (start, end) = playlist_range(
        resolve(start_arg),
        resolve(end_arg),
        s.first_producer_us,
        now_us,
        state.config.limits.max_playlist_secs,
    )?;
    let connected = state.ingest.is_connected(&name);
    if let Some(key) = key {
        return Ok(
            match state
                .hls
                .settled_archive(ticket, key, &s, start, connected)
                .await?
            {
                Ok(p) => settled(&headers, &p),
                Err(built) => playlist(built.text, CLOSED),
            },
        );
    }
    let closed = !relative && end.is_some_and(|e| e <= now_us);
    let built = state
        .hls
        .archive(&s, start, end, connected, &token.0)
        .await?;
    // A closed range never changes (until retention removes it); an open one grows.
    Ok(playlist(
        built.text,
        if closed { CLOSED } else { "no-cache" },
    ))
}

/// A settled playlist: gzip-compressed when the client takes it (compressed once, when it was
/// cached), with the strong ETag of the representation sent; 304 when `If-None-Match` names
/// it (or is `*`).
fn settled(headers: &HeaderMap, p: &CachedPlaylist) -> Response {
    let gzip = accepts_gzip(headers);
    let (body, etag) = if gzip {
        (p.gzip.clone(), p.gzip_etag.as_str())
    } else {
        (p.body.clone(), p.etag.as_str())
    };
    let base = Response::builder()
        .header(header::CACHE_CONTROL, SETTLED)
        .header(header::ETAG, etag)
        .header(header::VARY, "accept-encoding");
    if not_modified(headers, etag) {
        return base
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default();
    }
    let base = base.header(header::CONTENT_TYPE, M3U8);
    let base = if gzip {
        base.header(header::CONTENT_ENCODING, "gzip")
    } else {
        base
    };
    base.body(Body::from(body)).unwrap_or_default()
}

/// Whether `Accept-Encoding` takes gzip (by name or `*`, with a q-value above 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
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
    use super::{accepts_gzip, playlist_range};
    use axum::http::{header, HeaderMap, HeaderValue};

    #[test]
    fn gzip_is_taken_by_name_or_star_unless_q_is_zero() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(accepts_gzip(&h("gzip")));
        assert!(accepts_gzip(&h("deflate, GZIP;q=0.5, br")));
        assert!(accepts_gzip(&h("*")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br, x-gzip2")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

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
