//! Facts about one `moof`+`mdat`: sequence number, per-track decode time and duration, sample
//! counts, and whether it starts with a keyframe (so playback can cut segments and parts there).

use super::layout::FragmentLayout;
use super::nal::{is_random_access, NalSyntax};
use super::sample::{FlagSource, NON_SYNC_SAMPLE};
use super::{ticks_to_us, Fmp4Error, InitFacts};

/// One track's share of a fragment (all of its trafs in the moof, merged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRun {
    pub track_id: u32,
    pub timescale: u32,
    /// `tfdt` of the track's first traf; 0 if absent.
    pub base_media_decode_time: u64,
    /// Sum of sample durations, in timescale ticks.
    pub duration: u64,
    pub sample_count: u32,
    pub first_sample_is_sync: bool,
}

/// What ingest and playback need to know about one fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentFacts {
    /// `mfhd` sequence number, as the producer wrote it.
    pub sequence_number: u32,
    /// One entry per track present in the moof, in traf order; never empty.
    pub tracks: Vec<TrackRun>,
    /// A segment may start here: the video track's first sample in the fragment is a sync
    /// sample. In a stream without video every fragment qualifies; in a stream with video, a
    /// fragment without video samples (one moof per track, e.g. `mp4mux`) never does.
    pub starts_with_keyframe: bool,
    pub moof_size: u32,
    /// moof + mdat.
    pub size_bytes: u64,
    /// The track whose clock defines this fragment's time: the init's reference track (the
    /// video, see [`InitFacts::reference_track`]) when the fragment holds samples of it, else its
    /// first track with samples (with one moof per track, an audio fragment's own audio).
    pub reference_track_id: u32,
}

/// Returned by [`FragmentFacts::reference_run`] only for a hand-built `FragmentFacts` without
/// tracks, so that the accessor never panics.
const NO_RUN: TrackRun = TrackRun {
    track_id: 0,
    timescale: 1,
    base_media_decode_time: 0,
    duration: 0,
    sample_count: 0,
    first_sample_is_sync: false,
};

impl FragmentFacts {
    /// The reference track's run.
    pub fn reference_run(&self) -> &TrackRun {
        self.tracks
            .iter()
            .find(|t| t.track_id == self.reference_track_id)
            .or(self.tracks.first())
            .unwrap_or(&NO_RUN)
    }

    /// Whether the fragment holds samples of the init's video track.
    pub fn holds_video(&self, init: &InitFacts) -> bool {
        init.video_track().is_some_and(|v| {
            self.tracks
                .iter()
                .any(|t| t.track_id == v.track_id && t.sample_count > 0)
        })
    }

    /// Reference run's tfdt in microseconds.
    pub fn start_us(&self) -> i64 {
        let r = self.reference_run();
        ticks_to_us(r.base_media_decode_time, r.timescale)
    }

    /// Reference run's duration in microseconds.
    pub fn duration_us(&self) -> i64 {
        let r = self.reference_run();
        ticks_to_us(r.duration, r.timescale)
    }
}

/// Facts of a fragment (exactly one moof followed by its mdat). An absolute `base_data_offset` cannot
/// be resolved without the moof's position in the producer's stream, so for such trafs sample data
/// positions are not checked; use [`fragment_facts_at`] when the position is known.
pub fn fragment_facts(init: &InitFacts, fragment: &[u8]) -> Result<FragmentFacts, Fmp4Error> {
    facts(init, fragment, None)
}

/// Like [`fragment_facts`], for a fragment whose moof started at `moof_stream_offset` in the
/// producer's stream (see `RawFragment::stream_offset`), so every data offset is checked.
pub fn fragment_facts_at(
    init: &InitFacts,
    fragment: &[u8],
    moof_stream_offset: u64,
) -> Result<FragmentFacts, Fmp4Error> {
    facts(init, fragment, Some(moof_stream_offset))
}

/// Where a track's first sample's flags came from, where its data starts (if known) and its size.
type FirstSample = (FlagSource, Option<u64>, u32);

fn facts(
    init: &InitFacts,
    fragment: &[u8],
    moof_stream_offset: Option<u64>,
) -> Result<FragmentFacts, Fmp4Error> {
    let layout = FragmentLayout::parse(init, fragment, moof_stream_offset)?;
    let mut tracks: Vec<TrackRun> = Vec::new();
    // Per track: first sample's flags source and data position, for NAL confirmation.
    let mut firsts: Vec<(u32, Option<FirstSample>)> = Vec::new();
    for traf in &layout.trafs {
        let track_id = traf.tfhd.track_id;
        let Some(info) = init.track(track_id) else {
            continue; // FragmentLayout::parse already refused unknown tracks.
        };
        let count: u64 = traf.runs.iter().map(|r| u64::from(r.sample_count)).sum();
        let duration = traf
            .runs
            .iter()
            .fold(0u64, |acc, r| acc.saturating_add(r.duration));
        let first = traf.runs.iter().find_map(|r| {
            r.first_sample
                .map(|(size, flags, src)| (size, flags, src, r.data_start))
        });
        let too_many = || {
            Fmp4Error::Malformed(format!(
                "track {track_id} has more than 2^32 samples in one moof"
            ))
        };
        if let Some(run) = tracks.iter_mut().find(|t| t.track_id == track_id) {
            run.duration = run.duration.saturating_add(duration);
            run.sample_count =
                u32::try_from(u64::from(run.sample_count) + count).map_err(|_| too_many())?;
            continue;
        }
        tracks.push(TrackRun {
            track_id,
            timescale: info.timescale,
            base_media_decode_time: traf.tfdt.unwrap_or(0),
            duration,
            sample_count: u32::try_from(count).map_err(|_| too_many())?,
            first_sample_is_sync: first
                .is_some_and(|(_, flags, _, _)| flags & NON_SYNC_SAMPLE == 0),
        });
        firsts.push((
            track_id,
            first.map(|(size, _, src, start)| (src, start, size)),
        ));
    }

    let video = init
        .video_track()
        .and_then(|v| tracks.iter_mut().find(|t| t.track_id == v.track_id));
    let starts_with_keyframe = match video {
        Some(run) if run.sample_count > 0 => {
            let first = firsts
                .iter()
                .find(|(id, _)| *id == run.track_id)
                .and_then(|(_, f)| *f);
            // Only the trex default is too weak to trust alone: look at the NAL units.
            if let (Some((FlagSource::Trex, Some(start), size)), Some(info)) =
                (first, init.track(run.track_id))
            {
                let sample = usize::try_from(start)
                    .ok()
                    .and_then(|s| fragment.get(s..s.checked_add(usize::try_from(size).ok()?)?));
                let syntax = NalSyntax::from_codec(&info.codec);
                if let (Some(sample), Some(syntax), Some(len)) =
                    (sample, syntax, info.nal_length_size)
                {
                    if let Some(rap) = is_random_access(syntax, len, sample) {
                        run.first_sample_is_sync = rap;
                    }
                }
            }
            run.first_sample_is_sync
        }
        _ => init.video_track().is_none(),
    };

    // A traf without samples says nothing about time (and its tfdt may be stale).
    let with_samples = |id: &u32| {
        tracks
            .iter()
            .any(|t| t.track_id == *id && t.sample_count > 0)
    };
    let reference_track_id = init
        .reference_track()
        .map(|t| t.track_id)
        .filter(with_samples)
        .or_else(|| tracks.iter().map(|t| t.track_id).find(with_samples))
        .or(tracks.first().map(|t| t.track_id))
        .unwrap_or(0);
    let moof_size = u32::try_from(layout.mdat_start)
        .map_err(|_| Fmp4Error::Unsupported("moof box larger than 4 GiB".to_string()))?;
    Ok(FragmentFacts {
        sequence_number: layout.sequence_number,
        tracks,
        starts_with_keyframe,
        moof_size,
        size_bytes: fragment.len() as u64,
        reference_track_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::testutil::{sample, split, synth_fragment, SynthTraf};
    use crate::fmp4::{Event, RawFragment, TrackKind};

    fn events(name: &str) -> (InitFacts, Vec<RawFragment>) {
        let mut init = None;
        let mut frags = Vec::new();
        for e in split(&sample(name)).unwrap() {
            match e {
                Event::Init { facts, .. } => init = Some(facts),
                Event::Fragment(f) => frags.push(f),
            }
        }
        (init.unwrap(), frags)
    }

    /// Expected per sample: codecs, keyframe flag of every fragment.
    #[test]
    fn sample_facts() {
        let gop = |n| vec![true; n];
        let cmaf: Vec<bool> = (0..20).map(|i| i % 4 == 0).collect();
        let cases: &[(&str, &str, Vec<bool>)] = &[
            ("h264_aac_gop2s.mp4", "avc1.64001e,mp4a.40.2", gop(5)),
            ("h264_cmaf_chunks.mp4", "avc1.64001e", cmaf),
            ("h265_aac.mp4", "hvc1.1.6.L63.90,mp4a.40.2", gop(3)),
            ("aac_only.mp4", "mp4a.40.2", gop(10)),
            ("h264_prft.mp4", "avc1.64001e,mp4a.40.2", gop(2)),
        ];
        for (name, codecs, keyframes) in cases {
            let (init, frags) = events(name);
            assert_eq!(&init.codecs(), codecs, "{name}");
            let facts: Vec<FragmentFacts> = frags
                .iter()
                .map(|f| fragment_facts(&init, &f.bytes).unwrap())
                .collect();
            let got: Vec<bool> = facts.iter().map(|f| f.starts_with_keyframe).collect();
            assert_eq!(&got, keyframes, "{name}");
            // Every track's durations add up to the next fragment's tfdt, starting at 0.
            for track in &init.tracks {
                let mut next = 0;
                for (i, f) in facts.iter().enumerate() {
                    assert_eq!(f.sequence_number, i as u32 + 1);
                    let run = f
                        .tracks
                        .iter()
                        .find(|r| r.track_id == track.track_id)
                        .unwrap();
                    assert_eq!(run.base_media_decode_time, next, "{name} fragment {i}");
                    assert!(run.sample_count > 0 && run.duration > 0);
                    assert_eq!(run.timescale, track.timescale);
                    next += run.duration;
                }
            }
            for (f, raw) in facts.iter().zip(&frags) {
                assert_eq!(f.size_bytes, raw.bytes.len() as u64);
                assert_eq!(
                    f.reference_track_id,
                    init.reference_track().unwrap().track_id
                );
                assert_eq!(
                    fragment_facts_at(&init, &raw.bytes, raw.stream_offset).as_ref(),
                    Ok(f)
                );
            }
            let total_us: i64 = facts.iter().map(|f| f.duration_us()).sum();
            let expected_s = if name.contains("prft") {
                4
            } else if name.contains("h265") {
                6
            } else {
                10
            };
            assert!(
                (total_us - expected_s * 1_000_000).abs() < 100_000,
                "{name}: {total_us}"
            );
            let last = facts.last().unwrap();
            // Per-fragment rounding to whole microseconds is the only difference.
            assert!((last.start_us() + last.duration_us() - total_us).abs() <= facts.len() as i64);
        }
    }

    #[test]
    fn init_facts() {
        let (init, _) = events("h264_aac_gop2s.mp4");
        let v = init.video_track().unwrap();
        assert_eq!(
            (v.track_id, v.timescale, v.width, v.height),
            (1, 12800, Some(640), Some(360))
        );
        assert_eq!(v.nal_length_size, Some(4));
        let a = init.track(2).unwrap();
        assert_eq!(
            (a.kind, a.timescale, a.sample_rate, a.channels),
            (TrackKind::Audio, 48000, Some(48000), Some(2))
        );
        let (init, _) = events("h265_aac.mp4");
        assert_eq!(init.video_track().unwrap().codec, "hvc1.1.6.L63.90");
        let (init, _) = events("aac_only.mp4");
        assert_eq!(init.reference_track().unwrap().kind, TrackKind::Audio);
        assert!(init.video_track().is_none());
    }

    #[test]
    fn prft_is_plausible() {
        let (_, frags) = events("h264_prft.mp4");
        assert_eq!(frags.len(), 2);
        for f in &frags {
            let p = f.prft.unwrap();
            assert_eq!(p.reference_track_id, 1);
            // Between 2020 and 2100.
            assert!(
                (1_577_836_800_000_000..4_102_444_800_000_000).contains(&p.utc_time_us),
                "{p:?}"
            );
        }
        let (a, b) = (frags[0].prft.unwrap(), frags[1].prft.unwrap());
        assert!(b.media_time > a.media_time && b.utc_time_us >= a.utc_time_us);
    }

    /// With only trex defaults (no flags in trun or tfhd), the NAL units decide.
    #[test]
    fn keyframe_from_nal_units_when_only_trex_says() {
        let (init, _) = events("h264_cmaf_chunks.mp4");
        assert_eq!(
            init.tracks[0].default_sample_flags, 0,
            "trex says every sample is sync"
        );
        let idr = [0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 2, 0x65, 0x88];
        let non_idr = [0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 2, 0x41, 0x9a];
        for (nal, expected) in [(&idr, true), (&non_idr, false)] {
            let frag = synth_fragment(&[SynthTraf::simple(1, nal.len() as u32)], nal);
            let f = fragment_facts(&init, &frag).unwrap();
            assert_eq!(f.starts_with_keyframe, expected);
            assert_eq!(f.tracks[0].first_sample_is_sync, expected);
        }
    }

    /// Issue 12, case 2: a moof holding only audio, in a stream whose init has video, never
    /// starts a segment; in an audio-only stream every fragment may.
    #[test]
    fn a_fragment_without_video_is_not_a_keyframe_fragment() {
        let (init, _) = events("h264_aac_gop2s.mp4");
        let audio = init.track(2).unwrap();
        assert_eq!(audio.kind, TrackKind::Audio);
        let frag = synth_fragment(&[SynthTraf::simple(2, 4)], &[0; 4]);
        let f = fragment_facts(&init, &frag).unwrap();
        assert!(!f.starts_with_keyframe);
        assert!(!f.holds_video(&init));
        assert_eq!(f.reference_run().track_id, 2);

        let (audio_only, frags) = events("aac_only.mp4");
        let f = fragment_facts(&audio_only, &frags[0].bytes).unwrap();
        assert!(f.starts_with_keyframe && !f.holds_video(&audio_only));
    }

    #[test]
    fn refuses_bad_fragments() {
        let (init, frags) = events("h264_aac_gop2s.mp4");
        let good = &frags[0].bytes;
        // Unknown track.
        let mut t = SynthTraf::simple(9, 4);
        let frag = synth_fragment(std::slice::from_ref(&t), &[0; 4]);
        assert!(
            matches!(fragment_facts(&init, &frag), Err(Fmp4Error::Malformed(m)) if m.contains("track 9"))
        );
        // Sample data beyond the mdat.
        t = SynthTraf::simple(1, 400);
        let frag = synth_fragment(&[t], &[0; 4]);
        assert!(
            matches!(fragment_facts(&init, &frag), Err(Fmp4Error::Malformed(m)) if m.contains("outside the mdat"))
        );
        // Truncated mdat / trailing bytes / moof only.
        assert!(fragment_facts(&init, &good[..good.len() - 1]).is_err());
        let mut longer = good.to_vec();
        longer.push(0);
        assert!(fragment_facts(&init, &longer).is_err());
        let moof_len = u32::from_be_bytes([good[0], good[1], good[2], good[3]]) as usize;
        assert!(fragment_facts(&init, &good[..moof_len]).is_err());
    }
}
