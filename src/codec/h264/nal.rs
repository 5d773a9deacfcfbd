//! H.264 NAL units as MP4 samples carry them (each after a big-endian length prefix of the
//! `avcC`'s size): walking them, turning them into Annex B for openh264, and telling whether a
//! sample is referenced at all.

use crate::codec::error::DecodeError;

/// Length-prefixed NAL units of one sample.
pub(super) fn nal_units(sample: &[u8], length_size: u8) -> Option<Vec<&[u8]>> {
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

/// Whether an H.264 sample can be left out without changing any other picture: every one of its
/// slices has `nal_ref_idc` 0. A sample that cannot be parsed counts as needed.
pub fn droppable(sample: &[u8], length_size: u8) -> bool {
    let n = usize::from(length_size);
    let mut pos = 0;
    let mut slices = 0;
    while pos + n <= sample.len() && n > 0 {
        let len = sample[pos..pos + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        pos += n;
        let Some(&header) = sample.get(pos) else {
            return false;
        };
        let (ref_idc, nal_type) = ((header >> 5) & 3, header & 0x1f);
        if matches!(nal_type, 1..=5) {
            if ref_idc != 0 || nal_type == 5 {
                return false;
            }
            slices += 1;
        }
        pos += len;
    }
    slices > 0 && pos == sample.len()
}

/// Appends `sample` (NAL units with `length_size`-byte big-endian length prefixes) to `out` as
/// Annex B (each NAL unit after a 4-byte start code).
pub fn avcc_to_annexb(
    sample: &[u8],
    length_size: u8,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let n = usize::from(length_size);
    if !(1..=4).contains(&n) {
        return Err(DecodeError(format!(
            "NAL length size {length_size} in the avcC is not 1, 2, 3 or 4"
        )));
    }
    let mut pos = 0;
    while pos < sample.len() {
        let prefix = sample.get(pos..pos + n).ok_or_else(|| {
            DecodeError(format!("a NAL length prefix at byte {pos} is cut short"))
        })?;
        let len = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        pos += n;
        let nal = sample.get(pos..pos + len).ok_or_else(|| {
            DecodeError(format!(
                "a NAL unit of {len} bytes at byte {pos} runs past the end of its sample ({} bytes)",
                sample.len()
            ))
        })?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        pos += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annexb_conversion() {
        let mut out = Vec::new();
        avcc_to_annexb(&[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x06], 4, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x65, 1, 0, 0, 0, 1, 0x06]);
        out.clear();
        avcc_to_annexb(&[0, 1, 0x41], 2, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x41]);
        assert!(avcc_to_annexb(&[0, 0, 0, 9, 0x65], 4, &mut out).is_err());
        assert!(avcc_to_annexb(&[0, 0], 4, &mut out).is_err());
        assert!(avcc_to_annexb(&[1], 0, &mut out).is_err());
    }
}
