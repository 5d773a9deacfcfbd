//! Top-level boxes of the follow feed (`GET .../media`) as it arrives: the `free` markers that name
//! each fragment and the end of each `mdat`. Used by the analytics bench (follow latency) and the
//! ingest bench's soak mode (follow order and gaps).

use std::time::Instant;

type Res<T> = Result<T, super::common::BoxError>;

/// Top-level MP4 boxes of a byte stream that arrives in pieces.
#[derive(Default)]
pub struct BoxWalker {
    head: Vec<u8>,
    kind: [u8; 4],
    left: u64,
    in_box: bool,
    payload: Vec<u8>,
    fragment: Option<i64>,
}

impl BoxWalker {
    /// Feeds bytes that arrived at `now`; reports (fragment, now) at the end of each `mdat` and
    /// the fragment number at each `free` marker.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        now: Instant,
        ends: &mut Vec<(i64, Instant)>,
        markers: &mut Vec<i64>,
    ) -> Res<()> {
        while !data.is_empty() {
            if !self.in_box {
                let need = if self.head.len() >= 8 && self.head[..4] == [0, 0, 0, 1] {
                    16
                } else {
                    8
                };
                let take = (need - self.head.len()).min(data.len());
                self.head.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.head.len() < need {
                    continue;
                }
                let size32 = u32::from_be_bytes(self.head[..4].try_into().expect("4 bytes"));
                if size32 == 1 && need == 8 {
                    continue; // read the 64-bit size next
                }
                let size = if size32 == 1 {
                    u64::from_be_bytes(self.head[8..16].try_into().expect("8 bytes"))
                } else {
                    u64::from(size32)
                };
                if size < need as u64 {
                    return Err(format!("box size {size} (size 0 boxes are not expected)").into());
                }
                self.kind.copy_from_slice(&self.head[4..8]);
                self.left = size - need as u64;
                self.head.clear();
                self.in_box = true;
                self.payload.clear();
            }
            let take = (self.left.min(data.len() as u64)) as usize;
            if &self.kind == b"free" {
                self.payload.extend_from_slice(&data[..take]);
            }
            self.left -= take as u64;
            data = &data[take..];
            if self.left == 0 {
                self.in_box = false;
                match &self.kind {
                    // An empty `free` box is the feed's keepalive while it waits.
                    b"free" if self.payload.is_empty() => {}
                    b"free" => {
                        let v: serde_json::Value = serde_json::from_slice(&self.payload)
                            .map_err(|e| format!("free box is not the JSON marker: {e}"))?;
                        let n = v["fragment"].as_i64().ok_or("marker without fragment")?;
                        self.fragment = Some(n);
                        markers.push(n);
                    }
                    b"mdat" => {
                        if let Some(n) = self.fragment {
                            ends.push((n, now));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
