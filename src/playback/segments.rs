//! HLS segments and parts from fragment rows. A segment is a run of fragments from a segment
//! start (a video keyframe, or the first fragment after a discontinuity) to the next; each
//! fragment of it is an LL-HLS part. The structure was decided at ingest (`segment_seq`,
//! `disc_seq` in the index), so this is grouping only.

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
pub fn group_segments(rows: &[FragmentRow]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for r in rows {
        let part = Part {
            fragment: r.number,
            duration_us: r.duration_us,
            independent: r.keyframe,
            size_bytes: r.size_bytes,
        };
        match out.last_mut() {
            Some(seg)
                if !r.segment_start
                    && r.segment_seq == seg.seq
                    && r.number == seg.last_fragment() + 1 =>
            {
                seg.duration_us = r.producer_start_us + r.duration_us - seg.start_us;
                seg.size_bytes += r.size_bytes;
                seg.parts.push(part);
            }
            _ if !r.segment_start => {}
            _ => out.push(Segment {
                seq: r.segment_seq,
                disc_seq: r.disc_seq,
                first_fragment: r.number,
                init_id: r.init_id,
                session_id: r.session_id,
                start_us: r.producer_start_us,
                duration_us: r.duration_us,
                size_bytes: r.size_bytes,
                parts: vec![part],
            }),
        }
    }
    out
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
