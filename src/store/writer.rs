//! The single writer thread and its group commit.
//!
//! Every change to the index and every byte appended to a fragment file goes through this one
//! thread, so there is never write contention in SQLite and fragment numbers are assigned in one
//! place. Appends are taken in groups: the thread takes whatever has queued up since the last
//! group (the group grows by itself under load, so no timer is needed), writes the bytes, makes
//! them durable with one pass of syncs for the whole group, commits one SQLite transaction for the
//! whole group, and only then acknowledges each fragment. Metadata changes (streams, inits,
//! sessions) run between groups, each in its own transaction, after the group before them is
//! committed, so they also act as ordering barriers.

use super::files;
use super::rows::{FragmentRow, NewFragment};
use crate::clock::SharedClock;
use crate::config::{StorageConfig, SyncMode};
use crate::error::{Error, Result};
use rusqlite::{params, Connection};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tokio::sync::{broadcast, oneshot};

/// The most commands taken into one group; bounds the work (and ack delay) of a group.
const MAX_GROUP_COMMANDS: usize = 2048;
/// Threads that `fdatasync` the files of one group at once. A flush mostly waits on the device,
/// and devices complete parallel flushes together, so 200 files cost far less than 200 serial
/// calls (about 2 ms each here). `syncfs` would be one call, but it also flushes whatever else
/// is written to the filesystem (other programs' files), so it is opt-in.
const SYNC_THREADS: usize = 8;

pub(crate) type ExecFn = Box<dyn FnOnce(&mut WriterState) + Send>;
/// Does its work inside the writer's open transaction and returns how to answer once that
/// transaction has committed (with the commit's error, if it failed).
pub(crate) type BesideFn = Box<dyn FnOnce(&mut WriterState) -> ReplyFn + Send>;
pub(crate) type ReplyFn = Box<dyn FnOnce(Option<Error>) + Send>;

pub(crate) enum Command {
    Append(NewFragment, oneshot::Sender<Result<FragmentRow>>),
    Exec(ExecFn),
    /// Like `Exec`, but without the barrier: it runs at once, while the open group stays open
    /// and the syncing one syncs. Only for changes no queued or unacknowledged fragment can
    /// depend on or be hurt by: new rows that later fragments will name (stream, session,
    /// init) and a session's end, which its producer sends only after its last ack. A thousand
    /// cameras reconnecting at once each open a session; as barriers, those would each cost a
    /// group's sync.
    ExecBeside(BesideFn, BesideDurability),
    Shutdown(oneshot::Sender<()>),
}

/// When an `ExecBeside` change must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BesideDurability {
    /// Before it is answered (its transaction syncs the WAL): what a client is told was done.
    AtAnswer,
    /// Before any fragment queued after it is acknowledged, and no sooner: rows that only
    /// fragments will name (an ingest session's stream, session and init). Its transaction
    /// commits without syncing the WAL; the next commit group's transaction syncs it, and a WAL
    /// sync covers every frame written before it. A thousand cameras opening sessions at once
    /// then cost no WAL syncs of their own, each of which would hold the writer (and every
    /// camera's acks) behind the device's queue. Lost in a crash only when nothing named it.
    WithNextGroup,
}

/// Something that happened to the log, for live readers (playlists, events, follow feeds).
#[derive(Debug, Clone)]
pub enum StoreEvent {
    FragmentPersisted(FragmentRow),
    StreamDeleted {
        stream_id: i64,
    },
    SessionStarted {
        stream_id: i64,
        session_id: i64,
        kind: &'static str,
        remote: Option<String>,
        started_us: i64,
    },
    SessionEnded {
        stream_id: i64,
        session_id: i64,
        reason: String,
        ended_us: i64,
    },
}

/// Figures of the last groups, for the bench and metrics.
#[derive(Debug, Default, Clone)]
pub struct GroupStats {
    pub groups: u64,
    pub fragments: u64,
    pub sync_us_total: u64,
    /// How long each group took to make its bytes durable (file and directory syncs).
    pub sync_seconds: crate::metrics::Histogram,
    /// How long each group's SQLite commit took (after its sync).
    pub commit_seconds: crate::metrics::Histogram,
    /// When each recent group committed and how many fragments it held, oldest first; at most
    /// [`RECENT_GROUPS`] within [`RECENT_GROUPS_WINDOW`].
    recent: std::collections::VecDeque<(std::time::Instant, u32)>,
}

/// What the recent-rate figures of [`GroupStats`] look back over.
const RECENT_GROUPS_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
const RECENT_GROUPS: usize = 8192;

impl GroupStats {
    fn record(&mut self, fragments: usize, sync_us: u64, commit: std::time::Duration) {
        self.commit_seconds.observe(commit);
        self.groups += 1;
        self.fragments += fragments as u64;
        self.sync_us_total += sync_us;
        self.sync_seconds
            .observe(std::time::Duration::from_micros(sync_us));
        let now = std::time::Instant::now();
        self.recent
            .push_back((now, u32::try_from(fragments).unwrap_or(u32::MAX)));
        while self.recent.len() > RECENT_GROUPS
            || self
                .recent
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RECENT_GROUPS_WINDOW)
        {
            self.recent.pop_front();
        }
    }

    /// Groups (each one pass of syncs and one commit) per second over the last 10 s, and the
    /// mean fragments per group over them (0 when there were none).
    pub fn recent_rates(&self) -> (f64, f64) {
        let now = std::time::Instant::now();
        let (groups, fragments) = self
            .recent
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= RECENT_GROUPS_WINDOW)
            .fold((0u64, 0u64), |(g, f), (_, n)| (g + 1, f + u64::from(*n)));
        let per_group = if groups == 0 {
            0.0
        } else {
            fragments as f64 / groups as f64
        };
        (
            groups as f64 / RECENT_GROUPS_WINDOW.as_secs_f64(),
            per_group,
        )
    }
}

/// When the writer started its current turn, for readiness: a turn that runs for long means the
/// writer (and so every producer's acks) is stuck, typically on a disk that stopped answering.
#[derive(Debug)]
pub struct Heartbeat {
    base: std::time::Instant,
    /// Milliseconds since `base` plus one when the current turn started; 0 while idle.
    busy_since_ms: std::sync::atomic::AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            base: std::time::Instant::now(),
            busy_since_ms: Default::default(),
        }
    }
}

impl Heartbeat {
    fn busy(&self) {
        let ms = self.base.elapsed().as_millis() as u64 + 1;
        self.busy_since_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn idle(&self) {
        self.busy_since_ms
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the current turn has been running, if the writer is in one.
    pub fn busy_for(&self) -> Option<std::time::Duration> {
        let since = self
            .busy_since_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        (since > 0).then(|| {
            let now = self.base.elapsed().as_millis() as u64 + 1;
            std::time::Duration::from_millis(now.saturating_sub(since))
        })
    }
}

struct OpenFile {
    id: i64,
    file: File,
    len: u64,
    created_us: i64,
}

struct StreamCursor {
    next_number: i64,
    file: Option<OpenFile>,
    prev: Option<PrevFragment>,
}

/// What the next fragment's segment and discontinuity flags are decided from.
#[derive(Clone, Copy)]
struct PrevFragment {
    session_id: i64,
    init_id: i64,
    /// The stream's end so far, over all tracks. With one moof per track, a fragment of one
    /// track may start before the other track's newest fragment ended: only a jump forward
    /// past this end is a gap.
    end_us: i64,
    segment_seq: i64,
    disc_seq: i64,
    /// The newest segment holds video samples. A segment that began at a discontinuity with
    /// an audio-only fragment takes in the next video keyframe fragment instead of ending there.
    segment_has_video: bool,
}

/// Segment and discontinuity flags of the fragment after `prev` (None: the stream's first):
/// (discontinuity, segment_start, segment_seq, disc_seq). A segment starts at a discontinuity
/// or at a keyframe fragment, but in a stream with video never at a fragment without video.
fn structure_after(prev: Option<PrevFragment>, frag: &NewFragment) -> (bool, bool, i64, i64) {
    match prev {
        None => (false, true, 0, 0),
        Some(p) => {
            let disc = p.session_id != frag.session_id
                || p.init_id != frag.init_id
                || frag.producer_start_us - p.end_us > DISCONTINUITY_GAP_US;
            let start = disc || (frag.keyframe && (p.segment_has_video || !frag.has_video));
            (
                disc,
                start,
                p.segment_seq + i64::from(start),
                p.disc_seq + i64::from(disc),
            )
        }
    }
}

/// A jump in producer time larger than this between consecutive fragments is a discontinuity.
/// Smaller gaps (a dropped frame, clock jitter) play through without one.
pub const DISCONTINUITY_GAP_US: i64 = 500_000;

struct Touched {
    stream_id: i64,
    len_before: u64,
    new_file: bool,
    /// A handle of the file for the group's sync (the stream may roll to a new file within
    /// the group, and the sync runs on another thread).
    file: File,
}

/// A closed group whose bytes are being made durable on a sync thread while the writer goes on
/// writing the next group's bytes. Committed (and acknowledged) when the sync is done.
struct SyncingGroup {
    pending: Vec<Pending>,
    touched: HashMap<i64, Touched>,
    /// The sync's result and how long it took (µs).
    done: mpsc::Receiver<Result<u64>>,
}

/// Fault injection for tests of overload (as `TAPEDECK_OBJECT_FAULT` is for the object tier):
/// `TAPEDECK_WRITER_FAULT=sync_delay_ms:N` makes every group's sync take N ms longer, a disk
/// that cannot keep up on demand. Read once when the writer starts; unset in production.
pub const FAULT_ENV: &str = "TAPEDECK_WRITER_FAULT";

fn sync_delay_from_env() -> Option<std::time::Duration> {
    let v = std::env::var(FAULT_ENV).ok()?;
    let ms: u64 = v.strip_prefix("sync_delay_ms:")?.parse().ok()?;
    tracing::warn!("{FAULT_ENV}: every commit group's sync is delayed by {ms} ms");
    Some(std::time::Duration::from_millis(ms))
}

/// How often the writer looks for the end of a running sync while it has nothing else to do.
const SYNC_POLL: std::time::Duration = std::time::Duration::from_millis(1);

struct Pending {
    row: FragmentRow,
    bytes: bytes::Bytes,
    /// End of the media of all tracks (producer time), for the stream's end.
    end_us: i64,
    ack: oneshot::Sender<Result<FragmentRow>>,
}

pub(crate) struct WriterState {
    pub(crate) conn: Connection,
    pub(crate) data_dir: PathBuf,
    config: StorageConfig,
    clock: SharedClock,
    cursors: HashMap<i64, StreamCursor>,
    next_file_id: i64,
    pending: Vec<Pending>,
    /// Bytes of the fragments in `pending`.
    pending_bytes: usize,
    touched: HashMap<i64, Touched>,
    /// The group before `pending`, if its sync is still running.
    syncing: Option<SyncingGroup>,
    /// `FAULT_ENV`'s extra time per sync (tests only).
    sync_delay: Option<std::time::Duration>,
    dirs_to_sync: HashSet<PathBuf>,
    /// The connection may still be at `synchronous=NORMAL` after a
    /// [`BesideDurability::WithNextGroup`] batch.
    sync_relaxed: bool,
    events: broadcast::Sender<StoreEvent>,
    stats: std::sync::Arc<std::sync::Mutex<GroupStats>>,
    /// Bumped whenever stored media is removed (expiry, stream delete), so caches of media
    /// bytes know to drop what they hold.
    pub(crate) removal_generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Where committed fragments' bytes go for the live readers (none in tools like `check`).
    recent: Option<std::sync::Arc<super::recent::RecentFragments>>,
    pub(crate) heartbeat: std::sync::Arc<Heartbeat>,
}

impl WriterState {
    pub(crate) fn new(
        conn: Connection,
        data_dir: PathBuf,
        config: StorageConfig,
        clock: SharedClock,
        events: broadcast::Sender<StoreEvent>,
        stats: std::sync::Arc<std::sync::Mutex<GroupStats>>,
        next_file_id: i64,
    ) -> Self {
        WriterState {
            conn,
            data_dir,
            config,
            clock,
            cursors: HashMap::new(),
            next_file_id,
            pending: Vec::new(),
            pending_bytes: 0,
            touched: HashMap::new(),
            syncing: None,
            sync_delay: sync_delay_from_env(),
            dirs_to_sync: HashSet::new(),
            sync_relaxed: false,
            events,
            stats,
            removal_generation: Default::default(),
            recent: None,
            heartbeat: Default::default(),
        }
    }

    pub(crate) fn with_recent(
        mut self,
        recent: std::sync::Arc<super::recent::RecentFragments>,
    ) -> Self {
        self.recent = Some(recent);
        self
    }

    /// Whether sealed files tier to object storage.
    pub(crate) fn object_tier_on(&self) -> bool {
        self.config.object.is_some()
    }

    pub(crate) fn media_removed(&self) {
        self.removal_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn now_us(&self) -> i64 {
        self.clock.now_us()
    }

    pub(crate) fn emit(&self, event: StoreEvent) {
        let _ = self.events.send(event);
    }

    /// Forgets the open file and number cursor of a stream (after delete, or a failed group).
    pub(crate) fn forget_stream(&mut self, stream_id: i64) {
        self.cursors.remove(&stream_id);
    }

    /// Stops appending to a file (expiry emptied it); the stream's next fragment starts a new
    /// one. Runs on the writer thread, so no append can be in progress.
    pub(crate) fn close_file(&mut self, file_id: i64) {
        for c in self.cursors.values_mut() {
            if c.file.as_ref().is_some_and(|f| f.id == file_id) {
                c.file = None;
            }
        }
    }

    /// Closes the files of streams that have had no append for `storage.file_roll_secs` (the
    /// next append would roll them anyway, so the layout is the same) and returns the ids of
    /// the files still open for appending. Every other file is sealed: the writer never opens
    /// an existing file again. Runs on the writer thread, between groups.
    pub(crate) fn seal_idle_files(&mut self) -> HashSet<i64> {
        let now_us = self.clock.now_us();
        let limits = RollLimits::of(&self.config);
        let mut open = HashSet::new();
        for (stream_id, c) in self.cursors.iter_mut() {
            if c.file
                .as_ref()
                .is_some_and(|f| limits.due(*stream_id, f, now_us))
            {
                c.file = None;
            }
            if let Some(f) = &c.file {
                open.insert(f.id);
            }
        }
        open
    }

    /// Runs the writer loop until shutdown or until every sender is gone.
    ///
    /// A group opens at its first append and closes `storage.group_commit_ms` later, or once it
    /// holds `storage.group_commit_bytes` or `MAX_GROUP_COMMANDS` fragments. Appends that arrive
    /// meanwhile are written at once (their bytes reach the page cache while the group is open),
    /// so closing costs only the syncs and the commit. Without the window, a group is whatever
    /// queued while the previous one committed: with hundreds of paced cameras that is one or
    /// two fragments, and each pays its own sync.
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Command>) {
        let window = std::time::Duration::from_millis(self.config.group_commit_ms);
        let max_bytes = usize::try_from(self.config.group_commit_bytes).unwrap_or(usize::MAX);
        loop {
            let first = if self.syncing.is_some() {
                match rx.recv_timeout(SYNC_POLL) {
                    Ok(c) => c,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.poll_syncing();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        self.flush_group();
                        return;
                    }
                }
            } else {
                let Ok(c) = rx.recv() else {
                    self.flush_group();
                    return;
                };
                c
            };
            self.heartbeat.busy();
            let mut next = Some(first);
            // When the open group's first append arrived.
            let mut opened: Option<std::time::Instant> = None;
            loop {
                self.poll_syncing();
                if let Some(cmd) = next.take() {
                    match cmd {
                        Command::Append(frag, ack) => {
                            if self.pending.is_empty() {
                                opened = Some(std::time::Instant::now());
                            }
                            self.append(frag, ack);
                        }
                        Command::Exec(f) => {
                            self.flush_group();
                            opened = None;
                            if let Err(e) = self.full_sync() {
                                tracing::error!(error = %e, "could not set synchronous=FULL again");
                            }
                            f(&mut self);
                        }
                        Command::ExecBeside(f, durability) => {
                            // It may have taken the next command off the queue: that one is
                            // handled before anything else is received.
                            next = self.run_beside(f, durability, &rx);
                            if next.is_some() {
                                continue;
                            }
                        }
                        Command::Shutdown(done) => {
                            self.flush_group();
                            // Anything queued behind the shutdown is refused, not lost silently.
                            while let Ok(c) = rx.try_recv() {
                                if let Command::Append(_, ack) = c {
                                    let _ = ack.send(Err(shutting_down()));
                                }
                            }
                            drop(self);
                            let _ = done.send(());
                            return;
                        }
                    }
                }
                let full =
                    self.pending.len() >= MAX_GROUP_COMMANDS || self.pending_bytes >= max_bytes;
                let due = match opened {
                    Some(t) if !self.pending.is_empty() && !full => t + window,
                    _ => std::time::Instant::now(),
                };
                let mut wait = due.saturating_duration_since(std::time::Instant::now());
                if self.syncing.is_some() {
                    wait = wait.min(SYNC_POLL);
                }
                if !due
                    .saturating_duration_since(std::time::Instant::now())
                    .is_zero()
                {
                    match rx.recv_timeout(wait) {
                        Ok(c) => next = Some(c),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            self.flush_group();
                            return;
                        }
                    }
                    continue;
                }
                // Due: what already queued joins the group (unless it is full), then it
                // closes and its sync starts; an empty queue after that ends the turn.
                if !full && !self.pending.is_empty() {
                    if let Ok(c) = rx.try_recv() {
                        next = Some(c);
                        continue;
                    }
                }
                self.close_group();
                opened = None;
                match rx.try_recv() {
                    Ok(c) => next = Some(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            self.heartbeat.idle();
        }
    }

    /// Runs `f` and every `ExecBeside` of the same durability queued right behind it in one
    /// transaction (a thousand cameras opening sessions at once then cost a few commits, not a
    /// thousand), answers them once it has committed, and returns the first other command it
    /// took off the queue.
    fn run_beside(
        &mut self,
        f: BesideFn,
        durability: BesideDurability,
        rx: &mpsc::Receiver<Command>,
    ) -> Option<Command> {
        // SQLite takes the safety level only outside a transaction. Should setting it fail,
        // the commit syncs as every other does: slower, never less durable.
        let (relaxed, unsafe_commit) = match durability {
            BesideDurability::WithNextGroup => (
                self.conn
                    .pragma_update(None, "synchronous", "NORMAL")
                    .is_ok(),
                None,
            ),
            BesideDurability::AtAnswer => (false, self.full_sync().err()),
        };
        let began = self.conn.execute_batch("BEGIN IMMEDIATE");
        let mut replies = vec![f(self)];
        let mut next = None;
        while replies.len() < MAX_GROUP_COMMANDS {
            match rx.try_recv() {
                Ok(Command::ExecBeside(f, d)) if d == durability => replies.push(f(self)),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        // Without the transaction (BEGIN failed) each statement committed on its own, so
        // each answer is its own result.
        let committed = match (began, unsafe_commit) {
            (Ok(()), None) => self.conn.execute_batch("COMMIT").map_err(Error::from),
            // A commit that would not sync is not made: nothing of it is kept or claimed.
            (Ok(()), Some(e)) => Err(e),
            (Err(_), _) => Ok(()),
        };
        let failed = committed.err().inspect(|_| {
            let _ = self.conn.execute_batch("ROLLBACK");
        });
        if relaxed {
            self.sync_relaxed = true;
            // Should this fail, whatever commits next tries again first (`full_sync`).
            if let Err(e) = self.full_sync() {
                tracing::error!(error = %e, "could not set synchronous=FULL again");
            }
        }
        for reply in replies {
            reply(failed.clone());
        }
        next
    }

    fn cursor(&mut self, stream_id: i64) -> Result<&mut StreamCursor> {
        if !self.cursors.contains_key(&stream_id) {
            let row: Option<(i64, Option<i64>)> = self
                .conn
                .query_row(
                    "SELECT last_number, deleted_us FROM streams WHERE id = ?",
                    [stream_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            match row {
                Some((last_number, None)) => {
                    let prev = self
                        .conn
                        .query_row(
                            "SELECT f.session_id, f.init_id, \
                             MAX(f.producer_start_us + f.duration_us, \
                                 COALESCE(s.last_end_us, f.producer_start_us)), \
                             f.segment_seq, f.disc_seq FROM fragments f \
                             JOIN streams s ON s.id = f.stream_id WHERE f.stream_id = ? \
                             ORDER BY f.number DESC LIMIT 1",
                            [stream_id],
                            |r| {
                                Ok(PrevFragment {
                                    session_id: r.get(0)?,
                                    init_id: r.get(1)?,
                                    end_us: r.get(2)?,
                                    segment_seq: r.get(3)?,
                                    disc_seq: r.get(4)?,
                                    // Not stored; the next fragment after a restart comes from
                                    // a new session (a discontinuity) anyway.
                                    segment_has_video: true,
                                })
                            },
                        )
                        .map(Some)
                        .or_else(|e| match e {
                            rusqlite::Error::QueryReturnedNoRows => Ok(None),
                            e => Err(e),
                        })?;
                    self.cursors.insert(
                        stream_id,
                        StreamCursor {
                            next_number: last_number + 1,
                            file: None,
                            prev,
                        },
                    );
                }
                _ => return Err(Error::not_found("the stream was deleted")),
            }
        }
        Ok(self.cursors.get_mut(&stream_id).expect("inserted above"))
    }

    fn append(&mut self, frag: NewFragment, ack: oneshot::Sender<Result<FragmentRow>>) {
        match self.write_bytes(&frag) {
            Ok(row) => {
                self.pending_bytes += frag.bytes.len();
                self.pending.push(Pending {
                    end_us: frag.end_us.max(row.producer_end_us()),
                    row,
                    bytes: frag.bytes,
                    ack,
                })
            }
            Err(e) => {
                let _ = ack.send(Err(e));
            }
        }
    }

    /// Appends the bytes to the stream's current file (rolling it when due) and returns the row
    /// the fragment will get once the group commits.
    fn write_bytes(&mut self, frag: &NewFragment) -> Result<FragmentRow> {
        let now_us = self.clock.now_us();
        let data_dir = self.data_dir.clone();
        let mut next_file_id = self.next_file_id;
        let mut new_dirs = Vec::new();
        let limits = RollLimits::of(&self.config);
        let cursor = self.cursor(frag.stream_id)?;
        let due = match &cursor.file {
            Some(f) => limits.due(frag.stream_id, f, now_us),
            None => true,
        };
        let mut created = false;
        if due {
            let dir = files::stream_dir(&data_dir, frag.stream_id);
            if !dir.exists() {
                std::fs::create_dir_all(&dir)?;
                new_dirs.push(data_dir.join(files::STREAMS_DIR));
            }
            new_dirs.push(dir);
            let id = next_file_id;
            next_file_id += 1;
            let path = files::file_path(&data_dir, frag.stream_id, id);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            cursor.file = Some(OpenFile {
                id,
                file,
                len: 0,
                created_us: now_us,
            });
            created = true;
        }
        let f = cursor.file.as_mut().expect("opened above");
        let offset = f.len;
        let handle = match f.file.try_clone() {
            Ok(h) => h,
            Err(e) => {
                if created {
                    let id = f.id;
                    cursor.file = None;
                    let _ = std::fs::remove_file(files::file_path(&data_dir, frag.stream_id, id));
                }
                return Err(e.into());
            }
        };
        if let Err(e) = f.file.write_all(&frag.bytes) {
            // Leave no partial fragment behind; recovery would cut it too, but the next append
            // must start on a clean boundary. A file created for this fragment goes away again
            // (nothing names it, and its id is handed out afresh), so a write that failed for
            // lack of space leaves the stream exactly as it was.
            if created {
                let id = f.id;
                cursor.file = None;
                let _ = std::fs::remove_file(files::file_path(&data_dir, frag.stream_id, id));
            } else {
                let _ = f.file.set_len(offset);
            }
            return Err(e.into());
        }
        start_writeback(&f.file, offset, frag.bytes.len() as u64);
        f.len += frag.bytes.len() as u64;
        let file_id = f.id;
        let (discontinuity, segment_start, segment_seq, disc_seq) =
            structure_after(cursor.prev, frag);
        let end_us = frag.end_us.max(frag.producer_start_us + frag.duration_us);
        cursor.prev = Some(PrevFragment {
            session_id: frag.session_id,
            init_id: frag.init_id,
            end_us: cursor.prev.map_or(end_us, |p| p.end_us.max(end_us)),
            segment_seq,
            disc_seq,
            segment_has_video: frag.has_video
                || (!segment_start && cursor.prev.is_some_and(|p| p.segment_has_video)),
        });
        let row = FragmentRow {
            stream_id: frag.stream_id,
            number: cursor.next_number,
            session_id: frag.session_id,
            init_id: frag.init_id,
            producer_start_us: frag.producer_start_us,
            duration_us: frag.duration_us,
            server_time_us: 0,
            media_time: frag.media_time,
            timescale: frag.timescale,
            keyframe: frag.keyframe,
            sample_count: frag.sample_count,
            file_id,
            file_offset: offset as i64,
            size_bytes: frag.bytes.len() as i64,
            segment_start,
            discontinuity,
            segment_seq,
            disc_seq,
            has_video: frag.has_video,
        };
        cursor.next_number += 1;
        self.next_file_id = next_file_id;
        self.touched.entry(file_id).or_insert(Touched {
            stream_id: frag.stream_id,
            len_before: offset,
            new_file: created,
            file: handle,
        });
        self.dirs_to_sync.extend(new_dirs);
        Ok(row)
    }

    /// Makes the pending group durable, commits it, then acknowledges it; also the group
    /// before it, if that one is still syncing. After this nothing is in flight: metadata
    /// changes and shutdown run behind it.
    pub(crate) fn flush_group(&mut self) {
        self.close_group();
        self.finish_syncing();
    }

    /// Closes the pending group: waits for the group before it (one group syncs at a time, so
    /// commits stay in order), then starts this one's sync on its own thread and returns, so
    /// the writer can go on writing the next group's bytes while the device flushes.
    fn close_group(&mut self) {
        if self.pending.is_empty() {
            self.touched.clear();
            return;
        }
        self.finish_syncing();
        if self.pending.is_empty() {
            // The group before failed, and took this one with it.
            return;
        }
        let handles: Vec<File> = match self
            .touched
            .values()
            .map(|t| t.file.try_clone())
            .collect::<std::io::Result<_>>()
        {
            Ok(h) => h,
            Err(e) => {
                self.fail_groups(None, &e.into());
                return;
            }
        };
        let dirs: Vec<PathBuf> = self.dirs_to_sync.drain().collect();
        let syncfs_dir = (self.config.sync == SyncMode::Syncfs).then(|| self.data_dir.clone());
        let (tx, done) = mpsc::channel();
        let delay = self.sync_delay;
        let job = move || {
            let started = std::time::Instant::now();
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            let result = match &syncfs_dir {
                Some(dir) => syncfs(dir),
                None => sync_files_parallel(&handles.iter().collect::<Vec<_>>()),
            }
            .and_then(|()| Ok(dirs.iter().try_for_each(|d| files::sync_dir(d))?))
            .map(|()| started.elapsed().as_micros() as u64);
            let _ = tx.send(result);
        };
        if let Err(e) = std::thread::Builder::new()
            .name("store-sync".into())
            .spawn(job)
        {
            self.fail_groups(None, &e.into());
            return;
        }
        self.syncing = Some(SyncingGroup {
            pending: std::mem::take(&mut self.pending),
            touched: std::mem::take(&mut self.touched),
            done,
        });
        self.pending_bytes = 0;
    }

    /// Puts the connection back to `synchronous=FULL` after a relaxed beside batch.
    fn full_sync(&mut self) -> Result<()> {
        if self.sync_relaxed {
            self.conn.pragma_update(None, "synchronous", "FULL")?;
            self.sync_relaxed = false;
        }
        Ok(())
    }

    /// Commits the syncing group if its sync has ended; never waits.
    fn poll_syncing(&mut self) {
        let ended = match &self.syncing {
            Some(g) => match g.done.try_recv() {
                Ok(r) => Some(r),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => Some(Err(Error::internal(
                    "the sync thread ended without a result",
                ))),
            },
            None => None,
        };
        if let Some(r) = ended {
            let g = self.syncing.take().expect("checked above");
            self.complete(g, r);
        }
    }

    /// Waits for the syncing group's sync, then commits it.
    fn finish_syncing(&mut self) {
        if let Some(g) = self.syncing.take() {
            let r = g
                .done
                .recv()
                .unwrap_or_else(|_| Err(Error::internal("the sync thread ended without a result")));
            self.complete(g, r);
        }
    }

    /// A synced group: one SQLite transaction, then every ack. If the sync or the commit
    /// failed, nothing of it (nor of the group written behind it) is acknowledged or kept.
    fn complete(&mut self, g: SyncingGroup, synced: Result<u64>) {
        let commit_started = std::time::Instant::now();
        let result = synced.and_then(|sync_us| {
            self.commit_group(&g.pending, &g.touched)
                .map(|server_time_us| (server_time_us, sync_us))
        });
        match result {
            Ok((server_time_us, sync_us)) => {
                if let Ok(mut s) = self.stats.lock() {
                    s.record(g.pending.len(), sync_us, commit_started.elapsed());
                }
                for mut p in g.pending {
                    p.row.server_time_us = server_time_us;
                    if let Some(recent) = &self.recent {
                        recent.put(p.row.stream_id, p.row.file_id, p.row.file_offset, p.bytes);
                    }
                    let _ = self
                        .events
                        .send(StoreEvent::FragmentPersisted(p.row.clone()));
                    let _ = p.ack.send(Ok(p.row));
                }
            }
            Err(e) => self.fail_groups(Some(g), &e),
        }
    }

    /// After a failed sync or commit: the failed group and the pending one written after it
    /// get the error, and every file either touched is cut back to where the first of them
    /// started, so nothing of either survives anywhere.
    fn fail_groups(&mut self, failed: Option<SyncingGroup>, e: &Error) {
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut touched = std::mem::take(&mut self.touched);
        let mut acks: Vec<Pending> = Vec::new();
        if let Some(g) = failed {
            // The earlier group's starting lengths win: they are the shorter ones.
            touched.extend(g.touched);
            acks.extend(g.pending);
        }
        acks.extend(pending);
        tracing::error!(error = %e, fragments = acks.len(), "commit group failed; nothing in it was acknowledged");
        self.undo_touched(touched);
        for p in acks {
            let _ = p.ack.send(Err(e.clone()));
        }
    }

    /// One transaction for the whole group; returns the server time given to its fragments.
    fn commit_group(
        &mut self,
        pending: &[Pending],
        touched: &HashMap<i64, Touched>,
    ) -> Result<i64> {
        self.full_sync()?;
        let server_time_us = self.clock.now_us();
        let tx = self.conn.transaction()?;
        {
            let mut new_file = tx
                .prepare_cached("INSERT INTO files (id, stream_id, created_us) VALUES (?, ?, ?)")?;
            for (file_id, t) in touched {
                if t.new_file {
                    new_file.execute(params![file_id, t.stream_id, server_time_us])?;
                }
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO fragments (stream_id, number, session_id, init_id, producer_start_us, \
                 duration_us, server_time_us, media_time, timescale, keyframe, sample_count, \
                 file_id, file_offset, size_bytes, segment_start, discontinuity, segment_seq, \
                 disc_seq, has_video) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            )?;
            let mut totals: HashMap<i64, (i64, i64, i64, i64, i64, i64)> = HashMap::new();
            for p in pending {
                let r = &p.row;
                insert.execute(params![
                    r.stream_id,
                    r.number,
                    r.session_id,
                    r.init_id,
                    r.producer_start_us,
                    r.duration_us,
                    server_time_us,
                    r.media_time,
                    r.timescale,
                    r.keyframe,
                    r.sample_count,
                    r.file_id,
                    r.file_offset,
                    r.size_bytes,
                    r.segment_start,
                    r.discontinuity,
                    r.segment_seq,
                    r.disc_seq,
                    r.has_video
                ])?;
                let t = totals.entry(r.stream_id).or_insert((
                    0,
                    0,
                    r.producer_start_us,
                    p.end_us,
                    r.number,
                    r.init_id,
                ));
                t.0 += 1;
                t.1 += r.size_bytes;
                t.2 = t.2.min(r.producer_start_us);
                t.3 = t.3.max(p.end_us);
                if r.number >= t.4 {
                    t.4 = r.number;
                    t.5 = r.init_id;
                }
            }
            let mut update = tx.prepare_cached(
                "UPDATE streams SET fragment_count = fragment_count + ?, \
                 total_bytes = total_bytes + ?, \
                 first_producer_us = COALESCE(first_producer_us, ?), \
                 last_end_us = MAX(COALESCE(last_end_us, ?), ?), \
                 last_number = MAX(last_number, ?), last_init_id = ? WHERE id = ?",
            )?;
            for (stream_id, (count, bytes, first, end, number, init)) in totals {
                update.execute(params![
                    count, bytes, first, end, end, number, init, stream_id
                ])?;
            }
            update_spans(&tx, pending)?;
        }
        tx.commit()?;
        Ok(server_time_us)
    }

    /// After a failed group: cut every touched file back to where the group started, and make
    /// the streams reload their cursors, so nothing of the group survives anywhere.
    fn undo_touched(&mut self, touched: HashMap<i64, Touched>) {
        for (file_id, t) in touched {
            let path = files::file_path(&self.data_dir, t.stream_id, file_id);
            if t.new_file {
                let _ = std::fs::remove_file(&path);
            } else if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                let _ = f.set_len(t.len_before);
                let _ = f.sync_all();
            }
            self.cursors.remove(&t.stream_id);
        }
        self.dirs_to_sync.clear();
    }
}

/// A span being extended or started by this group.
struct SpanAcc {
    first_number: i64,
    last_number: i64,
    start_us: i64,
    end_us: i64,
    fragments: i64,
    bytes: i64,
    /// Whether the row exists already (update) or not (insert).
    stored: bool,
}

/// Extends each stream's newest span with the group's fragments, or starts new spans where
/// producer time jumps by more than [`DISCONTINUITY_GAP_US`].
fn update_spans(tx: &rusqlite::Transaction<'_>, pending: &[Pending]) -> Result<()> {
    let mut open: HashMap<i64, SpanAcc> = HashMap::new();
    let mut done: Vec<(i64, SpanAcc)> = Vec::new();
    let mut newest = tx.prepare_cached(
        "SELECT first_number, last_number, start_us, end_us, fragments, bytes FROM spans \
         WHERE stream_id = ? ORDER BY first_number DESC LIMIT 1",
    )?;
    for p in pending {
        let r = &p.row;
        if let std::collections::hash_map::Entry::Vacant(slot) = open.entry(r.stream_id) {
            let found = newest
                .query_row([r.stream_id], |x| {
                    Ok(SpanAcc {
                        first_number: x.get(0)?,
                        last_number: x.get(1)?,
                        start_us: x.get(2)?,
                        end_us: x.get(3)?,
                        fragments: x.get(4)?,
                        bytes: x.get(5)?,
                        stored: true,
                    })
                })
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            if let Some(acc) = found {
                slot.insert(acc);
            }
        }
        let continues = open
            .get(&r.stream_id)
            .is_some_and(|a| r.producer_start_us - a.end_us <= DISCONTINUITY_GAP_US);
        if continues {
            let a = open.get_mut(&r.stream_id).expect("checked above");
            a.last_number = r.number;
            a.end_us = a.end_us.max(r.producer_end_us());
            a.fragments += 1;
            a.bytes += r.size_bytes;
        } else {
            let fresh = SpanAcc {
                first_number: r.number,
                last_number: r.number,
                start_us: r.producer_start_us,
                end_us: r.producer_end_us(),
                fragments: 1,
                bytes: r.size_bytes,
                stored: false,
            };
            if let Some(old) = open.insert(r.stream_id, fresh) {
                done.push((r.stream_id, old));
            }
        }
    }
    done.extend(open);
    let mut insert = tx.prepare_cached(
        "INSERT INTO spans (stream_id, first_number, last_number, start_us, end_us, fragments, \
         bytes) VALUES (?,?,?,?,?,?,?)",
    )?;
    let mut update = tx.prepare_cached(
        "UPDATE spans SET last_number = ?, end_us = ?, fragments = ?, bytes = ? \
         WHERE stream_id = ? AND first_number = ?",
    )?;
    for (stream_id, a) in done {
        if a.stored {
            update.execute(params![
                a.last_number,
                a.end_us,
                a.fragments,
                a.bytes,
                stream_id,
                a.first_number
            ])?;
        } else {
            insert.execute(params![
                stream_id,
                a.first_number,
                a.last_number,
                a.start_us,
                a.end_us,
                a.fragments,
                a.bytes
            ])?;
        }
    }
    Ok(())
}

/// Starts writing a fragment's bytes to the device now, without waiting, so the group's
/// `fdatasync` finds most of them already written: the disk works while the writer takes the
/// next fragments instead of all at once at the end of the group. Only a hint; durability still
/// comes from the group's sync.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// When a stream's open file is closed and a new one started (`storage.file_roll_*`).
#[derive(Clone, Copy)]
struct RollLimits {
    bytes: i64,
    age_us: i64,
}

impl RollLimits {
    fn of(config: &StorageConfig) -> RollLimits {
        RollLimits {
            bytes: i64::try_from(config.file_roll_bytes).unwrap_or(i64::MAX),
            age_us: i64::try_from(config.file_roll_secs.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX),
        }
    }

    /// Whether `f` is full or old enough to close, by the stream's own share of the limits.
    fn due(self, stream_id: i64, f: &OpenFile, now_us: i64) -> bool {
        i64::try_from(f.len).unwrap_or(i64::MAX) >= roll_spread(stream_id, self.bytes)
            || now_us.saturating_sub(f.created_us) >= roll_spread(stream_id, self.age_us)
    }
}

/// A stream's own share of a roll limit (`storage.file_roll_secs` or `file_roll_bytes`): between
/// 7/8 of it and all of it, fixed per stream. Cameras started together (a server restart, a site
/// powering up) would otherwise roll their files in the same second every period, and a new
/// file's first sync (its block allocation and directory entry) costs several times an append's:
/// a thousand of them in one commit group is a stall of every camera's acks.
fn roll_spread(stream_id: i64, limit: i64) -> i64 {
    // A multiplicative hash of the id: neighbouring ids land far apart.
    let mixed = (stream_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let eighth = limit / 8;
    if eighth <= 0 {
        return limit;
    }
    limit - (mixed % (eighth as u64 + 1)) as i64
}

/// `fdatasync` of every file, spread over up to [`SYNC_THREADS`] threads; the first error wins.
fn sync_files_parallel(files: &[&File]) -> Result<()> {
    if files.len() <= 1 {
        for f in files {
            f.sync_data()?;
        }
        return Ok(());
    }
    let per_thread = files.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().try_for_each(|f| f.sync_data())))
            .collect();
        for h in handles {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("sync thread panicked")))?;
        }
        Ok(())
    })
}

fn shutting_down() -> Error {
    Error::unavailable("the server is shutting down; reconnect and resend")
}

/// `syncfs(2)` on the filesystem holding `dir`: one call makes every written byte on it durable.
fn syncfs(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which stays open for the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

pub(crate) fn shutdown_error() -> Error {
    shutting_down()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thousand streams started together roll spread over the last eighth of the period:
    /// never later than the limit, never sooner than 7/8 of it, and no second of a 600 s
    /// period sees more than a few of them.
    #[test]
    fn rolls_of_streams_started_together_are_spread() {
        let limit_us = 600 * 1_000_000;
        let mut per_second = std::collections::BTreeMap::new();
        for id in 1..=1000 {
            let at = roll_spread(id, limit_us);
            assert!(
                at <= limit_us && at >= limit_us - limit_us / 8,
                "{id}: {at}"
            );
            *per_second.entry(at / 1_000_000).or_insert(0) += 1;
        }
        let busiest = per_second.values().max().copied().unwrap_or(0);
        assert!(
            per_second.len() >= 60,
            "{} distinct seconds",
            per_second.len()
        );
        assert!(busiest <= 40, "{busiest} rolls in one second");
        assert_eq!(
            roll_spread(5, 7),
            7,
            "limits too small to spread stay as they are"
        );
    }

    fn frag(
        session_id: i64,
        start_ms: i64,
        dur_ms: i64,
        keyframe: bool,
        video: bool,
    ) -> NewFragment {
        NewFragment {
            stream_id: 1,
            session_id,
            init_id: 1,
            producer_start_us: start_ms * 1000,
            duration_us: dur_ms * 1000,
            end_us: (start_ms + dur_ms) * 1000,
            media_time: 0,
            timescale: 1000,
            keyframe,
            has_video: video,
            sample_count: 1,
            bytes: bytes::Bytes::new(),
        }
    }

    /// Runs the structure rule over a sequence, as the writer does; returns segment_start flags.
    fn segment_starts(frags: &[NewFragment]) -> Vec<bool> {
        let mut prev: Option<PrevFragment> = None;
        frags
            .iter()
            .map(|f| {
                let (_, start, segment_seq, disc_seq) = structure_after(prev, f);
                let end_us = f.end_us;
                prev = Some(PrevFragment {
                    session_id: f.session_id,
                    init_id: f.init_id,
                    end_us: prev.map_or(end_us, |p| p.end_us.max(end_us)),
                    segment_seq,
                    disc_seq,
                    segment_has_video: f.has_video
                        || (!start && prev.is_some_and(|p| p.segment_has_video)),
                });
                start
            })
            .collect()
    }

    /// One moof per track (mp4mux): the session begins with an audio fragment; that segment
    /// takes in the first video keyframe, and later audio fragments never start a segment nor
    /// make a discontinuity, though each starts before the other track's end.
    #[test]
    fn per_track_fragments_segment_at_video_keyframes() {
        let mut frags = vec![frag(1, 0, 10_000, true, true)]; // a previous session
        for i in 0..3 {
            frags.push(frag(2, 10_000 + i * 980, 980, false, false));
            frags.push(frag(2, 10_000 + i * 1000, 1000, true, true));
        }
        assert_eq!(
            segment_starts(&frags),
            [true, true, false, false, true, false, true]
        );
        let mut prev = None;
        for f in &frags[..2] {
            let (disc, ..) = structure_after(prev, f);
            prev = Some(PrevFragment {
                session_id: f.session_id,
                init_id: f.init_id,
                end_us: f.end_us,
                segment_seq: 0,
                disc_seq: 0,
                segment_has_video: true,
            });
            assert_eq!(
                disc,
                f.session_id == 2,
                "only the new session is a discontinuity"
            );
        }
        let (disc, ..) = structure_after(prev, &frags[2]);
        assert!(
            !disc,
            "a video fragment starting before the audio's end is no gap"
        );
    }

    /// In a stream without video every fragment starts a segment; a forward jump past the gap
    /// tolerance is a discontinuity.
    #[test]
    fn audio_only_and_gaps() {
        let frags = [
            frag(1, 0, 1000, true, false),
            frag(1, 1000, 1000, true, false),
        ];
        assert_eq!(segment_starts(&frags), [true, true]);
        let prev = PrevFragment {
            session_id: 1,
            init_id: 1,
            end_us: 2_000_000,
            segment_seq: 1,
            disc_seq: 0,
            segment_has_video: false,
        };
        let (disc, start, seq, disc_seq) =
            structure_after(Some(prev), &frag(1, 3000, 1000, true, false));
        assert_eq!((disc, start, seq, disc_seq), (true, true, 2, 1));
    }
}
