//! Decoding chosen frames of one GOP to pictures (Y'CbCr 4:2:0, `picture.rs`). Blocking CPU work: call it from a blocking thread
//! (the frames service does, under its concurrency limit).
//!
//! - H.264 4:2:0 8-bit goes through openh264, which takes Annex B only: each sample's
//!   length-prefixed NAL units get start codes, and the `avcC` parameter sets go in front of the
//!   keyframe. Each access unit is tagged with its sample index and openh264 gives the tag back
//!   with the picture, so pictures are matched to samples whatever order they come out in. Only
//!   what the wanted frames depend on is fed, in decode order, then the decoder is flushed:
//!   - nothing after the last wanted sample (references always come earlier in decode order);
//!   - no sample that no other picture refers to (`nal_ref_idc` 0), unless wanted;
//!   - when the slice headers can be followed (`h264_refs.rs`), no reference picture that the
//!     wanted frames do not depend on either (the B references of earlier B-pyramids), with the
//!     later slice headers rewritten so the decoder sees a conforming stream. That roughly halves
//!     the decoding for a frame deep in a GOP; the pictures are bit-identical either way.
//! - Everything else with video that ffmpeg knows (H.265; H.264 4:2:2, 4:4:4 or 10-bit, which
//!   openh264 cannot decode) goes through the `ffmpeg` binary: the init and the GOP's fragments on
//!   its stdin, a `select` filter on the wanted presentation timestamps, `showinfo` to say which
//!   picture is which, raw `yuv420p` out.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::gop::{Gop, VideoCodec};
use super::h264_refs;
use super::openh264::{H264Decoder, PictureView};
use super::picture::Picture;

/// How long one ffmpeg run may take before it is killed. A GOP of 1080p HEVC decodes in well
/// under a second here; this only guards against a wedged process holding a decode slot.
const FFMPEG_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a frame could not be decoded (the media's fault or the decoder's, never the request's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decoded pictures by sample index.
pub type Decoded = BTreeMap<usize, Picture>;

/// Whether an H.264 sample can be left out without changing any other picture: every one of its
/// slices has `nal_ref_idc` 0. A sample that cannot be parsed counts as needed.
fn h264_droppable(sample: &[u8], length_size: u8) -> bool {
    let n = usize::from(length_size);
    let mut pos = 0;
    let mut slices = 0;
    while pos + n <= sample.len() && n > 0 {
        let len = sample[pos..pos + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        pos += n;
        let Some(&header) = sample.get(pos) else {
            return false;
        };
        let (ref_idc, nal_type) = ((header >> 5) & 3, header & 0x1f);
        if matches!(nal_type, 1..=5) {
            if ref_idc != 0 || nal_type == 5 {
                return false;
            }
            slices += 1;
        }
        pos += len;
    }
    slices > 0 && pos == sample.len()
}

/// Which samples to feed the decoder for `wanted` (decode order), given the GOP's samples up to
/// the last wanted one: all but the unreferenced ones not wanted, and the reference plan when it
/// leaves out more than that (used first; the first list is the fallback).
///
/// Always safe: every sample except unreferenced ones that are not wanted. Better when the slice
/// headers can be followed (`h264_refs.rs`): only the wanted samples and what they reference,
/// with the later slice headers rewritten to match.
fn plan_h264(
    parameter_sets: &[Vec<u8>],
    samples: &[&[u8]],
    length_size: u8,
    display_rank: &[usize],
    wanted: &[usize],
) -> (Vec<usize>, Option<h264_refs::Plan>) {
    let all: Vec<usize> = (0..samples.len())
        .filter(|&i| i == 0 || wanted.contains(&i) || !h264_droppable(samples[i], length_size))
        .collect();
    let plan = h264_refs::plan(parameter_sets, samples, length_size, display_rank, wanted)
        .filter(|plan| plan.fed.len() < all.len());
    (all, plan)
}

/// Appends `sample` (NAL units with `length_size`-byte big-endian length prefixes) to `out` as
/// Annex B (each NAL unit after a 4-byte start code).
pub fn avcc_to_annexb(
    sample: &[u8],
    length_size: u8,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let n = usize::from(length_size);
    if !(1..=4).contains(&n) {
        return Err(DecodeError(format!(
            "NAL length size {length_size} in the avcC is not 1, 2, 3 or 4"
        )));
    }
    let mut pos = 0;
    while pos < sample.len() {
        let prefix = sample.get(pos..pos + n).ok_or_else(|| {
            DecodeError(format!("a NAL length prefix at byte {pos} is cut short"))
        })?;
        let len = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        pos += n;
        let nal = sample.get(pos..pos + len).ok_or_else(|| {
            DecodeError(format!(
                "a NAL unit of {len} bytes at byte {pos} runs past the end of its sample ({} bytes)",
                sample.len()
            ))
        })?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        pos += len;
    }
    Ok(())
}

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
    let (all, plan) = plan_h264(
        parameter_sets,
        &prefix,
        *length_size,
        &rank_of,
        &wanted_samples,
    );
    let wanted_here = |sample: usize| {
        rank_of
            .get(sample)
            .is_some_and(|r| wanted_ranks.contains_key(r))
    };
    let run = |fed: &[usize], plan: Option<&h264_refs::Plan>| {
        let out = run_openh264(
            parameter_sets,
            &prefix,
            *length_size,
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
    plan: Option<&h264_refs::Plan>,
    wanted: &dyn Fn(usize) -> bool,
) -> Result<Decoded, DecodeError> {
    let mut decoder = H264Decoder::new()?;
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

/// Whether `ffmpeg` runs (`ffmpeg -version` succeeds).
pub fn ffmpeg_usable(ffmpeg: &str) -> bool {
    Command::new(ffmpeg)
        .arg("-version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Decodes the samples `wanted` with the ffmpeg binary. `init` and `fragments` are the stored
/// bytes; the wanted pictures are chosen by their presentation timestamps (decode time plus
/// composition offset, in the track's timescale), which ffmpeg keeps with `-copyts`.
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
    if by_pts.is_empty() {
        return Ok(Decoded::new());
    }
    let select = by_pts
        .keys()
        .map(|p| format!("eq(pts\\,{p})"))
        .collect::<Vec<_>>()
        .join("+");
    let mut child = Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"])
        .args([
            "-copyts", "-f", "mp4", "-i", "pipe:0", "-map", "0:v:0", "-an",
        ])
        .args(["-vf", &format!("select='{select}',showinfo")])
        .args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg("pipe:1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DecodeError(format!("cannot run {}: {e}", ffmpeg.display())))?;
    let mut input =
        Vec::with_capacity(init.len() + fragments.iter().map(|f| f.len()).sum::<usize>());
    input.extend_from_slice(init);
    for f in fragments {
        input.extend_from_slice(f);
    }
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            // ffmpeg may stop reading once it has what it needs: a broken pipe is fine.
            let _ = s.write_all(&input);
        }
    });
    let mut stderr_pipe = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr_pipe.as_mut() {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    // Kills ffmpeg if it outlives FFMPEG_TIMEOUT; dropped (disarmed) once stdout ends.
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            done_rx.recv_timeout(FFMPEG_TIMEOUT)
        {
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet (we wait
            // for it only after this thread ends).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    });
    let mut raw = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut raw);
    }
    drop(done_tx);
    let _ = watchdog.join();
    let status = child.wait();
    let _ = writer.join();
    let log = stderr_reader.join().unwrap_or_default();
    let failed = |why: String| {
        let tail: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("Parsed_showinfo"))
            .rev()
            .take(3)
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        DecodeError(format!("ffmpeg {why}: {}", tail.join(" | ")))
    };
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(failed(format!("exited with {s}"))),
        Err(e) => return Err(failed(format!("could not be waited for ({e})"))),
    }
    let mut out = Decoded::new();
    let mut offset = 0usize;
    for (pts, (w, h)) in showinfo_frames(&log) {
        let len = Picture::i420_len(w, h);
        let Some(pixels) = raw.get(offset..offset + len) else {
            return Err(failed(format!(
                "wrote {} bytes of pictures, fewer than its log announced",
                raw.len()
            )));
        };
        offset += len;
        if let Some(&i) = by_pts.get(&pts) {
            if let Some(p) = Picture::from_i420(w, h, pixels) {
                out.insert(i, p);
            }
        }
    }
    if out.len() < by_pts.len() {
        return Err(failed(format!(
            "gave {} of the {} pictures wanted",
            out.len(),
            by_pts.len()
        )));
    }
    Ok(out)
}

/// (pts, (width, height)) of each picture `showinfo` reported, in output order.
fn showinfo_frames(log: &str) -> Vec<(i64, (u32, u32))> {
    let field = |line: &str, key: &str| -> Option<String> {
        let at = line.find(key)? + key.len();
        let rest = line[at..].trim_start();
        Some(rest.split_whitespace().next()?.to_string())
    };
    log.lines()
        .filter(|l| l.contains("Parsed_showinfo") && l.contains(" n:"))
        .filter_map(|l| {
            let pts = field(l, " pts:")?.parse::<i64>().ok()?;
            let size = field(l, " s:")?;
            let (w, h) = size.split_once('x')?;
            Some((pts, (w.parse().ok()?, h.parse().ok()?)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::gop::tests::{h264_gop, split_sample};
    use super::super::gop::VideoTrack;
    use super::*;

    #[test]
    fn annexb_conversion() {
        let mut out = Vec::new();
        avcc_to_annexb(&[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x06], 4, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x65, 1, 0, 0, 0, 1, 0x06]);
        out.clear();
        avcc_to_annexb(&[0, 1, 0x41], 2, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x41]);
        assert!(avcc_to_annexb(&[0, 0, 0, 9, 0x65], 4, &mut out).is_err());
        assert!(avcc_to_annexb(&[0, 0], 4, &mut out).is_err());
        assert!(avcc_to_annexb(&[1], 0, &mut out).is_err());
    }

    #[test]
    fn showinfo_lines() {
        let log = "[Parsed_showinfo_1 @ 0x55] config in time_base: 1/12800, frame_rate: 25/1\n\
            [Parsed_showinfo_1 @ 0x55] n:   0 pts:22784 pts_time:1.78 duration: 512 fmt:rgb24 s:640x360 i:P\n\
            [Parsed_showinfo_1 @ 0x55] n:   1 pts:  23296 pts_time:1.82 s:320x180 i:P\n";
        assert_eq!(
            showinfo_frames(log),
            vec![(22784, (640, 360)), (23296, (320, 180))]
        );
    }

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
            .filter(|s| h264_droppable(&frags[s.fragment][s.range.clone()], length_size))
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
                plan_h264(parameter_sets, &samples[..=i], *length_size, rank_of, &[i]);
            let gaps = plan.as_ref().is_some_and(|p| p.skips_references());
            let fed = plan.map_or(all, |p| p.fed);
            let references_before = (0..=i)
                .filter(|&k| k == i || !h264_droppable(samples[k], *length_size))
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
        if !ffmpeg_usable("ffmpeg") {
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
}
