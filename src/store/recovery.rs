//! Startup recovery: make the files agree with the committed index before the writer starts.
//! After a crash a file may hold bytes of a group that never committed (cut them off) and a new
//! file may exist whose `files` row never committed (delete it). Sessions left open by the crash
//! are closed.

use super::files;
use crate::error::Result;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

pub struct Recovered {
    /// First file id that no file on disk or in the index uses.
    pub next_file_id: i64,
}

pub fn recover(conn: &mut Connection, data_dir: &Path, now_us: i64) -> Result<Recovered> {
    let mut max_id: i64 =
        conn.query_row("SELECT COALESCE(MAX(id), 0) FROM files", [], |r| r.get(0))?;
    for (stream_id, file_id, path) in files::list_files(data_dir)? {
        max_id = max_id.max(file_id);
        let known: Option<i64> = conn
            .query_row("SELECT stream_id FROM files WHERE id = ?", [file_id], |r| {
                r.get(0)
            })
            .optional()?;
        if known != Some(stream_id) {
            tracing::warn!(path = %path.display(), "removing fragment file that no committed row names");
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
