//! Request limits that need shared state: concurrent ingest requests, the per-stream ingest rate,
//! and long-lived feed connections (follow feed, events) per stream. The connection-level limits
//! (header size, header and body read timeouts) live in `listen.rs`; the clip length, playlist
//! range and frame decode slots are checked where those requests are served.
//!
//! Refusals: a full server (ingest slots) is 503 with `Retry-After`; one stream's or client's
//! excess (feed connections) is 429 with `Retry-After`. The ingest rate is not refused but
//! enforced: a producer over it is read more slowly (TCP pushes back), so no media is lost and a
//! camera that bursts after a reconnect is smoothed, not cut off.

use crate::config::LimitsConfig;
use crate::error::{Error, Kind, Result};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Seconds a refused client is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 2;

/// Which long-lived feed a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    /// `GET .../media` (the follow feed).
    Follow,
    /// `GET .../events` and the global `/events` (counted under stream id 0).
    Events,
}

pub struct Limits {
    config: LimitsConfig,
    ingest_slots: Arc<Semaphore>,
    feeds: Arc<Mutex<HashMap<(Feed, i64), usize>>>,
    /// Per stream name: the time at which the bytes sent so far are paid for at the allowed rate.
    rate: Mutex<HashMap<String, Instant>>,
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Limits {
        Limits {
            config: config.clone(),
            ingest_slots: Arc::new(Semaphore::new(config.max_ingest_requests.max(1))),
            feeds: Arc::default(),
            rate: Mutex::default(),
        }
    }

    /// A slot for one ingest request (an upload or a segment file), held until it ends.
    pub fn ingest_slot(&self) -> Result<OwnedSemaphorePermit> {
        self.ingest_slots.clone().try_acquire_owned().map_err(|_| {
            Error::unavailable(format!(
                "the server is taking the most concurrent ingest requests it allows ({}, \
                 limits.max_ingest_requests); retry shortly",
                self.config.max_ingest_requests
            ))
        })
    }

    /// Ingest requests in progress.
    pub fn ingest_in_use(&self) -> usize {
        self.config
            .max_ingest_requests
            .max(1)
            .saturating_sub(self.ingest_slots.available_permits())
    }

    /// A feed connection for `stream_id` (0 for the global events feed), or 429 when the stream
    /// already has the most its limit allows.
    pub fn feed_slot(&self, feed: Feed, stream_id: i64) -> Result<FeedSlot> {
        let max = match feed {
            Feed::Follow => self.config.max_follow_connections_per_stream,
            Feed::Events => self.config.max_event_connections_per_stream,
        };
        let mut map = self
            .feeds
            .lock()
            .map_err(|_| Error::internal("feed counter poisoned"))?;
        let n = map.entry((feed, stream_id)).or_insert(0);
        if *n >= max {
            let (what, setting) = match feed {
                Feed::Follow => ("follow-feed", "max_follow_connections_per_stream"),
                Feed::Events => ("event", "max_event_connections_per_stream"),
            };
            return Err(Error::new(
                Kind::ResourceExhausted,
                format!(
                    "this stream already has {n} open {what} connections, the most allowed \
                     (limits.{setting}); close one or retry later"
                ),
            ));
        }
        *n += 1;
        Ok(FeedSlot {
            feeds: self.feeds.clone(),
            key: (feed, stream_id),
        })
    }

    /// The body of an upload to `stream`, read no faster than the per-stream rate limit (if
    /// one is set). All uploads to one stream share the budget.
    pub fn throttle<S, E>(
        self: &Arc<Self>,
        stream: &str,
        body: S,
    ) -> futures_util::stream::BoxStream<'static, std::result::Result<Bytes, E>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: Send + 'static,
    {
        let Some(rate) = self
            .config
            .ingest_bytes_per_sec_per_stream
            .filter(|r| *r > 0)
        else {
            return body.boxed();
        };
        let limits = self.clone();
        let stream = stream.to_string();
        body.then(move |chunk| {
            let limits = limits.clone();
            let stream = stream.clone();
            async move {
                if let Ok(bytes) = &chunk {
                    let wait = limits.charge(&stream, bytes.len() as u64, rate);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                chunk
            }
        })
        .boxed()
    }

    /// Books `len` bytes against the stream's rate; returns how long to wait before reading on.
    /// Up to one second of bytes may go ahead of the rate (a burst after idle).
    fn charge(&self, stream: &str, len: u64, bytes_per_sec: u64) -> Duration {
        let now = Instant::now();
        let cost = Duration::from_secs_f64(len as f64 / bytes_per_sec as f64);
        let Ok(mut rate) = self.rate.lock() else {
            return Duration::ZERO;
        };
        let paid_until = rate.entry(stream.to_string()).or_insert(now);
        let burst = Duration::from_secs(1);
        // An idle stream starts from now: its credit is the burst, not the idle time.
        *paid_until = (*paid_until).max(now) + cost;
        paid_until.saturating_duration_since(now + burst)
    }
}

/// One open feed connection; counted until dropped (when the response body ends or the client
/// goes away).
pub struct FeedSlot {
    feeds: Arc<Mutex<HashMap<(Feed, i64), usize>>>,
    key: (Feed, i64),
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.feeds.lock() {
            if let Some(n) = map.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.key);
                }
            }
        }
    }
}

/// `stream`, holding `slot` for as long as the stream is alive.
pub fn holding<S: Stream + Send + 'static>(
    slot: FeedSlot,
    stream: S,
) -> impl Stream<Item = S::Item> + Send + 'static {
    let mut stream = Box::pin(stream);
    futures_util::stream::poll_fn(move |cx| {
        let _held = &slot;
        stream.as_mut().poll_next(cx)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LimitsConfig {
        LimitsConfig {
            max_follow_connections_per_stream: 2,
            max_event_connections_per_stream: 1,
            max_ingest_requests: 1,
            ingest_bytes_per_sec_per_stream: Some(1000),
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn feed_slots_are_counted_per_stream_and_released() {
        let limits = Limits::new(&config());
        let a = limits.feed_slot(Feed::Follow, 1).unwrap();
        let _b = limits.feed_slot(Feed::Follow, 1).unwrap();
        let err = limits.feed_slot(Feed::Follow, 1).err().unwrap();
        assert_eq!(err.kind, Kind::ResourceExhausted);
        assert!(err.message.contains("max_follow_connections_per_stream"));
        // Other streams and other feeds have their own counts.
        let _c = limits.feed_slot(Feed::Follow, 2).unwrap();
        let _d = limits.feed_slot(Feed::Events, 1).unwrap();
        assert!(limits.feed_slot(Feed::Events, 1).is_err());
        drop(a);
        assert!(limits.feed_slot(Feed::Follow, 1).is_ok());
    }

    #[test]
    fn ingest_slots() {
        let limits = Limits::new(&config());
        let slot = limits.ingest_slot().unwrap();
        assert_eq!(limits.ingest_in_use(), 1);
        assert_eq!(limits.ingest_slot().err().unwrap().kind, Kind::Unavailable);
        drop(slot);
        assert!(limits.ingest_slot().is_ok());
    }

    #[test]
    fn rate_allows_a_one_second_burst_then_paces() {
        let limits = Limits::new(&config());
        // 1000 B/s: the first 1000 bytes go at once, the next 500 wait about half a second.
        assert_eq!(limits.charge("a", 1000, 1000), Duration::ZERO);
        let wait = limits.charge("a", 500, 1000);
        assert!(
            wait > Duration::from_millis(450) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another stream is not affected.
        assert_eq!(limits.charge("b", 1000, 1000), Duration::ZERO);
    }
}
