//! The follow feed: `GET /api/v1/streams/{name}/media?start=now|earliest|<time>|after:<n>`.
//! One continuous fMP4 response: the init, then every fragment in order from the start point,
//! catching up from the archive and then following live, with no gap and no duplicate.
//!
//! - Timestamps are rebased onto one consumer timeline that starts at 0 and runs continuously
//!   across producer sessions and gaps (every track moves by the same amount, so A/V sync holds).
//! - Before each fragment a top-level `free` box (ignored by every MP4 reader) carries
//!   `{"fragment":N,"producer_time_us":T,"media_time_us":M,"duration_us":D}` (M: where the
//!   fragment starts on the consumer timeline), so a consumer knows exactly where it is and can
//!   map any media time to producer time (the web UI's player does). To resume
//!   after a disconnect, ask again with `start=after:<last N seen>`.
//! - When the init changes (a producer with other codec settings), the response ends after the
//!   last fragment of the old init; the next request (`after:<last N>`) starts with the new init.
//! - Flow control is the consumer's: fragments are read from disk only as fast as it reads, so
//!   a slow consumer falls behind on disk, not in memory.
//! - `follow=false` ends the response at the newest fragment instead of waiting for more.
//! - While a following feed waits at the live edge, it sends an empty top-level `free` box (8
//!   bytes) every [`KEEPALIVE`], never inside a fragment: every MP4 reader skips it (ffmpeg,
//!   ffprobe, MSE in browsers), and the bytes wake readers with their own read loop or read
//!   timeout, keep proxies from closing a quiet feed, and let the server notice a consumer that
//!   has gone (the write fails) instead of holding its follow-feed slot until the producer
//!   sends again.

use crate::error::{Error, Result};
use crate::fmp4::{self, InitFacts};
use crate::store::{FragmentRow, Store, StoreEvent, StreamRow};
use crate::timefmt::TimeSpec;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Rows fetched from the index per query while catching up.
const PAGE_ROWS: u32 = 64;
/// How long a following response waits for a fragment before checking the stream still exists.
const IDLE_CHECK: Duration = Duration::from_secs(15);
/// How often a following response with nothing new sends [`KEEPALIVE_BOX`]. The issue asked
/// for at least once a second; a box every second costs 8 bytes a second per waiting consumer.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// An empty top-level `free` box: size 8, type `free`.
pub const KEEPALIVE_BOX: [u8; 8] = [0, 0, 0, 8, b'f', b'r', b'e', b'e'];

/// What waiting for the next fragment came to.
enum Waited {
    /// Something may be new: look at the index (or the queue) again.
    More,
    /// Nothing for [`KEEPALIVE`]: send a keepalive box and wait again.
    Quiet,
    /// The stream was deleted (or the store stopped): end the response.
    Gone,
}

/// Where a feed starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The start of the newest segment (a keyframe), so the consumer can decode at once.
    Now,
    /// The oldest decodable fragment still stored.
    Earliest,
    /// The segment (keyframe) at or before this producer time.
    Time(i64),
    /// Right after this fragment: an exact resume.
    After(i64),
}

/// `start` as the feed takes it: any time (the one parser for times, so `now` and `earliest`
/// mean here what they mean everywhere, rounded to a keyframe), or `after:<fragment>`.
pub fn parse_start(text: Option<&str>) -> Result<StartAt> {
    match text.map(str::trim) {
        None => Ok(StartAt::Now),
        Some(t) if t.starts_with("after:") => t[6..]
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(StartAt::After)
            .ok_or_else(|| Error::invalid(format!("'start' after:N needs a fragment number; got '{t}'"))),
        Some(t) => match crate::timefmt::parse_time("start", t) {
            Ok(TimeSpec::Now) => Ok(StartAt::Now),
            Ok(TimeSpec::Earliest) => Ok(StartAt::Earliest),
            Ok(TimeSpec::At(us)) => Ok(StartAt::Time(us)),
            Err(_) => Err(Error::invalid(format!(
                "'start' must be now, earliest, after:<fragment> or a time (RFC 3339 or epoch ms); got '{t}'"
            ))),
        },
    }
}

/// The number of the first fragment the feed sends.
pub async fn first_number(store: &Store, stream: &StreamRow, start: StartAt) -> Result<i64> {
    let next_new = stream.last_number + 1;
    let near = |t: i64| async move {
        Ok::<_, Error>(
            store
                .segment_start_near(stream.id, t)
                .await?
                .map_or(next_new, |r| r.number),
        )
    };
    match start {
        StartAt::After(n) => Ok(n + 1),
        StartAt::Now => match store.latest_fragment(stream.id).await? {
            Some(latest) => near(latest.producer_start_us).await,
            None => Ok(next_new),
        },
        StartAt::Earliest => match store
            .fragments_from_number(stream.id, 0, i64::MAX, 1)
            .await?
            .first()
        {
            Some(first) => near(first.producer_start_us).await,
            None => Ok(next_new),
        },
        StartAt::Time(t) => near(t).await,
    }
}

struct Feed {
    store: Store,
    stream_id: i64,
    next_number: i64,
    follow: bool,
    events: broadcast::Receiver<StoreEvent>,
    queue: VecDeque<FragmentRow>,
    init: Option<(i64, Arc<InitFacts>)>,
    /// End of the last sent fragment on the consumer timeline (µs from 0).
    consumer_end_us: i64,
    /// The unchanged rest of the fragment whose head was just sent.
    pending_tail: Option<Bytes>,
    /// Quiet time since the stream was last checked to still exist.
    quiet: Duration,
    /// A keepalive just went out: go back to waiting.
    waiting: bool,
    done: bool,
}

/// The feed from fragment `from` on. Subscribes to new fragments before the first index read,
/// so nothing persisted in between is missed.
pub fn feed(
    store: Store,
    stream_id: i64,
    from: i64,
    follow: bool,
) -> impl futures_util::Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static {
    let state = Feed {
        events: store.subscribe(),
        store,
        stream_id,
        next_number: from,
        follow,
        queue: VecDeque::new(),
        init: None,
        consumer_end_us: 0,
        pending_tail: None,
        quiet: Duration::ZERO,
        waiting: false,
        done: false,
    };
    futures_util::stream::unfold(state, |mut f| async move {
        if f.done {
            return None;
        }
        match f.next_chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), f)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(stream_id = f.stream_id, error = %e, "follow feed ended by an error");
                f.done = true;
                Some((Err(std::io::Error::other(e.message)), f))
            }
        }
    })
}

impl Feed {
    /// The next piece of the response, or None at its end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if let Some(tail) = self.pending_tail.take() {
            return Ok(Some(tail));
        }
        loop {
            if self.queue.is_empty() {
                // Right after a keepalive nothing can be new that the event receiver has not
                // kept: wait again without reading the index (once a second per consumer).
                let rows = if std::mem::take(&mut self.waiting) {
                    Vec::new()
                } else {
                    self.store
                        .fragments_from_number(
                            self.stream_id,
                            self.next_number,
                            i64::MAX,
                            PAGE_ROWS,
                        )
                        .await?
                };
                if rows.is_empty() {
                    if !self.follow {
                        return Ok(None);
                    }
                    match self.wait_for_more().await? {
                        Waited::More => continue,
                        // Between fragments (the tail of the last one went out first).
                        Waited::Quiet => {
                            self.waiting = true;
                            return Ok(Some(Bytes::from_static(&KEEPALIVE_BOX)));
                        }
                        Waited::Gone => return Ok(None),
                    }
                }
                self.queue.extend(rows);
            }
            let row = self.queue.pop_front().expect("filled above");
            match &self.init {
                Some((id, _)) if *id == row.init_id => {}
                Some(_) => {
                    // A new init: end here; `after:<last>` resumes with it.
                    return Ok(None);
                }
                None => {
                    let bytes = self
                        .store
                        .init_bytes(self.stream_id, row.init_id)
                        .await?
                        .ok_or_else(|| Error::internal("fragment names a missing init"))?;
                    let facts = InitFacts::parse(&bytes)?;
                    self.init = Some((row.init_id, Arc::new(facts)));
                    self.queue.push_front(row);
                    return Ok(Some(bytes));
                }
            }
            let data = match self.store.fragment_bytes(&row).await {
                Ok(d) => d,
                // Expired between the index read and the file read: skip it, like retention.
                Err(e) if e.kind == crate::error::Kind::NotFound => {
                    self.next_number = row.number + 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let facts = self
                .init
                .as_ref()
                .map(|(_, f)| f.clone())
                .expect("set above");
            let media_time_us = self.consumer_end_us;
            let shift_us = row.producer_start_us - media_time_us;
            let (head, tail_start) =
                fmp4::rewrite_fragment_head(&facts, &data, 0, &|track_id, old| {
                    let ts = facts
                        .track(track_id)
                        .map_or(1_000_000, |t| t.timescale.max(1));
                    let shift = (i128::from(shift_us) * i128::from(ts)).div_euclid(1_000_000);
                    u64::try_from(i128::from(old) - shift).unwrap_or(0)
                })?;
            self.consumer_end_us += row.duration_us;
            self.next_number = row.number + 1;
            let marker = format!(
                "{{\"fragment\":{},\"producer_time_us\":{},\"media_time_us\":{},\"duration_us\":{}}}",
                row.number, row.producer_start_us, media_time_us, row.duration_us
            );
            let mut out = BytesMut::with_capacity(8 + marker.len() + head.len());
            out.extend_from_slice(&((8 + marker.len()) as u32).to_be_bytes());
            out.extend_from_slice(b"free");
            out.extend_from_slice(marker.as_bytes());
            out.extend_from_slice(&head);
            // The media itself goes out as a slice of the stored bytes, shared by every
            // consumer of this fragment (no per-consumer copy of the mdat).
            self.pending_tail = Some(data.slice(tail_start.min(data.len())..));
            return Ok(Some(out.freeze()));
        }
    }

    /// Waits for a new fragment of the stream, at most [`KEEPALIVE`].
    async fn wait_for_more(&mut self) -> Result<Waited> {
        // One deadline for the whole wait: other streams' events (skipped below) must not keep
        // pushing the keepalive back on a busy server.
        let deadline = tokio::time::Instant::now() + KEEPALIVE;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(StoreEvent::FragmentPersisted(r))) if r.stream_id == self.stream_id => {
                    self.quiet = Duration::ZERO;
                    // The very fragment we wait for: no index read needed (with many
                    // consumers at the live edge, one query each per fragment adds up).
                    if r.number == self.next_number && self.queue.is_empty() {
                        self.queue.push_back(r);
                    }
                    return Ok(Waited::More);
                }
                Ok(Ok(StoreEvent::StreamDeleted { stream_id })) if stream_id == self.stream_id => {
                    return Ok(Waited::Gone)
                }
                Ok(Ok(_)) => {}
                // Missed events: look at the index again.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => return Ok(Waited::More),
                Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(Waited::Gone),
                Err(_) => {
                    self.quiet += KEEPALIVE;
                    // A quiet stream: now and then make sure it still exists.
                    if self.quiet >= IDLE_CHECK {
                        self.quiet = Duration::ZERO;
                        if self.store.stream_name(self.stream_id).await?.is_none() {
                            return Ok(Waited::Gone);
                        }
                    }
                    return Ok(Waited::Quiet);
                }
            }
        }
    }
}
