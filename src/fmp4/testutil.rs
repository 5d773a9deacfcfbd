//! Helpers shared by the tests of this module: the sample files and whole-stream splitting.

use super::{Event, Fmp4Error, Splitter};

/// The fragmented samples (h264_progressive.mp4 is refused and tested on its own).
pub(crate) const FRAGMENTED: &[&str] = &[
    "h264_aac_gop2s.mp4",
    "h264_cmaf_chunks.mp4",
    "h265_aac.mp4",
    "aac_only.mp4",
    "h264_prft.mp4",
];

/// A limit large enough for every sample.
pub(crate) const LIMIT: u64 = 16 << 20;

pub(crate) fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Splits `data` pushed in chunks of the given sizes (cycled), then finishes.
pub(crate) fn split_chunked(data: &[u8], sizes: &[usize]) -> Result<Vec<Event>, Fmp4Error> {
    let mut s = Splitter::new(LIMIT);
    let mut out = Vec::new();
    let mut pos = 0;
    for &n in sizes.iter().cycle() {
        if pos >= data.len() {
            break;
        }
        let end = (pos + n.max(1)).min(data.len());
        s.push(&data[pos..end], &mut out)?;
        pos = end;
    }
    s.finish()?;
    assert_eq!(s.bytes_consumed(), data.len() as u64);
    Ok(out)
}

pub(crate) fn split(data: &[u8]) -> Result<Vec<Event>, Fmp4Error> {
    split_chunked(data, &[data.len().max(1)])
}

/// Deterministic pseudo-random numbers for tests (xorshift64*).
pub(crate) struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One traf of a hand-built fragment: one trun, default-base-is-moof unless `implicit_base`.
pub(crate) struct SynthTraf {
    pub track_id: u32,
    pub sample_sizes: Vec<u32>,
    pub sample_duration: u32,
    pub tfdt: Option<u64>,
}

impl SynthTraf {
    pub fn simple(track_id: u32, size: u32) -> Self {
        SynthTraf {
            track_id,
            sample_sizes: vec![size],
            sample_duration: 512,
            tfdt: Some(1000),
        }
    }
}

fn boxed(t: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(t);
    v.extend_from_slice(body);
    v
}

/// A moof+mdat whose trafs take their flags from trex (none in tfhd or trun), data laid out in
/// traf order in the mdat.
pub(crate) fn synth_fragment(trafs: &[SynthTraf], mdat_payload: &[u8]) -> Vec<u8> {
    let build = |moof_len: usize| {
        let mut body = boxed(b"mfhd", &[0, 0, 0, 0, 0, 0, 0, 7]);
        let mut data_pos = moof_len + 8;
        for t in trafs {
            // tfhd: default-base-is-moof + default duration.
            let mut tfhd = vec![0, 0x02, 0, 0x08];
            tfhd.extend_from_slice(&t.track_id.to_be_bytes());
            tfhd.extend_from_slice(&t.sample_duration.to_be_bytes());
            let mut traf = boxed(b"tfhd", &tfhd);
            if let Some(v) = t.tfdt {
                let mut b = vec![1, 0, 0, 0];
                b.extend_from_slice(&v.to_be_bytes());
                traf.extend(boxed(b"tfdt", &b));
            }
            // trun: data offset + per-sample sizes.
            let mut trun = vec![0, 0, 0x02, 0x01];
            trun.extend_from_slice(&(t.sample_sizes.len() as u32).to_be_bytes());
            trun.extend_from_slice(&(data_pos as i32).to_be_bytes());
            for s in &t.sample_sizes {
                trun.extend_from_slice(&s.to_be_bytes());
                data_pos += *s as usize;
            }
            traf.extend(boxed(b"trun", &trun));
            body.extend(boxed(b"traf", &traf));
        }
        boxed(b"moof", &body)
    };
    let moof = build(build(0).len());
    let mut out = moof;
    out.extend(boxed(b"mdat", mdat_payload));
    out
}
