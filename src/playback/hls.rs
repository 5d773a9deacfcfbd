//! The HLS service: reads index rows from the store, groups them into segments and renders
//! playlists (pure: `playlist.rs`, and `window.rs` for the live window); serves segment, part
//! and init bytes; holds blocking playlist reloads and preload-hinted parts until the media
//! exists.

use super::archive_cache::{ArchiveCache, ArchiveKey, CachedPlaylist, StreamTicket, Ticket};
use super::playlist::{self, Kind, Variant};
use super::segments::{group_segments, one_fragment_per_segment, Segment};
use super::window::{self, LiveTiming, LiveView};
use crate::config::HlsConfig;
use crate::error::{Error, Result};
use crate::store::{FragmentRow, Store, StoreEvent, StreamRow};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Archive ranges up to this many segments are read from the index once.
const MEMORY_SEGMENTS: usize = 20_000;
/// Rows read per query when walking a long archive range.
const ARCHIVE_PAGE_ROWS: u32 = 5000;
/// Rows read for a live window; far more than any window needs.
const LIVE_WINDOW_ROWS: u32 = 4000;
/// How long a live playlist request waits for a new stream's first complete segment.
const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(10);
/// Recent segments measured for the master playlist's BANDWIDTH.
const BANDWIDTH_SEGMENTS: i64 = 30;

/// Whether a producer is connected to the stream right now (asked again while a request waits).
pub type Connected = Arc<dyn Fn() -> bool + Send + Sync>;

pub struct Hls {
    store: Store,
    config: HlsConfig,
    timing: Mutex<HashMap<i64, LiveTiming>>,
    cache: Mutex<SegmentCache>,
    archive_cache: Arc<ArchiveCache>,
}

/// An archive playlist's text and whether it is settled (see `archive_cache.rs`).
#[derive(Debug)]
pub struct ArchiveText {
    pub text: String,
    /// A VOD playlist (its end was at or before now when it was built).
    pub closed: bool,
    /// A fragment starting a segment at or after the range's end exists: every fragment stored
    /// later is numbered past the ones listed.
    pub bounded: bool,
}

/// Bytes of recently served complete segments (what every viewer of a live stream asks for).
const SEGMENT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A small LRU of segment bodies, dropped whole when media is removed from the store.
#[derive(Default)]
struct SegmentCache {
    /// By stream name (so a hit needs no index read at all) and first fragment. Deleting a
    /// stream bumps the removal generation, so a new stream of the same name never sees these.
    entries: HashMap<(String, i64), (Bytes, String)>,
    order: std::collections::VecDeque<(String, i64)>,
    bytes: usize,
    generation: u64,
}

impl SegmentCache {
    fn get(&mut self, stream: &str, first: i64, generation: u64) -> Option<(Bytes, String)> {
        if generation != self.generation {
            *self = SegmentCache {
                generation,
                ..Default::default()
            };
            return None;
        }
        self.entries.get(&(stream.to_string(), first)).cloned()
    }

    fn put(&mut self, stream: &str, first: i64, generation: u64, body: Bytes, etag: String) {
        if generation != self.generation || body.len() > SEGMENT_CACHE_BYTES / 4 {
            return;
        }
        let key = (stream.to_string(), first);
        if self.entries.contains_key(&key) {
            return;
        }
        self.bytes += body.len();
        self.entries.insert(key.clone(), (body, etag));
        self.order.push_back(key);
        while self.bytes > SEGMENT_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((b, _)) = self.entries.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }
}

/// `_HLS_msn` / `_HLS_part` of a blocking playlist reload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Blocking {
    pub msn: Option<i64>,
    pub part: Option<i64>,
}

impl Hls {
    pub fn new(store: Store, config: HlsConfig) -> Hls {
        let archive_cache = ArchiveCache::new();
        archive_cache.listen(store.subscribe());
        Hls {
            store,
            config,
            timing: Mutex::new(HashMap::new()),
            cache: Mutex::new(SegmentCache::default()),
            archive_cache,
        }
    }

    /// Taken before the first index read of an archive playlist that may be settled.
    pub fn archive_ticket(&self) -> Ticket {
        self.archive_cache.ticket(self.store.removal_generation())
    }

    /// A settled archive playlist built before and still valid: no index read at all.
    pub fn cached_archive(&self, key: &ArchiveKey) -> Option<CachedPlaylist> {
        self.archive_cache.get(key, self.store.removal_generation())
    }

    /// Drops a stream's cached archive playlists: its settings changed.
    pub fn forget_archive(&self, stream: &str) {
        self.archive_cache.forget_stream(stream);
    }

    /// The archive playlist of a settled range (`key`), from the cache or built, digested and
    /// kept; `None` when the range is not settled after all (then serve `built` as before).
    /// `ticket` was taken before `stream` was read.
    pub async fn settled_archive(
        &self,
        ticket: Ticket,
        key: ArchiveKey,
        stream: &StreamRow,
        start_us: Option<i64>,
        connected: bool,
    ) -> Result<std::result::Result<CachedPlaylist, ArchiveText>> {
        let ticket: StreamTicket = self.archive_cache.stream_ticket(ticket, stream.id);
        let built = self
            .archive(stream, start_us, Some(key.end_us), connected, &key.query)
            .await?;
        if !(built.closed && built.bounded) {
            return Ok(Err(built));
        }
        let playlist = tokio::task::spawn_blocking(move || CachedPlaylist::build(built.text))
            .await
            .map_err(|e| Error::internal(format!("playlist digest task: {e}")))?;
        self.archive_cache.put(
            ticket,
            self.store.removal_generation(),
            key,
            playlist.clone(),
        );
        Ok(Ok(playlist))
    }

    async fn live_view(&self, stream: &StreamRow, connected: bool) -> Result<LiveView> {
        let latest = self
            .store
            .latest_fragment(stream.id)
            .await?
            .ok_or_else(|| {
                Error::not_found(format!("stream '{}' has no media yet", stream.name))
            })?;
        let idle_us = (self.config.live_idle_secs as i64).saturating_mul(1_000_000);
        if !connected && self.store.now_us() - latest.server_time_us > idle_us {
            return Err(Error::not_found(format!(
                "stream '{}' is not live: no producer is connected and nothing was recorded in \
                 the last {} s; play the archive with archive.m3u8?start=...",
                stream.name, self.config.live_idle_secs
            )));
        }
        let window = self.config.live_window_segments.max(1) as i64;
        let from_seq = latest.segment_seq - 3 * window - 3;
        let rows = self
            .store
            .fragments_from_segment(stream.id, from_seq, LIVE_WINDOW_ROWS)
            .await?;
        let mut timing = self
            .timing
            .lock()
            .map_err(|_| Error::internal("timing lock"))?;
        let announced = timing.entry(stream.id).or_default();
        let view = window::live_view(
            group_segments(&rows),
            connected,
            self.config.live_window_segments,
            *announced,
            latest.segment_seq,
        );
        *announced = view.timing;
        Ok(view)
    }

    /// The live playlist; with `_HLS_msn` it waits until that segment (or part) is in it.
    pub async fn live(
        &self,
        stream: &StreamRow,
        connected: Connected,
        blocking: Blocking,
        query: &str,
    ) -> Result<String> {
        if blocking.part.is_some() && blocking.msn.is_none() {
            return Err(Error::invalid("_HLS_part needs _HLS_msn"));
        }
        let started = Instant::now();
        let mut events = self.store.subscribe();
        loop {
            let view = self.live_view(stream, connected()).await?;
            // A new stream's first playlist waits for its first complete segment, so the
            // target duration it announces is a measured one that will not change.
            if blocking.msn.is_none()
                && view.complete == 0
                && view.last_open
                && started.elapsed() < FIRST_SEGMENT_WAIT
            {
                let left = FIRST_SEGMENT_WAIT.saturating_sub(started.elapsed());
                wait_for_fragment(&mut events, stream.id, left).await;
                continue;
            }
            let Some(msn) = blocking.msn else {
                return Ok(view.render(query));
            };
            if view.satisfies(msn, blocking.part) {
                return Ok(view.render(query));
            }
            if msn > view.newest_seq + 2 {
                return Err(Error::invalid(format!(
                    "_HLS_msn={msn} is more than two segments ahead of the newest segment ({})",
                    view.newest_seq
                )));
            }
            let limit = Duration::from_secs(3 * view.timing.target_duration_s.max(1));
            let Some(left) = limit.checked_sub(started.elapsed()) else {
                return Err(Error::unavailable(format!(
                    "segment {msn} did not become available within three target durations ({} s)",
                    limit.as_secs()
                )));
            };
            wait_for_fragment(&mut events, stream.id, left).await;
        }
    }

    /// The number of the first fragment starting a segment at or after `end_us` (`i64::MAX`
    /// when there is none yet): every fragment of the segments starting before `end_us` is
    /// numbered below it, so a short range deep in a long history reads just its own rows.
    async fn segments_below(&self, stream_id: i64, end_us: i64) -> Result<i64> {
        if end_us == i64::MAX {
            return Ok(i64::MAX);
        }
        Ok(self
            .store
            .segment_start_at_or_after(stream_id, end_us)
            .await?
            .unwrap_or(i64::MAX))
    }

    /// Walks, a page of rows at a time, the whole segments that overlap `[start_us, end_us)`
    /// from fragment `from_number` on, reading fragments numbered below `below`: a segment is
    /// listed whole even when `end_us` cuts it, since its URI serves all of it.
    async fn for_each_segment(
        &self,
        stream_id: i64,
        (from_number, below): (i64, i64),
        start_us: i64,
        end_us: i64,
        mut f: impl FnMut(Segment),
    ) -> Result<()> {
        let mut next = from_number;
        let mut carry: Vec<FragmentRow> = Vec::new();
        loop {
            let rows = self
                .store
                .fragments_between(stream_id, next, below, ARCHIVE_PAGE_ROWS)
                .await?;
            let full = rows.len() == ARCHIVE_PAGE_ROWS as usize;
            if let Some(last) = rows.last() {
                next = last.number + 1;
            }
            carry.extend(rows);
            let mut segs = group_segments(&carry);
            if full {
                // The last segment may go on in the next page.
                if let Some(last) = segs.pop() {
                    carry.retain(|r| r.number >= last.first_fragment);
                }
            } else {
                carry.clear();
            }
            for s in segs {
                if s.start_us >= end_us {
                    return Ok(());
                }
                if s.end_us() > start_us {
                    f(s);
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// A VOD playlist of `[start, end)`, or an EVENT playlist growing into live when `end` is
    /// open or still in the future. Ranges of any length: rows are read a page at a time.
    pub async fn archive(
        &self,
        stream: &StreamRow,
        start_us: Option<i64>,
        end_us: Option<i64>,
        connected: bool,
        query: &str,
    ) -> Result<ArchiveText> {
        let start_us = start_us.or(stream.first_producer_us).unwrap_or(0);
        if let Some(end) = end_us {
            if end <= start_us {
                return Err(Error::invalid("'end' must be after 'start'"));
            }
        }
        let no_media = || {
            Error::not_found(format!(
                "stream '{}' has no media in that range",
                stream.name
            ))
        };
        let first = self
            .store
            .segment_start_near(stream.id, start_us)
            .await?
            .ok_or_else(no_media)?;
        let end = end_us.unwrap_or(i64::MAX);
        if first.producer_start_us >= end {
            return Err(no_media());
        }
        let closed = end_us.is_some_and(|e| e <= self.store.now_us());
        let below = self.segments_below(stream.id, end).await?;
        let numbers = (first.number, below);
        // Pass 1: the target duration, which the header needs before any segment. Up to
        // MEMORY_SEGMENTS segments are kept for pass 2; a longer range is read again.
        let mut td = 1;
        let mut count = 0usize;
        let mut low_latency = false;
        let mut last: Option<Segment> = None;
        let mut kept: Vec<Segment> = Vec::new();
        self.for_each_segment(stream.id, numbers, start_us, end, |s| {
            td = td.max(playlist::rounded_secs(s.duration_us));
            low_latency |= s.parts.len() > 1;
            count += 1;
            if count <= MEMORY_SEGMENTS {
                kept.push(s.clone());
            } else {
                kept.clear();
            }
            last = Some(s);
        })
        .await?;
        if count == 0 {
            return Err(no_media());
        }
        // A segment still being recorded is left out until it is complete.
        let latest = self.store.latest_fragment(stream.id).await?;
        let skip_last = !closed
            && connected
            && low_latency
            && last
                .as_ref()
                .zip(latest.as_ref())
                .is_some_and(|(s, l)| s.last_fragment() == l.number);
        let take = count - usize::from(skip_last);
        // Pass 2: the text, segment by segment.
        let mut out = String::with_capacity(256 + take * 100);
        let mut prev: Option<Segment> = None;
        let mut written = 0usize;
        let kind = if closed { Kind::Vod } else { Kind::Event };
        let mut write = |s: Segment| {
            if written == take {
                return;
            }
            if prev.is_none() {
                playlist::write_header(&mut out, kind, td, None, Some(&s));
            }
            playlist::write_segment(&mut out, &s, prev.as_ref(), false, false, query);
            written += 1;
            prev = Some(s);
        };
        if count <= MEMORY_SEGMENTS {
            kept.into_iter().for_each(&mut write);
        } else {
            self.for_each_segment(stream.id, numbers, start_us, end, &mut write)
                .await?;
        }
        if prev.is_none() {
            return Err(no_media());
        }
        if kind == Kind::Vod {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        Ok(ArchiveText {
            text: out,
            closed,
            bounded: below != i64::MAX,
        })
    }

    /// The multivariant playlist: one variant, the stream as recorded.
    pub async fn master(&self, stream: &StreamRow, query: &str) -> Result<String> {
        let no_media = || Error::not_found(format!("stream '{}' has no media yet", stream.name));
        let init_id = stream.last_init_id.ok_or_else(no_media)?;
        let init = self
            .store
            .init(stream.id, init_id)
            .await?
            .ok_or_else(no_media)?;
        let latest = self
            .store
            .latest_fragment(stream.id)
            .await?
            .ok_or_else(no_media)?;
        let rows = self
            .store
            .fragments_from_segment(
                stream.id,
                latest.segment_seq - BANDWIDTH_SEGMENTS,
                LIVE_WINDOW_ROWS,
            )
            .await?;
        let segs = group_segments(&rows);
        let bps = |bytes: i64, us: i64| (bytes.max(0) as u64 * 8 * 1_000_000) / us.max(1) as u64;
        let peak = segs
            .iter()
            .map(|s| bps(s.size_bytes, s.duration_us))
            .max()
            .unwrap_or(0);
        let total_bytes: i64 = segs.iter().map(|s| s.size_bytes).sum();
        let total_us: i64 = segs.iter().map(|s| s.duration_us).sum();
        let video = init.tracks.iter().find(|t| t.kind == "video");
        let uri = format!("live.m3u8{query}");
        Ok(playlist::master_playlist(&Variant {
            uri: &uri,
            peak_bandwidth_bps: peak,
            average_bandwidth_bps: bps(total_bytes, total_us),
            codecs: &init.codecs,
            resolution: video.and_then(|v| Some((v.width?, v.height?))),
            frame_rate: None,
        }))
    }

    /// A complete segment served before and still stored: no index read needed.
    pub fn cached_segment(&self, stream: &str, first: i64) -> Option<(Bytes, String)> {
        let generation = self.store.removal_generation();
        self.cache.lock().ok()?.get(stream, first, generation)
    }

    /// The bytes of the segment starting at fragment `first`, once it is complete, and its ETag.
    /// Complete segments never change, so recent ones are served from memory.
    pub async fn segment(
        &self,
        stream: &StreamRow,
        first: i64,
        connected: bool,
    ) -> Result<(Bytes, String)> {
        let generation = self.store.removal_generation();
        if let Some(hit) = self.cached_segment(&stream.name, first) {
            return Ok(hit);
        }
        let Some((rows, body, newest)) = self.store.read_segment(stream.id, first).await? else {
            return Err(Error::not_found(format!(
                "stream '{}' has no segment starting at fragment {first}",
                stream.name
            )));
        };
        let last = rows.last().map_or(first, |r| r.number);
        if connected && newest == last && !self.newest_is_gop_fragment(stream.id).await? {
            // With a producer connected, the newest segment may still grow.
            return Err(Error::not_found(format!(
                "segment {first} is still being recorded; it is listed in live.m3u8 once complete"
            )));
        }
        let etag = format!("\"{}-s{}-{}\"", stream.id, first, last);
        if let Ok(mut c) = self.cache.lock() {
            c.put(&stream.name, first, generation, body.clone(), etag.clone());
        }
        Ok((body, etag))
    }

    async fn newest_is_gop_fragment(&self, stream_id: i64) -> Result<bool> {
        let Some(latest) = self.store.latest_fragment(stream_id).await? else {
            return Ok(false);
        };
        let rows = self
            .store
            .fragments_from_segment(stream_id, latest.segment_seq - 2, LIVE_WINDOW_ROWS)
            .await?;
        Ok(one_fragment_per_segment(&group_segments(&rows)))
    }

    /// Part `i` of the segment starting at fragment `n`: fragment `n + i`. A part announced by
    /// a preload hint may be asked for before it exists: the request waits for it (up to three
    /// target durations) while a producer is connected.
    pub async fn part(
        &self,
        stream: &StreamRow,
        n: i64,
        i: i64,
        connected: Connected,
    ) -> Result<(Bytes, String)> {
        let number = n
            .checked_add(i)
            .filter(|_| i >= 0)
            .ok_or_else(|| Error::invalid("bad part index"))?;
        let started = Instant::now();
        let mut events = self.store.subscribe();
        loop {
            if let Some(row) = self.store.fragment(stream.id, number).await? {
                let bytes = self.store.fragment_bytes(&row).await?;
                return Ok((bytes, format!("\"{}-p{}\"", stream.id, number)));
            }
            let latest = self.store.latest_fragment(stream.id).await?;
            let next_expected = latest.as_ref().map_or(1, |l| l.number + 1);
            if number > next_expected + 1 || !connected() {
                return Err(Error::not_found(format!(
                    "stream '{}' has no fragment {number} (part {i} of segment {n})",
                    stream.name
                )));
            }
            let td = self
                .timing
                .lock()
                .ok()
                .and_then(|m| m.get(&stream.id).map(|t| t.target_duration_s))
                .unwrap_or(2)
                .max(1);
            let limit = Duration::from_secs(3 * td);
            let Some(left) = limit.checked_sub(started.elapsed()) else {
                return Err(Error::unavailable(format!(
                    "part {n}.{i} did not become available within {} s",
                    limit.as_secs()
                )));
            };
            wait_for_fragment(&mut events, stream.id, left).await;
        }
    }

    pub async fn init(&self, stream: &StreamRow, init_id: i64) -> Result<(Bytes, String)> {
        let bytes = self
            .store
            .init_bytes(stream.id, init_id)
            .await?
            .ok_or_else(|| {
                Error::not_found(format!("stream '{}' has no init {init_id}", stream.name))
            })?;
        Ok((bytes, format!("\"{}-i{}\"", stream.id, init_id)))
    }
}

/// Waits until a fragment of the stream is persisted, or `timeout` passes.
async fn wait_for_fragment(
    events: &mut tokio::sync::broadcast::Receiver<StoreEvent>,
    stream_id: i64,
    timeout: Duration,
) {
    let _ = tokio::time::timeout(timeout, async {
        loop {
            match events.recv().await {
                Ok(StoreEvent::FragmentPersisted(r)) if r.stream_id == stream_id => return,
                Ok(_) => {}
                // Missed events: recheck the index.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await
                }
            }
        }
    })
    .await;
}
