//! The live playlist's window, as pure functions: from the newest segments of a stream, whether
//! a producer is connected, and what earlier playlists announced, decide which segments are
//! listed, which is still open, and the target durations; then render the text. The async
//! service (`hls.rs`) reads the rows, keeps the announced timing per stream and waits for
//! media; everything it decides about a live playlist is decided here.

use super::playlist::{self, Kind, MediaPlaylist};
use super::segments::{newest_is_open, Segment};

/// The smallest target duration announced before any segment of a stream is complete: the
/// common 2 s GOP, so the value is unlikely to have to grow once segments complete.
const GUESSED_TARGET_DURATION_S: u64 = 2;

/// Live playlist values that must not change for a playlist's life: they only ever grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveTiming {
    pub target_duration_s: u64,
    pub part_target_us: i64,
}

/// One live playlist's content, before it is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveView {
    pub segments: Vec<Segment>,
    /// Complete segments in `segments`.
    pub complete: usize,
    /// The last of `segments` may still grow (a producer is connected and sends GOPs in
    /// several fragments).
    pub last_open: bool,
    pub timing: LiveTiming,
    /// The media sequence number of the stream's newest segment (of the newest fragment).
    pub newest_seq: i64,
    /// LL-HLS parts can be listed: no segment in the window interleaves one moof per track.
    pub parts: bool,
}

/// The live window over `all`, the stream's newest segments in order (enough of them to fill
/// the window: the caller reads from a few windows back). `window_segments` complete segments
/// are listed (at least one), more if needed to reach three target durations (HLS 6.2.2),
/// plus the open segment. `timing` is what this stream's playlists announced so far; the
/// view's timing is that, grown to fit these segments.
pub fn live_view(
    all: Vec<Segment>,
    connected: bool,
    window_segments: usize,
    timing: LiveTiming,
    newest_seq: i64,
) -> LiveView {
    let window = window_segments.max(1);
    let last_open = newest_is_open(&all, connected);
    let complete_count = all.len() - usize::from(last_open);
    let timing = grown_timing(timing, &all, complete_count);
    let min_us = 3 * timing.target_duration_s as i64 * 1_000_000;
    let mut first = complete_count;
    let mut dur_us = 0;
    while first > 0 && ((complete_count - first) < window || dur_us < min_us) {
        first -= 1;
        dur_us += all[first].duration_us;
    }
    let segments = all[first..].to_vec();
    LiveView {
        parts: !segments.iter().any(|s| s.per_track),
        complete: segments.len() - usize::from(last_open),
        segments,
        last_open,
        timing,
        newest_seq,
    }
}

/// `timing` grown to fit `all`, of which the first `complete_count` are complete.
fn grown_timing(timing: LiveTiming, all: &[Segment], complete_count: usize) -> LiveTiming {
    let target_duration_s = if complete_count > 0 {
        timing
            .target_duration_s
            .max(playlist::target_duration_for(&all[..complete_count]))
    } else {
        // Nothing complete yet: guess from the open segment, but never below the guess.
        timing.target_duration_s.max(
            all.last()
                .map_or(1, |s| playlist::rounded_secs(s.duration_us))
                .max(GUESSED_TARGET_DURATION_S),
        )
    };
    let longest_part_us = all
        .iter()
        .flat_map(|s| s.parts.iter().map(|p| p.duration_us))
        .max()
        .unwrap_or(0);
    LiveTiming {
        target_duration_s,
        // Whole milliseconds, rounded up, so every part fits.
        part_target_us: timing
            .part_target_us
            .max((longest_part_us + 999) / 1000 * 1000),
    }
}

impl LiveView {
    /// Whether the playlist holds segment `msn` (complete), or part `part` of it, or later.
    pub fn satisfies(&self, msn: i64, part: Option<i64>) -> bool {
        let n = self.segments.len();
        self.segments.iter().enumerate().any(|(i, s)| {
            let complete = !(self.last_open && i + 1 == n);
            match part.filter(|_| self.parts) {
                None => complete && s.seq >= msn,
                Some(p) => s.seq > msn || (s.seq == msn && (complete || s.parts.len() as i64 > p)),
            }
        })
    }

    /// The playlist text; `query` is appended to every URI.
    ///
    /// LL-HLS parts must tile the segment's time, and one moof per track makes fragments
    /// overlap (an audio and a video fragment cover the same time): such a window is listed as
    /// complete segments only, without parts, a preload hint or the open segment.
    pub fn render(&self, query: &str) -> String {
        let td = self.timing.target_duration_s.max(1);
        let segments = if self.parts {
            &self.segments[..]
        } else {
            &self.segments[..self.complete]
        };
        playlist::media_playlist(&MediaPlaylist {
            kind: Kind::Live,
            target_duration_s: td,
            part_target_us: self.parts.then(|| self.timing.part_target_us.max(1000)),
            segments,
            last_open: self.last_open && self.parts,
            parts_window_us: 3 * td as i64 * 1_000_000,
            query,
            ended: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playback::segments::group_segments;
    use crate::playback::segments::tests::row;
    use crate::store::FragmentRow;

    /// 2026-11-25T17:00:00Z in ms.
    const T0: i64 = 1_795_626_000_000;

    /// `n` segments of `gop_ms`, each of `chunks` fragments (the first a keyframe), numbered from 1.
    fn segments(n: i64, gop_ms: i64, chunks: i64) -> Vec<Segment> {
        let chunk_ms = gop_ms / chunks;
        let rows: Vec<FragmentRow> = (0..n * chunks)
            .map(|i| {
                let start = i % chunks == 0;
                row(
                    i + 1,
                    T0 + i * chunk_ms,
                    chunk_ms,
                    start,
                    start,
                    i / chunks,
                    0,
                    1,
                    1,
                )
            })
            .collect();
        group_segments(&rows)
    }

    fn seqs(view: &LiveView) -> Vec<i64> {
        view.segments.iter().map(|s| s.seq).collect()
    }

    #[test]
    fn lists_the_window_of_complete_segments_and_the_open_one() {
        let view = live_view(segments(10, 2000, 2), true, 3, LiveTiming::default(), 9);
        assert_eq!(seqs(&view), [6, 7, 8, 9]);
        assert_eq!((view.complete, view.last_open, view.parts), (3, true, true));
        assert_eq!(
            view.timing,
            LiveTiming {
                target_duration_s: 2,
                part_target_us: 1_000_000
            }
        );
        assert!(view.satisfies(8, None));
        assert!(!view.satisfies(9, None), "the open segment is not complete");
        assert!(view.satisfies(9, Some(1)), "its second part is listed");
        assert!(!view.satisfies(9, Some(2)));
    }

    /// Three target durations at least (HLS 6.2.2): with 2 s announced earlier, one-second
    /// segments take six to reach it; the target duration does not shrink to their 1 s.
    #[test]
    fn grows_the_window_to_three_target_durations() {
        let view = live_view(segments(10, 1000, 2), false, 3, LiveTiming::default(), 9);
        assert_eq!(seqs(&view), [7, 8, 9]);
        assert_eq!((view.complete, view.last_open), (3, false));
        assert_eq!(view.timing.target_duration_s, 1);
        let announced = LiveTiming {
            target_duration_s: 2,
            part_target_us: 0,
        };
        let view = live_view(segments(10, 1000, 2), false, 3, announced, 9);
        assert_eq!(seqs(&view), [4, 5, 6, 7, 8, 9]);
        assert_eq!(view.timing.target_duration_s, 2);
    }

    /// One fragment per GOP: each fragment is a complete segment once durable, so nothing is
    /// open even with a producer connected.
    #[test]
    fn one_fragment_per_gop_leaves_nothing_open() {
        let view = live_view(segments(4, 2000, 1), true, 3, LiveTiming::default(), 3);
        assert_eq!(seqs(&view), [1, 2, 3]);
        assert_eq!((view.complete, view.last_open), (3, false));
    }

    /// Before any segment is complete the target duration is guessed, never below 2 s.
    #[test]
    fn a_new_stream_guesses_the_target_duration() {
        let view = live_view(segments(1, 1000, 2), true, 3, LiveTiming::default(), 0);
        assert_eq!((view.complete, view.last_open), (0, true));
        assert_eq!(view.timing.target_duration_s, 2);
        assert_eq!(view.timing.part_target_us, 500_000);
    }

    /// Parts for the segments within three target durations of the end, and a preload hint
    /// for the open segment's next part.
    #[test]
    fn renders_exact_text() {
        let view = live_view(segments(4, 2000, 2), true, 2, LiveTiming::default(), 3);
        assert_eq!(
            view.render("?token=t"),
            "#EXTM3U\n\
             #EXT-X-VERSION:6\n\
             #EXT-X-TARGETDURATION:2\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.000\n\
             #EXT-X-PART-INF:PART-TARGET=1.000\n\
             #EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:0\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"init/1.mp4?token=t\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T17:00:00.000Z\n\
             #EXTINF:2.000,\n\
             segments/1.m4s?token=t\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T17:00:02.000Z\n\
             #EXT-X-PART:DURATION=1.000,URI=\"parts/3.0.m4s?token=t\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=1.000,URI=\"parts/4.0.m4s?token=t\"\n\
             #EXTINF:2.000,\n\
             segments/3.m4s?token=t\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T17:00:04.000Z\n\
             #EXT-X-PART:DURATION=1.000,URI=\"parts/5.0.m4s?token=t\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=1.000,URI=\"parts/6.0.m4s?token=t\"\n\
             #EXTINF:2.000,\n\
             segments/5.m4s?token=t\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T17:00:06.000Z\n\
             #EXT-X-PART:DURATION=1.000,URI=\"parts/7.0.m4s?token=t\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=1.000,URI=\"parts/8.0.m4s?token=t\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"parts/9.0.m4s?token=t\"\n"
        );
    }

    /// One moof per track in the window: complete segments only, no parts, hint or open one
    /// (blocking reloads still work).
    #[test]
    fn per_track_windows_list_complete_segments_only() {
        let mut all = segments(3, 2000, 2);
        all[1].per_track = true;
        let view = live_view(all, true, 3, LiveTiming::default(), 2);
        assert!(!view.parts);
        assert_eq!(
            view.render(""),
            "#EXTM3U\n\
             #EXT-X-VERSION:6\n\
             #EXT-X-TARGETDURATION:2\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES\n\
             #EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:0\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"init/1.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T17:00:00.000Z\n\
             #EXTINF:2.000,\n\
             segments/1.m4s\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T17:00:02.000Z\n\
             #EXTINF:2.000,\n\
             segments/3.m4s\n"
        );
    }
}
