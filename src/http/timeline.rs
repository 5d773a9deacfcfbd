//! `GET /api/v1/streams/{name}/timeline?start=&end=&limit=`: recorded spans and the gaps between
//! them, for scrubbing UIs. Spans are kept at ingest, so this reads a few rows even over months.

use super::params::{self, Params};
use super::AppState;
use crate::error::{Error, Result};
use crate::stream_name::validate_stream_name;
use crate::timefmt::{format_us, TimeSpec};
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

fn gap(start_us: i64, end_us: i64) -> Value {
    json!({
        "start": format_us(start_us), "end": format_us(end_us),
        "start_us": start_us, "end_us": end_us, "duration_us": end_us - start_us,
    })
}

pub async fn timeline(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
) -> Result<Json<Value>> {
    validate_stream_name(&name)?;
    let stream = state.store.require_stream(&name).await?;
    let now_us = state.store.now_us();
    let resolve = |t: TimeSpec| t.resolve(stream.first_producer_us, now_us);
    let start_us = params::time(&q, "start")?
        .map(resolve)
        .or(stream.first_producer_us)
        .unwrap_or(0);
    let end_us = params::time(&q, "end")?
        .map(resolve)
        .unwrap_or_else(|| now_us.max(stream.last_end_us.unwrap_or(0)));
    if end_us <= start_us {
        return Err(Error::invalid("'end' must be after 'start'"));
    }
    let limit = params::limit(&q, 10_000, 100_000)?;
    let spans = state
        .store
        .spans(stream.id, start_us, end_us, limit)
        .await?;
    let mut gaps = Vec::new();
    let mut cursor = start_us;
    let mut recorded_us = 0;
    let mut bytes = 0;
    let out: Vec<Value> = spans
        .iter()
        .map(|s| {
            if s.start_us > cursor {
                gaps.push(gap(cursor, s.start_us));
            }
            cursor = cursor.max(s.end_us);
            recorded_us += s.end_us.min(end_us) - s.start_us.max(start_us);
            bytes += s.bytes;
            json!({
                "start": format_us(s.start_us), "end": format_us(s.end_us),
                "start_us": s.start_us, "end_us": s.end_us, "duration_us": s.end_us - s.start_us,
                "fragments": s.fragments, "bytes": s.bytes,
                "first_fragment": s.first_number, "last_fragment": s.last_number,
            })
        })
        .collect();
    let full = spans.len() == limit as usize;
    if !full && cursor < end_us {
        gaps.push(gap(cursor, end_us));
    }
    Ok(Json(json!({
        "stream": name,
        "start": format_us(start_us), "end": format_us(end_us),
        "start_us": start_us, "end_us": end_us,
        "spans": out, "gaps": gaps,
        "recorded_us": recorded_us, "bytes": bytes,
        // More spans follow: ask again with start = next.
        "next": full.then_some(cursor),
    })))
}
