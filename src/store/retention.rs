//! Expiry: removing the oldest fragments from the log, in bounded batches that run on the
//! writer thread between commit groups, so a sweep of a million rows never holds ingest for
//! long.
//!
//! Order of work in a batch (the durability protocol in reverse): one transaction removes the
//! fragment rows, fixes the stream totals and spans, and removes the `files` rows of files left
//! without fragments; only after it commits are those files unlinked. A crash in between leaves
//! files that no row names, which startup recovery deletes. Readers that already opened a file
//! keep reading it (an unlinked file lives while open). Held fragments (a hold's producer-time
//! range overlaps them) are never removed. A file the writer is appending to is closed first
//! when expiry empties it (this runs on the writer thread, between appends).

use super::files;
use super::rows::HoldRow;
use super::writer::{WriterState, DISCONTINUITY_GAP_US};
use super::Store;
use crate::error::Result;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What expiry removed.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Expired {
    pub fragments: u64,
    pub bytes: u64,
    pub files: u64,
}

impl Expired {
    pub fn add(&mut self, o: Expired) {
        self.fragments += o.fragments;
        self.bytes += o.bytes;
        self.files += o.files;
    }
}

/// Which fragments of one stream a batch removes (oldest first).
#[derive(Debug, Clone, Copy)]
pub enum StreamExpiry {
    /// Made durable before this server time.
    OlderThan { cutoff_server_us: i64 },
    /// As many of the oldest as it takes to free this many bytes.
    FreeBytes { bytes: u64 },
}

/// The result of one batch; call again from `cursor` while `more`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Batch<C> {
    pub expired: Expired,
    /// Of `expired.bytes`, those whose file was not yet uploaded to the object tier (0 without
    /// a tier): media the disk budget deleted before it was safe elsewhere.
    pub unuploaded_bytes: u64,
    /// Fragments kept because a hold covers them.
    pub held: u64,
    pub cursor: C,
    pub more: bool,
}

/// Position in the global age order: (server time, stream id, number).
pub type AgeCursor = (i64, i64, i64);

struct Victim {
    stream_id: i64,
    number: i64,
    size_bytes: i64,
    file_id: i64,
}

fn load_holds(c: &Connection, stream_id: Option<i64>) -> Result<HashMap<i64, Vec<HoldRow>>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, stream_id, start_us, end_us, reason, created_us FROM holds \
         WHERE ?1 IS NULL OR stream_id = ?1",
    )?;
    let mut out: HashMap<i64, Vec<HoldRow>> = HashMap::new();
    let rows = stmt.query_map([stream_id], |r| {
        Ok(HoldRow {
            id: r.get(0)?,
            stream_id: r.get(1)?,
            start_us: r.get(2)?,
            end_us: r.get(3)?,
            reason: r.get(4)?,
            created_us: r.get(5)?,
        })
    })?;
    for h in rows {
        let h = h?;
        out.entry(h.stream_id).or_default().push(h);
    }
    Ok(out)
}

fn held(holds: &HashMap<i64, Vec<HoldRow>>, stream_id: i64, start_us: i64, end_us: i64) -> bool {
    holds
        .get(&stream_id)
        .is_some_and(|hs| hs.iter().any(|h| h.covers(start_us, end_us)))
}

/// One batch of a stream's expiry, from fragment numbers after `after`.
pub(crate) fn expire_stream_batch(
    w: &mut WriterState,
    stream_id: i64,
    what: StreamExpiry,
    after: i64,
    limit: u32,
) -> Result<Batch<i64>> {
    let holds = load_holds(&w.conn, Some(stream_id))?;
    let mut batch = Batch {
        cursor: after,
        ..Default::default()
    };
    let mut victims = Vec::new();
    let mut freed = 0u64;
    let rows: Vec<(i64, i64, i64, i64, i64, i64)> = {
        let mut stmt = w.conn.prepare_cached(
            "SELECT number, producer_start_us, duration_us, size_bytes, file_id, server_time_us \
             FROM fragments WHERE stream_id = ? AND number > ? ORDER BY number LIMIT ?",
        )?;
        let rows = stmt
            .query_map(params![stream_id, after, limit], |r| {
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
        rows
    };
    batch.more = rows.len() == limit as usize;
    for (number, start, dur, size, file_id, server_time) in rows {
        let done = match what {
            StreamExpiry::OlderThan { cutoff_server_us } => server_time >= cutoff_server_us,
            StreamExpiry::FreeBytes { bytes } => freed >= bytes,
        };
        if done {
            batch.more = false;
            break;
        }
        batch.cursor = number;
        if held(&holds, stream_id, start, start + dur) {
            batch.held += 1;
            continue;
        }
        freed += size.max(0) as u64;
        victims.push(Victim {
            stream_id,
            number,
            size_bytes: size,
            file_id,
        });
    }
    batch.expired = delete_victims(w, &victims)?;
    Ok(batch)
}

/// One batch of the global budget: the oldest fragments across all streams (by server time,
/// then stream id, then number) until `bytes` are freed.
pub(crate) fn expire_global_batch(
    w: &mut WriterState,
    bytes: u64,
    after: AgeCursor,
    limit: u32,
) -> Result<Batch<AgeCursor>> {
    let holds = load_holds(&w.conn, None)?;
    let mut batch = Batch {
        cursor: after,
        ..Default::default()
    };
    let rows: Vec<(i64, i64, i64, i64, i64, i64, i64)> = {
        let mut stmt = w.conn.prepare_cached(
            "SELECT server_time_us, stream_id, number, producer_start_us, duration_us, \
             size_bytes, file_id FROM fragments \
             WHERE (server_time_us, stream_id, number) > (?, ?, ?) \
             ORDER BY server_time_us, stream_id, number LIMIT ?",
        )?;
        let rows = stmt
            .query_map(params![after.0, after.1, after.2, limit], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        rows
    };
    batch.more = rows.len() == limit as usize;
    // The budget is the local disk's: fragments whose only copy is in the object tier free no
    // local space, so they are passed over (retention still expires them). Without a tier
    // every file is local and not uploaded.
    let tiers = file_tiers(&w.conn, rows.iter().map(|r| r.6))?;
    let tier_on = w.object_tier_on();
    let mut victims = Vec::new();
    let mut freed = 0u64;
    for (server_time, stream_id, number, start, dur, size, file_id) in rows {
        if freed >= bytes {
            batch.more = false;
            break;
        }
        batch.cursor = (server_time, stream_id, number);
        let tier = tiers.get(&file_id).copied().unwrap_or_default();
        if !tier.local {
            continue;
        }
        if held(&holds, stream_id, start, start + dur) {
            batch.held += 1;
            continue;
        }
        freed += size.max(0) as u64;
        if tier_on && !tier.uploaded {
            batch.unuploaded_bytes += size.max(0) as u64;
        }
        victims.push(Victim {
            stream_id,
            number,
            size_bytes: size,
            file_id,
        });
    }
    batch.expired = delete_victims(w, &victims)?;
    Ok(batch)
}

/// Where a fragment file's bytes are (`object/mod.rs`).
#[derive(Debug, Clone, Copy)]
struct FileTier {
    local: bool,
    uploaded: bool,
}

impl Default for FileTier {
    fn default() -> Self {
        FileTier {
            local: true,
            uploaded: false,
        }
    }
}

fn file_tiers(c: &Connection, ids: impl Iterator<Item = i64>) -> Result<HashMap<i64, FileTier>> {
    let mut stmt =
        c.prepare_cached("SELECT local, object_key IS NOT NULL FROM files WHERE id = ?")?;
    let mut out = HashMap::new();
    for id in ids {
        if let std::collections::hash_map::Entry::Vacant(slot) = out.entry(id) {
            let tier = stmt
                .query_row([id], |r| {
                    Ok(FileTier {
                        local: r.get(0)?,
                        uploaded: r.get(1)?,
                    })
                })
                .optional()?
                .unwrap_or_default();
            slot.insert(tier);
        }
    }
    Ok(out)
}

/// Removes the rows, fixes totals and spans, removes emptied file rows; commits; then unlinks.
fn delete_victims(w: &mut WriterState, victims: &[Victim]) -> Result<Expired> {
    if victims.is_empty() {
        return Ok(Expired::default());
    }
    let mut per_stream: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    let mut file_ids: BTreeMap<i64, i64> = BTreeMap::new();
    for v in victims {
        per_stream
            .entry(v.stream_id)
            .or_default()
            .push((v.number, v.size_bytes));
        file_ids.insert(v.file_id, v.stream_id);
    }
    let mut expired = Expired::default();
    let mut unlink = Vec::new();
    let tx = w.conn.transaction()?;
    {
        let mut del =
            tx.prepare_cached("DELETE FROM fragments WHERE stream_id = ? AND number = ?")?;
        for v in victims {
            expired.fragments += del.execute(params![v.stream_id, v.number])? as u64;
            expired.bytes += v.size_bytes.max(0) as u64;
        }
        let mut totals = tx.prepare_cached(
            "UPDATE streams SET fragment_count = fragment_count - ?2, \
             total_bytes = total_bytes - ?3, \
             first_producer_us = (SELECT producer_start_us FROM fragments \
                                  WHERE stream_id = ?1 ORDER BY number LIMIT 1) \
             WHERE id = ?1",
        )?;
        for (stream_id, gone) in &per_stream {
            let bytes: i64 = gone.iter().map(|g| g.1).sum();
            totals.execute(params![stream_id, gone.len() as i64, bytes])?;
            fix_spans(&tx, *stream_id, gone)?;
        }
        let mut in_use =
            tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM fragments WHERE file_id = ?)")?;
        let mut del_file = tx.prepare_cached("DELETE FROM files WHERE id = ?")?;
        for (file_id, stream_id) in &file_ids {
            let used: bool = in_use.query_row([file_id], |r| r.get(0))?;
            if !used {
                del_file.execute([file_id])?;
                unlink.push((
                    *file_id,
                    files::file_path(&w.data_dir, *stream_id, *file_id),
                ));
            }
        }
    }
    tx.commit()?;
    w.media_removed();
    for (file_id, path) in unlink {
        w.close_file(file_id);
        match std::fs::remove_file(&path) {
            Ok(()) => expired.files += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove expired file; check --repair will")
            }
        }
    }
    Ok(expired)
}

struct SpanRec {
    first: i64,
    last: i64,
    start_us: i64,
    end_us: i64,
    fragments: i64,
    bytes: i64,
}

/// Brings the spans touched by removed fragments (`gone`: number, size) up to date. Removing
/// the oldest fragments of a span (the usual case) trims it; removing fragments from its middle
/// (around a hold) rebuilds it from the remaining rows.
fn fix_spans(tx: &rusqlite::Transaction<'_>, stream_id: i64, gone: &[(i64, i64)]) -> Result<()> {
    let lo = gone.iter().map(|g| g.0).min().unwrap_or(0);
    let hi = gone.iter().map(|g| g.0).max().unwrap_or(0);
    let spans: Vec<SpanRec> = {
        let mut stmt = tx.prepare_cached(
            "SELECT first_number, last_number, start_us, end_us, fragments, bytes FROM spans \
             WHERE stream_id = ? AND last_number >= ? AND first_number <= ? ORDER BY first_number",
        )?;
        let rows = stmt
            .query_map(params![stream_id, lo, hi], |r| {
                Ok(SpanRec {
                    first: r.get(0)?,
                    last: r.get(1)?,
                    start_us: r.get(2)?,
                    end_us: r.get(3)?,
                    fragments: r.get(4)?,
                    bytes: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        rows
    };
    let mut remove =
        tx.prepare_cached("DELETE FROM spans WHERE stream_id = ? AND first_number = ?")?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO spans (stream_id, first_number, last_number, start_us, end_us, fragments, \
         bytes) VALUES (?,?,?,?,?,?,?)",
    )?;
    for s in spans {
        let inside: Vec<&(i64, i64)> = gone
            .iter()
            .filter(|g| g.0 >= s.first && g.0 <= s.last)
            .collect();
        let count = inside.len() as i64;
        let bytes: i64 = inside.iter().map(|g| g.1).sum();
        remove.execute(params![stream_id, s.first])?;
        if count >= s.fragments {
            continue;
        }
        let first_left: Option<(i64, i64)> = tx
            .query_row(
                "SELECT number, producer_start_us FROM fragments WHERE stream_id = ? \
                 AND number BETWEEN ? AND ? ORDER BY number LIMIT 1",
                params![stream_id, s.first, s.last],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((first_left, first_start)) = first_left else {
            continue;
        };
        let max_gone = inside.iter().map(|g| g.0).max().unwrap_or(i64::MIN);
        if max_gone < first_left {
            insert.execute(params![
                stream_id,
                first_left,
                s.last,
                first_start,
                s.end_us,
                s.fragments - count,
                s.bytes - bytes
            ])?;
            continue;
        }
        // Holes in the middle: rebuild this span from what is left of it.
        let _ = s.start_us;
        let mut stmt = tx.prepare_cached(
            "SELECT number, producer_start_us, duration_us, size_bytes FROM fragments \
             WHERE stream_id = ? AND number BETWEEN ? AND ? ORDER BY number",
        )?;
        let rows = stmt.query_map(params![stream_id, s.first, s.last], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut cur: Option<SpanRec> = None;
        for row in rows {
            let (n, start, dur, size) = row?;
            match cur.as_mut() {
                Some(c) if start - c.end_us <= DISCONTINUITY_GAP_US => {
                    c.last = n;
                    c.end_us = c.end_us.max(start + dur);
                    c.fragments += 1;
                    c.bytes += size;
                }
                _ => {
                    if let Some(c) = cur.take() {
                        insert.execute(params![
                            stream_id,
                            c.first,
                            c.last,
                            c.start_us,
                            c.end_us,
                            c.fragments,
                            c.bytes
                        ])?;
                    }
                    cur = Some(SpanRec {
                        first: n,
                        last: n,
                        start_us: start,
                        end_us: start + dur,
                        fragments: 1,
                        bytes: size,
                    });
                }
            }
        }
        if let Some(c) = cur {
            insert.execute(params![
                stream_id,
                c.first,
                c.last,
                c.start_us,
                c.end_us,
                c.fragments,
                c.bytes
            ])?;
        }
    }
    Ok(())
}

impl Store {
    pub async fn expire_stream_batch(
        &self,
        stream_id: i64,
        what: StreamExpiry,
        after: i64,
        limit: u32,
    ) -> Result<Batch<i64>> {
        self.exec(move |w| expire_stream_batch(w, stream_id, what, after, limit))
            .await
    }

    pub async fn expire_global_batch(
        &self,
        bytes: u64,
        after: AgeCursor,
        limit: u32,
    ) -> Result<Batch<AgeCursor>> {
        self.exec(move |w| expire_global_batch(w, bytes, after, limit))
            .await
    }

    /// Holds of one stream (or all), by start.
    pub async fn holds(&self, stream_id: i64) -> Result<Vec<HoldRow>> {
        self.read(move |c| {
            let mut v = load_holds(c, Some(stream_id))?
                .remove(&stream_id)
                .unwrap_or_default();
            v.sort_by_key(|h| (h.start_us, h.id));
            Ok(v)
        })
        .await
    }

    pub async fn add_hold(
        &self,
        stream_id: i64,
        start_us: i64,
        end_us: i64,
        reason: String,
    ) -> Result<HoldRow> {
        self.exec(move |w| {
            let now = w.now_us();
            w.conn.execute(
                "INSERT INTO holds (stream_id, start_us, end_us, reason, created_us) VALUES (?,?,?,?,?)",
                params![stream_id, start_us, end_us, reason, now],
            )?;
            Ok(HoldRow { id: w.conn.last_insert_rowid(), stream_id, start_us, end_us, reason, created_us: now })
        })
        .await
    }

    /// Removes a hold; false when the stream has no such hold.
    pub async fn remove_hold(&self, stream_id: i64, hold_id: i64) -> Result<bool> {
        self.exec(move |w| {
            Ok(w.conn.execute(
                "DELETE FROM holds WHERE stream_id = ? AND id = ?",
                params![stream_id, hold_id],
            )? > 0)
        })
        .await
    }

    /// The server time of the stream's oldest fragment that no hold covers.
    pub async fn oldest_unheld_server_time(&self, stream_id: i64) -> Result<Option<i64>> {
        self.read(move |c| {
            let holds = load_holds(c, Some(stream_id))?;
            let mut stmt = c.prepare_cached(
                "SELECT server_time_us, producer_start_us, duration_us FROM fragments \
                 WHERE stream_id = ? ORDER BY number LIMIT 10000",
            )?;
            let mut rows = stmt.query([stream_id])?;
            while let Some(r) = rows.next()? {
                let (t, s, d): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                if !held(&holds, stream_id, s, s + d) {
                    return Ok(Some(t));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Bytes stored in all streams (from the running totals).
    pub async fn used_bytes(&self) -> Result<u64> {
        self.read(|c| {
            let b: i64 = c.query_row(
                "SELECT COALESCE(SUM(total_bytes - remote_only_bytes), 0) FROM streams",
                [],
                |r| r.get(0),
            )?;
            Ok(b.max(0) as u64)
        })
        .await
    }

    /// Live streams' ids, names and retention settings, for the sweeper.
    pub async fn retention_settings(&self) -> Result<Vec<(i64, String, u64, Option<u64>, i64)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, name, retention_hours, retention_bytes, total_bytes FROM streams \
                 WHERE deleted_us IS NULL ORDER BY id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get::<_, i64>(2)?.max(0) as u64,
                        r.get::<_, Option<i64>>(3)?.map(|b| b.max(0) as u64),
                        r.get(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::store::testing::{TestStore, TestStream, T0_US};

    /// Five 1 s fragments of `s` (116 bytes each), each made durable 1 s after the one before.
    async fn five_fragments(ts: &TestStore, s: &TestStream) -> Vec<crate::store::FragmentRow> {
        let mut rows = Vec::new();
        for i in 0..5 {
            rows.push(ts.append(s, i * 1000, 1000, 100).await);
            ts.clock.advance_us(1_000_000);
        }
        rows
    }

    async fn numbers(ts: &TestStore, s: &TestStream) -> Vec<i64> {
        let rows = ts
            .store
            .fragments_between(s.row.id, 0, i64::MAX, 100)
            .await
            .unwrap();
        rows.iter().map(|r| r.number).collect()
    }

    /// Expiry removes the oldest first and spares a held fragment; totals, spans and files
    /// follow: a removed fragment in the middle splits the span, emptied files are unlinked.
    #[tokio::test]
    async fn expiry_is_oldest_first_and_spares_holds() {
        // One file per fragment, so emptied files show.
        let ts = TestStore::with_config(StorageConfig {
            file_roll_bytes: 1,
            min_free_bytes: Some(0),
            ..StorageConfig::default()
        });
        let cam = ts.add_stream("cam").await;
        let rows = five_fragments(&ts, &cam).await;
        ts.store
            .add_hold(
                cam.row.id,
                T0_US + 1_200_000,
                T0_US + 1_800_000,
                "evidence".into(),
            )
            .await
            .unwrap();

        let cutoff_server_us = rows[3].server_time_us;
        let b = ts
            .store
            .expire_stream_batch(
                cam.row.id,
                StreamExpiry::OlderThan { cutoff_server_us },
                0,
                100,
            )
            .await
            .unwrap();
        assert_eq!(
            b.expired,
            Expired {
                fragments: 2,
                bytes: 232,
                files: 2
            }
        );
        assert_eq!(b.held, 1);
        assert!(!b.more);
        assert_eq!(numbers(&ts, &cam).await, [2, 4, 5]);
        assert!(!ts.file_of(&rows[0]).exists() && !ts.file_of(&rows[2]).exists());
        assert!(ts.file_of(&rows[1]).exists());

        let s = ts.store.stream("cam").await.unwrap().unwrap();
        assert_eq!((s.fragment_count, s.total_bytes), (3, 348));
        assert_eq!(s.first_producer_us, Some(T0_US + 1_000_000));
        let spans = ts
            .store
            .spans(cam.row.id, i64::MIN, i64::MAX, 10)
            .await
            .unwrap();
        let spans: Vec<_> = spans
            .iter()
            .map(|s| (s.first_number, s.last_number, s.fragments, s.bytes))
            .collect();
        assert_eq!(spans, [(2, 2, 1, 116), (4, 5, 2, 232)]);
        assert!(crate::store::check(ts.data_dir(), false)
            .unwrap()
            .is_clean());
    }

    /// Freeing bytes takes just enough of the oldest, unheld, in batches that resume from the
    /// cursor.
    #[tokio::test]
    async fn free_bytes_resumes_in_batches() {
        let ts = TestStore::new();
        let cam = ts.add_stream("cam").await;
        five_fragments(&ts, &cam).await;
        let what = StreamExpiry::FreeBytes { bytes: 300 };
        let first = ts
            .store
            .expire_stream_batch(cam.row.id, what, 0, 2)
            .await
            .unwrap();
        assert_eq!(
            (first.expired.fragments, first.cursor, first.more),
            (2, 2, true)
        );
        let what = StreamExpiry::FreeBytes { bytes: 300 - 232 };
        let second = ts
            .store
            .expire_stream_batch(cam.row.id, what, first.cursor, 2)
            .await
            .unwrap();
        assert_eq!((second.expired.fragments, second.more), (1, false));
        assert_eq!(numbers(&ts, &cam).await, [4, 5]);
    }

    /// The global order is server time across streams; holds are spared there too.
    #[tokio::test]
    async fn global_expiry_takes_the_oldest_across_streams() {
        let ts = TestStore::new();
        let a = ts.add_stream("a").await;
        let b = ts.add_stream("b").await;
        for i in 0..3 {
            ts.append(&a, i * 1000, 1000, 100).await;
            ts.clock.advance_us(1_000_000);
            ts.append(&b, i * 1000, 1000, 100).await;
            ts.clock.advance_us(1_000_000);
        }
        // a1 is held: the three oldest unheld are b1, a2, b2.
        ts.store
            .add_hold(a.row.id, T0_US, T0_US + 1_000_000, "keep".into())
            .await
            .unwrap();
        let start = (i64::MIN, i64::MIN, i64::MIN);
        let batch = ts.store.expire_global_batch(348, start, 100).await.unwrap();
        assert_eq!((batch.expired.fragments, batch.held), (3, 1));
        assert_eq!(numbers(&ts, &a).await, [1, 3]);
        assert_eq!(numbers(&ts, &b).await, [3]);
        assert_eq!(ts.store.used_bytes().await.unwrap(), 348);
        assert_eq!(
            ts.store.oldest_unheld_server_time(a.row.id).await.unwrap(),
            Some(T0_US + 4_000_000)
        );
    }
}
