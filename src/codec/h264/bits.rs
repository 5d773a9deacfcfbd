//! Bit-level reading and writing of H.264 NAL unit payloads (RBSP), for parsing parameter sets
//! and slice headers ([`super::syntax`]) and for the slice-header rewrite ([`super::rewrite`]).

/// The RBSP of a NAL unit payload (after its header byte): emulation prevention bytes (the `03`
/// of `00 00 03`) removed. Stops after `limit` payload bytes.
pub fn rbsp(payload: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len().min(limit));
    let mut zeros = 0;
    for &b in payload.iter().take(limit) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Appends `rbsp` to `out` with emulation prevention bytes inserted where the RBSP would
/// otherwise contain a start code prefix (`00 00` followed by `00`–`03`), and a final `03` after
/// a trailing `00` (a `cabac_zero_word`), as H.264 7.4.1 asks.
pub fn append_escaped(rbsp: &[u8], out: &mut Vec<u8>) {
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    if rbsp.last() == Some(&0) {
        out.push(3);
    }
}

/// Reads bits MSB first from an RBSP.
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Position in bits from the start.
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn bit(&mut self) -> Option<u32> {
        let b = *self.data.get(self.pos / 8)?;
        let v = u32::from((b >> (7 - self.pos % 8)) & 1);
        self.pos += 1;
        Some(v)
    }

    pub fn u(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    pub fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    pub fn ue(&mut self) -> Option<u32> {
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

    pub fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    pub fn skip_scaling_list(&mut self, size: usize) -> Option<()> {
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

/// Writes bits MSB first.
#[derive(Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            bits: 0,
        }
    }

    pub fn bit(&mut self, v: u32) {
        if self.bits.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if v & 1 == 1 {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 0x80 >> (self.bits % 8);
        }
        self.bits += 1;
    }

    pub fn u(&mut self, n: u32, v: u32) {
        for k in (0..n).rev() {
            self.bit((v >> k) & 1);
        }
    }

    pub fn ue(&mut self, v: u32) {
        let x = u64::from(v) + 1;
        let len = 64 - x.leading_zeros();
        for _ in 1..len {
            self.bit(0);
        }
        for k in (0..len).rev() {
            self.bit(((x >> k) & 1) as u32);
        }
    }

    /// Copies bits `[from, to)` of `src`.
    pub fn copy_bits(&mut self, src: &[u8], from: usize, to: usize) {
        let mut pos = from;
        let bit_at = |p: usize| u32::from((src[p / 8] >> (7 - p % 8)) & 1);
        // Bit by bit until this writer is byte-aligned, then a byte at a time.
        while pos < to && !self.bits.is_multiple_of(8) {
            self.bit(bit_at(pos));
            pos += 1;
        }
        let whole = (to - pos) / 8;
        if pos.is_multiple_of(8) {
            self.bytes.extend_from_slice(&src[pos / 8..pos / 8 + whole]);
        } else {
            let shift = pos % 8;
            self.bytes.extend((0..whole).map(|k| {
                let i = pos / 8 + k;
                (src[i] << shift) | src.get(i + 1).map_or(0, |n| n >> (8 - shift))
            }));
        }
        self.bits += whole * 8;
        pos += whole * 8;
        while pos < to {
            self.bit(bit_at(pos));
            pos += 1;
        }
    }

    pub fn is_aligned(&self) -> bool {
        self.bits.is_multiple_of(8)
    }

    /// Appends whole bytes (the writer must be byte-aligned).
    pub fn append_bytes(&mut self, bytes: &[u8]) {
        debug_assert!(self.is_aligned());
        self.bytes.extend_from_slice(bytes);
        self.bits += bytes.len() * 8;
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_round_trip() {
        let mut w = BitWriter::default();
        for v in [0, 1, 2, 3, 7, 8, 254, 255, 65_535, 1 << 20] {
            w.ue(v);
        }
        w.u(5, 0b10110);
        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes);
        for v in [0, 1, 2, 3, 7, 8, 254, 255, 65_535, 1 << 20] {
            assert_eq!(r.ue(), Some(v));
        }
        assert_eq!(r.u(5), Some(0b10110));
        // se: 1 -> 0, 010 -> 1, 011 -> -1
        let mut r = BitReader::new(&[0b1010_0110]);
        assert_eq!((r.se(), r.se(), r.se()), (Some(0), Some(1), Some(-1)));
    }

    #[test]
    fn emulation_prevention_round_trip() {
        let payload = [
            0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03, 0x00, 0x05, 0x00, 0x00,
        ];
        let raw = rbsp(&payload, usize::MAX);
        assert_eq!(raw, [0, 0, 1, 0, 0, 0, 5, 0, 0]);
        let mut back = Vec::new();
        append_escaped(&raw, &mut back);
        // A trailing 00 gets a final 03.
        assert_eq!(back, [&payload[..], &[3]].concat());
        assert_eq!(rbsp(&payload, 4), [0, 0, 1]);
    }

    #[test]
    fn copy_bits_at_any_alignment() {
        let src: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let bit = |p: usize| (src[p / 8] >> (7 - p % 8)) & 1;
        for lead in 0..9 {
            for (from, to) in [(0, 320), (3, 317), (8, 200), (13, 14), (5, 5)] {
                let mut w = BitWriter::default();
                w.u(lead, 0);
                w.copy_bits(&src, from, to);
                let out = w.into_bytes();
                for k in 0..to - from {
                    let p = lead as usize + k;
                    assert_eq!(
                        (out[p / 8] >> (7 - p % 8)) & 1,
                        bit(from + k),
                        "lead {lead} range {from}..{to} bit {k}"
                    );
                }
            }
        }
    }
}
