//! Which pictures of an H.264 GOP a picture can reference, read from the slice headers, so a
//! frame request decodes only the pictures its frame depends on.
//!
//! Skipping unreferenced (`nal_ref_idc` 0) pictures is always safe. This goes further: a reference
//! picture (say a B-frame in a B-pyramid) that no picture on the way to the wanted one lists in its
//! active reference lists is skipped too. In x264's default output that is every B reference
//! before a wanted P-picture, about a quarter of the decoding; openh264 cannot decode a B-picture
//! after a left-out reference, so B-pictures still get every reference picture before them.
//!
//! The lists are rebuilt the way the standard builds them (ITU-T H.264 8.2.4: initial order, then
//! `ref_pic_list_modification`, cut to `num_ref_idx_active`), with the reference store kept by the
//! sliding window and `memory_management_control_operation` 1. Display order stands in for
//! picture order count. Anything outside that (field pictures, long-term references, other MMCOs,
//! slice groups, `frame_num` gaps, a header that does not parse) makes [`reference_sets`] return
//! `None`, and the caller keeps every reference picture.
//!
//! [`plan_is_safe`] then replays the decode with only the chosen pictures (as openh264 does it:
//! no placeholders for the `frame_num` gaps, and no B-picture after a gap) and checks that every
//! fed slice gets the same active reference pictures as in the full stream.

use std::collections::BTreeSet;

/// Per sample (decode order), the samples its slices can reference; `None` when the GOP uses
/// something this analysis does not model.
pub fn reference_sets(
    parameter_sets: &[Vec<u8>],
    samples: &[&[u8]],
    length_size: u8,
    display_rank: &[usize],
) -> Option<Vec<BTreeSet<usize>>> {
    let stream = Stream::parse(parameter_sets, samples, length_size)?;
    let mut refs = vec![BTreeSet::new(); samples.len()];
    replay(&stream, display_rank, Some, |i, active| {
        refs[i].extend(active.iter().copied());
        true
    })?;
    Some(refs)
}

/// The samples to decode for `wanted`: those, the first (the keyframe), and everything they
/// reference, transitively. Sorted (decode order).
pub fn needed_samples(refs: &[BTreeSet<usize>], wanted: &[usize]) -> Vec<usize> {
    let mut needed = vec![false; refs.len()];
    for &w in wanted {
        if let Some(n) = needed.get_mut(w) {
            *n = true;
        }
    }
    if let Some(first) = needed.first_mut() {
        *first = true;
    }
    // References always come earlier in decode order: one backward pass closes the set.
    for i in (0..refs.len()).rev() {
        if needed[i] {
            for &r in &refs[i] {
                if r < i {
                    needed[r] = true;
                }
            }
        }
    }
    (0..refs.len()).filter(|&i| needed[i]).collect()
}

/// Whether decoding only `fed` gives each fed slice the same active references as the full
/// stream (see the module notes).
pub fn plan_is_safe(
    parameter_sets: &[Vec<u8>],
    samples: &[&[u8]],
    length_size: u8,
    display_rank: &[usize],
    fed: &[usize],
) -> bool {
    let Some(stream) = Stream::parse(parameter_sets, samples, length_size) else {
        return false;
    };
    let Some(full) = reference_lists(&stream, display_rank, Some, false) else {
        return false;
    };
    let fed_set: BTreeSet<usize> = fed.iter().copied().collect();
    // openh264 marks every picture decoded after a frame_num gap incomplete, and refuses to
    // predict B-slices from incomplete pictures ("Ref Picture for B-Slice is lost"): no fed
    // B-picture may come after a left-out reference picture.
    let first_gap = stream
        .pictures
        .iter()
        .find(|p| p.reference && !fed_set.contains(&p.sample))
        .map(|p| p.sample);
    if let Some(gap) = first_gap {
        let b_after_gap = stream.pictures.iter().any(|p| {
            p.sample > gap
                && fed_set.contains(&p.sample)
                && p.slices.iter().any(|s| s.kind == SliceKind::B)
        });
        if b_after_gap {
            return false;
        }
    }
    // openh264 does not fill frame_num gaps with placeholder pictures: its store holds only the
    // pictures it was given.
    let pruned_stream = stream.subset(&fed_set);
    let Some(pruned) = reference_lists(&pruned_stream, display_rank, Some, true) else {
        return false;
    };
    fed.iter().all(|i| {
        let want = full.get(i);
        want.is_some() && want == pruned.get(i)
    })
}

/// Active reference lists (as sample indexes; `None` for a placeholder or an empty slot) of each
/// slice, by sample.
type Lists = std::collections::BTreeMap<usize, Vec<[Vec<Option<usize>>; 2]>>;

fn reference_lists(
    stream: &Stream,
    display_rank: &[usize],
    identity: impl Fn(usize) -> Option<usize>,
    gaps_expected: bool,
) -> Option<Lists> {
    let mut lists = Lists::new();
    replay_lists(
        stream,
        display_rank,
        &identity,
        gaps_expected,
        |i, slice_lists| {
            lists.entry(i).or_default().push(slice_lists);
        },
    )?;
    Some(lists)
}

fn replay(
    stream: &Stream,
    display_rank: &[usize],
    identity: impl Fn(usize) -> Option<usize>,
    mut on_slice: impl FnMut(usize, &[usize]) -> bool,
) -> Option<()> {
    let mut ok = true;
    replay_lists(stream, display_rank, &identity, false, |i, lists| {
        let active: Vec<usize> = lists.iter().flatten().flatten().copied().collect();
        ok &= on_slice(i, &active);
    })?;
    ok.then_some(())
}

/// One reference picture in the store.
#[derive(Clone, Copy)]
struct Held {
    sample: usize,
    frame_num: u32,
}

/// Walks the pictures in decode order, keeping the short-term reference store, and hands each
/// slice's active lists to `on_slice`. `identity` maps a stored sample to what the lists report
/// (`None` marks a placeholder).
fn replay_lists(
    stream: &Stream,
    display_rank: &[usize],
    identity: &dyn Fn(usize) -> Option<usize>,
    gaps_expected: bool,
    mut on_slice: impl FnMut(usize, [Vec<Option<usize>>; 2]),
) -> Option<()> {
    let max_frame_num = 1u32 << stream.sps.log2_max_frame_num;
    let max_refs = stream.sps.max_num_ref_frames.max(1) as usize;
    let mut store: Vec<Held> = Vec::new();
    let mut prev_ref_frame_num: Option<u32> = None;
    for pic in &stream.pictures {
        let cur = pic.frame_num;
        if pic.idr {
            store.clear();
        } else {
            let prev = prev_ref_frame_num?;
            if !gaps_expected && cur != prev && cur != (prev + 1) % max_frame_num {
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
        for slice in &pic.slices {
            let mut lists: [Vec<Option<usize>>; 2] = [Vec::new(), Vec::new()];
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
            for (list, out) in lists.iter_mut().enumerate().take(slice.kind.list_count()) {
                let init = std::mem::take(&mut initial[list]);
                let active = slice.num_ref_idx_active[list] as usize;
                let mut entries: Vec<Option<Held>> = init.into_iter().map(Some).collect();
                entries.truncate(active);
                entries.resize(active, None);
                let mut pred = i64::from(cur);
                for (ref_idx, m) in slice.modifications[list].iter().enumerate() {
                    let max = i64::from(max_frame_num);
                    let no_wrap = match m.idc {
                        0 => {
                            let v = pred - (i64::from(m.value) + 1);
                            if v < 0 {
                                v + max
                            } else {
                                v
                            }
                        }
                        1 => {
                            let v = pred + (i64::from(m.value) + 1);
                            if v >= max {
                                v - max
                            } else {
                                v
                            }
                        }
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
                *out = entries
                    .into_iter()
                    .map(|e| e.and_then(|h| identity(h.sample)))
                    .collect();
            }
            on_slice(pic.sample, lists);
        }
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
            prev_ref_frame_num = Some(cur);
        } else if prev_ref_frame_num.is_none() {
            return None;
        }
    }
    Some(())
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

#[derive(Clone, Debug)]
struct Slice {
    kind: SliceKind,
    num_ref_idx_active: [u32; 2],
    modifications: [Vec<Modification>; 2],
}

#[derive(Clone, Debug)]
struct Pic {
    sample: usize,
    idr: bool,
    reference: bool,
    frame_num: u32,
    /// `difference_of_pic_nums_minus1` of each MMCO 1; `None` for the sliding window.
    mmco: Option<Vec<u32>>,
    slices: Vec<Slice>,
}

struct Stream {
    sps: Sps,
    pictures: Vec<Pic>,
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
            let mut pic: Option<Pic> = None;
            for nal in nal_units(sample, length_size)? {
                let header = *nal.first()?;
                let (ref_idc, nal_type) = ((header >> 5) & 3, header & 0x1f);
                match nal_type {
                    7 | 8 => take_parameter_set(nal, &mut sps, &mut pps)?,
                    1 | 5 => {
                        let sps = sps.as_ref()?;
                        let (slice, frame_num, mmco) =
                            parse_slice_header(nal, sps, &pps, nal_type == 5, ref_idc != 0)?;
                        match &mut pic {
                            None => {
                                pic = Some(Pic {
                                    sample: i,
                                    idr: nal_type == 5,
                                    reference: ref_idc != 0,
                                    frame_num,
                                    mmco,
                                    slices: vec![slice],
                                })
                            }
                            Some(p) => {
                                if p.frame_num != frame_num || p.reference != (ref_idc != 0) {
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
            pictures,
        })
    }

    /// The same stream with only the pictures of `keep`.
    fn subset(&self, keep: &BTreeSet<usize>) -> Self {
        Self {
            sps: self.sps.clone(),
            pictures: self
                .pictures
                .iter()
                .filter(|p| keep.contains(&p.sample))
                .cloned()
                .collect(),
        }
    }
}

/// Keeps an SPS or PPS (a second, different SPS is not modelled).
fn take_parameter_set(nal: &[u8], sps: &mut Option<Sps>, pps: &mut Vec<Pps>) -> Option<()> {
    match nal.first()? & 0x1f {
        7 => {
            let s = Sps::parse(nal)?;
            if sps.as_ref().is_some_and(|old| old.id != s.id) {
                return None;
            }
            *sps = Some(s);
        }
        8 => {
            let p = Pps::parse(nal)?;
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
    fn parse(nal: &[u8]) -> Option<Self> {
        let mut r = Bits::new(nal.get(1..)?);
        let profile_idc = r.u(8)?;
        r.u(16)?; // constraint flags, level_idc
        let id = r.ue()?;
        let mut chroma_format_idc = 1;
        if matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            chroma_format_idc = r.ue()?;
            let mut separate_colour_plane = false;
            if chroma_format_idc == 3 {
                separate_colour_plane = r.flag()?;
            }
            if separate_colour_plane {
                return None;
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
        let log2_max_frame_num = r.ue()? + 4;
        let poc_type = r.ue()?;
        let mut log2_max_poc_lsb = 0;
        let mut delta_pic_order_always_zero = false;
        match poc_type {
            0 => log2_max_poc_lsb = r.ue()? + 4,
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
        if log2_max_frame_num > 16 || max_num_ref_frames > 16 {
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
    bottom_field_pic_order_present: bool,
    num_ref_idx_default: [u32; 2],
    weighted_pred: bool,
    weighted_bipred_idc: u32,
    redundant_pic_cnt_present: bool,
}

impl Pps {
    fn parse(nal: &[u8]) -> Option<Self> {
        let mut r = Bits::new(nal.get(1..)?);
        let id = r.ue()?;
        let sps_id = r.ue()?;
        r.flag()?; // entropy_coding_mode_flag
        let bottom_field_pic_order_present = r.flag()?;
        if r.ue()? != 0 {
            return None; // slice groups
        }
        let l0 = r.ue()? + 1;
        let l1 = r.ue()? + 1;
        let weighted_pred = r.flag()?;
        let weighted_bipred_idc = r.u(2)?;
        r.se()?; // pic_init_qp_minus26
        r.se()?; // pic_init_qs_minus26
        r.se()?; // chroma_qp_index_offset
        r.flag()?; // deblocking_filter_control_present_flag
        r.flag()?; // constrained_intra_pred_flag
        let redundant_pic_cnt_present = r.flag()?;
        Some(Self {
            id,
            sps_id,
            bottom_field_pic_order_present,
            num_ref_idx_default: [l0, l1],
            weighted_pred,
            weighted_bipred_idc,
            redundant_pic_cnt_present,
        })
    }
}

/// Reads a slice header up to `dec_ref_pic_marking`: the slice's list facts, its `frame_num`
/// and its MMCO 1 operations.
fn parse_slice_header(
    nal: &[u8],
    sps: &Sps,
    all_pps: &[Pps],
    idr: bool,
    reference: bool,
) -> Option<(Slice, u32, Option<Vec<u32>>)> {
    let mut r = Bits::new(nal.get(1..)?);
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
    let frame_num = r.u(sps.log2_max_frame_num)?;
    if idr {
        r.ue()?; // idr_pic_id
    }
    if sps.poc_type == 0 {
        r.u(sps.log2_max_poc_lsb)?;
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
        num_ref_idx_active[0] = r.ue()? + 1;
        if kind == SliceKind::B {
            num_ref_idx_active[1] = r.ue()? + 1;
        }
    }
    if num_ref_idx_active.iter().any(|&n| n > 32) {
        return None;
    }
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
    let slice = Slice {
        kind,
        num_ref_idx_active: match kind {
            SliceKind::P => [num_ref_idx_active[0], 0],
            SliceKind::B => num_ref_idx_active,
            SliceKind::I => [0, 0],
        },
        modifications,
    };
    Some((slice, frame_num, mmco))
}

/// An RBSP bit reader over a NAL unit's payload (emulation prevention bytes removed as read).
struct Bits<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u32,
    zeros: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
        }
    }

    fn bit(&mut self) -> Option<u32> {
        if self.bit == 0 {
            // 0x000003: the 03 is an emulation prevention byte, not data.
            if self.zeros >= 2 && self.data.get(self.byte) == Some(&3) {
                self.byte += 1;
                self.zeros = 0;
            }
            let b = *self.data.get(self.byte)?;
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
        }
        let b = *self.data.get(self.byte)?;
        let v = u32::from((b >> (7 - self.bit)) & 1);
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
        }
        Some(v)
    }

    fn u(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.u(zeros)?;
        ((1u64 << zeros) - 1 + u64::from(rest)).try_into().ok()
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    fn skip_scaling_list(&mut self, size: usize) -> Option<()> {
        let (mut last, mut next) = (8i64, 8i64);
        for _ in 0..size {
            if next != 0 {
                next = (last + self.se()? + 256) % 256;
            }
            if next != 0 {
                last = next;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_and_emulation_prevention() {
        // 1 | 010 | 011 | 00100 -> ue 0, 1, 2, 3
        let mut r = Bits::new(&[0b1010_0110, 0b0100_0000]);
        assert_eq!(
            (r.ue(), r.ue(), r.ue(), r.ue()),
            (Some(0), Some(1), Some(2), Some(3))
        );
        // se: 1 -> 0, 010 -> 1, 011 -> -1
        let mut r = Bits::new(&[0b1010_0110]);
        assert_eq!((r.se(), r.se(), r.se()), (Some(0), Some(1), Some(-1)));
        // 00 00 03 01: the 03 is skipped, so the bytes read are 00 00 01.
        let mut r = Bits::new(&[0, 0, 3, 1]);
        assert_eq!(r.u(24), Some(1));
        assert_eq!(r.bit(), None);
    }

    #[test]
    fn needed_closes_over_references() {
        // 0 <- 1 <- 3, 2 references 1 and 3 (a B between), 4 references 3.
        let refs: Vec<BTreeSet<usize>> = vec![
            BTreeSet::new(),
            [0].into(),
            [1, 3].into(),
            [1].into(),
            [3].into(),
        ];
        assert_eq!(needed_samples(&refs, &[4]), vec![0, 1, 3, 4]);
        assert_eq!(needed_samples(&refs, &[0]), vec![0]);
        assert_eq!(needed_samples(&refs, &[2, 4]), vec![0, 1, 2, 3, 4]);
    }
}
