//! Archive playlists that can no longer change, kept as bytes so a repeated request costs no
//! index read and no rendering.
//!
//! ## What may be cached: a *settled* range
//! An archive playlist of `[start, end)` is **settled** when
//! 1. `end` is an absolute time (not `now`/`earliest`, which mean another point next time) and
//!    `end <= now` when the playlist is built (so it is a VOD playlist with `EXT-X-ENDLIST`), and
//! 2. the stream holds a fragment that starts a segment at or after `end` (the bound the
//!    playlist's index reads stop at, `Hls::archive`'s `below`).
//!
//! Why the second condition: the playlist lists the segments whose first fragment is numbered
//! below that bound. Fragment numbers only grow, so every fragment stored later is numbered
//! above it and cannot join a listed segment. Without such a fragment (the recording stopped
//! inside the range, or has not yet passed its end) the last listed segment can still grow,
//! and a producer may place a new session after it but still inside the range
//! (`producer_start` is any time after the stream's end): such a range is served as before,
//! rebuilt on every request.
//!
//! ## What invalidates a cached playlist
//! - **Media removed** (retention, quota, stream delete and its purge): the store's removal
//!   generation moves after the rows are gone; every entry built under an older generation is
//!   dropped. A stream deleted and recreated under the same name is covered too: the delete
//!   moves the generation.
//! - **A fragment landing before `end`**: by the placement rules (`ingest/placement.rs`) a
//!   settled range cannot receive one: a new session starts at or after the stream's recorded
//!   end, and within a session a track never goes back. The cache does not rely on that
//!   reasoning alone: it listens to the store's `FragmentPersisted` events and drops every
//!   entry of the stream whose range ends after the new fragment's start. A missed event
//!   (broadcast lag) drops everything.
//! - **Stream settings changed** (`retention_hours = 0` makes the archive refused):
//!   [`ArchiveCache::forget_stream`] from the PATCH handler.
//!
//! ## Races
//! A build takes a [`Ticket`] before its first index read (the stream row included). A put
//! is refused when, since the ticket, the removal generation moved, the cache was cleared, or
//! any fragment of the stream landed: the rows it read may then be older than the index. A
//! fragment committed after the build's reads whose event is seen only after the put drops
//! the entry when it is seen; in between (the listener's wake-up, microseconds) a request gets
//! the text as of just before that commit, as an uncached request reading just before it
//! would.
//!
//! Memory is bounded: [`ARCHIVE_CACHE_BYTES`] over all entries (identity and gzip bodies and
//! keys), first in, first out.

use crate::store::StoreEvent;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::{self, error::RecvError};

/// Bytes of all cached playlists: a 1 h playlist of 2 s segments is about 100 kB (25 kB
/// gzipped), so this holds a few hundred of the ranges viewers scrub through.
pub const ARCHIVE_CACHE_BYTES: usize = 32 << 20;
/// What one entry costs beyond its bodies and key (map slots, the order queue, the ETags).
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// Everything in a request that changes an archive playlist's text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArchiveKey {
    pub stream: String,
    /// `None`: from the stream's oldest media (moves only when media is removed).
    pub start_us: Option<i64>,
    pub end_us: i64,
    /// The query string appended to every URI (the playback token).
    pub query: String,
}

/// A settled playlist's bytes, as served.
#[derive(Debug, Clone)]
pub struct CachedPlaylist {
    pub body: Bytes,
    /// Strong: a digest of `body`, so the same text always has the same ETag (across restarts
    /// too) and other text never does.
    pub etag: String,
    /// The same text gzip-compressed, with its own ETag (a strong ETag names one
    /// representation, and the encoding is part of it).
    pub gzip: Bytes,
    pub gzip_etag: String,
}

impl CachedPlaylist {
    /// Digests and compresses `text`: blocking work (milliseconds for a day-long playlist).
    pub fn build(text: String) -> CachedPlaylist {
        use sha2::Digest;
        use std::io::Write;
        let digest = sha2::Sha256::digest(text.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(text.len() / 3),
            flate2::Compression::default(),
        );
        // Writing to a Vec cannot fail.
        let gzip = gz
            .write_all(text.as_bytes())
            .and_then(|_| gz.finish())
            .unwrap_or_default();
        CachedPlaylist {
            body: Bytes::from(text),
            etag: format!("\"a-{hex}\""),
            gzip: Bytes::from(gzip),
            gzip_etag: format!("\"a-{hex}-gz\""),
        }
    }

    fn weight(&self, key: &ArchiveKey) -> usize {
        self.body.len()
            + self.gzip.len()
            + key.stream.len()
            + key.query.len()
            + ENTRY_OVERHEAD_BYTES
    }
}

/// What a build saw before its first index read; see the module doc ("Races").
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    removal_generation: u64,
    epoch: u64,
}

/// A ticket narrowed to the stream the build reads, taken once the stream row is known and
/// before the playlist's own index reads.
#[derive(Debug, Clone, Copy)]
pub struct StreamTicket {
    ticket: Ticket,
    stream_id: i64,
    landings: u64,
}

struct Entry {
    playlist: CachedPlaylist,
    stream_id: i64,
    /// The range's end: a fragment starting before it drops the entry.
    end_us: i64,
    weight: usize,
}

#[derive(Default)]
struct Inner {
    /// The store's removal generation the entries were built under.
    removal_generation: u64,
    /// Moves whenever the cache is cleared for a reason other than the generation.
    epoch: u64,
    /// Per stream id: fragments seen landing (moves a build's ticket out of date).
    landings: HashMap<i64, u64>,
    /// Per stream id: the latest range end among its entries (a landing at or after it drops
    /// nothing, the usual case: live media lands at the live edge).
    max_end: HashMap<i64, i64>,
    entries: HashMap<ArchiveKey, Entry>,
    order: VecDeque<ArchiveKey>,
    bytes: usize,
}

impl Inner {
    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.max_end.clear();
        self.bytes = 0;
        self.epoch += 1;
    }

    /// Drops everything when the store removed media since the entries were built.
    fn sync_generation(&mut self, removal_generation: u64) {
        if removal_generation != self.removal_generation {
            self.clear();
            self.removal_generation = removal_generation;
        }
    }

    fn remove(&mut self, key: &ArchiveKey) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.weight;
        }
    }

    /// Keeps in `order` only the newest place of each held key.
    fn compact_order(&mut self) {
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<ArchiveKey> = Vec::with_capacity(self.entries.len());
        for k in self.order.drain(..).rev() {
            if self.entries.contains_key(&k) && seen.insert(k.clone()) {
                kept.push(k);
            }
        }
        kept.reverse();
        self.order = kept.into();
    }

    fn landed(&mut self, stream_id: i64, start_us: i64) {
        *self.landings.entry(stream_id).or_default() += 1;
        let Some(&max_end) = self.max_end.get(&stream_id) else {
            return;
        };
        if start_us >= max_end {
            return;
        }
        let gone: Vec<ArchiveKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.stream_id == stream_id && start_us < e.end_us)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.remove(k);
        }
        self.recompute_max_end(stream_id);
    }

    fn recompute_max_end(&mut self, stream_id: i64) {
        match self
            .entries
            .values()
            .filter(|e| e.stream_id == stream_id)
            .map(|e| e.end_us)
            .max()
        {
            Some(m) => {
                self.max_end.insert(stream_id, m);
            }
            None => {
                self.max_end.remove(&stream_id);
            }
        }
    }

    fn forget_stream(&mut self, name: &str) {
        let gone: Vec<ArchiveKey> = self
            .entries
            .keys()
            .filter(|k| k.stream == name)
            .cloned()
            .collect();
        let ids: Vec<i64> = gone
            .iter()
            .filter_map(|k| self.entries.get(k).map(|e| e.stream_id))
            .collect();
        for k in &gone {
            self.remove(k);
        }
        for id in ids {
            self.recompute_max_end(id);
        }
        // A build in flight may have read the old settings.
        self.epoch += 1;
    }
}

/// The cache of settled archive playlists (see the module doc).
pub struct ArchiveCache {
    inner: Mutex<Inner>,
    /// Whether the landing listener runs: without it a landing could go unseen, so nothing is
    /// cached (a store used outside a runtime, in unit tests of other modules).
    listening: AtomicBool,
}

impl ArchiveCache {
    /// A cache that caches nothing until [`ArchiveCache::listen`] runs.
    pub fn new() -> Arc<ArchiveCache> {
        Arc::new(ArchiveCache {
            inner: Mutex::new(Inner::default()),
            listening: AtomicBool::new(false),
        })
    }

    /// Starts the task that sees every persisted fragment (on the current runtime; without
    /// one, the cache stays off). It ends when the store's event channel closes.
    pub fn listen(self: &Arc<Self>, mut events: broadcast::Receiver<StoreEvent>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.listening.store(true, Ordering::SeqCst);
        let cache = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let event = events.recv().await;
                let Some(cache) = cache.upgrade() else {
                    return;
                };
                match event {
                    Ok(StoreEvent::FragmentPersisted(r)) => {
                        cache.landed(r.stream_id, r.producer_start_us)
                    }
                    Ok(StoreEvent::StreamDeleted { stream_id }) => {
                        if let Ok(mut inner) = cache.inner.lock() {
                            inner.landings.remove(&stream_id);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => cache.clear(),
                    Err(RecvError::Closed) => {
                        cache.listening.store(false, Ordering::SeqCst);
                        cache.clear();
                        return;
                    }
                }
            }
        });
    }

    fn clear(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.clear();
        }
    }

    fn landed(&self, stream_id: i64, start_us: i64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.landed(stream_id, start_us);
        }
    }

    /// Taken before the first index read of a build (the stream row included).
    pub fn ticket(&self, removal_generation: u64) -> Ticket {
        // Synced first: catching up with a removal clears the cache and moves the epoch,
        // which must not refuse this very build.
        let epoch = self
            .inner
            .lock()
            .map(|mut i| {
                i.sync_generation(removal_generation);
                i.epoch
            })
            .unwrap_or(u64::MAX);
        Ticket {
            removal_generation,
            epoch,
        }
    }

    /// Narrows `ticket` to a stream, before the playlist's own index reads.
    pub fn stream_ticket(&self, ticket: Ticket, stream_id: i64) -> StreamTicket {
        let landings = self
            .inner
            .lock()
            .map(|i| i.landings.get(&stream_id).copied().unwrap_or(0))
            .unwrap_or(u64::MAX);
        StreamTicket {
            ticket,
            stream_id,
            landings,
        }
    }

    /// The cached playlist for `key`, if any is still valid under `removal_generation` (read
    /// from the store now).
    pub fn get(&self, key: &ArchiveKey, removal_generation: u64) -> Option<CachedPlaylist> {
        let mut inner = self.inner.lock().ok()?;
        inner.sync_generation(removal_generation);
        inner.entries.get(key).map(|e| e.playlist.clone())
    }

    /// Keeps a settled playlist unless something changed since `ticket` (then the next
    /// request builds it again). `removal_generation` is the store's, read now.
    pub fn put(
        &self,
        ticket: StreamTicket,
        removal_generation: u64,
        key: ArchiveKey,
        playlist: CachedPlaylist,
    ) -> bool {
        if !self.listening.load(Ordering::SeqCst) {
            return false;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        inner.sync_generation(removal_generation);
        let landings = inner.landings.get(&ticket.stream_id).copied().unwrap_or(0);
        let weight = playlist.weight(&key);
        if ticket.ticket.removal_generation != removal_generation
            || ticket.ticket.epoch != inner.epoch
            || ticket.landings != landings
            || weight > ARCHIVE_CACHE_BYTES / 4
        {
            return false;
        }
        if inner.entries.contains_key(&key) {
            // Still valid, so its text is what this build made.
            return true;
        }
        let end_us = key.end_us;
        let max_end = inner.max_end.entry(ticket.stream_id).or_insert(end_us);
        *max_end = (*max_end).max(end_us);
        inner.bytes += weight;
        inner.order.push_back(key.clone());
        inner.entries.insert(
            key,
            Entry {
                playlist,
                stream_id: ticket.stream_id,
                end_us,
                weight,
            },
        );
        // Entries dropped by a landing or a forget leave their place in `order` behind.
        if inner.order.len() > 2 * inner.entries.len() + 16 {
            inner.compact_order();
        }
        while inner.bytes > ARCHIVE_CACHE_BYTES {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            // A key re-put after an earlier removal appears twice in `order`; only its newest
            // place holds the live entry, so an older place just goes.
            if inner.order.contains(&old) {
                continue;
            }
            if let Some(id) = inner.entries.get(&old).map(|e| e.stream_id) {
                inner.remove(&old);
                inner.recompute_max_end(id);
            }
        }
        true
    }

    /// Drops the stream's playlists (its settings changed) and refuses builds in flight.
    pub fn forget_stream(&self, name: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.forget_stream(name);
        }
    }

    /// Entries held now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|i| i.entries.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(stream: &str, end_us: i64) -> ArchiveKey {
        ArchiveKey {
            stream: stream.into(),
            start_us: Some(0),
            end_us,
            query: String::new(),
        }
    }

    fn on() -> Arc<ArchiveCache> {
        let c = ArchiveCache::new();
        c.listening.store(true, Ordering::SeqCst);
        c
    }

    fn put(c: &ArchiveCache, gen: u64, stream_id: i64, k: ArchiveKey, text: &str) -> bool {
        let t = c.stream_ticket(c.ticket(gen), stream_id);
        c.put(t, gen, k, CachedPlaylist::build(text.into()))
    }

    #[test]
    fn etag_names_the_text_and_the_encoding() {
        let a = CachedPlaylist::build("#EXTM3U\n".into());
        let b = CachedPlaylist::build("#EXTM3U\n".into());
        let c = CachedPlaylist::build("#EXTM3U\n#EXT-X-ENDLIST\n".into());
        assert_eq!(a.etag, b.etag);
        assert_ne!(a.etag, c.etag);
        assert_ne!(a.etag, a.gzip_etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&a.gzip[..]), &mut text)
            .unwrap();
        assert_eq!(text, "#EXTM3U\n");
    }

    #[test]
    fn removal_generation_drops_everything() {
        let c = on();
        assert!(put(&c, 3, 1, key("a", 100), "x"));
        assert!(c.get(&key("a", 100), 3).is_some());
        assert!(c.get(&key("a", 100), 4).is_none());
        // A build that began before the removal is refused.
        let t = c.stream_ticket(c.ticket(4), 1);
        c.get(&key("a", 100), 5);
        assert!(!c.put(t, 5, key("a", 100), CachedPlaylist::build("x".into())));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_landing_before_the_end_drops_the_range_and_one_after_it_does_not() {
        let c = on();
        assert!(put(&c, 0, 1, key("a", 100), "x"));
        assert!(put(&c, 0, 1, key("a", 200), "y"));
        assert!(put(&c, 0, 2, key("b", 100), "z"));
        c.landed(1, 200);
        assert_eq!(c.len(), 3);
        c.landed(1, 150);
        assert!(c.get(&key("a", 100), 0).is_some());
        assert!(c.get(&key("a", 200), 0).is_none());
        assert!(c.get(&key("b", 100), 0).is_some());
        c.landed(1, 99);
        assert!(c.get(&key("a", 100), 0).is_none());
        assert!(c.get(&key("b", 100), 0).is_some());
    }

    #[test]
    fn a_landing_during_a_build_refuses_its_put() {
        let c = on();
        let t = c.stream_ticket(c.ticket(0), 1);
        c.landed(1, 1_000_000);
        assert!(!c.put(t, 0, key("a", 100), CachedPlaylist::build("x".into())));
        // Another stream's landing does not matter.
        let t = c.stream_ticket(c.ticket(0), 1);
        c.landed(2, 0);
        assert!(c.put(t, 0, key("a", 100), CachedPlaylist::build("x".into())));
    }

    #[test]
    fn forget_and_lag_refuse_builds_in_flight() {
        let c = on();
        let t = c.stream_ticket(c.ticket(0), 1);
        c.forget_stream("a");
        assert!(!c.put(t, 0, key("a", 100), CachedPlaylist::build("x".into())));
        assert!(put(&c, 0, 1, key("a", 100), "x"));
        c.forget_stream("a");
        assert!(c.get(&key("a", 100), 0).is_none());
        let t = c.stream_ticket(c.ticket(0), 1);
        c.clear();
        assert!(!c.put(t, 0, key("a", 100), CachedPlaylist::build("x".into())));
    }

    #[test]
    fn nothing_is_cached_without_the_listener() {
        let c = ArchiveCache::new();
        assert!(!put(&c, 0, 1, key("a", 100), "x"));
    }

    #[test]
    fn memory_stays_within_the_budget() {
        let c = on();
        let text = "#".repeat(ARCHIVE_CACHE_BYTES / 8);
        for i in 0..40 {
            // Distinct texts, so each compresses to something of its own.
            assert!(put(&c, 0, 1, key("a", i), &format!("{i}{text}")));
            let bytes = c.inner.lock().unwrap().bytes;
            assert!(bytes <= ARCHIVE_CACHE_BYTES, "{bytes}");
        }
        // The newest is kept, the oldest went.
        assert!(c.get(&key("a", 39), 0).is_some());
        assert!(c.get(&key("a", 0), 0).is_none());
        // Too big for one entry: refused, not cached.
        let huge = "#".repeat(ARCHIVE_CACHE_BYTES / 3);
        assert!(!put(&c, 0, 1, key("a", 99), &huge));
    }
}
