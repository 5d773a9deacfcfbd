//! Metadata writes: streams, inits and sessions (holds live with retention, `retention.rs`).
//!
//! Each runs on the writer thread between commit groups ([`Store::exec`]), in its own
//! transaction, after the group before it committed, so it is ordered with the appends around
//! it: a stream deleted after a fragment was queued sees that fragment committed first. The SQL
//! of each change sits in a plain function on a connection, beside the handle's method that
//! queues it.

use super::files;
use super::queries;
use super::rows::{StreamRow, TrackSummary};
use super::schema::next_id_sql;
use super::writer::{BesideDurability, StoreEvent, WriterState};
use super::{saturating_i64, Store};
use crate::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;

/// Fragment rows removed per writer turn when purging a deleted stream, so a huge delete never
/// holds the writer (and every producer's acks) for long.
const PURGE_BATCH_ROWS: i64 = 5000;

impl Store {
    pub async fn create_stream(
        &self,
        name: &str,
        retention_hours: u64,
        retention_bytes: Option<u64>,
        tags: BTreeMap<String, String>,
    ) -> Result<StreamRow> {
        let retention_bytes = retention_bytes.filter(|b| *b > 0).map(saturating_i64);
        let name = name.to_string();
        self.exec_beside(move |w| {
            let now = w.now_us();
            insert_stream(&w.conn, &name, now, retention_hours, retention_bytes, &tags)
        })
        .await
    }

    pub async fn update_stream(
        &self,
        name: &str,
        retention_hours: Option<u64>,
        retention_bytes: Option<u64>,
        tags: Option<BTreeMap<String, String>>,
    ) -> Result<StreamRow> {
        let name = name.to_string();
        self.exec(move |w| {
            let tx = w.conn.transaction()?;
            let row = update_stream(&tx, &name, retention_hours, retention_bytes, tags)?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    /// Makes the stream unreachable at once (its name is free again), then frees its rows and
    /// files in bounded batches.
    pub async fn delete_stream(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        let stream_id = self
            .exec(move |w| {
                let found = queries::stream_by_name(&w.conn, &name)?
                    .ok_or_else(|| Error::not_found(format!("stream '{name}' does not exist")))?;
                let now = w.now_us();
                w.conn.execute(
                    "UPDATE streams SET deleted_us = ? WHERE id = ?",
                    params![now, found.id],
                )?;
                w.conn
                    .execute("DELETE FROM sources WHERE stream_id = ?", [found.id])?;
                w.forget_stream(found.id);
                w.media_removed();
                w.emit(StoreEvent::StreamDeleted {
                    stream_id: found.id,
                });
                Ok(found.id)
            })
            .await?;
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(e) = store.purge_deleted().await {
                tracing::warn!(stream_id, error = %e, "purging deleted stream failed; retried at next start");
            }
        });
        Ok(())
    }

    /// Removes rows and files of deleted streams, a batch per writer turn.
    pub async fn purge_deleted(&self) -> Result<()> {
        loop {
            let done = self.exec(|w| purge_batch(w, PURGE_BATCH_ROWS)).await?;
            if done {
                return Ok(());
            }
        }
    }

    /// Stores an init once per distinct content per stream; returns its id. Durable with the
    /// next commit group, like [`Store::open_session`]: only the fragments that name it need it.
    pub async fn put_init(&self, stream_id: i64, init: InitToStore) -> Result<i64> {
        use sha2::Digest;
        let sha = sha2::Sha256::digest(&init.bytes).to_vec();
        self.exec_beside_as(BesideDurability::WithNextGroup, move |w| {
            let now = w.now_us();
            find_or_insert_init(
                &w.conn,
                stream_id,
                &sha,
                &init.bytes,
                &init.codecs,
                &init.tracks,
                now,
            )
        })
        .await
    }

    /// Opens an ingest session at its first fragment, in one writer turn: finds its stream (or
    /// creates it, when allowed), records the session row and stores its init. All or nothing.
    ///
    /// Durable with the first fragment's commit group, not before (see
    /// [`BesideDurability::WithNextGroup`]): these rows matter only once a fragment names them.
    pub async fn open_session(&self, opening: SessionOpening) -> Result<OpenedSession> {
        use sha2::Digest;
        let sha = sha2::Sha256::digest(&opening.init.bytes).to_vec();
        self.exec_beside_as(BesideDurability::WithNextGroup, move |w| {
            let now = w.now_us();
            w.conn.execute_batch("SAVEPOINT open_session")?;
            let opened = open_session_rows(&w.conn, &opening, &sha, now);
            match &opened {
                Ok(_) => w.conn.execute_batch("RELEASE open_session")?,
                Err(_) => {
                    let _ = w
                        .conn
                        .execute_batch("ROLLBACK TO open_session; RELEASE open_session");
                }
            }
            let opened = opened?;
            w.emit(StoreEvent::SessionStarted {
                stream_id: opened.stream.id,
                session_id: opened.session_id,
                kind: opening.kind,
                remote: opening.remote,
                started_us: opening.started_us,
            });
            Ok(opened)
        })
        .await
    }

    pub async fn end_session(&self, session_id: i64, reason: String) -> Result<()> {
        self.exec_beside(move |w| {
            let now = w.now_us();
            let stream_id: Option<i64> = w
                .conn
                .query_row(
                    "UPDATE sessions SET ended_us = ?, end_reason = ? \
                     WHERE id = ? AND ended_us IS NULL RETURNING stream_id",
                    params![now, reason, session_id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(stream_id) = stream_id {
                w.emit(StoreEvent::SessionEnded {
                    stream_id,
                    session_id,
                    reason,
                    ended_us: now,
                });
            }
            Ok(())
        })
        .await
    }
}

/// What an ingest session's first fragment opens (see [`Store::open_session`]).
pub struct SessionOpening {
    pub stream: String,
    /// Create the stream with this retention if it does not exist; `None`: it must exist.
    pub create_with_retention_hours: Option<u64>,
    /// The sessions table's `kind`.
    pub kind: &'static str,
    pub remote: Option<String>,
    /// When the producer connected (earlier than the open: a session opens at its first
    /// fragment).
    pub started_us: i64,
    pub init: InitToStore,
}

/// An init segment and the facts the index keeps beside it.
pub struct InitToStore {
    pub bytes: bytes::Bytes,
    pub codecs: String,
    pub tracks: Vec<TrackSummary>,
}

#[derive(Debug)]
pub struct OpenedSession {
    pub stream: StreamRow,
    /// The stream did not exist and was created for this session.
    pub created: bool,
    pub session_id: i64,
    pub init_id: i64,
}

fn open_session_rows(
    c: &Connection,
    o: &SessionOpening,
    init_sha256: &[u8],
    now_us: i64,
) -> Result<OpenedSession> {
    let (stream, created) = match (
        queries::stream_by_name(c, &o.stream)?,
        o.create_with_retention_hours,
    ) {
        (Some(s), _) => (s, false),
        (None, Some(hours)) => (
            insert_stream(c, &o.stream, now_us, hours, None, &BTreeMap::new())?,
            true,
        ),
        (None, None) => {
            return Err(Error::not_found(format!(
                "stream '{}' does not exist",
                o.stream
            )))
        }
    };
    c.execute(
        concat!(
            "INSERT INTO sessions (id, stream_id, kind, remote, started_us) VALUES (",
            next_id_sql!("sessions"),
            ",?,?,?,?)"
        ),
        params![stream.id, o.kind, o.remote, o.started_us],
    )?;
    let session_id = c.last_insert_rowid();
    let init_id = find_or_insert_init(
        c,
        stream.id,
        init_sha256,
        &o.init.bytes,
        &o.init.codecs,
        &o.init.tracks,
        now_us,
    )?;
    Ok(OpenedSession {
        stream,
        created,
        session_id,
        init_id,
    })
}

/// A new stream row; `Conflict` when a live stream has the name.
fn insert_stream(
    c: &Connection,
    name: &str,
    now_us: i64,
    retention_hours: u64,
    retention_bytes: Option<i64>,
    tags: &BTreeMap<String, String>,
) -> Result<StreamRow> {
    let tags = serde_json::to_string(tags).unwrap_or_else(|_| "{}".into());
    let r = c.execute(
        concat!(
            "INSERT INTO streams (id, name, created_us, retention_hours, retention_bytes, tags) \
             VALUES (",
            next_id_sql!("streams"),
            ",?,?,?,?,?)"
        ),
        params![
            name,
            now_us,
            saturating_i64(retention_hours),
            retention_bytes,
            tags
        ],
    );
    match r {
        Ok(_) => {}
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
            return Err(Error::conflict(format!("stream '{name}' already exists")));
        }
        Err(e) => return Err(e.into()),
    }
    queries::stream_by_name(c, name)?.ok_or_else(|| Error::internal("created stream vanished"))
}

/// Changes the settings given (`Some`) of a live stream; a `retention_bytes` of 0 removes the
/// quota.
fn update_stream(
    c: &Connection,
    name: &str,
    retention_hours: Option<u64>,
    retention_bytes: Option<u64>,
    tags: Option<BTreeMap<String, String>>,
) -> Result<StreamRow> {
    let found = queries::stream_by_name(c, name)?
        .ok_or_else(|| Error::not_found(format!("stream '{name}' does not exist")))?;
    if let Some(h) = retention_hours {
        c.execute(
            "UPDATE streams SET retention_hours = ? WHERE id = ?",
            params![saturating_i64(h), found.id],
        )?;
    }
    if let Some(b) = retention_bytes {
        let b = (b > 0).then_some(saturating_i64(b));
        c.execute(
            "UPDATE streams SET retention_bytes = ? WHERE id = ?",
            params![b, found.id],
        )?;
    }
    if let Some(t) = tags {
        let t = serde_json::to_string(&t).unwrap_or_else(|_| "{}".into());
        c.execute(
            "UPDATE streams SET tags = ? WHERE id = ?",
            params![t, found.id],
        )?;
    }
    queries::stream_by_name(c, name)?.ok_or_else(|| Error::internal("updated stream vanished"))
}

/// The id of the stream's init with this content (by SHA-256), inserting it if new.
fn find_or_insert_init(
    c: &Connection,
    stream_id: i64,
    sha256: &[u8],
    bytes: &[u8],
    codecs: &str,
    tracks: &[TrackSummary],
    now_us: i64,
) -> Result<i64> {
    let existing: Option<i64> = c
        .query_row(
            "SELECT id FROM inits WHERE stream_id = ? AND sha256 = ?",
            params![stream_id, sha256],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let tracks = serde_json::to_string(tracks).unwrap_or_else(|_| "[]".into());
    c.execute(
        concat!(
            "INSERT INTO inits (id, stream_id, sha256, bytes, codecs, tracks, created_us) \
             VALUES (",
            next_id_sql!("inits"),
            ",?,?,?,?,?,?)"
        ),
        params![stream_id, sha256, bytes, codecs, tracks, now_us],
    )?;
    Ok(c.last_insert_rowid())
}

/// One purge step: deletes up to `limit` fragment rows of deleted streams; when a stream has none
/// left, its other rows and then its folder. Returns true when nothing is left to purge.
fn purge_batch(w: &mut WriterState, limit: i64) -> Result<bool> {
    let stream: Option<i64> = w
        .conn
        .query_row(
            "SELECT id FROM streams WHERE deleted_us IS NOT NULL LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let Some(stream_id) = stream else {
        return Ok(true);
    };
    let removed = w.conn.execute(
        "DELETE FROM fragments WHERE stream_id = ?1 AND number IN \
         (SELECT number FROM fragments WHERE stream_id = ?1 ORDER BY number LIMIT ?2)",
        params![stream_id, limit],
    )?;
    if removed as i64 == limit {
        return Ok(false);
    }
    let tx = w.conn.transaction()?;
    for sql in [
        "DELETE FROM files WHERE stream_id = ?",
        "DELETE FROM spans WHERE stream_id = ?",
        "DELETE FROM inits WHERE stream_id = ?",
        "DELETE FROM sessions WHERE stream_id = ?",
        // Holds protect media from retention, not from deleting the stream they belong to.
        "DELETE FROM holds WHERE stream_id = ?",
        "DELETE FROM streams WHERE id = ?",
    ] {
        tx.execute(sql, [stream_id])?;
    }
    tx.commit()?;
    let dir = files::stream_dir(&w.data_dir, stream_id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    tracing::info!(stream_id, "deleted stream purged");
    Ok(false)
}
