//! The global budget of bytes received from producers but not yet durable.
//!
//! Every fragment takes its size from the budget before it is handed to the store, and gives it
//! back when its ack comes (durable, or refused). A long upload takes it as soon as the
//! fragment's mdat header has arrived, before reading the media itself, so a producer held back
//! here holds a moof, not a whole fragment. A session that cannot take its fragment's bytes
//! waits, and while it waits it does not read its socket: the kernel's receive
//! buffer fills and TCP flow control slows the producer down (ffmpeg, curl and GStreamer just
//! block in `write`). So memory stays near the budget whatever the producers send, instead of
//! growing until the OOM killer takes every fragment in flight.
//!
//! Waiters are served in arrival order (a tokio semaphore is FIFO), so under overload every
//! producer gets the disk's rate shared out, and none starves. A share is taken only for a
//! fragment that will be read to its end: bytes of fragments that could not be completed
//! without reading more, counted while their producers wait, could fill the budget and nothing
//! would move. Held back before its media, a producer costs its moof and the read buffers.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget, shared by every ingest session.
pub struct Budget {
    permits: Arc<Semaphore>,
    limit_bytes: usize,
    max_hold_back: Duration,
    /// Sessions waiting for bytes right now.
    waiting: AtomicUsize,
    /// Microseconds sessions spent waiting, summed over sessions.
    throttled_us_total: AtomicU64,
    /// Fragments that had to wait for bytes.
    throttled_fragments_total: AtomicU64,
    /// Sessions ended because they were held back past `max_hold_back`.
    held_back_total: AtomicU64,
}

/// A fragment's share of the budget, given back when dropped (after its ack).
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

/// What `/metrics` and `/readyz` show.
#[derive(Debug, Clone, Copy)]
pub struct BudgetStats {
    pub limit_bytes: usize,
    pub used_bytes: usize,
    pub waiting: usize,
    pub throttled_seconds_total: f64,
    pub throttled_fragments_total: u64,
    pub held_back_total: u64,
}

impl Budget {
    pub fn new(limit_bytes: u64, max_hold_back: Duration) -> Budget {
        // A semaphore holds at most `Semaphore::MAX_PERMITS`; no box has that much memory.
        let limit_bytes = usize::try_from(limit_bytes)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            permits: Arc::new(Semaphore::new(limit_bytes)),
            limit_bytes,
            max_hold_back,
            waiting: AtomicUsize::new(0),
            throttled_us_total: AtomicU64::new(0),
            throttled_fragments_total: AtomicU64::new(0),
            held_back_total: AtomicU64::new(0),
        }
    }

    /// Takes `bytes` from the budget, waiting (in arrival order) while it is spent. A fragment
    /// larger than the whole budget takes all of it, so it is stored alone rather than never.
    /// Waiting longer than `ingest.max_hold_back_secs` fails with `Unavailable`; the caller ends
    /// the session.
    pub async fn reserve(&self, bytes: usize) -> Result<Reservation> {
        let n = u32::try_from(bytes.clamp(1, self.limit_bytes)).unwrap_or(u32::MAX);
        if let Ok(p) = self.permits.clone().try_acquire_many_owned(n) {
            return Ok(Reservation { _permit: p });
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.throttled_fragments_total
            .fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let got = tokio::time::timeout(
            self.max_hold_back,
            self.permits.clone().acquire_many_owned(n),
        )
        .await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.throttled_us_total
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match got {
            Ok(Ok(p)) => Ok(Reservation { _permit: p }),
            // The semaphore is never closed.
            Ok(Err(_)) => Err(Error::internal("the ingest budget was closed")),
            Err(_) => {
                self.held_back_total.fetch_add(1, Ordering::Relaxed);
                Err(Error::unavailable(format!(
                    "overloaded: the server could not make received media durable fast \
                         enough and held this producer back for {} s \
                         (ingest.max_hold_back_secs); retry later",
                    self.max_hold_back.as_secs()
                )))
            }
        }
    }

    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            limit_bytes: self.limit_bytes,
            used_bytes: self
                .limit_bytes
                .saturating_sub(self.permits.available_permits()),
            waiting: self.waiting.load(Ordering::Relaxed),
            throttled_seconds_total: self.throttled_us_total.load(Ordering::Relaxed) as f64 / 1e6,
            throttled_fragments_total: self.throttled_fragments_total.load(Ordering::Relaxed),
            held_back_total: self.held_back_total.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[tokio::test]
    async fn waits_in_order_and_gives_back_on_drop() {
        let b = Arc::new(Budget::new(100, Duration::from_secs(5)));
        let first = b.reserve(80).await.unwrap();
        assert_eq!(b.stats().used_bytes, 80);
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.reserve(50).await.map(|_| ()) });
        // The waiter is queued: it cannot have the bytes while `first` holds them.
        while b.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(b.stats().used_bytes, 0);
        assert_eq!(b.stats().throttled_fragments_total, 1);
    }

    #[tokio::test]
    async fn a_fragment_larger_than_the_budget_takes_all_of_it() {
        let b = Budget::new(100, Duration::from_secs(5));
        let r = b.reserve(1000).await.unwrap();
        assert_eq!(b.stats().used_bytes, 100);
        drop(r);
    }

    #[tokio::test]
    async fn held_back_past_the_limit_is_unavailable() {
        // Nothing gives the bytes back, so the wait ends at the limit whatever the timing.
        let b = Budget::new(10, Duration::from_millis(50));
        let _all = b.reserve(10).await.unwrap();
        let e = b.reserve(1).await.err().expect("held back");
        assert_eq!(e.kind, Kind::Unavailable);
        assert!(e.message.contains("overloaded"), "{}", e.message);
        assert_eq!(b.stats().held_back_total, 1);
        assert_eq!(b.stats().waiting, 0);
    }
}
