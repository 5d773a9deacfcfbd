//! The fragmented clip: the init, then each stored fragment with its `tfdt`s rebased onto the
//! clip's timeline and its mdat served verbatim from the store.

use bytes::Bytes;

use super::head::{parse_head, tfdt, track_starts_us, traf_duration};
use super::timeline::{rebased, Timeline};
use super::{malformed, ClipFragment, ClipPlan, Piece};
use crate::fmp4::boxes::read_header;
use crate::fmp4::layout::TrafLayout;
use crate::fmp4::{rewrite_fragment, ticks_to_us, Fmp4Error, InitFacts};

/// What [`FragmentedBuilder::push`] needs to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Done,
    /// The moof cannot be rebased in place (a traf without a version 1 tfdt): call
    /// [`FragmentedBuilder::push_whole`] with the whole fragment.
    NeedsWholeFragment,
}

/// Builds a fragmented clip: the init, then each fragment with its `tfdt`s rebased onto the clip's
/// timeline (see `timeline.rs`) and its mdat copied verbatim. Every fragment must use
/// the one init given (a clip ends before an init change).
///
/// Stored fragments already carry version 1 `tfdt`s with moof-relative data offsets, so rebasing
/// only overwrites the `tfdt` values and sizes stay the same; that fast path reads the moof alone.
/// Anything else goes through [`rewrite_fragment`] with the whole fragment, and the sizes of
/// its output are used as they come.
pub struct FragmentedBuilder {
    facts: InitFacts,
    timeline: Timeline,
    pieces: Vec<Piece>,
    fragments: usize,
    end_us: i64,
}

impl FragmentedBuilder {
    pub fn new(init: Bytes) -> Result<FragmentedBuilder, Fmp4Error> {
        let facts = InitFacts::parse(&init)?;
        Ok(FragmentedBuilder {
            facts,
            timeline: Timeline::default(),
            pieces: vec![Piece::Bytes(init)],
            fragments: 0,
            end_us: 0,
        })
    }

    fn check_init(&self, f: &ClipFragment) -> Result<(), Fmp4Error> {
        if f.init != 0 {
            return Err(Fmp4Error::Unsupported(
                "a fragmented clip cannot change init".into(),
            ));
        }
        Ok(())
    }

    /// Adds the next fragment from its head alone, if its moof can be rebased in place.
    pub fn push(&mut self, f: &ClipFragment) -> Result<Pushed, Fmp4Error> {
        self.check_init(f)?;
        let head = parse_head(&self.facts, f)?;
        if head
            .trafs
            .iter()
            .any(|t| !matches!(tfdt(&head, t), Some((_, 1, _))))
        {
            return Ok(Pushed::NeedsWholeFragment);
        }
        let shift_us = self.timeline.shift_for(f, track_starts_us(&head));
        let mut moof = head.moof.bytes.to_vec();
        for t in &head.trafs {
            if let Some((at, _, v)) = tfdt(&head, t) {
                let new = rebased(v, shift_us, t.timescale);
                self.note_end(new, t);
                // A version 1 tfdt: 8 header bytes, version and flags, then the 64-bit value.
                moof[at + 12..at + 20].copy_from_slice(&new.to_be_bytes());
            }
        }
        let moof_len = moof.len() as u64;
        self.pieces.push(Piece::Bytes(Bytes::from(moof)));
        self.pieces.push(Piece::Fragment {
            index: self.fragments,
            offset: moof_len,
            len: f.size - moof_len,
        });
        self.fragments += 1;
        Ok(Pushed::Done)
    }

    /// Adds the next fragment given whole, rebasing it with [`rewrite_fragment`].
    pub fn push_whole(&mut self, f: &ClipFragment, fragment: &[u8]) -> Result<(), Fmp4Error> {
        self.check_init(f)?;
        let head = parse_head(&self.facts, f)?;
        let shift_us = self.timeline.shift_for(f, track_starts_us(&head));
        let timescales: Vec<(u32, u32)> = head
            .trafs
            .iter()
            .map(|t| (t.tfhd.track_id, t.timescale))
            .collect();
        let ts_of = |id: u32| {
            timescales
                .iter()
                .find(|(t, _)| *t == id)
                .map_or(1, |(_, ts)| *ts)
        };
        let out = rewrite_fragment(&self.facts, fragment, 0, &|id, v| {
            rebased(v, shift_us, ts_of(id))
        })?;
        for t in &head.trafs {
            let v = t.tfdt.unwrap_or(0);
            self.note_end(rebased(v, shift_us, t.timescale), t);
        }
        let new_moof = read_header(&out)
            .ok()
            .and_then(|h| h.size)
            .ok_or_else(|| malformed("rewritten fragment has no moof"))?;
        let old_moof = head.moof.bytes.len() as u64;
        // Only the moof changes; the mdat is served from the stored fragment.
        if out.len() as u64 - new_moof != f.size - old_moof {
            return Err(malformed("rewriting a fragment changed its mdat"));
        }
        let moof = Bytes::from(out).slice(..new_moof as usize);
        self.pieces.push(Piece::Bytes(moof));
        self.pieces.push(Piece::Fragment {
            index: self.fragments,
            offset: old_moof,
            len: f.size - old_moof,
        });
        self.fragments += 1;
        Ok(())
    }

    fn note_end(&mut self, new_tfdt: u64, t: &TrafLayout) {
        let dur = traf_duration(t);
        let end = i64::try_from(new_tfdt.saturating_add(dur)).unwrap_or(i64::MAX);
        self.end_us = self.end_us.max(ticks_to_us(end, t.timescale));
    }

    pub fn finish(self) -> Result<ClipPlan, Fmp4Error> {
        if self.fragments == 0 {
            return Err(malformed("a clip needs at least one fragment"));
        }
        Ok(ClipPlan::new(self.pieces, self.end_us))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::fmp4::fragment_facts;
    use crate::fmp4::testutil::{synth_fragment, SynthTraf};

    #[test]
    fn fragmented_rebases_like_rewrite_fragment() {
        let s1 = stored("h264_aac_gop2s.mp4", T0_US);
        let end1 = s1.frags.last().unwrap().2;
        let s2 = stored("h264_aac_gop2s.mp4", end1 + 7_000_000);
        let all: Vec<(usize, &StoredFragment)> = [&s1, &s2]
            .iter()
            .flat_map(|s| s.frags.iter().enumerate())
            .collect();
        let mut b = FragmentedBuilder::new(Bytes::from(s1.init.clone())).unwrap();
        for (i, f) in &all {
            assert_eq!(b.push(&clip_fragment(f, 0, *i == 0)).unwrap(), Pushed::Done);
        }
        let plan = b.finish().unwrap();
        let refs: Vec<&[u8]> = all.iter().map(|(_, f)| &f.0[..]).collect();
        let file = materialize(&plan, &refs);
        assert!(file.starts_with(&s1.init));
        // Each fragment equals what rewrite_fragment makes with the clip's shift: the start of
        // session 1, plus the 7 s gap for session 2.
        let mut pos = s1.init.len();
        for (k, (_, f)) in all.iter().enumerate() {
            let shift = if k < s1.frags.len() {
                T0_US
            } else {
                T0_US + 7_000_000
            };
            let facts = &s1.facts;
            let expected = rewrite_fragment(facts, &f.0, 0, &|id, t| {
                rebased(t, shift, facts.track(id).unwrap().timescale)
            })
            .unwrap();
            assert_eq!(
                &file[pos..pos + expected.len()],
                &expected[..],
                "fragment {k}"
            );
            pos += expected.len();
        }
        assert_eq!(pos, file.len());
        assert!(
            (plan.duration_us - 20_080_000).abs() < 100_000,
            "{}",
            plan.duration_us
        );
    }

    #[test]
    fn fragmented_without_tfdt_takes_the_whole_fragment() {
        let init = gop2s_init();
        let trafs = [SynthTraf {
            track_id: 1,
            sample_sizes: vec![3, 4],
            sample_duration: 512,
            tfdt: None,
        }];
        let frag = synth_fragment(&trafs, &[9; 7]);
        let f = (frag.clone(), 0, 80_000);
        let mut b = FragmentedBuilder::new(Bytes::from(init.clone())).unwrap();
        let cf = clip_fragment(&f, 0, false);
        assert_eq!(b.push(&cf).unwrap(), Pushed::NeedsWholeFragment);
        b.push_whole(&cf, &frag).unwrap();
        let plan = b.finish().unwrap();
        let file = materialize(&plan, &[&frag]);
        // rewrite_fragment inserted a version 1 tfdt: the moof grew by 20 bytes.
        assert_eq!(file.len(), init.len() + frag.len() + 20);
        let facts = InitFacts::parse(&init).unwrap();
        let ff = fragment_facts(&facts, &file[init.len()..]).unwrap();
        assert_eq!(ff.tracks[0].base_media_decode_time, 0);
        assert_eq!(ff.tracks[0].sample_count, 2);
    }
}
