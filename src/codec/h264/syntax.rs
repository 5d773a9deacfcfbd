//! The H.264 syntax the reference planner reads (ITU-T H.264 7.3): sequence and picture
//! parameter sets and slice headers, only as far as planning and rewriting need them, with the
//! bit positions of the fields [`super::rewrite`] replaces. Whatever lies outside the modelled
//! subset (see [`super::refs`]) parses as `None`, so the caller falls back to feeding every
//! reference picture.

use super::bits::{rbsp, BitReader};
use super::nal::nal_units;

/// How much of a slice NAL unit is read to parse its header.
const HEADER_BYTES: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum SliceKind {
    P,
    B,
    I,
}

impl SliceKind {
    pub(super) fn list_count(self) -> usize {
        match self {
            SliceKind::P => 1,
            SliceKind::B => 2,
            SliceKind::I => 0,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Modification {
    pub(super) idc: u32,
    pub(super) value: u32,
}

/// Bit positions in a slice's RBSP (after the NAL header byte).
#[derive(Clone, Debug)]
pub(super) struct HeaderAt {
    pub(super) frame_num: usize,
    /// `ref_pic_list_modification()`, both lists.
    pub(super) modification: (usize, usize),
    /// `dec_ref_pic_marking()` (empty for unreferenced pictures).
    pub(super) marking: (usize, usize),
    /// The end of the slice header.
    pub(super) end: usize,
}

#[derive(Clone, Debug)]
pub(super) struct SliceHeader {
    pub(super) kind: SliceKind,
    pub(super) num_ref_idx_active: [u32; 2],
    pub(super) modifications: [Vec<Modification>; 2],
    pub(super) frame_num: u32,
    pub(super) poc_lsb: u32,
    /// `difference_of_pic_nums_minus1` of each MMCO 1; `None` for the sliding window.
    pub(super) mmco: Option<Vec<u32>>,
    pub(super) cabac: bool,
    pub(super) at: HeaderAt,
}

/// One sample's picture as its slice headers describe it.
#[derive(Clone, Debug)]
pub(super) struct CodedPicture {
    pub(super) sample: usize,
    pub(super) idr: bool,
    pub(super) reference: bool,
    pub(super) frame_num: u32,
    pub(super) poc_lsb: u32,
    pub(super) mmco: Option<Vec<u32>>,
    pub(super) slices: Vec<SliceHeader>,
}

/// The parameter sets and the pictures of a run of samples (decode order, from the keyframe).
pub(super) struct Stream {
    pub(super) sps: Sps,
    pub(super) pps: Vec<Pps>,
    pub(super) pictures: Vec<CodedPicture>,
}

impl Stream {
    pub(super) fn parse(
        parameter_sets: &[Vec<u8>],
        samples: &[&[u8]],
        length_size: u8,
    ) -> Option<Self> {
        let mut sps: Option<Sps> = None;
        let mut pps: Vec<Pps> = Vec::new();
        for ps in parameter_sets {
            take_parameter_set(ps, &mut sps, &mut pps)?;
        }
        let mut pictures = Vec::with_capacity(samples.len());
        for (i, sample) in samples.iter().enumerate() {
            let mut pic: Option<CodedPicture> = None;
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
                                pic = Some(CodedPicture {
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

#[derive(Clone, Debug)]
pub(super) struct Sps {
    id: u32,
    chroma_array_type: u32,
    pub(super) log2_max_frame_num: u32,
    pub(super) poc_type: u32,
    pub(super) log2_max_poc_lsb: u32,
    delta_pic_order_always_zero: bool,
    pub(super) max_num_ref_frames: u32,
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
pub(super) struct Pps {
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
pub(super) fn parse_slice_header(
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
