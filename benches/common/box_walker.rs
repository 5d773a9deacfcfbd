//! Top-level boxes of the follow feed (`GET .../media`) as it arrives: the `free` markers that name
//! each fragment and the end of each `mdat`. Used by the analytics bench (follow latency) and the
//! ingest bench's soak mode (follow order and gaps).

use std::time::Instant;

use tapedeck::fmp4::{read_header, HeaderProblem};

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
                // 8 header bytes, then 8 more when the reader asks for a 64-bit size.
                let need = if self.head.len() < 8 { 8 } else { 16 };
                let take = (need - self.head.len()).min(data.len());
                self.head.extend_from_slice(&data[..take]);
                data = &data[take..];
                let header = match read_header(&self.head) {
                    Ok(header) => header,
                    Err(HeaderProblem::Incomplete) => continue,
                    Err(HeaderProblem::BadSize(size)) => {
                        return Err(format!("box size {size}").into())
                    }
                    Err(HeaderProblem::BadType) => {
                        return Err("a box type that is not ASCII".into())
                    }
                };
                let size = header
                    .size
                    .ok_or("box size 0 (size 0 boxes are not expected)")?;
                self.kind = header.box_type;
                self.left = size - header.header_len as u64;
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
