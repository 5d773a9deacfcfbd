//! The bytes of the newest persisted fragments, kept in memory for the readers at the live edge.
//!
//! A live stream's newest fragment is read by every follow-feed consumer and every LL-HLS viewer
//! within milliseconds of its ack. With 100 of them, 100 file reads (each a blocking-pool hop and
//! a fresh buffer) of the same bytes cost more than everything else on that path; the writer
//! already holds the bytes, so it hands them over here when the group commits and the readers
//! share one reference-counted copy. Bounded by bytes, oldest out first. Any removal of media
//! (expiry, stream delete) empties it, so it never serves what the index no longer lists.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Fragment identity: stream id, file id and offset (unique for the store's lifetime, unlike a
/// stream id, which SQLite may reuse after a delete).
type Key = (i64, i64, i64);

pub struct RecentFragments {
    capacity_bytes: usize,
    removal_generation: Arc<AtomicU64>,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    generation: u64,
    bytes: usize,
    order: VecDeque<Key>,
    map: HashMap<Key, Bytes>,
}

impl RecentFragments {
    pub fn new(capacity_bytes: usize, removal_generation: Arc<AtomicU64>) -> RecentFragments {
        RecentFragments {
            capacity_bytes,
            removal_generation,
            inner: Mutex::new(Entries::default()),
        }
    }

    /// Keeps `bytes` for the fragment at `file_offset` of `file_id`; drops the oldest to fit.
    pub fn put(&self, stream_id: i64, file_id: i64, file_offset: i64, bytes: Bytes) {
        if bytes.len() > self.capacity_bytes {
            return;
        }
        let Ok(mut e) = self.inner.lock() else { return };
        self.check_generation(&mut e);
        let key = (stream_id, file_id, file_offset);
        e.bytes += bytes.len();
        if let Some(old) = e.map.insert(key, bytes) {
            e.bytes -= old.len();
        } else {
            e.order.push_back(key);
        }
        while e.bytes > self.capacity_bytes {
            let Some(oldest) = e.order.pop_front() else {
                break;
            };
            if let Some(b) = e.map.remove(&oldest) {
                e.bytes -= b.len();
            }
        }
    }

    pub fn get(&self, stream_id: i64, file_id: i64, file_offset: i64) -> Option<Bytes> {
        let mut e = self.inner.lock().ok()?;
        self.check_generation(&mut e);
        e.map.get(&(stream_id, file_id, file_offset)).cloned()
    }

    fn check_generation(&self, e: &mut Entries) {
        let now = self.removal_generation.load(Ordering::SeqCst);
        if e.generation != now {
            e.map.clear();
            e.order.clear();
            e.bytes = 0;
            e.generation = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_bytes_and_emptied_by_removals() {
        let generation = Arc::new(AtomicU64::new(0));
        let recent = RecentFragments::new(10, generation.clone());
        recent.put(1, 1, 0, Bytes::from_static(b"abcd"));
        recent.put(1, 1, 4, Bytes::from_static(b"efgh"));
        assert_eq!(recent.get(1, 1, 0).as_deref(), Some(&b"abcd"[..]));
        // A third 4-byte fragment pushes out the oldest.
        recent.put(1, 1, 8, Bytes::from_static(b"ijkl"));
        assert_eq!(recent.get(1, 1, 0), None);
        assert_eq!(recent.get(1, 1, 8).as_deref(), Some(&b"ijkl"[..]));
        // Larger than the whole cache: not kept, nothing else dropped.
        recent.put(2, 1, 0, Bytes::from(vec![0u8; 11]));
        assert_eq!(recent.get(2, 1, 0), None);
        assert!(recent.get(1, 1, 4).is_some());
        generation.fetch_add(1, Ordering::SeqCst);
        assert_eq!(recent.get(1, 1, 8), None, "a removal empties the cache");
    }
}
