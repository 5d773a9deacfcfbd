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
//! Rows that only fragments name (an ingest session's stream, session and init, written when its
//! first fragment arrives) commit without a WAL sync of their own: the first fragment's group
//! transaction syncs the WAL, which carries them, before that fragment is acknowledged
//! (`writer::BesideDurability`). Acks, and API answers that report a change, come after the sync
//! (an upload's `session_started` line says that a session began, not that anything is stored).
//!
//! So an index row never points at bytes that are not on disk. Bytes past the last indexed
//! fragment of a file (a group that never committed) are garbage: startup recovery
//! (`recovery.rs`) cuts them off and deletes files that no committed row names. Deletion goes the
//! other way: index rows first, then files, so a reader never follows a row to a missing file;
//! a reader that already opened a file keeps reading it (unlinked files live while open).
//!
//! ## Object storage
//! With `[storage.object]`, sealed files also tier to an S3-compatible bucket: upload, verify,
//! record in the index, delete the local copy, each step crash-safe. That protocol is written
//! in `object/mod.rs`, beside this one; it never touches the writer's appends or acks.
//!
//! ## Where things are
//! - this file: the [`Store`] handle (open, readiness, shutdown) and its two ways to run work:
//!   [`Store::exec`] on the writer thread, [`Store::read`] on a pooled read connection;
//! - `writer.rs`: the writer thread and its group commit; `metadata.rs`: stream, init and
//!   session changes (run on the writer between groups); `retention.rs`: expiry batches and
//!   holds; `sweeper.rs`: the retention task that drives them;
//! - `reader.rs`: **the one byte door**: every read of fragment bytes goes through it and
//!   leaves it as `Bytes` (or a set of held-open files handing out bounded ranges), so it alone
//!   decides where bytes come from (local file or live-edge cache today, object storage later);
//! - `queries.rs`: read-side SQL on a connection; `reads.rs`: the handle's index reads over it;
//! - `schema.rs`, `rows.rs`, `files.rs` (the file layout), `recent.rs` (live-edge bytes),
//!   `recovery.rs` (startup), `check.rs` (`tapedeck check`);
//! - `object/`: the object-storage tier (protocol, uploader task, remote reads, read cache).

mod check;
pub(crate) mod files;
mod metadata;
pub mod object;
mod queries;
mod reader;
mod reads;
mod recent;
mod recovery;
pub mod retention;
mod rows;
mod schema;
mod sources;
pub mod sweeper;
#[cfg(test)]
pub(crate) mod testing;
mod writer;

pub use check::{check, check_with, CheckReport};
pub use files::DiskSpace;
pub use metadata::{InitToStore, OpenedSession, SessionOpening};
pub use queries::{FragmentQuery, TimeKind};
pub use reader::OpenFragments;
pub use rows::{
    FragmentRow, HoldRow, InitRow, NewFragment, SessionRow, SpanRow, StreamRow, TrackSummary,
};
pub use writer::{GroupStats, StoreEvent};

use crate::clock::SharedClock;
use crate::config::StorageConfig;
use crate::error::{Error, Result};
use reader::ByteReader;
use rusqlite::Connection;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::{broadcast, oneshot};
use writer::{Command, WriterState};

const DB_FILE: &str = "tapedeck.db";
const LOCK_FILE: &str = "tapedeck.lock";
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
    /// The one door fragment bytes are read through (`reader.rs`).
    reader: Arc<ByteReader>,
    /// The object-storage tier, when configured.
    object: Option<Arc<object::ObjectTier>>,
    /// Wakes the uploader (a file may have been sealed); cancelled at shutdown.
    object_wake: Arc<tokio::sync::Notify>,
    object_stop: tokio_util::sync::CancellationToken,
    heartbeat: Arc<writer::Heartbeat>,
    clock: SharedClock,
    _lock: File,
}

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
        let object = config
            .object
            .as_ref()
            .map(object::ObjectTier::open)
            .transpose()?;
        object::protocol::check_bucket(&conn, object.as_ref().map(|t| t.url.as_str()))?;
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
                reader: Arc::new(ByteReader::new(
                    data_dir.to_path_buf(),
                    Some(recent),
                    object.clone(),
                )),
                object: object.clone(),
                object_wake: Default::default(),
                object_stop: Default::default(),
                heartbeat,
                clock,
                _lock: lock,
            }),
        };
        if let Some(tier) = object {
            object::uploader::spawn(
                store.clone(),
                tier,
                store.inner.object_wake.clone(),
                store.inner.object_stop.clone(),
            );
        }
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

    /// The object tier's figures, when one is configured.
    pub fn object_stats(&self) -> Option<object::ObjectStats> {
        self.inner.object.as_ref().map(|t| t.stats())
    }

    /// Whether the store has been shut down (its writer takes no more work).
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.tx.lock().map(|t| t.is_none()).unwrap_or(true)
    }

    pub fn group_stats(&self) -> GroupStats {
        self.inner
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Commits whatever is queued, then stops the writer and closes SQLite. Later writes fail
    /// with `Unavailable`.
    pub async fn shutdown(&self) {
        self.inner.object_stop.cancel();
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

    /// Runs `f` on the writer thread at once, without waiting for the groups in flight (see
    /// `Command::ExecBeside` for which changes may), inside a transaction it may share with
    /// others queued beside it; answered once that has committed. `f` must not open a
    /// transaction of its own.
    async fn exec_beside<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriterState) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.exec_beside_as(writer::BesideDurability::AtAnswer, f)
            .await
    }

    /// [`Store::exec_beside`] with the durability `f`'s change needs.
    async fn exec_beside_as<T: Send + 'static>(
        &self,
        durability: writer::BesideDurability,
        f: impl FnOnce(&mut WriterState) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::ExecBeside(
            Box::new(move |state| {
                let result = f(state);
                Box::new(move |commit_error: Option<Error>| {
                    let _ = tx.send(match commit_error {
                        Some(e) => Err(e),
                        None => result,
                    });
                })
            }),
            durability,
        ))?;
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

/// The durability protocol above, checked through the handle: acks, commit groups, failures.
#[cfg(test)]
mod tests {
    use super::testing::{fragment_bytes, TestStore};
    use super::*;
    use std::time::Duration;

    /// Whether a fresh connection (what a restart would see) has the fragment's row.
    fn committed(ts: &TestStore, stream_id: i64, number: i64) -> bool {
        let c = open_db(ts.data_dir()).unwrap();
        queries::fragment(&c, stream_id, number).unwrap().is_some()
    }

    /// An ack never precedes its commit: while another connection holds SQLite's write lock the
    /// fragment's bytes are written but its group cannot commit, and no ack arrives; once the
    /// lock goes, the ack arrives and the row is visible to any new connection.
    #[tokio::test]
    async fn ack_waits_for_the_commit() {
        let ts = TestStore::new();
        let cam = ts.add_stream("cam").await;
        let blocker = open_db(ts.data_dir()).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

        let mut ack = ts.queue(&cam, 0, 1000, 100);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            matches!(ack.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
            "no ack while the commit is blocked"
        );
        assert!(!committed(&ts, cam.row.id, 1), "no row while blocked");
        let stream_dir = files::stream_dir(ts.data_dir(), cam.row.id);
        let written: u64 = std::fs::read_dir(&stream_dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(written, 116, "the bytes are written before the commit");

        blocker.execute_batch("ROLLBACK").unwrap();
        let row = ack.await.unwrap().unwrap();
        assert_eq!(row.number, 1);
        assert!(committed(&ts, cam.row.id, 1), "acked, so committed");
        assert_eq!(
            ts.store.fragment_bytes(&row).await.unwrap(),
            fragment_bytes(100)
        );
    }

    /// A group whose commit fails acknowledges none of its fragments, leaves none of their
    /// bytes in the files and burns no fragment numbers.
    #[tokio::test]
    async fn failed_commit_acks_nothing_and_leaves_no_bytes() {
        let ts = TestStore::new();
        let cam = ts.add_stream("cam").await;
        let first = ts.append(&cam, 0, 1000, 50).await;
        ts.fail_inserts_into("fragments", "injected commit failure")
            .await;
        let pause = ts.pause_writer();
        let acks: Vec<_> = (1..4).map(|i| ts.queue(&cam, i * 1000, 1000, 50)).collect();
        pause.release();
        for ack in acks {
            let err = ack.await.unwrap().unwrap_err();
            assert!(err.message.contains("injected commit failure"), "{err:?}");
        }
        let file_len = std::fs::metadata(ts.file_of(&first)).unwrap().len();
        assert_eq!(file_len, 66, "only the committed fragment's bytes are left");

        ts.stop_failing_inserts("fragments").await;
        let next = ts.append(&cam, 1000, 1000, 50).await;
        assert_eq!(next.number, 2, "the failed group used no numbers");
    }

    /// Opens a session of `stream` now, creating the stream when `create`.
    async fn open(ts: &TestStore, stream: &str, create: bool) -> Result<OpenedSession> {
        ts.store
            .open_session(SessionOpening {
                stream: stream.into(),
                create_with_retention_hours: create.then_some(24),
                kind: "upload",
                remote: None,
                started_us: ts.clock_us(),
                init: testing::test_init(),
            })
            .await
    }

    /// A session's open (stream, session row, init) is one all-or-nothing change: when its
    /// session row cannot be written, the stream it would have created is not there either;
    /// a missing stream is refused without creating one when creation is not allowed; a second
    /// session of the stream finds it and its init.
    #[tokio::test]
    async fn opening_a_session_is_all_or_nothing() {
        let ts = TestStore::new();
        let missing = open(&ts, "cam", false).await.unwrap_err();
        assert_eq!(missing.kind, crate::error::Kind::NotFound, "{missing}");
        assert!(ts.store.stream("cam").await.unwrap().is_none());

        ts.fail_inserts_into("sessions", "injected session failure")
            .await;
        let err = open(&ts, "cam", true).await.unwrap_err();
        assert!(err.message.contains("injected session failure"), "{err}");
        assert!(
            ts.store.stream("cam").await.unwrap().is_none(),
            "the stream created for the failed open was rolled back"
        );
        ts.stop_failing_inserts("sessions").await;

        let first = open(&ts, "cam", true).await.unwrap();
        assert!(first.created);
        let second = open(&ts, "cam", false).await.unwrap();
        assert!(!second.created);
        assert_eq!(second.stream.id, first.stream.id);
        assert_ne!(second.session_id, first.session_id);
        assert_eq!(
            second.init_id, first.init_id,
            "the same init is stored once"
        );
    }

    /// Opens commit without syncing the WAL, and the connection is back at
    /// `synchronous=FULL` (2) for everything after them; the open's rows are committed with the
    /// first fragment's group and are there after a reopen.
    #[tokio::test]
    async fn opens_relax_only_their_own_commit() {
        let ts = TestStore::new();
        let opened = open(&ts, "cam", true).await.unwrap();
        let level: i64 = ts
            .store
            .exec(|w| {
                Ok(w.conn
                    .pragma_query_value(None, "synchronous", |r| r.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(level, 2, "synchronous=FULL again after the open");
        let cam = testing::TestStream {
            row: opened.stream.clone(),
            session_id: opened.session_id,
            init_id: opened.init_id,
        };
        let row = ts.append(&cam, 0, 1000, 50).await;
        assert_eq!(row.session_id, opened.session_id);
        let ts = ts.reopen_after(|_| {}).await;
        let back = ts.store.stream("cam").await.unwrap().expect("stream kept");
        assert_eq!(back.fragment_count, 1);
        let sessions = ts.store.sessions(back.id, 10).await.unwrap();
        assert!(
            sessions.iter().any(|s| s.id == opened.session_id),
            "{sessions:?}"
        );
    }

    /// Streams whose files were opened together roll them at different times, each no later
    /// than `file_roll_secs` and no sooner than 7/8 of it.
    #[tokio::test]
    async fn files_opened_together_roll_apart() {
        let ts = TestStore::with_config(StorageConfig {
            sync: crate::config::SyncMode::Fdatasync,
            min_free_bytes: Some(0),
            file_roll_secs: 80,
            group_commit_ms: 0,
            ..StorageConfig::default()
        });
        let mut streams = Vec::new();
        for i in 0..8 {
            streams.push(ts.add_stream(&format!("cam{i}")).await);
        }
        let mut first_file = vec![None; streams.len()];
        let mut rolled_at_s = vec![None; streams.len()];
        for second in 0..82 {
            let acks: Vec<_> = streams
                .iter()
                .map(|s| ts.queue(s, second * 1000, 1000, 20))
                .collect();
            for (i, ack) in acks.into_iter().enumerate() {
                let row = ack.await.unwrap().unwrap();
                let first = *first_file[i].get_or_insert(row.file_id);
                if row.file_id != first && rolled_at_s[i].is_none() {
                    rolled_at_s[i] = Some(second);
                }
            }
            ts.clock.advance_us(1_000_000);
        }
        let rolled: Vec<i64> = rolled_at_s
            .iter()
            .map(|r| r.expect("every stream rolled within the period"))
            .collect();
        assert!(rolled.iter().all(|s| (70..=80).contains(s)), "{rolled:?}");
        let distinct: std::collections::HashSet<_> = rolled.iter().collect();
        assert!(distinct.len() >= 3, "rolls at {rolled:?}");
    }

    /// Stream creations queued together share one transaction (`ExecBeside`): a refused one
    /// (a duplicate name) is refused alone, the others are answered and stay after a reopen.
    #[tokio::test]
    async fn creations_batched_together_fail_alone_and_persist() {
        let ts = TestStore::new();
        let pause = ts.pause_writer();
        let mut tasks = Vec::new();
        for name in ["s0", "s1", "s2", "s1", "s3"] {
            let store = ts.store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .create_stream(name, 1, None, Default::default())
                    .await
                    .map(|r| r.name)
            }));
        }
        // Let the tasks queue their commands before the writer runs again.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        pause.release();
        let mut created = Vec::new();
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(name) => created.push(name),
                Err(e) => {
                    assert_eq!(e.kind, crate::error::Kind::Conflict, "{e}");
                    refused += 1;
                }
            }
        }
        created.sort();
        assert_eq!(created, ["s0", "s1", "s2", "s3"]);
        assert_eq!(refused, 1);
        let ts = ts.reopen_after(|_| {}).await;
        for name in ["s0", "s1", "s2", "s3"] {
            assert!(ts.store.stream(name).await.unwrap().is_some(), "{name}");
        }
    }

    /// Fragments of several streams queued while the writer is busy are made durable and
    /// committed as one group: one sync pass, one transaction, one server time, and every ack
    /// after it.
    #[tokio::test]
    async fn group_commit_spans_streams() {
        let ts = TestStore::new();
        let streams = [
            ts.add_stream("a").await,
            ts.add_stream("b").await,
            ts.add_stream("c").await,
        ];
        let before = ts.store.group_stats();
        let pause = ts.pause_writer();
        let mut acks = Vec::new();
        for i in 0..3 {
            for s in &streams {
                acks.push(ts.queue(s, i * 1000, 1000, 10 + i as usize));
            }
        }
        ts.clock.advance_us(5_000);
        pause.release();
        let mut rows = Vec::new();
        for ack in acks {
            rows.push(ack.await.unwrap().unwrap());
        }
        let after = ts.store.group_stats();
        assert_eq!(after.groups - before.groups, 1, "one commit group");
        assert_eq!(after.fragments - before.fragments, 9);
        assert!(rows
            .iter()
            .all(|r| r.server_time_us == testing::T0_US + 5_000));
        for s in &streams {
            let numbers: Vec<i64> = rows
                .iter()
                .filter(|r| r.stream_id == s.row.id)
                .map(|r| r.number)
                .collect();
            assert_eq!(numbers, [1, 2, 3], "numbered in queue order per stream");
            let stored = ts.store.stream(&s.row.name).await.unwrap().unwrap();
            assert_eq!(stored.fragment_count, 3);
            assert_eq!(stored.total_bytes, (26 + 27 + 28) as i64);
        }
        for r in &rows {
            let payload = r.size_bytes as usize - 16;
            assert_eq!(
                ts.store.fragment_bytes(r).await.unwrap(),
                fragment_bytes(payload)
            );
        }
    }

    /// Shutdown commits what was queued before it; appends after it are refused.
    #[tokio::test]
    async fn shutdown_commits_queued_then_refuses() {
        let ts = TestStore::new();
        let cam = ts.add_stream("cam").await;
        let ack = ts.queue(&cam, 0, 1000, 10);
        ts.store.shutdown().await;
        assert_eq!(ack.await.unwrap().unwrap().number, 1);
        let err = ts.store.append(testing::new_fragment(&cam, 1000, 1000, 10));
        assert_eq!(err.unwrap_err().kind, crate::error::Kind::Unavailable);
    }
}
