//! Clips: one downloadable file made from a run of stored fragments, without holding the media.
//!
//! Two shapes, both described as a [`ClipPlan`]: a list of [`Piece`]s that are either bytes built
//! here (headers) or byte ranges of the stored fragments (media, copied verbatim by the caller).
//! Because the plan knows every piece's length before a byte is sent, the caller can answer with
//! `Content-Length` and serve any `Range` of the clip by walking the plan.
//!
//! - [`ProgressiveBuilder`]: an ordinary MP4 (`ftyp`, `moov` with full sample tables, one `mdat`).
//!   It only reads each fragment's `moof` (and mdat header): the sample tables come from the
//!   `trun`s, and each fragment's mdat payload is copied whole into the clip's mdat, so every
//!   `trun` becomes one chunk whose offset is known without reading the media.
//! - [`FragmentedBuilder`]: the init followed by the fragments with their `tfdt`s rebased; the
//!   mdat payloads are again copied verbatim.
//!
//! ## One timeline
//! Stored fragments sit on the stream timeline (media time = producer time since the epoch). A clip
//! starts near 0 and collapses the gaps between ingest sessions: at a fragment marked as a
//! discontinuity, the gap between the previous fragment's end and this one's start (producer time,
//! µs) is added to the clip's shift. Every track of a fragment moves by the same wall-clock shift,
//! so A/V sync inside each session is kept; inside a session nothing moves.
//!
//! ## A/V alignment in the progressive file
//! A progressive track's decode times are the running sum of its sample durations, so two things
//! must be stated explicitly:
//! - Where each track starts. The clip's zero is the earliest track start of the first fragment;
//!   a track that starts later gets an edit list with an empty edit of that offset (then one edit
//!   covering its media). We chose `elst` over shifting composition offsets because it is the
//!   standard way players (ffmpeg, browsers, QuickTime) learn a track's start, and it leaves the
//!   sample tables exactly as the producer wrote them. Tracks that start at zero get no `edts`, as
//!   most muxers write them.
//! - How tracks continue across a discontinuity. Sessions rarely end with audio and video exactly
//!   equal in length; appending sample durations blindly would let the tracks drift apart by that
//!   difference at every restart. So at each fragment the track's wanted decode time (its `tfdt`
//!   minus the shift) is compared with the running sum, and the track's previous sample is
//!   lengthened or shortened (never below 1 tick) by the difference, as muxers do.

use bytes::Bytes;
use mp4_atom::{Decode, Elst, ElstEntry, Encode, Mdhd, Mvhd, Tfdt, Tfhd, Tkhd, Trun};

use super::boxes::{children, put_box, read_header, type_name};
use super::layout::NON_SYNC_SAMPLE;
use super::{Fmp4Error, InitFacts, TrackInfo};

/// Timescale of the movie header and edit lists: milliseconds, as most muxers write.
pub const MOVIE_TIMESCALE: u32 = 1000;

/// Bytes needed after a fragment's moof to be sure its mdat header (8, or 16 with a largesize) is in.
const MDAT_HEADER_MAX: u64 = 16;

/// Whether two inits can feed one clip: the same tracks (ids, kinds, timescales) in the same
/// order. Codec configuration (e.g. SPS/PPS, resolution) may differ: a progressive clip then
/// carries one sample description per distinct sample entry.
pub fn same_track_layout(a: &InitFacts, b: &InitFacts) -> bool {
    a.tracks.len() == b.tracks.len()
        && a.tracks.iter().zip(&b.tracks).all(|(x, y)| {
            x.track_id == y.track_id && x.kind == y.kind && x.timescale == y.timescale
        })
}

/// How many bytes from the start of a stored fragment of `fragment_size` bytes the builders need
/// (the moof and the mdat header), given at least its first 8 bytes.
pub fn fragment_head_len(prefix: &[u8], fragment_size: u64) -> Result<u64, Fmp4Error> {
    let h = read_header(prefix)
        .map_err(|_| Fmp4Error::Malformed("a stored fragment does not start with a box".into()))?;
    if &h.box_type != b"moof" {
        return Err(Fmp4Error::Malformed(format!(
            "a stored fragment starts with '{}' instead of moof",
            type_name(&h.box_type)
        )));
    }
    let moof = h.size.unwrap_or(fragment_size);
    Ok(moof.saturating_add(MDAT_HEADER_MAX).min(fragment_size))
}

/// One stored fragment as the builders see it.
#[derive(Debug, Clone, Copy)]
pub struct ClipFragment<'a> {
    /// Index of the fragment's init in the list given to the builder.
    pub init: usize,
    /// The first bytes of the fragment: at least its moof and its mdat header
    /// (see [`fragment_head_len`]).
    pub head: &'a [u8],
    /// Size of the whole stored fragment (moof + mdat).
    pub size: u64,
    /// Producer time of the fragment's start and end on the stream timeline (index row), µs.
    pub start_us: i64,
    pub end_us: i64,
    /// The fragment starts a discontinuity (new session, new init, time jump): a gap before it is
    /// collapsed.
    pub discontinuity: bool,
}

/// Where a run of output bytes comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes built by the builder (headers, rebased moofs).
    Bytes(Bytes),
    /// `len` bytes at `offset` of the `index`-th fragment pushed into the builder.
    Fragment { index: usize, offset: u64, len: u64 },
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::Fragment { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A clip as a sequence of pieces, with the offset where each one starts.
#[derive(Debug, Clone)]
pub struct ClipPlan {
    pub pieces: Vec<Piece>,
    /// `starts[i]` is the clip offset of `pieces[i]`.
    pub starts: Vec<u64>,
    /// Total size of the clip in bytes.
    pub len: u64,
    /// Presentation length: from the clip's zero to the end of its longest track, µs.
    pub duration_us: i64,
}

impl ClipPlan {
    fn new(pieces: Vec<Piece>, duration_us: i64) -> ClipPlan {
        let mut starts = Vec::with_capacity(pieces.len());
        let mut len = 0u64;
        for p in &pieces {
            starts.push(len);
            len += p.len();
        }
        ClipPlan {
            pieces,
            starts,
            len,
            duration_us,
        }
    }

    /// The piece holding clip byte `pos` and the offset of `pos` within it.
    pub fn piece_at(&self, pos: u64) -> Option<(usize, u64)> {
        if pos >= self.len {
            return None;
        }
        let i = self.starts.partition_point(|&s| s <= pos).checked_sub(1)?;
        // Empty pieces share their start with the next one; partition_point picked the last.
        Some((i, pos - self.starts[i]))
    }
}

// ---------------------------------------------------------------------------------------------
// Timeline

fn round_div(n: i128, d: i128) -> i128 {
    if n >= 0 {
        (n + d / 2) / d
    } else {
        (n - d / 2) / d
    }
}

/// Microseconds to ticks of `timescale`, rounded to the nearest.
fn us_to_ticks(us: i64, timescale: u32) -> i64 {
    let t = round_div(i128::from(us) * i128::from(timescale), 1_000_000);
    i64::try_from(t).unwrap_or(if t < 0 { i64::MIN } else { i64::MAX })
}

fn ticks_to_us(ticks: i64, timescale: u32) -> i64 {
    let t = round_div(i128::from(ticks) * 1_000_000, i128::from(timescale.max(1)));
    i64::try_from(t).unwrap_or(if t < 0 { i64::MIN } else { i64::MAX })
}

/// The clip's shift (µs to subtract from stream time), gap collapsing included.
#[derive(Debug, Default)]
struct Timeline {
    shift_us: Option<i64>,
    prev_end_us: i64,
}

impl Timeline {
    /// The shift for fragment `f`, whose tracks start at `track_starts_us`.
    fn shift_for(&mut self, f: &ClipFragment, track_starts_us: impl Iterator<Item = i64>) -> i64 {
        let shift = match self.shift_us {
            None => track_starts_us.fold(f.start_us, i64::min),
            Some(s) if f.discontinuity && f.start_us > self.prev_end_us => {
                s + (f.start_us - self.prev_end_us)
            }
            Some(s) => s,
        };
        self.shift_us = Some(shift);
        self.prev_end_us = self.prev_end_us.max(f.end_us);
        shift
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a fragment's head (moof + mdat header)

#[derive(Debug)]
struct Sample {
    duration: u32,
    size: u32,
    sync: bool,
    cts: i64,
}

#[derive(Debug)]
struct Run {
    /// First byte of the run's data, from the fragment start.
    data_start: u64,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Traf {
    track_id: u32,
    timescale: u32,
    /// Index of the tfdt box's first byte within the moof, and its version and value.
    tfdt: Option<(usize, u8, u64)>,
    sample_description_index: u32,
    runs: Vec<Run>,
}

#[derive(Debug)]
struct Head<'a> {
    moof: &'a [u8],
    /// Offset of the mdat payload from the fragment start.
    payload_start: u64,
    trafs: Vec<Traf>,
}

fn malformed(m: impl Into<String>) -> Fmp4Error {
    Fmp4Error::Malformed(m.into())
}

fn parse_head<'a>(init: &InitFacts, f: &ClipFragment<'a>) -> Result<Head<'a>, Fmp4Error> {
    let too_short = || malformed("a stored fragment's head is shorter than its moof");
    let h = read_header(f.head).map_err(|_| too_short())?;
    if &h.box_type != b"moof" {
        return Err(malformed(
            "a stored fragment does not start with a moof box",
        ));
    }
    let moof_len = h
        .size
        .ok_or_else(|| malformed("a stored moof has no size"))?;
    let moof = f
        .head
        .get(..usize::try_from(moof_len).map_err(|_| too_short())?)
        .ok_or_else(too_short)?;
    let m = read_header(&f.head[moof.len()..])
        .map_err(|_| malformed("a stored fragment's head does not reach its mdat header"))?;
    if &m.box_type != b"mdat" {
        return Err(malformed(format!(
            "a stored moof is followed by '{}' instead of mdat",
            type_name(&m.box_type)
        )));
    }
    let payload_start = moof_len + m.header_len as u64;
    if m.size.is_some_and(|s| moof_len + s != f.size) || payload_start > f.size {
        return Err(malformed(format!(
            "a stored fragment of {} bytes is not exactly one moof ({moof_len} bytes) and one mdat",
            f.size
        )));
    }
    let mut trafs = Vec::new();
    let mut prev_traf_end = 0u64;
    for child in children(&moof[h.header_len..], h.header_len as u64, "moof")? {
        if &child.box_type != b"traf" {
            continue;
        }
        let traf_at = h.header_len + child.offset;
        let traf = parse_traf(
            init,
            child.body(),
            traf_at + child.header_len,
            prev_traf_end,
        )?;
        for run in &traf.runs {
            let len: u64 = run.samples.iter().map(|s| u64::from(s.size)).sum();
            if run.data_start < payload_start || run.data_start + len > f.size {
                return Err(malformed(format!(
                    "a trun of track {} points at bytes {}..{} outside the mdat payload ({payload_start}..{})",
                    traf.track_id,
                    run.data_start,
                    run.data_start + len,
                    f.size
                )));
            }
            prev_traf_end = run.data_start + len;
        }
        trafs.push(traf);
    }
    if trafs.is_empty() {
        return Err(malformed("a stored moof has no traf"));
    }
    Ok(Head {
        moof,
        payload_start,
        trafs,
    })
}

fn parse_traf(
    init: &InitFacts,
    body: &[u8],
    body_at: usize,
    prev_traf_end: u64,
) -> Result<Traf, Fmp4Error> {
    let kids = children(body, body_at as u64, "traf")?;
    let tfhd_box = kids
        .iter()
        .find(|c| &c.box_type == b"tfhd")
        .ok_or_else(|| malformed("a traf has no tfhd"))?;
    let tfhd = Tfhd::decode(&mut &tfhd_box.bytes[..])
        .map_err(|e| Fmp4Error::decode("tfhd box", (body_at + tfhd_box.offset) as u64, e))?;
    let track: &TrackInfo = init.track(tfhd.track_id).ok_or_else(|| {
        malformed(format!(
            "a fragment has track {}, which its init does not declare",
            tfhd.track_id
        ))
    })?;
    let base = if tfhd.base_data_offset.is_some() {
        return Err(Fmp4Error::Unsupported(
            "a stored fragment uses an absolute base_data_offset".into(),
        ));
    } else if tfhd.default_base_is_moof {
        0
    } else {
        prev_traf_end
    };
    let duration0 = tfhd
        .default_sample_duration
        .unwrap_or(track.default_sample_duration);
    let size0 = tfhd
        .default_sample_size
        .unwrap_or(track.default_sample_size);
    let flags0 = tfhd
        .default_sample_flags
        .unwrap_or(track.default_sample_flags);
    let mut traf = Traf {
        track_id: track.track_id,
        timescale: track.timescale,
        tfdt: None,
        sample_description_index: tfhd.sample_description_index.unwrap_or(1).max(1),
        runs: Vec::new(),
    };
    let mut next_start = base;
    for c in &kids {
        let at = (body_at + c.offset) as u64;
        match &c.box_type {
            b"tfdt" => {
                let t = Tfdt::decode(&mut &c.bytes[..])
                    .map_err(|e| Fmp4Error::decode("tfdt box", at, e))?;
                let version = c.body().first().copied().unwrap_or(0);
                traf.tfdt = Some((body_at + c.offset, version, t.base_media_decode_time));
            }
            b"trun" => {
                let trun = Trun::decode(&mut &c.bytes[..])
                    .map_err(|e| Fmp4Error::decode("trun box", at, e))?;
                let data_start = match trun.data_offset {
                    Some(off) => u64::try_from(i128::from(base) + i128::from(off))
                        .map_err(|_| malformed("a trun data_offset points before the moof"))?,
                    None => next_start,
                };
                let mut samples = Vec::with_capacity(trun.samples.len());
                let mut end = data_start;
                for e in trun.samples.iter() {
                    let s = Sample {
                        duration: e.duration.unwrap_or(duration0),
                        size: e.size.unwrap_or(size0),
                        sync: e.flags.unwrap_or(flags0) & NON_SYNC_SAMPLE == 0,
                        cts: e.cts.unwrap_or(0),
                    };
                    end += u64::from(s.size);
                    samples.push(s);
                }
                next_start = end;
                traf.runs.push(Run {
                    data_start,
                    samples,
                });
            }
            _ => {}
        }
    }
    Ok(traf)
}

fn traf_starts_us<'h>(head: &'h Head<'_>) -> impl Iterator<Item = i64> + 'h {
    head.trafs.iter().filter_map(|t| {
        let (_, _, v) = t.tfdt?;
        Some(ticks_to_us(i64::try_from(v).ok()?, t.timescale))
    })
}

// ---------------------------------------------------------------------------------------------
// Progressive MP4

/// The boxes of one trak of an init that a progressive trak copies.
#[derive(Debug, Clone)]
struct TrakTemplate {
    track_id: u32,
    timescale: u32,
    tkhd: Tkhd,
    mdhd: Mdhd,
    /// mdia children other than mdhd and minf (hdlr, elng...), verbatim.
    mdia_rest: Vec<Vec<u8>>,
    /// minf children other than stbl (vmhd/smhd/nmhd, dinf...), verbatim.
    minf_rest: Vec<Vec<u8>>,
    /// The sample entries of stsd, verbatim.
    entries: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct InitTemplate {
    facts: InitFacts,
    mvhd: Mvhd,
    traks: Vec<TrakTemplate>,
}

fn child<'a>(
    kids: &[super::boxes::BoxRef<'a>],
    t: &[u8; 4],
    parent: &str,
) -> Result<super::boxes::BoxRef<'a>, Fmp4Error> {
    kids.iter()
        .find(|c| &c.box_type == t)
        .copied()
        .ok_or_else(|| malformed(format!("{parent} has no {} box", type_name(t))))
}

fn parse_init(bytes: &[u8]) -> Result<InitTemplate, Fmp4Error> {
    let facts = InitFacts::parse(bytes)?;
    let top = children(bytes, 0, "init segment")?;
    let moov = child(&top, b"moov", "init segment")?;
    let moov_kids = children(moov.body(), 0, "moov")?;
    let mvhd_box = child(&moov_kids, b"mvhd", "moov")?;
    let mvhd =
        Mvhd::decode(&mut &mvhd_box.bytes[..]).map_err(|e| Fmp4Error::decode("mvhd box", 0, e))?;
    let mut traks = Vec::new();
    for trak in moov_kids.iter().filter(|c| &c.box_type == b"trak") {
        let kids = children(trak.body(), 0, "trak")?;
        let tkhd = Tkhd::decode(&mut child(&kids, b"tkhd", "trak")?.bytes)
            .map_err(|e| Fmp4Error::decode("tkhd box", 0, e))?;
        let mdia = children(child(&kids, b"mdia", "trak")?.body(), 0, "mdia")?;
        let mdhd = Mdhd::decode(&mut child(&mdia, b"mdhd", "mdia")?.bytes)
            .map_err(|e| Fmp4Error::decode("mdhd box", 0, e))?;
        let minf = children(child(&mdia, b"minf", "mdia")?.body(), 0, "minf")?;
        let stbl = children(child(&minf, b"stbl", "minf")?.body(), 0, "stbl")?;
        let stsd = child(&stbl, b"stsd", "stbl")?;
        // stsd: version/flags, entry_count, then the entries as boxes.
        let entries = children(stsd.body().get(8..).unwrap_or_default(), 0, "stsd")?
            .iter()
            .map(|e| e.bytes.to_vec())
            .collect::<Vec<_>>();
        let rest = |kids: &[super::boxes::BoxRef], skip: &[&[u8; 4]]| {
            kids.iter()
                .filter(|c| !skip.contains(&&c.box_type))
                .map(|c| c.bytes.to_vec())
                .collect::<Vec<_>>()
        };
        traks.push(TrakTemplate {
            track_id: tkhd.track_id,
            timescale: mdhd.timescale,
            tkhd,
            mdhd,
            mdia_rest: rest(&mdia, &[b"mdhd", b"minf"]),
            minf_rest: rest(&minf, &[b"stbl"]),
            entries,
        });
    }
    Ok(InitTemplate { facts, mvhd, traks })
}

/// Run-length table of (count, value), as stts and ctts store them.
#[derive(Debug, Default, Clone)]
struct Rle<T: PartialEq + Copy> {
    entries: Vec<(u32, T)>,
}

impl<T: PartialEq + Copy> Rle<T> {
    fn push(&mut self, v: T) {
        match self.entries.last_mut() {
            Some((n, last)) if *last == v && *n < u32::MAX => *n += 1,
            _ => self.entries.push((1, v)),
        }
    }

    fn last(&self) -> Option<T> {
        self.entries.last().map(|(_, v)| *v)
    }

    fn pop(&mut self) {
        if let Some((n, _)) = self.entries.last_mut() {
            *n -= 1;
            if *n == 0 {
                self.entries.pop();
            }
        }
    }

    fn replace_last(&mut self, v: T) {
        if !self.entries.is_empty() {
            self.pop();
            self.push(v);
        }
    }
}

/// One track's sample tables as fragments are pushed.
#[derive(Debug)]
struct TrackTable {
    template: usize,
    track_id: u32,
    timescale: u32,
    /// Samples may be dropped to absorb an overlap: true for tracks whose samples do not depend
    /// on each other (audio), never for video, where a dropped frame may be a reference.
    droppable: bool,
    /// Distinct sample entries (bytes) and, per (init, index in that init's stsd), which one.
    entries: Vec<Vec<u8>>,
    entry_of: Vec<((usize, u32), u32)>,
    durations: Rle<u32>,
    cts: Rle<i64>,
    sizes: Vec<u32>,
    /// 1-based numbers of sync samples.
    syncs: Vec<u32>,
    /// (offset from the mdat payload start, samples, sample description index).
    chunks: Vec<(u64, u32, u32)>,
    /// Decode time of the first sample, in ticks from the clip's zero.
    first_dts: Option<i64>,
    /// Sum of sample durations so far.
    media_len: u64,
    /// Largest decode time + composition offset + duration seen (where presentation ends).
    presentation_end: i64,
}

impl TrackTable {
    fn samples(&self) -> u32 {
        self.sizes.len() as u32
    }

    /// Makes the next sample's decode time `dts` (ticks from the clip's zero) by adjusting the
    /// previous sample's duration.
    fn align(&mut self, dts: i64) {
        let Some(first) = self.first_dts else {
            self.first_dts = Some(dts.max(0));
            return;
        };
        if self.sizes.is_empty() {
            return;
        }
        let mut delta = (dts - first) - self.media_len as i64;
        // The new run starts before the end of what we have (an appended session whose producer
        // wrote more audio than video): drop whole trailing samples while they lie entirely in
        // the overlap, so the new run plays at its own time.
        while self.droppable && self.sizes.len() > 1 {
            let Some(last) = self.durations.last() else {
                break;
            };
            if delta + i64::from(last) > 0 {
                break;
            }
            self.drop_last();
            delta += i64::from(last);
        }
        let Some(last) = self.durations.last() else {
            return;
        };
        if delta == 0 {
            return;
        }
        let new_last = (i64::from(last) + delta).clamp(1, i64::from(u32::MAX)) as u32;
        self.durations.replace_last(new_last);
        self.media_len = (self.media_len as i64 + i64::from(new_last) - i64::from(last)) as u64;
    }

    /// Forgets the last sample; its bytes stay in the mdat, unreferenced.
    fn drop_last(&mut self) {
        let n = self.samples();
        let Some(duration) = self.durations.last() else {
            return;
        };
        self.durations.pop();
        self.cts.pop();
        self.sizes.pop();
        if self.syncs.last() == Some(&n) {
            self.syncs.pop();
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.1 -= 1;
            if chunk.1 == 0 {
                self.chunks.pop();
            }
        }
        self.media_len -= u64::from(duration);
    }

    fn entry_index(
        &mut self,
        init: usize,
        sdi: u32,
        template: &TrakTemplate,
    ) -> Result<u32, Fmp4Error> {
        if let Some((_, i)) = self.entry_of.iter().find(|(k, _)| *k == (init, sdi)) {
            return Ok(*i);
        }
        let bytes = template.entries.get(sdi as usize - 1).ok_or_else(|| {
            malformed(format!(
                "a fragment of track {} uses sample description {sdi}, which its init does not have",
                self.track_id
            ))
        })?;
        let index = match self.entries.iter().position(|e| e == bytes) {
            Some(p) => p as u32 + 1,
            None => {
                self.entries.push(bytes.clone());
                self.entries.len() as u32
            }
        };
        self.entry_of.push(((init, sdi), index));
        Ok(index)
    }
}

/// Builds a progressive MP4 from fragments pushed in order. See the module documentation.
pub struct ProgressiveBuilder {
    inits: Vec<InitTemplate>,
    tracks: Vec<TrackTable>,
    timeline: Timeline,
    /// Per pushed fragment: where its mdat payload starts in it, and the payload length.
    payloads: Vec<(u64, u64)>,
    payload_len: u64,
}

impl ProgressiveBuilder {
    /// `inits` are the init segments (ftyp+moov) the fragments refer to by index; they must all
    /// have the same track layout ([`same_track_layout`]).
    pub fn new(inits: &[&[u8]]) -> Result<ProgressiveBuilder, Fmp4Error> {
        let inits = inits
            .iter()
            .map(|b| parse_init(b))
            .collect::<Result<Vec<_>, _>>()?;
        let first = inits
            .first()
            .ok_or_else(|| malformed("a clip needs at least one init"))?;
        if let Some(other) = inits
            .iter()
            .find(|i| !same_track_layout(&first.facts, &i.facts))
        {
            return Err(Fmp4Error::Unsupported(format!(
                "the inits of a clip have different tracks ({:?} vs {:?})",
                first
                    .facts
                    .tracks
                    .iter()
                    .map(|t| t.track_id)
                    .collect::<Vec<_>>(),
                other
                    .facts
                    .tracks
                    .iter()
                    .map(|t| t.track_id)
                    .collect::<Vec<_>>()
            )));
        }
        let tracks = first
            .traks
            .iter()
            .enumerate()
            .map(|(template, t)| TrackTable {
                template,
                track_id: t.track_id,
                timescale: t.timescale.max(1),
                droppable: first
                    .facts
                    .track(t.track_id)
                    .is_some_and(|i| i.kind == super::TrackKind::Audio),
                entries: Vec::new(),
                entry_of: Vec::new(),
                durations: Rle::default(),
                cts: Rle::default(),
                sizes: Vec::new(),
                syncs: Vec::new(),
                chunks: Vec::new(),
                first_dts: None,
                media_len: 0,
                presentation_end: 0,
            })
            .collect();
        Ok(ProgressiveBuilder {
            inits,
            tracks,
            timeline: Timeline::default(),
            payloads: Vec::new(),
            payload_len: 0,
        })
    }

    /// Adds the next fragment; its media will be the next piece of the clip's mdat.
    pub fn push(&mut self, f: &ClipFragment) -> Result<(), Fmp4Error> {
        let init = self
            .inits
            .get(f.init)
            .ok_or_else(|| malformed(format!("fragment refers to unknown init {}", f.init)))?;
        let head = parse_head(&init.facts, f)?;
        let shift_us = self.timeline.shift_for(f, traf_starts_us(&head));
        let payload_at = self.payload_len;
        let payload_len = f.size - head.payload_start;
        for traf in &head.trafs {
            let table = self
                .tracks
                .iter_mut()
                .find(|t| t.track_id == traf.track_id)
                .ok_or_else(|| malformed(format!("unknown track {}", traf.track_id)))?;
            let template = init
                .traks
                .iter()
                .find(|t| t.track_id == traf.track_id)
                .ok_or_else(|| malformed(format!("init has no trak {}", traf.track_id)))?;
            let sdi = table.entry_index(f.init, traf.sample_description_index, template)?;
            if let Some((_, _, tfdt)) = traf.tfdt {
                let tfdt = i64::try_from(tfdt).unwrap_or(i64::MAX);
                table.align(tfdt.saturating_sub(us_to_ticks(shift_us, table.timescale)));
            }
            for run in &traf.runs {
                if run.samples.is_empty() {
                    continue;
                }
                table.chunks.push((
                    payload_at + (run.data_start - head.payload_start),
                    run.samples.len() as u32,
                    sdi,
                ));
                for s in &run.samples {
                    if table.first_dts.is_none() {
                        table.first_dts = Some(0);
                    }
                    table.durations.push(s.duration);
                    table.cts.push(s.cts);
                    table.sizes.push(s.size);
                    if s.sync {
                        let n = table.samples();
                        table.syncs.push(n);
                    }
                    let dts = table.media_len as i64;
                    table.presentation_end = table
                        .presentation_end
                        .max(dts + s.cts + i64::from(s.duration));
                    table.media_len += u64::from(s.duration);
                }
            }
        }
        self.payloads.push((head.payload_start, payload_len));
        self.payload_len += payload_len;
        Ok(())
    }

    /// The ftyp+moov+mdat header and the plan of the whole file.
    pub fn finish(self) -> Result<ClipPlan, Fmp4Error> {
        if self.tracks.iter().all(|t| t.sizes.is_empty()) {
            return Err(malformed("the clip's fragments carry no samples"));
        }
        let ftyp = ftyp();
        let mdat_header_len: u64 = if self.payload_len + 8 > u64::from(u32::MAX) {
            16
        } else {
            8
        };
        // Box sizes do not depend on offset values, only on stco vs co64: measure, then build.
        let mut co64 = false;
        let measured = self.build_moov(0, co64)?;
        let mut base = ftyp.len() as u64 + measured.len() as u64 + mdat_header_len;
        if base + self.payload_len > u64::from(u32::MAX) {
            co64 = true;
            base = ftyp.len() as u64 + self.build_moov(0, co64)?.len() as u64 + mdat_header_len;
        }
        let moov = self.build_moov(base, co64)?;
        let mut header = Vec::with_capacity(ftyp.len() + moov.len() + 16);
        header.extend_from_slice(&ftyp);
        header.extend_from_slice(&moov);
        if mdat_header_len == 16 {
            header.extend_from_slice(&1u32.to_be_bytes());
            header.extend_from_slice(b"mdat");
            header.extend_from_slice(&(self.payload_len + 16).to_be_bytes());
        } else {
            header.extend_from_slice(&((self.payload_len + 8) as u32).to_be_bytes());
            header.extend_from_slice(b"mdat");
        }
        debug_assert_eq!(header.len() as u64, base);
        let duration_us = self
            .tracks
            .iter()
            .filter(|t| !t.sizes.is_empty())
            .map(|t| ticks_to_us(t.first_dts.unwrap_or(0) + t.media_len as i64, t.timescale))
            .max()
            .unwrap_or(0);
        let mut pieces = Vec::with_capacity(self.payloads.len() + 1);
        pieces.push(Piece::Bytes(Bytes::from(header)));
        for (index, (offset, len)) in self.payloads.iter().enumerate() {
            pieces.push(Piece::Fragment {
                index,
                offset: *offset,
                len: *len,
            });
        }
        Ok(ClipPlan::new(pieces, duration_us))
    }

    /// Track duration in the movie timescale, and the edit list if the track starts late.
    fn track_timing(&self, t: &TrackTable) -> (u64, Option<Elst>) {
        let ts = u64::from(t.timescale);
        let movie = |ticks: u64, up: bool| {
            let n = u128::from(ticks) * u128::from(MOVIE_TIMESCALE);
            let d = u128::from(ts);
            let q = if up { n.div_ceil(d) } else { (n + d / 2) / d };
            u64::try_from(q).unwrap_or(u64::MAX)
        };
        let media = movie(t.media_len, true);
        let offset = movie(t.first_dts.unwrap_or(0).max(0) as u64, false);
        if offset == 0 {
            return (media, None);
        }
        let shown = movie(t.presentation_end.max(t.media_len as i64) as u64, true);
        let elst = Elst {
            entries: vec![
                ElstEntry {
                    segment_duration: offset,
                    media_time: None,
                    media_rate: 1i16.into(),
                },
                ElstEntry {
                    segment_duration: shown,
                    media_time: Some(0),
                    media_rate: 1i16.into(),
                },
            ],
        };
        (offset + shown, Some(elst))
    }

    fn build_moov(&self, base: u64, co64: bool) -> Result<Vec<u8>, Fmp4Error> {
        let first = &self.inits[0];
        let tracks: Vec<&TrackTable> = self.tracks.iter().filter(|t| !t.sizes.is_empty()).collect();
        let mut body = Vec::new();
        let mut mvhd = first.mvhd.clone();
        mvhd.timescale = MOVIE_TIMESCALE;
        mvhd.duration = tracks
            .iter()
            .map(|t| self.track_timing(t).0)
            .max()
            .unwrap_or(0);
        mvhd.next_track_id = tracks.iter().map(|t| t.track_id).max().unwrap_or(0) + 1;
        encode(&mvhd, &mut body)?;
        for t in tracks {
            self.build_trak(&mut body, t, base, co64)?;
        }
        let mut moov = Vec::with_capacity(body.len() + 8);
        put_box(&mut moov, b"moov", &body)?;
        Ok(moov)
    }

    fn build_trak(
        &self,
        out: &mut Vec<u8>,
        t: &TrackTable,
        base: u64,
        co64: bool,
    ) -> Result<(), Fmp4Error> {
        let template = &self.inits[0].traks[t.template];
        let (duration, elst) = self.track_timing(t);
        let mut trak = Vec::new();
        let mut tkhd = template.tkhd.clone();
        tkhd.duration = duration;
        encode(&tkhd, &mut trak)?;
        if let Some(elst) = elst {
            let mut edts = Vec::new();
            encode(&elst, &mut edts)?;
            put_box(&mut trak, b"edts", &edts)?;
        }
        let mut mdia = Vec::new();
        let mut mdhd = template.mdhd.clone();
        mdhd.duration = t.media_len;
        encode(&mdhd, &mut mdia)?;
        for b in &template.mdia_rest {
            mdia.extend_from_slice(b);
        }
        let mut minf = Vec::new();
        for b in &template.minf_rest {
            minf.extend_from_slice(b);
        }
        let mut stbl = Vec::new();
        stbl_boxes(&mut stbl, t, base, co64)?;
        put_box(&mut minf, b"stbl", &stbl)?;
        put_box(&mut mdia, b"minf", &minf)?;
        put_box(&mut trak, b"mdia", &mdia)?;
        put_box(out, b"trak", &trak)
    }
}

fn encode<T: Encode>(b: &T, out: &mut Vec<u8>) -> Result<(), Fmp4Error> {
    b.encode(out)
        .map_err(|e| Fmp4Error::Unsupported(format!("cannot encode a clip header box: {e}")))
}

fn full_box(out: &mut Vec<u8>, t: &[u8; 4], version: u8, body: &[u8]) -> Result<(), Fmp4Error> {
    let mut b = Vec::with_capacity(body.len() + 4);
    b.extend_from_slice(&[version, 0, 0, 0]);
    b.extend_from_slice(body);
    put_box(out, t, &b)
}

fn u32s(v: &mut Vec<u8>, xs: impl IntoIterator<Item = u32>) {
    for x in xs {
        v.extend_from_slice(&x.to_be_bytes());
    }
}

/// The sample table of one track: stsd, stts, ctts (if any offset), stss (unless every sample is
/// a sync sample), stsz, stsc, stco or co64.
fn stbl_boxes(out: &mut Vec<u8>, t: &TrackTable, base: u64, co64: bool) -> Result<(), Fmp4Error> {
    let mut b = Vec::new();
    u32s(&mut b, [t.entries.len() as u32]);
    for e in &t.entries {
        b.extend_from_slice(e);
    }
    full_box(out, b"stsd", 0, &b)?;

    let mut b = Vec::new();
    u32s(&mut b, [t.durations.entries.len() as u32]);
    for (n, d) in &t.durations.entries {
        u32s(&mut b, [*n, *d]);
    }
    full_box(out, b"stts", 0, &b)?;

    if t.cts.entries.iter().any(|(_, c)| *c != 0) {
        let signed = t.cts.entries.iter().any(|(_, c)| *c < 0);
        let mut b = Vec::new();
        u32s(&mut b, [t.cts.entries.len() as u32]);
        for (n, c) in &t.cts.entries {
            let c = if signed {
                i32::try_from(*c).ok().map(|c| c as u32)
            } else {
                u32::try_from(*c).ok()
            };
            let c = c.ok_or_else(|| {
                Fmp4Error::Unsupported("a composition offset overflows ctts".into())
            })?;
            u32s(&mut b, [*n, c]);
        }
        full_box(out, b"ctts", u8::from(signed), &b)?;
    }

    if t.syncs.len() != t.sizes.len() {
        let mut b = Vec::new();
        u32s(&mut b, [t.syncs.len() as u32]);
        u32s(&mut b, t.syncs.iter().copied());
        full_box(out, b"stss", 0, &b)?;
    }

    let mut b = Vec::with_capacity(8 + 4 * t.sizes.len());
    let first = t.sizes.first().copied().unwrap_or(0);
    if t.sizes.iter().all(|s| *s == first) {
        u32s(&mut b, [first, t.sizes.len() as u32]);
    } else {
        u32s(&mut b, [0, t.sizes.len() as u32]);
        u32s(&mut b, t.sizes.iter().copied());
    }
    full_box(out, b"stsz", 0, &b)?;

    let mut entries: Vec<(u32, u32, u32)> = Vec::new();
    for (i, (_, n, sdi)) in t.chunks.iter().enumerate() {
        if entries
            .last()
            .is_none_or(|(_, pn, ps)| (pn, ps) != (n, sdi))
        {
            entries.push((i as u32 + 1, *n, *sdi));
        }
    }
    let mut b = Vec::new();
    u32s(&mut b, [entries.len() as u32]);
    for (c, n, s) in entries {
        u32s(&mut b, [c, n, s]);
    }
    full_box(out, b"stsc", 0, &b)?;

    let mut b = Vec::with_capacity(4 + 8 * t.chunks.len());
    u32s(&mut b, [t.chunks.len() as u32]);
    for (off, _, _) in &t.chunks {
        let abs = base + off;
        if co64 {
            b.extend_from_slice(&abs.to_be_bytes());
        } else {
            let abs = u32::try_from(abs)
                .map_err(|_| Fmp4Error::Unsupported("chunk offset overflows stco".into()))?;
            b.extend_from_slice(&abs.to_be_bytes());
        }
    }
    full_box(out, if co64 { b"co64" } else { b"stco" }, 0, &b)
}

fn ftyp() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(b"isom");
    body.extend_from_slice(&0x200u32.to_be_bytes());
    for brand in [b"isom", b"iso2", b"mp41"] {
        body.extend_from_slice(brand);
    }
    let mut out = Vec::new();
    put_box(&mut out, b"ftyp", &body).expect("tiny box");
    out
}

// ---------------------------------------------------------------------------------------------
// Fragmented MP4

/// What [`FragmentedBuilder::push`] needs to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Done,
    /// The moof cannot be rebased in place (a traf without a version 1 tfdt): call
    /// [`FragmentedBuilder::push_whole`] with the whole fragment.
    NeedsWholeFragment,
}

/// Builds a fragmented clip: the init, then each fragment with its `tfdt`s rebased onto the clip's
/// timeline (see the module documentation) and its mdat copied verbatim. Every fragment must use
/// the one init given (a clip ends before an init change).
///
/// Stored fragments already carry version 1 `tfdt`s with moof-relative data offsets, so rebasing
/// only overwrites the `tfdt` values and sizes stay the same; that fast path reads the moof alone.
/// Anything else goes through [`super::rewrite_fragment`] with the whole fragment, and the sizes of
/// its output are used as they come.
pub struct FragmentedBuilder {
    facts: InitFacts,
    timeline: Timeline,
    pieces: Vec<Piece>,
    fragments: usize,
    end_us: i64,
}

impl FragmentedBuilder {
    pub fn new(init: Bytes) -> Result<FragmentedBuilder, Fmp4Error> {
        let facts = InitFacts::parse(&init)?;
        Ok(FragmentedBuilder {
            facts,
            timeline: Timeline::default(),
            pieces: vec![Piece::Bytes(init)],
            fragments: 0,
            end_us: 0,
        })
    }

    fn check_init(&self, f: &ClipFragment) -> Result<(), Fmp4Error> {
        if f.init != 0 {
            return Err(Fmp4Error::Unsupported(
                "a fragmented clip cannot change init".into(),
            ));
        }
        Ok(())
    }

    /// Adds the next fragment from its head alone, if its moof can be rebased in place.
    pub fn push(&mut self, f: &ClipFragment) -> Result<Pushed, Fmp4Error> {
        self.check_init(f)?;
        let head = parse_head(&self.facts, f)?;
        if head
            .trafs
            .iter()
            .any(|t| !matches!(t.tfdt, Some((_, 1, _))))
        {
            return Ok(Pushed::NeedsWholeFragment);
        }
        let shift_us = self.timeline.shift_for(f, traf_starts_us(&head));
        let mut moof = head.moof.to_vec();
        for t in &head.trafs {
            if let Some((at, _, v)) = t.tfdt {
                let new = rebased(v, shift_us, t.timescale);
                self.note_end(new, t);
                // A version 1 tfdt: 8 header bytes, version and flags, then the 64-bit value.
                moof[at + 12..at + 20].copy_from_slice(&new.to_be_bytes());
            }
        }
        let moof_len = moof.len() as u64;
        self.pieces.push(Piece::Bytes(Bytes::from(moof)));
        self.pieces.push(Piece::Fragment {
            index: self.fragments,
            offset: moof_len,
            len: f.size - moof_len,
        });
        self.fragments += 1;
        Ok(Pushed::Done)
    }

    /// Adds the next fragment given whole, rebasing it with [`super::rewrite_fragment`].
    pub fn push_whole(&mut self, f: &ClipFragment, fragment: &[u8]) -> Result<(), Fmp4Error> {
        self.check_init(f)?;
        let head = parse_head(&self.facts, f)?;
        let shift_us = self.timeline.shift_for(f, traf_starts_us(&head));
        let timescales: Vec<(u32, u32)> = head
            .trafs
            .iter()
            .map(|t| (t.track_id, t.timescale))
            .collect();
        let ts_of = |id: u32| {
            timescales
                .iter()
                .find(|(t, _)| *t == id)
                .map_or(1, |(_, ts)| *ts)
        };
        let out = super::rewrite_fragment(&self.facts, fragment, 0, &|id, v| {
            rebased(v, shift_us, ts_of(id))
        })?;
        for t in &head.trafs {
            let v = t.tfdt.map_or(0, |(_, _, v)| v);
            self.note_end(rebased(v, shift_us, t.timescale), t);
        }
        let new_moof = read_header(&out)
            .ok()
            .and_then(|h| h.size)
            .ok_or_else(|| malformed("rewritten fragment has no moof"))?;
        let old_moof = head.moof.len() as u64;
        // Only the moof changes; the mdat is served from the stored fragment.
        if out.len() as u64 - new_moof != f.size - old_moof {
            return Err(malformed("rewriting a fragment changed its mdat"));
        }
        let moof = Bytes::from(out).slice(..new_moof as usize);
        self.pieces.push(Piece::Bytes(moof));
        self.pieces.push(Piece::Fragment {
            index: self.fragments,
            offset: old_moof,
            len: f.size - old_moof,
        });
        self.fragments += 1;
        Ok(())
    }

    fn note_end(&mut self, new_tfdt: u64, t: &Traf) {
        let dur: u64 = t
            .runs
            .iter()
            .flat_map(|r| &r.samples)
            .map(|s| u64::from(s.duration))
            .sum();
        let end = i64::try_from(new_tfdt.saturating_add(dur)).unwrap_or(i64::MAX);
        self.end_us = self.end_us.max(ticks_to_us(end, t.timescale));
    }

    pub fn finish(self) -> Result<ClipPlan, Fmp4Error> {
        if self.fragments == 0 {
            return Err(malformed("a clip needs at least one fragment"));
        }
        Ok(ClipPlan::new(self.pieces, self.end_us))
    }
}

/// A stream-timeline tfdt moved onto the clip's timeline (never below 0).
fn rebased(tfdt: u64, shift_us: i64, timescale: u32) -> u64 {
    let v = i64::try_from(tfdt).unwrap_or(i64::MAX);
    u64::try_from(v.saturating_sub(us_to_ticks(shift_us, timescale))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::testutil::{sample, split, synth_fragment, SynthTraf};
    use crate::fmp4::{fragment_facts, rewrite_fragment, Event};
    use mp4_atom::{Moov, StszSamples};

    /// An init and its fragments as the store holds them, with their producer times (µs) when
    /// moved by `shift_us` onto a stream timeline.
    /// Stored bytes, producer start and end (µs).
    type StoredFragment = (Vec<u8>, i64, i64);

    struct Stored {
        init: Vec<u8>,
        facts: InitFacts,
        frags: Vec<StoredFragment>,
    }

    fn stored(name: &str, shift_us: i64) -> Stored {
        let mut init = None;
        let mut frags = Vec::new();
        for e in split(&sample(name)).unwrap() {
            match e {
                Event::Init { bytes, facts } => init = Some((bytes.to_vec(), facts)),
                Event::Fragment(f) => {
                    let (_, facts) = init.as_ref().unwrap();
                    let bytes = rewrite_fragment(facts, &f.bytes, f.stream_offset, &|id, t| {
                        let ts = facts.track(id).unwrap().timescale;
                        t + us_to_ticks(shift_us, ts) as u64
                    })
                    .unwrap();
                    let ff = fragment_facts(facts, &bytes).unwrap();
                    let start = ff.start_us();
                    frags.push((bytes, start, start + ff.duration_us()));
                }
            }
        }
        let (init, facts) = init.unwrap();
        Stored { init, facts, frags }
    }

    fn clip_fragment(f: &StoredFragment, init: usize, disc: bool) -> ClipFragment<'_> {
        ClipFragment {
            init,
            head: &f.0,
            size: f.0.len() as u64,
            start_us: f.1,
            end_us: f.2,
            discontinuity: disc,
        }
    }

    /// The clip's bytes, resolving fragment pieces against the fragments pushed.
    fn materialize(plan: &ClipPlan, frags: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, p) in plan.pieces.iter().enumerate() {
            assert_eq!(plan.starts[i], out.len() as u64);
            match p {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::Fragment { index, offset, len } => {
                    out.extend_from_slice(&frags[*index][*offset as usize..(offset + len) as usize])
                }
            }
        }
        assert_eq!(out.len() as u64, plan.len);
        out
    }

    fn moov_of(file: &[u8]) -> Moov {
        let top = children(file, 0, "clip").unwrap();
        let types: Vec<_> = top.iter().map(|b| type_name(&b.box_type)).collect();
        assert_eq!(types, ["ftyp", "moov", "mdat"]);
        Moov::decode(&mut &top[1].bytes[..]).unwrap()
    }

    fn sizes(moov: &Moov, track: usize) -> Vec<u32> {
        match &moov.trak[track].mdia.minf.stbl.stsz.samples {
            StszSamples::Different { sizes } => sizes.clone(),
            StszSamples::Identical { count, size } => vec![*size; *count as usize],
        }
    }

    fn stts_total(moov: &Moov, track: usize) -> (u64, u64) {
        let e = &moov.trak[track].mdia.minf.stbl.stts.entries;
        (
            e.iter().map(|e| u64::from(e.sample_count)).sum(),
            e.iter()
                .map(|e| u64::from(e.sample_count) * u64::from(e.sample_delta))
                .sum(),
        )
    }

    /// Every sample's bytes found through stsc/stco/stsz, in order.
    fn sample_bytes<'a>(file: &'a [u8], moov: &Moov, track: usize) -> Vec<&'a [u8]> {
        let stbl = &moov.trak[track].mdia.minf.stbl;
        let offsets: Vec<u64> = match (&stbl.stco, &stbl.co64) {
            (Some(s), _) => s.entries.iter().map(|o| u64::from(*o)).collect(),
            (_, Some(c)) => c.entries.clone(),
            _ => panic!("no chunk offsets"),
        };
        let sizes = sizes(moov, track);
        let mut out = Vec::new();
        let mut sample = 0;
        for (c, off) in offsets.iter().enumerate() {
            let chunk = c as u32 + 1;
            let entry = stbl
                .stsc
                .entries
                .iter()
                .rev()
                .find(|e| e.first_chunk <= chunk)
                .unwrap();
            let mut pos = *off as usize;
            for _ in 0..entry.samples_per_chunk {
                let n = sizes[sample] as usize;
                out.push(&file[pos..pos + n]);
                pos += n;
                sample += 1;
            }
        }
        assert_eq!(sample, sizes.len());
        out
    }

    /// Every sample's bytes of a fragment, in trun order, for one track.
    fn fragment_samples<'a>(facts: &InitFacts, frag: &'a [u8], track_id: u32) -> Vec<&'a [u8]> {
        let f = ClipFragment {
            init: 0,
            head: frag,
            size: frag.len() as u64,
            start_us: 0,
            end_us: 0,
            discontinuity: false,
        };
        let head = parse_head(facts, &f).unwrap();
        let mut out = Vec::new();
        for t in head.trafs.iter().filter(|t| t.track_id == track_id) {
            for r in &t.runs {
                let mut pos = r.data_start as usize;
                for s in &r.samples {
                    out.push(&frag[pos..pos + s.size as usize]);
                    pos += s.size as usize;
                }
            }
        }
        out
    }

    const T0_US: i64 = 1_764_090_000_000_000;

    #[test]
    fn progressive_round_trip_of_a_real_sample() {
        for name in ["h264_aac_gop2s.mp4", "h265_aac.mp4", "aac_only.mp4"] {
            let s = stored(name, T0_US);
            let mut b = ProgressiveBuilder::new(&[&s.init]).unwrap();
            for (i, f) in s.frags.iter().enumerate() {
                b.push(&clip_fragment(f, 0, i == 0)).unwrap();
            }
            let plan = b.finish().unwrap();
            let refs: Vec<&[u8]> = s.frags.iter().map(|f| &f.0[..]).collect();
            let file = materialize(&plan, &refs);
            let moov = moov_of(&file);
            assert_eq!(moov.trak.len(), s.facts.tracks.len(), "{name}");
            assert!(moov.mvex.is_none());
            for (k, track) in s.facts.tracks.iter().enumerate() {
                let mut expected_samples = Vec::new();
                let mut expected_ticks = 0;
                for f in &s.frags {
                    expected_samples.extend(fragment_samples(&s.facts, &f.0, track.track_id));
                    let ff = fragment_facts(&s.facts, &f.0).unwrap();
                    let run = ff.tracks.iter().find(|r| r.track_id == track.track_id);
                    expected_ticks += run.map_or(0, |r| r.duration);
                }
                assert_eq!(
                    sample_bytes(&file, &moov, k),
                    expected_samples,
                    "{name} track {}",
                    track.track_id
                );
                let (count, ticks) = stts_total(&moov, k);
                assert_eq!(count, expected_samples.len() as u64);
                assert_eq!(
                    ticks, expected_ticks,
                    "{name}: one session, nothing adjusted"
                );
                let trak = &moov.trak[k];
                assert_eq!(trak.mdia.mdhd.duration, expected_ticks);
                assert_eq!(trak.mdia.mdhd.timescale, track.timescale);
                let stsd = &trak.mdia.minf.stbl.stsd.codecs;
                assert_eq!(stsd.len(), 1);
                let stss = &trak.mdia.minf.stbl.stss;
                if track.kind == super::super::TrackKind::Video {
                    assert_eq!(
                        stss.as_ref().unwrap().entries.len(),
                        s.frags.len(),
                        "{name}"
                    );
                } else {
                    assert!(
                        stss.is_none(),
                        "{name}: every audio sample is a sync sample"
                    );
                }
            }
            let secs = moov.mvhd.duration as f64 / f64::from(moov.mvhd.timescale);
            assert!(
                (secs - plan.duration_us as f64 / 1e6).abs() < 0.01,
                "{name}"
            );
            assert!(
                (9.9..10.2).contains(&secs) || (5.9..6.2).contains(&secs),
                "{name}: {secs}"
            );
        }
    }

    #[test]
    fn restarts_and_gaps_continue_one_timeline() {
        // Session 2 appended at the end of session 1's video; session 3 after a 30 s gap.
        let s1 = stored("h264_aac_gop2s.mp4", T0_US);
        let end1 = s1.frags.last().unwrap().2;
        let s2 = stored("h264_aac_gop2s.mp4", end1);
        let end2 = s2.frags.last().unwrap().2;
        let s3 = stored("h264_aac_gop2s.mp4", end2 + 30_000_000);
        let all: Vec<(usize, &StoredFragment)> = [&s1, &s2, &s3]
            .iter()
            .flat_map(|s| s.frags.iter().enumerate())
            .collect();
        let mut b = ProgressiveBuilder::new(&[&s1.init]).unwrap();
        for (i, f) in &all {
            b.push(&clip_fragment(f, 0, *i == 0)).unwrap();
        }
        let plan = b.finish().unwrap();
        let refs: Vec<&[u8]> = all.iter().map(|(_, f)| &f.0[..]).collect();
        let file = materialize(&plan, &refs);
        let moov = moov_of(&file);
        let (frames, video_ticks) = stts_total(&moov, 0);
        assert_eq!(frames, 750);
        assert_eq!(
            video_ticks,
            3 * 10 * 12800,
            "video: exactly three sessions, no gap"
        );
        // The producer's audio runs past its video; the overlapped audio samples are dropped so
        // each session's audio starts with its video.
        let (audio_frames, audio_ticks) = stts_total(&moov, 1);
        let one: u64 = s1
            .frags
            .iter()
            .map(|f| fragment_samples(&s1.facts, &f.0, 2).len() as u64)
            .sum();
        assert!(
            audio_frames < 3 * one && audio_frames >= 3 * one - 10,
            "{audio_frames}"
        );
        let one_ticks = 10 * 48000;
        assert!(
            audio_ticks >= 3 * one_ticks && audio_ticks < 3 * one_ticks + 48000 / 5,
            "audio ends with the third session: {audio_ticks}"
        );
        assert!(
            (plan.duration_us - 30_000_000).abs() < 200_000,
            "{}",
            plan.duration_us
        );
        assert!(
            moov.trak.iter().all(|t| t.edts.is_none()),
            "both tracks start at 0"
        );
    }

    /// A hand-built init: the real sample's, whose tracks are 1 (video, 12800) and 2 (audio,
    /// 48000) with trex defaults of sync samples.
    fn gop2s_init() -> Vec<u8> {
        stored("h264_aac_gop2s.mp4", 0).init
    }

    fn synth(video_tfdt: u64, audio_tfdt: u64, sizes: [&[u32]; 2]) -> Vec<u8> {
        let trafs = [
            SynthTraf {
                track_id: 1,
                sample_sizes: sizes[0].to_vec(),
                sample_duration: 512,
                tfdt: Some(video_tfdt),
            },
            SynthTraf {
                track_id: 2,
                sample_sizes: sizes[1].to_vec(),
                sample_duration: 1024,
                tfdt: Some(audio_tfdt),
            },
        ];
        let total: u32 = sizes.iter().flat_map(|s| s.iter()).sum();
        let payload: Vec<u8> = (0..total).map(|i| i as u8).collect();
        synth_fragment(&trafs, &payload)
    }

    #[test]
    fn exact_tables_and_late_track_edit() {
        let init = gop2s_init();
        // Video at 100 s; audio 0.5 s later (24000 ticks at 48 kHz).
        let v0 = 100 * 12800;
        let a0 = 100 * 48000 + 24000;
        let f1 = synth(v0, a0, [&[10, 20, 30], &[5, 5]]);
        let f2 = synth(v0 + 3 * 512, a0 + 2 * 1024, [&[40], &[6]]);
        let frags = [
            (f1.clone(), 100_000_000, 100_120_000),
            (f2.clone(), 100_120_000, 100_160_000),
        ];
        let mut b = ProgressiveBuilder::new(&[&init]).unwrap();
        b.push(&clip_fragment(&frags[0], 0, false)).unwrap();
        b.push(&clip_fragment(&frags[1], 0, false)).unwrap();
        let plan = b.finish().unwrap();
        let file = materialize(&plan, &[&f1, &f2]);
        let moov = moov_of(&file);
        let header_len = match &plan.pieces[0] {
            Piece::Bytes(b) => b.len() as u64,
            _ => panic!(),
        };
        let payload = |f: &[u8]| {
            let h = read_header(f).unwrap();
            h.size.unwrap() + 8
        };
        let (p1, p2) = (payload(&f1), payload(&f2));
        assert_eq!(
            plan.pieces[1..],
            [
                Piece::Fragment {
                    index: 0,
                    offset: p1,
                    len: f1.len() as u64 - p1
                },
                Piece::Fragment {
                    index: 1,
                    offset: p2,
                    len: f2.len() as u64 - p2
                }
            ]
        );
        let video = &moov.trak[0].mdia.minf.stbl;
        assert_eq!(sizes(&moov, 0), [10, 20, 30, 40]);
        assert_eq!(
            video.stts.entries,
            [mp4_atom::SttsEntry {
                sample_count: 4,
                sample_delta: 512
            }]
        );
        assert_eq!(
            video.stco.as_ref().unwrap().entries,
            [
                header_len as u32,
                (header_len + f1.len() as u64 - p1) as u32
            ]
        );
        let stsc: Vec<_> = video
            .stsc
            .entries
            .iter()
            .map(|e| {
                (
                    e.first_chunk,
                    e.samples_per_chunk,
                    e.sample_description_index,
                )
            })
            .collect();
        assert_eq!(stsc, [(1, 3, 1), (2, 1, 1)]);
        assert!(video.ctts.is_none() && video.stss.is_none());
        let audio = &moov.trak[1].mdia.minf.stbl;
        assert_eq!(sizes(&moov, 1), [5, 5, 6]);
        assert_eq!(
            audio.stco.as_ref().unwrap().entries,
            [
                header_len as u32 + 60,
                (header_len + f1.len() as u64 - p1) as u32 + 40
            ]
        );
        // Audio starts 500 ms after video: an empty edit, then its media.
        assert!(moov.trak[0].edts.is_none());
        let elst = moov.trak[1].edts.as_ref().unwrap().elst.as_ref().unwrap();
        assert_eq!(elst.entries.len(), 2);
        assert_eq!(
            (elst.entries[0].segment_duration, elst.entries[0].media_time),
            (500, None)
        );
        assert_eq!(
            (elst.entries[1].segment_duration, elst.entries[1].media_time),
            (64, Some(0))
        );
        assert_eq!(moov.trak[1].tkhd.duration, 564);
        assert_eq!(moov.trak[0].tkhd.duration, 160);
        assert_eq!(moov.mvhd.duration, 564);
        assert_eq!(moov.mvhd.next_track_id, 3);
    }

    #[test]
    fn several_sample_descriptions_for_one_layout() {
        let a = gop2s_init();
        // Same tracks, different codec configuration: the HEVC sample's init.
        let b = stored("h265_aac.mp4", 0).init;
        let f1 = synth(12800, 48000, [&[10], &[5]]);
        let f2 = synth(12800 + 512, 48000 + 1024, [&[11], &[6]]);
        let frags = [(f1, 1_000_000, 1_040_000), (f2, 1_040_000, 1_080_000)];
        let mut builder = ProgressiveBuilder::new(&[&a, &b]).unwrap();
        builder.push(&clip_fragment(&frags[0], 0, false)).unwrap();
        builder.push(&clip_fragment(&frags[1], 1, true)).unwrap();
        let plan = builder.finish().unwrap();
        let file = materialize(&plan, &[&frags[0].0, &frags[1].0]);
        let moov = moov_of(&file);
        let video = &moov.trak[0].mdia.minf.stbl;
        assert_eq!(video.stsd.codecs.len(), 2, "avc1 and hvc1 entries");
        let sdis: Vec<_> = video
            .stsc
            .entries
            .iter()
            .map(|e| e.sample_description_index)
            .collect();
        assert_eq!(sdis, [1, 2]);
        let audio = &moov.trak[1].mdia.minf.stbl;
        assert_eq!(
            audio.stsd.codecs.len(),
            1,
            "identical mp4a entries are shared"
        );

        let aac = stored("aac_only.mp4", 0).init;
        assert!(!same_track_layout(
            &InitFacts::parse(&a).unwrap(),
            &InitFacts::parse(&aac).unwrap()
        ));
        assert!(ProgressiveBuilder::new(&[&a, &aac]).is_err());
    }

    #[test]
    fn fragmented_rebases_like_rewrite_fragment() {
        let s1 = stored("h264_aac_gop2s.mp4", T0_US);
        let end1 = s1.frags.last().unwrap().2;
        let s2 = stored("h264_aac_gop2s.mp4", end1 + 7_000_000);
        let all: Vec<(usize, &StoredFragment)> = [&s1, &s2]
            .iter()
            .flat_map(|s| s.frags.iter().enumerate())
            .collect();
        let mut b = FragmentedBuilder::new(Bytes::from(s1.init.clone())).unwrap();
        for (i, f) in &all {
            assert_eq!(b.push(&clip_fragment(f, 0, *i == 0)).unwrap(), Pushed::Done);
        }
        let plan = b.finish().unwrap();
        let refs: Vec<&[u8]> = all.iter().map(|(_, f)| &f.0[..]).collect();
        let file = materialize(&plan, &refs);
        assert!(file.starts_with(&s1.init));
        // Each fragment equals what rewrite_fragment makes with the clip's shift: the start of
        // session 1, plus the 7 s gap for session 2.
        let mut pos = s1.init.len();
        for (k, (_, f)) in all.iter().enumerate() {
            let shift = if k < s1.frags.len() {
                T0_US
            } else {
                T0_US + 7_000_000
            };
            let facts = &s1.facts;
            let expected = rewrite_fragment(facts, &f.0, 0, &|id, t| {
                rebased(t, shift, facts.track(id).unwrap().timescale)
            })
            .unwrap();
            assert_eq!(
                &file[pos..pos + expected.len()],
                &expected[..],
                "fragment {k}"
            );
            pos += expected.len();
        }
        assert_eq!(pos, file.len());
        assert!(
            (plan.duration_us - 20_080_000).abs() < 100_000,
            "{}",
            plan.duration_us
        );
    }

    #[test]
    fn fragmented_without_tfdt_takes_the_whole_fragment() {
        let init = gop2s_init();
        let trafs = [SynthTraf {
            track_id: 1,
            sample_sizes: vec![3, 4],
            sample_duration: 512,
            tfdt: None,
        }];
        let frag = synth_fragment(&trafs, &[9; 7]);
        let f = (frag.clone(), 0, 80_000);
        let mut b = FragmentedBuilder::new(Bytes::from(init.clone())).unwrap();
        let cf = clip_fragment(&f, 0, false);
        assert_eq!(b.push(&cf).unwrap(), Pushed::NeedsWholeFragment);
        b.push_whole(&cf, &frag).unwrap();
        let plan = b.finish().unwrap();
        let file = materialize(&plan, &[&frag]);
        // rewrite_fragment inserted a version 1 tfdt: the moof grew by 20 bytes.
        assert_eq!(file.len(), init.len() + frag.len() + 20);
        let facts = InitFacts::parse(&init).unwrap();
        let ff = fragment_facts(&facts, &file[init.len()..]).unwrap();
        assert_eq!(ff.tracks[0].base_media_decode_time, 0);
        assert_eq!(ff.tracks[0].sample_count, 2);
    }

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

    #[test]
    fn pieces_are_located() {
        let plan = ClipPlan::new(
            vec![
                Piece::Bytes(Bytes::from_static(b"abc")),
                Piece::Fragment {
                    index: 0,
                    offset: 8,
                    len: 0,
                },
                Piece::Fragment {
                    index: 1,
                    offset: 8,
                    len: 10,
                },
            ],
            0,
        );
        assert_eq!(plan.len, 13);
        assert_eq!(plan.piece_at(0), Some((0, 0)));
        assert_eq!(plan.piece_at(2), Some((0, 2)));
        assert_eq!(plan.piece_at(3), Some((2, 0)));
        assert_eq!(plan.piece_at(12), Some((2, 9)));
        assert_eq!(plan.piece_at(13), None);
    }

    #[test]
    fn time_conversions_round() {
        assert_eq!(us_to_ticks(1_000_000, 90_000), 90_000);
        assert_eq!(us_to_ticks(-5, 1_000_000), -5);
        assert_eq!(us_to_ticks(T0_US, 48_000), T0_US / 1000 * 48);
        assert_eq!(ticks_to_us(3, 48_000), 63);
        assert_eq!(rebased(100, 1_000_000, 1000), 0, "never below zero");
    }
}
