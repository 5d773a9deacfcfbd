//! Samples to fragmented MP4: what a pulled source (an RTSP camera) turns its frames into, so
//! they take the same ingest path as an HTTP upload (DESIGN.md, "source"). Pure: samples in,
//! bytes out; no clock, no I/O.
//!
//! - [`init_segment`] writes `ftyp`+`moov` for a set of tracks (sample entries given as
//!   `mp4-atom` codecs, e.g. decoded from the boxes the RTSP client builds).
//! - [`Fragmenter`] collects samples per track and cuts a `moof`+`mdat` at each video keyframe
//!   (one fragment per GOP), or also every `chunk_ticks` of video (CMAF chunks, so LL-HLS has
//!   parts). A sample's duration is known only when the next one of its track arrives (RTP
//!   carries no durations), unless the codec fixes it (AAC: 1024 samples).
//! - [`Fragment::encode`] writes it, with an optional `prft` carrying the producer's wall clock.

use super::Fmp4Error;
use bytes::Bytes;
use mp4_atom::{Encode, FourCC};

/// Sample flags (ISO/IEC 14496-12 8.8.3.1): a sync sample that depends on no other.
const FLAGS_SYNC: u32 = 0x0200_0000;
/// A sample that depends on others and is not a sync sample (`sample_is_non_sync_sample`).
const FLAGS_NON_SYNC: u32 = 0x0101_0000;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_TO_UNIX_SECS: i64 = 2_208_988_800;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxKind {
    Video { width: u16, height: u16 },
    Audio,
}

/// One track of the init segment.
#[derive(Debug, Clone)]
pub struct MuxTrack {
    pub track_id: u32,
    pub kind: MuxKind,
    /// Ticks per second of the track's media time (the RTP clock rate, e.g. 90000 for video).
    pub timescale: u32,
    pub codec: mp4_atom::Codec,
}

/// `ftyp`+`moov` for `tracks` (ids must be distinct and non-zero).
pub fn init_segment(tracks: &[MuxTrack]) -> Result<Vec<u8>, Fmp4Error> {
    if tracks.is_empty() {
        return Err(Fmp4Error::Unsupported(
            "an init needs at least one track".into(),
        ));
    }
    let ftyp = mp4_atom::Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![
            FourCC::new(b"iso6"),
            FourCC::new(b"cmfc"),
            FourCC::new(b"mp41"),
        ],
    };
    let trak = tracks.iter().map(trak).collect();
    let moov = mp4_atom::Moov {
        mvhd: mp4_atom::Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            matrix: unity_matrix(),
            next_track_id: tracks.iter().map(|t| t.track_id).max().unwrap_or(0) + 1,
            ..Default::default()
        },
        mvex: Some(mp4_atom::Mvex {
            mehd: None,
            trex: tracks
                .iter()
                .map(|t| mp4_atom::Trex {
                    track_id: t.track_id,
                    default_sample_description_index: 1,
                    default_sample_duration: 0,
                    default_sample_size: 0,
                    default_sample_flags: 0,
                })
                .collect(),
        }),
        trak,
        ..Default::default()
    };
    let mut out = Vec::new();
    ftyp.encode(&mut out).map_err(encode_error)?;
    moov.encode(&mut out).map_err(encode_error)?;
    Ok(out)
}

fn encode_error(e: mp4_atom::Error) -> Fmp4Error {
    Fmp4Error::Unsupported(format!("cannot encode the MP4 boxes: {e}"))
}

fn unity_matrix() -> mp4_atom::Matrix {
    mp4_atom::Matrix {
        a: 0x0001_0000,
        b: 0,
        u: 0,
        c: 0,
        d: 0x0001_0000,
        v: 0,
        x: 0,
        y: 0,
        w: 0x4000_0000,
    }
}

fn trak(t: &MuxTrack) -> mp4_atom::Trak {
    let (handler, width, height, vmhd, smhd) = match t.kind {
        MuxKind::Video { width, height } => (
            b"vide",
            width,
            height,
            Some(mp4_atom::Vmhd::default()),
            None,
        ),
        MuxKind::Audio => (b"soun", 0, 0, None, Some(mp4_atom::Smhd::default())),
    };
    mp4_atom::Trak {
        tkhd: mp4_atom::Tkhd {
            track_id: t.track_id,
            enabled: true,
            in_movie: true,
            alternate_group: u16::from(matches!(t.kind, MuxKind::Audio)),
            volume: u8::from(matches!(t.kind, MuxKind::Audio)).into(),
            matrix: unity_matrix(),
            width: width.into(),
            height: height.into(),
            ..Default::default()
        },
        mdia: mp4_atom::Mdia {
            mdhd: mp4_atom::Mdhd {
                timescale: t.timescale,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: mp4_atom::Hdlr {
                handler: FourCC::new(handler),
                name: "tapedeck".into(),
            },
            minf: mp4_atom::Minf {
                vmhd,
                smhd,
                dinf: mp4_atom::Dinf {
                    dref: mp4_atom::Dref {
                        entries: vec![mp4_atom::Url::default().into()],
                    },
                },
                stbl: mp4_atom::Stbl {
                    stsd: mp4_atom::Stsd {
                        codecs: vec![t.codec.clone()],
                    },
                    stco: Some(mp4_atom::Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

/// One sample as the source delivers it.
#[derive(Debug, Clone)]
pub struct MuxSample {
    /// Decode time in the track's timescale, on a timeline shared by all tracks of the source.
    pub decode_time: u64,
    /// Known when the codec fixes it (AAC frames); otherwise the time to the track's next sample.
    pub duration: Option<u32>,
    pub keyframe: bool,
    pub data: Bytes,
}

#[derive(Debug, Clone)]
struct ReadySample {
    decode_time: u64,
    duration: u32,
    keyframe: bool,
    data: Bytes,
}

#[derive(Debug)]
struct TrackBuf {
    track_id: u32,
    timescale: u32,
    video: bool,
    pending: Option<MuxSample>,
    ready: Vec<ReadySample>,
    /// The last known duration: the guess for a sample whose successor never came.
    last_duration: u32,
}

impl TrackBuf {
    fn finish_pending(&mut self, next_decode_time: u64) {
        if let Some(p) = self.pending.take() {
            let d = next_decode_time.saturating_sub(p.decode_time);
            let duration = u32::try_from(d).unwrap_or(u32::MAX).max(1);
            self.last_duration = duration;
            self.ready.push(ReadySample {
                decode_time: p.decode_time,
                duration,
                keyframe: p.keyframe,
                data: p.data,
            });
        }
    }

    fn ticks_to_us(&self, ticks: u64) -> i128 {
        i128::from(ticks) * 1_000_000 / i128::from(self.timescale.max(1))
    }
}

/// One track's samples in a cut fragment.
#[derive(Debug, Clone)]
pub struct FragmentRun {
    pub track_id: u32,
    pub timescale: u32,
    pub base_decode_time: u64,
    samples: Vec<ReadySample>,
}

impl FragmentRun {
    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }

    pub fn duration_ticks(&self) -> u64 {
        self.samples.iter().map(|s| u64::from(s.duration)).sum()
    }
}

/// A fragment ready to encode: its runs, in track order.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub sequence_number: u32,
    pub runs: Vec<FragmentRun>,
    /// Starts with a video keyframe (or holds no video).
    pub keyframe: bool,
}

impl Fragment {
    /// The run whose clock the fragment's time is measured in: the video, else the first.
    pub fn reference_run(&self) -> Option<&FragmentRun> {
        self.runs.first()
    }

    pub fn size_bytes(&self) -> usize {
        self.runs
            .iter()
            .flat_map(|r| r.samples.iter())
            .map(|s| s.data.len())
            .sum()
    }

    /// `prft` (when `wall_clock_us` says when the reference run's first sample was captured,
    /// in µs since the Unix epoch) + `moof` + `mdat`.
    pub fn encode(&self, wall_clock_us: Option<i64>) -> Result<Vec<u8>, Fmp4Error> {
        let mut out = Vec::new();
        if let (Some(us), Some(run)) = (wall_clock_us, self.reference_run()) {
            let prft = mp4_atom::Prft {
                reference_track_id: run.track_id,
                ntp_timestamp: unix_us_to_ntp(us),
                media_time: run.base_decode_time,
                utc_time_semantics: mp4_atom::ReferenceTime::Input,
            };
            prft.encode(&mut out).map_err(encode_error)?;
        }
        // The data offsets depend on the moof's size, which does not depend on them (fixed
        // width fields): encode once to measure, then for real.
        let moof_len = self.moof(0).and_then(|m| {
            let mut v = Vec::new();
            m.encode(&mut v).map(|_| v.len())
        });
        let moof_len = moof_len.map_err(encode_error)?;
        self.moof(moof_len)
            .and_then(|m| m.encode(&mut out))
            .map_err(encode_error)?;
        let payload: usize = self.size_bytes();
        let mdat_len = u32::try_from(payload + 8)
            .map_err(|_| Fmp4Error::Unsupported("fragment larger than 4 GiB".into()))?;
        out.reserve(payload + 8);
        out.extend_from_slice(&mdat_len.to_be_bytes());
        out.extend_from_slice(b"mdat");
        for s in self.runs.iter().flat_map(|r| r.samples.iter()) {
            out.extend_from_slice(&s.data);
        }
        Ok(out)
    }

    fn moof(&self, moof_len: usize) -> Result<mp4_atom::Moof, mp4_atom::Error> {
        let mut data_pos = moof_len + 8;
        let mut traf = Vec::with_capacity(self.runs.len());
        for run in &self.runs {
            let entries = run
                .samples
                .iter()
                .map(|s| mp4_atom::TrunEntry {
                    duration: Some(s.duration),
                    size: Some(s.data.len() as u32),
                    flags: Some(if s.keyframe {
                        FLAGS_SYNC
                    } else {
                        FLAGS_NON_SYNC
                    }),
                    cts: None,
                })
                .collect();
            traf.push(mp4_atom::Traf {
                tfhd: mp4_atom::Tfhd {
                    track_id: run.track_id,
                    default_base_is_moof: true,
                    ..Default::default()
                },
                tfdt: Some(mp4_atom::Tfdt {
                    base_media_decode_time: run.base_decode_time,
                }),
                trun: vec![mp4_atom::Trun {
                    data_offset: Some(i32::try_from(data_pos).unwrap_or(i32::MAX)),
                    samples: mp4_atom::TrunSamples::Explicit(entries),
                }],
                ..Default::default()
            });
            data_pos += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
        }
        Ok(mp4_atom::Moof {
            mfhd: mp4_atom::Mfhd {
                sequence_number: self.sequence_number,
            },
            traf,
        })
    }
}

/// µs since the Unix epoch to NTP 32.32 fixed point.
pub fn unix_us_to_ntp(us: i64) -> u64 {
    let secs = us.div_euclid(1_000_000) + NTP_TO_UNIX_SECS;
    // Rounded up, so that converting back (which rounds down) gives the same µs.
    let frac = ((us.rem_euclid(1_000_000) as u64) << 32).div_ceil(1_000_000);
    ((secs.max(0) as u64) << 32) | frac
}

/// NTP 32.32 fixed point (as RTCP sender reports carry it) to µs since the Unix epoch.
pub fn ntp_to_unix_us(ntp: u64) -> i64 {
    super::prft::ntp_to_unix_us(ntp)
}

/// Cuts fragments from samples (see the module doc). Tracks are given by index into the
/// `MuxTrack` list it was made with.
#[derive(Debug)]
pub struct Fragmenter {
    tracks: Vec<TrackBuf>,
    /// Index of the video track, when there is one: it decides where fragments start.
    video: Option<usize>,
    /// CMAF chunk length in the video track's ticks; `None`: one fragment per GOP.
    chunk_ticks: Option<u64>,
    /// Without video: fragment length in the first track's ticks.
    audio_fragment_ticks: u64,
    /// The first video keyframe arrived (before it, everything is dropped: a fragment must
    /// start with one, and audio from before it would have no picture).
    started: bool,
    /// Decode time of the current fragment's first sample, in the reference track's ticks.
    fragment_start: Option<u64>,
    next_sequence: u32,
}

impl Fragmenter {
    /// `chunk_us`: CMAF chunk length (LL-HLS parts), `None` for one fragment per GOP.
    pub fn new(tracks: &[MuxTrack], chunk_us: Option<u64>) -> Fragmenter {
        let bufs: Vec<TrackBuf> = tracks
            .iter()
            .map(|t| TrackBuf {
                track_id: t.track_id,
                timescale: t.timescale,
                video: matches!(t.kind, MuxKind::Video { .. }),
                pending: None,
                ready: Vec::new(),
                last_duration: 1,
            })
            .collect();
        let video = bufs.iter().position(|t| t.video);
        let ref_scale = video
            .or(if bufs.is_empty() { None } else { Some(0) })
            .map_or(90_000, |i| u64::from(bufs[i].timescale));
        let to_ticks = |us: u64| us.saturating_mul(ref_scale) / 1_000_000;
        Fragmenter {
            chunk_ticks: chunk_us.map(to_ticks).filter(|t| *t > 0),
            audio_fragment_ticks: to_ticks(chunk_us.unwrap_or(1_000_000)).max(1),
            tracks: bufs,
            video,
            started: false,
            fragment_start: None,
            next_sequence: 1,
        }
    }

    /// Whether the first keyframe arrived (samples before it are dropped).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Adds a sample of track `index`; returns the fragment it completes, if any.
    pub fn push(&mut self, index: usize, sample: MuxSample) -> Option<Fragment> {
        if index >= self.tracks.len() {
            return None;
        }
        match self.video {
            Some(v) if v == index => self.push_video(index, sample),
            Some(_) => {
                if self.started {
                    self.push_plain(index, sample);
                }
                None
            }
            None => {
                self.started = true;
                self.push_plain(index, sample);
                let t = &self.tracks[0];
                let start = *self
                    .fragment_start
                    .get_or_insert(t.ready.first().map_or(0, |s| s.decode_time));
                let end = t
                    .ready
                    .last()
                    .map(|s| s.decode_time + u64::from(s.duration));
                match end {
                    Some(end) if end.saturating_sub(start) >= self.audio_fragment_ticks => {
                        self.fragment_start = Some(end);
                        self.cut(None)
                    }
                    _ => None,
                }
            }
        }
    }

    fn push_plain(&mut self, index: usize, sample: MuxSample) {
        let t = &mut self.tracks[index];
        t.finish_pending(sample.decode_time);
        match sample.duration {
            Some(d) => {
                t.last_duration = d.max(1);
                t.ready.push(ReadySample {
                    decode_time: sample.decode_time,
                    duration: d.max(1),
                    keyframe: true,
                    data: sample.data,
                })
            }
            None => t.pending = Some(sample),
        }
    }

    fn push_video(&mut self, index: usize, sample: MuxSample) -> Option<Fragment> {
        if !self.started {
            if !sample.keyframe {
                return None;
            }
            self.started = true;
            self.fragment_start = Some(sample.decode_time);
            self.tracks[index].pending = Some(sample);
            return None;
        }
        let t = &mut self.tracks[index];
        t.finish_pending(sample.decode_time);
        let start = self.fragment_start.unwrap_or(sample.decode_time);
        let chunk_due = self
            .chunk_ticks
            .is_some_and(|c| sample.decode_time.saturating_sub(start) >= c);
        let out = if (sample.keyframe || chunk_due) && !t.ready.is_empty() {
            let cut_us = t.ticks_to_us(sample.decode_time);
            self.fragment_start = Some(sample.decode_time);
            self.cut(Some(cut_us))
        } else {
            None
        };
        self.tracks[index].pending = Some(sample);
        out
    }

    /// A fragment of every ready sample (other tracks': those that start before `cut_us`).
    fn cut(&mut self, cut_us: Option<i128>) -> Option<Fragment> {
        let mut runs = Vec::new();
        let order: Vec<usize> = self
            .video
            .into_iter()
            .chain((0..self.tracks.len()).filter(|i| Some(*i) != self.video))
            .collect();
        for i in order {
            let t = &mut self.tracks[i];
            let take = match cut_us {
                Some(cut) if !t.video => t
                    .ready
                    .iter()
                    .take_while(|s| {
                        i128::from(s.decode_time) * 1_000_000 / i128::from(t.timescale.max(1)) < cut
                    })
                    .count(),
                _ => t.ready.len(),
            };
            if take == 0 {
                continue;
            }
            let samples: Vec<ReadySample> = t.ready.drain(..take).collect();
            runs.push(FragmentRun {
                track_id: t.track_id,
                timescale: t.timescale,
                base_decode_time: samples[0].decode_time,
                samples,
            });
        }
        if runs.is_empty() {
            return None;
        }
        let keyframe = runs[0].samples[0].keyframe || self.video.is_none();
        let sequence_number = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1).max(1);
        Some(Fragment {
            sequence_number,
            runs,
            keyframe,
        })
    }

    /// Everything held, as a last fragment (the last sample of each track gets the duration of
    /// the one before it). Used when the source ends or loses packets.
    pub fn flush(&mut self) -> Option<Fragment> {
        for t in &mut self.tracks {
            if let Some(p) = t.pending.as_ref() {
                let guess = p.decode_time + u64::from(t.last_duration);
                t.finish_pending(guess);
            }
        }
        self.cut(None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{sample, split};
    use super::super::{fragment_facts, Event, InitFacts, TrackKind};
    use super::*;
    use mp4_atom::Decode;

    /// The sample entries of a real file's init (its encoder's avc1/hvc1 and mp4a).
    fn tracks_of(file: &str) -> Vec<MuxTrack> {
        let events = split(&sample(file)).unwrap();
        let Some(Event::Init { bytes, .. }) = events.into_iter().next() else {
            panic!("{file}: no init first");
        };
        let mut buf = &bytes[..];
        let _ftyp = mp4_atom::Ftyp::decode(&mut buf).unwrap();
        let moov = mp4_atom::Moov::decode(&mut buf).unwrap();
        moov.trak
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let codec = t.mdia.minf.stbl.stsd.codecs[0].clone();
                let kind = if t.mdia.hdlr.handler == FourCC::new(b"vide") {
                    MuxKind::Video {
                        width: 640,
                        height: 360,
                    }
                } else {
                    MuxKind::Audio
                };
                MuxTrack {
                    track_id: i as u32 + 1,
                    kind,
                    timescale: t.mdia.mdhd.timescale,
                    codec,
                }
            })
            .collect()
    }

    fn video_sample(t: u64, keyframe: bool) -> MuxSample {
        MuxSample {
            decode_time: t,
            duration: None,
            keyframe,
            data: Bytes::from(vec![0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }]),
        }
    }

    #[test]
    fn init_round_trips_through_init_facts() {
        for file in ["h264_aac_gop2s.mp4", "h265_aac.mp4"] {
            let tracks = tracks_of(file);
            let init = init_segment(&tracks).unwrap();
            let facts = InitFacts::parse(&init).unwrap();
            assert_eq!(facts.tracks.len(), 2, "{file}");
            assert_eq!(facts.tracks[0].kind, TrackKind::Video, "{file}");
            assert_eq!(facts.tracks[1].kind, TrackKind::Audio, "{file}");
            assert_eq!(facts.tracks[0].timescale, tracks[0].timescale);
            // The whole thing splits as an init too.
            let events = split(&init).unwrap();
            assert!(matches!(events[..], [Event::Init { .. }]), "{file}");
        }
    }

    #[test]
    fn one_fragment_per_gop_with_audio_before_the_cut() {
        let tracks = tracks_of("h264_aac_gop2s.mp4");
        let mut f = Fragmenter::new(&tracks, None);
        let vs = tracks[0].timescale as u64;
        let audio = |t: u64| MuxSample {
            decode_time: t,
            duration: Some(1024),
            keyframe: true,
            data: Bytes::from_static(&[1, 2, 3]),
        };
        // Before the first keyframe: dropped.
        assert!(f.push(0, video_sample(0, false)).is_none());
        assert!(f.push(1, audio(0)).is_none());
        let mut out = Vec::new();
        for i in 0..100u64 {
            // 25 fps, keyframe every 50 frames (2 s), from t = 1 s.
            let t = vs + i * vs / 25;
            out.extend(f.push(0, video_sample(t, i % 50 == 0)));
            let a = tracks[1].timescale as u64;
            // Audio from 1 s on, about two frames per video frame.
            for k in 0..2 {
                out.extend(f.push(1, audio(a + (i * 2 + k) * 1024)));
            }
        }
        out.extend(f.flush());
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|fr| fr.keyframe));
        assert_eq!(out[0].runs[0].sample_count(), 50);
        assert_eq!(out[0].runs[0].base_decode_time, vs);
        assert_eq!(out[0].runs[0].duration_ticks(), 2 * vs);
        assert_eq!(out[1].runs[0].sample_count(), 50);
        // Each fragment's bytes are what the ingest path reads back.
        let init_bytes = init_segment(&tracks).unwrap();
        let init = InitFacts::parse(&init_bytes).unwrap();
        for fr in &out {
            let mut bytes = init_bytes.clone();
            bytes.extend(fr.encode(Some(1_764_000_000_000_000)).unwrap());
            let events = split(&bytes).unwrap();
            let Some(Event::Fragment(raw)) = events.into_iter().nth(1) else {
                panic!("not a fragment");
            };
            let prft = raw.prft.unwrap();
            assert_eq!(prft.utc_time_us, 1_764_000_000_000_000);
            assert_eq!(prft.media_time, fr.runs[0].base_decode_time);
            let facts = fragment_facts(&init, &raw.bytes).unwrap();
            assert!(facts.starts_with_keyframe);
            assert_eq!(facts.tracks.len(), 2);
            assert_eq!(facts.tracks[0].sample_count, 50);
            assert!(facts.tracks[1].sample_count > 0);
        }
    }

    #[test]
    fn cmaf_chunks_cut_between_keyframes() {
        let tracks = tracks_of("h264_aac_gop2s.mp4");
        let mut f = Fragmenter::new(&tracks[..1], Some(500_000));
        let vs = tracks[0].timescale as u64;
        let mut out = Vec::new();
        for i in 0..101u64 {
            out.extend(f.push(0, video_sample(i * vs / 25, i % 50 == 0)));
        }
        // 4 s of video in chunks of about 0.5 s; a keyframe always starts a new one.
        assert!((7..=9).contains(&out.len()), "{} chunks", out.len());
        assert_eq!(out.iter().filter(|f| f.keyframe).count(), 2);
        let starts: Vec<u64> = out.iter().map(|f| f.runs[0].base_decode_time).collect();
        assert!(starts.contains(&0) && starts.contains(&(2 * vs)));
        assert!(out.iter().all(|f| f.runs[0].sample_count() <= 13));
    }

    #[test]
    fn ntp_conversion_round_trips() {
        let us = 1_764_000_000_123_456;
        assert_eq!(super::super::prft::ntp_to_unix_us(unix_us_to_ntp(us)), us);
    }
}
