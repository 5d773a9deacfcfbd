//! Segment-file ingest, as ffmpeg's `-f hls -hls_segment_type fmp4 -method PUT` and `-f dash
//! -method PUT` send it: an init file, then media segment files (with `styp`/`sidx` before the
//! `moof`), and playlists/manifests (accepted and ignored: tapedeck makes its own), plus DELETEs
//! of old segments (accepted, no effect: retention is ours).
//!
//! The uploads to one stream form one session (a "series") until they pause for longer than
//! `ingest.idle_timeout_secs`. A re-sent identical fragment (same session, same bytes) is
//! stored once.

use super::session::{Opening, Session, Summary};
use super::Ingest;
use crate::error::{Error, Kind, Result};
use crate::fmp4::{Event, Splitter};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest playlist/manifest body read (and discarded).
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// How many recent fragment digests a series remembers to drop re-sent fragments.
const RECENT_DIGESTS: usize = 256;

pub(crate) struct Series {
    session: Session,
    last_activity: Instant,
    recent: VecDeque<([u8; 32], i64)>,
}

impl Series {
    pub(crate) fn is_expired(&self, idle: Duration) -> bool {
        self.last_activity.elapsed() > idle
    }
}

#[derive(Debug, Serialize)]
pub struct SegmentOutcome {
    /// What the file was taken as: "init", "media", "manifest".
    pub kind: &'static str,
    pub session: Option<i64>,
    /// Numbers of the fragments stored from this file.
    pub fragments: Vec<i64>,
    /// Fragments that were already stored (re-sent) and were not stored again.
    pub duplicates: Vec<i64>,
}

async fn drain_manifest<S, E>(file: &str, mut body: S) -> Result<SegmentOutcome>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let mut total = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| Error::invalid(format!("the upload was interrupted: {e}")))?;
        total += chunk.len();
        if total > MAX_MANIFEST_BYTES {
            return Err(Error::new(
                Kind::TooLarge,
                format!("playlist '{file}' is over {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
    }
    Ok(SegmentOutcome {
        kind: "manifest",
        session: None,
        fragments: vec![],
        duplicates: vec![],
    })
}

/// The producer (ffmpeg) never reads the answer: the log is where a refused file shows.
fn warn_refused(stream: &str, file: &str, e: &Error) {
    tracing::warn!(stream, file, code = e.kind.code(), error = %e.message, "segment file refused");
}

fn is_manifest(file: &str) -> bool {
    let f = file.to_ascii_lowercase();
    f.contains(".m3u8") || f.contains(".mpd")
}

/// The per-stream place where segment files queue up. Files are processed one at a time in the
/// order their connections were accepted: ffmpeg does not wait for one file's response before
/// sending the next, so the init and several segments arrive at once on separate connections,
/// and their requests may reach the handler in another order than they were sent.
#[derive(Default)]
pub(crate) struct SeriesSlot {
    /// Files waiting or in progress, by (connection accept order, arrival order).
    waiting: std::sync::Mutex<BTreeSet<(u64, u64)>>,
    arrivals: AtomicU64,
    turn: tokio::sync::Notify,
    pub(crate) series: tokio::sync::Mutex<Option<Series>>,
}

/// How long a file waits for files sent before it (on connections accepted earlier) to show up.
/// Requests of consecutive connections reach the handler within microseconds of each other;
/// this covers scheduling delays with a wide margin at the cost of 25 ms per file.
const REORDER_WINDOW: Duration = Duration::from_millis(25);

/// Leaves the queue however the file's processing ends, and wakes the next one.
struct Leave<'a>(&'a SeriesSlot, (u64, u64));

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.0.waiting.lock() {
            w.remove(&self.1);
        }
        self.0.turn.notify_waiters();
    }
}

impl Ingest {
    /// Queues a segment file for its stream and processes it on its own task, so that a client
    /// that closes its connection without reading the response (ffmpeg does) cannot cancel the
    /// processing half-way. `accept_seq` orders files (see [`SeriesSlot`]); `first_on_connection`
    /// says whether files on other connections may still have to go first (a later request on
    /// a keep-alive connection was sent after the earlier ones, which are already queued).
    pub fn segment_file<S, E>(
        &self,
        name: &str,
        file: &str,
        remote: Option<String>,
        accept_seq: u64,
        first_on_connection: bool,
        body: S,
    ) -> tokio::task::JoinHandle<Result<SegmentOutcome>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let ingest = self.clone();
        let (name, file) = (name.to_string(), file.to_string());
        let arrived_us = self.inner.store.now_us();
        if is_manifest(&file) {
            return tokio::spawn(async move {
                let result = drain_manifest(&file, body).await;
                if let Err(e) = &result {
                    warn_refused(&name, &file, e);
                }
                result
            });
        }
        let slot = self.series_for(&name);
        let key = (accept_seq, slot.arrivals.fetch_add(1, Ordering::SeqCst));
        if let Ok(mut w) = slot.waiting.lock() {
            w.insert(key);
        }
        tokio::spawn(async move {
            let _leave = Leave(&slot, key);
            if first_on_connection {
                tokio::time::sleep(REORDER_WINDOW).await;
            }
            loop {
                let notified = slot.turn.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let first = slot.waiting.lock().ok().and_then(|w| w.first().copied());
                if first == Some(key) {
                    break;
                }
                notified.await;
            }
            let mut guard = slot.series.lock().await;
            let result = ingest
                .segment_file_in_turn(&name, &file, remote, arrived_us, body, &mut guard)
                .await;
            if let Err(e) = &result {
                warn_refused(&name, &file, e);
            }
            result
        })
    }

    async fn segment_file_in_turn<S, E>(
        &self,
        name: &str,
        file: &str,
        remote: Option<String>,
        arrived_us: i64,
        mut body: S,
        guard: &mut Option<Series>,
    ) -> Result<SegmentOutcome>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        // Creates nothing: the series' session opens the stream at its first fragment.
        let stream = self.check_stream(name).await?;
        let fresh = match guard.as_ref() {
            Some(s) => {
                s.is_expired(self.idle_timeout())
                    || match (s.session.stream_id(), &stream) {
                        // Deleted (and perhaps created again) since the series began.
                        (Some(id), Some(now)) => id != now.id,
                        (Some(_), None) => true,
                        // Not open yet (an init file so far): it opens into whatever is there.
                        (None, _) => false,
                    }
            }
            None => true,
        };
        if fresh {
            if let Some(old) = guard.take() {
                self.end_series(old, "idle: no segment for ingest.idle_timeout_secs")
                    .await;
            }
            *guard = Some(Series {
                session: Session::new(
                    self,
                    name,
                    Opening {
                        kind: "segments",
                        remote,
                        connected_us: arrived_us,
                        producer_start_us: None,
                    },
                )
                .collecting_acked(),
                last_activity: Instant::now(),
                recent: VecDeque::new(),
            });
        }
        let series = guard.as_mut().expect("set above");
        series.last_activity = Instant::now();
        let result = self.feed_file(series, file, &mut body).await;
        series.last_activity = Instant::now();
        result
    }

    async fn feed_file<S, E>(
        &self,
        series: &mut Series,
        file: &str,
        body: &mut S,
    ) -> Result<SegmentOutcome>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        use sha2::Digest;
        let mut splitter = Splitter::new(self.inner.config.ingest.max_fragment_bytes);
        let mut events = Vec::new();
        // A segment file has no init of its own: put the series' init in front of it.
        let had_init = match series.session.init_bytes() {
            Some(init) => {
                splitter.push(&init, &mut events)?;
                events.clear();
                true
            }
            None => false,
        };
        let mut saw_init = false;
        let mut duplicates = Vec::new();
        let refused_before = series.session.summary.refused;
        let sink = None;
        // Refused fragments count themselves (`Session::refuse`); these are the file's own errors.
        let counters = series.session.counters.clone();
        let fail = |e: Error| {
            counters.error(e.kind);
            self.file_error(file, e, had_init)
        };
        // Read and store the whole file; whatever ends it, the fragments it appended are
        // acknowledged before the answer, and an error is still the answer.
        let read: Result<()> = async {
            loop {
                let chunk = match body.next().await {
                    None => break,
                    Some(Err(e)) => {
                        let e =
                            Error::invalid(format!("the upload of '{file}' was interrupted: {e}"));
                        counters.error(e.kind);
                        return Err(e);
                    }
                    Some(Ok(c)) => c,
                };
                let received_us = self.inner.store.now_us();
                // As in the long upload: what the splitter completed before an error is kept.
                let split = splitter.push(&chunk, &mut events);
                for ev in events.drain(..) {
                    let tag = match &ev {
                        Event::Init { .. } => {
                            saw_init = true;
                            None
                        }
                        Event::Fragment(raw) => {
                            let digest: [u8; 32] = sha2::Sha256::digest(&raw.bytes).into();
                            if let Some((_, n)) = series.recent.iter().find(|(d, _)| *d == digest) {
                                duplicates.push(*n);
                                continue;
                            }
                            Some(digest)
                        }
                    };
                    series
                        .session
                        .handle(ev, tag, received_us, &sink)
                        .await
                        .map_err(fail)?;
                }
                split.map_err(|e| fail(e.into()))?;
            }
            splitter.finish().map_err(|e| fail(e.into()))
        }
        .await;
        series.session.finish(&sink).await;
        let mut fragments = Vec::new();
        for (tag, row) in series.session.take_acked() {
            if let Some(d) = tag {
                if series.recent.len() == RECENT_DIGESTS {
                    series.recent.pop_front();
                }
                series.recent.push_back((d, row.number));
            }
            fragments.push(row.number);
        }
        read?;
        let s = &series.session.summary;
        if s.refused > refused_before {
            let e = Error::new(
                s.first_error_kind.unwrap_or(Kind::InvalidArgument),
                format!("'{file}': {}", s.first_error.clone().unwrap_or_default()),
            );
            return Err(e);
        }
        let kind = if saw_init && fragments.is_empty() && duplicates.is_empty() {
            "init"
        } else {
            "media"
        };
        Ok(SegmentOutcome {
            kind,
            session: series.session.session_id(),
            fragments,
            duplicates,
        })
    }

    fn file_error(&self, file: &str, e: Error, had_init: bool) -> Error {
        let hint = if !had_init && e.kind == Kind::FailedPrecondition {
            " (upload the init file, e.g. init.mp4, before the segments)"
        } else {
            ""
        };
        Error::new(e.kind, format!("'{file}': {}{hint}", e.message))
    }

    pub(crate) fn series_for(&self, name: &str) -> Arc<SeriesSlot> {
        let mut map = self.inner.series.lock().expect("series map lock");
        map.entry(name.to_string()).or_default().clone()
    }

    async fn end_series(&self, mut series: Series, reason: &str) {
        series.session.finish(&None).await;
        let summary: &Summary = &series.session.summary;
        tracing::info!(stream = %summary.stream, session = ?summary.session, fragments = summary.fragments, "segment series ended");
        let Some(session_id) = series.session.session_id() else {
            return;
        };
        if let Err(e) = self
            .inner
            .store
            .end_session(session_id, reason.to_string())
            .await
        {
            tracing::warn!(error = %e, "could not record session end");
        }
    }

    /// Ends series that have been idle past the timeout, so their sessions show as ended.
    pub(crate) async fn reap_idle_series(&self) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            // Slots stay in the map (one small entry per stream): removing one could let two
            // slots, and so two sessions, exist for a stream at once.
            let all: Vec<Arc<SeriesSlot>> = match self.inner.series.lock() {
                Ok(m) => m.values().cloned().collect(),
                Err(_) => continue,
            };
            for series in all {
                let Ok(mut guard) = series.series.try_lock() else {
                    continue;
                };
                if guard
                    .as_ref()
                    .is_some_and(|s| s.is_expired(self.idle_timeout()))
                {
                    if let Some(s) = guard.take() {
                        self.end_series(s, "idle: no segment for ingest.idle_timeout_secs")
                            .await;
                    }
                }
            }
        }
        // Shutdown: close every open series.
        let all: Vec<_> = self
            .inner
            .series
            .lock()
            .map(|mut m| m.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        for series in all {
            if let Some(s) = series.series.lock().await.take() {
                self.end_series(s, "server shutting down").await;
            }
        }
    }
}
