//! Figures of the object tier, for `/metrics`, `/readyz` and the bench. Kept by the tier itself
//! (the store is a lower layer than the HTTP code that shows them).

use crate::metrics::Histogram;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub uploads: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    pub upload_errors: AtomicU64,
    pub objects_deleted: AtomicU64,
    pub local_copies_deleted: AtomicU64,
    pub unuploaded_deleted_bytes: AtomicU64,
    pub remote_reads: AtomicU64,
    pub remote_read_errors: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Sealed files waiting for upload, their bytes, and the server time the oldest was
    /// created (0: none), as of the uploader's last pass.
    pub queue_files: AtomicU64,
    pub queue_bytes: AtomicU64,
    pub queue_oldest_created_us: AtomicI64,
    /// The last request to the store succeeded (starts true: nothing has failed yet).
    pub store_down: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    pub remote_read_seconds: Mutex<Histogram>,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Default)]
pub struct ObjectStats {
    pub uploads_total: u64,
    pub uploaded_bytes_total: u64,
    pub upload_errors_total: u64,
    pub objects_deleted_total: u64,
    pub local_copies_deleted_total: u64,
    /// Bytes of media the disk budget deleted before it was uploaded (see `object/mod.rs`).
    pub unuploaded_deleted_bytes_total: u64,
    pub remote_reads_total: u64,
    pub remote_read_errors_total: u64,
    pub cache_hits_total: u64,
    pub cache_misses_total: u64,
    /// Bytes the read cache holds now.
    pub read_cache_bytes: u64,
    pub queue_files: u64,
    pub queue_bytes: u64,
    /// Server time the oldest file waiting for upload was created; None when none waits.
    pub queue_oldest_created_us: Option<i64>,
    pub store_reachable: bool,
    pub last_error: Option<String>,
    pub remote_read_seconds: Histogram,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn failed(&self, message: String) {
        self.store_down.store(true, Ordering::Relaxed);
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(message);
        }
    }

    pub fn succeeded(&self) {
        self.store_down.store(false, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ObjectStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let oldest = self.queue_oldest_created_us.load(Ordering::Relaxed);
        ObjectStats {
            uploads_total: get(&self.uploads),
            uploaded_bytes_total: get(&self.uploaded_bytes),
            upload_errors_total: get(&self.upload_errors),
            objects_deleted_total: get(&self.objects_deleted),
            local_copies_deleted_total: get(&self.local_copies_deleted),
            unuploaded_deleted_bytes_total: get(&self.unuploaded_deleted_bytes),
            remote_reads_total: get(&self.remote_reads),
            remote_read_errors_total: get(&self.remote_read_errors),
            cache_hits_total: get(&self.cache_hits),
            cache_misses_total: get(&self.cache_misses),
            read_cache_bytes: 0,
            queue_files: get(&self.queue_files),
            queue_bytes: get(&self.queue_bytes),
            queue_oldest_created_us: (oldest != 0).then_some(oldest),
            store_reachable: !self.store_down.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|l| l.clone()),
            remote_read_seconds: self
                .remote_read_seconds
                .lock()
                .map(|h| *h)
                .unwrap_or_default(),
        }
    }
}
