//! A clip as the caller serves it: pieces of built bytes and of stored fragments, each with its
//! offset in the clip, so a `Range` request finds its first piece by binary search.

use bytes::Bytes;

/// Where a run of output bytes comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes built by the builder (headers, rebased moofs).
    Bytes(Bytes),
    /// `len` bytes at `offset` of the `index`-th fragment pushed into the builder.
    Fragment { index: usize, offset: u64, len: u64 },
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::Fragment { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A clip as a sequence of pieces, with the offset where each one starts.
#[derive(Debug, Clone)]
pub struct ClipPlan {
    pub pieces: Vec<Piece>,
    /// `starts[i]` is the clip offset of `pieces[i]`.
    pub starts: Vec<u64>,
    /// Total size of the clip in bytes.
    pub len: u64,
    /// Presentation length: from the clip's zero to the end of its longest track, µs.
    pub duration_us: i64,
}

impl ClipPlan {
    pub(super) fn new(pieces: Vec<Piece>, duration_us: i64) -> ClipPlan {
        let mut starts = Vec::with_capacity(pieces.len());
        let mut len = 0u64;
        for p in &pieces {
            starts.push(len);
            len += p.len();
        }
        ClipPlan {
            pieces,
            starts,
            len,
            duration_us,
        }
    }

    /// The piece holding clip byte `pos` and the offset of `pos` within it.
    pub fn piece_at(&self, pos: u64) -> Option<(usize, u64)> {
        if pos >= self.len {
            return None;
        }
        let i = self.starts.partition_point(|&s| s <= pos).checked_sub(1)?;
        // Empty pieces share their start with the next one; partition_point picked the last.
        Some((i, pos - self.starts[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_located() {
        let plan = ClipPlan::new(
            vec![
                Piece::Bytes(Bytes::from_static(b"abc")),
                Piece::Fragment {
                    index: 0,
                    offset: 8,
                    len: 0,
                },
                Piece::Fragment {
                    index: 1,
                    offset: 8,
                    len: 10,
                },
            ],
            0,
        );
        assert_eq!(plan.len, 13);
        assert_eq!(plan.piece_at(0), Some((0, 0)));
        assert_eq!(plan.piece_at(2), Some((0, 2)));
        assert_eq!(plan.piece_at(3), Some((2, 0)));
        assert_eq!(plan.piece_at(12), Some((2, 9)));
        assert_eq!(plan.piece_at(13), None);
    }
}
