//! When to try a camera again: capped exponential backoff with jitter. Pure (the caller draws
//! the random number), so it is testable without waiting.
//!
//! Why jitter: after a network blip or a restart of tapedeck, every camera would otherwise
//! reconnect in the same instant, and a small NVR-grade camera that answers DESCRIBE slowly
//! under load would fail them all again together.

use std::time::Duration;

/// The first retry: soon enough that a camera restarting (about 5-30 s) is picked up quickly.
pub const INITIAL: Duration = Duration::from_secs(1);
/// The longest wait: a camera back online is recorded again within half a minute.
pub const MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { failures: 0 }
    }

    /// After a connection that worked (media was stored): the next failure waits `INITIAL`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait before the next attempt after one more failure; `unit` in [0, 1) picks where
    /// in the jitter band (75 % to 100 % of the nominal wait) it falls.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let nominal = INITIAL
            .saturating_mul(1u32 << self.failures.min(16))
            .min(MAX);
        self.failures = self.failures.saturating_add(1);
        nominal.mul_f64(0.75 + 0.25 * unit.clamp(0.0, 1.0))
    }
}

/// A number in [0, 1) that differs between calls and processes (std's per-hasher random keys).
pub fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let top: Vec<u64> = (0..8).map(|_| b.next_delay(1.0).as_secs()).collect();
        assert_eq!(top, [1, 2, 4, 8, 16, 30, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(750));
    }

    #[test]
    fn jitter_stays_in_its_band() {
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
            let d = Backoff::new().next_delay(u);
            assert!(d >= Duration::from_millis(750) && d <= INITIAL);
        }
    }
}
