//! The progressive clip: an ordinary MP4 (`ftyp`, `moov` with full sample tables, one `mdat`)
//! built from the fragments' heads, each fragment's mdat payload copied whole into the clip's mdat.
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
use mp4_atom::{Decode, Elst, ElstEntry, Encode, Mdhd, Mvhd, Tkhd};

use super::head::{data_start, parse_head, track_starts_us};
use super::sample_table::{stbl_boxes, TrackTable};
use super::timeline::Timeline;
use super::{malformed, same_track_layout, ClipFragment, ClipPlan, Piece};
use crate::fmp4::boxes::{children, put_box, type_name, BoxRef};
use crate::fmp4::time::us_to_ticks;
use crate::fmp4::{ticks_to_us, Fmp4Error, InitFacts, TrackKind};

/// Timescale of the movie header and edit lists: milliseconds, as most muxers write.
pub const MOVIE_TIMESCALE: u32 = 1000;

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

fn child<'a>(kids: &[BoxRef<'a>], t: &[u8; 4], parent: &str) -> Result<BoxRef<'a>, Fmp4Error> {
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
        let rest = |kids: &[BoxRef], skip: &[&[u8; 4]]| {
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
            .map(|(template, t)| {
                let droppable = first
                    .facts
                    .track(t.track_id)
                    .is_some_and(|i| i.kind == TrackKind::Audio);
                TrackTable::new(template, t.track_id, t.timescale.max(1), droppable)
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
        let shift_us = self.timeline.shift_for(f, track_starts_us(&head));
        let payload_start = head.payload_start as u64;
        let payload_at = self.payload_len;
        let payload_len = f.size - payload_start;
        for traf in &head.trafs {
            let track_id = traf.tfhd.track_id;
            let table = self
                .tracks
                .iter_mut()
                .find(|t| t.track_id == track_id)
                .ok_or_else(|| malformed(format!("unknown track {track_id}")))?;
            let template = init
                .traks
                .iter()
                .find(|t| t.track_id == track_id)
                .ok_or_else(|| malformed(format!("init has no trak {track_id}")))?;
            let sample_description_index = traf.tfhd.sample_description_index.unwrap_or(1).max(1);
            let sdi = table.entry_index(f.init, sample_description_index, &template.entries)?;
            if let Some(tfdt) = traf.tfdt {
                let tfdt = i64::try_from(tfdt).unwrap_or(i64::MAX);
                table.align(tfdt.saturating_sub(us_to_ticks(shift_us, table.timescale)));
            }
            for run in &traf.runs {
                if run.sample_count == 0 {
                    continue;
                }
                table.push_chunk(
                    payload_at + (data_start(run)? - payload_start),
                    run.sample_count,
                    sdi,
                );
                for s in run.samples() {
                    table.push_sample(&s);
                }
            }
        }
        self.payloads.push((payload_start, payload_len));
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

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::fmp4::boxes::read_header;
    use crate::fmp4::fragment_facts;

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
                if track.kind == TrackKind::Video {
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
}
