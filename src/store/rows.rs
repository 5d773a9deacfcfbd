//! Index rows as the rest of the program sees them, and their mapping from SQL.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamRow {
    pub id: i64,
    pub name: String,
    pub created_us: i64,
    pub retention_hours: u64,
    pub retention_bytes: Option<u64>,
    pub tags: BTreeMap<String, String>,
    pub fragment_count: i64,
    pub total_bytes: i64,
    pub first_producer_us: Option<i64>,
    pub last_end_us: Option<i64>,
    pub last_number: i64,
    pub last_init_id: Option<i64>,
    /// Bytes of this stream's objects in the bucket (0 without an object tier).
    pub remote_bytes: i64,
    /// Bytes of fragments whose only copy is in the bucket: `total_bytes - remote_only_bytes`
    /// are on the local disk.
    pub remote_only_bytes: i64,
}

impl StreamRow {
    /// Bytes of this stream's fragments on the local disk.
    pub fn local_bytes(&self) -> i64 {
        (self.total_bytes - self.remote_only_bytes).max(0)
    }
}

pub(crate) const STREAM_COLUMNS: &str = "id, name, created_us, retention_hours, tags, \
     fragment_count, total_bytes, first_producer_us, last_end_us, last_number, last_init_id, \
     retention_bytes, remote_bytes, remote_only_bytes";

impl StreamRow {
    pub(crate) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StreamRow> {
        let tags: String = r.get(4)?;
        Ok(StreamRow {
            id: r.get(0)?,
            name: r.get(1)?,
            created_us: r.get(2)?,
            retention_hours: r.get::<_, i64>(3)?.max(0) as u64,
            tags: serde_json::from_str(&tags).unwrap_or_default(),
            fragment_count: r.get(5)?,
            total_bytes: r.get(6)?,
            first_producer_us: r.get(7)?,
            last_end_us: r.get(8)?,
            last_number: r.get(9)?,
            last_init_id: r.get(10)?,
            retention_bytes: r.get::<_, Option<i64>>(11)?.map(|b| b.max(0) as u64),
            remote_bytes: r.get(12)?,
            remote_only_bytes: r.get(13)?,
        })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FragmentRow {
    pub stream_id: i64,
    pub number: i64,
    pub session_id: i64,
    pub init_id: i64,
    pub producer_start_us: i64,
    pub duration_us: i64,
    pub server_time_us: i64,
    pub media_time: i64,
    pub timescale: i64,
    pub keyframe: bool,
    pub sample_count: i64,
    pub file_id: i64,
    pub file_offset: i64,
    pub size_bytes: i64,
    pub segment_start: bool,
    pub discontinuity: bool,
    pub segment_seq: i64,
    pub disc_seq: i64,
    /// It holds video samples (see `NewFragment::has_video`).
    pub has_video: bool,
}

pub(crate) const FRAGMENT_COLUMNS: &str = "stream_id, number, session_id, init_id, \
     producer_start_us, duration_us, server_time_us, media_time, timescale, keyframe, \
     sample_count, file_id, file_offset, size_bytes, segment_start, discontinuity, segment_seq, \
     disc_seq, has_video";

impl FragmentRow {
    pub fn producer_end_us(&self) -> i64 {
        self.producer_start_us + self.duration_us
    }

    pub(crate) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FragmentRow> {
        Ok(FragmentRow {
            stream_id: r.get(0)?,
            number: r.get(1)?,
            session_id: r.get(2)?,
            init_id: r.get(3)?,
            producer_start_us: r.get(4)?,
            duration_us: r.get(5)?,
            server_time_us: r.get(6)?,
            media_time: r.get(7)?,
            timescale: r.get(8)?,
            keyframe: r.get(9)?,
            sample_count: r.get(10)?,
            file_id: r.get(11)?,
            file_offset: r.get(12)?,
            size_bytes: r.get(13)?,
            segment_start: r.get(14)?,
            discontinuity: r.get(15)?,
            segment_seq: r.get(16)?,
            disc_seq: r.get(17)?,
            has_video: r.get(18)?,
        })
    }
}

/// Track facts kept with an init, as JSON, so describe and playlists need not re-parse boxes.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TrackSummary {
    pub track_id: u32,
    pub kind: String,
    pub codec: String,
    pub timescale: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InitRow {
    pub id: i64,
    pub stream_id: i64,
    pub codecs: String,
    pub tracks: Vec<TrackSummary>,
    pub size_bytes: i64,
    pub created_us: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionRow {
    pub id: i64,
    pub stream_id: i64,
    pub kind: String,
    pub remote: Option<String>,
    pub started_us: i64,
    pub ended_us: Option<i64>,
    pub end_reason: Option<String>,
}

/// A fragment on its way to the log: the bytes as they will be stored (tfdt already on the
/// stream timeline) and the facts for its index row.
#[derive(Debug, Clone)]
pub struct NewFragment {
    pub stream_id: i64,
    pub session_id: i64,
    pub init_id: i64,
    /// Start and duration of its reference track: the video when it holds video samples,
    /// else its own first track (with one moof per track, an audio fragment covers its audio).
    /// So the fragments of a video track tile the timeline exactly, whatever the audio does.
    pub producer_start_us: i64,
    pub duration_us: i64,
    /// Where the media of all its tracks ends, in producer time (at least start + duration).
    pub end_us: i64,
    pub media_time: i64,
    pub timescale: i64,
    /// A segment may start here (see `FragmentFacts::starts_with_keyframe`).
    pub keyframe: bool,
    /// It holds video samples.
    pub has_video: bool,
    pub sample_count: i64,
    pub bytes: bytes::Bytes,
}

/// A recorded span: a run of fragments without a gap in producer time.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SpanRow {
    pub first_number: i64,
    pub last_number: i64,
    pub start_us: i64,
    pub end_us: i64,
    pub fragments: i64,
    pub bytes: i64,
}

/// A range protected from expiry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HoldRow {
    pub id: i64,
    pub stream_id: i64,
    pub start_us: i64,
    pub end_us: i64,
    pub reason: String,
    pub created_us: i64,
}

impl HoldRow {
    pub fn covers(&self, start_us: i64, end_us: i64) -> bool {
        start_us < self.end_us && end_us > self.start_us
    }
}
