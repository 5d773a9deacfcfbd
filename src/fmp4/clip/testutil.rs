//! What the clip builders' tests share: sample files as the store holds them, hand-built
//! fragments, and reading a built clip back.

use mp4_atom::{Decode, Moov, StszSamples};

use super::head::parse_head;
use super::{ClipFragment, ClipPlan, Piece};
use crate::fmp4::boxes::{children, type_name};
use crate::fmp4::testutil::{sample, split, synth_fragment, SynthTraf};
use crate::fmp4::time::us_to_ticks;
use crate::fmp4::{fragment_facts, rewrite_fragment, Event, InitFacts};

/// Stored bytes, producer start and end (µs).
pub(super) type StoredFragment = (Vec<u8>, i64, i64);

/// An init and its fragments as the store holds them, with their producer times (µs) when
/// moved by `shift_us` onto a stream timeline (see [`stored`]).
pub(super) struct Stored {
    pub init: Vec<u8>,
    pub facts: InitFacts,
    pub frags: Vec<StoredFragment>,
}

pub(super) fn stored(name: &str, shift_us: i64) -> Stored {
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

pub(super) fn clip_fragment(f: &StoredFragment, init: usize, disc: bool) -> ClipFragment<'_> {
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
pub(super) fn materialize(plan: &ClipPlan, frags: &[&[u8]]) -> Vec<u8> {
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

pub(super) fn moov_of(file: &[u8]) -> Moov {
    let top = children(file, 0, "clip").unwrap();
    let types: Vec<_> = top.iter().map(|b| type_name(&b.box_type)).collect();
    assert_eq!(types, ["ftyp", "moov", "mdat"]);
    Moov::decode(&mut &top[1].bytes[..]).unwrap()
}

pub(super) fn sizes(moov: &Moov, track: usize) -> Vec<u32> {
    match &moov.trak[track].mdia.minf.stbl.stsz.samples {
        StszSamples::Different { sizes } => sizes.clone(),
        StszSamples::Identical { count, size } => vec![*size; *count as usize],
    }
}

pub(super) fn stts_total(moov: &Moov, track: usize) -> (u64, u64) {
    let e = &moov.trak[track].mdia.minf.stbl.stts.entries;
    (
        e.iter().map(|e| u64::from(e.sample_count)).sum(),
        e.iter()
            .map(|e| u64::from(e.sample_count) * u64::from(e.sample_delta))
            .sum(),
    )
}

/// Every sample's bytes found through stsc/stco/stsz, in order.
pub(super) fn sample_bytes<'a>(file: &'a [u8], moov: &Moov, track: usize) -> Vec<&'a [u8]> {
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
pub(super) fn fragment_samples<'a>(
    facts: &InitFacts,
    frag: &'a [u8],
    track_id: u32,
) -> Vec<&'a [u8]> {
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
    for t in head.trafs.iter().filter(|t| t.tfhd.track_id == track_id) {
        for r in &t.runs {
            let mut pos = r.data_start.unwrap() as usize;
            for s in r.samples() {
                out.push(&frag[pos..pos + s.size as usize]);
                pos += s.size as usize;
            }
        }
    }
    out
}

pub(super) const T0_US: i64 = 1_764_090_000_000_000;

/// A hand-built init: the real sample's, whose tracks are 1 (video, 12800) and 2 (audio,
/// 48000) with trex defaults of sync samples.
pub(super) fn gop2s_init() -> Vec<u8> {
    stored("h264_aac_gop2s.mp4", 0).init
}

pub(super) fn synth(video_tfdt: u64, audio_tfdt: u64, sizes: [&[u32]; 2]) -> Vec<u8> {
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
