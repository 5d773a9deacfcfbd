//! A fragment file read back from its object: byte ranges through the read cache.
//!
//! Runs on the caller's blocking thread (the byte reader is blocking by contract), which waits
//! on the object request; the writer thread never gets here, so a slow or dead object store
//! delays only the reads of remote-only media, never ingest.

use super::cache::CHUNK_BYTES;
use super::stats::Counters;
use super::{map_error, ObjectTier};
use crate::error::{Error, Result};
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use std::sync::Arc;
use std::time::Instant;

pub(crate) struct RemoteFile {
    tier: Arc<ObjectTier>,
    file_id: i64,
    key: ObjectPath,
}

impl RemoteFile {
    pub(crate) fn new(tier: Arc<ObjectTier>, stream_id: i64, file_id: i64) -> RemoteFile {
        let key = ObjectPath::from(tier.key(stream_id, file_id));
        RemoteFile { tier, file_id, key }
    }

    /// Fills `buf` with the object's bytes from `offset`. An object shorter than that is an
    /// `Internal` error (the index promised those bytes); a missing one `NotFound`.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let first = offset / CHUNK_BYTES;
        let last = (end - 1) / CHUNK_BYTES;
        let chunks = self.tier.block_on(futures_util::future::try_join_all(
            (first..=last).map(|i| self.chunk(i)),
        ))?;
        let mut filled = 0usize;
        for (i, chunk) in (first..=last).zip(chunks) {
            let chunk_start = i * CHUNK_BYTES;
            let from = offset.max(chunk_start) - chunk_start;
            let want = (end.min(chunk_start + CHUNK_BYTES) - chunk_start - from) as usize;
            let from = from as usize;
            if chunk.len() < from + want {
                return Err(Error::internal(format!(
                    "object {} is shorter than its index rows say (wanted bytes up to {end})",
                    self.key
                )));
            }
            buf[filled..filled + want].copy_from_slice(&chunk[from..from + want]);
            filled += want;
        }
        Ok(())
    }

    /// The object's size (a HEAD request).
    pub(crate) fn len_bytes(&self) -> Result<u64> {
        let meta = self
            .tier
            .block_on(self.tier.client.head(&self.key))
            .map_err(|e| map_error(e, &format!("object {}", self.key)))?;
        Ok(meta.size)
    }

    /// Chunk `index` of the object, from the cache or one ranged GET (clamped to the object's
    /// end by the server).
    async fn chunk(&self, index: u64) -> Result<Bytes> {
        let tier = &self.tier;
        let (bytes, hit) = tier
            .cache
            .chunk(self.file_id, index, async {
                let started = Instant::now();
                let range = index * CHUNK_BYTES..(index + 1) * CHUNK_BYTES;
                let options = GetOptions {
                    range: Some(GetRange::Bounded(range)),
                    ..Default::default()
                };
                let got = match tier.client.get_opts(&self.key, options).await {
                    Ok(r) => r.bytes().await,
                    Err(e) => Err(e),
                };
                if got.is_ok() {
                    tier.stats.succeeded();
                }
                if let Ok(mut h) = tier.stats.remote_read_seconds.lock() {
                    h.observe(started.elapsed());
                }
                Counters::add(&tier.stats.remote_reads, 1);
                got.map_err(|e| {
                    Counters::add(&tier.stats.remote_read_errors, 1);
                    let mapped = map_error(e, &format!("reading object {}", self.key));
                    if mapped.kind == crate::error::Kind::Unavailable {
                        tier.stats.failed(mapped.message.clone());
                    }
                    mapped
                })
            })
            .await?;
        let counter = if hit {
            &tier.stats.cache_hits
        } else {
            &tier.stats.cache_misses
        };
        Counters::add(counter, 1);
        Ok(bytes)
    }
}
