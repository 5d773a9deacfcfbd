//! The store: the only code that touches disk.
//!
//! ## Durability protocol
//! Fragment bytes are appended to per-stream files (`files.rs`); the index is SQLite in WAL mode
//! with `synchronous=FULL` (`schema.rs`). A fragment is acknowledged only after:
//! 1. its bytes were written to its file (writer thread, `writer.rs`);
//! 2. the bytes of its whole commit group were made durable (`fdatasync` of each touched file, or
//!    one `syncfs` of the data filesystem), and any new file's directory entry was fsync'd;
//! 3. one SQLite transaction holding the rows of the whole group (and the `files` row of any new
//!    file) committed.
//!
//! So an index row never points at bytes that are not on disk. Bytes past the last indexed
//! fragment of a file (a group that never committed) are garbage: startup recovery
//! (`recovery.rs`) cuts them off and deletes files that no committed row names. Deletion goes the
//! other way: index rows first, then files, so a reader never follows a row to a missing file;
//! a reader that already opened a file keeps reading it (unlinked files live while open).

mod check;
mod files;
mod queries;
mod recent;
mod recovery;
pub mod retention;
mod rows;
mod schema;
mod sources;
pub mod sweeper;
mod writer;

pub use check::{check, CheckReport};
pub use files::DiskSpace;
pub use queries::{FragmentQuery, TimeKind};
pub use rows::{
    FragmentRow, HoldRow, InitRow, NewFragment, SessionRow, SpanRow, StreamRow, TrackSummary,
};
pub use writer::{GroupStats, StoreEvent};

use crate::clock::SharedClock;
use crate::config::StorageConfig;
use crate::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::{broadcast, oneshot};
use writer::{Command, WriterState};

const DB_FILE: &str = "tapedeck.db";
const LOCK_FILE: &str = "tapedeck.lock";
/// Fragment rows removed per writer turn when purging a deleted stream, so a huge delete never
/// holds the writer (and every producer's acks) for long.
const PURGE_BATCH_ROWS: i64 = 5000;
/// Bytes of the newest fragments kept in memory for live readers (`recent.rs`): a few seconds of
/// a few busy streams; older media is read from its file.
const RECENT_FRAGMENT_BYTES: usize = 32 << 20;
/// Idle read connections kept for reuse (more are opened while reads run concurrently).
const MAX_IDLE_READERS: usize = 8;
/// A writer turn (one commit group, or one metadata change or deletion batch) running longer
/// than this makes the store not ready: turns are bounded to well under a second on a working
/// disk, so this long means the disk has stopped answering and producers get no acks.
const WRITER_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// A cheap, cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    events: broadcast::Sender<StoreEvent>,
    stats: Arc<Mutex<GroupStats>>,
    removal_generation: Arc<std::sync::atomic::AtomicU64>,
    recent: Arc<recent::RecentFragments>,
    heartbeat: Arc<writer::Heartbeat>,
    clock: SharedClock,
    _lock: File,
}

use std::fs::File;

impl Store {
    /// Whether `data_dir` already holds an index (what opening it means: recovery after a
    /// restart, or creating a new store). Read before [`Store::open`], which creates one.
    pub fn index_exists(data_dir: &Path) -> bool {
        data_dir.join(DB_FILE).exists()
    }

    /// Opens (creating if needed) the data directory, migrates, recovers, starts the writer.
    pub fn open(data_dir: &Path, config: &StorageConfig, clock: SharedClock) -> Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::internal(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let lock = lock_data_dir(data_dir)?;
        let mut conn = open_db(data_dir)?;
        schema::migrate(&mut conn)?;
        // WAL checkpoints (which fsync the database file) run on their own thread, not in the
        // writer between commit groups, so a burst of index changes (a large sweep) never
        // holds acks behind a slow checkpoint.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let recovered = recovery::recover(&mut conn, data_dir, clock.now_us())?;
        let (events, _) = broadcast::channel(4096);
        let stats = Arc::new(Mutex::new(GroupStats::default()));
        let state = WriterState::new(
            conn,
            data_dir.to_path_buf(),
            config.clone(),
            clock.clone(),
            events.clone(),
            stats.clone(),
            recovered.next_file_id,
        );
        let removal_generation = state.removal_generation.clone();
        let recent = Arc::new(recent::RecentFragments::new(
            RECENT_FRAGMENT_BYTES,
            removal_generation.clone(),
        ));
        let state = state.with_recent(recent.clone());
        let heartbeat = state.heartbeat.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || state.run(rx))
            .map_err(|e| Error::internal(format!("cannot start writer thread: {e}")))?;
        spawn_checkpointer(data_dir.to_path_buf(), tx.clone());
        let store = Store {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::new()),
                events,
                stats,
                removal_generation,
                recent,
                heartbeat,
                clock,
                _lock: lock,
            }),
        };
        Ok(store)
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub fn now_us(&self) -> i64 {
        self.inner.clock.now_us()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
    }

    /// Changes whenever stored media is removed (expiry, stream delete): caches of media bytes
    /// compare it to drop what may be gone.
    pub fn removal_generation(&self) -> u64 {
        self.inner
            .removal_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The fragments of the segment starting at fragment `first`, their bytes in one buffer,
    /// and the number of the stream's newest fragment: one trip off the async threads.
    pub async fn read_segment(
        &self,
        stream_id: i64,
        first: i64,
    ) -> Result<Option<(Vec<FragmentRow>, bytes::Bytes, i64)>> {
        let data_dir = self.inner.data_dir.clone();
        self.read(move |c| {
            let rows = queries::segment_fragments(c, stream_id, first)?;
            if rows.is_empty() {
                return Ok(None);
            }
            let newest = queries::latest_fragment(c, stream_id)?.map_or(0, |r| r.number);
            let total: usize = rows.iter().map(|r| r.size_bytes as usize).sum();
            let mut buf = Vec::with_capacity(total);
            // Fragments of a segment are usually adjacent in one file: one read per run.
            let mut i = 0;
            while i < rows.len() {
                let mut j = i;
                while j + 1 < rows.len()
                    && rows[j + 1].file_id == rows[i].file_id
                    && rows[j + 1].file_offset == rows[j].file_offset + rows[j].size_bytes
                {
                    j += 1;
                }
                let len = (rows[j].file_offset + rows[j].size_bytes - rows[i].file_offset) as usize;
                let path = files::file_path(&data_dir, stream_id, rows[i].file_id);
                let start = buf.len();
                buf.resize(start + len, 0);
                use std::os::unix::fs::FileExt;
                std::fs::File::open(&path)
                    .and_then(|f| f.read_exact_at(&mut buf[start..], rows[i].file_offset as u64))
                    .map_err(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Error::not_found("the segment was deleted")
                        } else {
                            Error::from(e)
                        }
                    })?;
                i = j + 1;
            }
            Ok(Some((rows, bytes::Bytes::from(buf), newest)))
        })
        .await
    }

    /// Space on the data directory's filesystem, now.
    pub fn disk_space(&self) -> Option<DiskSpace> {
        files::disk_space(&self.inner.data_dir)
    }

    /// Whether the store can take writes now: open, its writer thread running and not stuck in
    /// a turn, and the data disk writable with at least `min_free_bytes` free. The error says
    /// which is not the case (kind `Unavailable`). Cheap: no I/O but one `statvfs`.
    pub fn check_ready(&self, min_free_bytes: u64) -> Result<()> {
        let open = self.inner.tx.lock().map(|t| t.is_some()).unwrap_or(false);
        if !open {
            return Err(Error::unavailable(
                "the store is closed: the server is shutting down",
            ));
        }
        let stopped = self
            .inner
            .thread
            .lock()
            .map(|t| t.as_ref().is_none_or(|t| t.is_finished()))
            .unwrap_or(true);
        if stopped {
            return Err(Error::unavailable(
                "the store's writer thread has stopped; see the error log and restart the server",
            ));
        }
        if let Some(busy) = self
            .inner
            .heartbeat
            .busy_for()
            .filter(|b| *b > WRITER_STALL)
        {
            return Err(Error::unavailable(format!(
                "the store's writer has been stuck in one commit for {} s (limit {} s): the data \
                 disk is not answering, and producers get no acks",
                busy.as_secs(),
                WRITER_STALL.as_secs()
            )));
        }
        let dir = self.inner.data_dir.display();
        let Some(disk) = self.disk_space() else {
            return Err(Error::unavailable(format!(
                "cannot read the free space of data dir {dir}: is it still there?"
            )));
        };
        if disk.read_only {
            return Err(Error::unavailable(format!(
                "data dir {dir} is on a read-only filesystem"
            )));
        }
        if disk.free_bytes < min_free_bytes {
            return Err(Error::unavailable(format!(
                "disk full: {} bytes free on the disk of data dir {dir}, less than one fragment \
                 may need ({min_free_bytes}, ingest.max_fragment_bytes); free space or lower \
                 retention",
                disk.free_bytes
            )));
        }
        Ok(())
    }

    pub fn group_stats(&self) -> GroupStats {
        self.inner.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Commits whatever is queued, then stops the writer and closes SQLite. Later writes fail
    /// with `Unavailable`.
    pub async fn shutdown(&self) {
        let tx = self.inner.tx.lock().ok().and_then(|mut t| t.take());
        if let Some(tx) = tx {
            let (done_tx, done_rx) = oneshot::channel();
            if tx.send(Command::Shutdown(done_tx)).is_ok() {
                let _ = done_rx.await;
            }
        }
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Ok(mut r) = self.inner.readers.lock() {
            r.clear();
        }
    }

    fn send(&self, cmd: Command) -> Result<()> {
        let guard = self
            .inner
            .tx
            .lock()
            .map_err(|_| Error::internal("writer channel poisoned"))?;
        match guard.as_ref() {
            Some(tx) => tx.send(cmd).map_err(|_| writer::shutdown_error()),
            None => Err(writer::shutdown_error()),
        }
    }

    /// Runs `f` on the writer thread, between commit groups.
    async fn exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriterState) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Exec(Box::new(move |state| {
            let _ = tx.send(f(state));
        })))?;
        rx.await.map_err(|_| writer::shutdown_error())?
    }

    /// Runs a read on a pooled connection off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.readers.lock().ok().and_then(|mut r| r.pop());
            let conn = match conn {
                Some(c) => c,
                None => open_db(&inner.data_dir)?,
            };
            let out = f(&conn);
            if let Ok(mut r) = inner.readers.lock() {
                // Past a few idle connections, close instead of keeping: each holds its own page
                // cache, and a burst of concurrent reads must not leave that memory behind.
                if r.len() < MAX_IDLE_READERS {
                    r.push(conn);
                }
            }
            out
        })
        .await
        .map_err(|e| Error::internal(format!("read task failed: {e}")))?
    }

    /// Queues a fragment for the next commit group. The returned receiver resolves once the
    /// fragment is durable and indexed (the ack), or with the reason it is not.
    pub fn append(&self, fragment: NewFragment) -> Result<oneshot::Receiver<Result<FragmentRow>>> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Append(fragment, tx))?;
        Ok(rx)
    }

    // ---- streams ----

    pub async fn create_stream(
        &self,
        name: &str,
        retention_hours: u64,
        retention_bytes: Option<u64>,
        tags: BTreeMap<String, String>,
    ) -> Result<StreamRow> {
        let retention_bytes = retention_bytes.filter(|b| *b > 0).map(saturating_i64);
        let name = name.to_string();
        self.exec(move |w| {
            let now = w.now_us();
            let tags = serde_json::to_string(&tags).unwrap_or_else(|_| "{}".into());
            let r = w.conn.execute(
                "INSERT INTO streams (name, created_us, retention_hours, retention_bytes, tags) \
                 VALUES (?,?,?,?,?)",
                params![
                    name,
                    now,
                    saturating_i64(retention_hours),
                    retention_bytes,
                    tags
                ],
            );
            match r {
                Ok(_) => {}
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                {
                    return Err(Error::conflict(format!("stream '{name}' already exists")));
                }
                Err(e) => return Err(e.into()),
            }
            queries::stream_by_name(&w.conn, &name)?
                .ok_or_else(|| Error::internal("created stream vanished"))
        })
        .await
    }

    pub async fn stream(&self, name: &str) -> Result<Option<StreamRow>> {
        let name = name.to_string();
        self.read(move |c| queries::stream_by_name(c, &name)).await
    }

    /// The stream, or a 404 naming it.
    pub async fn require_stream(&self, name: &str) -> Result<StreamRow> {
        self.stream(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("stream '{name}' does not exist")))
    }

    pub async fn list_streams(
        &self,
        prefix: Option<String>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<StreamRow>> {
        self.read(move |c| queries::list_streams(c, prefix.as_deref(), after.as_deref(), limit))
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
            let found = queries::stream_by_name(&tx, &name)?
                .ok_or_else(|| Error::not_found(format!("stream '{name}' does not exist")))?;
            if let Some(h) = retention_hours {
                tx.execute(
                    "UPDATE streams SET retention_hours = ? WHERE id = ?",
                    params![saturating_i64(h), found.id],
                )?;
            }
            if let Some(b) = retention_bytes {
                // 0 removes the quota.
                let b = (b > 0).then_some(saturating_i64(b));
                tx.execute(
                    "UPDATE streams SET retention_bytes = ? WHERE id = ?",
                    params![b, found.id],
                )?;
            }
            if let Some(t) = tags {
                let t = serde_json::to_string(&t).unwrap_or_else(|_| "{}".into());
                tx.execute(
                    "UPDATE streams SET tags = ? WHERE id = ?",
                    params![t, found.id],
                )?;
            }
            let row = queries::stream_by_name(&tx, &name)?
                .ok_or_else(|| Error::internal("updated stream vanished"))?;
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

    // ---- inits and sessions ----

    /// Stores an init once per distinct content per stream; returns its id.
    pub async fn put_init(
        &self,
        stream_id: i64,
        bytes: bytes::Bytes,
        codecs: String,
        tracks: Vec<TrackSummary>,
    ) -> Result<i64> {
        use sha2::Digest;
        let sha = sha2::Sha256::digest(&bytes).to_vec();
        self.exec(move |w| {
            let existing: Option<i64> = w
                .conn
                .query_row(
                    "SELECT id FROM inits WHERE stream_id = ? AND sha256 = ?",
                    params![stream_id, sha],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                return Ok(id);
            }
            let now = w.now_us();
            let tracks = serde_json::to_string(&tracks).unwrap_or_else(|_| "[]".into());
            w.conn.execute(
                "INSERT INTO inits (stream_id, sha256, bytes, codecs, tracks, created_us) \
                 VALUES (?,?,?,?,?,?)",
                params![stream_id, sha, &bytes[..], codecs, tracks, now],
            )?;
            Ok(w.conn.last_insert_rowid())
        })
        .await
    }

    /// Records a session of `stream_id` that began at `started_us` (when its producer
    /// connected, which is earlier than this call: a session opens at its first fragment).
    pub async fn start_session(
        &self,
        stream_id: i64,
        kind: &'static str,
        remote: Option<String>,
        started_us: i64,
    ) -> Result<i64> {
        self.exec(move |w| {
            let now = started_us;
            w.conn.execute(
                "INSERT INTO sessions (stream_id, kind, remote, started_us) VALUES (?,?,?,?)",
                params![stream_id, kind, remote, now],
            )?;
            let session_id = w.conn.last_insert_rowid();
            w.emit(StoreEvent::SessionStarted {
                stream_id,
                session_id,
                kind,
                remote,
                started_us: now,
            });
            Ok(session_id)
        })
        .await
    }

    pub async fn end_session(&self, session_id: i64, reason: String) -> Result<()> {
        self.exec(move |w| {
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

    /// The name of a live stream by id (events carry ids).
    pub async fn stream_name(&self, stream_id: i64) -> Result<Option<String>> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT name FROM streams WHERE id = ? AND deleted_us IS NULL",
                [stream_id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    // ---- reads ----

    pub async fn fragments(&self, stream_id: i64, q: FragmentQuery) -> Result<Vec<FragmentRow>> {
        self.read(move |c| queries::fragments(c, stream_id, &q))
            .await
    }

    pub async fn fragment(&self, stream_id: i64, number: i64) -> Result<Option<FragmentRow>> {
        self.read(move |c| queries::fragment(c, stream_id, number))
            .await
    }

    /// Recorded spans overlapping `[start_us, end_us)`, oldest first, at most `limit`.
    pub async fn spans(
        &self,
        stream_id: i64,
        start_us: i64,
        end_us: i64,
        limit: u32,
    ) -> Result<Vec<SpanRow>> {
        self.read(move |c| queries::spans(c, stream_id, start_us, end_us, limit))
            .await
    }

    pub async fn latest_fragment(&self, stream_id: i64) -> Result<Option<FragmentRow>> {
        self.read(move |c| queries::latest_fragment(c, stream_id))
            .await
    }

    pub async fn fragments_from_segment(
        &self,
        stream_id: i64,
        from_seq: i64,
        limit: u32,
    ) -> Result<Vec<FragmentRow>> {
        self.read(move |c| queries::fragments_from_segment(c, stream_id, from_seq, limit))
            .await
    }

    pub async fn fragments_from_number(
        &self,
        stream_id: i64,
        from_number: i64,
        end_us: i64,
        limit: u32,
    ) -> Result<Vec<FragmentRow>> {
        self.read(move |c| queries::fragments_from_number(c, stream_id, from_number, end_us, limit))
            .await
    }

    pub async fn segment_start_at_or_after(
        &self,
        stream_id: i64,
        t_us: i64,
    ) -> Result<Option<i64>> {
        self.read(move |c| queries::segment_start_at_or_after(c, stream_id, t_us))
            .await
    }

    pub async fn fragments_between(
        &self,
        stream_id: i64,
        from: i64,
        below: i64,
        limit: u32,
    ) -> Result<Vec<FragmentRow>> {
        self.read(move |c| queries::fragments_between(c, stream_id, from, below, limit))
            .await
    }

    pub async fn segment_start_near(
        &self,
        stream_id: i64,
        t_us: i64,
    ) -> Result<Option<FragmentRow>> {
        self.read(move |c| queries::segment_start_near(c, stream_id, t_us))
            .await
    }

    pub async fn segment_fragments(
        &self,
        stream_id: i64,
        first_number: i64,
    ) -> Result<Vec<FragmentRow>> {
        self.read(move |c| queries::segment_fragments(c, stream_id, first_number))
            .await
    }

    pub async fn init(&self, stream_id: i64, init_id: i64) -> Result<Option<InitRow>> {
        self.read(move |c| queries::init(c, stream_id, init_id))
            .await
    }

    pub async fn sessions(&self, stream_id: i64, limit: u32) -> Result<Vec<SessionRow>> {
        self.read(move |c| queries::sessions(c, stream_id, limit))
            .await
    }

    pub async fn init_bytes(&self, stream_id: i64, init_id: i64) -> Result<Option<bytes::Bytes>> {
        self.read(move |c| queries::init_bytes(c, stream_id, init_id))
            .await
    }

    /// The stored bytes of one fragment.
    pub async fn fragment_bytes(&self, row: &FragmentRow) -> Result<bytes::Bytes> {
        if let Some(hit) = self
            .inner
            .recent
            .get(row.stream_id, row.file_id, row.file_offset)
        {
            return Ok(hit);
        }
        let path = files::file_path(&self.inner.data_dir, row.stream_id, row.file_id);
        let (offset, len) = (row.file_offset as u64, row.size_bytes as usize);
        tokio::task::spawn_blocking(move || files::read_at(&path, offset, len))
            .await
            .map_err(|e| Error::internal(format!("read task failed: {e}")))?
            .map(bytes::Bytes::from)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::not_found("the fragment was deleted")
                } else {
                    e.into()
                }
            })
    }
}

impl Store {
    /// The fragments of a clip of `[start_us, end_us)`: see [`queries::clip_fragments`].
    pub async fn clip_fragments(
        &self,
        stream_id: i64,
        start_us: i64,
        end_us: i64,
        limit: u32,
    ) -> Result<Vec<FragmentRow>> {
        self.read(move |c| queries::clip_fragments(c, stream_id, start_us, end_us, limit))
            .await
    }

    /// `len` bytes at `offset` within a stored fragment (clamped to the fragment). Blocking: for
    /// code already on a blocking thread (e.g. reading many moofs in one task).
    pub fn fragment_range_blocking(
        &self,
        row: &FragmentRow,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let size = row.size_bytes as u64;
        let offset = offset.min(size);
        let len = len.min(size - offset) as usize;
        let path = files::file_path(&self.inner.data_dir, row.stream_id, row.file_id);
        files::read_at(&path, row.file_offset as u64 + offset, len).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found("the fragment was deleted")
            } else {
                e.into()
            }
        })
    }

    /// Opens the file holding a fragment. A reader that holds it open keeps reading even if
    /// retention unlinks the file meanwhile (blocking: call off the async threads).
    pub fn open_fragment_file_blocking(&self, row: &FragmentRow) -> Result<std::fs::File> {
        let path = files::file_path(&self.inner.data_dir, row.stream_id, row.file_id);
        std::fs::File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found("the fragment was deleted")
            } else {
                e.into()
            }
        })
    }

    /// [`Store::fragment_range_blocking`] off the async threads.
    pub async fn fragment_range(
        &self,
        row: &FragmentRow,
        offset: u64,
        len: u64,
    ) -> Result<bytes::Bytes> {
        let (store, row) = (self.clone(), row.clone());
        tokio::task::spawn_blocking(move || store.fragment_range_blocking(&row, offset, len))
            .await
            .map_err(|e| Error::internal(format!("read task failed: {e}")))?
            .map(bytes::Bytes::from)
    }
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

/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Passive checkpoints from a connection of their own, until the writer's channel closes.
fn spawn_checkpointer(data_dir: PathBuf, writer: mpsc::Sender<Command>) {
    let _ = std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || {
            let Ok(conn) = open_db(&data_dir) else {
                tracing::warn!("checkpointer cannot open the index; SQLite will not checkpoint");
                return;
            };
            // The writer is gone once this send fails: stop.
            while writer.send(Command::Exec(Box::new(|_| {}))).is_ok() {
                std::thread::sleep(CHECKPOINT_INTERVAL);
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "checkpoint skipped");
                }
            }
        });
}

pub(crate) fn open_db(data_dir: &Path) -> Result<Connection> {
    let conn = Connection::open(data_dir.join(DB_FILE))?;
    schema::configure(&conn)?;
    Ok(conn)
}

/// One server per data directory: a second one would corrupt the fragment files.
fn lock_data_dir(data_dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let f = File::create(data_dir.join(LOCK_FILE))?;
    // SAFETY: flock only uses the descriptor, which `f` keeps open.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::unavailable(format!(
            "data dir {} is in use by another tapedeck process",
            data_dir.display()
        )));
    }
    Ok(f)
}

/// A setting as a SQLite integer: values past `i64::MAX` become `i64::MAX` (the longest
/// retention, the largest quota) instead of wrapping to a negative number.
fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
