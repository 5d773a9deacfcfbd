//! Injectable wall clock, so timestamps and (later) retention can be tested without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Microseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_us(&self) -> i64;
}

pub type SharedClock = Arc<dyn Clock>;

/// The real system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
    }
}

/// A clock that only moves when told to; for tests.
pub struct SimulatedClock {
    now_us: AtomicI64,
}

impl SimulatedClock {
    pub fn new(start_us: i64) -> Self {
        SimulatedClock {
            now_us: AtomicI64::new(start_us),
        }
    }
    pub fn advance_us(&self, delta_us: i64) {
        self.now_us.fetch_add(delta_us, Ordering::SeqCst);
    }
}

impl Clock for SimulatedClock {
    fn now_us(&self) -> i64 {
        self.now_us.load(Ordering::SeqCst)
    }
}
