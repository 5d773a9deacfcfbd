//! What a source is doing, for `GET /api/v1/streams/{name}` and `/metrics`. Written by its
//! puller, read by handlers; every message in it has been scrubbed of credentials.

use crate::timefmt::format_us;
use serde_json::{json, Value};
use std::time::Instant;

/// The states a source goes through; `as_str` is the API's and the metrics' name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// DESCRIBE/SETUP/PLAY under way, or playing but no frame yet.
    Connecting,
    /// Frames arrive and are stored.
    Streaming,
    /// The last attempt failed; the next is at `next_attempt_us`.
    Retrying,
    /// The camera refused the credentials (401/403); retried with backoff all the same.
    Unauthorized,
    /// The camera offers no track tapedeck can store.
    UnsupportedCodec,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Connecting,
        State::Streaming,
        State::Retrying,
        State::Unauthorized,
        State::UnsupportedCodec,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Streaming => "streaming",
            State::Retrying => "retrying",
            State::Unauthorized => "unauthorized",
            State::UnsupportedCodec => "unsupported_codec",
        }
    }
}

/// Over how long the bitrate is averaged: short enough to follow a camera's changes, long
/// enough to smooth one GOP's keyframe burst.
const BITRATE_WINDOW_SECS: f64 = 5.0;

#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    pub since_us: i64,
    pub last_error: Option<String>,
    pub last_error_us: Option<i64>,
    pub next_attempt_us: Option<i64>,
    pub last_frame_us: Option<i64>,
    /// Tracks the camera offers that are not recorded, each with why.
    pub skipped_tracks: Vec<String>,
    /// Where producer time comes from in the current session.
    pub time_basis: Option<String>,
    /// The recorded tracks' codecs, e.g. `avc1.42c01e`, `mp4a.40.2`.
    pub codecs: Vec<String>,
    /// Connection attempts after the first one.
    pub reconnects: u64,
    pub attempts: u64,
    pub bytes: u64,
    pub frames: u64,
    pub packets_lost: u64,
    /// Discontinuities started because packets were lost or parameters changed.
    pub discontinuities: u64,
    window_start: Option<Instant>,
    window_bytes: u64,
    bitrate_bps: f64,
}

impl Status {
    pub fn new(now_us: i64) -> Status {
        Status {
            state: State::Connecting,
            since_us: now_us,
            last_error: None,
            last_error_us: None,
            next_attempt_us: None,
            last_frame_us: None,
            skipped_tracks: Vec::new(),
            time_basis: None,
            codecs: Vec::new(),
            reconnects: 0,
            attempts: 0,
            bytes: 0,
            frames: 0,
            packets_lost: 0,
            discontinuities: 0,
            window_start: None,
            window_bytes: 0,
            bitrate_bps: 0.0,
        }
    }

    /// Moves to `state` (the `since` time changes only when the state does).
    pub fn set_state(&mut self, state: State, now_us: i64) {
        if self.state != state {
            self.state = state;
            self.since_us = now_us;
        }
        if state != State::Retrying && state != State::Unauthorized {
            self.next_attempt_us = None;
        }
        if state != State::Streaming {
            self.window_start = None;
            self.window_bytes = 0;
            self.bitrate_bps = 0.0;
        }
    }

    /// One frame of `bytes` arrived at `now_us`.
    pub fn frame(&mut self, bytes: usize, lost: u16, now_us: i64) {
        self.frames += 1;
        self.bytes += bytes as u64;
        self.packets_lost += u64::from(lost);
        self.last_frame_us = Some(now_us);
        let start = *self.window_start.get_or_insert_with(Instant::now);
        self.window_bytes += bytes as u64;
        let secs = start.elapsed().as_secs_f64();
        if secs >= BITRATE_WINDOW_SECS {
            self.bitrate_bps = self.window_bytes as f64 * 8.0 / secs;
            self.window_start = Some(Instant::now());
            self.window_bytes = 0;
        } else if self.bitrate_bps == 0.0 && secs >= 1.0 {
            self.bitrate_bps = self.window_bytes as f64 * 8.0 / secs;
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "state": self.state.as_str(),
            "since": format_us(self.since_us),
            "last_error": self.last_error,
            "last_error_time": self.last_error_us.map(format_us),
            "next_attempt": self.next_attempt_us.map(format_us),
            "last_frame_time": self.last_frame_us.map(format_us),
            "bitrate_bps": self.bitrate_bps.round() as u64,
            "codecs": self.codecs,
            "skipped_tracks": self.skipped_tracks,
            "time_basis": self.time_basis,
            "attempts": self.attempts,
            "reconnects": self.reconnects,
            "frames": self.frames,
            "bytes": self.bytes,
            "packets_lost": self.packets_lost,
            "discontinuities": self.discontinuities,
        })
    }
}
