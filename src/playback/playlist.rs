//! HLS playlists as pure functions from segments to text (fMP4 only). Written as text rather
//! than through a playlist library because LL-HLS tags are dropped by the libraries we tried.
//! Rules followed are in shared/reference/hls-cmaf-rules.md; the numbers below cite it.
//!
//! URIs are relative to the playlist (`.../hls/`): `init/{id}.mp4`, `segments/{n}.m4s` where
//! `n` is the segment's first fragment, and `parts/{f}.0.m4s` for the part that is fragment `f`
//! (the server also answers `parts/{n}.{i}.m4s` with fragment `n + i`). `query` (e.g. a
//! playback token) is appended to every URI.

use super::segments::Segment;
use std::fmt::Write;

/// What kind of media playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sliding live window (no PLAYLIST-TYPE), with LL-HLS parts when the stream has them.
    Live,
    /// Grows by appending, from a fixed start (archive with open end).
    Event,
    /// A closed range (archive): never changes, ends with ENDLIST.
    Vod,
}

#[derive(Debug, Clone)]
pub struct MediaPlaylist<'a> {
    pub kind: Kind,
    /// Fixed for the playlist's life; at least every rounded EXTINF (1.2 item 1).
    pub target_duration_s: u64,
    /// Some for LL-HLS: at least every part's duration.
    pub part_target_us: Option<i64>,
    pub segments: &'a [Segment],
    /// The last segment is still growing: list only its parts (LL-HLS) and a preload hint.
    pub last_open: bool,
    /// Parts are listed for segments that start within this many µs of the playlist's end.
    pub parts_window_us: i64,
    /// Appended to every URI (starts with '?', or empty).
    pub query: &'a str,
    /// EVENT playlist whose recording ended: add ENDLIST.
    pub ended: bool,
}

/// Seconds with millisecond precision, as HLS decimal-floating-point.
fn secs(us: i64) -> String {
    format!("{:.3}", us as f64 / 1e6)
}

/// Rounds a duration to whole seconds the way the target-duration rule does (half up).
pub fn rounded_secs(us: i64) -> u64 {
    ((us + 500_000) / 1_000_000).max(0) as u64
}

/// The smallest valid target duration for these segments (at least 1).
pub fn target_duration_for(segments: &[Segment]) -> u64 {
    segments
        .iter()
        .map(|s| rounded_secs(s.duration_us))
        .max()
        .unwrap_or(1)
        .max(1)
}

/// ISO 8601 with milliseconds and `Z`, as EXT-X-PROGRAM-DATE-TIME wants (1.2 item 7).
pub fn program_date_time(us: i64) -> String {
    let ms = us.div_euclid(1000);
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

pub fn media_playlist(p: &MediaPlaylist<'_>) -> String {
    let mut out = String::with_capacity(256 + p.segments.len() * 120);
    let q = p.query;
    write_header(
        &mut out,
        p.kind,
        p.target_duration_s,
        p.part_target_us,
        p.segments.first(),
    );
    let end_us = p.segments.last().map_or(0, |s| s.end_us());
    let mut prev: Option<&Segment> = None;
    for (i, seg) in p.segments.iter().enumerate() {
        let is_open = p.last_open && i + 1 == p.segments.len();
        let with_parts = p.kind == Kind::Live
            && p.part_target_us.is_some()
            && (is_open || end_us - seg.start_us <= p.parts_window_us);
        write_segment(&mut out, seg, prev, is_open, with_parts, q);
        prev = Some(seg);
    }
    if p.kind == Kind::Live && p.part_target_us.is_some() {
        if let Some(last) = p.segments.last() {
            // The next part: the fragment after the newest one (2.x PRELOAD-HINT).
            let next = last.last_fragment() + 1;
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"parts/{next}.0.m4s{q}\""
            );
        }
    }
    if p.kind == Kind::Vod || (p.kind == Kind::Event && p.ended) {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// The tags before the first segment.
pub fn write_header(
    out: &mut String,
    kind: Kind,
    target_duration_s: u64,
    part_target_us: Option<i64>,
    first: Option<&Segment>,
) {
    out.push_str("#EXTM3U\n#EXT-X-VERSION:6\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target_duration_s}");
    match kind {
        Kind::Live => match part_target_us {
            Some(pt) => {
                // PART-HOLD-BACK must be at least twice the part target; three is advised.
                let _ = writeln!(
                    out,
                    "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}",
                    secs(3 * pt)
                );
                let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", secs(pt));
            }
            None => out.push_str("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES\n"),
        },
        Kind::Event => out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
        Kind::Vod => out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
    }
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", first.map_or(0, |s| s.seq));
    // The DSN of the first segment; no DISCONTINUITY tag is written before it (1.2 item 4).
    let _ = writeln!(
        out,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        first.map_or(0, |s| s.disc_seq)
    );
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
}

/// One segment: DISCONTINUITY and MAP when needed, PROGRAM-DATE-TIME, its parts (LL-HLS), and
/// unless it is still open, its EXTINF and URI.
pub fn write_segment(
    out: &mut String,
    seg: &Segment,
    prev: Option<&Segment>,
    is_open: bool,
    with_parts: bool,
    q: &str,
) {
    if prev.is_some_and(|p| p.disc_seq != seg.disc_seq) {
        out.push_str("#EXT-X-DISCONTINUITY\n");
    }
    if prev.is_none_or(|p| p.init_id != seg.init_id) {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"init/{}.mp4{q}\"", seg.init_id);
    }
    let _ = writeln!(
        out,
        "#EXT-X-PROGRAM-DATE-TIME:{}",
        program_date_time(seg.start_us)
    );
    if with_parts {
        for part in &seg.parts {
            // Named by fragment number alone (`parts/{fragment}.0.m4s`): whether the next
            // fragment starts a new segment is unknown when it is hinted, and a preload hint's URI
            // must be the one the part is later listed under.
            let _ = write!(
                out,
                "#EXT-X-PART:DURATION={},URI=\"parts/{}.0.m4s{q}\"",
                secs(part.duration_us),
                part.fragment
            );
            if part.independent {
                out.push_str(",INDEPENDENT=YES");
            }
            out.push('\n');
        }
    }
    if !is_open {
        let _ = writeln!(out, "#EXTINF:{},", secs(seg.duration_us));
        let _ = writeln!(out, "segments/{}.m4s{q}", seg.first_fragment);
    }
}

/// One variant: the stream as stored.
#[derive(Debug, Clone)]
pub struct Variant<'a> {
    pub uri: &'a str,
    pub peak_bandwidth_bps: u64,
    pub average_bandwidth_bps: u64,
    pub codecs: &'a str,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
}

pub fn master_playlist(v: &Variant<'_>) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let _ = write!(
        out,
        "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
        v.peak_bandwidth_bps.max(1),
        v.average_bandwidth_bps.max(1),
        v.codecs
    );
    if let Some((w, h)) = v.resolution {
        let _ = write!(out, ",RESOLUTION={w}x{h}");
    }
    if let Some(fps) = v.frame_rate {
        let _ = write!(out, ",FRAME-RATE={fps:.3}");
    }
    let _ = writeln!(out, "\n{}", v.uri);
    out
}

#[cfg(test)]
mod tests {
    use super::super::segments::{group_segments, tests::row};
    use super::*;

    const T0: i64 = 1_764_090_000_000; // 2025-11-25T17:00:00Z in ms

    #[test]
    fn vod_with_discontinuity_and_new_init() {
        let rows = vec![
            row(1, T0, 2000, true, true, 0, 0, 1, 1),
            row(2, T0 + 2000, 2000, true, true, 1, 0, 1, 1),
            row(3, T0 + 10_000, 2400, true, true, 2, 1, 2, 2),
        ];
        let segs = group_segments(&rows);
        let text = media_playlist(&MediaPlaylist {
            kind: Kind::Vod,
            target_duration_s: target_duration_for(&segs),
            part_target_us: None,
            segments: &segs,
            last_open: false,
            parts_window_us: 0,
            query: "",
            ended: true,
        });
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"init/1.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2025-11-25T17:00:00.000Z\n\
             #EXTINF:2.000,\nsegments/1.m4s\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-11-25T17:00:02.000Z\n#EXTINF:2.000,\nsegments/2.m4s\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init/2.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-11-25T17:00:10.000Z\n#EXTINF:2.400,\nsegments/3.m4s\n\
             #EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn target_duration_rounds_half_up() {
        let segs = group_segments(&[row(1, 0, 2500, true, true, 0, 0, 1, 1)]);
        assert_eq!(target_duration_for(&segs), 3);
        let segs = group_segments(&[row(1, 0, 2499, true, true, 0, 0, 1, 1)]);
        assert_eq!(target_duration_for(&segs), 2);
        assert_eq!(target_duration_for(&[]), 1);
    }

    #[test]
    fn live_low_latency_parts_and_preload_hint() {
        let rows = vec![
            row(5, T0, 500, true, true, 7, 3, 1, 1),
            row(6, T0 + 500, 500, false, false, 7, 3, 1, 1),
            row(7, T0 + 1000, 500, true, true, 8, 3, 1, 1),
            row(8, T0 + 1500, 500, false, false, 8, 3, 1, 1),
        ];
        let segs = group_segments(&rows);
        let text = media_playlist(&MediaPlaylist {
            kind: Kind::Live,
            target_duration_s: 1,
            part_target_us: Some(500_000),
            segments: &segs,
            last_open: true,
            parts_window_us: 3_000_000,
            query: "?token=x",
            ended: false,
        });
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n\
             #EXT-X-PART-INF:PART-TARGET=0.500\n#EXT-X-MEDIA-SEQUENCE:7\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:3\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"init/1.mp4?token=x\"\n#EXT-X-PROGRAM-DATE-TIME:2025-11-25T17:00:00.000Z\n\
             #EXT-X-PART:DURATION=0.500,URI=\"parts/5.0.m4s?token=x\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.500,URI=\"parts/6.0.m4s?token=x\"\n\
             #EXTINF:1.000,\nsegments/5.m4s?token=x\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-11-25T17:00:01.000Z\n\
             #EXT-X-PART:DURATION=0.500,URI=\"parts/7.0.m4s?token=x\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.500,URI=\"parts/8.0.m4s?token=x\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"parts/9.0.m4s?token=x\"\n"
        );
    }

    #[test]
    fn event_has_no_endlist_until_ended() {
        let segs = group_segments(&[row(1, T0, 2000, true, true, 4, 0, 1, 1)]);
        let mut p = MediaPlaylist {
            kind: Kind::Event,
            target_duration_s: 2,
            part_target_us: None,
            segments: &segs,
            last_open: false,
            parts_window_us: 0,
            query: "",
            ended: false,
        };
        let text = media_playlist(&p);
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"));
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:4\n"));
        assert!(!text.contains("ENDLIST"));
        p.ended = true;
        assert!(media_playlist(&p).ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn master_lists_codecs_resolution_bandwidth() {
        let text = master_playlist(&Variant {
            uri: "live.m3u8",
            peak_bandwidth_bps: 450_000,
            average_bandwidth_bps: 380_000,
            codecs: "avc1.64001e,mp4a.40.2",
            resolution: Some((640, 360)),
            frame_rate: Some(25.0),
        });
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=450000,AVERAGE-BANDWIDTH=380000,\
             CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,FRAME-RATE=25.000\nlive.m3u8\n"
        );
    }

    #[test]
    fn program_date_time_format() {
        assert_eq!(
            program_date_time(1_764_090_000_123_456),
            "2025-11-25T17:00:00.123Z"
        );
    }
}
