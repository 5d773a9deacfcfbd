//! Rewriting the slice headers of the pictures fed after a left-out reference picture, as a
//! [`Plan`] says (why and which fields: [`super::refs`]). Everything else in the NAL unit is
//! copied: CABAC slice data byte for byte after the realigned header, CAVLC slice data bit for
//! bit, since it is not byte-aligned.

use super::bits::{append_escaped, rbsp, BitWriter};
use super::nal::nal_units;
use super::refs::{PictureEdit, Plan};
use super::syntax::parse_slice_header;

impl Plan {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_one_bit_finds_the_stop_bit() {
        assert_eq!(last_one_bit(&[0b1000_0000]), Some(0));
        assert_eq!(last_one_bit(&[0xff, 0b0001_0000, 0, 0]), Some(11));
        assert_eq!(last_one_bit(&[0, 0]), None);
    }
}
