//! One ingest session's fragment pipeline: init handling, timeline placement, `tfdt` rewriting,
//! appending to the store, and acks in fragment order. Shared by the long upload and the
//! segment-file series.
//!
//! A session opens its stream (creating it when `ingest.auto_create` allows) and its session
//! row only when its first fragment arrives; an init before that is held in memory. So an upload
//! refused before it carried media (a progressive MP4, garbage, a bad init) leaves no stream
//! and no session behind.

use super::placement::{Anchor, Placement, SessionTimeline, TrackSpan};
use super::Ingest;
use crate::error::{Error, Kind, Result};
use crate::fmp4::{self, Event, InitFacts, RawFragment};
use crate::metrics::IngestCounters;
use crate::store::{FragmentRow, InitToStore, NewFragment, Store, TrackSummary};
use crate::timefmt::format_us;
use bytes::Bytes;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Fragments appended but not yet acknowledged, per session, bounded by count and bytes. Bounds
/// the memory one producer can hold while the disk is slow (past it, reading its body waits for
/// acks) while leaving enough in flight for a fast producer to fill whole commit groups.
const MAX_INFLIGHT: usize = 64;
const MAX_INFLIGHT_BYTES: usize = 32 * 1024 * 1024;

/// Where ack lines go (the NDJSON response), if anywhere.
pub type Sink = Option<mpsc::Sender<Bytes>>;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// `None` when no fragment arrived, so no session was opened.
    pub session: Option<i64>,
    pub stream: String,
    pub first_fragment: Option<i64>,
    pub last_fragment: Option<i64>,
    pub fragments: u64,
    pub bytes: u64,
    pub media_duration_us: i64,
    /// Fragments refused (bad timestamps, undecodable, not stored).
    pub refused: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    #[serde(skip)]
    pub first_error_kind: Option<Kind>,
}

struct CurrentInit {
    id: i64,
    facts: Arc<InitFacts>,
    bytes: Bytes,
}

struct Inflight {
    tag: Option<[u8; 32]>,
    /// When the splitter had the fragment's last byte: the start of its ack latency.
    received: Instant,
    size_bytes: usize,
    rx: oneshot::Receiver<Result<FragmentRow>>,
    /// The fragment's share of the ingest budget, given back with its ack.
    _reserved: super::budget::Reservation,
}

/// What a session needs to open its stream and its session row at its first fragment.
pub struct Opening {
    /// `upload` or `segments` (the sessions table's `kind`).
    pub kind: &'static str,
    pub remote: Option<String>,
    /// When the producer connected: the session's start time, and the earliest producer time
    /// its first fragment may get from the server clock (see [`Anchor::ServerClock`]).
    pub connected_us: i64,
    /// How producer time is derived when fragments carry none; `None`: from the server clock.
    pub producer_start_us: Option<i64>,
}

/// The stream and session row, once the first fragment opened them.
struct Opened {
    stream_id: i64,
    session_id: i64,
    timeline: SessionTimeline,
}

pub struct Session {
    store: Store,
    ingest: Ingest,
    opening: Opening,
    opened: Option<Opened>,
    /// An init received before the session opened: stored when it opens.
    pending_init: Option<(Bytes, InitFacts)>,
    init: Option<CurrentInit>,
    /// Told once, when the first fragment is durable (the long upload waits for it before it
    /// answers, so a success status means media was stored).
    on_first_stored: Option<oneshot::Sender<()>>,
    inflight: VecDeque<Inflight>,
    inflight_bytes: usize,
    pub summary: Summary,
    /// The ingest budget held this session back past `ingest.max_hold_back_secs`.
    pub held_back: bool,
    /// The budget share taken for the fragment whose mdat is arriving (by its stream offset),
    /// before its bytes were read: see [`Session::reserve_ahead`].
    reserved_ahead: Option<(u64, super::budget::Reservation)>,
    /// The stream's ingest metrics.
    pub counters: IngestCounters,
    /// Rows acknowledged since the last `take_acked`, with the tag given at append; kept only
    /// when the caller asked for them (segment files), since a long upload never takes them
    /// and would otherwise hold one row per fragment for as long as the camera stays connected.
    acked: Vec<(Option<[u8; 32]>, FragmentRow)>,
    collect_acked: bool,
}

pub async fn send_line(sink: &Sink, value: serde_json::Value) {
    if let Some(tx) = sink {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        // A client that stopped reading its acks does not stop the ingest.
        let _ = tx.send(Bytes::from(line)).await;
    }
}

pub fn fragment_json(r: &FragmentRow) -> serde_json::Value {
    serde_json::json!({
        "fragment": r.number,
        "producer_time": format_us(r.producer_start_us),
        "producer_time_us": r.producer_start_us,
        "server_time": format_us(r.server_time_us),
        "server_time_us": r.server_time_us,
        "duration_us": r.duration_us,
        "keyframe": r.keyframe,
        "video": r.has_video,
        "size_bytes": r.size_bytes,
        "session": r.session_id,
        "init": r.init_id,
    })
}

impl Session {
    /// A session into `stream_name` that opens at its first fragment (see the module doc).
    pub fn new(ingest: &Ingest, stream_name: &str, opening: Opening) -> Self {
        Session {
            store: ingest.store().clone(),
            ingest: ingest.clone(),
            opening,
            opened: None,
            pending_init: None,
            init: None,
            on_first_stored: None,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            summary: Summary {
                stream: stream_name.to_string(),
                ..Default::default()
            },
            held_back: false,
            reserved_ahead: None,
            counters: ingest.counters(stream_name),
            acked: Vec::new(),
            collect_acked: false,
        }
    }

    /// Tells `tx` when the session's first fragment is durable.
    pub fn telling_first_stored(mut self, tx: oneshot::Sender<()>) -> Self {
        self.on_first_stored = Some(tx);
        self
    }

    /// The session row, once the first fragment opened it.
    pub fn session_id(&self) -> Option<i64> {
        self.opened.as_ref().map(|o| o.session_id)
    }

    /// The stream the session stores into, once open.
    pub fn stream_id(&self) -> Option<i64> {
        self.opened.as_ref().map(|o| o.stream_id)
    }

    /// Opens the stream (creating it if allowed) and the session row, stores the init held
    /// back until now, and says so on the ack stream: one store call, so a thousand cameras
    /// starting at once queue a thousand opens on the writer, not three thousand.
    async fn open(&mut self, sink: &Sink) -> Result<()> {
        let name = self.summary.stream.clone();
        let Some((bytes, facts)) = self.pending_init.take() else {
            return Err(fmp4::Fmp4Error::MediaBeforeInit.into());
        };
        // Opened now, not when the producer connected: a previous producer of the stream has
        // finished by now (the upload's claim), so the stream's end is final.
        let opened = self
            .ingest
            .open_session(&name, &self.opening, init_to_store(&bytes, &facts))
            .await?;
        let o = &self.opening;
        let anchor = o.producer_start_us.map_or(
            Anchor::ServerClock {
                connected_us: o.connected_us,
            },
            Anchor::ProducerStart,
        );
        let session_id = opened.session_id;
        tracing::info!(stream = %name, session = session_id, kind = o.kind, remote = ?o.remote, "ingest session started");
        self.summary.session = Some(session_id);
        self.opened = Some(Opened {
            stream_id: opened.stream.id,
            session_id,
            timeline: SessionTimeline::new(
                anchor,
                opened.stream.last_end_us,
                self.ingest.jitter_tolerance_us(),
            ),
        });
        self.init = Some(CurrentInit {
            id: opened.init_id,
            facts: Arc::new(facts),
            bytes,
        });
        send_line(
            sink,
            serde_json::json!({"event": "session_started", "session": session_id, "stream": name}),
        )
        .await;
        Ok(())
    }

    /// Keeps acknowledged rows for [`Session::take_acked`].
    pub fn collecting_acked(mut self) -> Self {
        self.collect_acked = true;
        self
    }

    /// The init the session's fragments need (stored or still held back).
    pub fn init_bytes(&self) -> Option<Bytes> {
        match (&self.init, &self.pending_init) {
            (_, Some((bytes, _))) => Some(bytes.clone()),
            (Some(i), None) => Some(i.bytes.clone()),
            (None, None) => None,
        }
    }

    pub fn refuse(&mut self, e: &Error) {
        self.counters.error(e.kind);
        self.summary.refused += 1;
        if self.summary.first_error.is_none() {
            self.summary.first_error = Some(e.message.clone());
            self.summary.first_error_kind = Some(e.kind);
        }
    }

    /// Handles one splitter event; `received_us` is the server time the chunk that completed
    /// it arrived. `Err` means the session cannot go on.
    pub async fn handle(
        &mut self,
        event: Event,
        tag: Option<[u8; 32]>,
        received_us: i64,
        sink: &Sink,
    ) -> Result<()> {
        match event {
            Event::Init { bytes, facts } => self.on_init(bytes, facts).await,
            Event::Fragment(raw) => self.on_fragment(raw, tag, received_us, sink).await,
        }
    }

    async fn on_init(&mut self, bytes: Bytes, facts: InitFacts) -> Result<()> {
        if self.init_bytes().is_some_and(|cur| cur == bytes) {
            return Ok(());
        }
        if facts.tracks.is_empty() {
            return Err(Error::new(
                Kind::UnsupportedMedia,
                "the init segment has no tracks",
            ));
        }
        if self.opened.is_none() {
            self.pending_init = Some((bytes, facts));
            return Ok(());
        }
        self.store_init(bytes, facts).await
    }

    async fn store_init(&mut self, bytes: Bytes, facts: InitFacts) -> Result<()> {
        let Some(stream_id) = self.stream_id() else {
            return Err(Error::internal(
                "an init was stored before its session opened",
            ));
        };
        let id = self
            .store
            .put_init(stream_id, init_to_store(&bytes, &facts))
            .await?;
        self.init = Some(CurrentInit {
            id,
            facts: Arc::new(facts),
            bytes,
        });
        Ok(())
    }

    async fn on_fragment(
        &mut self,
        raw: RawFragment,
        tag: Option<[u8; 32]>,
        received_us: i64,
        sink: &Sink,
    ) -> Result<()> {
        let received = Instant::now();
        // Taken first, so that a refused fragment gives its share back at once.
        let ahead = self
            .reserved_ahead
            .take()
            .filter(|(offset, _)| *offset == raw.stream_offset);
        if self.init.is_none() && self.pending_init.is_none() {
            return Err(fmp4::Fmp4Error::MediaBeforeInit.into());
        }
        if self.opened.is_none() {
            self.open(sink).await?;
        }
        let Some(init) = &self.init else {
            return Err(fmp4::Fmp4Error::MediaBeforeInit.into());
        };
        let init_id = init.id;
        let facts_init = init.facts.clone();
        let placed = self.place(&facts_init, &raw, received_us);
        let (new_fragment, placement, spans) = match placed {
            Ok(p) => p,
            Err(e) => {
                send_line(sink, error_json(&e, Some(raw.stream_offset))).await;
                tracing::warn!(session = ?self.session_id(), error = %e, "fragment refused");
                self.refuse(&e);
                return Ok(());
            }
        };
        let size_bytes = new_fragment.bytes.len();
        // The placed copy is what is stored: the received bytes go before any waiting, so a
        // held-back producer holds one copy of its fragment, not two.
        let stream_offset = raw.stream_offset;
        drop(raw);
        let reserved = match ahead {
            Some((_, r)) => r,
            None => {
                self.wait_for_budget(size_bytes, stream_offset, sink)
                    .await?
            }
        };
        let rx = self.store.append(NewFragment {
            init_id,
            ..new_fragment
        })?;
        if let Some(o) = self.opened.as_mut() {
            o.timeline.commit(placement, &spans);
        }
        self.inflight.push_back(Inflight {
            tag,
            received,
            size_bytes,
            rx,
            _reserved: reserved,
        });
        self.inflight_bytes += size_bytes;
        while self.inflight.len() >= MAX_INFLIGHT || self.inflight_bytes >= MAX_INFLIGHT_BYTES {
            self.ack_front(sink).await;
        }
        self.drain_ready(sink).await;
        Ok(())
    }

    /// Takes the budget share of the fragment at `stream_offset` (`bytes` long, moof + mdat)
    /// whose mdat has begun, before the caller reads the rest of it: a producer held back at
    /// the budget then holds its moof, not a whole fragment (a thousand held-back cameras held
    /// half a gigabyte of fragments that way). Nothing can wedge on it: a share taken ahead
    /// belongs to a producer that is read from, so its fragment completes (or the producer
    /// goes idle and is disconnected) and the share comes back with the ack.
    pub async fn reserve_ahead(
        &mut self,
        stream_offset: u64,
        bytes: u64,
        sink: &Sink,
    ) -> Result<()> {
        if self
            .reserved_ahead
            .as_ref()
            .is_some_and(|(offset, _)| *offset == stream_offset)
        {
            return Ok(());
        }
        let size = usize::try_from(bytes).unwrap_or(usize::MAX);
        let r = self.wait_for_budget(size, stream_offset, sink).await?;
        self.reserved_ahead = Some((stream_offset, r));
        Ok(())
    }

    /// Waits for `size_bytes` of the budget. Waiting is the backpressure: the caller reads no
    /// more of this producer's socket until it has them. Meanwhile its earlier fragments'
    /// acks still go out, which also gives their bytes back to the budget.
    async fn wait_for_budget(
        &mut self,
        size_bytes: usize,
        stream_offset: u64,
        sink: &Sink,
    ) -> Result<super::budget::Reservation> {
        let ingest = self.ingest.clone();
        let reserve = ingest.inner.budget.reserve(size_bytes);
        tokio::pin!(reserve);
        let reserved = loop {
            tokio::select! {
                r = &mut reserve => break r,
                ack = self.oldest_ack(), if self.has_inflight() => {
                    self.take_oldest(ack, sink).await;
                }
            }
        };
        reserved.map_err(|e| {
            self.held_back = true;
            Error::new(
                e.kind,
                format!(
                    "{}; the fragment at byte {} and everything after it were not stored",
                    e.message, stream_offset
                ),
            )
        })
    }

    /// Facts, placement and rewrite of one fragment (whose last byte arrived at
    /// `received_us`); any error refuses just this fragment. Only called once open.
    fn place(
        &self,
        init: &InitFacts,
        raw: &RawFragment,
        received_us: i64,
    ) -> Result<(NewFragment, Placement, Vec<TrackSpan>)> {
        let opened = self
            .opened
            .as_ref()
            .ok_or_else(|| Error::internal("a fragment was placed before its session opened"))?;
        let facts = fmp4::fragment_facts_at(init, &raw.bytes, raw.stream_offset)?;
        let spans = track_spans(&facts);
        let prft_offset_us = raw.prft.as_ref().and_then(|p| {
            let run = facts
                .tracks
                .iter()
                .find(|r| r.track_id == p.reference_track_id)?;
            Some(p.utc_time_us - fmp4::ticks_to_us(p.media_time, run.timescale))
        });
        let placement = opened.timeline.place(&spans, prft_offset_us, received_us)?;
        let offset_us = placement.offset_us;
        let negative = std::cell::Cell::new(None);
        let rewritten =
            fmp4::rewrite_fragment(init, &raw.bytes, raw.stream_offset, &|track_id, old| {
                let ts = init
                    .track(track_id)
                    .map_or(1_000_000, |t| t.timescale.max(1));
                let shift = (i128::from(offset_us) * i128::from(ts)).div_euclid(1_000_000);
                let new = i128::from(old) + shift;
                u64::try_from(new).unwrap_or_else(|_| {
                    negative.set(Some(track_id));
                    0
                })
            })?;
        if let Some(track_id) = negative.get() {
            return Err(Error::invalid(format!(
                "track {track_id} would get a negative decode time on the stream timeline; \
                 check producer_start"
            )));
        }
        // The row's time is its reference track's (see `NewFragment`); the track spans and the
        // placement cover all of its tracks.
        let run = facts.reference_run();
        let run_start_us = fmp4::ticks_to_us(run.base_media_decode_time, run.timescale);
        Ok((
            NewFragment {
                stream_id: opened.stream_id,
                session_id: opened.session_id,
                init_id: 0,
                producer_start_us: run_start_us + offset_us,
                duration_us: fmp4::ticks_to_us(run.duration, run.timescale),
                end_us: placement.producer_end_us,
                media_time: run.base_media_decode_time as i64,
                timescale: i64::from(run.timescale),
                keyframe: facts.starts_with_keyframe,
                has_video: facts.holds_video(init),
                sample_count: facts.tracks.iter().map(|t| i64::from(t.sample_count)).sum(),
                bytes: Bytes::from(rewritten),
            },
            placement,
            spans,
        ))
    }

    async fn ack_front(&mut self, sink: &Sink) {
        if let Some(f) = self.pop_inflight() {
            let result = f.rx.await.unwrap_or_else(|_| {
                Err(crate::error::Error::unavailable(
                    "the store stopped before acknowledging",
                ))
            });
            self.on_ack(f.tag, f.received, result, sink).await;
        }
    }

    fn pop_inflight(&mut self) -> Option<Inflight> {
        let f = self.inflight.pop_front()?;
        self.inflight_bytes -= f.size_bytes;
        Some(f)
    }

    pub fn has_inflight(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// Waits for the oldest fragment's ack without taking it, so it is cancel-safe (usable in
    /// `select!`); hand the result to [`Session::take_oldest`].
    pub async fn oldest_ack(&mut self) -> Result<FragmentRow> {
        match self.inflight.front_mut() {
            Some(f) => (&mut f.rx).await.unwrap_or_else(|_| {
                Err(Error::unavailable("the store stopped before acknowledging"))
            }),
            None => std::future::pending().await,
        }
    }

    /// Reports the oldest fragment's ack, received by [`Session::oldest_ack`].
    pub async fn take_oldest(&mut self, result: Result<FragmentRow>, sink: &Sink) {
        if let Some(f) = self.pop_inflight() {
            self.on_ack(f.tag, f.received, result, sink).await;
        }
    }

    /// Emits acks that are already in, in order, without waiting.
    pub async fn drain_ready(&mut self, sink: &Sink) {
        while let Some(front) = self.inflight.front_mut() {
            match front.rx.try_recv() {
                Ok(result) => {
                    let (tag, received) = (front.tag, front.received);
                    self.pop_inflight();
                    self.on_ack(tag, received, result, sink).await;
                }
                Err(oneshot::error::TryRecvError::Empty) => break,
                Err(oneshot::error::TryRecvError::Closed) => {
                    let (tag, received) = (front.tag, front.received);
                    self.pop_inflight();
                    self.on_ack(
                        tag,
                        received,
                        Err(Error::unavailable("the store stopped before acknowledging")),
                        sink,
                    )
                    .await;
                }
            }
        }
    }

    /// Waits for every appended fragment's ack.
    pub async fn finish(&mut self, sink: &Sink) {
        while !self.inflight.is_empty() {
            self.ack_front(sink).await;
        }
    }

    pub fn take_acked(&mut self) -> Vec<(Option<[u8; 32]>, FragmentRow)> {
        std::mem::take(&mut self.acked)
    }

    async fn on_ack(
        &mut self,
        tag: Option<[u8; 32]>,
        received: Instant,
        result: Result<FragmentRow>,
        sink: &Sink,
    ) {
        match result {
            Ok(row) => {
                let s = &mut self.summary;
                s.first_fragment.get_or_insert(row.number);
                s.last_fragment = Some(row.number);
                s.fragments += 1;
                s.bytes += row.size_bytes as u64;
                s.media_duration_us += row.duration_us;
                let mut line = fragment_json(&row);
                line["event"] = "persisted".into();
                send_line(sink, line).await;
                if let Some(tx) = self.on_first_stored.take() {
                    let _ = tx.send(());
                }
                self.counters
                    .acked(row.size_bytes as u64, received.elapsed());
                if self.collect_acked {
                    self.acked.push((tag, row));
                }
            }
            Err(e) => {
                tracing::warn!(session = ?self.session_id(), error = %e, "fragment not stored");
                send_line(sink, error_json(&e, None)).await;
                self.refuse(&e);
            }
        }
    }
}

/// Each track's media in the fragment (producer's media time). Tracks without samples say
/// nothing about time and are left out, unless no track has samples.
/// An init and the facts the index keeps of it.
fn init_to_store(bytes: &Bytes, facts: &InitFacts) -> InitToStore {
    let tracks = facts
        .tracks
        .iter()
        .map(|t| TrackSummary {
            track_id: t.track_id,
            kind: format!("{:?}", t.kind).to_lowercase(),
            codec: t.codec.clone(),
            timescale: t.timescale,
            width: t.width,
            height: t.height,
            sample_rate: t.sample_rate,
            channels: t.channels,
        })
        .collect();
    InitToStore {
        bytes: bytes.clone(),
        codecs: facts.codecs(),
        tracks,
    }
}

fn track_spans(facts: &fmp4::FragmentFacts) -> Vec<TrackSpan> {
    let span = |t: &fmp4::TrackRun| {
        let start_us = fmp4::ticks_to_us(t.base_media_decode_time, t.timescale);
        TrackSpan {
            track_id: t.track_id,
            start_us,
            end_us: fmp4::ticks_to_us(
                t.base_media_decode_time.saturating_add(t.duration),
                t.timescale,
            ),
        }
    };
    let with_samples: Vec<TrackSpan> = facts
        .tracks
        .iter()
        .filter(|t| t.sample_count > 0)
        .map(span)
        .collect();
    if with_samples.is_empty() {
        vec![span(facts.reference_run())]
    } else {
        with_samples
    }
}

pub fn error_json(e: &Error, offset: Option<u64>) -> serde_json::Value {
    let mut v = serde_json::json!({"event": "error", "code": e.kind.code(), "message": e.message});
    if let Some(o) = offset {
        v["input_offset"] = o.into();
    }
    v
}
