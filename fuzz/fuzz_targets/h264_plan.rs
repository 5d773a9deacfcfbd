//! Fuzzes the H.264 reference planner and slice-header rewrite that frame decoding runs on stored
//! media (which producers control).
//!
//! Input layout: `[wanted, annexb...]`. The Annex B stream is cut at start codes; SPS and PPS NAL
//! units become the parameter sets, and the other NAL units up to and including each slice one
//! sample (4-byte length prefixes), in decode order, with display order taken to be decode order. `wanted` (modulo the sample count)
//! picks the frame. The seed corpus (`fuzz/seed-corpus.sh`) holds the first frames of the H.264
//! samples converted to Annex B.
//!
//! What is asserted is what the planner promises: no panic; a plan feeds samples in decode order,
//! always the first and the wanted one; every fed sample converts to Annex B starting with a
//! start code, or fails with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapedeck::codec::h264::refs::plan;

fuzz_target!(|data: &[u8]| {
    let [wanted, stream @ ..] = data else {
        return;
    };
    let mut parameter_sets: Vec<Vec<u8>> = Vec::new();
    let mut samples: Vec<Vec<u8>> = Vec::new();
    let mut sample = Vec::new();
    for nal in split_annexb(stream) {
        match nal.first().map(|h| h & 0x1f) {
            Some(7 | 8) => parameter_sets.push(nal.to_vec()),
            Some(kind) => {
                sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                sample.extend_from_slice(nal);
                if matches!(kind, 1 | 5) {
                    samples.push(std::mem::take(&mut sample));
                }
            }
            None => {}
        }
    }
    if samples.is_empty() || samples.len() > 300 {
        return;
    }
    let refs: Vec<&[u8]> = samples.iter().map(|s| s.as_slice()).collect();
    let rank: Vec<usize> = (0..refs.len()).collect();
    let wanted = usize::from(*wanted) % refs.len();
    let Some(p) = plan(&parameter_sets, &refs, 4, &rank, &[wanted]) else {
        return;
    };
    assert!(p.fed.windows(2).all(|w| w[0] < w[1]), "fed in decode order");
    assert_eq!(p.fed.first(), Some(&0), "the keyframe is fed");
    assert!(p.fed.contains(&wanted), "the wanted sample is fed");
    for &i in &p.fed {
        let mut out = Vec::new();
        if p.append_annexb(i, refs[i], 4, &mut out).is_ok() {
            assert!(out.starts_with(&[0, 0, 0, 1]), "Annex B output");
        }
    }
});

/// NAL units between Annex B start codes (`00 00 01`, with or without a leading `00`).
fn split_annexb(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let mut end = starts.get(k + 1).map_or(stream.len(), |&n| n - 3);
            while end > s && stream[end - 1] == 0 {
                end -= 1; // the leading zero of a 4-byte start code, trailing zeros
            }
            &stream[s..end]
        })
        .collect()
}
