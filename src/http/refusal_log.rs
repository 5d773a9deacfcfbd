//! Warnings for refused producers, at most one per peer and reason per [`WINDOW`].
//!
//! A camera refused for a bad key or a stream its key does not cover sees little of why
//! (ffmpeg never reads the answer to a chunked PUT and reports "Broken pipe"), so the server's
//! log is where the operator finds out. The same camera retries for as long as it runs, and an
//! HLS muxer refuses every segment file, so repeats are counted rather than logged: the next
//! line for that peer and reason says how many were left out. The line names the stream, the
//! peer address and the reason; never the key (the reasons are written without it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One line per peer and reason per this long.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Peers remembered at most; past this, entries older than [`WINDOW`] are forgotten, so a scan
/// from many addresses cannot grow the map without bound.
const MAX_ENTRIES: usize = 4096;

struct Entry {
    logged_at: Instant,
    suppressed: u64,
}

#[derive(Default)]
pub struct RefusalLog {
    entries: Mutex<HashMap<(IpAddr, &'static str), Entry>>,
}

impl RefusalLog {
    /// Logs a refusal (WARN) unless one for this peer and reason was logged within [`WINDOW`].
    pub fn refused(&self, peer: Option<IpAddr>, stream: &str, code: &'static str, reason: &str) {
        let peer_ip = peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        if let Some(suppressed) = self.should_log(peer_ip, code, Instant::now()) {
            let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            // `suppressed`: refusals of this peer for this reason since its last line.
            tracing::warn!(stream, %peer, code, reason, suppressed, "ingest refused");
        }
    }

    /// `Some(lines left out since the last one)` when a line is due at `now`.
    fn should_log(&self, peer: IpAddr, code: &'static str, now: Instant) -> Option<u64> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.get_mut(&(peer, code)) {
            if now.duration_since(e.logged_at) < WINDOW {
                e.suppressed += 1;
                return None;
            }
            let suppressed = e.suppressed;
            *e = Entry {
                logged_at: now,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.duration_since(e.logged_at) < WINDOW);
        }
        entries.insert(
            (peer, code),
            Entry {
                logged_at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_peer_and_reason_per_window() {
        let log = RefusalLog::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(log.should_log(a, "UNAUTHENTICATED", t0), Some(0));
        assert_eq!(log.should_log(a, "UNAUTHENTICATED", t0), None);
        assert_eq!(log.should_log(a, "UNAUTHENTICATED", t0 + WINDOW / 2), None);
        // Another reason, another peer: their own lines.
        assert_eq!(log.should_log(a, "PERMISSION_DENIED", t0), Some(0));
        assert_eq!(log.should_log(b, "UNAUTHENTICATED", t0), Some(0));
        // After the window: logged again, with the count of lines left out.
        assert_eq!(log.should_log(a, "UNAUTHENTICATED", t0 + WINDOW), Some(2));
        assert_eq!(log.should_log(a, "UNAUTHENTICATED", t0 + WINDOW), None);
    }
}
