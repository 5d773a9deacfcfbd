//! Decoding only the H.264 pictures a wanted frame depends on.
//!
//! Skipping unreferenced (`nal_ref_idc` 0) pictures is always safe. This goes further: a reference
//! picture that no picture on the way to the wanted one has in its active reference lists (in
//! x264's output, the B references of the earlier B-pyramids: about a third of the decoding) is
//! left out too.
//!
//! Leaving out a reference picture leaves a gap in `frame_num`, which openh264 treats as a lost
//! reference (it then refuses B-pictures). So the pictures fed after a left-out one get rewritten
//! slice headers, making a conforming stream of their own:
//! - `frame_num` renumbered without the gaps (same bit width, so in place);
//! - `ref_pic_list_modification` spelling out every active entry, so each slice gets exactly the
//!   reference pictures, in the same list positions, that it had in the full stream (weights and
//!   everything indexed by list position stay right);
//! - `dec_ref_pic_marking` as explicit MMCO 1 operations, so the decoder's reference store is
//!   always the full stream's store minus the pictures left out.
//!
//! The reference lists are rebuilt the way the standard builds them (ITU-T H.264 8.2.4: initial
//! order, `ref_pic_list_modification`, cut to `num_ref_idx_active`), with the store kept by the
//! sliding window and MMCO 1. Display order stands in for picture order count when ordering B
//! lists. Anything outside that (field pictures, long-term references, other MMCOs, slice groups,
//! SP/SI slices, several SPS, a `frame_num` gap in the stream, picture order count types 1 and 2,
//! a header that does not parse) makes [`plan`] return `None`, and the caller keeps every
//! reference picture.

use std::collections::{BTreeMap, BTreeSet};

use super::h264_bits::{append_escaped, rbsp, BitReader, BitWriter};

/// How much of a slice NAL unit is read to parse its header.
const HEADER_BYTES: usize = 4096;

/// What to feed the decoder for some wanted pictures.
#[derive(Debug)]
pub struct Plan {
    /// Samples to feed, in decode order.
    pub fed: Vec<usize>,
    /// New slice-header fields for fed samples that come after a left-out reference picture.
    edits: BTreeMap<usize, PictureEdit>,
    sps: Sps,
    pps: Vec<Pps>,
}

#[derive(Debug)]
struct PictureEdit {
    frame_num: u32,
    /// Per slice, per list: `abs_diff_pic_num_minus1` of each entry (all with idc 0).
    lists: Vec<[Vec<u32>; 2]>,
    /// `difference_of_pic_nums_minus1` of each MMCO 1 (reference pictures only).
    marking: Option<Vec<u32>>,
}

impl Plan {
    /// Whether some reference picture is left out (the fed stream has rewritten headers).
    pub fn skips_references(&self) -> bool {
        !self.edits.is_empty()
    }

    /// Appends sample `index` (`length_size`-prefixed NAL units) to `out` as Annex B, with its
    /// slice headers rewritten when the plan says so.
    pub fn append_annexb(
        &self,
        index: usize,
        sample: &[u8],
        length_size: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let nals = nal_units(sample, length_size)
            .ok_or_else(|| format!("sample {index}: a NAL unit runs past its end"))?;
        let edit = self.edits.get(&index);
        let mut slice = 0;
        for nal in nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            let header = nal.first().copied().unwrap_or(0);
            match (edit, header & 0x1f) {
                (Some(edit), 1 | 5) => {
                    let lists = edit
                        .lists
                        .get(slice)
                        .ok_or_else(|| format!("sample {index}: more slices than planned"))?;
                    slice += 1;
                    self.rewrite_slice(nal, edit, lists, out)
                        .ok_or_else(|| format!("sample {index}: cannot rewrite a slice header"))?;
                }
                _ => out.extend_from_slice(nal),
            }
        }
        Ok(())
    }

    fn rewrite_slice(
        &self,
        nal: &[u8],
        edit: &PictureEdit,
        lists: &[Vec<u32>; 2],
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let header = *nal.first()?;
        let raw = rbsp(nal.get(1..)?, usize::MAX);
        let h = parse_slice_header(
            &raw,
            &self.sps,
            &self.pps,
            header & 0x1f == 5,
            header >> 5 != 0,
        )?;
        let mut w = BitWriter::with_capacity(raw.len() + 16);
        w.copy_bits(&raw, 0, h.at.frame_num);
        w.u(self.sps.log2_max_frame_num, edit.frame_num);
        w.copy_bits(
            &raw,
            h.at.frame_num + self.sps.log2_max_frame_num as usize,
            h.at.modification.0,
        );
        for list in lists.iter().take(h.kind.list_count()) {
            w.bit(1); // ref_pic_list_modification_flag
            for &v in list {
                w.ue(0);
                w.ue(v);
            }
            w.ue(3);
        }
        w.copy_bits(&raw, h.at.modification.1, h.at.marking.0);
        if let Some(ops) = &edit.marking {
            w.bit(1); // adaptive_ref_pic_marking_mode_flag
            for &d in ops {
                w.ue(1);
                w.ue(d);
            }
            w.ue(0);
        }
        w.copy_bits(&raw, h.at.marking.1, h.at.end);
        if h.cabac {
            // cabac_alignment_one_bit, then the byte-aligned slice data as it was.
            while !w.is_aligned() {
                w.bit(1);
            }
            w.append_bytes(raw.get(h.at.end.div_ceil(8)..)?);
        } else {
            // The data follows the header bit for bit; end with a fresh stop bit.
            let stop = last_one_bit(&raw)?;
            w.copy_bits(&raw, h.at.end, stop);
            w.bit(1);
            while !w.is_aligned() {
                w.bit(0);
            }
        }
        out.push(header);
        append_escaped(&w.into_bytes(), out);
        Some(())
    }
}

/// Position of the last 1 bit (the `rbsp_stop_one_bit`).
fn last_one_bit(raw: &[u8]) -> Option<usize> {
    let (i, b) = raw.iter().enumerate().rev().find(|(_, b)| **b != 0)?;
    Some(i * 8 + 7 - b.trailing_zeros() as usize)
}

/// The pictures to decode for `wanted` (sample indexes; `samples` in decode order from the
/// keyframe, `display_rank` per sample), or `None` when the stream uses something not modelled.
pub fn plan(
    parameter_sets: &[Vec<u8>],
    samples: &[&[u8]],
    length_size: u8,
    display_rank: &[usize],
    wanted: &[usize],
) -> Option<Plan> {
    let stream = Stream::parse(parameter_sets, samples, length_size)?;
    let full = replay(&stream, display_rank)?;
    let fed = needed(&full.lists, wanted);
    let fed_set: BTreeSet<usize> = fed.iter().copied().collect();
    let mut plan = Plan {
        fed,
        edits: BTreeMap::new(),
        sps: stream.sps.clone(),
        pps: stream.pps.clone(),
    };
    let Some(first_gap) = stream
        .pictures
        .iter()
        .position(|p| p.reference && !fed_set.contains(&p.sample))
    else {
        return Some(plan); // only unreferenced pictures left out: nothing to rewrite
    };
    if !same_picture_order(&stream, &fed_set) {
        return None;
    }
    let max_frame_num = 1i64 << stream.sps.log2_max_frame_num;
    // New frame_num per fed picture: the fed reference pictures before it.
    let mut new_frame_num: BTreeMap<usize, i64> = BTreeMap::new();
    let mut refs_before = 0i64;
    // The decoder's store while it decodes the fed pictures (samples).
    let mut store: Vec<usize> = Vec::new();
    for (k, pic) in stream.pictures.iter().enumerate() {
        if !fed_set.contains(&pic.sample) {
            continue;
        }
        let cur = if pic.idr {
            0
        } else {
            refs_before % max_frame_num
        };
        new_frame_num.insert(pic.sample, cur);
        let pic_num = |s: usize| -> Option<i64> {
            let f = *new_frame_num.get(&s)?;
            Some(if f > cur { f - max_frame_num } else { f })
        };
        if k > first_gap {
            let mut lists = Vec::with_capacity(pic.slices.len());
            for slice_lists in &full.lists[k] {
                let mut edit: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
                for (list, out) in slice_lists.iter().zip(edit.iter_mut()) {
                    let mut pred = cur;
                    for &entry in list {
                        if !store.contains(&entry) {
                            return None;
                        }
                        let target = pic_num(entry)?;
                        let no_wrap = if target < 0 {
                            target + max_frame_num
                        } else {
                            target
                        };
                        let mut abs = (pred - no_wrap).rem_euclid(max_frame_num);
                        if abs == 0 {
                            abs = max_frame_num;
                        }
                        out.push(u32::try_from(abs - 1).ok()?);
                        pred = no_wrap;
                    }
                }
                lists.push(edit);
            }
            let marking = if pic.reference {
                let keep = &full.store_after[k];
                let mut ops = Vec::new();
                for &held in &store {
                    if !keep.contains(&held) {
                        ops.push(u32::try_from(cur - pic_num(held)? - 1).ok()?);
                    }
                }
                Some(ops)
            } else {
                None
            };
            plan.edits.insert(
                pic.sample,
                PictureEdit {
                    frame_num: u32::try_from(cur).ok()?,
                    lists,
                    marking,
                },
            );
        }
        if pic.reference {
            refs_before += 1;
            // The store after this picture: the full stream's, without what is left out.
            store = full.store_after[k]
                .iter()
                .copied()
                .filter(|s| fed_set.contains(s))
                .collect();
        }
    }
    Some(plan)
}

/// Whether every fed picture gets the same picture order count when only the fed pictures are
/// decoded (type 0 derives the count's high part from the previous reference picture).
fn same_picture_order(stream: &Stream, fed: &BTreeSet<usize>) -> bool {
    if stream.sps.poc_type != 0 {
        return false;
    }
    let max_lsb = 1i64 << stream.sps.log2_max_poc_lsb;
    let msb_of = |only_fed: bool| -> BTreeMap<usize, i64> {
        let mut out = BTreeMap::new();
        let (mut prev_msb, mut prev_lsb) = (0i64, 0i64);
        for pic in &stream.pictures {
            if only_fed && !fed.contains(&pic.sample) {
                continue;
            }
            let lsb = i64::from(pic.poc_lsb);
            let msb = if pic.idr {
                0
            } else if lsb < prev_lsb && prev_lsb - lsb >= max_lsb / 2 {
                prev_msb + max_lsb
            } else if lsb > prev_lsb && lsb - prev_lsb > max_lsb / 2 {
                prev_msb - max_lsb
            } else {
                prev_msb
            };
            out.insert(pic.sample, msb);
            if pic.reference {
                (prev_msb, prev_lsb) = (msb, lsb);
            }
        }
        out
    };
    let (all, pruned) = (msb_of(false), msb_of(true));
    fed.iter().all(|s| all.get(s) == pruned.get(s))
}

/// The wanted samples, the first (the keyframe), and everything they reference, transitively;
/// in decode order. `lists[k]` are picture k's slices' active lists.
fn needed(lists: &[Vec<[Vec<usize>; 2]>], wanted: &[usize]) -> Vec<usize> {
    let mut needed = vec![false; lists.len()];
    for &w in wanted {
        if let Some(n) = needed.get_mut(w) {
            *n = true;
        }
    }
    if let Some(first) = needed.first_mut() {
        *first = true;
    }
    // References always come earlier in decode order: one backward pass closes the set.
    for i in (0..lists.len()).rev() {
        if needed[i] {
            for &r in lists[i].iter().flatten().flatten() {
                if r < i {
                    needed[r] = true;
                }
            }
        }
    }
    (0..lists.len()).filter(|&i| needed[i]).collect()
}

/// The full stream's decode: each picture's slices' active lists (samples), and the reference
/// store after each picture.
struct Replay {
    lists: Vec<Vec<[Vec<usize>; 2]>>,
    store_after: Vec<Vec<usize>>,
}

/// One reference picture in the store.
#[derive(Clone, Copy)]
struct Held {
    sample: usize,
    frame_num: u32,
}

fn replay(stream: &Stream, display_rank: &[usize]) -> Option<Replay> {
    let max_frame_num = 1u32 << stream.sps.log2_max_frame_num;
    let max_refs = stream.sps.max_num_ref_frames.max(1) as usize;
    let mut store: Vec<Held> = Vec::new();
    let mut prev_ref_frame_num: Option<u32> = None;
    let mut out = Replay {
        lists: Vec::with_capacity(stream.pictures.len()),
        store_after: Vec::with_capacity(stream.pictures.len()),
    };
    for (k, pic) in stream.pictures.iter().enumerate() {
        if pic.sample != k {
            return None;
        }
        let cur = pic.frame_num;
        if pic.idr {
            store.clear();
        } else {
            let prev = prev_ref_frame_num?;
            if cur != prev && cur != (prev + 1) % max_frame_num {
                return None; // a frame_num gap in the stream itself
            }
        }
        let rank = *display_rank.get(pic.sample)?;
        let pic_num = |h: &Held| -> i64 {
            if h.frame_num > cur {
                i64::from(h.frame_num) - i64::from(max_frame_num)
            } else {
                i64::from(h.frame_num)
            }
        };
        let mut pic_lists = Vec::with_capacity(pic.slices.len());
        for slice in &pic.slices {
            let mut initial: [Vec<Held>; 2] = [Vec::new(), Vec::new()];
            match slice.kind {
                SliceKind::P => {
                    initial[0] = store.clone();
                    initial[0].sort_by_key(|h| std::cmp::Reverse(pic_num(h)));
                }
                SliceKind::B => {
                    let r = |h: &Held| display_rank.get(h.sample).copied().unwrap_or(0);
                    let mut before: Vec<Held> =
                        store.iter().copied().filter(|h| r(h) < rank).collect();
                    let mut after: Vec<Held> =
                        store.iter().copied().filter(|h| r(h) > rank).collect();
                    before.sort_by_key(|h| std::cmp::Reverse(r(h)));
                    after.sort_by_key(r);
                    initial[0] = before.iter().chain(&after).copied().collect();
                    initial[1] = after.iter().chain(&before).copied().collect();
                    // 8.2.4.2.3: when list 1 (more than one entry) equals list 0, its first two
                    // entries swap.
                    let same = initial[0].len() == initial[1].len()
                        && initial[0]
                            .iter()
                            .zip(&initial[1])
                            .all(|(a, b)| a.sample == b.sample);
                    if same && initial[1].len() > 1 {
                        initial[1].swap(0, 1);
                    }
                }
                SliceKind::I => {}
            }
            let mut lists: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
            for (list, out) in lists.iter_mut().enumerate().take(slice.kind.list_count()) {
                let active = slice.num_ref_idx_active[list] as usize;
                let mut entries: Vec<Option<Held>> = std::mem::take(&mut initial[list])
                    .into_iter()
                    .map(Some)
                    .collect();
                entries.truncate(active);
                entries.resize(active, None);
                let mut pred = i64::from(cur);
                let max = i64::from(max_frame_num);
                for (ref_idx, m) in slice.modifications[list].iter().enumerate() {
                    let no_wrap = match m.idc {
                        0 => (pred - (i64::from(m.value) + 1)).rem_euclid(max),
                        1 => (pred + (i64::from(m.value) + 1)).rem_euclid(max),
                        _ => return None, // long-term
                    };
                    pred = no_wrap;
                    let target = if no_wrap > i64::from(cur) {
                        no_wrap - max
                    } else {
                        no_wrap
                    };
                    let held = *store.iter().find(|h| pic_num(h) == target)?;
                    if ref_idx >= active {
                        return None;
                    }
                    entries.insert(ref_idx, Some(held));
                    let mut k = ref_idx + 1;
                    while k < entries.len() {
                        if entries[k].is_some_and(|h| pic_num(&h) == target) {
                            entries.remove(k);
                        } else {
                            k += 1;
                        }
                    }
                    entries.truncate(active);
                    entries.resize(active, None);
                }
                // An empty active entry ("no reference picture") is not modelled.
                *out = entries
                    .into_iter()
                    .map(|e| e.map(|h| h.sample))
                    .collect::<Option<Vec<usize>>>()?;
            }
            pic_lists.push(lists);
        }
        out.lists.push(pic_lists);
        if pic.reference {
            if pic.idr {
                store.clear();
            } else if let Some(ops) = &pic.mmco {
                for op in ops {
                    let target = i64::from(cur) - (i64::from(*op) + 1);
                    let at = store.iter().position(|h| pic_num(h) == target)?;
                    store.remove(at);
                }
            } else if store.len() >= max_refs {
                let oldest = (0..store.len()).min_by_key(|&k| pic_num(&store[k]))?;
                store.remove(oldest);
            }
            store.push(Held {
                sample: pic.sample,
                frame_num: cur,
            });
            if store.len() > max_refs {
                return None;
            }
            prev_ref_frame_num = Some(cur);
        } else if prev_ref_frame_num.is_none() {
            return None;
        }
        out.store_after
            .push(store.iter().map(|h| h.sample).collect());
    }
    Some(out)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SliceKind {
    P,
    B,
    I,
}

impl SliceKind {
    fn list_count(self) -> usize {
        match self {
            SliceKind::P => 1,
            SliceKind::B => 2,
            SliceKind::I => 0,
        }
    }
}

#[derive(Clone, Debug)]
struct Modification {
    idc: u32,
    value: u32,
}

/// Bit positions in a slice's RBSP (after the NAL header byte).
#[derive(Clone, Debug)]
struct HeaderAt {
    frame_num: usize,
    /// `ref_pic_list_modification()`, both lists.
    modification: (usize, usize),
    /// `dec_ref_pic_marking()` (empty for unreferenced pictures).
    marking: (usize, usize),
    /// The end of the slice header.
    end: usize,
}

#[derive(Clone, Debug)]
struct SliceHeader {
    kind: SliceKind,
    num_ref_idx_active: [u32; 2],
    modifications: [Vec<Modification>; 2],
    frame_num: u32,
    poc_lsb: u32,
    /// `difference_of_pic_nums_minus1` of each MMCO 1; `None` for the sliding window.
    mmco: Option<Vec<u32>>,
    cabac: bool,
    at: HeaderAt,
}

#[derive(Clone, Debug)]
struct Picture {
    sample: usize,
    idr: bool,
    reference: bool,
    frame_num: u32,
    poc_lsb: u32,
    mmco: Option<Vec<u32>>,
    slices: Vec<SliceHeader>,
}

struct Stream {
    sps: Sps,
    pps: Vec<Pps>,
    pictures: Vec<Picture>,
}

impl Stream {
    fn parse(parameter_sets: &[Vec<u8>], samples: &[&[u8]], length_size: u8) -> Option<Self> {
        let mut sps: Option<Sps> = None;
        let mut pps: Vec<Pps> = Vec::new();
        for ps in parameter_sets {
            take_parameter_set(ps, &mut sps, &mut pps)?;
        }
        let mut pictures = Vec::with_capacity(samples.len());
        for (i, sample) in samples.iter().enumerate() {
            let mut pic: Option<Picture> = None;
            for nal in nal_units(sample, length_size)? {
                let header = *nal.first()?;
                let (reference, nal_type) = (header >> 5 != 0, header & 0x1f);
                match nal_type {
                    7 | 8 => take_parameter_set(nal, &mut sps, &mut pps)?,
                    1 | 5 => {
                        let raw = rbsp(nal.get(1..)?, HEADER_BYTES);
                        let idr = nal_type == 5;
                        let slice = parse_slice_header(&raw, sps.as_ref()?, &pps, idr, reference)?;
                        match &mut pic {
                            None => {
                                pic = Some(Picture {
                                    sample: i,
                                    idr,
                                    reference,
                                    frame_num: slice.frame_num,
                                    poc_lsb: slice.poc_lsb,
                                    mmco: slice.mmco.clone(),
                                    slices: vec![slice],
                                })
                            }
                            Some(p) => {
                                if p.frame_num != slice.frame_num
                                    || p.reference != reference
                                    || p.idr != idr
                                {
                                    return None;
                                }
                                p.slices.push(slice);
                            }
                        }
                    }
                    2..=4 | 20 | 21 => return None, // data partitioning, MVC/SVC
                    _ => {}
                }
            }
            pictures.push(pic?);
        }
        Some(Self {
            sps: sps?,
            pps,
            pictures,
        })
    }
}

/// Keeps an SPS or PPS (a second, different SPS is not modelled).
fn take_parameter_set(nal: &[u8], sps: &mut Option<Sps>, pps: &mut Vec<Pps>) -> Option<()> {
    let raw = rbsp(nal.get(1..)?, HEADER_BYTES);
    match nal.first()? & 0x1f {
        7 => {
            let s = Sps::parse(&raw)?;
            if sps.as_ref().is_some_and(|old| old.id != s.id) {
                return None;
            }
            *sps = Some(s);
        }
        8 => {
            let p = Pps::parse(&raw)?;
            pps.retain(|old| old.id != p.id);
            pps.push(p);
        }
        _ => {}
    }
    Some(())
}

/// Length-prefixed NAL units of one sample.
fn nal_units(sample: &[u8], length_size: u8) -> Option<Vec<&[u8]>> {
    let n = usize::from(length_size);
    if !(1..=4).contains(&n) {
        return None;
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < sample.len() {
        let len = sample
            .get(pos..pos + n)?
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        pos += n;
        out.push(sample.get(pos..pos + len)?);
        pos += len;
    }
    Some(out)
}

#[derive(Clone, Debug)]
struct Sps {
    id: u32,
    chroma_array_type: u32,
    log2_max_frame_num: u32,
    poc_type: u32,
    log2_max_poc_lsb: u32,
    delta_pic_order_always_zero: bool,
    max_num_ref_frames: u32,
}

impl Sps {
    fn parse(raw: &[u8]) -> Option<Self> {
        let mut r = BitReader::new(raw);
        let profile_idc = r.u(8)?;
        r.u(16)?; // constraint flags, level_idc
        let id = r.ue()?;
        let mut chroma_format_idc = 1;
        if matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            chroma_format_idc = r.ue()?;
            if chroma_format_idc == 3 && r.flag()? {
                return None; // separate_colour_plane_flag
            }
            r.ue()?; // bit_depth_luma_minus8
            r.ue()?; // bit_depth_chroma_minus8
            r.flag()?; // qpprime_y_zero_transform_bypass_flag
            if r.flag()? {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for k in 0..lists {
                    if r.flag()? {
                        r.skip_scaling_list(if k < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        let log2_max_frame_num = r.ue()?.saturating_add(4);
        let poc_type = r.ue()?;
        let mut log2_max_poc_lsb = 0;
        let mut delta_pic_order_always_zero = false;
        match poc_type {
            0 => log2_max_poc_lsb = r.ue()?.saturating_add(4),
            1 => {
                delta_pic_order_always_zero = r.flag()?;
                r.se()?;
                r.se()?;
                let cycle = r.ue()?;
                if cycle > 255 {
                    return None;
                }
                for _ in 0..cycle {
                    r.se()?;
                }
            }
            2 => {}
            _ => return None,
        }
        let max_num_ref_frames = r.ue()?;
        if r.flag()? {
            return None; // gaps_in_frame_num_value_allowed_flag: not modelled
        }
        r.ue()?; // pic_width_in_mbs_minus1
        r.ue()?; // pic_height_in_map_units_minus1
        if !r.flag()? {
            return None; // frame_mbs_only_flag 0: field pictures are not modelled
        }
        if log2_max_frame_num > 16 || log2_max_poc_lsb > 16 || max_num_ref_frames > 16 {
            return None;
        }
        Some(Self {
            id,
            chroma_array_type: chroma_format_idc,
            log2_max_frame_num,
            poc_type,
            log2_max_poc_lsb,
            delta_pic_order_always_zero,
            max_num_ref_frames,
        })
    }
}

#[derive(Clone, Debug)]
struct Pps {
    id: u32,
    sps_id: u32,
    cabac: bool,
    bottom_field_pic_order_present: bool,
    num_ref_idx_default: [u32; 2],
    weighted_pred: bool,
    weighted_bipred_idc: u32,
    deblocking_filter_control_present: bool,
    redundant_pic_cnt_present: bool,
}

impl Pps {
    fn parse(raw: &[u8]) -> Option<Self> {
        let mut r = BitReader::new(raw);
        let id = r.ue()?;
        let sps_id = r.ue()?;
        let cabac = r.flag()?;
        let bottom_field_pic_order_present = r.flag()?;
        if r.ue()? != 0 {
            return None; // slice groups
        }
        let l0 = r.ue()?.saturating_add(1);
        let l1 = r.ue()?.saturating_add(1);
        if l0 > 32 || l1 > 32 {
            return None;
        }
        let weighted_pred = r.flag()?;
        let weighted_bipred_idc = r.u(2)?;
        r.se()?; // pic_init_qp_minus26
        r.se()?; // pic_init_qs_minus26
        r.se()?; // chroma_qp_index_offset
        let deblocking_filter_control_present = r.flag()?;
        r.flag()?; // constrained_intra_pred_flag
        let redundant_pic_cnt_present = r.flag()?;
        Some(Self {
            id,
            sps_id,
            cabac,
            bottom_field_pic_order_present,
            num_ref_idx_default: [l0, l1],
            weighted_pred,
            weighted_bipred_idc,
            deblocking_filter_control_present,
            redundant_pic_cnt_present,
        })
    }
}

/// Parses a slice header (`raw`: the RBSP after the NAL header byte), noting where the fields the
/// rewrite replaces are.
fn parse_slice_header(
    raw: &[u8],
    sps: &Sps,
    all_pps: &[Pps],
    idr: bool,
    reference: bool,
) -> Option<SliceHeader> {
    let mut r = BitReader::new(raw);
    r.ue()?; // first_mb_in_slice
    let kind = match r.ue()? % 5 {
        0 => SliceKind::P,
        1 => SliceKind::B,
        2 => SliceKind::I,
        _ => return None, // SP / SI
    };
    let pps_id = r.ue()?;
    let pps = all_pps.iter().find(|p| p.id == pps_id)?;
    if pps.sps_id != sps.id {
        return None;
    }
    let frame_num_at = r.pos();
    let frame_num = r.u(sps.log2_max_frame_num)?;
    if idr {
        r.ue()?; // idr_pic_id
    }
    let mut poc_lsb = 0;
    if sps.poc_type == 0 {
        poc_lsb = r.u(sps.log2_max_poc_lsb)?;
        if pps.bottom_field_pic_order_present {
            r.se()?;
        }
    }
    if sps.poc_type == 1 && !sps.delta_pic_order_always_zero {
        r.se()?;
        if pps.bottom_field_pic_order_present {
            r.se()?;
        }
    }
    if pps.redundant_pic_cnt_present && r.ue()? != 0 {
        return None; // redundant pictures
    }
    if kind == SliceKind::B {
        r.flag()?; // direct_spatial_mv_pred_flag
    }
    let mut num_ref_idx_active = pps.num_ref_idx_default;
    if kind != SliceKind::I && r.flag()? {
        num_ref_idx_active[0] = r.ue()?.saturating_add(1);
        if kind == SliceKind::B {
            num_ref_idx_active[1] = r.ue()?.saturating_add(1);
        }
    }
    if num_ref_idx_active.iter().any(|&n| n > 32) {
        return None;
    }
    let modification_start = r.pos();
    let mut modifications: [Vec<Modification>; 2] = [Vec::new(), Vec::new()];
    for list in modifications.iter_mut().take(kind.list_count()) {
        if r.flag()? {
            loop {
                let idc = r.ue()?;
                if idc == 3 {
                    break;
                }
                if idc > 2 || list.len() > 32 {
                    return None;
                }
                let value = r.ue()?;
                list.push(Modification { idc, value });
            }
        }
    }
    let modification_end = r.pos();
    let weighted = (pps.weighted_pred && kind == SliceKind::P)
        || (pps.weighted_bipred_idc == 1 && kind == SliceKind::B);
    if weighted {
        r.ue()?; // luma_log2_weight_denom
        if sps.chroma_array_type != 0 {
            r.ue()?; // chroma_log2_weight_denom
        }
        for &count in num_ref_idx_active.iter().take(kind.list_count()) {
            for _ in 0..count {
                if r.flag()? {
                    r.se()?;
                    r.se()?;
                }
                if sps.chroma_array_type != 0 && r.flag()? {
                    for _ in 0..4 {
                        r.se()?;
                    }
                }
            }
        }
    }
    let marking_start = r.pos();
    let mut mmco = None;
    if reference {
        if idr {
            r.flag()?; // no_output_of_prior_pics_flag
            if r.flag()? {
                return None; // long_term_reference_flag
            }
        } else if r.flag()? {
            let mut ops = Vec::new();
            loop {
                match r.ue()? {
                    0 => break,
                    1 => ops.push(r.ue()?),
                    _ => return None, // long-term marking, MMCO 5
                }
                if ops.len() > 64 {
                    return None;
                }
            }
            mmco = Some(ops);
        }
    }
    let marking_end = r.pos();
    if pps.cabac && kind != SliceKind::I {
        r.ue()?; // cabac_init_idc
    }
    r.se()?; // slice_qp_delta
    if pps.deblocking_filter_control_present && r.ue()? != 1 {
        r.se()?; // slice_alpha_c0_offset_div2
        r.se()?; // slice_beta_offset_div2
    }
    let end = r.pos();
    if pps.cabac {
        // cabac_alignment_one_bit up to the byte boundary.
        while !r.pos().is_multiple_of(8) {
            if !r.flag()? {
                return None;
            }
        }
    }
    Some(SliceHeader {
        kind,
        num_ref_idx_active: match kind {
            SliceKind::P => [num_ref_idx_active[0], 0],
            SliceKind::B => num_ref_idx_active,
            SliceKind::I => [0, 0],
        },
        modifications,
        frame_num,
        poc_lsb,
        mmco,
        cabac: pps.cabac,
        at: HeaderAt {
            frame_num: frame_num_at,
            modification: (modification_start, modification_end),
            marking: (marking_start, marking_end),
            end,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_closes_over_references() {
        // 0 <- 1 <- 3, 2 references 1 and 3 (a B between), 4 references 3.
        let lists: Vec<Vec<[Vec<usize>; 2]>> = vec![
            vec![[vec![], vec![]]],
            vec![[vec![0], vec![]]],
            vec![[vec![1], vec![3]]],
            vec![[vec![1], vec![]]],
            vec![[vec![3], vec![]]],
        ];
        assert_eq!(needed(&lists, &[4]), vec![0, 1, 3, 4]);
        assert_eq!(needed(&lists, &[0]), vec![0]);
        assert_eq!(needed(&lists, &[2, 4]), vec![0, 1, 2, 3, 4]);
    }

    /// Damaged headers (bits flipped near the start of parameter sets and slices) and random
    /// bytes never panic: the plan is `None`, or it rewrites without panicking.
    #[test]
    fn damaged_headers_do_not_panic() {
        let g = super::super::gop::tests::h264_gop("h264_cavlc.mp4", 0);
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

    #[test]
    fn last_one_bit_finds_the_stop_bit() {
        assert_eq!(last_one_bit(&[0b1000_0000]), Some(0));
        assert_eq!(last_one_bit(&[0xff, 0b0001_0000, 0, 0]), Some(11));
        assert_eq!(last_one_bit(&[0, 0]), None);
    }
}
