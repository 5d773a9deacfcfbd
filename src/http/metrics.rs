//! `GET /metrics`: Prometheus text exposition of what the server is doing, and the middleware
//! that counts playback requests and the bytes they are sent.

use super::route::{Matched, RouteKind};
use super::AppState;
use crate::error::{Error, Result};
use crate::metrics::{Exposition, IngestSnapshot, Metrics, PlaybackKind, Type};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Streams listed per scrape (every stream, in practice).
const MAX_STREAMS: u32 = 100_000;

/// The playback kind of a request, from its method and the route it matched; `None` for
/// everything else. Exhaustive, so a new route does not compile until it is placed here.
fn playback_kind(method: &Method, route: RouteKind) -> Option<PlaybackKind> {
    use RouteKind as K;
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    Some(match route {
        K::MasterPlaylist | K::LivePlaylist | K::ArchivePlaylist => PlaybackKind::Playlist,
        K::HlsInit | K::Init => PlaybackKind::Init,
        K::HlsSegment => PlaybackKind::Segment,
        K::HlsPart => PlaybackKind::Part,
        K::Fragment => PlaybackKind::Fragment,
        K::Clip => PlaybackKind::Clip,
        K::Follow => PlaybackKind::Follow,
        K::FrameJpg | K::FramePng | K::LatestJpg | K::Frames => PlaybackKind::Frame,
        K::Health
        | K::Ready
        | K::Metrics
        | K::UiPage
        | K::UiAsset
        | K::OpenApi
        | K::Streams
        | K::Stream
        | K::Sessions
        | K::Ingest
        | K::IngestFile
        | K::Fragments
        | K::Timeline
        | K::Holds
        | K::Hold
        | K::StreamEvents
        | K::AllEvents
        | K::Retention
        | K::RetentionSweep
        | K::PlaybackTokens
        | K::UnknownApi
        | K::Unknown => return None,
    })
}

/// Counts each playback response by kind and status, and the body bytes of successful ones as
/// they are handed to the connection (so a follow feed or a clip counts what was really sent,
/// also when the viewer leaves half-way).
pub async fn count_playback(
    State(metrics): State<Arc<Metrics>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req.extensions().get::<Matched>().map(|m| m.kind);
    let Some(kind) = route.and_then(|route| playback_kind(req.method(), route)) else {
        return next.run(req).await;
    };
    let resp = next.run(req).await;
    let status = resp.status();
    metrics.playback_response(kind, status.as_u16());
    if !status.is_success() {
        return resp;
    }
    resp.map(|inner| {
        Body::new(Counted {
            inner,
            metrics,
            kind,
        })
    })
}

/// A response body that adds the size of each data frame to its kind's byte counter.
struct Counted {
    inner: Body,
    metrics: Arc<Metrics>,
    kind: PlaybackKind,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.metrics
                    .playback_bytes_sent(this.kind, data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Reads one per-stream stored figure (bytes, fragments) from a stream's row.
type StoredOf = fn(&crate::store::StreamRow) -> i64;

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let mut e = Exposition::default();
    let m = &state.metrics;

    // Ingest, per stream: every stored stream, and any stream counted since the start.
    let streams = state.store.list_streams(None, None, MAX_STREAMS).await?;
    let mut ingest: BTreeMap<String, IngestSnapshot> = streams
        .iter()
        .map(|s| (s.name.clone(), IngestSnapshot::default()))
        .collect();
    ingest.extend(m.ingest_streams());
    e.family(
        "tapedeck_ingest_bytes_total",
        Type::Counter,
        "Bytes of fragments acknowledged to producers (as stored, after timestamp rewriting).",
    );
    for (name, c) in &ingest {
        e.sample("tapedeck_ingest_bytes_total", &[("stream", name)], c.bytes);
    }
    e.family(
        "tapedeck_ingest_fragments_total",
        Type::Counter,
        "Fragments acknowledged to producers.",
    );
    for (name, c) in &ingest {
        e.sample(
            "tapedeck_ingest_fragments_total",
            &[("stream", name)],
            c.fragments,
        );
    }
    e.family(
        "tapedeck_ingest_errors_total",
        Type::Counter,
        "Ingest errors (refused fragments, failed sessions and segment files) by error code.",
    );
    for (name, c) in &ingest {
        for (kind, n) in &c.errors {
            e.sample(
                "tapedeck_ingest_errors_total",
                &[("stream", name), ("kind", kind)],
                n,
            );
        }
    }
    e.family(
        "tapedeck_producers_connected",
        Type::Gauge,
        "Producers sending to the stream now (an upload or a segment series).",
    );
    for s in &streams {
        let connected = u8::from(state.ingest.is_connected(&s.name));
        e.sample(
            "tapedeck_producers_connected",
            &[("stream", &s.name)],
            connected,
        );
    }
    e.histogram(
        "tapedeck_ingest_ack_latency_seconds",
        "From a fragment's last byte received to its ack written (durable and indexed).",
        &m.ack_latency(),
    );

    // The ingest budget (ingest/budget.rs).
    let b = state.ingest.budget();
    e.single(
        "tapedeck_ingest_budget_bytes",
        Type::Gauge,
        "Bytes of received fragments that may wait to be made durable (ingest.pending_budget_bytes).",
        b.limit_bytes,
    );
    e.single(
        "tapedeck_ingest_budget_used_bytes",
        Type::Gauge,
        "Bytes of received fragments not yet durable, over all producers.",
        b.used_bytes,
    );
    e.single(
        "tapedeck_ingest_throttled_producers",
        Type::Gauge,
        "Producers whose sockets are not being read now because the budget is spent.",
        b.waiting,
    );
    e.single(
        "tapedeck_ingest_throttled_seconds_total",
        Type::Counter,
        "Time producers spent held back by the budget, summed over producers.",
        b.throttled_seconds_total,
    );
    e.single(
        "tapedeck_ingest_throttled_fragments_total",
        Type::Counter,
        "Fragments that had to wait for the budget.",
        b.throttled_fragments_total,
    );
    e.single(
        "tapedeck_ingest_held_back_sessions_total",
        Type::Counter,
        "Sessions ended with an 'overloaded' error after ingest.max_hold_back_secs of waiting.",
        b.held_back_total,
    );

    // The store's writer.
    let g = state.store.group_stats();
    e.single(
        "tapedeck_commit_groups_total",
        Type::Counter,
        "Commit groups made durable.",
        g.groups,
    );
    e.single(
        "tapedeck_fragments_committed_total",
        Type::Counter,
        "Fragments made durable and indexed, over all streams.",
        g.fragments,
    );
    let (groups_per_sec, fragments_per_group) = g.recent_rates();
    e.single(
        "tapedeck_commit_groups_per_second",
        Type::Gauge,
        "Commit groups (one pass of syncs and one SQLite commit each) per second, over the last 10 s.",
        groups_per_sec,
    );
    e.single(
        "tapedeck_commit_group_fragments",
        Type::Gauge,
        "Mean fragments per commit group over the last 10 s.",
        fragments_per_group,
    );
    e.histogram(
        "tapedeck_commit_fsync_seconds",
        "Time each commit group spent making its bytes durable (fdatasync or syncfs, and directories).",
        &g.sync_seconds,
    );
    e.histogram(
        "tapedeck_commit_sqlite_seconds",
        "Time each commit group's SQLite transaction took, after its sync (WAL write and fsync).",
        &g.commit_seconds,
    );

    // Stored media, per stream.
    let stored: [(&str, &str, StoredOf); 2] = [
        ("tapedeck_stream_bytes", "Bytes stored per stream.", |s| {
            s.total_bytes
        }),
        (
            "tapedeck_stream_fragments",
            "Fragments stored per stream.",
            |s| s.fragment_count,
        ),
    ];
    for (name, help, value) in stored {
        e.family(name, Type::Gauge, help);
        for s in &streams {
            e.sample(name, &[("stream", &s.name)], value(s));
        }
    }

    // Playback.
    e.family(
        "tapedeck_playback_requests_total",
        Type::Counter,
        "Playback responses by kind and HTTP status.",
    );
    for ((kind, code), n) in m.playback_requests() {
        let code = code.to_string();
        e.sample(
            "tapedeck_playback_requests_total",
            &[("kind", kind.name()), ("code", &code)],
            n,
        );
    }
    e.family(
        "tapedeck_playback_bytes_total",
        Type::Counter,
        "Body bytes of successful playback responses sent, by kind.",
    );
    for kind in PlaybackKind::ALL {
        e.sample(
            "tapedeck_playback_bytes_total",
            &[("kind", kind.name())],
            m.playback_bytes(kind),
        );
    }

    // Retention.
    let sweep = state.sweeper.status();
    e.single(
        "tapedeck_retention_sweeps_total",
        Type::Counter,
        "Retention sweeps run.",
        sweep.sweeps,
    );
    let by_reason = [
        ("retention", sweep.expired_by_retention),
        ("stream_quota", sweep.expired_by_stream_quota),
        ("disk_budget", sweep.expired_by_disk_budget),
    ];
    for (name, help, get) in [
        (
            "tapedeck_retention_deleted_fragments_total",
            "Fragments removed by retention, stream quotas and the disk budget.",
            (|x| x.fragments) as fn(&crate::store::retention::Expired) -> u64,
        ),
        (
            "tapedeck_retention_deleted_bytes_total",
            "Bytes removed by retention, stream quotas and the disk budget.",
            |x| x.bytes,
        ),
        (
            "tapedeck_retention_deleted_files_total",
            "Fragment files removed by retention, stream quotas and the disk budget.",
            |x| x.files,
        ),
    ] {
        e.family(name, Type::Counter, help);
        for (reason, expired) in &by_reason {
            e.sample(name, &[("reason", reason)], get(expired));
        }
    }
    let last = sweep.last.unwrap_or_default();
    e.single(
        "tapedeck_disk_budget_crossed",
        Type::Gauge,
        "1 when the last sweep found the disk budget crossed.",
        u8::from(last.over_budget),
    );
    e.single(
        "tapedeck_disk_budget_held_only",
        Type::Gauge,
        "1 when the disk budget is still crossed and only held media is left.",
        u8::from(last.held_only_over_budget),
    );

    // Disk.
    e.single(
        "tapedeck_disk_used_bytes",
        Type::Gauge,
        "Bytes of media the store holds (what the disk budget counts).",
        state.store.used_bytes().await?,
    );
    let store = state.store.clone();
    let disk = tokio::task::spawn_blocking(move || store.disk_space())
        .await
        .map_err(|e| Error::internal(format!("disk space task failed: {e}")))?;
    if let Some(d) = disk {
        e.single(
            "tapedeck_disk_free_bytes",
            Type::Gauge,
            "Free space on the data disk (available to the server).",
            d.free_bytes,
        );
        e.single(
            "tapedeck_disk_total_bytes",
            Type::Gauge,
            "Size of the data disk.",
            d.total_bytes,
        );
    }
    state.sources.metrics(&mut e);
    if let Some(o) = state.store.object_stats() {
        object_tier(&mut e, &o, &streams, state.store.now_us());
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        e.finish(),
    ))
}

/// The object tier (`[storage.object]`): where the bytes are, the upload queue, failures, and
/// remote reads.
fn object_tier(
    e: &mut Exposition,
    o: &crate::store::object::ObjectStats,
    streams: &[crate::store::StreamRow],
    now_us: i64,
) {
    let local: i64 = streams.iter().map(|s| s.local_bytes()).sum();
    let remote: i64 = streams.iter().map(|s| s.remote_bytes).sum();
    e.single(
        "tapedeck_object_local_bytes",
        Type::Gauge,
        "Bytes of stored media on the local disk.",
        local,
    );
    e.single(
        "tapedeck_object_remote_bytes",
        Type::Gauge,
        "Bytes of objects in the object store's bucket.",
        remote,
    );
    e.single(
        "tapedeck_object_upload_queue_files",
        Type::Gauge,
        "Sealed fragment files waiting for upload.",
        o.queue_files,
    );
    e.single(
        "tapedeck_object_upload_queue_bytes",
        Type::Gauge,
        "Bytes of sealed fragment files waiting for upload.",
        o.queue_bytes,
    );
    let age_s = o
        .queue_oldest_created_us
        .map_or(0.0, |t| (now_us - t).max(0) as f64 / 1e6);
    e.single(
        "tapedeck_object_upload_queue_oldest_seconds",
        Type::Gauge,
        "Age of the oldest file waiting for upload (0 when none waits).",
        age_s,
    );
    e.single(
        "tapedeck_object_uploads_total",
        Type::Counter,
        "Files uploaded, verified and recorded.",
        o.uploads_total,
    );
    e.single(
        "tapedeck_object_uploaded_bytes_total",
        Type::Counter,
        "Bytes uploaded, verified and recorded.",
        o.uploaded_bytes_total,
    );
    e.single(
        "tapedeck_object_upload_errors_total",
        Type::Counter,
        "Upload passes that failed (retried with backoff).",
        o.upload_errors_total,
    );
    e.single(
        "tapedeck_object_store_reachable",
        Type::Gauge,
        "1 when the last request to the object store succeeded.",
        u8::from(o.store_reachable),
    );
    e.single(
        "tapedeck_object_unuploaded_deleted_bytes_total",
        Type::Counter,
        "Bytes of media the disk budget deleted before they were uploaded.",
        o.unuploaded_deleted_bytes_total,
    );
    e.single(
        "tapedeck_object_local_copies_deleted_total",
        Type::Counter,
        "Local copies of uploaded files deleted (keep limits or disk budget).",
        o.local_copies_deleted_total,
    );
    e.single(
        "tapedeck_object_deleted_total",
        Type::Counter,
        "Objects deleted after their media expired or their stream was deleted.",
        o.objects_deleted_total,
    );
    e.single(
        "tapedeck_object_read_errors_total",
        Type::Counter,
        "Remote reads that failed.",
        o.remote_read_errors_total,
    );
    e.family(
        "tapedeck_object_read_cache_total",
        Type::Counter,
        "Chunk lookups in the remote read cache, by result.",
    );
    e.sample(
        "tapedeck_object_read_cache_total",
        &[("result", "hit")],
        o.cache_hits_total,
    );
    e.sample(
        "tapedeck_object_read_cache_total",
        &[("result", "miss")],
        o.cache_misses_total,
    );
    e.single(
        "tapedeck_object_read_cache_bytes",
        Type::Gauge,
        "Bytes of remote chunks the read cache holds.",
        o.read_cache_bytes,
    );
    e.histogram(
        "tapedeck_object_read_seconds",
        "Latency of each ranged GET from the object store.",
        &o.remote_read_seconds,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::route::matched_for_test;

    #[test]
    fn classifies_playback_paths() {
        let g = Method::GET;
        let k = |p: &str| playback_kind(&g, matched_for_test(p).kind);
        assert_eq!(
            k("/api/v1/streams/a/hls/live.m3u8"),
            Some(PlaybackKind::Playlist)
        );
        assert_eq!(
            k("/api/v1/streams/a/hls/master.m3u8"),
            Some(PlaybackKind::Playlist)
        );
        assert_eq!(
            k("/api/v1/streams/a/hls/init/1.mp4"),
            Some(PlaybackKind::Init)
        );
        assert_eq!(k("/api/v1/streams/a/inits/1"), Some(PlaybackKind::Init));
        assert_eq!(
            k("/api/v1/streams/a/hls/segments/5.m4s"),
            Some(PlaybackKind::Segment)
        );
        assert_eq!(
            k("/api/v1/streams/a/hls/parts/5.1.m4s"),
            Some(PlaybackKind::Part)
        );
        assert_eq!(
            k("/api/v1/streams/a/fragments/3"),
            Some(PlaybackKind::Fragment)
        );
        assert_eq!(k("/api/v1/streams/a/clip.mp4"), Some(PlaybackKind::Clip));
        assert_eq!(k("/api/v1/streams/a/media"), Some(PlaybackKind::Follow));
        assert_eq!(k("/api/v1/streams/a/latest.jpg"), Some(PlaybackKind::Frame));
        assert_eq!(k("/api/v1/streams/a/frames"), Some(PlaybackKind::Frame));
        assert_eq!(k("/api/v1/streams/a/fragments"), None);
        assert_eq!(k("/api/v1/streams/a"), None);
        assert_eq!(k("/api/v1/streams/a/timeline"), None);
        assert_eq!(k("/metrics"), None);
        assert_eq!(
            playback_kind(
                &Method::PUT,
                matched_for_test("/api/v1/streams/a/ingest").kind
            ),
            None
        );
    }
}
