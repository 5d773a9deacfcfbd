//! `tapedeck check` for the object tier: every recorded object is present with the size the
//! index recorded; every object under the store's prefix is known to the index.
//!
//! Problems: a recorded object that is missing or of the wrong size (with no local copy left,
//! the fragments in it are lost: `--repair` removes their rows; with a local copy, `--repair`
//! forgets the object so the file is uploaded again), an object no `files` row names (an
//! orphan: `--repair` deletes it), objects recorded while no tier is configured. Notes: an
//! object uploaded but not yet recorded (a crash between protocol steps 1 and 3: the next start
//! uploads it again; `--repair` deletes it), objects queued for deletion.

use super::ObjectTier;
use crate::error::Result;
use crate::store::CheckReport;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use rusqlite::{params, Connection};
use std::collections::{HashMap, HashSet};

struct Recorded {
    file_id: i64,
    stream_id: i64,
    bytes: i64,
    local: bool,
}

pub(crate) fn check_objects(
    conn: &Connection,
    tier: Option<&ObjectTier>,
    repair: bool,
    report: &mut CheckReport,
    bad_rows: &mut Vec<(i64, i64)>,
) -> Result<()> {
    let recorded: HashMap<String, Recorded> = {
        let mut stmt = conn.prepare(
            "SELECT object_key, id, stream_id, object_bytes, local FROM files \
             WHERE object_key IS NOT NULL",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Recorded {
                        file_id: r.get(1)?,
                        stream_id: r.get(2)?,
                        bytes: r.get(3)?,
                        local: r.get(4)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        rows
    };
    let garbage: HashSet<String> = {
        let mut stmt = conn.prepare("SELECT object_key FROM object_garbage")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        rows
    };
    let Some(tier) = tier else {
        if !recorded.is_empty() || !garbage.is_empty() {
            report.problems.push(format!(
                "the index records {} objects in object storage, but [storage.object] is not \
                 configured: run check with the server's --config to check them",
                recorded.len() + garbage.len()
            ));
        }
        return Ok(());
    };
    let unrecorded: HashMap<i64, i64> = {
        let mut stmt = conn.prepare("SELECT id, stream_id FROM files WHERE object_key IS NULL")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        rows
    };
    let prefix = tier.streams_prefix();
    let listed: Vec<object_store::ObjectMeta> = tier
        .block_on(async {
            let mut out = Vec::new();
            let mut list = tier.client.list(Some(&prefix));
            while let Some(m) = list.next().await {
                out.push(m);
            }
            out.into_iter().collect::<std::result::Result<Vec<_>, _>>()
        })
        .map_err(|e| super::map_error(e, &format!("listing {}", tier.url)))?;
    let mut seen = HashSet::new();
    let mut delete = Vec::new();
    for meta in &listed {
        let key = meta.location.to_string();
        report.files_checked += 1;
        if let Some(r) = recorded.get(&key) {
            seen.insert(key.clone());
            if meta.size as i64 != r.bytes {
                object_wrong(
                    conn,
                    tier,
                    &key,
                    r,
                    Some(meta.size),
                    repair,
                    report,
                    bad_rows,
                )?;
            }
        } else if garbage.contains(&key) {
            report.notes.push(format!(
                "object {key} is queued for deletion (the running server deletes it)"
            ));
            if repair {
                delete.push(key);
            }
        } else if key_file(&key).is_some_and(|(s, f)| unrecorded.get(&f) == Some(&s)) {
            report.notes.push(format!(
                "object {key} was uploaded but not recorded in the index (a crash between \
                 upload and record): the next start uploads the file again"
            ));
            if repair {
                delete.push(key);
            }
        } else {
            report.problems.push(format!(
                "object {key} is an orphan: no file in the index names it"
            ));
            if repair {
                delete.push(key);
            }
        }
    }
    for (key, r) in &recorded {
        if !seen.contains(key) {
            object_wrong(conn, tier, key, r, None, repair, report, bad_rows)?;
        }
    }
    if !delete.is_empty() {
        tier.block_on(async {
            for key in &delete {
                match tier.client.delete(&ObjectPath::from(key.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(super::map_error(e, &format!("deleting {key}"))),
                }
            }
            Ok(())
        })?;
        let mut forget = conn.prepare("DELETE FROM object_garbage WHERE object_key = ?")?;
        for key in &delete {
            forget.execute([key])?;
            report.repaired.push(format!("deleted object {key}"));
        }
    }
    Ok(())
}

/// A recorded object that is missing (`size` None) or of the wrong size.
#[allow(clippy::too_many_arguments)]
fn object_wrong(
    conn: &Connection,
    tier: &ObjectTier,
    key: &str,
    r: &Recorded,
    size: Option<u64>,
    repair: bool,
    report: &mut CheckReport,
    bad_rows: &mut Vec<(i64, i64)>,
) -> Result<()> {
    let what = match size {
        None => format!(
            "object {key} (file {}) is missing from {}",
            r.file_id, tier.url
        ),
        Some(s) => format!(
            "object {key} (file {}) has {s} bytes, the index recorded {}",
            r.file_id, r.bytes
        ),
    };
    if r.local {
        report
            .problems
            .push(format!("{what}; the local copy is still there"));
        if repair {
            // Forget the object: the file is uploaded again from its local copy.
            conn.execute(
                "UPDATE files SET object_key = NULL, object_bytes = NULL, object_md5 = NULL, \
                 uploaded_us = NULL WHERE id = ?",
                [r.file_id],
            )?;
            conn.execute(
                "UPDATE streams SET remote_bytes = remote_bytes - ? WHERE id = ?",
                params![r.bytes, r.stream_id],
            )?;
            report.repaired.push(format!(
                "file {} will be uploaded again from its local copy",
                r.file_id
            ));
        }
    } else {
        report.problems.push(format!(
            "{what}, and there is no local copy: its fragments are lost"
        ));
        let mut stmt = conn.prepare("SELECT stream_id, number FROM fragments WHERE file_id = ?")?;
        let rows = stmt
            .query_map([r.file_id], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<Vec<(i64, i64)>>>()?;
        bad_rows.extend(rows);
    }
    Ok(())
}

/// The (stream id, file id) a key of this store names (`ObjectTier::key`), if it is one.
fn key_file(key: &str) -> Option<(i64, i64)> {
    let mut parts = key.rsplit('/');
    let file = crate::store::files::parse_file_name(parts.next()?)?;
    let stream = parts.next()?.parse().ok()?;
    (parts.next()? == "streams").then_some((stream, file))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_name_their_file() {
        assert_eq!(
            super::key_file("a/b/streams/7/0000000042.frag"),
            Some((7, 42))
        );
        assert_eq!(super::key_file("streams/7/0000000042.frag"), Some((7, 42)));
        assert_eq!(super::key_file("streams/x/0000000042.frag"), None);
        assert_eq!(super::key_file("other/7/0000000042.frag"), None);
    }
}
