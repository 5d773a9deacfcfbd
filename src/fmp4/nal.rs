//! Looking inside a video sample's NAL units, to confirm a keyframe when the only sync information is
//! the `trex` default (which many muxers set once for the whole stream and never mean per sample).

/// Which NAL unit header syntax a codec string implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NalSyntax {
    H264,
    H265,
}

impl NalSyntax {
    pub fn from_codec(codec: &str) -> Option<Self> {
        match codec.get(..4)? {
            "avc1" | "avc3" => Some(NalSyntax::H264),
            "hvc1" | "hev1" => Some(NalSyntax::H265),
            _ => None,
        }
    }
}

/// Whether the sample's first picture NAL unit is a random access point: H.264 IDR (type 5) or
/// H.265 IRAP (types 16..=23). `None` if the sample has no picture NAL unit or is not parseable.
pub(crate) fn is_random_access(syntax: NalSyntax, length_size: u8, sample: &[u8]) -> Option<bool> {
    let len_size = usize::from(length_size);
    if !(1..=4).contains(&len_size) {
        return None;
    }
    let mut pos = 0usize;
    while pos + len_size <= sample.len() {
        let len = sample[pos..pos + len_size]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        pos += len_size;
        let nal = sample.get(pos..pos.checked_add(len)?)?;
        pos += len;
        let Some(&first) = nal.first() else {
            continue;
        };
        match syntax {
            H264 => {
                let t = first & 0x1f;
                if (1..=5).contains(&t) {
                    return Some(t == 5);
                }
            }
            H265 => {
                let t = (first >> 1) & 0x3f;
                if t <= 31 {
                    return Some((16..=23).contains(&t));
                }
            }
        }
    }
    None
}

use NalSyntax::{H264, H265};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_and_h265() {
        // SPS, then IDR slice.
        let s = [0, 0, 0, 2, 0x67, 0x42, 0, 0, 0, 1, 0x65];
        assert_eq!(is_random_access(H264, 4, &s), Some(true));
        let s = [0, 1, 0x41];
        assert_eq!(is_random_access(H264, 2, &s), Some(false));
        // HEVC VPS (32) then IDR_W_RADL (19): header byte = type << 1.
        let s = [0, 0, 0, 2, 32 << 1, 1, 0, 0, 0, 2, 19 << 1, 1];
        assert_eq!(is_random_access(H265, 4, &s), Some(true));
        let s = [0, 0, 0, 2, 1 << 1, 1];
        assert_eq!(is_random_access(H265, 4, &s), Some(false));
        // Truncated length.
        assert_eq!(is_random_access(H264, 4, &[0, 0, 0, 9, 0x65]), None);
        assert_eq!(is_random_access(H264, 4, &[0xff, 0xff, 0xff, 0xff]), None);
    }
}
