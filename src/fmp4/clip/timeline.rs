//! One timeline for a clip.
//!
//! Stored fragments sit on the stream timeline (media time = producer time since the epoch). A clip
//! starts near 0 and collapses the gaps between ingest sessions: at a fragment marked as a
//! discontinuity, the gap between the previous fragment's end and this one's start (producer time,
//! µs) is added to the clip's shift. Every track of a fragment moves by the same wall-clock shift,
//! so A/V sync inside each session is kept; inside a session nothing moves.

use super::ClipFragment;
use crate::fmp4::time::us_to_ticks;

/// The clip's shift (µs to subtract from stream time), gap collapsing included.
#[derive(Debug, Default)]
pub(super) struct Timeline {
    shift_us: Option<i64>,
    prev_end_us: i64,
}

impl Timeline {
    /// The shift for fragment `f`, whose tracks start at `track_starts_us`.
    pub(super) fn shift_for(
        &mut self,
        f: &ClipFragment,
        track_starts_us: impl Iterator<Item = i64>,
    ) -> i64 {
        let shift = match self.shift_us {
            None => track_starts_us.fold(f.start_us, i64::min),
            Some(s) if f.discontinuity && f.start_us > self.prev_end_us => {
                s + (f.start_us - self.prev_end_us)
            }
            Some(s) => s,
        };
        self.shift_us = Some(shift);
        self.prev_end_us = self.prev_end_us.max(f.end_us);
        shift
    }
}

/// A stream-timeline tfdt moved onto the clip's timeline (never below 0).
pub(super) fn rebased(tfdt: u64, shift_us: i64, timescale: u32) -> u64 {
    let v = i64::try_from(tfdt).unwrap_or(i64::MAX);
    u64::try_from(v.saturating_sub(us_to_ticks(shift_us, timescale))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conversions this test also checked moved with them to `fmp4/time.rs`.
    #[test]
    fn time_conversions_round() {
        assert_eq!(rebased(100, 1_000_000, 1000), 0, "never below zero");
    }
}
