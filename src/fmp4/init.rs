//! Facts about an init segment (`ftyp`+`moov`): which tracks, their clocks, codecs and the `trex`
//! defaults that fragments fall back to.

use mp4_atom::{Decode, Moov};

use super::boxes::{children, type_name};
use super::codec::{codec_string, nal_length_size};
use super::Fmp4Error;

/// What a track carries, from its `hdlr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
    Other,
}

/// One track of an init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub track_id: u32,
    pub kind: TrackKind,
    /// Ticks per second of the track's media time (`mdhd`); never 0.
    pub timescale: u32,
    /// RFC 6381 codec string, e.g. `avc1.64001e`, `hvc1.1.6.L93.B0`, `mp4a.40.2`.
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u32>,
    /// Defaults from `trex`, used when neither `trun` nor `tfhd` says otherwise.
    pub default_sample_duration: u32,
    pub default_sample_size: u32,
    pub default_sample_flags: u32,
    /// Length prefix size of NAL units in samples (avcC/hvcC), for NAL inspection.
    pub nal_length_size: Option<u8>,
}

/// The tracks of an init segment, in `moov` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitFacts {
    pub tracks: Vec<TrackInfo>,
}

/// The decoded `moov` of `ftyp`+`moov` or a lone `moov` (other top-level boxes are ignored), for
/// readers that need more of it than [`InitFacts`] keeps (the frame service's codec setup).
pub(crate) fn decode_moov(init_bytes: &[u8]) -> Result<Moov, Fmp4Error> {
    let top = children(init_bytes, 0, "init segment")?;
    let moov_box = top.iter().find(|b| &b.box_type == b"moov").ok_or_else(|| {
        let types: Vec<String> = top.iter().map(|b| type_name(&b.box_type)).collect();
        Fmp4Error::Malformed(format!(
            "init segment has no moov box (found: {})",
            types.join(", ")
        ))
    })?;
    let at = moov_box.offset as u64;
    Moov::decode(&mut &moov_box.bytes[..]).map_err(|e| Fmp4Error::decode("moov box", at, e))
}

impl InitFacts {
    /// Parses `ftyp`+`moov` or a lone `moov` (other top-level boxes are ignored).
    pub fn parse(init_bytes: &[u8]) -> Result<InitFacts, Fmp4Error> {
        Self::from_moov(&decode_moov(init_bytes)?)
    }

    /// The facts of a decoded `moov` (see [`decode_moov`]).
    pub(crate) fn from_moov(moov: &Moov) -> Result<InitFacts, Fmp4Error> {
        let Some(mvex) = &moov.mvex else {
            return Err(Fmp4Error::NotFmp4(
                "this is a progressive (non-fragmented) MP4: its moov has no mvex box. Send \
                 fragmented MP4 instead, e.g. with ffmpeg `-movflags frag_keyframe+empty_moov+default_base_moof`"
                    .to_string(),
            ));
        };
        if moov.trak.is_empty() {
            return Err(Fmp4Error::Unsupported(
                "the moov box declares no tracks".to_string(),
            ));
        }
        let mut tracks = Vec::with_capacity(moov.trak.len());
        for trak in &moov.trak {
            let track_id = trak.tkhd.track_id;
            if tracks.iter().any(|t: &TrackInfo| t.track_id == track_id) {
                return Err(Fmp4Error::Malformed(format!(
                    "moov declares track {track_id} twice"
                )));
            }
            let timescale = trak.mdia.mdhd.timescale;
            if timescale == 0 {
                return Err(Fmp4Error::Malformed(format!(
                    "track {track_id} has timescale 0 in its mdhd box; media time would be meaningless"
                )));
            }
            let kind = match trak.mdia.hdlr.handler.as_ref() {
                b"vide" => TrackKind::Video,
                b"soun" => TrackKind::Audio,
                _ => TrackKind::Other,
            };
            let entry = trak.mdia.minf.stbl.stsd.codecs.first().ok_or_else(|| {
                Fmp4Error::Malformed(format!("track {track_id} has no sample entry in stsd"))
            })?;
            let visual = entry.visual();
            let audio = entry.audio();
            let trex = mvex.trex.iter().find(|t| t.track_id == track_id);
            tracks.push(TrackInfo {
                track_id,
                kind,
                timescale,
                codec: codec_string(entry),
                width: visual.map(|v| u32::from(v.width)),
                height: visual.map(|v| u32::from(v.height)),
                sample_rate: audio.map(|a| u32::from(a.sample_rate.integer())),
                channels: audio.map(|a| u32::from(a.channel_count)),
                default_sample_duration: trex.map_or(0, |t| t.default_sample_duration),
                default_sample_size: trex.map_or(0, |t| t.default_sample_size),
                default_sample_flags: trex.map_or(0, |t| t.default_sample_flags),
                nal_length_size: nal_length_size(entry),
            });
        }
        Ok(InitFacts { tracks })
    }

    pub fn track(&self, track_id: u32) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.track_id == track_id)
    }

    pub fn video_track(&self) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.kind == TrackKind::Video)
    }

    /// The track whose clock defines a fragment's time: the first video track, else the first
    /// track. Video, because segments are cut at video keyframes and players seek on video.
    pub fn reference_track(&self) -> Option<&TrackInfo> {
        self.video_track().or_else(|| self.tracks.first())
    }

    /// Comma-joined codec strings, video first (the order players expect in `CODECS`).
    pub fn codecs(&self) -> String {
        let video = self.tracks.iter().filter(|t| t.kind == TrackKind::Video);
        let rest = self.tracks.iter().filter(|t| t.kind != TrackKind::Video);
        video
            .chain(rest)
            .map(|t| t.codec.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}
