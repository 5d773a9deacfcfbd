//! The object-storage tier: sealed fragment files move to an S3-compatible bucket, and reads of
//! them come back through the store's one byte reader (`reader.rs`) as ranges of the object.
//!
//! ## Tiering protocol (beside the durability protocol in `store/mod.rs`)
//! The local disk is the hot tier and the index is the source of truth. A fragment file is
//! **sealed** once the writer can never append to it again: it rolled, the server restarted
//! (every stream starts a new file), or it has been idle past `storage.file_roll_secs` (the
//! writer would roll it at the next append anyway, so [`protocol::seal_and_list`] closes it).
//! The uploader task (`uploader.rs`) then takes each sealed file through four steps, each
//! finished before the next starts:
//! 1. **upload** its bytes (exactly the indexed bytes, `[0, end of last fragment)`) to the key
//!    [`ObjectTier::key`] names: one PUT, or a multipart upload of [`PART_BYTES`] parts;
//! 2. **verify**: a HEAD must show the same size, and an ETag equal to the MD5 computed while
//!    reading (for a multipart upload, the MD5 of the parts' MD5s with `-N`, as S3 defines it).
//!    A server whose ETags are neither (some S3-compatible ones) is verified by reading the
//!    object back and comparing MD5s;
//! 3. **record** the key, size and MD5 in the file's `files` row (one transaction on the writer
//!    thread). If the row is gone meanwhile (retention, stream delete), the object is deleted;
//! 4. **delete the local copy** once `local_keep_hours` / `local_keep_bytes` (or the disk
//!    budget) say so: `files.local = 0` commits first, then the unlink.
//!
//! Crash between any two steps, then restart:
//! - after 1 or 2: the row has no key, so the file is sealed and not uploaded: it is uploaded
//!   again, to the same key (an overwrite). Until then `check` reports the object as not yet
//!   recorded (and `--repair` deletes it; the re-upload puts it back);
//! - after 3: the file is uploaded and still local: it waits for the keep limits as usual;
//! - after `local = 0`, before the unlink: recovery (`recovery.rs`) finishes the unlink.
//!
//! Deletion goes the same way as for files: rows first, then objects. Removing a `files` row
//! that has a key queues the key in `object_garbage` (a trigger in the schema, so retention,
//! stream purge, recovery and repair all do it) and the uploader deletes queued objects; a crash
//! in between leaves the key queued. Holds protect fragments, so their files and objects stay.
//!
//! ## Reads
//! [`ByteReader::open_file`](super::reader::ByteReader::open_file) opens the local copy when
//! there is one and falls back to the object otherwise (`remote.rs`): ranges are fetched as
//! aligned chunks through a bounded in-memory cache (`cache.rs`), on the caller's blocking
//! thread, never on the writer, so remote reads cannot delay acks. A file with neither copy is
//! `NotFound` (its media expired); an unreachable object store is `Unavailable` (503 with
//! Retry-After).
//!
//! ## When the object store is unreachable
//! Ingest is untouched (the writer never talks to the bucket). Uploads retry with exponential
//! backoff (1 s to 60 s) and catch up when the store answers again. The disk budget is still
//! enforced: the sweeper first deletes local copies that are already uploaded; only when that
//! is not enough does it delete the oldest media that is not yet uploaded, as it would without
//! the tier (the newest media is what a camera archive most needs). That loss is reported
//! loudly: an error log per sweep, `tapedeck_object_unuploaded_deleted_bytes_total`, and a line
//! in `/readyz` (which stays 200: ingest still works, and taking the server out of a load
//! balancer would lose live media too).

mod cache;
pub(crate) mod check;
pub(crate) mod protocol;
mod remote;
mod stats;
pub(crate) mod uploader;

pub use stats::ObjectStats;

use crate::config::ObjectConfig;
use crate::error::{Error, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use remote::RemoteFile;

/// Multipart part size. S3 needs at least 5 MiB per part (but the last) and at most 10,000
/// parts: 16 MiB parts take files up to 156 GiB, far past any `file_roll_bytes`, and bound the
/// memory an upload holds to one part per upload in flight.
pub const PART_BYTES: u64 = 16 << 20;

/// How long one request may take before it is retried or fails: long enough for a 16 MiB part
/// on a slow uplink, short enough that a dead store is noticed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// A store that does not accept a TCP connection within this is down for this request: reads
/// of remote-only media answer 503 instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The bucket, its client, and the tier's read cache and figures. Shared by the byte reader, the
/// uploader task and the sweeper.
pub struct ObjectTier {
    pub(crate) client: Arc<AmazonS3>,
    pub(crate) config: ObjectConfig,
    /// The key prefix inside the bucket (no slashes at either end; may be empty).
    prefix: String,
    /// `s3://bucket/prefix` as configured: what the index records the objects to be in.
    pub(crate) url: String,
    cache: cache::ReadCache,
    pub(crate) stats: stats::Counters,
    /// Where blocking readers run their object requests (the server's runtime).
    runtime: tokio::runtime::Handle,
    /// Keeps a runtime of our own alive when the tier was opened outside one (`tapedeck check`).
    _own_runtime: Option<Arc<OwnRuntime>>,
}

/// A runtime made for offline tools, shut down without blocking when the last user goes.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl ObjectTier {
    /// Builds the client from the settings and the standard AWS environment variables. No
    /// request is made: an unreachable store is found (and retried) by the uploader.
    pub fn open(config: &ObjectConfig) -> Result<Arc<ObjectTier>> {
        config.validate()?;
        let (bucket, prefix) = config.bucket_and_prefix()?;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                backoff: Default::default(),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_allow_http(
                        config
                            .endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    ),
            );
        if let Some(e) = &config.endpoint {
            builder = builder.with_endpoint(e);
        }
        let env_region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .ok();
        let region = config
            .region
            .clone()
            .or(env_region)
            .unwrap_or_else(|| "us-east-1".into());
        builder = builder.with_region(region);
        let client = builder.build().map_err(|e| {
            Error::invalid(format!(
                "storage.object: cannot set up the S3 client for {}: {e}",
                config.url
            ))
        })?;
        let (runtime, own) = match tokio::runtime::Handle::try_current() {
            Ok(h) => (h, None),
            Err(_) => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("object-io")
                    .enable_all()
                    .build()
                    .map_err(|e| Error::internal(format!("cannot start a runtime: {e}")))?;
                (rt.handle().clone(), Some(Arc::new(OwnRuntime(Some(rt)))))
            }
        };
        Ok(Arc::new(ObjectTier {
            client: Arc::new(client),
            config: config.clone(),
            prefix,
            url: config.url.trim_end_matches('/').to_string(),
            cache: cache::ReadCache::new(config.read_cache_bytes),
            stats: Default::default(),
            runtime,
            _own_runtime: own,
        }))
    }

    /// The key of a fragment file's object: the file's path under the data dir, below the
    /// prefix. Deterministic, so a re-upload after a crash overwrites instead of duplicating,
    /// and a reader needs no index lookup to find an object.
    pub fn key(&self, stream_id: i64, file_id: i64) -> String {
        let name = format!("streams/{stream_id}/{file_id:010}.frag");
        if self.prefix.is_empty() {
            name
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// The prefix every object of this store is under, for listing (`check`).
    pub(crate) fn streams_prefix(&self) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from("streams")
        } else {
            ObjectPath::from(format!("{}/streams", self.prefix))
        }
    }

    /// Runs an object request from a blocking thread (the byte reader's callers).
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    pub(crate) fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(f)
    }

    /// The tier's figures now (see [`ObjectStats`]).
    pub fn stats(&self) -> ObjectStats {
        let mut s = self.stats.snapshot();
        s.read_cache_bytes = self.cache.weight_bytes();
        s
    }
}

/// Maps an object-store error once: a missing object is media that is gone (`NotFound`);
/// anything else means the store cannot be used now (`Unavailable`, so 503 with Retry-After).
pub(crate) fn map_error(e: object_store::Error, what: &str) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::not_found(format!("{what}: not found")),
        e => Error::unavailable(format!(
            "{what}: the object store cannot be reached or refused the request: {e}"
        )),
    }
}

/// A tier whose bucket cannot be reached (nothing listens on port 9): for unit tests of the
/// index side, which never needs the bucket.
#[cfg(test)]
pub(crate) fn testing_config() -> ObjectConfig {
    ObjectConfig {
        url: "s3://unit-test/prefix".into(),
        endpoint: Some("http://127.0.0.1:9".into()),
        path_style: true,
        local_keep_hours: 0,
        ..ObjectConfig::default()
    }
}

/// Records files as uploaded (protocol step 3) without a bucket, then deletes their local
/// copies (step 4) the way the uploader does.
#[cfg(test)]
pub(crate) async fn mark_uploaded_for_test(store: &super::Store, file_ids: &[i64]) {
    let ids = file_ids.to_vec();
    store
        .exec(move |w| {
            for id in ids {
                let (stream_id, bytes): (i64, i64) = w.conn.query_row(
                    "SELECT stream_id, (SELECT MAX(file_offset + size_bytes) FROM fragments \
                     WHERE file_id = ?1) FROM files WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let file = protocol::Sealed {
                    stream_id,
                    file_id: id,
                    bytes: bytes as u64,
                    created_us: 0,
                };
                let key = format!("prefix/streams/{stream_id}/{id:010}.frag");
                assert!(protocol::record_upload(w, &file, &key, &[0u8; 16])?);
            }
            Ok(())
        })
        .await
        .unwrap();
}
