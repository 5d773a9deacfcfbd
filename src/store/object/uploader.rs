//! The uploader task: takes sealed files through the tiering protocol (`object/mod.rs`),
//! deletes local copies the keep limits no longer allow, and deletes queued garbage objects.
//!
//! One pass at a time, every [`POLL`] (or sooner when woken). A pass that fails (the store is
//! unreachable, a verify mismatch) is retried after an exponential backoff from [`MIN_BACKOFF`]
//! to [`MAX_BACKOFF`]; nothing is lost meanwhile, the files just stay local and queued.
//!
//! Fault injection for the crash tests (`tests/object_store.rs`): with
//! `TAPEDECK_OBJECT_FAULT=stop_after_upload` (or `stop_after_record`) the task stops for good
//! right after that protocol step of the first file it uploads, and logs
//! `object fault injection: stopped after <step>`; the test then SIGKILLs the server there.

use super::super::{files, Store};
use super::protocol::{self, Eviction, Sealed};
use super::stats::Counters;
use super::{map_error, ObjectTier, PART_BYTES};
use crate::error::{Error, Kind, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the uploader looks for sealed files: a file is sealed at most this long before
/// its upload starts.
const POLL: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Retries never wait longer than this, so uploads resume within a minute of the store's return.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Garbage objects deleted per pass.
const GARBAGE_BATCH: u32 = 1000;
/// The environment variable that stops the uploader at a protocol step (tests only).
pub const FAULT_ENV: &str = "TAPEDECK_OBJECT_FAULT";

pub(crate) fn spawn(
    store: Store,
    tier: Arc<ObjectTier>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let t = tier.clone();
    t.spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            let wait = match pass(&store, &tier).await {
                Ok(()) => {
                    backoff = MIN_BACKOFF;
                    POLL
                }
                Err(e) if store.is_closed() => {
                    tracing::debug!(error = %e, "uploader stops with the store");
                    return;
                }
                Err(e) => {
                    Counters::add(&tier.stats.upload_errors, 1);
                    if e.kind == Kind::Unavailable {
                        tier.stats.failed(e.message.clone());
                    }
                    tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "object upload pass failed; files stay local and queued");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
            }
        }
    });
}

/// One pass: garbage, uploads, then local copies past the keep limits.
/// The upload queue's figures for `/metrics`: files waiting, their bytes, the oldest one's age.
fn show_queue(tier: &ObjectTier, waiting: &[protocol::Sealed]) {
    tier.stats
        .queue_files
        .store(waiting.len() as u64, Ordering::Relaxed);
    tier.stats
        .queue_bytes
        .store(waiting.iter().map(|s| s.bytes).sum(), Ordering::Relaxed);
    tier.stats.queue_oldest_created_us.store(
        waiting.iter().map(|s| s.created_us).min().unwrap_or(0),
        Ordering::Relaxed,
    );
}

async fn pass(store: &Store, tier: &Arc<ObjectTier>) -> Result<()> {
    delete_garbage(store, tier).await?;
    let sealed = store.exec(protocol::seal_and_list).await?;
    show_queue(tier, &sealed);
    let results: Vec<Result<()>> = futures_util::stream::iter(sealed)
        .map(|file| upload_one(store, tier, file))
        .buffer_unordered(tier.config.upload_concurrency)
        .collect()
        .await;
    // Every upload had its chance; the first failure decides the backoff.
    for r in results {
        r?;
    }
    let keep_us = i64::try_from(tier.config.local_keep_hours.saturating_mul(3_600_000_000))
        .unwrap_or(i64::MAX);
    let ev = Eviction {
        uploaded_before_us: store.now_us().saturating_sub(keep_us),
        keep_bytes: tier.config.local_keep_bytes,
        free_bytes: 0,
    };
    let (files, _) = store
        .exec(move |w| protocol::delete_local_copies(w, ev))
        .await?;
    Counters::add(&tier.stats.local_copies_deleted, files);
    if tier.stats.queue_files.load(Ordering::Relaxed) > 0 {
        let left = store.exec(protocol::seal_and_list).await?;
        show_queue(tier, &left);
    }
    Ok(())
}

async fn delete_garbage(store: &Store, tier: &ObjectTier) -> Result<()> {
    let keys = store.read(|c| protocol::garbage(c, GARBAGE_BATCH)).await?;
    if keys.is_empty() {
        return Ok(());
    }
    let mut done = Vec::new();
    let mut failed = None;
    for key in keys {
        match tier.client.delete(&ObjectPath::from(key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => done.push(key),
            Err(e) => {
                failed = Some(map_error(e, &format!("deleting object {key}")));
                break;
            }
        }
    }
    Counters::add(&tier.stats.objects_deleted, done.len() as u64);
    if !done.is_empty() {
        store
            .exec(move |w| protocol::forget_garbage(w, &done))
            .await?;
    }
    failed.map_or(Ok(()), Err)
}

/// The MD5 of an upload: of the bytes, and the ETag S3 gives such an upload.
struct Digests {
    md5: Vec<u8>,
    etag: String,
}

async fn upload_one(store: &Store, tier: &Arc<ObjectTier>, file: Sealed) -> Result<()> {
    let key = tier.key(file.stream_id, file.file_id);
    let path = ObjectPath::from(key.as_str());
    let local = files::file_path(store.data_dir(), file.stream_id, file.file_id);
    let what = format!("uploading {} to {}", local.display(), key);
    // Step 1: upload.
    let digests = match put_file(tier, &path, &local, file.bytes).await {
        Ok(d) => d,
        // Expired (rows and file removed) since it was listed: nothing left to upload.
        Err(e) if e.kind == Kind::NotFound => return Ok(()),
        Err(e) => return Err(Error::new(e.kind, format!("{what}: {}", e.message))),
    };
    fault("stop_after_upload").await;
    // Step 2: verify.
    verify(tier, &path, file.bytes, &digests)
        .await
        .map_err(|e| Error::new(e.kind, format!("{what}: {}", e.message)))?;
    // Step 3: record.
    let md5 = digests.md5.clone();
    let (f, k) = (file.clone(), key.clone());
    let recorded = store
        .exec(move |w| protocol::record_upload(w, &f, &k, &md5))
        .await?;
    if !recorded {
        // The row went while uploading: its object must not outlive it.
        match tier.client.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(map_error(e, &format!("deleting unrecorded object {key}"))),
        }
        return Ok(());
    }
    tier.stats.succeeded();
    Counters::add(&tier.stats.uploads, 1);
    Counters::add(&tier.stats.uploaded_bytes, file.bytes);
    tracing::debug!(key, bytes = file.bytes, "uploaded sealed fragment file");
    fault("stop_after_record").await;
    Ok(())
}

/// Reads `len` bytes at `offset` of a local file off the async threads.
async fn read_local(path: &std::path::Path, offset: u64, len: u64) -> Result<Bytes> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(format!("{} is gone", path.display()))
            } else {
                e.into()
            }
        })?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(|e| Error::internal(format!("read task failed: {e}")))?
}

/// One PUT for a file up to [`PART_BYTES`], a multipart upload (one part in memory at a time)
/// above.
async fn put_file(
    tier: &ObjectTier,
    path: &ObjectPath,
    local: &std::path::Path,
    bytes: u64,
) -> Result<Digests> {
    // Not `map_error`: a missing bucket is NotFound to object_store, but here it is a store
    // that cannot take the upload now, not media that is gone.
    let put_error = |e: object_store::Error| {
        Error::unavailable(format!("the object store refused the upload: {e}"))
    };
    if bytes <= PART_BYTES {
        let data = read_local(local, 0, bytes).await?;
        let md5 = Md5::digest(&data).to_vec();
        tier.client
            .put(path, PutPayload::from(data))
            .await
            .map_err(put_error)?;
        let etag = hex(&md5);
        return Ok(Digests { md5, etag });
    }
    let mut upload = tier.client.put_multipart(path).await.map_err(put_error)?;
    let mut whole = Md5::new();
    let mut part_md5s = Vec::new();
    let mut offset = 0;
    while offset < bytes {
        let len = PART_BYTES.min(bytes - offset);
        let part = async {
            let data = read_local(local, offset, len).await?;
            whole.update(&data);
            part_md5s.extend_from_slice(&Md5::digest(&data));
            upload
                .put_part(PutPayload::from(data))
                .await
                .map_err(put_error)
        };
        if let Err(e) = part.await {
            let _ = upload.abort().await;
            return Err(e);
        }
        offset += len;
    }
    if let Err(e) = upload.complete().await {
        let _ = upload.abort().await;
        return Err(put_error(e));
    }
    let parts = part_md5s.len() / 16;
    Ok(Digests {
        md5: whole.finalize().to_vec(),
        etag: format!("{}-{parts}", hex(&Md5::digest(&part_md5s))),
    })
}

/// Step 2: the object has the size uploaded, and its ETag is the MD5 S3 defines for the upload;
/// a server whose ETags are something else is checked by reading the object back.
async fn verify(tier: &ObjectTier, path: &ObjectPath, bytes: u64, d: &Digests) -> Result<()> {
    let meta = tier
        .client
        .head(path)
        .await
        .map_err(|e| map_error(e, "verifying the upload"))?;
    if meta.size != bytes {
        return Err(Error::unavailable(format!(
            "verify failed: the object has {} bytes, {bytes} were uploaded; uploading again",
            meta.size
        )));
    }
    let etag = meta
        .e_tag
        .as_deref()
        .map(|t| t.trim_matches('"').to_ascii_lowercase());
    if etag.as_deref() == Some(d.etag.as_str()) {
        return Ok(());
    }
    let md5_like = etag.as_deref().is_some_and(|t| {
        let hexpart = t.split('-').next().unwrap_or("");
        hexpart.len() == 32 && hexpart.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if md5_like && !d.etag.contains('-') {
        return Err(Error::unavailable(format!(
            "verify failed: the object's ETag {} is not the MD5 of the bytes uploaded ({}); \
             uploading again",
            etag.unwrap_or_default(),
            d.etag
        )));
    }
    // An ETag of another form (or a multipart one computed with other part sizes): compare
    // the bytes themselves.
    let back = tier
        .client
        .get(path)
        .await
        .map_err(|e| map_error(e, "reading the upload back to verify it"))?
        .bytes()
        .await
        .map_err(|e| map_error(e, "reading the upload back to verify it"))?;
    if Md5::digest(&back).as_slice() != d.md5.as_slice() {
        return Err(Error::unavailable(
            "verify failed: the object read back differs from the file uploaded; uploading again",
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stops this task for good when [`FAULT_ENV`] names `step` (crash tests only).
async fn fault(step: &str) {
    if std::env::var(FAULT_ENV).as_deref() == Ok(step) {
        tracing::warn!("object fault injection: stopped after {step}");
        std::future::pending::<()>().await;
    }
}
