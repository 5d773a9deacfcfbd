//! Where a fragment goes on its stream's timeline (DESIGN.md, "Time rules"). Pure: no clock,
//! no store; the caller passes the server time and the end of the stream's newest fragment.

use crate::error::{Error, Result};
use crate::timefmt::format_us;

/// Media times from one producer are exact; this absorbs rounding between timescales.
const MEDIA_SLACK_US: i64 = 1000;

/// How producer time is derived for fragments that carry no `prft`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// `producer_start` given by the producer: the wall clock of the session's first fragment.
    ProducerStart(i64),
    /// Nothing given: max(server clock at the first fragment, end of the stream).
    ServerClock,
}

/// The decision for one fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub producer_start_us: i64,
    /// Producer time minus media time; every track of the fragment moves by this much.
    pub offset_us: i64,
}

#[derive(Debug, Clone)]
pub struct SessionTimeline {
    anchor: Anchor,
    offset_us: Option<i64>,
    prev_media_end_us: Option<i64>,
    stream_end_us: Option<i64>,
    jitter_tolerance_us: i64,
}

impl SessionTimeline {
    pub fn new(anchor: Anchor, stream_end_us: Option<i64>, jitter_tolerance_us: i64) -> Self {
        SessionTimeline {
            anchor,
            offset_us: None,
            prev_media_end_us: None,
            stream_end_us,
            jitter_tolerance_us,
        }
    }

    pub fn stream_end_us(&self) -> Option<i64> {
        self.stream_end_us
    }

    /// Decides the producer time of a fragment, or refuses it. Nothing changes until `commit`.
    pub fn place(
        &self,
        media_start_us: i64,
        prft_start_us: Option<i64>,
        now_us: i64,
    ) -> Result<Placement> {
        if let Some(prev_end) = self.prev_media_end_us {
            if media_start_us < prev_end - MEDIA_SLACK_US {
                return Err(Error::invalid(format!(
                    "timestamps go backwards within the session: the fragment starts at media time \
                     {:.3} s, before the previous fragment ended ({:.3} s); the fragment was dropped",
                    media_start_us as f64 / 1e6,
                    prev_end as f64 / 1e6
                )));
            }
        }
        let mut offset_us = match (prft_start_us, self.offset_us, self.anchor) {
            (Some(p), _, _) => p - media_start_us,
            (None, Some(o), _) => o,
            (None, None, Anchor::ProducerStart(p)) => p - media_start_us,
            (None, None, Anchor::ServerClock) => {
                now_us.max(self.stream_end_us.unwrap_or(i64::MIN)) - media_start_us
            }
        };
        let mut start = media_start_us + offset_us;
        if let Some(end) = self.stream_end_us {
            if start < end {
                let overlap = end - start;
                if overlap > self.jitter_tolerance_us {
                    let advice = if prft_start_us.is_some() {
                        "the time comes from the fragment's prft box: the producer's prft wall \
                         clock must advance with the media it sends (uploading a file faster than \
                         real time with wall-clock prft does not)"
                            .to_string()
                    } else {
                        format!(
                            "pass producer_start later than {} (or omit it to append)",
                            format_us(end)
                        )
                    };
                    return Err(Error::invalid(format!(
                        "the fragment would start at {}, {:.3} s before the end of the stream's \
                         newest fragment ({}); producer time never goes backwards within a stream; {advice}",
                        format_us(start),
                        overlap as f64 / 1e6,
                        format_us(end),
                    )));
                }
                offset_us += overlap;
                start = end;
            }
        }
        Ok(Placement {
            producer_start_us: start,
            offset_us,
        })
    }

    /// Records that a placed fragment was accepted.
    pub fn commit(&mut self, placement: Placement, media_start_us: i64, duration_us: i64) {
        self.offset_us = Some(placement.offset_us);
        self.prev_media_end_us = Some(media_start_us + duration_us);
        let end = placement.producer_start_us + duration_us;
        self.stream_end_us = Some(self.stream_end_us.map_or(end, |e| e.max(end)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    const NOW: i64 = 1_764_000_000 * S;

    fn run(
        t: &mut SessionTimeline,
        media: i64,
        dur: i64,
        prft: Option<i64>,
        now: i64,
    ) -> Result<i64> {
        let p = t.place(media, prft, now)?;
        t.commit(p, media, dur);
        Ok(p.producer_start_us)
    }

    #[test]
    fn server_clock_anchor_follows_media_time() {
        let mut t = SessionTimeline::new(Anchor::ServerClock, None, S);
        assert_eq!(run(&mut t, 10 * S, 2 * S, None, NOW).unwrap(), NOW);
        // Arrives instantly (faster than real time): still placed by media time.
        assert_eq!(run(&mut t, 12 * S, 2 * S, None, NOW).unwrap(), NOW + 2 * S);
    }

    #[test]
    fn new_session_without_times_appends_after_stream_end() {
        let end = NOW + 60 * S; // the stream already reaches a minute into the future
        let mut t = SessionTimeline::new(Anchor::ServerClock, Some(end), S);
        assert_eq!(run(&mut t, 0, 2 * S, None, NOW).unwrap(), end);
        assert_eq!(run(&mut t, 2 * S, 2 * S, None, NOW).unwrap(), end + 2 * S);
    }

    #[test]
    fn producer_start_anchor() {
        let mut t = SessionTimeline::new(Anchor::ProducerStart(NOW - 3600 * S), None, S);
        assert_eq!(run(&mut t, 5 * S, S, None, NOW).unwrap(), NOW - 3600 * S);
        assert_eq!(run(&mut t, 6 * S, S, None, NOW).unwrap(), NOW - 3599 * S);
    }

    #[test]
    fn prft_wins_per_fragment() {
        let mut t = SessionTimeline::new(Anchor::ServerClock, None, S);
        assert_eq!(
            run(&mut t, 0, S, Some(NOW - 5 * S), NOW).unwrap(),
            NOW - 5 * S
        );
        assert_eq!(
            run(&mut t, S, S, Some(NOW - 4 * S), NOW).unwrap(),
            NOW - 4 * S
        );
    }

    #[test]
    fn small_overlap_is_jitter_and_shifts_the_session() {
        let end = NOW + S / 2;
        let mut t = SessionTimeline::new(Anchor::ProducerStart(NOW), Some(end), S);
        assert_eq!(run(&mut t, 0, S, None, NOW).unwrap(), end);
        assert_eq!(
            run(&mut t, S, S, None, NOW).unwrap(),
            end + S,
            "shift sticks"
        );
    }

    #[test]
    fn large_overlap_is_refused_with_advice() {
        let t = SessionTimeline::new(Anchor::ProducerStart(NOW - 10 * S), Some(NOW), S);
        let e = t.place(0, None, NOW).unwrap_err();
        assert!(e.message.contains("producer_start"), "{}", e.message);
        assert!(e.message.contains("10.000 s"), "{}", e.message);
    }

    #[test]
    fn backwards_media_time_within_session_is_refused() {
        let mut t = SessionTimeline::new(Anchor::ServerClock, None, S);
        run(&mut t, 10 * S, 2 * S, None, NOW).unwrap();
        let e = t.place(5 * S, None, NOW).unwrap_err();
        assert!(e.message.contains("backwards"), "{}", e.message);
        // The session goes on with the next good fragment.
        assert_eq!(run(&mut t, 12 * S, 2 * S, None, NOW).unwrap(), NOW + 2 * S);
    }
}
