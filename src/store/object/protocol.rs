//! The index side of the tiering protocol (`object/mod.rs`): each step's SQL, run on the
//! writer thread between commit groups (each a short transaction), so the index changes of
//! the tier never race an append or an expiry.

use super::super::writer::WriterState;
use crate::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};

/// A sealed file that has no object yet.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub stream_id: i64,
    pub file_id: i64,
    /// Bytes to upload: the end of the file's last indexed fragment.
    pub bytes: u64,
    pub created_us: i64,
}

/// Seals idle files, then lists every sealed file of a live stream not yet uploaded, oldest
/// first (the order they would be lost in, were the disk budget to bite).
pub(crate) fn seal_and_list(w: &mut WriterState) -> Result<Vec<Sealed>> {
    let open = w.seal_idle_files();
    let mut stmt = w.conn.prepare_cached(
        "SELECT f.id, f.stream_id, f.created_us, \
         (SELECT MAX(file_offset + size_bytes) FROM fragments WHERE file_id = f.id) \
         FROM files f JOIN streams s ON s.id = f.stream_id \
         WHERE f.object_key IS NULL AND s.deleted_us IS NULL ORDER BY f.id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (file_id, stream_id, created_us, end) = row?;
        // A file with no fragment left (expiry emptied it) goes with its row; nothing to keep.
        let Some(end) = end.filter(|e| *e > 0) else {
            continue;
        };
        if open.contains(&file_id) {
            continue;
        }
        out.push(Sealed {
            stream_id,
            file_id,
            bytes: end as u64,
            created_us,
        });
    }
    Ok(out)
}

/// Step 3: records a verified object in the file's row. False when the row is gone (its media
/// expired or its stream was deleted during the upload): the caller deletes the object.
pub(crate) fn record_upload(
    w: &mut WriterState,
    file: &Sealed,
    key: &str,
    md5: &[u8],
) -> Result<bool> {
    let now_us = w.now_us();
    let tx = w.conn.transaction()?;
    let n = tx.execute(
        "UPDATE files SET object_key = ?, object_bytes = ?, object_md5 = ?, uploaded_us = ? \
         WHERE id = ? AND object_key IS NULL",
        params![key, file.bytes as i64, md5, now_us, file.file_id],
    )?;
    if n == 1 {
        tx.execute(
            "UPDATE streams SET remote_bytes = remote_bytes + ? WHERE id = ?",
            params![file.bytes as i64, file.stream_id],
        )?;
    }
    tx.commit()?;
    Ok(n == 1)
}

/// What [`delete_local_copies`] is to free.
#[derive(Debug, Clone, Copy)]
pub struct Eviction {
    /// Delete local copies uploaded before this server time...
    pub uploaded_before_us: i64,
    /// ...and then the oldest ones while all local copies of uploaded files add up to more
    /// than this...
    pub keep_bytes: Option<u64>,
    /// ...and then at least this many more bytes (the disk budget asks).
    pub free_bytes: u64,
}

/// Step 4, for every uploaded file the keep limits no longer allow locally: `local = 0`
/// commits, then the file is unlinked (recovery finishes an unlink a crash interrupted).
/// Returns (files, bytes) deleted.
pub(crate) fn delete_local_copies(w: &mut WriterState, ev: Eviction) -> Result<(u64, u64)> {
    let candidates: Vec<(i64, i64, i64, i64)> = {
        let mut stmt = w.conn.prepare_cached(
            "SELECT id, stream_id, object_bytes, uploaded_us FROM files \
             WHERE local = 1 AND object_key IS NOT NULL ORDER BY uploaded_us, id",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        rows
    };
    let mut kept_bytes: u64 = candidates.iter().map(|c| c.2.max(0) as u64).sum();
    let mut freed = 0u64;
    let mut victims = Vec::new();
    for (file_id, stream_id, bytes, uploaded_us) in candidates {
        let bytes = bytes.max(0) as u64;
        let too_old = uploaded_us < ev.uploaded_before_us;
        let too_many = ev.keep_bytes.is_some_and(|k| kept_bytes > k);
        let budget = freed < ev.free_bytes;
        if !(too_old || too_many || budget) {
            break;
        }
        kept_bytes -= bytes;
        freed += bytes;
        victims.push((file_id, stream_id));
    }
    if victims.is_empty() {
        return Ok((0, 0));
    }
    let tx = w.conn.transaction()?;
    {
        let mut gone = tx.prepare_cached("UPDATE files SET local = 0 WHERE id = ?")?;
        let mut totals = tx.prepare_cached(
            "UPDATE streams SET remote_only_bytes = remote_only_bytes + \
             (SELECT COALESCE(SUM(size_bytes), 0) FROM fragments WHERE file_id = ?1) \
             WHERE id = ?2",
        )?;
        for (file_id, stream_id) in &victims {
            gone.execute([file_id])?;
            totals.execute(params![file_id, stream_id])?;
        }
    }
    tx.commit()?;
    let mut files = 0;
    for (file_id, stream_id) in victims {
        w.close_file(file_id);
        let path = super::super::files::file_path(&w.data_dir, stream_id, file_id);
        match std::fs::remove_file(&path) {
            Ok(()) => files += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete the local copy of an uploaded file; the next start will")
            }
        }
    }
    Ok((files, freed))
}

/// Objects queued for deletion (their rows are gone), oldest first.
pub(crate) fn garbage(c: &Connection, limit: u32) -> Result<Vec<String>> {
    let mut stmt =
        c.prepare_cached("SELECT object_key FROM object_garbage ORDER BY queued_us LIMIT ?")?;
    let keys = stmt
        .query_map([limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(keys)
}

pub(crate) fn forget_garbage(w: &mut WriterState, keys: &[String]) -> Result<()> {
    let tx = w.conn.transaction()?;
    {
        let mut del = tx.prepare_cached("DELETE FROM object_garbage WHERE object_key = ?")?;
        for k in keys {
            del.execute([k])?;
        }
    }
    tx.commit()?;
    Ok(())
}

const BUCKET_SETTING: &str = "object_url";

/// At open: the index and the configuration must agree on where objects are. Objects recorded
/// in one bucket cannot be read from another, and a store opened without its tier would
/// neither read nor delete them: both are refused with what to do.
pub(crate) fn check_bucket(conn: &Connection, configured_url: Option<&str>) -> Result<()> {
    let recorded: Option<String> = conn
        .query_row(
            "SELECT value FROM store_settings WHERE key = ?",
            [BUCKET_SETTING],
            |r| r.get(0),
        )
        .optional()?;
    let objects: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM files WHERE object_key IS NOT NULL) + \
         (SELECT COUNT(*) FROM object_garbage)",
        [],
        |r| r.get(0),
    )?;
    match (recorded.as_deref(), configured_url) {
        (Some(was), Some(now)) if was != now && objects > 0 => Err(Error::invalid(format!(
            "storage.object.url is {now}, but this data dir's index records {objects} objects \
             in {was}: set the url back (or copy the objects there first)"
        ))),
        (Some(was), None) if objects > 0 => Err(Error::invalid(format!(
            "this data dir's index records {objects} objects in {was}, but [storage.object] is \
             not configured: configure it to read (and expire) them"
        ))),
        (_, Some(now)) if recorded.as_deref() != Some(now) => {
            conn.execute(
                "INSERT OR REPLACE INTO store_settings (key, value) VALUES (?, ?)",
                params![BUCKET_SETTING, now],
            )?;
            Ok(())
        }
        _ => Ok(()),
    }
}

impl super::super::Store {
    /// Deletes local copies of uploaded files, oldest upload first, until `bytes` are freed (the
    /// disk budget asks); returns the bytes freed. 0 without an object tier.
    pub async fn free_local_copies(&self, bytes: u64) -> Result<u64> {
        let Some(tier) = self.inner.object.clone() else {
            return Ok(0);
        };
        let ev = Eviction {
            uploaded_before_us: i64::MIN,
            keep_bytes: None,
            free_bytes: bytes,
        };
        let (files, freed) = self.exec(move |w| delete_local_copies(w, ev)).await?;
        super::stats::Counters::add(&tier.stats.local_copies_deleted, files);
        if freed > 0 {
            tracing::info!(
                files,
                freed_bytes = freed,
                "disk budget: deleted local copies of uploaded files"
            );
        }
        Ok(freed)
    }

    /// Counts media the disk budget deleted before its upload (for `/metrics` and `/readyz`).
    pub(crate) fn note_unuploaded_deleted(&self, bytes: u64) {
        if let Some(tier) = &self.inner.object {
            super::stats::Counters::add(&tier.stats.unuploaded_deleted_bytes, bytes);
        }
    }

    /// Wakes the uploader now (tests and the bench, instead of waiting for its next poll).
    pub fn wake_uploader(&self) {
        self.inner.object_wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::super::{mark_uploaded_for_test, testing_config};
    use crate::config::StorageConfig;
    use crate::store::testing::TestStore;
    use crate::store::Store;

    fn tiered() -> StorageConfig {
        StorageConfig {
            min_free_bytes: Some(0),
            object: Some(testing_config()),
            ..StorageConfig::default()
        }
    }

    /// A crash after `local = 0` committed and before the unlink: the next start unlinks.
    #[tokio::test]
    async fn recovery_finishes_an_interrupted_local_delete() {
        let ts = TestStore::with_config(tiered());
        let cam = ts.add_stream("cam").await;
        let row = ts.append(&cam, 0, 1000, 100).await;
        let path = ts.file_of(&row);
        mark_uploaded_for_test(&ts.store, &[row.file_id]).await;
        let file_id = row.file_id;
        ts.store
            .exec(move |w| {
                Ok(w.conn
                    .execute("UPDATE files SET local = 0 WHERE id = ?", [file_id])?)
            })
            .await
            .unwrap();
        assert!(path.exists(), "the crash left the local copy");
        let ts = ts.reopen_after(|_| {}).await;
        assert!(!path.exists(), "recovery finished the delete");
        assert_eq!(
            ts.store
                .fragments_between(cam.row.id, 0, i64::MAX, 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    /// Objects in the index and no tier (or another bucket) configured: refused, saying why.
    #[tokio::test]
    async fn a_store_with_objects_needs_its_bucket() {
        let ts = TestStore::with_config(tiered());
        let cam = ts.add_stream("cam").await;
        let row = ts.append(&cam, 0, 1000, 100).await;
        ts.append(&cam, 1000, 1000, 100).await;
        mark_uploaded_for_test(&ts.store, &[row.file_id]).await;
        let clock = ts.clock.clone();
        let dir = ts.close().await;
        let err = Store::open(dir.path(), &StorageConfig::default(), clock.clone())
            .err()
            .unwrap();
        assert!(
            err.message.contains("[storage.object] is not configured"),
            "{err}"
        );
        let mut other = tiered();
        other.object.as_mut().unwrap().url = "s3://another/bucket".into();
        let err = Store::open(dir.path(), &other, clock.clone())
            .err()
            .unwrap();
        assert!(err.message.contains("s3://unit-test/prefix"), "{err}");
        Store::open(dir.path(), &tiered(), clock).unwrap();
    }
}
