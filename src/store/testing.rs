//! `TestStore`: a real store in a temporary directory on a simulated clock, for the store's unit
//! tests (like Moonfire's `TestDb`). Real files, real SQLite, the real writer thread: only time is
//! fake, so retention and server times are exact and nothing sleeps.

use super::rows::{FragmentRow, NewFragment, StreamRow};
use super::writer::Command;
use super::{files, InitToStore, SessionOpening, Store};
use crate::clock::SimulatedClock;
use crate::config::{StorageConfig, SyncMode};
use crate::error::Result;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;

/// 2026-01-01T00:00:00Z: where the simulated clock starts, and where test producer times count
/// from, so server and producer times read alike in failures.
pub const T0_US: i64 = 1_767_225_600_000_000;

pub struct TestStore {
    pub store: Store,
    pub clock: Arc<SimulatedClock>,
    pub config: StorageConfig,
    dir: tempfile::TempDir,
}

/// A stream ready to take fragments: its row, one open session and one init.
#[derive(Debug, Clone)]
pub struct TestStream {
    pub row: StreamRow,
    pub session_id: i64,
    pub init_id: i64,
}

impl TestStore {
    pub fn new() -> TestStore {
        TestStore::with_config(StorageConfig {
            sync: SyncMode::Fdatasync,
            // Tests decide the budget; the temp dir's disk may be nearly full.
            min_free_bytes: Some(0),
            ..StorageConfig::default()
        })
    }

    pub fn with_config(config: StorageConfig) -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(SimulatedClock::new(T0_US));
        let store = Store::open(dir.path(), &config, clock.clone()).expect("open store");
        TestStore {
            store,
            clock,
            config,
            dir,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the store, runs `while_closed` on the data dir (to leave what a crash leaves),
    /// and opens the same directory again, so recovery runs; the clock is kept.
    pub async fn reopen_after(self, while_closed: impl FnOnce(&Path)) -> TestStore {
        let TestStore {
            store,
            clock,
            config,
            dir,
        } = self;
        store.shutdown().await;
        // The data-dir lock goes with the last handle.
        drop(store);
        while_closed(dir.path());
        let store = Store::open(dir.path(), &config, clock.clone()).expect("reopen store");
        TestStore {
            store,
            clock,
            config,
            dir,
        }
    }

    /// Stops the store and hands back the data dir (for offline tools like `check --repair`).
    pub async fn close(self) -> tempfile::TempDir {
        self.store.shutdown().await;
        drop(self.store);
        self.dir
    }

    /// Creates `name` (72 h retention, no quota) with a session and an init.
    pub async fn add_stream(&self, name: &str) -> TestStream {
        let row = self
            .store
            .create_stream(name, 72, None, BTreeMap::new())
            .await
            .expect("create stream");
        self.with_session(row).await
    }

    /// A new session (and the same init) for an existing stream, e.g. after a reopen.
    pub async fn with_session(&self, row: StreamRow) -> TestStream {
        let opened = self
            .store
            .open_session(SessionOpening {
                stream: row.name.clone(),
                create_with_retention_hours: None,
                kind: "upload",
                remote: None,
                started_us: self.clock_us(),
                init: test_init(),
            })
            .await
            .expect("open session");
        TestStream {
            row,
            session_id: opened.session_id,
            init_id: opened.init_id,
        }
    }

    pub fn clock_us(&self) -> i64 {
        use crate::clock::Clock;
        self.clock.now_us()
    }

    /// Queues a keyframe video fragment of `s` at `start_ms` past [`T0_US`] (producer time)
    /// lasting `duration_ms`, with `payload_bytes` of media; the receiver is its ack.
    pub fn queue(
        &self,
        s: &TestStream,
        start_ms: i64,
        duration_ms: i64,
        payload_bytes: usize,
    ) -> oneshot::Receiver<Result<FragmentRow>> {
        self.store
            .append(new_fragment(s, start_ms, duration_ms, payload_bytes))
            .expect("queue append")
    }

    /// Appends a fragment like [`TestStore::queue`] and waits for its ack.
    pub async fn append(
        &self,
        s: &TestStream,
        start_ms: i64,
        duration_ms: i64,
        payload_bytes: usize,
    ) -> FragmentRow {
        self.queue(s, start_ms, duration_ms, payload_bytes)
            .await
            .expect("writer dropped the ack")
            .expect("append")
    }

    /// The path of a stored fragment's file.
    pub fn file_of(&self, row: &FragmentRow) -> PathBuf {
        files::file_path(self.data_dir(), row.stream_id, row.file_id)
    }

    /// Makes every insert into `table` fail with `message`, through a temporary trigger on the
    /// writer's connection, until [`TestStore::stop_failing_inserts`]: a commit or metadata
    /// change that fails half-way, as a full disk or a broken database would make it.
    pub async fn fail_inserts_into(&self, table: &'static str, message: &'static str) {
        let sql = format!(
            "CREATE TEMP TRIGGER fail_{table} BEFORE INSERT ON main.{table} \
             BEGIN SELECT RAISE(ABORT, '{message}'); END"
        );
        self.store
            .exec(move |w| Ok(w.conn.execute_batch(&sql)?))
            .await
            .expect("install the failing trigger");
    }

    pub async fn stop_failing_inserts(&self, table: &'static str) {
        let sql = format!("DROP TRIGGER fail_{table}");
        self.store
            .exec(move |w| Ok(w.conn.execute_batch(&sql)?))
            .await
            .expect("drop the failing trigger");
    }

    /// Holds the writer thread between two turns until the returned guard is released or
    /// dropped, so commands queued meanwhile are taken together, as under load.
    pub fn pause_writer(&self) -> WriterPause {
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        self.store
            .send(Command::Exec(Box::new(move |_| {
                let _ = entered_tx.send(());
                let _ = release_rx.recv();
            })))
            .expect("send pause");
        entered_rx.recv().expect("writer took the pause");
        WriterPause {
            _release: release_tx,
        }
    }
}

/// The writer stays paused while this lives.
pub struct WriterPause {
    _release: std::sync::mpsc::Sender<()>,
}

impl WriterPause {
    pub fn release(self) {}
}

/// The bytes of a stored fragment as `check` verifies them: an empty `moof` and an `mdat` of
/// `payload_bytes` (each byte its offset modulo 251, so misplaced bytes show).
pub fn fragment_bytes(payload_bytes: usize) -> Bytes {
    let mut b = Vec::with_capacity(16 + payload_bytes);
    b.extend_from_slice(&8u32.to_be_bytes());
    b.extend_from_slice(b"moof");
    b.extend_from_slice(&(8 + payload_bytes as u32).to_be_bytes());
    b.extend_from_slice(b"mdat");
    b.extend((0..payload_bytes).map(|i| (i % 251) as u8));
    Bytes::from(b)
}

/// A keyframe video fragment of `s`; see [`TestStore::queue`].
pub fn new_fragment(
    s: &TestStream,
    start_ms: i64,
    duration_ms: i64,
    payload_bytes: usize,
) -> NewFragment {
    let producer_start_us = T0_US + start_ms * 1000;
    NewFragment {
        stream_id: s.row.id,
        session_id: s.session_id,
        init_id: s.init_id,
        producer_start_us,
        duration_us: duration_ms * 1000,
        end_us: producer_start_us + duration_ms * 1000,
        media_time: start_ms,
        timescale: 1000,
        keyframe: true,
        has_video: true,
        sample_count: 1,
        bytes: fragment_bytes(payload_bytes),
    }
}

/// The init every test session stores.
pub fn test_init() -> InitToStore {
    InitToStore {
        bytes: Bytes::from_static(b"test init"),
        codecs: "avc1.64001f".into(),
        tracks: Vec::new(),
    }
}
