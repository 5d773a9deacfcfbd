//! Saved sources: where tapedeck pulls a stream's media from (an RTSP camera), one row per
//! stream, kept so the pull resumes after a restart. The store keeps the spec as opaque JSON
//! (credentials included: they must survive a restart, and the index is as private as the
//! media); what it means is the `source` module's business.

use super::Store;
use crate::error::Result;
use rusqlite::params;

impl Store {
    /// Saves (or replaces) the source of a live stream.
    pub async fn put_source(&self, stream_id: i64, spec_json: String) -> Result<()> {
        self.exec(move |w| {
            let now = w.now_us();
            w.conn.execute(
                "INSERT INTO sources (stream_id, spec, updated_us) VALUES (?,?,?) \
                 ON CONFLICT (stream_id) DO UPDATE SET spec = excluded.spec, \
                 updated_us = excluded.updated_us",
                params![stream_id, spec_json, now],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn delete_source(&self, stream_id: i64) -> Result<()> {
        self.exec(move |w| {
            w.conn
                .execute("DELETE FROM sources WHERE stream_id = ?", [stream_id])?;
            Ok(())
        })
        .await
    }

    /// Every live stream's source: (stream name, spec JSON), by name.
    pub async fn sources(&self) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT s.name, x.spec FROM sources x JOIN streams s ON s.id = x.stream_id \
                 WHERE s.deleted_us IS NULL ORDER BY s.name",
            )?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}
