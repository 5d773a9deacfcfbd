//! One progressive track's sample tables as fragments are pushed (durations, composition
//! offsets, sizes, sync samples, chunks), how a track is kept aligned across a discontinuity, and
//! the `stbl` boxes written from them.

use super::malformed;
use crate::fmp4::boxes::put_box;
use crate::fmp4::sample::RunSample;
use crate::fmp4::Fmp4Error;

/// Run-length table of (count, value), as stts and ctts store them.
#[derive(Debug, Default, Clone)]
struct Rle<T: PartialEq + Copy> {
    entries: Vec<(u32, T)>,
}

impl<T: PartialEq + Copy> Rle<T> {
    fn push(&mut self, v: T) {
        match self.entries.last_mut() {
            Some((n, last)) if *last == v && *n < u32::MAX => *n += 1,
            _ => self.entries.push((1, v)),
        }
    }

    fn last(&self) -> Option<T> {
        self.entries.last().map(|(_, v)| *v)
    }

    fn pop(&mut self) {
        if let Some((n, _)) = self.entries.last_mut() {
            *n -= 1;
            if *n == 0 {
                self.entries.pop();
            }
        }
    }

    fn replace_last(&mut self, v: T) {
        if !self.entries.is_empty() {
            self.pop();
            self.push(v);
        }
    }
}

/// One track's sample tables as fragments are pushed.
#[derive(Debug)]
pub(super) struct TrackTable {
    /// Index of the track's trak in the first init (the template of the clip's trak).
    pub template: usize,
    pub track_id: u32,
    pub timescale: u32,
    /// Samples may be dropped to absorb an overlap: true for tracks whose samples do not depend
    /// on each other (audio), never for video, where a dropped frame may be a reference.
    droppable: bool,
    /// Distinct sample entries (bytes) and, per (init, index in that init's stsd), which one.
    entries: Vec<Vec<u8>>,
    entry_of: Vec<((usize, u32), u32)>,
    durations: Rle<u32>,
    cts: Rle<i64>,
    pub sizes: Vec<u32>,
    /// 1-based numbers of sync samples.
    syncs: Vec<u32>,
    /// (offset from the mdat payload start, samples, sample description index).
    chunks: Vec<(u64, u32, u32)>,
    /// Decode time of the first sample, in ticks from the clip's zero.
    pub first_dts: Option<i64>,
    /// Sum of sample durations so far.
    pub media_len: u64,
    /// Largest decode time + composition offset + duration seen (where presentation ends).
    pub presentation_end: i64,
}

impl TrackTable {
    pub fn new(template: usize, track_id: u32, timescale: u32, droppable: bool) -> TrackTable {
        TrackTable {
            template,
            track_id,
            timescale,
            droppable,
            entries: Vec::new(),
            entry_of: Vec::new(),
            durations: Rle::default(),
            cts: Rle::default(),
            sizes: Vec::new(),
            syncs: Vec::new(),
            chunks: Vec::new(),
            first_dts: None,
            media_len: 0,
            presentation_end: 0,
        }
    }

    fn samples(&self) -> u32 {
        self.sizes.len() as u32
    }

    /// Makes the next sample's decode time `dts` (ticks from the clip's zero) by adjusting the
    /// previous sample's duration.
    pub fn align(&mut self, dts: i64) {
        let Some(first) = self.first_dts else {
            self.first_dts = Some(dts.max(0));
            return;
        };
        if self.sizes.is_empty() {
            return;
        }
        let mut delta = (dts - first) - self.media_len as i64;
        // The new run starts before the end of what we have (an appended session whose producer
        // wrote more audio than video): drop whole trailing samples while they lie entirely in
        // the overlap, so the new run plays at its own time.
        while self.droppable && self.sizes.len() > 1 {
            let Some(last) = self.durations.last() else {
                break;
            };
            if delta + i64::from(last) > 0 {
                break;
            }
            self.drop_last();
            delta += i64::from(last);
        }
        let Some(last) = self.durations.last() else {
            return;
        };
        if delta == 0 {
            return;
        }
        let new_last = (i64::from(last) + delta).clamp(1, i64::from(u32::MAX)) as u32;
        self.durations.replace_last(new_last);
        self.media_len = (self.media_len as i64 + i64::from(new_last) - i64::from(last)) as u64;
    }

    /// Forgets the last sample; its bytes stay in the mdat, unreferenced.
    fn drop_last(&mut self) {
        let n = self.samples();
        let Some(duration) = self.durations.last() else {
            return;
        };
        self.durations.pop();
        self.cts.pop();
        self.sizes.pop();
        if self.syncs.last() == Some(&n) {
            self.syncs.pop();
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.1 -= 1;
            if chunk.1 == 0 {
                self.chunks.pop();
            }
        }
        self.media_len -= u64::from(duration);
    }

    /// The clip's sample description index for entry `sdi` (1-based) of init `init`'s trak,
    /// whose sample entries are `init_entries`: identical entries of different inits share one.
    pub fn entry_index(
        &mut self,
        init: usize,
        sdi: u32,
        init_entries: &[Vec<u8>],
    ) -> Result<u32, Fmp4Error> {
        if let Some((_, i)) = self.entry_of.iter().find(|(k, _)| *k == (init, sdi)) {
            return Ok(*i);
        }
        let bytes = init_entries.get(sdi as usize - 1).ok_or_else(|| {
            malformed(format!(
                "a fragment of track {} uses sample description {sdi}, which its init does not have",
                self.track_id
            ))
        })?;
        let index = match self.entries.iter().position(|e| e == bytes) {
            Some(p) => p as u32 + 1,
            None => {
                self.entries.push(bytes.clone());
                self.entries.len() as u32
            }
        };
        self.entry_of.push(((init, sdi), index));
        Ok(index)
    }

    /// Starts a chunk of `samples` samples at `offset` from the clip's mdat payload start.
    pub fn push_chunk(&mut self, offset: u64, samples: u32, sample_description_index: u32) {
        self.chunks
            .push((offset, samples, sample_description_index));
    }

    /// Appends one sample of the current chunk.
    pub fn push_sample(&mut self, s: &RunSample) {
        if self.first_dts.is_none() {
            self.first_dts = Some(0);
        }
        self.durations.push(s.duration);
        self.cts.push(s.cts);
        self.sizes.push(s.size);
        if s.is_sync() {
            let n = self.samples();
            self.syncs.push(n);
        }
        let dts = self.media_len as i64;
        self.presentation_end = self
            .presentation_end
            .max(dts + s.cts + i64::from(s.duration));
        self.media_len += u64::from(s.duration);
    }
}

fn full_box(out: &mut Vec<u8>, t: &[u8; 4], version: u8, body: &[u8]) -> Result<(), Fmp4Error> {
    let mut b = Vec::with_capacity(body.len() + 4);
    b.extend_from_slice(&[version, 0, 0, 0]);
    b.extend_from_slice(body);
    put_box(out, t, &b)
}

fn u32s(v: &mut Vec<u8>, xs: impl IntoIterator<Item = u32>) {
    for x in xs {
        v.extend_from_slice(&x.to_be_bytes());
    }
}

/// The sample table of one track: stsd, stts, ctts (if any offset), stss (unless every sample is
/// a sync sample), stsz, stsc, stco or co64.
pub(super) fn stbl_boxes(
    out: &mut Vec<u8>,
    t: &TrackTable,
    base: u64,
    co64: bool,
) -> Result<(), Fmp4Error> {
    let mut b = Vec::new();
    u32s(&mut b, [t.entries.len() as u32]);
    for e in &t.entries {
        b.extend_from_slice(e);
    }
    full_box(out, b"stsd", 0, &b)?;

    let mut b = Vec::new();
    u32s(&mut b, [t.durations.entries.len() as u32]);
    for (n, d) in &t.durations.entries {
        u32s(&mut b, [*n, *d]);
    }
    full_box(out, b"stts", 0, &b)?;

    if t.cts.entries.iter().any(|(_, c)| *c != 0) {
        let signed = t.cts.entries.iter().any(|(_, c)| *c < 0);
        let mut b = Vec::new();
        u32s(&mut b, [t.cts.entries.len() as u32]);
        for (n, c) in &t.cts.entries {
            let c = if signed {
                i32::try_from(*c).ok().map(|c| c as u32)
            } else {
                u32::try_from(*c).ok()
            };
            let c = c.ok_or_else(|| {
                Fmp4Error::Unsupported("a composition offset overflows ctts".into())
            })?;
            u32s(&mut b, [*n, c]);
        }
        full_box(out, b"ctts", u8::from(signed), &b)?;
    }

    if t.syncs.len() != t.sizes.len() {
        let mut b = Vec::new();
        u32s(&mut b, [t.syncs.len() as u32]);
        u32s(&mut b, t.syncs.iter().copied());
        full_box(out, b"stss", 0, &b)?;
    }

    let mut b = Vec::with_capacity(8 + 4 * t.sizes.len());
    let first = t.sizes.first().copied().unwrap_or(0);
    if t.sizes.iter().all(|s| *s == first) {
        u32s(&mut b, [first, t.sizes.len() as u32]);
    } else {
        u32s(&mut b, [0, t.sizes.len() as u32]);
        u32s(&mut b, t.sizes.iter().copied());
    }
    full_box(out, b"stsz", 0, &b)?;

    let mut entries: Vec<(u32, u32, u32)> = Vec::new();
    for (i, (_, n, sdi)) in t.chunks.iter().enumerate() {
        if entries
            .last()
            .is_none_or(|(_, pn, ps)| (pn, ps) != (n, sdi))
        {
            entries.push((i as u32 + 1, *n, *sdi));
        }
    }
    let mut b = Vec::new();
    u32s(&mut b, [entries.len() as u32]);
    for (c, n, s) in entries {
        u32s(&mut b, [c, n, s]);
    }
    full_box(out, b"stsc", 0, &b)?;

    let mut b = Vec::with_capacity(4 + 8 * t.chunks.len());
    u32s(&mut b, [t.chunks.len() as u32]);
    for (off, _, _) in &t.chunks {
        let abs = base + off;
        if co64 {
            b.extend_from_slice(&abs.to_be_bytes());
        } else {
            let abs = u32::try_from(abs)
                .map_err(|_| Fmp4Error::Unsupported("chunk offset overflows stco".into()))?;
            b.extend_from_slice(&abs.to_be_bytes());
        }
    }
    full_box(out, if co64 { b"co64" } else { b"stco" }, 0, &b)
}
