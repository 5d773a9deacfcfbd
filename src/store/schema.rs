//! The SQLite schema and its migrations. `PRAGMA user_version` holds the number of migrations
//! applied; each migration runs once, in its own transaction, in order. Never edit a released
//! migration: add a new one.

use crate::error::{Error, Result};
use rusqlite::Connection;

/// Migration 1: the fragment log index.
const V1: &str = r#"
-- One row per stream name ever created. A deleted stream keeps its row (with deleted_us set)
-- until its fragments and files are gone, so a new stream with the same name gets a new id and
-- starts empty.
CREATE TABLE streams (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL,
    created_us        INTEGER NOT NULL,            -- server clock, µs since the Unix epoch
    retention_hours   INTEGER NOT NULL,            -- 0 = live only (keep the live buffer)
    retention_bytes   INTEGER,                     -- optional per-stream byte quota
    tags              TEXT NOT NULL DEFAULT '{}',  -- JSON object, string -> string
    deleted_us        INTEGER,                     -- set by delete; cleanup follows
    -- Running totals kept in the same transaction as the fragment rows they count, so describe
    -- never scans the fragments of a stream.
    fragment_count    INTEGER NOT NULL DEFAULT 0,
    total_bytes       INTEGER NOT NULL DEFAULT 0,
    first_producer_us INTEGER,                     -- producer start of the oldest fragment
    last_end_us       INTEGER,                     -- producer end of the newest fragment
    last_number       INTEGER NOT NULL DEFAULT 0,  -- fragment numbers are never reused
    last_init_id      INTEGER
);
CREATE UNIQUE INDEX streams_live_name ON streams(name) WHERE deleted_us IS NULL;

-- Init segments (ftyp+moov), stored once per distinct content per stream.
CREATE TABLE inits (
    id          INTEGER PRIMARY KEY,
    stream_id   INTEGER NOT NULL REFERENCES streams(id),
    sha256      BLOB NOT NULL,
    bytes       BLOB NOT NULL,
    codecs      TEXT NOT NULL,     -- RFC 6381 list, e.g. "avc1.64001e,mp4a.40.2"
    tracks      TEXT NOT NULL,     -- JSON array of track facts (kind, timescale, codec, size)
    created_us  INTEGER NOT NULL,
    UNIQUE (stream_id, sha256)
);

-- One producer connection, or one series of segment-file uploads.
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    stream_id   INTEGER NOT NULL REFERENCES streams(id),
    kind        TEXT NOT NULL,     -- 'upload' | 'segments'
    remote      TEXT,              -- peer address as seen by the server
    started_us  INTEGER NOT NULL,
    ended_us    INTEGER,
    end_reason  TEXT
);
CREATE INDEX sessions_stream ON sessions(stream_id, id);

-- Append-only fragment files. A row is committed in the same transaction as the first fragment
-- that lives in the file, so a file without a row is garbage from a crash.
CREATE TABLE files (
    id          INTEGER PRIMARY KEY,
    stream_id   INTEGER NOT NULL REFERENCES streams(id),
    created_us  INTEGER NOT NULL
);
CREATE INDEX files_stream ON files(stream_id, id);

-- The fragment log. A row exists only once its bytes are durable (see store/mod.rs).
CREATE TABLE fragments (
    stream_id         INTEGER NOT NULL,
    number            INTEGER NOT NULL,   -- per stream from 1, strictly increasing
    session_id        INTEGER NOT NULL,
    init_id           INTEGER NOT NULL,
    producer_start_us INTEGER NOT NULL,   -- on the stream timeline (the rewritten tfdt)
    duration_us       INTEGER NOT NULL,   -- of the reference (video, else first) track
    server_time_us    INTEGER NOT NULL,   -- when the fragment became durable
    media_time        INTEGER NOT NULL,   -- the producer's original tfdt of the reference track
    timescale         INTEGER NOT NULL,   -- of the reference track
    keyframe          INTEGER NOT NULL,   -- 1 when the fragment starts with a video sync sample
    sample_count      INTEGER NOT NULL,   -- all tracks
    file_id           INTEGER NOT NULL,
    file_offset       INTEGER NOT NULL,
    size_bytes        INTEGER NOT NULL,
    -- Playback structure, decided once at ingest from the previous fragment of the stream:
    -- a discontinuity starts at a new session, a new init or a jump in producer time; a segment
    -- starts at a video keyframe or a discontinuity. The counters give HLS media sequence and
    -- discontinuity sequence numbers that never change, even after retention removes rows.
    segment_start     INTEGER NOT NULL,   -- 1 when this fragment starts a segment
    discontinuity     INTEGER NOT NULL,   -- 1 when this fragment starts a discontinuity
    segment_seq       INTEGER NOT NULL,   -- segments started before and by this fragment, minus 1
    disc_seq          INTEGER NOT NULL,   -- discontinuities started before and by this fragment
    PRIMARY KEY (stream_id, number)
) WITHOUT ROWID;
CREATE INDEX fragments_producer ON fragments(stream_id, producer_start_us);
CREATE INDEX fragments_server ON fragments(stream_id, server_time_us);
CREATE INDEX fragments_file ON fragments(file_id, file_offset);
CREATE INDEX fragments_segment ON fragments(stream_id, segment_seq);
-- Oldest media across all streams first, for the global disk budget.
CREATE INDEX fragments_age ON fragments(server_time_us, stream_id, number);

-- Ranges protected from every kind of expiry until the hold is removed.
CREATE TABLE holds (
    id          INTEGER PRIMARY KEY,
    stream_id   INTEGER NOT NULL REFERENCES streams(id),
    start_us    INTEGER NOT NULL,   -- producer time
    end_us      INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    created_us  INTEGER NOT NULL
);
CREATE INDEX holds_stream ON holds(stream_id, start_us);

-- Recorded spans: maximal runs of fragments without a gap in producer time (see
-- writer::DISCONTINUITY_GAP_US), kept in the same transaction as the fragments, so a timeline
-- over months of recording reads a handful of rows instead of millions.
CREATE TABLE spans (
    stream_id     INTEGER NOT NULL,
    first_number  INTEGER NOT NULL,
    last_number   INTEGER NOT NULL,
    start_us      INTEGER NOT NULL,   -- producer time
    end_us        INTEGER NOT NULL,
    fragments     INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    PRIMARY KEY (stream_id, first_number)
) WITHOUT ROWID;
CREATE INDEX spans_end ON spans(stream_id, end_us);
"#;

/// Migration 2: whether a fragment holds video samples. Producers that write one moof per track
/// (GStreamer `mp4mux`, ffmpeg `separate_moof`) interleave audio-only fragments with video ones;
/// a segment's duration is measured by its video, so an audio fragment that runs past the next
/// keyframe does not stretch it. Rows from before default to 1, which is how they were measured.
const V2: &str = r#"
ALTER TABLE fragments ADD COLUMN has_video INTEGER NOT NULL DEFAULT 1;
"#;

/// Migration 3: sources, where tapedeck pulls a stream from (store/sources.rs). Keyed by stream
/// id without a foreign key: a stream's delete removes its source in the same step (so the
/// purge of the stream row is never blocked by it).
const V3: &str = r#"
CREATE TABLE sources (
    stream_id   INTEGER PRIMARY KEY,
    spec        TEXT NOT NULL,     -- JSON {"rtsp": {url, transport, username, password}}
    updated_us  INTEGER NOT NULL
);
"#;

/// Migration 4: the object-storage tier (`store/object/`). Where each fragment file's bytes
/// live, the objects left to delete, and the running totals that describe reports without
/// scanning fragments. With the tier off nothing here changes: every file stays `local = 1`
/// with no object.
const V4: &str = r#"
-- Set in one transaction once the object is uploaded and verified (protocol step 3); a file
-- whose object_key is NULL is only on the local disk.
ALTER TABLE files ADD COLUMN object_key TEXT;      -- key in the bucket, prefix included
ALTER TABLE files ADD COLUMN object_bytes INTEGER; -- size verified after the upload
ALTER TABLE files ADD COLUMN object_md5 BLOB;      -- MD5 of the bytes uploaded (what the ETag was checked against)
ALTER TABLE files ADD COLUMN uploaded_us INTEGER;  -- server clock when recorded
-- 0 once the local copy is deleted (protocol step 4): set before the unlink, so a crash in
-- between leaves a file that startup recovery finishes deleting.
ALTER TABLE files ADD COLUMN local INTEGER NOT NULL DEFAULT 1;
CREATE INDEX files_not_uploaded ON files(id) WHERE object_key IS NULL;
CREATE INDEX files_local_uploaded ON files(uploaded_us) WHERE local = 1 AND object_key IS NOT NULL;

-- Bytes in the bucket per stream (whole objects, as billed), and bytes of fragments whose only
-- copy is in the bucket: local bytes are total_bytes - remote_only_bytes.
ALTER TABLE streams ADD COLUMN remote_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE streams ADD COLUMN remote_only_bytes INTEGER NOT NULL DEFAULT 0;

-- Objects whose files rows are gone (retention, stream delete, repair): rows are removed
-- first, the objects after, by the uploader task; a crash in between leaves the key here.
CREATE TABLE object_garbage (
    object_key  TEXT PRIMARY KEY,
    queued_us   INTEGER NOT NULL   -- wall clock when the files row went
);

-- Every path that removes a files row (retention, purge, recovery, check --repair) queues its
-- object, and keeps the stream's totals right, without each having to remember to.
CREATE TRIGGER files_object_garbage AFTER DELETE ON files WHEN OLD.object_key IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO object_garbage (object_key, queued_us)
        VALUES (OLD.object_key, CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));
    UPDATE streams SET remote_bytes = remote_bytes - OLD.object_bytes WHERE id = OLD.stream_id;
END;
CREATE TRIGGER fragments_remote_only AFTER DELETE ON fragments
    WHEN (SELECT local FROM files WHERE id = OLD.file_id) = 0
BEGIN
    UPDATE streams SET remote_only_bytes = remote_only_bytes - OLD.size_bytes
        WHERE id = OLD.stream_id;
END;

-- Facts about the store itself: which bucket its objects are in (a data dir pointed at another
-- bucket would find none of them).
CREATE TABLE store_settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
"#;

/// Migration 5: ids are never reused. SQLite gives a new row `MAX(id) + 1`, so purging the
/// newest stream (or its files, inits, sessions) and restarting handed the same ids out again,
/// while object keys (`streams/{stream}/{file}`), the object tier's garbage queue, clip ETags
/// and immutable `inits/{id}` URLs all take an id to name one thing for ever. A garbage delete
/// still queued for a purged stream's object could then remove a new stream's object of the
/// same key. The high water of each table is kept here, raised by every insert; new rows take
/// the next id after it.
const V5: &str = r#"
CREATE TABLE id_high_water (
    name     TEXT PRIMARY KEY,  -- table
    last_id  INTEGER NOT NULL   -- highest id it ever held
);
INSERT INTO id_high_water (name, last_id)
    SELECT 'streams', COALESCE(MAX(id), 0) FROM streams
    UNION ALL SELECT 'files', COALESCE(MAX(id), 0) FROM files
    UNION ALL SELECT 'inits', COALESCE(MAX(id), 0) FROM inits
    UNION ALL SELECT 'sessions', COALESCE(MAX(id), 0) FROM sessions;
CREATE TRIGGER streams_high_water AFTER INSERT ON streams BEGIN UPDATE id_high_water
    SET last_id = NEW.id WHERE name = 'streams' AND last_id < NEW.id; END;
CREATE TRIGGER files_high_water AFTER INSERT ON files BEGIN UPDATE id_high_water
    SET last_id = NEW.id WHERE name = 'files' AND last_id < NEW.id; END;
CREATE TRIGGER inits_high_water AFTER INSERT ON inits BEGIN UPDATE id_high_water
    SET last_id = NEW.id WHERE name = 'inits' AND last_id < NEW.id; END;
CREATE TRIGGER sessions_high_water AFTER INSERT ON sessions BEGIN UPDATE id_high_water
    SET last_id = NEW.id WHERE name = 'sessions' AND last_id < NEW.id; END;
"#;

/// The id a new row of `table` takes (SQL for its `id` value): one past the highest it ever held.
macro_rules! next_id_sql {
    ($table:literal) => {
        concat!(
            "(SELECT last_id + 1 FROM id_high_water WHERE name = '",
            $table,
            "')"
        )
    };
}
pub(crate) use next_id_sql;

const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

/// Connection settings shared by the writer and the readers.
pub fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is durable when it returns, which is what an ack promises.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Brings the database to the newest schema.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(Error::internal(format!(
            "the database schema is version {version}, newer than this tapedeck knows ({}); \
             use a newer tapedeck",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    #[test]
    fn refuses_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(migrate(&mut conn).is_err());
    }
}
