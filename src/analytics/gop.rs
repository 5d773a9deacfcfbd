//! One GOP of a stored stream as a decoder needs it: the video track's codec configuration, and
//! every video sample of a segment's fragments in decode order with its display time and where
//! its bytes are. Pure: bytes in, tables out (the store reads, `decode` decodes).
//!
//! ## Display time
//! Stored fragments sit on the stream timeline: a sample's decode time is producer time in the
//! track's timescale (see the time rules in DESIGN.md), and its presentation time adds the
//! composition offset. Encoders with B-frames delay every frame by a constant offset (two frames
//! for x264's defaults) that players remove with an edit list, or, in fragmented files without
//! one, simply by starting playback at the first frame. We remove the same offset: a sample's
//! display time is its decode time plus its composition offset, minus the delay of the
//! segment's earliest shown picture (its presentation time less the segment's first decode
//! time). So a segment's first picture is shown at the segment's producer time (where HLS puts
//! `EXT-X-PROGRAM-DATE-TIME`), its frames fill the segment's producer time range, and "1.52 s
//! into the stream" is the frame ffmpeg shows 1.52 s in.
//!
//! In a closed GOP the first picture shown is the keyframe. In an open GOP (x265's default) the
//! keyframe is followed in decode order by *leading* pictures shown before it, which reference
//! the previous GOP: [`Gop::leading`] names them so the caller can decode them with that GOP.

use mp4_atom::{Codec, Decode, Moov, Tfdt, Tfhd, Trun};
use std::ops::Range;

use crate::error::{Error, Kind, Result};
use crate::fmp4::InitFacts;

/// Sample flags bit: `sample_is_non_sync_sample` (ISO/IEC 14496-12 8.8.3.1).
const NON_SYNC_SAMPLE: u32 = 0x0001_0000;

/// How the video track is coded, as far as choosing a decoder goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 (`avc1`/`avc3`): NAL length prefix size and the parameter sets of the `avcC`
    /// (SPS, SPS extensions, PPS, in that order).
    H264 {
        length_size: u8,
        parameter_sets: Vec<Vec<u8>>,
        profile_idc: u8,
        /// From the `avcC` extension of the High profiles; 4:2:0 8-bit when absent.
        chroma_format: u8,
        bit_depth_luma: u8,
    },
    /// H.265 (`hvc1`/`hev1`).
    H265,
    /// Anything else, by its codec string.
    Other(String),
}

impl VideoCodec {
    /// Whether openh264 can decode this: H.264 4:2:0 8-bit (Baseline, Main, Extended, High).
    pub fn openh264_can_decode(&self) -> bool {
        matches!(
            self,
            VideoCodec::H264 { profile_idc, chroma_format, bit_depth_luma, .. }
                if matches!(profile_idc, 66 | 77 | 88 | 100)
                    && *chroma_format == 1
                    && *bit_depth_luma == 8
        )
    }
}

/// The stream's video track.
#[derive(Debug, Clone)]
pub struct VideoTrack {
    pub track_id: u32,
    pub timescale: u32,
    /// RFC 6381 codec string (for messages).
    pub codec_string: String,
    pub codec: VideoCodec,
    /// `trex` defaults, for samples whose `trun` and `tfhd` say nothing.
    default_sample_duration: u32,
    default_sample_size: u32,
    default_sample_flags: u32,
}

impl VideoTrack {
    /// The video track of an init segment. A stream without one is unsupported media (there is
    /// nothing to take a picture of); the message names the codecs it does have.
    pub fn from_init(init: &[u8]) -> Result<VideoTrack> {
        let facts = InitFacts::parse(init)?;
        let Some(track) = facts.video_track() else {
            return Err(Error::new(
                Kind::UnsupportedMedia,
                format!(
                    "this stream has no video track (codecs: {}), so it has no frames",
                    facts.codecs()
                ),
            ));
        };
        let moov = find_box(init, b"moov")
            .ok_or_else(|| Error::invalid("the stream's init segment has no moov box"))?;
        let moov = Moov::decode(&mut &init[moov.clone()])
            .map_err(|e| Error::invalid(format!("the stream's init segment is malformed: {e}")))?;
        let entry = moov
            .trak
            .iter()
            .find(|t| t.tkhd.track_id == track.track_id)
            .and_then(|t| t.mdia.minf.stbl.stsd.codecs.first());
        let codec = match entry {
            Some(Codec::Avc1(c)) => h264(&c.avcc),
            Some(Codec::Avc3(c)) => h264(&c.avcc),
            Some(Codec::Hvc1(_)) | Some(Codec::Hev1(_)) => VideoCodec::H265,
            _ => VideoCodec::Other(track.codec.clone()),
        };
        Ok(VideoTrack {
            track_id: track.track_id,
            timescale: track.timescale,
            codec_string: track.codec.clone(),
            codec,
            default_sample_duration: track.default_sample_duration,
            default_sample_size: track.default_sample_size,
            default_sample_flags: track.default_sample_flags,
        })
    }
}

fn h264(avcc: &mp4_atom::Avcc) -> VideoCodec {
    let mut parameter_sets = avcc.sequence_parameter_sets.clone();
    if let Some(ext) = &avcc.ext {
        parameter_sets.extend(ext.sequence_parameter_sets_ext.iter().cloned());
    }
    parameter_sets.extend(avcc.picture_parameter_sets.iter().cloned());
    VideoCodec::H264 {
        length_size: avcc.length_size,
        parameter_sets,
        profile_idc: avcc.avc_profile_indication,
        chroma_format: avcc.ext.as_ref().map_or(1, |e| e.chroma_format),
        bit_depth_luma: avcc.ext.as_ref().map_or(8, |e| e.bit_depth_luma),
    }
}

/// One video sample of the GOP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Index of the fragment (in the list given to [`Gop::parse`]) holding the sample.
    pub fragment: usize,
    /// The sample's bytes within that fragment.
    pub range: Range<usize>,
    /// Decode time in the track's timescale (producer time since the epoch).
    pub decode_ticks: i64,
    /// Composition offset, ticks.
    pub cts: i64,
    pub duration: u32,
    pub sync: bool,
    /// When the frame is shown on the stream timeline, µs since the epoch (see the module doc).
    pub display_us: i64,
}

/// The video samples of one segment (a keyframe fragment and the fragments after it up to the
/// next keyframe fragment), in decode order.
#[derive(Debug, Clone)]
pub struct Gop {
    pub samples: Vec<Sample>,
}

impl Gop {
    /// Parses the video track's samples out of `fragments` (each one stored `moof`+`mdat`),
    /// with display times from the fragments' own `tfdt`s.
    pub fn parse(track: &VideoTrack, fragments: &[&[u8]]) -> Result<Gop> {
        Self::parse_anchored(track, fragments, None)
    }

    /// [`Gop::parse`] with display times counted from each fragment's producer time in the
    /// index (`starts_us`, one per fragment) rather than from its `tfdt`: the `tfdt` holds that
    /// time rounded to the track's timescale, and a frame time should match the index exactly.
    pub fn parse_anchored(
        track: &VideoTrack,
        fragments: &[&[u8]],
        starts_us: Option<&[i64]>,
    ) -> Result<Gop> {
        let mut samples = Vec::new();
        // Decode time of each fragment's first video sample, ticks.
        let mut firsts: Vec<Option<i64>> = Vec::with_capacity(fragments.len());
        for (index, fragment) in fragments.iter().enumerate() {
            let before = samples.len();
            parse_fragment(track, index, fragment, &mut samples)?;
            firsts.push(samples.get(before).map(|s: &Sample| s.decode_ticks));
        }
        // The encoder's constant delay (module doc): how much later than the first decode time
        // the first picture is shown.
        let first_decode = samples.first().map_or(0, |s| i128::from(s.decode_ticks));
        let first_shown = samples
            .iter()
            .map(|s| i128::from(s.decode_ticks) + i128::from(s.cts))
            .min()
            .unwrap_or(0);
        let shift = first_shown - first_decode;
        for s in &mut samples {
            let first = i128::from(firsts[s.fragment].unwrap_or(s.decode_ticks));
            let ticks = i128::from(s.decode_ticks) + i128::from(s.cts) - shift - first;
            let anchor_us = match starts_us.and_then(|a| a.get(s.fragment)) {
                Some(&us) => us,
                None => ticks_to_us(first, track.timescale),
            };
            s.display_us = anchor_us.saturating_add(ticks_to_us(ticks, track.timescale));
        }
        Ok(Gop { samples })
    }

    /// Whether sample `i` is a leading picture: shown before the GOP's keyframe (its first
    /// sample), so it needs the previous GOP to decode.
    pub fn leading(&self, i: usize) -> bool {
        match (self.samples.first(), self.samples.get(i)) {
            (Some(key), Some(s)) => s.display_us < key.display_us,
            _ => false,
        }
    }

    /// Sample indexes in display order (ties keep decode order).
    pub fn display_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        order.sort_by_key(|&i| (self.samples[i].display_us, i));
        order
    }

    /// The sample shown at `t_us`: the one with the latest display time at or before it.
    pub fn sample_at(&self, t_us: i64) -> Option<usize> {
        self.samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.display_us <= t_us)
            .max_by_key(|(i, s)| (s.display_us, *i))
            .map(|(i, _)| i)
    }
}

fn ticks_to_us(ticks: i128, timescale: u32) -> i64 {
    let ts = i128::from(timescale.max(1));
    let us = (ticks * 1_000_000).div_euclid(ts)
        + i128::from((ticks * 1_000_000).rem_euclid(ts) * 2 >= ts);
    i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX })
}

fn malformed(what: impl std::fmt::Display) -> Error {
    Error::internal(format!("a stored fragment cannot be read: {what}"))
}

fn parse_fragment(
    track: &VideoTrack,
    index: usize,
    fragment: &[u8],
    out: &mut Vec<Sample>,
) -> Result<()> {
    let top = boxes(fragment, 0..fragment.len())?;
    let moof = top
        .iter()
        .find(|b| &b.kind == b"moof")
        .ok_or_else(|| malformed("no moof box"))?;
    let mdat = top
        .iter()
        .find(|b| &b.kind == b"mdat")
        .ok_or_else(|| malformed("no mdat box"))?;
    let mdat_payload = mdat.body.clone();
    let mut prev_traf_end = moof.range.start as u64;
    for traf in boxes(fragment, moof.body.clone())?
        .iter()
        .filter(|b| &b.kind == b"traf")
    {
        let kids = boxes(fragment, traf.body.clone())?;
        let tfhd = kids
            .iter()
            .find(|b| &b.kind == b"tfhd")
            .ok_or_else(|| malformed("a traf without tfhd"))?;
        let tfhd = Tfhd::decode(&mut &fragment[tfhd.range.clone()]).map_err(malformed)?;
        let base = if let Some(abs) = tfhd.base_data_offset {
            // Ingest stores fragments as sent; an absolute offset counted from the producer's
            // stream start cannot be resolved here.
            if tfhd.track_id == track.track_id {
                return Err(Error::new(
                    Kind::UnsupportedMedia,
                    format!("a stored fragment uses an absolute base_data_offset ({abs})"),
                ));
            }
            continue;
        } else if tfhd.default_base_is_moof {
            moof.range.start as u64
        } else {
            prev_traf_end
        };
        let mut next_start = base;
        let mut decode_ticks: Option<i64> = None;
        for kid in &kids {
            match &kid.kind {
                b"tfdt" => {
                    let t = Tfdt::decode(&mut &fragment[kid.range.clone()]).map_err(malformed)?;
                    decode_ticks = Some(
                        i64::try_from(t.base_media_decode_time)
                            .map_err(|_| malformed("tfdt out of range"))?,
                    );
                }
                b"trun" => {
                    let trun =
                        Trun::decode(&mut &fragment[kid.range.clone()]).map_err(malformed)?;
                    let start = match trun.data_offset {
                        Some(off) => u64::try_from(i128::from(base) + i128::from(off))
                            .map_err(|_| malformed("a trun data_offset points before the moof"))?,
                        None => next_start,
                    };
                    let mut pos = start;
                    for e in trun.samples.iter() {
                        let size = e
                            .size
                            .or(tfhd.default_sample_size)
                            .unwrap_or(track.default_sample_size);
                        let end = pos + u64::from(size);
                        if tfhd.track_id == track.track_id {
                            if pos < mdat_payload.start as u64 || end > mdat_payload.end as u64 {
                                return Err(malformed(format!(
                                    "a sample at bytes {pos}..{end} lies outside the mdat payload"
                                )));
                            }
                            let ticks = decode_ticks
                                .ok_or_else(|| malformed("a video traf without tfdt"))?;
                            let duration = e
                                .duration
                                .or(tfhd.default_sample_duration)
                                .unwrap_or(track.default_sample_duration);
                            let flags = e
                                .flags
                                .or(tfhd.default_sample_flags)
                                .unwrap_or(track.default_sample_flags);
                            out.push(Sample {
                                fragment: index,
                                range: pos as usize..end as usize,
                                decode_ticks: ticks,
                                cts: e.cts.unwrap_or(0),
                                duration,
                                sync: flags & NON_SYNC_SAMPLE == 0,
                                display_us: 0,
                            });
                            decode_ticks = Some(ticks + i64::from(duration));
                        }
                        pos = end;
                    }
                    next_start = pos;
                }
                _ => {}
            }
        }
        prev_traf_end = next_start;
    }
    Ok(())
}

/// A box inside a buffer: its whole byte range and its body's.
#[derive(Debug, Clone)]
struct BoxAt {
    kind: [u8; 4],
    range: Range<usize>,
    body: Range<usize>,
}

/// The boxes that tile `within` of `buf`.
fn boxes(buf: &[u8], within: Range<usize>) -> Result<Vec<BoxAt>> {
    let mut out = Vec::new();
    let mut pos = within.start;
    while pos < within.end {
        let header = buf
            .get(pos..pos + 8)
            .filter(|_| pos + 8 <= within.end)
            .ok_or_else(|| malformed(format!("a box header at byte {pos} is cut short")))?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = [header[4], header[5], header[6], header[7]];
        let (size, header_len) = match size32 {
            0 => ((within.end - pos) as u64, 8),
            1 => {
                let large = buf
                    .get(pos + 8..pos + 16)
                    .ok_or_else(|| malformed(format!("a box header at byte {pos} is cut short")))?;
                let mut b = [0u8; 8];
                b.copy_from_slice(large);
                (u64::from_be_bytes(b), 16)
            }
            s => (u64::from(s), 8),
        };
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| pos.checked_add(s))
            .filter(|&e| size >= header_len as u64 && e <= within.end)
            .ok_or_else(|| malformed(format!("a box at byte {pos} has a bad size {size}")))?;
        out.push(BoxAt {
            kind,
            range: pos..end,
            body: pos + header_len..end,
        });
        pos = end;
    }
    Ok(out)
}

/// The byte range of the first top-level box of this type.
fn find_box(buf: &[u8], kind: &[u8; 4]) -> Option<Range<usize>> {
    boxes(buf, 0..buf.len())
        .ok()?
        .into_iter()
        .find(|b| &b.kind == kind)
        .map(|b| b.range)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fmp4::{Event, Splitter};

    /// (init, fragments) of a sample file, split as ingest splits it.
    pub(crate) fn split_sample(name: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("samples")
            .join(name);
        let bytes = std::fs::read(path).unwrap();
        let mut splitter = Splitter::new(u64::MAX);
        let mut init = None;
        let mut fragments = Vec::new();
        let mut events = Vec::new();
        splitter.push(&bytes, &mut events).unwrap();
        for event in events {
            match event {
                Event::Init { bytes, .. } => init = Some(bytes.to_vec()),
                Event::Fragment(f) => fragments.push(f.bytes.to_vec()),
            }
        }
        (init.expect("init"), fragments)
    }

    /// One H.264 GOP of a sample file, as the frame decoder sees it.
    pub(crate) struct H264Gop {
        pub track: VideoTrack,
        pub fragment: Vec<u8>,
        pub gop: Gop,
        pub parameter_sets: Vec<Vec<u8>>,
        pub length_size: u8,
        /// Each sample's bytes, decode order.
        pub samples: Vec<Vec<u8>>,
        /// Display rank of each sample.
        pub rank: Vec<usize>,
    }

    /// GOP `fragment` (one keyframe fragment) of the H.264 sample file `name`.
    pub(crate) fn h264_gop(name: &str, fragment: usize) -> H264Gop {
        let (init, fragments) = split_sample(name);
        let track = VideoTrack::from_init(&init).unwrap();
        let fragment = fragments[fragment].clone();
        let gop = Gop::parse(&track, &[&fragment]).unwrap();
        let VideoCodec::H264 {
            length_size,
            parameter_sets,
            ..
        } = &track.codec
        else {
            panic!("{name} is not H.264")
        };
        let samples = gop
            .samples
            .iter()
            .map(|s| fragment[s.range.clone()].to_vec())
            .collect();
        let mut rank = vec![0; gop.samples.len()];
        for (r, &i) in gop.display_order().iter().enumerate() {
            rank[i] = r;
        }
        H264Gop {
            parameter_sets: parameter_sets.clone(),
            length_size: *length_size,
            track,
            fragment,
            gop,
            samples,
            rank,
        }
    }

    #[test]
    fn h264_gop_samples_and_display_times() {
        let (init, fragments) = split_sample("h264_aac_gop2s.mp4");
        let track = VideoTrack::from_init(&init).unwrap();
        assert_eq!(track.timescale, 12800);
        assert!(track.codec.openh264_can_decode(), "{:?}", track.codec);
        let gop = Gop::parse(&track, &[&fragments[1]]).unwrap();
        assert_eq!(gop.samples.len(), 50);
        assert!(gop.samples[0].sync);
        assert!(gop.samples[1..].iter().all(|s| !s.sync));
        // 25 fps: display times are the keyframe's decode time plus n × 40 ms, each once.
        let t0 = gop.samples[0].display_us;
        assert_eq!(t0, 2_000_000, "fragment 2 starts 2 s into the file");
        let mut shown: Vec<i64> = gop.samples.iter().map(|s| s.display_us - t0).collect();
        shown.sort();
        assert_eq!(shown, (0..50).map(|n| n * 40_000).collect::<Vec<_>>());
        let order = gop.display_order();
        assert_eq!(order[0], 0);
        assert_eq!(gop.sample_at(t0 + 1_520_000), Some(order[38]));
        assert_eq!(gop.sample_at(t0 + 1_559_999), Some(order[38]));
        assert_eq!(gop.sample_at(t0 - 1), None);
        // Sample bytes are length-prefixed NAL units that exactly fill each sample.
        for s in &gop.samples {
            let bytes = &fragments[1][s.range.clone()];
            let mut pos = 0;
            while pos < bytes.len() {
                let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
                pos += 4 + len;
            }
            assert_eq!(pos, bytes.len());
        }
    }

    #[test]
    fn audio_only_and_hevc_tracks() {
        let (init, _) = split_sample("aac_only.mp4");
        let e = VideoTrack::from_init(&init).unwrap_err();
        assert_eq!(e.kind, Kind::UnsupportedMedia);
        assert!(e.message.contains("no video track"), "{}", e.message);
        let (init, fragments) = split_sample("h265_aac.mp4");
        let track = VideoTrack::from_init(&init).unwrap();
        assert_eq!(track.codec, VideoCodec::H265);
        assert!(!track.codec.openh264_can_decode());
        // Open GOPs: the second keyframe (a CRA) is followed by a picture shown before it.
        let gop = Gop::parse(&track, &[&fragments[0]]).unwrap();
        assert_eq!(gop.samples.len(), 49);
        assert_eq!(gop.samples[0].display_us, 0);
        assert!((0..49).all(|i| !gop.leading(i)));
        let gop = Gop::parse(&track, &[&fragments[1]]).unwrap();
        assert!(!gop.leading(0) && gop.leading(1) && !gop.leading(2));
        let t0 = 1_960_000; // the second fragment's decode start: 49 frames in
        assert_eq!(gop.samples[1].display_us, t0);
        assert_eq!(gop.samples[0].display_us, t0 + 40_000);
        assert_eq!(gop.sample_at(t0 + 39_999), Some(1));
        // Parsed together, the two GOPs share one timeline: 99 pictures 40 ms apart (the 100th
        // leads the third GOP).
        let both = Gop::parse(&track, &[&fragments[0], &fragments[1]]).unwrap();
        let mut shown: Vec<i64> = both.samples.iter().map(|s| s.display_us).collect();
        shown.sort();
        assert_eq!(shown, (0..99).map(|n| n * 40_000).collect::<Vec<_>>());
    }

    #[test]
    fn cmaf_chunks_continue_the_gop() {
        let (init, fragments) = split_sample("h264_cmaf_chunks.mp4");
        let track = VideoTrack::from_init(&init).unwrap();
        let refs: Vec<&[u8]> = fragments[..4].iter().map(|f| f.as_slice()).collect();
        let gop = Gop::parse(&track, &refs).unwrap();
        assert_eq!(gop.samples.len(), 50);
        assert_eq!(gop.samples.iter().filter(|s| s.sync).count(), 1);
        assert_eq!(gop.samples.last().unwrap().fragment, 3);
        let mut shown: Vec<i64> = gop.samples.iter().map(|s| s.display_us).collect();
        shown.sort();
        shown.dedup();
        assert_eq!(shown.len(), 50);
    }

    #[test]
    fn display_times_follow_the_index() {
        let (init, fragments) = split_sample("h264_aac_gop2s.mp4");
        let track = VideoTrack::from_init(&init).unwrap();
        let refs = [fragments[1].as_slice(), fragments[2].as_slice()];
        let gop = Gop::parse_anchored(&track, &refs, Some(&[7_000_013, 9_000_013])).unwrap();
        assert_eq!(gop.samples[0].display_us, 7_000_013);
        assert_eq!(gop.samples[50].display_us, 9_000_013);
        let mut shown: Vec<i64> = gop.samples.iter().map(|s| s.display_us).collect();
        shown.sort();
        assert_eq!(shown[38], 7_000_013 + 38 * 40_000);
    }

    #[test]
    fn rounding_of_negative_and_positive_ticks() {
        assert_eq!(ticks_to_us(1, 3), 333_333);
        assert_eq!(ticks_to_us(2, 3), 666_667);
        assert_eq!(ticks_to_us(-1, 3), -333_333);
        assert_eq!(ticks_to_us(-512, 12800), -40_000);
    }

    #[test]
    fn truncated_fragment_is_an_error() {
        let (init, fragments) = split_sample("h264_aac_gop2s.mp4");
        let track = VideoTrack::from_init(&init).unwrap();
        let cut = &fragments[0][..fragments[0].len() - 100];
        assert!(Gop::parse(&track, &[cut]).is_err());
    }
}
