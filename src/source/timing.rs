//! Producer time for pulled media (DESIGN.md, "Time rules"): the camera's wall clock from its
//! RTCP sender reports (an NTP time paired with an RTP timestamp) when it has sent one and it is
//! believable, else the server clock when the frame arrived. Pure: the caller passes times.
//!
//! - RTP timestamps are 32 bits and wrap (every 13 h at 90 kHz); the RTSP client extends them
//!   to 64 bits, and everything here works on the extended values.
//! - The mapping is fixed once per ingest session (the session's first fragment), as the time
//!   rules require, so audio and video keep their sync and a sender report that jumps (a camera
//!   whose NTP client steps its clock) moves nothing mid-session; the next session (after a
//!   reconnect or a discontinuity) uses the newest report.
//! - A camera clock far from the server's (never set: cameras boot in 1970 or 2000) is not
//!   believed: its times would land far from now, and behind the stream's end they would be
//!   refused.

/// How far a camera's clock may be from the server's and still be used. Cameras that sync
/// with NTP are within milliseconds; a LAN adds well under a second of delivery delay.
pub const MAX_CAMERA_SKEW_US: i64 = 5_000_000;

/// One RTCP sender report: the camera's wall clock at an (extended) RTP timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    pub wall_us: i64,
    pub rtp_timestamp: i64,
    pub clock_rate: u32,
}

impl SenderReport {
    /// The camera's wall clock at `rtp_timestamp` (same clock), by this report.
    pub fn wall_at(&self, rtp_timestamp: i64) -> i64 {
        let ticks = i128::from(rtp_timestamp - self.rtp_timestamp);
        let us = ticks * 1_000_000 / i128::from(self.clock_rate.max(1));
        self.wall_us.saturating_add(us as i64)
    }
}

/// Where a session's producer times came from (shown in the source's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The camera's sender reports.
    Camera,
    /// The server clock: the camera sent no sender report before the first fragment.
    ServerNoReport,
    /// The server clock: the camera's clock is off by this much (µs, camera minus server).
    ServerCameraSkewed(i64),
}

impl Basis {
    pub fn describe(&self) -> String {
        match self {
            Basis::Camera => "camera clock (RTCP sender reports)".into(),
            Basis::ServerNoReport => "server clock (no RTCP sender report yet)".into(),
            Basis::ServerCameraSkewed(us) => format!(
                "server clock (the camera's clock is {:+.1} s off; set up NTP on the camera)",
                *us as f64 / 1e6
            ),
        }
    }
}

/// The wall clock of a frame with RTP timestamp `rtp_timestamp` that arrived at server time
/// `arrived_us`, and where it came from.
pub fn frame_wall_clock(
    report: Option<&SenderReport>,
    rtp_timestamp: i64,
    arrived_us: i64,
) -> (i64, Basis) {
    match report {
        None => (arrived_us, Basis::ServerNoReport),
        Some(sr) => {
            let camera_us = sr.wall_at(rtp_timestamp);
            let skew = camera_us - arrived_us;
            if skew.abs() <= MAX_CAMERA_SKEW_US {
                (camera_us, Basis::Camera)
            } else {
                (arrived_us, Basis::ServerCameraSkewed(skew))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000_000;

    #[test]
    fn sender_report_maps_rtp_time_across_a_wrap() {
        // Extended timestamps past 2^32: the arithmetic is on the 64-bit values.
        let sr = SenderReport {
            wall_us: NOW,
            rtp_timestamp: (1 << 32) - 90_000,
            clock_rate: 90_000,
        };
        assert_eq!(sr.wall_at((1 << 32) + 90_000), NOW + 2_000_000);
        assert_eq!(sr.wall_at((1 << 32) - 180_000), NOW - 1_000_000);
    }

    #[test]
    fn camera_clock_is_used_only_when_believable() {
        let sr = SenderReport {
            wall_us: NOW - 200_000,
            rtp_timestamp: 0,
            clock_rate: 90_000,
        };
        assert_eq!(
            frame_wall_clock(Some(&sr), 9_000, NOW),
            (NOW - 100_000, Basis::Camera)
        );
        assert_eq!(
            frame_wall_clock(None, 9_000, NOW),
            (NOW, Basis::ServerNoReport)
        );
        let off = SenderReport {
            wall_us: 946_684_800_000_000,
            ..sr
        };
        let (t, b) = frame_wall_clock(Some(&off), 0, NOW);
        assert_eq!(t, NOW);
        assert!(matches!(b, Basis::ServerCameraSkewed(s) if s < 0));
        assert!(b.describe().contains("NTP"));
    }
}
