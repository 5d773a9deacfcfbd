//! RFC 6381 codec strings (the `CODECS` attribute of HLS playlists and the MIME `codecs` parameter)
//! from a sample entry, plus the NAL length size needed to walk H.264/H.265 samples.

use mp4_atom::{Avcc, Codec, Hvcc};

/// The RFC 6381 codec string for a sample entry; the sample entry's fourcc when we do not know how
/// to describe it more precisely (players then at least see the family).
pub(crate) fn codec_string(codec: &Codec) -> String {
    match codec {
        Codec::Avc1(c) => avc("avc1", &c.avcc),
        Codec::Avc3(c) => avc("avc3", &c.avcc),
        Codec::Hvc1(c) => hevc("hvc1", &c.hvcc),
        Codec::Hev1(c) => hevc("hev1", &c.hvcc),
        Codec::Mp4a(c) => {
            let dc = &c.esds.es_desc.dec_config;
            match &dc.dec_specific {
                // Object type 0x40 is MPEG-4 audio: the audio object type (2 = AAC-LC) follows.
                Some(ds) if dc.object_type_indication == 0x40 && ds.profile != 0 => {
                    format!("mp4a.40.{}", ds.profile)
                }
                _ => format!("mp4a.{:02x}", dc.object_type_indication),
            }
        }
        Codec::Opus(_) => "opus".to_string(),
        Codec::Flac(_) => "fLaC".to_string(),
        Codec::Ac3(_) => "ac-3".to_string(),
        Codec::Eac3(_) => "ec-3".to_string(),
        Codec::Av01(c) => {
            // av01.<profile>.<level><tier>.<bit depth> (AV1 codec ISO media file format binding).
            let a = &c.av1c;
            let depth = match (a.high_bitdepth, a.twelve_bit) {
                (true, true) => 12,
                (true, false) => 10,
                _ => 8,
            };
            let tier = if a.seq_tier_0 { 'H' } else { 'M' };
            format!(
                "av01.{}.{:02}{tier}.{depth:02}",
                a.seq_profile, a.seq_level_idx_0
            )
        }
        other => fourcc_of(other),
    }
}

/// Bytes per NAL unit length prefix in samples, for codecs that use length-prefixed NAL units.
pub(crate) fn nal_length_size(codec: &Codec) -> Option<u8> {
    match codec {
        Codec::Avc1(c) => Some(c.avcc.length_size),
        Codec::Avc3(c) => Some(c.avcc.length_size),
        Codec::Hvc1(c) => Some(c.hvcc.length_size_minus_one + 1),
        Codec::Hev1(c) => Some(c.hvcc.length_size_minus_one + 1),
        _ => None,
    }
}

/// `avc1.PPCCLL`: profile_idc, constraint flags byte, level_idc from the avcC, in lowercase hex.
fn avc(fourcc: &str, a: &Avcc) -> String {
    format!(
        "{fourcc}.{:02x}{:02x}{:02x}",
        a.avc_profile_indication, a.profile_compatibility, a.avc_level_indication
    )
}

/// ISO/IEC 14496-15 Annex E: `hvc1.[A-C]<profile_idc>.<compat flags, bit-reversed, hex>.<L|H><level>
/// [.<constraint byte>]*` with trailing zero constraint bytes omitted.
fn hevc(fourcc: &str, h: &Hvcc) -> String {
    let space = match h.general_profile_space {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    let compat = u32::from_be_bytes(h.general_profile_compatibility_flags).reverse_bits();
    let tier = if h.general_tier_flag { 'H' } else { 'L' };
    let mut s = format!(
        "{fourcc}.{space}{}.{compat:X}.{tier}{}",
        h.general_profile_idc, h.general_level_idc
    );
    let flags = &h.general_constraint_indicator_flags;
    let used = flags.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    for b in &flags[..used] {
        s.push_str(&format!(".{b:02X}"));
    }
    s
}

/// The sample entry's fourcc, for codecs without a more precise string.
fn fourcc_of(codec: &Codec) -> String {
    use mp4_atom::Encode;
    if let Codec::Unknown(fourcc, _) = codec {
        return fourcc.to_string();
    }
    // Every modelled sample entry encodes to a box whose type is its fourcc.
    let mut buf = Vec::new();
    match codec.encode(&mut buf) {
        Ok(()) if buf.len() >= 8 => buf[4..8].iter().map(|&b| char::from(b)).collect(),
        _ => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hevc_main_profile() {
        let h = Hvcc {
            general_profile_idc: 1,
            general_profile_compatibility_flags: [0x60, 0, 0, 0],
            general_constraint_indicator_flags: [0xb0, 0, 0, 0, 0, 0],
            general_level_idc: 93,
            ..Hvcc::new()
        };
        assert_eq!(hevc("hvc1", &h), "hvc1.1.6.L93.B0");
        let h = Hvcc {
            general_profile_space: 1,
            general_tier_flag: true,
            general_profile_idc: 2,
            general_profile_compatibility_flags: [0x20, 0, 0, 0],
            general_constraint_indicator_flags: [0; 6],
            general_level_idc: 120,
            ..Hvcc::new()
        };
        assert_eq!(hevc("hev1", &h), "hev1.A2.4.H120");
    }
}
