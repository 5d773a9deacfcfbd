//! A stored fragment's head (its moof and mdat header) as the clip builders read it: the fmp4
//! fragment reader ([`FragmentLayout::parse_head`]) plus what a clip needs on top, sample data
//! that can be placed without the producer's stream (no absolute `base_data_offset`) and inside
//! the fragment's mdat payload.

use super::{malformed, ClipFragment};
use crate::fmp4::layout::{FragmentLayout, RunLayout, TrafLayout};
use crate::fmp4::{ticks_to_us, Fmp4Error, InitFacts};

/// The moof of `f` and the mdat header after it, every run placed inside the mdat payload.
pub(super) fn parse_head<'a>(
    init: &InitFacts,
    f: &ClipFragment<'a>,
) -> Result<FragmentLayout<'a>, Fmp4Error> {
    let head = FragmentLayout::parse_head(init, f.head, f.size)?;
    let payload_start = head.payload_start as u64;
    for traf in &head.trafs {
        if traf.tfhd.base_data_offset.is_some() {
            return Err(absolute_base_data_offset());
        }
        for run in &traf.runs {
            let start = data_start(run)?;
            // Unlike the reader, which checks only runs with data, a clip places even an empty
            // run's chunk: its offset must lie in the payload too.
            let end = start.saturating_add(run.data_len);
            if start < payload_start || end > f.size {
                return Err(malformed(format!(
                    "a trun of track {} points at bytes {start}..{end} outside the mdat payload \
                     ({payload_start}..{})",
                    traf.tfhd.track_id, f.size
                )));
            }
        }
    }
    Ok(head)
}

fn absolute_base_data_offset() -> Fmp4Error {
    Fmp4Error::Unsupported("a stored fragment uses an absolute base_data_offset".into())
}

/// First byte of a run's data, from the fragment start; known for every run [`parse_head`]
/// accepts.
pub(super) fn data_start(run: &RunLayout) -> Result<u64, Fmp4Error> {
    run.data_start.ok_or_else(absolute_base_data_offset)
}

/// The traf's tfdt (stream timeline, ticks) and where it is in the moof with its version.
pub(super) fn tfdt(head: &FragmentLayout, traf: &TrafLayout) -> Option<(usize, u8, u64)> {
    let (at, version) = head.tfdt_in_moof(traf)?;
    Some((at, version, traf.tfdt?))
}

/// Where each traf with a tfdt starts on the stream timeline, µs.
pub(super) fn track_starts_us<'h>(head: &'h FragmentLayout<'_>) -> impl Iterator<Item = i64> + 'h {
    head.trafs.iter().filter_map(|t| {
        let v = t.tfdt?;
        Some(ticks_to_us(i64::try_from(v).ok()?, t.timescale))
    })
}

/// Sum of the traf's sample durations, ticks.
pub(super) fn traf_duration(traf: &TrafLayout) -> u64 {
    traf.runs
        .iter()
        .flat_map(|r| r.samples())
        .map(|s| u64::from(s.duration))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::super::fragment_head_len;
    use super::super::testutil::{gop2s_init, synth};
    use super::*;
    use crate::fmp4::boxes::read_header;

    #[test]
    fn refuses_broken_heads() {
        let init = gop2s_init();
        let facts = InitFacts::parse(&init).unwrap();
        let frag = synth(0, 0, [&[10], &[5]]);
        let moof_len = read_header(&frag).unwrap().size.unwrap();
        assert_eq!(
            fragment_head_len(&frag, frag.len() as u64).unwrap(),
            (moof_len + 16).min(frag.len() as u64)
        );
        assert!(fragment_head_len(b"\0\0\0\x10mdat", 100).is_err());
        let cut = |head: &[u8], size: u64| {
            let f = ClipFragment {
                init: 0,
                head,
                size,
                start_us: 0,
                end_us: 0,
                discontinuity: false,
            };
            parse_head(&facts, &f).map(|_| ())
        };
        assert!(cut(&frag, frag.len() as u64).is_ok());
        assert!(cut(&frag[..moof_len as usize - 1], frag.len() as u64).is_err());
        assert!(cut(&frag[..moof_len as usize + 4], frag.len() as u64).is_err());
        // Sizes that disagree with the index row.
        assert!(cut(&frag, frag.len() as u64 + 1).is_err());
        // A run pointing past the mdat.
        let mut bad = frag.clone();
        let n = bad.len();
        bad.truncate(n - 1);
        let mdat_at = moof_len as usize;
        let mdat_len = (n - 1 - mdat_at) as u32;
        bad[mdat_at..mdat_at + 4].copy_from_slice(&mdat_len.to_be_bytes());
        assert!(cut(&bad, bad.len() as u64).is_err());
    }
}
