//! Where everything is inside one `moof`+`mdat`: the boxes of the moof, each traf's decoded
//! headers, and for each `trun` its sample totals and the byte range of its sample data.
//!
//! Shared by [`super::fragment_facts`] (which reads times and keyframes) and
//! [`super::rewrite_fragment`] (which must keep every run pointing at the same bytes).

use mp4_atom::{Decode, Mfhd, Tfdt, Tfhd, Trun};

use super::boxes::{children, BoxRef};
use super::{Fmp4Error, InitFacts, TrackInfo};

/// Sample flags bit: `sample_is_non_sync_sample` (ISO/IEC 14496-12 8.8.3.1).
pub(crate) const NON_SYNC_SAMPLE: u32 = 0x0001_0000;

/// Where the flags of a sample came from; only `trex` defaults are weak enough to double-check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagSource {
    Trun,
    Tfhd,
    Trex,
}

#[derive(Debug)]
pub(crate) struct RunLayout {
    /// Index of the trun within its traf's children.
    pub child_index: usize,
    /// First byte of the run's sample data, relative to the fragment start. `None` when an absolute
    /// `base_data_offset` is used and the moof's stream offset is unknown.
    pub data_start: Option<u64>,
    pub data_len: u64,
    pub sample_count: u32,
    /// Sum of sample durations, in the track's timescale.
    pub duration: u64,
    /// Size, flags and flag source of the run's first sample, if it has one.
    pub first_sample: Option<(u32, u32, FlagSource)>,
}

#[derive(Debug)]
pub(crate) struct TrafLayout<'a> {
    /// Index of the traf within the moof's children.
    pub child_index: usize,
    pub children: Vec<BoxRef<'a>>,
    pub tfhd: Tfhd,
    pub tfdt: Option<u64>,
    pub runs: Vec<RunLayout>,
}

#[derive(Debug)]
pub(crate) struct FragmentLayout<'a> {
    pub moof: BoxRef<'a>,
    pub moof_children: Vec<BoxRef<'a>>,
    /// Offset of the mdat box (= moof size).
    pub mdat_start: usize,
    pub sequence_number: u32,
    pub trafs: Vec<TrafLayout<'a>>,
}

impl<'a> FragmentLayout<'a> {
    /// Parses `fragment` (exactly one moof followed by one mdat). `moof_stream_offset` converts an
    /// absolute `base_data_offset`; without it such runs get `data_start: None`.
    pub fn parse(
        init: &InitFacts,
        fragment: &'a [u8],
        moof_stream_offset: Option<u64>,
    ) -> Result<Self, Fmp4Error> {
        let top = children(fragment, 0, "fragment")?;
        let (moof, mdat) = match top.as_slice() {
            [m, d] if &m.box_type == b"moof" && &d.box_type == b"mdat" => (*m, *d),
            _ => {
                let types: Vec<String> = top
                    .iter()
                    .map(|b| super::boxes::type_name(&b.box_type))
                    .collect();
                return Err(Fmp4Error::Malformed(format!(
                    "a fragment must be exactly one moof box followed by one mdat box, found [{}]",
                    types.join(", ")
                )));
            }
        };
        let mdat_start = mdat.offset;
        let mdat_body_start = mdat.offset + mdat.header_len;
        let end = fragment.len() as u64;
        let moof_children = children(moof.body(), moof.header_len as u64, "moof")?;

        let mut sequence_number = None;
        let mut trafs = Vec::new();
        // End of the previous traf's data: the implicit base of the next traf.
        let mut prev_traf_end: Option<u64> = Some(0);
        for (child_index, child) in moof_children.iter().enumerate() {
            let at = (moof.header_len + child.offset) as u64;
            match &child.box_type {
                b"mfhd" => {
                    let mfhd = Mfhd::decode(&mut &child.bytes[..])
                        .map_err(|e| Fmp4Error::decode("mfhd box", at, e))?;
                    sequence_number = Some(mfhd.sequence_number);
                }
                b"traf" => {
                    let traf = parse_traf(
                        init,
                        child,
                        child_index,
                        at,
                        moof_stream_offset,
                        prev_traf_end,
                    )?;
                    prev_traf_end = match traf.runs.last() {
                        Some(r) => r.data_start.map(|s| s.saturating_add(r.data_len)),
                        None => traf_base(&traf.tfhd, moof_stream_offset, prev_traf_end, at)?,
                    };
                    for run in &traf.runs {
                        let Some(start) = run.data_start else {
                            continue;
                        };
                        let run_end = start.saturating_add(run.data_len);
                        if run.data_len > 0 && (start < mdat_body_start as u64 || run_end > end) {
                            return Err(Fmp4Error::Malformed(format!(
                                "a trun of track {} (traf at byte offset {at}) points at sample data \
                                 bytes {start}..{run_end} of the fragment, outside the mdat payload \
                                 (bytes {mdat_body_start}..{end})",
                                traf.tfhd.track_id
                            )));
                        }
                    }
                    trafs.push(traf);
                }
                _ => {}
            }
        }
        let sequence_number = sequence_number
            .ok_or_else(|| Fmp4Error::Malformed("moof has no mfhd box".to_string()))?;
        if trafs.is_empty() {
            return Err(Fmp4Error::Malformed(
                "moof has no traf box: the fragment carries no samples".to_string(),
            ));
        }
        Ok(FragmentLayout {
            moof,
            moof_children,
            mdat_start,
            sequence_number,
            trafs,
        })
    }
}

/// The base data offset of a traf relative to the fragment start (ISO/IEC 14496-12 8.8.7.1):
/// explicit, or the moof start with default-base-is-moof, or else implicitly the moof start for the
/// first traf and the end of the previous traf's data for the others.
fn traf_base(
    tfhd: &Tfhd,
    moof_stream_offset: Option<u64>,
    prev_traf_end: Option<u64>,
    at: u64,
) -> Result<Option<u64>, Fmp4Error> {
    if let Some(abs) = tfhd.base_data_offset {
        let Some(moof_off) = moof_stream_offset else {
            return Ok(None);
        };
        return abs.checked_sub(moof_off).map(Some).ok_or_else(|| {
            Fmp4Error::Malformed(format!(
                "tfhd (traf at byte offset {at}) has base_data_offset {abs}, before the moof itself \
                 (stream offset {moof_off})"
            ))
        });
    }
    if tfhd.default_base_is_moof {
        return Ok(Some(0));
    }
    Ok(prev_traf_end)
}

fn parse_traf<'a>(
    init: &InitFacts,
    traf: &BoxRef<'a>,
    child_index: usize,
    at: u64,
    moof_stream_offset: Option<u64>,
    prev_traf_end: Option<u64>,
) -> Result<TrafLayout<'a>, Fmp4Error> {
    let kids = children(traf.body(), at + traf.header_len as u64, "traf")?;
    let child_at = |c: &BoxRef| at + (traf.header_len + c.offset) as u64;
    let tfhd_box = kids
        .iter()
        .find(|c| &c.box_type == b"tfhd")
        .ok_or_else(|| Fmp4Error::Malformed(format!("traf at byte offset {at} has no tfhd box")))?;
    let tfhd = Tfhd::decode(&mut &tfhd_box.bytes[..])
        .map_err(|e| Fmp4Error::decode("tfhd box", child_at(tfhd_box), e))?;
    let track = init.track(tfhd.track_id).ok_or_else(|| {
        Fmp4Error::Malformed(format!(
            "traf at byte offset {at} is for track {}, which the init segment does not declare \
             (tracks: {:?})",
            tfhd.track_id,
            init.tracks.iter().map(|t| t.track_id).collect::<Vec<_>>()
        ))
    })?;
    let mut tfdt = None;
    let base = traf_base(&tfhd, moof_stream_offset, prev_traf_end, at)?;
    let mut next_start = base;
    let mut runs = Vec::new();
    for (i, c) in kids.iter().enumerate() {
        match &c.box_type {
            b"tfdt" => {
                let t = Tfdt::decode(&mut &c.bytes[..])
                    .map_err(|e| Fmp4Error::decode("tfdt box", child_at(c), e))?;
                tfdt = Some(t.base_media_decode_time);
            }
            b"trun" => {
                let trun = Trun::decode(&mut &c.bytes[..])
                    .map_err(|e| Fmp4Error::decode("trun box", child_at(c), e))?;
                let mut run = run_totals(&trun, &tfhd, track, i, child_at(c))?;
                // A run without data_offset continues right after the previous run's data.
                run.data_start = match (trun.data_offset, base) {
                    (Some(off), Some(b)) => {
                        let s = i128::from(b) + i128::from(off);
                        Some(u64::try_from(s).map_err(|_| {
                            Fmp4Error::Malformed(format!(
                                "trun at byte offset {} has data_offset {off}, pointing before the \
                                 start of the fragment",
                                child_at(c)
                            ))
                        })?)
                    }
                    (Some(_), None) => None,
                    (None, _) => next_start,
                };
                next_start = run.data_start.map(|s| s.saturating_add(run.data_len));
                runs.push(run);
            }
            _ => {}
        }
    }
    Ok(TrafLayout {
        child_index,
        children: kids,
        tfhd,
        tfdt,
        runs,
    })
}

/// Sample count, total duration, total size and first-sample facts of one trun, resolving every
/// absent field: trun, then tfhd default, then trex default.
fn run_totals(
    trun: &Trun,
    tfhd: &Tfhd,
    track: &TrackInfo,
    child_index: usize,
    at: u64,
) -> Result<RunLayout, Fmp4Error> {
    let default_duration = tfhd
        .default_sample_duration
        .unwrap_or(track.default_sample_duration);
    let default_size = tfhd
        .default_sample_size
        .unwrap_or(track.default_sample_size);
    let (default_flags, default_source) = match tfhd.default_sample_flags {
        Some(f) => (f, FlagSource::Tfhd),
        None => (track.default_sample_flags, FlagSource::Trex),
    };
    let sample_count = u32::try_from(trun.samples.len()).map_err(|_| {
        Fmp4Error::Malformed(format!("trun at byte offset {at} has too many samples"))
    })?;
    let mut duration = 0u64;
    let mut data_len = 0u64;
    match &trun.samples {
        mp4_atom::TrunSamples::Inherited { count, .. } => {
            duration = u64::from(*count) * u64::from(default_duration);
            data_len = u64::from(*count) * u64::from(default_size);
        }
        mp4_atom::TrunSamples::Explicit(entries) => {
            for e in entries {
                duration =
                    duration.saturating_add(u64::from(e.duration.unwrap_or(default_duration)));
                data_len = data_len.saturating_add(u64::from(e.size.unwrap_or(default_size)));
            }
        }
    }
    let first_sample = trun.samples.get(0).map(|e| {
        let (flags, source) = match e.flags {
            Some(f) => (f, FlagSource::Trun),
            None => (default_flags, default_source),
        };
        (e.size.unwrap_or(default_size), flags, source)
    });
    Ok(RunLayout {
        child_index,
        data_start: None,
        data_len,
        sample_count,
        duration,
        first_sample,
    })
}
