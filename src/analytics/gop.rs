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

use mp4_atom::Codec;
use std::ops::Range;

use crate::error::{Error, Kind, Result};
use crate::fmp4::{decode_moov, ticks_to_us, FragmentLayout, InitFacts};

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
    /// The init's tracks, which the fragment reader resolves sample defaults (`trex`) from.
    init: InitFacts,
}

impl VideoTrack {
    /// The video track of an init segment. A stream without one is unsupported media (there is
    /// nothing to take a picture of); the message names the codecs it does have.
    pub fn from_init(init: &[u8]) -> Result<VideoTrack> {
        let moov = decode_moov(init)?;
        let facts = InitFacts::from_moov(&moov)?;
        let Some(track) = facts.video_track() else {
            return Err(Error::new(
                Kind::UnsupportedMedia,
                format!(
                    "this stream has no video track (codecs: {}), so it has no frames",
                    facts.codecs()
                ),
            ));
        };
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
            init: facts,
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

fn malformed(what: impl std::fmt::Display) -> Error {
    Error::internal(format!("a stored fragment cannot be read: {what}"))
}

fn parse_fragment(
    track: &VideoTrack,
    index: usize,
    fragment: &[u8],
    out: &mut Vec<Sample>,
) -> Result<()> {
    let layout = FragmentLayout::parse(&track.init, fragment, None).map_err(malformed)?;
    let payload = layout.payload_start as u64..fragment.len() as u64;
    for traf in layout
        .trafs
        .iter()
        .filter(|t| t.tfhd.track_id == track.track_id)
    {
        // Ingest stores fragments as sent; an absolute offset counted from the producer's
        // stream start cannot be resolved here.
        let absolute = |abs: Option<u64>| {
            let at = abs.map(|a| format!(" ({a})")).unwrap_or_default();
            Error::new(
                Kind::UnsupportedMedia,
                format!("a stored fragment uses an absolute base_data_offset{at}"),
            )
        };
        if let Some(abs) = traf.tfhd.base_data_offset {
            return Err(absolute(Some(abs)));
        }
        let mut decode_ticks = traf
            .tfdt
            .map(|t| i64::try_from(t).map_err(|_| malformed("tfdt out of range")))
            .transpose()?;
        for run in &traf.runs {
            // Only a run after a traf with an absolute offset has no known start.
            let mut pos = run.data_start.ok_or_else(|| absolute(None))?;
            for s in run.samples() {
                let end = pos + u64::from(s.size);
                if pos < payload.start || end > payload.end {
                    return Err(malformed(format!(
                        "a sample at bytes {pos}..{end} lies outside the mdat payload"
                    )));
                }
                let ticks = decode_ticks.ok_or_else(|| malformed("a video traf without tfdt"))?;
                out.push(Sample {
                    fragment: index,
                    range: pos as usize..end as usize,
                    decode_ticks: ticks,
                    cts: s.cts,
                    duration: s.duration,
                    sync: s.is_sync(),
                    display_us: 0,
                });
                decode_ticks = Some(ticks + i64::from(s.duration));
                pos = end;
            }
        }
    }
    Ok(())
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
    fn truncated_fragment_is_an_error() {
        let (init, fragments) = split_sample("h264_aac_gop2s.mp4");
        let track = VideoTrack::from_init(&init).unwrap();
        let cut = &fragments[0][..fragments[0].len() - 100];
        assert!(Gop::parse(&track, &[cut]).is_err());
    }
}
