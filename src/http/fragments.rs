//! Reading the log back: fragment rows by time, and the raw bytes of fragments and inits.

use super::params::{self, Params};
use super::AppState;
use crate::error::{Error, Result};
use crate::ingest::fragment_json;
use crate::store::{FragmentQuery, TimeKind};
use crate::stream_name::validate_stream_name;
use crate::timefmt::TimeSpec;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
) -> Result<Json<Value>> {
    validate_stream_name(&name)?;
    let time = match q.get("time").map(String::as_str) {
        None | Some("producer") => TimeKind::Producer,
        Some("server") => TimeKind::Server,
        Some(other) => {
            return Err(Error::invalid(format!(
                "'time' must be 'producer' or 'server'; got '{other}'"
            )))
        }
    };
    let start_arg = params::time(&q, "start")?;
    let end_arg = params::time(&q, "end")?;
    params::check_order(
        start_arg.and_then(|t| t.point()),
        end_arg.and_then(|t| t.point()),
    )?;
    let limit = params::limit(&q, 100, 1000)?;
    let after = params::int::<i64>(&q, "after")?;
    let stream = state.store.require_stream(&name).await?;
    // `earliest` is no bound at all, whichever time is meant (producer or server).
    let now_us = state.store.now_us();
    let bound = |t: Option<TimeSpec>| match t {
        None | Some(TimeSpec::Earliest) => None,
        Some(t) => Some(t.resolve(None, now_us)),
    };
    let (start_us, end_us) = (bound(start_arg), bound(end_arg));
    params::check_order(start_us, end_us)?;
    let rows = state
        .store
        .fragments(
            stream.id,
            FragmentQuery {
                time,
                start_us,
                end_us,
                after,
                limit,
            },
        )
        .await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.number))
        .flatten();
    let out: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = fragment_json(r);
            v["media_time"] = r.media_time.into();
            v["timescale"] = r.timescale.into();
            v["url"] = format!("/api/v1/streams/{name}/fragments/{}", r.number).into();
            v
        })
        .collect();
    Ok(Json(json!({"fragments": out, "next": next})))
}

fn parse_number(what: &str, text: &str) -> Result<i64> {
    text.parse::<i64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| Error::invalid(format!("{what} must be a positive integer; got '{text}'")))
}

pub async fn bytes(
    State(state): State<AppState>,
    Path((name, number)): Path<(String, String)>,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let number = parse_number("the fragment number", &number)?;
    let stream = state.store.require_stream(&name).await?;
    let row = state
        .store
        .fragment(stream.id, number)
        .await?
        .ok_or_else(|| Error::not_found(format!("stream '{name}' has no fragment {number}")))?;
    let data = state.store.fragment_bytes(&row).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "video/iso.segment".to_string()),
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_string(),
            ),
            (
                header::HeaderName::from_static("x-tapedeck-init"),
                row.init_id.to_string(),
            ),
        ],
        data,
    )
        .into_response())
}

pub async fn init(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let id = parse_number("the init id", id.trim_end_matches(".mp4"))?;
    let stream = state.store.require_stream(&name).await?;
    let data = state
        .store
        .init_bytes(stream.id, id)
        .await?
        .ok_or_else(|| Error::not_found(format!("stream '{name}' has no init {id}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "video/mp4"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        data,
    )
        .into_response())
}
