//! The one reader of fragments: where everything is inside one `moof`+`mdat`. The boxes of the
//! moof, each traf's decoded headers, and for each `trun` its sample totals, the byte range of its
//! sample data and its samples with every field resolved.
//!
//! Every reader of fragment boxes goes through here, so that base data offsets, default sample
//! fields and bounds are resolved one way: [`super::fragment_facts`] (times and keyframes),
//! [`super::rewrite_fragment`] (which must keep every run pointing at the same bytes), the clip
//! builders (which read only a stored fragment's head, [`FragmentLayout::parse_head`]) and the
//! frame service's GOP reader (every video sample and its bytes).

use mp4_atom::{Decode, Mfhd, Tfdt, Tfhd, Trun};

use super::boxes::{children, read_header, type_name, BoxRef};
use super::sample::{FlagSource, RunSample, SampleDefaults};
use super::{Fmp4Error, InitFacts, TrackInfo};

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
    trun: Trun,
    defaults: SampleDefaults,
}

impl RunLayout {
    /// The run's samples in order, each field resolved (trun, then tfhd, then trex).
    pub fn samples(&self) -> impl Iterator<Item = RunSample> + '_ {
        self.trun.samples.iter().map(|e| self.defaults.resolve(e))
    }
}

#[derive(Debug)]
pub(crate) struct TrafLayout<'a> {
    /// Index of the traf within the moof's children.
    pub child_index: usize,
    pub children: Vec<BoxRef<'a>>,
    pub tfhd: Tfhd,
    /// Ticks per second of the traf's track (from the init).
    pub timescale: u32,
    pub tfdt: Option<u64>,
    /// Index of the (last) tfdt box within `children`.
    pub tfdt_child: Option<usize>,
    pub runs: Vec<RunLayout>,
}

#[derive(Debug)]
pub(crate) struct FragmentLayout<'a> {
    pub moof: BoxRef<'a>,
    pub moof_children: Vec<BoxRef<'a>>,
    /// Offset of the mdat box (= moof size).
    pub mdat_start: usize,
    /// Offset of the mdat payload: the first byte sample data may occupy.
    pub payload_start: usize,
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
                let types: Vec<String> = top.iter().map(|b| type_name(&b.box_type)).collect();
                return Err(Fmp4Error::Malformed(format!(
                    "a fragment must be exactly one moof box followed by one mdat box, found [{}]",
                    types.join(", ")
                )));
            }
        };
        Self::from_moof(
            init,
            moof,
            mdat.offset + mdat.header_len,
            fragment.len() as u64,
            moof_stream_offset,
        )
    }

    /// Parses the head of a stored fragment of `fragment_len` bytes: its moof and the header of
    /// the mdat right after it, which is all a reader of sample tables needs (a clip reads no
    /// more of each fragment before it sends the media). Runs are checked against
    /// `fragment_len`; an absolute `base_data_offset` gives `data_start: None`.
    pub fn parse_head(
        init: &InitFacts,
        head: &'a [u8],
        fragment_len: u64,
    ) -> Result<Self, Fmp4Error> {
        let malformed = |m: String| Fmp4Error::Malformed(m);
        let too_short = || malformed("a stored fragment's head is shorter than its moof".into());
        let h = read_header(head).map_err(|_| too_short())?;
        if &h.box_type != b"moof" {
            return Err(malformed(
                "a stored fragment does not start with a moof box".into(),
            ));
        }
        let moof_len = h
            .size
            .ok_or_else(|| malformed("a stored moof has no size".into()))?;
        let moof_bytes = head
            .get(..usize::try_from(moof_len).map_err(|_| too_short())?)
            .ok_or_else(too_short)?;
        let m = read_header(&head[moof_bytes.len()..]).map_err(|_| {
            malformed("a stored fragment's head does not reach its mdat header".into())
        })?;
        if &m.box_type != b"mdat" {
            return Err(malformed(format!(
                "a stored moof is followed by '{}' instead of mdat",
                type_name(&m.box_type)
            )));
        }
        let payload_start = moof_len + m.header_len as u64;
        if m.size.is_some_and(|s| moof_len + s != fragment_len) || payload_start > fragment_len {
            return Err(malformed(format!(
                "a stored fragment of {fragment_len} bytes is not exactly one moof ({moof_len} \
                 bytes) and one mdat"
            )));
        }
        let moof = BoxRef {
            box_type: h.box_type,
            offset: 0,
            header_len: h.header_len,
            bytes: moof_bytes,
        };
        Self::from_moof(init, moof, payload_start as usize, fragment_len, None)
    }

    /// The moof's boxes, with every run checked to lie in the mdat payload
    /// (`payload_start..fragment_len`). The moof starts the fragment.
    fn from_moof(
        init: &InitFacts,
        moof: BoxRef<'a>,
        payload_start: usize,
        fragment_len: u64,
        moof_stream_offset: Option<u64>,
    ) -> Result<Self, Fmp4Error> {
        let mdat_start = moof.bytes.len();
        let end = fragment_len;
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
                        if run.data_len > 0 && (start < payload_start as u64 || run_end > end) {
                            return Err(Fmp4Error::Malformed(format!(
                                "a trun of track {} (traf at byte offset {at}) points at sample data \
                                 bytes {start}..{run_end} of the fragment, outside the mdat payload \
                                 (bytes {payload_start}..{end})",
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
            payload_start,
            sequence_number,
            trafs,
        })
    }

    /// Where `traf`'s tfdt box starts within the moof's bytes, and its version.
    pub fn tfdt_in_moof(&self, traf: &TrafLayout) -> Option<(usize, u8)> {
        let tfdt = traf.children.get(traf.tfdt_child?)?;
        let traf_box = self.moof_children.get(traf.child_index)?;
        let at = self.moof.header_len + traf_box.offset + traf_box.header_len + tfdt.offset;
        Some((at, tfdt.body().first().copied().unwrap_or(0)))
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
    let mut tfdt_child = None;
    let base = traf_base(&tfhd, moof_stream_offset, prev_traf_end, at)?;
    let mut next_start = base;
    let mut runs = Vec::new();
    for (i, c) in kids.iter().enumerate() {
        match &c.box_type {
            b"tfdt" => {
                let t = Tfdt::decode(&mut &c.bytes[..])
                    .map_err(|e| Fmp4Error::decode("tfdt box", child_at(c), e))?;
                tfdt = Some(t.base_media_decode_time);
                tfdt_child = Some(i);
            }
            b"trun" => {
                let trun = Trun::decode(&mut &c.bytes[..])
                    .map_err(|e| Fmp4Error::decode("trun box", child_at(c), e))?;
                let data_offset = trun.data_offset;
                let mut run = run_totals(trun, &tfhd, track, i, child_at(c))?;
                // A run without data_offset continues right after the previous run's data.
                run.data_start = match (data_offset, base) {
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
        timescale: track.timescale,
        tfdt,
        tfdt_child,
        runs,
    })
}

/// Sample count, total duration, total size and first-sample facts of one trun, resolving every
/// absent field: trun, then tfhd default, then trex default.
fn run_totals(
    trun: Trun,
    tfhd: &Tfhd,
    track: &TrackInfo,
    child_index: usize,
    at: u64,
) -> Result<RunLayout, Fmp4Error> {
    let defaults = match tfhd.default_sample_flags {
        Some(flags) => (flags, FlagSource::Tfhd),
        None => (track.default_sample_flags, FlagSource::Trex),
    };
    let defaults = SampleDefaults {
        duration: tfhd
            .default_sample_duration
            .unwrap_or(track.default_sample_duration),
        size: tfhd
            .default_sample_size
            .unwrap_or(track.default_sample_size),
        flags: defaults.0,
        flags_source: defaults.1,
    };
    let sample_count = u32::try_from(trun.samples.len()).map_err(|_| {
        Fmp4Error::Malformed(format!("trun at byte offset {at} has too many samples"))
    })?;
    let mut duration = 0u64;
    let mut data_len = 0u64;
    match &trun.samples {
        mp4_atom::TrunSamples::Inherited { count, .. } => {
            duration = u64::from(*count) * u64::from(defaults.duration);
            data_len = u64::from(*count) * u64::from(defaults.size);
        }
        mp4_atom::TrunSamples::Explicit(entries) => {
            for e in entries {
                let s = defaults.resolve(*e);
                duration = duration.saturating_add(u64::from(s.duration));
                data_len = data_len.saturating_add(u64::from(s.size));
            }
        }
    }
    let first_sample = trun.samples.get(0).map(|e| {
        let s = defaults.resolve(e);
        (s.size, s.flags, s.flags_source)
    });
    Ok(RunLayout {
        child_index,
        data_start: None,
        data_len,
        sample_count,
        duration,
        first_sample,
        trun,
        defaults,
    })
}
