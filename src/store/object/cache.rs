//! The read cache of the object tier: aligned chunks of objects, in memory, bounded by bytes.
//!
//! Remote reads are fetched as whole [`CHUNK_BYTES`] chunks, so a player reading a segment and
//! then the next one, or a clip planned from many small moof reads, costs one request per
//! chunk instead of one per read, and concurrent readers of the same chunk share one request.
//! Objects never change once recorded (a re-upload after a crash writes the same bytes), so a
//! cached chunk never goes stale; it only stops being asked for once its media expires.

use bytes::Bytes;
use quick_cache::sync::Cache;
use std::future::Future;

/// Chunk size of remote reads: a few fragments of a typical camera stream (1-4 Mbit/s, 1-2 s
/// fragments), so a segment is one or two requests, and small enough that a single moof read
/// does not pull much more than it needs.
pub const CHUNK_BYTES: u64 = 2 << 20;

#[derive(Clone)]
struct ByLength;

impl quick_cache::Weighter<(i64, u64), Bytes> for ByLength {
    fn weight(&self, _key: &(i64, u64), val: &Bytes) -> u64 {
        // Zero weights would make empty chunks free to keep for ever.
        val.len().max(1) as u64
    }
}

pub struct ReadCache {
    chunks: Cache<(i64, u64), Bytes, ByLength>,
}

impl ReadCache {
    pub fn new(capacity_bytes: u64) -> ReadCache {
        let items = (capacity_bytes / CHUNK_BYTES).max(16) as usize;
        ReadCache {
            chunks: Cache::with_weighter(items, capacity_bytes.max(1), ByLength),
        }
    }

    /// Chunk `index` of file `file_id`: from memory, or from `fetch` (once, however many ask).
    /// Whether it was a hit is the second value.
    pub async fn chunk<E>(
        &self,
        file_id: i64,
        index: u64,
        fetch: impl Future<Output = Result<Bytes, E>>,
    ) -> Result<(Bytes, bool), E> {
        if let Some(hit) = self.chunks.get(&(file_id, index)) {
            return Ok((hit, true));
        }
        let got = self
            .chunks
            .get_or_insert_async(&(file_id, index), fetch)
            .await?;
        Ok((got, false))
    }

    pub fn weight_bytes(&self) -> u64 {
        self.chunks.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache stays within its byte budget, and a chunk asked for twice is fetched once.
    #[tokio::test]
    async fn bounded_and_shared() {
        let cache = ReadCache::new(3 * 1000);
        let mut fetches = 0;
        for i in 0..10u64 {
            for _ in 0..2 {
                let (b, _) = cache
                    .chunk::<()>(1, i, async {
                        fetches += 1;
                        Ok(Bytes::from(vec![i as u8; 1000]))
                    })
                    .await
                    .unwrap();
                assert_eq!(b.len(), 1000);
            }
        }
        assert_eq!(fetches, 10);
        assert!(cache.weight_bytes() <= 3000, "{}", cache.weight_bytes());
    }
}
