//! Decoding chosen frames of one GOP ([`super::gop`]) to pictures: the frame service's choice of
//! decoder and its translation from a GOP's sample table to what the decoders take. Blocking CPU
//! work: call it from a blocking thread (the frames service does, under its concurrency limit).
//!
//! - H.264 4:2:0 8-bit goes through openh264 ([`crate::codec::h264::decode`]), fed the samples
//!   from the keyframe up to the last wanted one, with their display ranks.
//! - Everything else with video that ffmpeg knows (H.265; H.264 4:2:2, 4:4:4 or 10-bit, which
//!   openh264 cannot decode) goes through the `ffmpeg` binary ([`crate::codec::ffmpeg`]), which
//!   picks the wanted pictures by presentation timestamp.

use std::collections::BTreeMap;
use std::path::Path;

use super::gop::{Gop, VideoCodec};
use crate::codec::error::DecodeError;
use crate::codec::picture::Decoded;
use crate::codec::{ffmpeg, h264};

/// Decodes the samples `wanted` (indexes into `gop.samples`) with openh264. `fragments` are the
/// bytes the GOP was parsed from.
pub fn decode_h264(
    codec: &VideoCodec,
    gop: &Gop,
    fragments: &[&[u8]],
    wanted: &[usize],
) -> Result<Decoded, DecodeError> {
    let VideoCodec::H264 {
        length_size,
        parameter_sets,
        ..
    } = codec
    else {
        return Err(DecodeError("not an H.264 track".into()));
    };
    let order = gop.display_order();
    let mut rank_of = vec![0usize; order.len()];
    for (rank, &i) in order.iter().enumerate() {
        rank_of[i] = rank;
    }
    // Display rank -> sample index, for the frames we want.
    let wanted_ranks: BTreeMap<usize, usize> = wanted
        .iter()
        .filter(|&&i| i < gop.samples.len())
        .map(|&i| (rank_of[i], i))
        .collect();
    if wanted_ranks.is_empty() {
        return Ok(Decoded::new());
    }
    // References come before the pictures using them in decode order, so nothing after the last
    // wanted sample is needed; the flush hands out what reordering still holds.
    let last_input = wanted_ranks.values().copied().max().unwrap_or(0);
    let sample_bytes = |i: usize| -> Result<&[u8], DecodeError> {
        let s = &gop.samples[i];
        fragments
            .get(s.fragment)
            .and_then(|f| f.get(s.range.clone()))
            .ok_or_else(|| DecodeError("a sample lies outside its fragment".into()))
    };
    let prefix = (0..=last_input)
        .map(sample_bytes)
        .collect::<Result<Vec<&[u8]>, DecodeError>>()?;
    let wanted_samples: Vec<usize> = wanted_ranks.values().copied().collect();
    h264::decode::decode(
        parameter_sets,
        *length_size,
        &prefix,
        &rank_of,
        &wanted_samples,
    )
}

/// Decodes the samples `wanted` with the ffmpeg binary. `init` and `fragments` are the stored
/// bytes; the wanted pictures are chosen by their presentation timestamps (decode time plus
/// composition offset, in the track's timescale).
pub fn decode_ffmpeg(
    ffmpeg: &Path,
    init: &[u8],
    fragments: &[&[u8]],
    gop: &Gop,
    wanted: &[usize],
) -> Result<Decoded, DecodeError> {
    let mut by_pts: BTreeMap<i64, usize> = BTreeMap::new();
    for &i in wanted {
        if let Some(s) = gop.samples.get(i) {
            by_pts.insert(s.decode_ticks + s.cts, i);
        }
    }
    ffmpeg::decode(ffmpeg, init, fragments, &by_pts)
}

#[cfg(test)]
mod tests {
    use super::super::gop::tests::{h264_gop, split_sample};
    use super::super::gop::VideoTrack;
    use super::*;
    use crate::codec::ffmpeg;
    use crate::codec::h264::decode::plan_feed;
    use crate::codec::h264::nal::droppable;
    use crate::codec::h264::refs::plan;
    use crate::codec::picture::Picture;

    /// Mean absolute difference per sample value between two same-sized pictures.
    fn mean_abs_diff(a: &Picture, b: &Picture) -> f64 {
        assert_eq!((a.width, a.height), (b.width, b.height));
        let planes = [(&a.y, &b.y), (&a.cb, &b.cb), (&a.cr, &b.cr)];
        let (sum, n) = planes.iter().fold((0u64, 0usize), |(sum, n), (p, q)| {
            let s: u64 = p
                .iter()
                .zip(q.iter())
                .map(|(x, y)| u64::from(x.abs_diff(*y)))
                .sum();
            (sum + s, n + p.len())
        });
        sum as f64 / n as f64
    }

    #[test]
    fn openh264_gives_display_order_frames() {
        let (init, fragments) = split_sample("h264_aac_gop2s.mp4");
        let track = VideoTrack::from_init(&init).unwrap();
        let frags: Vec<&[u8]> = vec![&fragments[0]];
        let gop = Gop::parse(&track, &frags).unwrap();
        let all: Vec<usize> = (0..gop.samples.len()).collect();
        let decoded = decode_h264(&track.codec, &gop, &frags, &all).unwrap();
        assert_eq!(decoded.len(), 50);
        let first = &decoded[&0];
        assert_eq!((first.width, first.height), (640, 360));
        // Decoding only up to one frame (leaving out the unreferenced samples before it) gives
        // the same picture as decoding the whole GOP.
        let order = gop.display_order();
        let length_size = match &track.codec {
            VideoCodec::H264 { length_size, .. } => *length_size,
            _ => unreachable!("an H.264 sample"),
        };
        let droppable = gop
            .samples
            .iter()
            .filter(|s| droppable(&frags[s.fragment][s.range.clone()], length_size))
            .count();
        assert!(
            droppable >= 10,
            "the sample has unreferenced B-frames ({droppable})"
        );
        let gaps_seen = each_frame_alone_matches_the_whole_gop("h264_aac_gop2s.mp4", 0);
        // x264's B-pyramids: every frame after the second B reference skips the earlier ones.
        assert!(
            gaps_seen >= 40,
            "frames skip unused B references ({gaps_seen} of 50)"
        );
        // testsrc2 moves: neighbours in display order differ a little, far frames more.
        let step = mean_abs_diff(&decoded[&order[10]], &decoded[&order[11]]);
        assert!(step > 0.1, "consecutive frames identical? {step}");
        // Display order is smooth: each frame is closer to its display neighbour than to the
        // frame two steps away (a decode-order mix-up would break this).
        for r in 1..48 {
            let near = mean_abs_diff(&decoded[&order[r]], &decoded[&order[r + 1]]);
            let far = mean_abs_diff(&decoded[&order[r - 1]], &decoded[&order[r + 1]]);
            assert!(near <= far + 0.5, "rank {r}: near {near} far {far}");
        }
    }

    /// Decodes each frame of GOP `fragment` of `sample` alone (only the pictures it needs) and
    /// checks it is bit-identical to the same frame of the whole-GOP decode. Returns how many
    /// frames were decoded with reference pictures left out.
    fn each_frame_alone_matches_the_whole_gop(sample: &str, fragment: usize) -> usize {
        let g = h264_gop(sample, fragment);
        let frags: Vec<&[u8]> = vec![&g.fragment];
        let all: Vec<usize> = (0..g.gop.samples.len()).collect();
        let decoded = decode_h264(&g.track.codec, &g.gop, &frags, &all).unwrap();
        assert_eq!(decoded.len(), g.gop.samples.len());
        let samples: Vec<&[u8]> = g.samples.iter().map(|s| s.as_slice()).collect();
        let (length_size, parameter_sets, rank_of, gop, track) =
            (&g.length_size, &g.parameter_sets, &g.rank, &g.gop, &g.track);
        let order = gop.display_order();
        let mut gaps_seen = 0;
        for (rank, &i) in order.iter().enumerate() {
            let (all, plan) =
                plan_feed(parameter_sets, &samples[..=i], *length_size, rank_of, &[i]);
            let gaps = plan.as_ref().is_some_and(|p| p.skips_references());
            let fed = plan.map_or(all, |p| p.fed);
            let references_before = (0..=i)
                .filter(|&k| k == i || !droppable(samples[k], *length_size))
                .count();
            assert!(fed.len() <= references_before, "{sample}: rank {rank}");
            gaps_seen += usize::from(gaps);
            let one = decode_h264(&track.codec, gop, &frags, &[i]).unwrap();
            assert_eq!(one.len(), 1);
            let d = mean_abs_diff(&one[&i], &decoded[&i]);
            assert!(
                d == 0.0,
                "{sample}: display frame {rank} differs by {d} alone (fed {fed:?})"
            );
        }
        gaps_seen
    }

    /// With 4 reference frames x264's P-pictures use the B references too: all are kept.
    #[test]
    fn multi_reference_frames_alone_match_the_whole_gop() {
        let (_, fragments) = split_sample("h264_refs4.mp4");
        assert_eq!(fragments.len(), 2);
        for fragment in 0..2 {
            let gaps = each_frame_alone_matches_the_whole_gop("h264_refs4.mp4", fragment);
            assert_eq!(gaps, 0, "GOP {fragment}: every B reference is used");
        }
    }

    /// CAVLC slices (the slice data is not byte-aligned after the header): rewritten headers
    /// shift it bit by bit.
    #[test]
    fn cavlc_frames_alone_match_the_whole_gop() {
        for fragment in 0..2 {
            let gaps = each_frame_alone_matches_the_whole_gop("h264_cavlc.mp4", fragment);
            assert!(gaps >= 40, "GOP {fragment}: {gaps} of 50 skip B references");
        }
    }

    /// ffmpeg picks the same pictures by presentation timestamp as openh264 gives by display
    /// rank (H.264), and decodes H.265 (open GOP) when given the previous GOP too.
    #[test]
    fn ffmpeg_selects_by_timestamp() {
        if !ffmpeg::usable("ffmpeg") {
            eprintln!("SKIPPED: ffmpeg not found");
            return;
        }
        let ffmpeg = Path::new("ffmpeg");
        let (init, fragments) = split_sample("h264_aac_gop2s.mp4");
        let track = VideoTrack::from_init(&init).unwrap();
        let frags: Vec<&[u8]> = vec![&fragments[1]];
        let gop = Gop::parse(&track, &frags).unwrap();
        let order = gop.display_order();
        let wanted = [order[0], order[38], order[49]];
        let ours = decode_h264(&track.codec, &gop, &frags, &wanted).unwrap();
        let theirs = decode_ffmpeg(ffmpeg, &init, &frags, &gop, &wanted).unwrap();
        for i in wanted {
            let d = mean_abs_diff(&ours[&i], &theirs[&i]);
            assert!(d < 2.0, "sample {i}: openh264 and ffmpeg differ by {d}");
        }

        let (init, fragments) = split_sample("h265_aac.mp4");
        let track = VideoTrack::from_init(&init).unwrap();
        let frags: Vec<&[u8]> = vec![&fragments[0], &fragments[1]];
        let gop = Gop::parse(&track, &frags).unwrap();
        let wanted: Vec<usize> = (0..gop.samples.len()).collect();
        let all = decode_ffmpeg(ffmpeg, &init, &frags, &gop, &wanted).unwrap();
        assert_eq!(all.len(), 99);
        assert_eq!((all[&0].width, all[&0].height), (640, 360));
        let gop = Gop::parse(&track, &frags[1..]).unwrap();
        let err = decode_ffmpeg(ffmpeg, &init, &frags[1..], &gop, &[1]).unwrap_err();
        assert!(err.0.contains("0 of the 1"), "{err}");
    }

    /// Damaged headers (bits flipped near the start of parameter sets and slices) and random
    /// bytes never panic: the plan is `None`, or it rewrites without panicking.
    #[test]
    fn damaged_headers_do_not_panic() {
        let g = h264_gop("h264_cavlc.mp4", 0);
        let (parameter_sets, length_size, clean, rank) =
            (&g.parameter_sets, &g.length_size, &g.samples, &g.rank);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut planned = 0;
        for round in 0..400 {
            let mut params = parameter_sets.clone();
            let mut samples = clean.clone();
            for _ in 0..1 + next() % 4 {
                let pick = (next() % (samples.len() as u64 + 2)) as usize;
                let target = if pick < params.len() {
                    &mut params[pick]
                } else {
                    let i = pick.saturating_sub(params.len()).min(samples.len() - 1);
                    &mut samples[i]
                };
                // Past the length prefix and NAL header, within the first 24 bytes.
                let at = 5 + (next() % 24) as usize;
                if let Some(b) = target.get_mut(at) {
                    *b ^= 1 << (next() % 8);
                }
            }
            if round % 50 == 0 {
                let n = samples.len() - 1;
                samples[n] = (0..64).map(|_| next() as u8).collect();
            }
            let refs: Vec<&[u8]> = samples.iter().map(|s| s.as_slice()).collect();
            let wanted = [(next() % refs.len() as u64) as usize];
            let Some(plan) = plan(&params, &refs, *length_size, rank, &wanted) else {
                continue;
            };
            planned += 1;
            let mut out = Vec::new();
            for &i in &plan.fed {
                let _ = plan.append_annexb(i, refs[i], *length_size, &mut out);
            }
        }
        assert!(planned > 0, "some damaged GOPs still plan");
    }
}
