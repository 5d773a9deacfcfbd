//! `tapedeck check [--repair]`: compares the index with the fragment files.
//!
//! Problems (exit status 1 unless repaired): rows pointing at missing files or past their end,
//! bytes at a row's offset that are not a `moof`+`mdat` of the row's size, files that fragment
//! rows name but the files table lacks, fragments naming unknown inits, stream totals that
//! disagree with the rows. Notes (not problems): what a crash leaves by design and the next start
//! removes: bytes past the last indexed fragment, and files that nothing in the index names.
//! Fragment bytes are read through the store's byte reader (`reader.rs`), like every other read.
//! With an object tier (`check_with`), files whose only copy is remote are checked against their
//! objects (present, right size) without downloading them, and the bucket is listed for objects
//! the index does not know (`object/check.rs`).

use super::files;
use super::reader::{ByteReader, FragmentFile};
use crate::error::Result;
use rusqlite::{params, Connection};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub fragments_checked: u64,
    pub files_checked: u64,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    pub repaired: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn check(data_dir: &Path, repair: bool) -> Result<CheckReport> {
    check_with(data_dir, &crate::config::StorageConfig::default(), repair)
}

/// `check`, with the storage settings: an object tier's bucket is checked too.
pub fn check_with(
    data_dir: &Path,
    storage: &crate::config::StorageConfig,
    repair: bool,
) -> Result<CheckReport> {
    let _lock = if repair {
        Some(super::lock_data_dir(data_dir)?)
    } else {
        None
    };
    let mut conn = super::open_db(data_dir)?;
    super::schema::migrate(&mut conn)?;
    let mut report = CheckReport::default();
    // Files whose local copy was deleted after their upload (`object/mod.rs`, step 4).
    let remote_only: HashSet<i64> = {
        let mut stmt = conn.prepare("SELECT id FROM files WHERE local = 0")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        rows
    };
    let file_rows: HashMap<i64, i64> = {
        let mut stmt = conn.prepare("SELECT id, stream_id FROM files")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        rows
    };
    let inits: HashSet<i64> = {
        let mut stmt = conn.prepare("SELECT id FROM inits")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        rows
    };
    let mut bad_rows: Vec<(i64, i64)> = Vec::new();
    let mut indexed_end: HashMap<i64, u64> = HashMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT stream_id, number, file_id, file_offset, size_bytes, init_id FROM fragments \
             ORDER BY file_id, file_offset",
        )?;
        let mut rows = stmt.query([])?;
        let reader = ByteReader::new(data_dir.to_path_buf(), None, None);
        let mut open: Option<(i64, Option<FragmentFile>, u64)> = None;
        while let Some(r) = rows.next()? {
            let (stream_id, number, file_id, offset, size, init_id): (
                i64,
                i64,
                i64,
                i64,
                i64,
                i64,
            ) = (
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            );
            report.fragments_checked += 1;
            let what = format!("stream {stream_id} fragment {number}");
            if !inits.contains(&init_id) {
                report.problems.push(format!(
                    "{what}: names init {init_id}, which does not exist"
                ));
            }
            if file_rows.get(&file_id) != Some(&stream_id) {
                report.problems.push(format!(
                    "{what}: names file {file_id}, which has no row for this stream"
                ));
                bad_rows.push((stream_id, number));
                continue;
            }
            if remote_only.contains(&file_id) {
                // Checked against its object below, without downloading it.
                continue;
            }
            if open.as_ref().map(|o| o.0) != Some(file_id) {
                let f = reader.open_file(stream_id, file_id).ok();
                let len = f.as_ref().and_then(|f| f.len_bytes().ok()).unwrap_or(0);
                open = Some((file_id, f, len));
            }
            let (_, f, len) = open.as_ref().expect("set above");
            let Some(f) = f else {
                report
                    .problems
                    .push(format!("{what}: file {file_id} is missing"));
                bad_rows.push((stream_id, number));
                continue;
            };
            let end = (offset + size) as u64;
            if end > *len {
                report.problems.push(format!(
                    "{what}: ends at byte {end} but file {file_id} has {len} bytes"
                ));
                bad_rows.push((stream_id, number));
                continue;
            }
            if let Err(m) = verify_fragment_boxes(f, offset as u64, size as u64) {
                report.problems.push(format!("{what}: {m}"));
                bad_rows.push((stream_id, number));
                continue;
            }
            let e = indexed_end.entry(file_id).or_default();
            *e = (*e).max(end);
        }
    }
    // Files on disk against the index.
    for (stream_id, file_id, path) in files::list_files(data_dir)? {
        report.files_checked += 1;
        let len = std::fs::metadata(&path)?.len();
        if file_rows.get(&file_id) != Some(&stream_id) {
            if indexed_end.contains_key(&file_id) {
                report.problems.push(format!(
                    "file {} is not in the index, but fragment rows name it",
                    path.display()
                ));
            } else {
                // Rows go first, files after (store/mod.rs): a crash between the two, or before
                // a new file's first fragment was committed, leaves a file nothing names.
                report.notes.push(format!(
                    "file {} is not in the index and no fragment names it (left by a crash \
                     between a delete and its unlink, or before its first commit; removed at \
                     next start)",
                    path.display()
                ));
            }
            if repair {
                std::fs::remove_file(&path)?;
                report.repaired.push(format!("removed {}", path.display()));
            }
            continue;
        }
        if remote_only.contains(&file_id) {
            report.notes.push(format!(
                "file {} is uploaded and its local copy was being deleted when the server \
                 stopped (removed at next start)",
                path.display()
            ));
            if repair {
                std::fs::remove_file(&path)?;
                report.repaired.push(format!("removed {}", path.display()));
            }
            continue;
        }
        let end = indexed_end.get(&file_id).copied().unwrap_or(0);
        if len > end {
            report.notes.push(format!(
                "file {} has {} bytes past its last indexed fragment (unacknowledged; cut at next start)",
                path.display(),
                len - end
            ));
            if repair {
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(end)?;
                f.sync_all()?;
                report
                    .repaired
                    .push(format!("truncated {} to {end} bytes", path.display()));
            }
        }
    }
    let tier = match &storage.object {
        Some(o) => Some(super::object::ObjectTier::open(o)?),
        None => None,
    };
    super::object::check::check_objects(
        &conn,
        tier.as_deref(),
        repair,
        &mut report,
        &mut bad_rows,
    )?;
    if repair && !bad_rows.is_empty() {
        let tx = conn.transaction()?;
        for (stream_id, number) in &bad_rows {
            tx.execute(
                "DELETE FROM fragments WHERE stream_id = ? AND number = ?",
                params![stream_id, number],
            )?;
        }
        tx.commit()?;
        report.repaired.push(format!(
            "removed {} index rows whose bytes are not on disk",
            bad_rows.len()
        ));
    }
    check_totals(&conn, repair, &mut report)?;
    Ok(report)
}

/// Checks that the bytes at `offset` are one `moof` followed by one `mdat`, `size` bytes in all.
fn verify_fragment_boxes(
    f: &FragmentFile,
    offset: u64,
    size: u64,
) -> std::result::Result<(), String> {
    let mut header = [0u8; 8];
    let mut pos = offset;
    for expected in [b"moof", b"mdat"] {
        f.read_exact_at(&mut header, pos)
            .map_err(|e| format!("cannot read: {e}"))?;
        let box_size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let box_size = if box_size == 1 {
            let mut large = [0u8; 8];
            f.read_exact_at(&mut large, pos + 8)
                .map_err(|e| format!("cannot read: {e}"))?;
            u64::from_be_bytes(large)
        } else {
            box_size
        };
        if &header[4..8] != expected || box_size < 8 {
            return Err(format!(
                "bytes at offset {pos} are not a '{}' box",
                String::from_utf8_lossy(expected)
            ));
        }
        pos += box_size;
    }
    if pos != offset + size {
        return Err(format!(
            "moof+mdat are {} bytes, the index says {size}",
            pos - offset
        ));
    }
    Ok(())
}

fn check_totals(conn: &Connection, repair: bool, report: &mut CheckReport) -> Result<()> {
    let mut stmt = conn.prepare(
        "SELECT s.id, s.name, s.fragment_count, s.total_bytes, \
         (SELECT COUNT(*) FROM fragments f WHERE f.stream_id = s.id), \
         (SELECT COALESCE(SUM(size_bytes), 0) FROM fragments f WHERE f.stream_id = s.id) \
         FROM streams s WHERE s.deleted_us IS NULL",
    )?;
    let rows: Vec<(i64, String, i64, i64, i64, i64)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (id, name, count, bytes, real_count, real_bytes) in rows {
        if count != real_count || bytes != real_bytes {
            report.problems.push(format!(
                "stream '{name}': totals say {count} fragments / {bytes} bytes, rows hold {real_count} / {real_bytes}"
            ));
            if repair {
                conn.execute(
                    "UPDATE streams SET fragment_count = ?2, total_bytes = ?3, \
                     first_producer_us = (SELECT MIN(producer_start_us) FROM fragments WHERE stream_id = ?1), \
                     last_end_us = (SELECT MAX(producer_start_us + duration_us) FROM fragments WHERE stream_id = ?1) \
                     WHERE id = ?1",
                    params![id, real_count, real_bytes],
                )?;
                report
                    .repaired
                    .push(format!("recomputed totals of stream '{name}'"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestStore;
    use crate::store::FragmentRow;

    /// A store with two fragments in one file.
    async fn two_fragments() -> (TestStore, FragmentRow, FragmentRow) {
        let ts = TestStore::new();
        let cam = ts.add_stream("cam").await;
        let a = ts.append(&cam, 0, 1000, 100).await;
        let b = ts.append(&cam, 1000, 1000, 100).await;
        assert_eq!(a.file_id, b.file_id);
        (ts, a, b)
    }

    #[tokio::test]
    async fn a_consistent_store_is_clean() {
        let (ts, _, _) = two_fragments().await;
        let report = check(ts.data_dir(), false).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert!(report.notes.is_empty(), "{report:?}");
        assert_eq!((report.fragments_checked, report.files_checked), (2, 1));
    }

    /// Bytes past the last indexed fragment are what a crash leaves: a note, not a problem;
    /// `--repair` cuts them.
    #[tokio::test]
    async fn an_unindexed_tail_is_a_note_and_repair_cuts_it() {
        let (ts, _, b) = two_fragments().await;
        let path = ts.file_of(&b);
        let dir = ts.close().await;
        let end = (b.file_offset + b.size_bytes) as u64;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(end + 50)
            .unwrap();
        let report = check(dir.path(), false).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.notes.len(), 1, "{report:?}");
        let report = check(dir.path(), true).unwrap();
        assert_eq!(report.repaired.len(), 1, "{report:?}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
    }

    /// A row whose bytes are cut short is a problem; `--repair` drops the row, the partial bytes
    /// after the last whole fragment and fixes the totals, leaving a clean store.
    #[tokio::test]
    async fn a_row_past_the_file_end_is_a_problem_and_repaired() {
        let (ts, a, b) = two_fragments().await;
        let path = ts.file_of(&b);
        let dir = ts.close().await;
        let a_end = (a.file_offset + a.size_bytes) as u64;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(a_end + 10)
            .unwrap();
        let report = check(dir.path(), false).unwrap();
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(
            report.problems[0].contains("fragment 2: ends at byte"),
            "{report:?}"
        );
        assert_eq!(report.notes.len(), 1, "the partial bytes: {report:?}");
        let repaired = check(dir.path(), true).unwrap();
        assert!(
            repaired
                .problems
                .iter()
                .any(|p| p.contains("totals say 2 fragments")),
            "dropping the row leaves the totals to fix: {repaired:?}"
        );
        let again = check(dir.path(), false).unwrap();
        assert!(again.is_clean() && again.notes.is_empty(), "{again:?}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), a_end);
    }

    /// Bytes that are not a moof+mdat of the row's size, and a missing file, are problems.
    #[tokio::test]
    async fn wrong_bytes_and_missing_files_are_problems() {
        let (ts, a, _) = two_fragments().await;
        let path = ts.file_of(&a);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[4..8].copy_from_slice(b"free");
        std::fs::write(&path, &bytes).unwrap();
        let report = check(ts.data_dir(), false).unwrap();
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(
            report.problems[0].contains("fragment 1: bytes at offset 0 are not a 'moof' box"),
            "{report:?}"
        );
        std::fs::remove_file(&path).unwrap();
        let report = check(ts.data_dir(), false).unwrap();
        assert_eq!(report.problems.len(), 2, "{report:?}");
        assert!(
            report.problems.iter().all(|p| p.contains("is missing")),
            "{report:?}"
        );
    }
}
