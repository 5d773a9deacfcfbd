//! What an HLS segment is, for playback: a run of fragments from a segment start to the next,
//! each fragment of it an LL-HLS part; and when the newest one is complete.
//!
//! Where segments start (at a discontinuity or a video keyframe fragment, never at a fragment
//! without video in a stream with video; DESIGN.md, "segment") is decided once, when the
//! fragment is written, by the store's writer (`structure_after` in store/writer.rs), and kept
//! in the index as `segment_start`, `segment_seq` and `disc_seq`: the store's queries find
//! segments by those columns, and the rule needs the stream's previous fragment, which only the
//! writer sees in order. Nothing in playback looks at keyframes to find a boundary again; this
//! module groups rows by those columns ([`group_segments`]) and decides, for the live edge,
//! whether the newest segment may still grow ([`newest_is_open`]).

use crate::store::FragmentRow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub fragment: i64,
    pub duration_us: i64,
    pub independent: bool,
    pub size_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Media sequence number: never changes for this segment.
    pub seq: i64,
    /// Discontinuity sequence number of this segment.
    pub disc_seq: i64,
    /// The number of the first fragment; names the segment in URLs.
    pub first_fragment: i64,
    pub init_id: i64,
    pub session_id: i64,
    pub start_us: i64,
    pub duration_us: i64,
    pub size_bytes: i64,
    pub parts: Vec<Part>,
    /// It holds fragments with video and fragments without (one moof per track), so its
    /// fragments overlap in time and cannot be listed as LL-HLS parts.
    pub per_track: bool,
}

impl Segment {
    pub fn last_fragment(&self) -> i64 {
        self.first_fragment + self.parts.len() as i64 - 1
    }
    pub fn end_us(&self) -> i64 {
        self.start_us + self.duration_us
    }
}

/// Groups rows (ordered by number, consecutive) into segments. Rows before the first segment
/// start are dropped: a segment is only served from its beginning.
///
/// A segment lasts until the latest end of its video fragments (of all its fragments when it
/// has none): with one moof per track, the audio fragment after a video fragment may run past
/// the next keyframe, and belongs to this segment without lengthening it.
pub fn group_segments(rows: &[FragmentRow]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    // Per segment in `out`: latest end of a video fragment, and of any fragment; whether it
    // has a fragment with video and one without.
    let mut ends: Vec<(Option<i64>, i64, [bool; 2])> = Vec::new();
    for r in rows {
        let part = Part {
            fragment: r.number,
            duration_us: r.duration_us,
            independent: r.keyframe,
            size_bytes: r.size_bytes,
        };
        let end = r.producer_end_us();
        let video_end = r.has_video.then_some(end);
        match (out.last_mut(), ends.last_mut()) {
            (Some(seg), Some((seg_video_end, seg_end, kinds)))
                if !r.segment_start
                    && r.segment_seq == seg.seq
                    && r.number == seg.last_fragment() + 1 =>
            {
                *seg_video_end = (*seg_video_end).max(video_end);
                kinds[usize::from(r.has_video)] = true;
                seg.per_track = kinds[0] && kinds[1];
                *seg_end = (*seg_end).max(end);
                seg.duration_us = seg_video_end.unwrap_or(*seg_end) - seg.start_us;
                seg.size_bytes += r.size_bytes;
                seg.parts.push(part);
            }
            _ if !r.segment_start => {}
            _ => {
                out.push(Segment {
                    seq: r.segment_seq,
                    disc_seq: r.disc_seq,
                    first_fragment: r.number,
                    init_id: r.init_id,
                    session_id: r.session_id,
                    start_us: r.producer_start_us,
                    duration_us: r.duration_us,
                    size_bytes: r.size_bytes,
                    parts: vec![part],
                    per_track: false,
                });
                let mut kinds = [false; 2];
                kinds[usize::from(r.has_video)] = true;
                ends.push((video_end, end, kinds));
            }
        }
    }
    out
}

/// Whether the producer's current session sends one fragment per GOP (every fragment starts
/// a segment), so each new fragment is a complete segment the moment it is durable. The first
/// fragment of a session does not tell yet: that takes a second one.
pub fn one_fragment_per_segment(segments: &[Segment]) -> bool {
    let Some(last) = segments.last() else {
        return false;
    };
    let session: Vec<&Segment> = segments
        .iter()
        .rev()
        .take_while(|s| s.session_id == last.session_id && s.disc_seq == last.disc_seq)
        .collect();
    session.len() >= 2 && session.iter().all(|s| s.parts.len() == 1)
}

/// Whether the newest of `segments` may still grow: while a producer is connected, the next
/// fragment joins it unless it starts a segment, so it is published as LL-HLS parts only and
/// listed (and served) as a segment once complete; a media sequence number never changes its
/// URI or duration. With one fragment per GOP ([`one_fragment_per_segment`]) nothing is open.
pub fn newest_is_open(segments: &[Segment], connected: bool) -> bool {
    connected && !segments.is_empty() && !one_fragment_per_segment(segments)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fragment row for tests: number, start (ms), duration (ms), keyframe, segment_start,
    /// segment_seq, disc_seq, init, session.
    #[allow(clippy::too_many_arguments)]
    pub fn row(
        n: i64,
        start_ms: i64,
        dur_ms: i64,
        key: bool,
        seg_start: bool,
        seq: i64,
        disc: i64,
        init: i64,
        session: i64,
    ) -> FragmentRow {
        FragmentRow {
            stream_id: 1,
            number: n,
            session_id: session,
            init_id: init,
            producer_start_us: start_ms * 1000,
            duration_us: dur_ms * 1000,
            server_time_us: start_ms * 1000,
            media_time: 0,
            timescale: 90000,
            keyframe: key,
            sample_count: 1,
            file_id: 1,
            file_offset: 0,
            size_bytes: 1000,
            segment_start: seg_start,
            discontinuity: false,
            segment_seq: seq,
            disc_seq: disc,
            has_video: true,
        }
    }

    #[test]
    fn groups_chunks_into_segments() {
        let rows = vec![
            row(1, 0, 500, true, true, 0, 0, 1, 1),
            row(2, 500, 500, false, false, 0, 0, 1, 1),
            row(3, 1000, 500, true, true, 1, 0, 1, 1),
            row(4, 1500, 400, false, false, 1, 0, 1, 1),
        ];
        let segs = group_segments(&rows);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].duration_us, 1_000_000);
        assert_eq!(segs[1].first_fragment, 3);
        assert_eq!(segs[1].last_fragment(), 4);
        assert_eq!(segs[1].duration_us, 900_000);
        assert_eq!(segs[1].parts.len(), 2);
        assert!(segs[1].parts[0].independent && !segs[1].parts[1].independent);
    }

    /// One moof per track: audio [0.98, 1.96) follows video [0, 1) in the first segment; the
    /// segment still lasts 1 s, and the audio fragment is one of its parts.
    #[test]
    fn audio_fragments_join_the_segment_without_lengthening_it() {
        let audio = |n, start, dur, seq| FragmentRow {
            has_video: false,
            ..row(n, start, dur, false, false, seq, 0, 1, 1)
        };
        let rows = vec![
            audio(1, 0, 980, 0),
            FragmentRow {
                segment_start: false,
                ..row(2, 0, 1000, true, false, 0, 0, 1, 1)
            },
            audio(3, 980, 980, 0),
            row(4, 1000, 1000, true, true, 1, 0, 1, 1),
            audio(5, 1960, 980, 1),
        ];
        let rows = {
            let mut r = rows;
            r[0].segment_start = true; // the session's first fragment
            r
        };
        let segs = group_segments(&rows);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].parts.len(), 3);
        assert_eq!(segs[0].duration_us, 1_000_000);
        assert_eq!(segs[1].duration_us, 1_000_000);
        assert_eq!(segs[1].parts.len(), 2);
        assert!(segs[0].per_track && segs[1].per_track);
    }

    #[test]
    fn drops_leading_partial_segment() {
        let rows = vec![
            row(2, 500, 500, false, false, 0, 0, 1, 1),
            row(3, 1000, 500, true, true, 1, 0, 1, 1),
        ];
        let segs = group_segments(&rows);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].seq, 1);
    }
}
