//! Decoding chosen samples of one H.264 GOP with openh264, which takes Annex B only: each
//! sample's length-prefixed NAL units get start codes, and the `avcC` parameter sets go in front
//! of the keyframe. Each access unit is tagged with its sample index and openh264 gives the tag
//! back with the picture, so pictures are matched to samples whatever order they come out in.
//! Only what the wanted frames depend on is fed, in decode order, then the decoder is flushed:
//! - nothing after the last wanted sample (references always come earlier in decode order);
//! - no sample that no other picture refers to (`nal_ref_idc` 0), unless wanted;
//! - when the slice headers can be followed ([`super::refs`]), no reference picture that the
//!   wanted frames do not depend on either (the B references of earlier B-pyramids), with the
//!   later slice headers rewritten so the decoder sees a conforming stream. That roughly halves
//!   the decoding for a frame deep in a GOP; the pictures are bit-identical either way.
//!
//! Blocking CPU work: call it from a blocking thread.

use std::collections::BTreeSet;

use super::nal::{avcc_to_annexb, droppable};
use super::refs::{self, Plan};
use crate::codec::error::DecodeError;
use crate::codec::openh264::{H264Decoder, PictureView};
use crate::codec::picture::{Decoded, Picture};

/// Which samples to feed the decoder for `wanted` (decode order), given the GOP's samples up to
/// the last wanted one: all but the unreferenced ones not wanted, and the reference plan when it
/// leaves out more than that (used first; the first list is the fallback).
///
/// Always safe: every sample except unreferenced ones that are not wanted. Better when the slice
/// headers can be followed ([`super::refs`]): only the wanted samples and what they reference,
/// with the later slice headers rewritten to match.
pub fn plan_feed(
    parameter_sets: &[Vec<u8>],
    samples: &[&[u8]],
    length_size: u8,
    display_rank: &[usize],
    wanted: &[usize],
) -> (Vec<usize>, Option<Plan>) {
    let all: Vec<usize> = (0..samples.len())
        .filter(|&i| i == 0 || wanted.contains(&i) || !droppable(samples[i], length_size))
        .collect();
    let plan = refs::plan(parameter_sets, samples, length_size, display_rank, wanted)
        .filter(|plan| plan.fed.len() < all.len());
    (all, plan)
}

/// Decodes the samples `wanted` with openh264. `samples` are the GOP's samples in decode order
/// from its keyframe, at least up to the last wanted one (nothing after it is needed);
/// `display_rank` gives each sample's place in display order. `wanted` must be indexes into
/// `samples`, each once.
pub fn decode(
    parameter_sets: &[Vec<u8>],
    length_size: u8,
    samples: &[&[u8]],
    display_rank: &[usize],
    wanted: &[usize],
) -> Result<Decoded, DecodeError> {
    let wanted_ranks: BTreeSet<usize> = wanted
        .iter()
        .filter_map(|&i| display_rank.get(i).copied())
        .collect();
    let (all, plan) = plan_feed(parameter_sets, samples, length_size, display_rank, wanted);
    let wanted_here = |sample: usize| {
        display_rank
            .get(sample)
            .is_some_and(|r| wanted_ranks.contains(r))
    };
    let run = |fed: &[usize], plan: Option<&Plan>| {
        let out = run_openh264(
            parameter_sets,
            samples,
            length_size,
            fed,
            plan,
            &wanted_here,
        )?;
        if out.len() < wanted_ranks.len() {
            return Err(DecodeError(format!(
                "openh264 did not return the wanted frame ({} of {} pictures)",
                out.len(),
                wanted_ranks.len()
            )));
        }
        Ok(out)
    };
    match &plan {
        Some(p) => run(&p.fed, Some(p)).or_else(|e| {
            // The rewrite is meant never to fail; if openh264 disagrees, the plain way still works.
            tracing::warn!(error = %e, "decoding with rewritten slice headers failed; decoding every reference picture");
            run(&all, None)
        }),
        None => run(&all, None),
    }
}

/// Feeds `fed` (sample indexes, decode order; `samples` from the keyframe) to a fresh openh264
/// decoder, rewriting slice headers as `plan` says, and keeps the pictures `wanted` picks.
fn run_openh264(
    parameter_sets: &[Vec<u8>],
    samples: &[&[u8]],
    length_size: u8,
    fed: &[usize],
    plan: Option<&Plan>,
    wanted: &dyn Fn(usize) -> bool,
) -> Result<Decoded, DecodeError> {
    let mut decoder = H264Decoder::new().map_err(|e| DecodeError(e.to_string()))?;
    let mut out = Decoded::new();
    let mut take = |tag: u64, view: &PictureView<'_>| {
        let Some(sample) = usize::try_from(tag).ok().and_then(|t| t.checked_sub(1)) else {
            return;
        };
        if wanted(sample) {
            if let Some(p) =
                Picture::from_planes(view.width, view.height, view.planes, view.strides)
            {
                out.insert(sample, p);
            }
        }
    };
    let mut packet = Vec::new();
    for &i in fed {
        packet.clear();
        if i == 0 {
            for ps in parameter_sets {
                packet.extend_from_slice(&[0, 0, 0, 1]);
                packet.extend_from_slice(ps);
            }
        }
        let sample = samples
            .get(i)
            .ok_or_else(|| DecodeError(format!("sample {i} is not in the GOP")))?;
        match plan {
            Some(plan) => plan
                .append_annexb(i, sample, length_size, &mut packet)
                .map_err(DecodeError)?,
            None => avcc_to_annexb(sample, length_size, &mut packet)?,
        }
        // Tags are sample index + 1: openh264 reports 0 for a picture it has no tag for.
        decoder
            .decode(&packet, i as u64 + 1, &mut take)
            .map_err(|e| {
                DecodeError(format!(
                    "openh264 cannot decode sample {i} of the GOP (decode order): {e}"
                ))
            })?;
    }
    decoder
        .flush(&mut take)
        .map_err(|e| DecodeError(format!("openh264 failed while flushing: {e}")))?;
    Ok(out)
}
