//! Where a fragment goes on its stream's timeline (DESIGN.md, "Time rules"). Pure: no clock,
//! no store; the caller passes the server time and the end of the stream's newest fragment.
//!
//! Placement is per track. Producers such as GStreamer's `mp4mux` and ffmpeg's `separate_moof`
//! write one `moof` per track, so an audio fragment and a video fragment cover the same time:
//! "backwards" and overlap are judged against each track's own end. The offset from media time
//! to producer time is one number per session, shared by every track (so audio/video sync
//! holds); it is decided at the session's first fragment, moved only when a track's first
//! fragment would overlap what the stream already holds (the jitter rule), and replaced by a
//! `prft` when a fragment carries one.

use crate::error::{Error, Result};
use crate::timefmt::format_us;

/// Media times from one producer are exact; this absorbs rounding between timescales.
const MEDIA_SLACK_US: i64 = 1000;

/// How producer time is derived for fragments that carry no `prft`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// `producer_start` given by the producer: the wall clock of the session's first fragment.
    ProducerStart(i64),
    /// Nothing given: the session's first fragment started when its capture began, as far as the
    /// server can tell: the server time its last byte arrived minus its duration, but not before
    /// the producer connected (`connected_us`), and not before the end of the stream.
    ///
    /// Why not the arrival of its last byte: a live producer sends a fragment once all of it is
    /// captured (ffmpeg and GStreamer write each `moof`+`mdat` whole), so that time is one
    /// fragment late, and so would be every time of the session. Why not the arrival of its
    /// first byte: for the same reason it is hardly earlier than the last. The connection time
    /// bounds the estimate for an upload faster than real time (a file sent with `curl -T`),
    /// whose first fragment arrives long before its duration has passed.
    ServerClock { connected_us: i64 },
}

/// One track's media in a fragment, in the producer's media time (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackSpan {
    pub track_id: u32,
    pub start_us: i64,
    pub end_us: i64,
}

/// The decision for one fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Where the earliest of the fragment's tracks starts, on the stream timeline.
    pub producer_start_us: i64,
    /// Where the latest of its tracks ends.
    pub producer_end_us: i64,
    /// Producer time minus media time; every track of the fragment moves by this much.
    pub offset_us: i64,
}

/// What the session knows of one track: where its newest fragment ended.
#[derive(Debug, Clone, Copy)]
struct TrackEnd {
    track_id: u32,
    media_end_us: i64,
    producer_end_us: i64,
}

#[derive(Debug, Clone)]
pub struct SessionTimeline {
    anchor: Anchor,
    offset_us: Option<i64>,
    tracks: Vec<TrackEnd>,
    /// The stream's end when the session began: a track's first fragment must not start before it.
    stream_end_at_start_us: Option<i64>,
    /// The stream's end now, over all tracks (what the next session appends after).
    stream_end_us: Option<i64>,
    jitter_tolerance_us: i64,
}

impl SessionTimeline {
    pub fn new(anchor: Anchor, stream_end_us: Option<i64>, jitter_tolerance_us: i64) -> Self {
        SessionTimeline {
            anchor,
            offset_us: None,
            tracks: Vec::new(),
            stream_end_at_start_us: stream_end_us,
            stream_end_us,
            jitter_tolerance_us,
        }
    }

    pub fn stream_end_us(&self) -> Option<i64> {
        self.stream_end_us
    }

    fn track(&self, track_id: u32) -> Option<&TrackEnd> {
        self.tracks.iter().find(|t| t.track_id == track_id)
    }

    /// Decides the producer time of a fragment whose tracks hold `spans` (never empty), or
    /// refuses it. `prft_offset_us` is producer time minus media time as the fragment's `prft`
    /// states it; `received_us` is the server time the fragment's last byte arrived. Nothing
    /// changes until `commit`.
    pub fn place(
        &self,
        spans: &[TrackSpan],
        prft_offset_us: Option<i64>,
        received_us: i64,
    ) -> Result<Placement> {
        let Some(media_start_us) = spans.iter().map(|s| s.start_us).min() else {
            return Err(Error::invalid("the fragment holds no track"));
        };
        let media_end_us = spans
            .iter()
            .map(|s| s.end_us)
            .max()
            .unwrap_or(media_start_us);
        for s in spans {
            if let Some(prev) = self.track(s.track_id) {
                if s.start_us < prev.media_end_us - MEDIA_SLACK_US {
                    return Err(Error::invalid(format!(
                        "timestamps go backwards within the session: track {} starts at media \
                         time {:.3} s, before its previous fragment ended ({:.3} s); the fragment \
                         was dropped",
                        s.track_id,
                        s.start_us as f64 / 1e6,
                        prev.media_end_us as f64 / 1e6
                    )));
                }
            }
        }
        let mut offset_us = match (prft_offset_us, self.offset_us, self.anchor) {
            (Some(o), _, _) => o,
            (None, Some(o), _) => o,
            (None, None, Anchor::ProducerStart(p)) => p - media_start_us,
            (None, None, Anchor::ServerClock { connected_us }) => {
                let capture_start_us = received_us
                    .saturating_sub(media_end_us - media_start_us)
                    .max(connected_us);
                capture_start_us.max(self.stream_end_us.unwrap_or(i64::MIN)) - media_start_us
            }
        };
        // The largest overlap of any track with what must come before it: its own previous
        // fragment, or for a track new to the session, the stream as it was. Within a track,
        // an overlap inside the rounding slack is left alone, so no shift ever accumulates.
        let mut overlap_us = 0i64;
        let mut floor_us = i64::MIN;
        for s in spans {
            let start = s.start_us + offset_us;
            let (floor, slack) = match self.track(s.track_id) {
                Some(prev) => (Some(prev.producer_end_us), MEDIA_SLACK_US),
                None => (self.stream_end_at_start_us, 0),
            };
            if let Some(floor) = floor {
                let o = floor - start;
                if o > slack && o > overlap_us {
                    overlap_us = o;
                    floor_us = floor;
                }
            }
        }
        if overlap_us > 0 {
            if overlap_us > self.jitter_tolerance_us {
                let advice = if prft_offset_us.is_some() {
                    "the time comes from the fragment's prft box: the producer's prft wall \
                     clock must advance with the media it sends (uploading a file faster than \
                     real time with wall-clock prft does not)"
                        .to_string()
                } else {
                    format!(
                        "pass producer_start later than {} (or omit it to append)",
                        format_us(floor_us)
                    )
                };
                return Err(Error::invalid(format!(
                    "the fragment would start at {}, {:.3} s before the end of the stream's \
                     newest fragment ({}); producer time never goes backwards within a stream; {advice}",
                    format_us(floor_us - overlap_us),
                    overlap_us as f64 / 1e6,
                    format_us(floor_us),
                )));
            }
            offset_us += overlap_us;
        }
        Ok(Placement {
            producer_start_us: media_start_us + offset_us,
            producer_end_us: media_end_us + offset_us,
            offset_us,
        })
    }

    /// Records that a placed fragment was accepted.
    pub fn commit(&mut self, placement: Placement, spans: &[TrackSpan]) {
        self.offset_us = Some(placement.offset_us);
        for s in spans {
            let end = TrackEnd {
                track_id: s.track_id,
                media_end_us: s.end_us,
                producer_end_us: s.end_us + placement.offset_us,
            };
            match self.tracks.iter_mut().find(|t| t.track_id == s.track_id) {
                Some(t) => *t = end,
                None => self.tracks.push(end),
            }
        }
        let end = placement.producer_end_us;
        self.stream_end_us = Some(self.stream_end_us.map_or(end, |e| e.max(end)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    const MS: i64 = 1_000;
    const NOW: i64 = 1_764_000_000 * S;
    const VIDEO: u32 = 1;
    const AUDIO: u32 = 2;
    /// No times given, and the producer connected at NOW: fragments arriving at NOW start there.
    const AT_NOW: Anchor = Anchor::ServerClock { connected_us: NOW };

    fn span(track_id: u32, start_us: i64, end_us: i64) -> TrackSpan {
        TrackSpan {
            track_id,
            start_us,
            end_us,
        }
    }

    /// Places and commits a fragment of the given tracks; returns its producer start.
    fn put(t: &mut SessionTimeline, spans: &[TrackSpan], prft: Option<i64>) -> Result<i64> {
        let p = t.place(spans, prft, NOW)?;
        t.commit(p, spans);
        Ok(p.producer_start_us)
    }

    /// A fragment holding one track (the video, unless said otherwise).
    fn run(t: &mut SessionTimeline, media: i64, dur: i64, prft: Option<i64>) -> Result<i64> {
        put(
            t,
            &[span(VIDEO, media, media + dur)],
            prft.map(|p| p - media),
        )
    }

    #[test]
    fn server_clock_anchor_follows_media_time() {
        let mut t = SessionTimeline::new(AT_NOW, None, S);
        assert_eq!(run(&mut t, 10 * S, 2 * S, None).unwrap(), NOW);
        // Arrives instantly (faster than real time): still placed by media time.
        assert_eq!(run(&mut t, 12 * S, 2 * S, None).unwrap(), NOW + 2 * S);
    }

    /// A live producer sends its first fragment once all of it is captured: the fragment
    /// started its duration before its last byte arrived (received at NOW here).
    #[test]
    fn server_clock_anchor_is_the_start_of_capture() {
        let connected_us = NOW - 10 * S;
        let mut t = SessionTimeline::new(Anchor::ServerClock { connected_us }, None, S);
        assert_eq!(run(&mut t, 10 * S, 2 * S, None).unwrap(), NOW - 2 * S);
        assert_eq!(run(&mut t, 12 * S, 2 * S, None).unwrap(), NOW);
    }

    /// A file uploaded faster than real time: its first fragment cannot have started before
    /// the producer connected.
    #[test]
    fn server_clock_anchor_is_not_before_the_connection() {
        let connected_us = NOW - S / 2;
        let t = SessionTimeline::new(Anchor::ServerClock { connected_us }, None, S);
        let p = t.place(&[span(VIDEO, 0, 2 * S)], None, NOW).unwrap();
        assert_eq!(p.producer_start_us, connected_us);
        // ... nor before the end of the stream.
        let end = NOW + S;
        let t = SessionTimeline::new(Anchor::ServerClock { connected_us }, Some(end), S);
        let p = t.place(&[span(VIDEO, 0, 2 * S)], None, NOW).unwrap();
        assert_eq!(p.producer_start_us, end);
    }

    #[test]
    fn new_session_without_times_appends_after_stream_end() {
        let end = NOW + 60 * S; // the stream already reaches a minute into the future
        let mut t = SessionTimeline::new(AT_NOW, Some(end), S);
        assert_eq!(run(&mut t, 0, 2 * S, None).unwrap(), end);
        assert_eq!(run(&mut t, 2 * S, 2 * S, None).unwrap(), end + 2 * S);
    }

    #[test]
    fn producer_start_anchor() {
        let mut t = SessionTimeline::new(Anchor::ProducerStart(NOW - 3600 * S), None, S);
        assert_eq!(run(&mut t, 5 * S, S, None).unwrap(), NOW - 3600 * S);
        assert_eq!(run(&mut t, 6 * S, S, None).unwrap(), NOW - 3599 * S);
    }

    #[test]
    fn prft_wins_per_fragment() {
        let mut t = SessionTimeline::new(AT_NOW, None, S);
        assert_eq!(run(&mut t, 0, S, Some(NOW - 5 * S)).unwrap(), NOW - 5 * S);
        assert_eq!(run(&mut t, S, S, Some(NOW - 4 * S)).unwrap(), NOW - 4 * S);
    }

    #[test]
    fn small_overlap_is_jitter_and_shifts_the_session() {
        let end = NOW + S / 2;
        let mut t = SessionTimeline::new(Anchor::ProducerStart(NOW), Some(end), S);
        assert_eq!(run(&mut t, 0, S, None).unwrap(), end);
        assert_eq!(run(&mut t, S, S, None).unwrap(), end + S, "shift sticks");
    }

    #[test]
    fn large_overlap_is_refused_with_advice() {
        let t = SessionTimeline::new(Anchor::ProducerStart(NOW - 10 * S), Some(NOW), S);
        let e = t.place(&[span(VIDEO, 0, S)], None, NOW).unwrap_err();
        assert!(e.message.contains("producer_start"), "{}", e.message);
        assert!(e.message.contains("10.000 s"), "{}", e.message);
    }

    #[test]
    fn backwards_media_time_within_session_is_refused() {
        let mut t = SessionTimeline::new(AT_NOW, None, S);
        run(&mut t, 10 * S, 2 * S, None).unwrap();
        let e = t
            .place(&[span(VIDEO, 5 * S, 6 * S)], None, NOW)
            .unwrap_err();
        assert!(e.message.contains("backwards"), "{}", e.message);
        assert!(e.message.contains("track 1"), "{}", e.message);
        // The session goes on with the next good fragment.
        assert_eq!(run(&mut t, 12 * S, 2 * S, None).unwrap(), NOW + 2 * S);
    }

    /// mp4mux: audio [0, 0.98), video [0, 1.0), audio [0.98, 1.96), video [1.0, 2.0), ...
    /// Every moof is accepted and both tracks keep one offset.
    #[test]
    fn one_moof_per_track_is_placed_per_track() {
        let mut t = SessionTimeline::new(AT_NOW, None, S);
        let audio_ms = 980;
        for i in 0..10 {
            let a = put(
                &mut t,
                &[span(AUDIO, i * audio_ms * MS, (i + 1) * audio_ms * MS)],
                None,
            )
            .unwrap();
            assert_eq!(a, NOW + i * audio_ms * MS, "audio {i}");
            let v = put(&mut t, &[span(VIDEO, i * S, (i + 1) * S)], None).unwrap();
            assert_eq!(v, NOW + i * S, "video {i}");
        }
        assert_eq!(t.stream_end_us(), Some(NOW + 10 * S));
        // A last moof with only the audio tail, starting where the audio ended but before the
        // video's end (gst-plugins-rs isofmp4mux ends this way).
        let tail = put(&mut t, &[span(AUDIO, 9800 * MS, 10_020 * MS)], None).unwrap();
        assert_eq!(tail, NOW + 9800 * MS);
        assert_eq!(t.stream_end_us(), Some(NOW + 10_020 * MS));
        // Each track still refuses its own going back.
        let e = t
            .place(&[span(VIDEO, 9 * S, 10 * S)], None, NOW)
            .unwrap_err();
        assert!(e.message.contains("track 1"), "{}", e.message);
    }

    /// The jitter shift happens when a track first meets the stream's end, and both tracks move
    /// by it, so audio and video stay in sync; later fragments never shift again.
    #[test]
    fn jitter_shift_is_shared_by_all_tracks() {
        let end = NOW + 300 * MS;
        let mut t = SessionTimeline::new(Anchor::ProducerStart(NOW), Some(end), S);
        let v0 = put(&mut t, &[span(VIDEO, 0, S)], None).unwrap();
        let a0 = put(&mut t, &[span(AUDIO, 0, 980 * MS)], None).unwrap();
        assert_eq!((v0, a0), (end, end));
        let v1 = put(&mut t, &[span(VIDEO, S, 2 * S)], None).unwrap();
        let a1 = put(&mut t, &[span(AUDIO, 980 * MS, 1960 * MS)], None).unwrap();
        assert_eq!(v1 - a1, 20 * MS, "same offset for both tracks");
        assert_eq!(v1, end + S);
    }

    /// A fragment holding both tracks covers both: it starts at the earlier and ends at the later.
    #[test]
    fn a_fragment_covers_all_its_tracks() {
        let t = SessionTimeline::new(Anchor::ProducerStart(NOW), None, S);
        let p = t
            .place(
                &[span(VIDEO, 20 * MS, 2 * S), span(AUDIO, 0, 2021 * MS)],
                None,
                NOW,
            )
            .unwrap();
        assert_eq!(p.producer_start_us, NOW);
        assert_eq!(p.producer_end_us, NOW + 2021 * MS);
    }
}
