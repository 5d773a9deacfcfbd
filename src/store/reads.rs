//! The index reads the rest of the program makes, as methods of the handle. Each is one
//! function of `queries.rs` (where its SQL and its contract are) run on a pooled read connection
//! off the async threads ([`Store::read`]); grouped here by what they answer, so the handle's
//! own file holds only the handle. Bytes are not read here: see `reader.rs`.

use super::queries::{self, FragmentQuery};
use super::rows::{FragmentRow, InitRow, SessionRow, SpanRow, StreamRow};
use super::Store;
use crate::error::{Error, Result};

/// Streams.
impl Store {
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

    /// The name of a live stream by id (events carry ids).
    pub async fn stream_name(&self, stream_id: i64) -> Result<Option<String>> {
        self.read(move |c| queries::stream_name(c, stream_id)).await
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
}

/// Fragments by number or time, and recorded spans.
impl Store {
    pub async fn fragments(&self, stream_id: i64, q: FragmentQuery) -> Result<Vec<FragmentRow>> {
        self.read(move |c| queries::fragments(c, stream_id, &q))
            .await
    }

    pub async fn fragment(&self, stream_id: i64, number: i64) -> Result<Option<FragmentRow>> {
        self.read(move |c| queries::fragment(c, stream_id, number))
            .await
    }

    pub async fn latest_fragment(&self, stream_id: i64) -> Result<Option<FragmentRow>> {
        self.read(move |c| queries::latest_fragment(c, stream_id))
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
}

/// Segments (runs of fragments from a segment start, as the writer marked them).
impl Store {
    pub async fn fragments_from_segment(
        &self,
        stream_id: i64,
        from_seq: i64,
        limit: u32,
    ) -> Result<Vec<FragmentRow>> {
        self.read(move |c| queries::fragments_from_segment(c, stream_id, from_seq, limit))
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
}

/// Inits and sessions. Init bytes are small and live in SQLite, so they are read here rather
/// than through the byte reader.
impl Store {
    pub async fn init(&self, stream_id: i64, init_id: i64) -> Result<Option<InitRow>> {
        self.read(move |c| queries::init(c, stream_id, init_id))
            .await
    }

    pub async fn init_bytes(&self, stream_id: i64, init_id: i64) -> Result<Option<bytes::Bytes>> {
        self.read(move |c| queries::init_bytes(c, stream_id, init_id))
            .await
    }

    pub async fn sessions(&self, stream_id: i64, limit: u32) -> Result<Vec<SessionRow>> {
        self.read(move |c| queries::sessions(c, stream_id, limit))
            .await
    }
}
