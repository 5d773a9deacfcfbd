//! Startup recovery: make the files agree with the committed index before the writer starts.
//! After a crash a file may hold bytes of a group that never committed (cut them off) and a new
//! file may exist whose `files` row never committed (delete it). Sessions left open by the crash
//! are closed. With the object tier, a local copy whose deletion committed but was not unlinked
//! is unlinked (the uploads that did not finish are simply found again by the uploader).

use super::files;
use crate::error::Result;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

pub struct Recovered {
    /// First file id that no file on disk or in the index uses.
    pub next_file_id: i64,
}

pub fn recover(conn: &mut Connection, data_dir: &Path, now_us: i64) -> Result<Recovered> {
    // The high water, not MAX(id): the newest files may have been deleted (see schema V5).
    let mut max_id: i64 = conn.query_row(
        "SELECT MAX((SELECT COALESCE(MAX(id), 0) FROM files), \
         (SELECT last_id FROM id_high_water WHERE name = 'files'))",
        [],
        |r| r.get(0),
    )?;
    for (stream_id, file_id, path) in files::list_files(data_dir)? {
        max_id = max_id.max(file_id);
        let known: Option<(i64, bool)> = conn
            .query_row(
                "SELECT stream_id, local FROM files WHERE id = ?",
                [file_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((_, local)) = known.filter(|k| k.0 == stream_id) else {
            tracing::warn!(path = %path.display(), "removing fragment file that no committed row names");
            std::fs::remove_file(&path)?;
            continue;
        };
        if !local {
            // Protocol step 4 of the object tier (`object/mod.rs`): the deletion of this
            // uploaded file's local copy committed, its unlink did not happen.
            tracing::info!(path = %path.display(), "finishing the delete of an uploaded file's local copy");
            std::fs::remove_file(&path)?;
            continue;
        }
        let end: Option<i64> = conn.query_row(
            "SELECT MAX(file_offset + size_bytes) FROM fragments WHERE file_id = ?",
            [file_id],
            |r| r.get(0),
        )?;
        let len = std::fs::metadata(&path)?.len();
        match end {
            None => {
                // Every fragment in it is gone (expired, or never committed): the file goes too.
                conn.execute("DELETE FROM files WHERE id = ?", [file_id])?;
                std::fs::remove_file(&path)?;
            }
            Some(end) if len > end as u64 => {
                tracing::info!(path = %path.display(), cut_bytes = len - end as u64, "truncating unacknowledged tail");
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(end as u64)?;
                f.sync_all()?;
            }
            Some(end) if len < end as u64 => {
                tracing::error!(path = %path.display(), len, indexed_end = end, "fragment file is shorter than its index; run `tapedeck check --repair`");
            }
            Some(_) => {}
        }
    }
    conn.execute(
        "UPDATE sessions SET ended_us = ?, end_reason = 'server restarted' WHERE ended_us IS NULL",
        params![now_us],
    )?;
    Ok(Recovered {
        next_file_id: max_id + 1,
    })
}

#[cfg(test)]
mod tests {
    use crate::store::testing::{fragment_bytes, TestStore};
    use std::io::Write;

    /// A half-written tail (bytes of a group that never committed) is cut off when the store is
    /// opened again; every acknowledged fragment is still there, byte for byte, and the next
    /// fragment gets the next number.
    #[tokio::test]
    async fn reopen_truncates_a_half_written_tail() {
        let ts = TestStore::new();
        let cam = ts.add_stream("cam").await;
        let a = ts.append(&cam, 0, 1000, 300).await;
        let b = ts.append(&cam, 1000, 1000, 200).await;
        let path = ts.file_of(&b);
        let acked_len = (b.file_offset + b.size_bytes) as u64;
        let ts = ts
            .reopen_after(|_| {
                // What a crash mid-group leaves: the start of a fragment nobody acknowledged.
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(&fragment_bytes(500)[..123]).unwrap();
            })
            .await;
        assert_eq!(std::fs::metadata(&path).unwrap().len(), acked_len);
        assert_eq!(
            ts.store.fragment_bytes(&a).await.unwrap(),
            fragment_bytes(300)
        );
        assert_eq!(
            ts.store.fragment_bytes(&b).await.unwrap(),
            fragment_bytes(200)
        );
        let cam = ts.with_session(cam.row).await;
        assert_eq!(ts.append(&cam, 2000, 1000, 10).await.number, 3);
        assert!(crate::store::check(ts.data_dir(), false)
            .unwrap()
            .is_clean());
    }

    /// A file that no committed row names (created for a group that never committed) is
    /// deleted on reopen, and sessions left open are closed.
    #[tokio::test]
    async fn reopen_removes_unnamed_files_and_closes_sessions() {
        let ts = TestStore::new();
        let cam = ts.add_stream("cam").await;
        let a = ts.append(&cam, 0, 1000, 10).await;
        let stray = crate::store::files::file_path(ts.data_dir(), cam.row.id, a.file_id + 7);
        let ts = ts
            .reopen_after(|_| std::fs::write(&stray, fragment_bytes(10)).unwrap())
            .await;
        assert!(!stray.exists(), "unnamed file removed");
        assert!(ts.file_of(&a).exists(), "the committed file stays");
        let sessions = ts.store.sessions(cam.row.id, 10).await.unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].end_reason.as_deref(), Some("server restarted"));
    }

    /// Ids are never handed out twice: the newest stream purged (with its files, init and
    /// session), then a restart, and a new stream gets ids none of them had. Object keys and
    /// caches name things by these ids.
    #[tokio::test]
    async fn ids_of_a_purged_newest_stream_are_not_reused_after_reopen() {
        let ts = TestStore::new();
        let old = ts.add_stream("old").await;
        ts.append(&old, 0, 1000, 10).await;
        let newest = ts.add_stream("newest").await;
        let gone = ts.append(&newest, 0, 1000, 10).await;
        ts.store.delete_stream("newest").await.unwrap();
        ts.store.purge_deleted().await.unwrap();
        let ts = ts.reopen_after(|_| {}).await;
        let fresh = ts.add_stream("newest").await;
        let row = ts.append(&fresh, 0, 1000, 10).await;
        assert!(fresh.row.id > newest.row.id, "{} reused", fresh.row.id);
        assert!(fresh.session_id > newest.session_id);
        assert!(fresh.init_id > newest.init_id);
        assert!(row.file_id > gone.file_id, "file id {} reused", row.file_id);
    }
}
