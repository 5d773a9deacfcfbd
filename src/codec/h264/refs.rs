//! Decoding only the H.264 pictures a wanted frame depends on.
//!
//! Skipping unreferenced (`nal_ref_idc` 0) pictures is always safe. This goes further: a reference
//! picture that no picture on the way to the wanted one has in its active reference lists (in
//! x264's output, the B references of the earlier B-pyramids: about a third of the decoding) is
//! left out too.
//!
//! Leaving out a reference picture leaves a gap in `frame_num`, which openh264 treats as a lost
//! reference (it then refuses B-pictures). So the pictures fed after a left-out one get rewritten
//! slice headers ([`super::rewrite`]), making a conforming stream of their own:
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

use super::syntax::{Pps, SliceKind, Sps, Stream};

/// What to feed the decoder for some wanted pictures.
#[derive(Debug)]
pub struct Plan {
    /// Samples to feed, in decode order.
    pub fed: Vec<usize>,
    /// New slice-header fields for fed samples that come after a left-out reference picture.
    pub(super) edits: BTreeMap<usize, PictureEdit>,
    /// The parameter sets the rewrite parses the fed slice headers with.
    pub(super) sps: Sps,
    pub(super) pps: Vec<Pps>,
}

/// The slice-header fields one fed picture gets in the rewritten stream.
#[derive(Debug)]
pub(super) struct PictureEdit {
    pub(super) frame_num: u32,
    /// Per slice, per list: `abs_diff_pic_num_minus1` of each entry (all with idc 0).
    pub(super) lists: Vec<[Vec<u32>; 2]>,
    /// `difference_of_pic_nums_minus1` of each MMCO 1 (reference pictures only).
    pub(super) marking: Option<Vec<u32>>,
}

impl Plan {
    /// Whether some reference picture is left out (the fed stream has rewritten headers).
    pub fn skips_references(&self) -> bool {
        !self.edits.is_empty()
    }
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
}
