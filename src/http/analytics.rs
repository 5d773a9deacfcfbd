//! The follow feed and server-sent events (built in `analytics`); this maps requests.

use super::limits::{holding, Feed};
use super::params::Params;
use super::AppState;
use crate::analytics::events::{self, Scope};
use crate::analytics::follow;
use crate::error::{Error, Result};
use crate::stream_name::validate_stream_name;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

pub async fn media(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let start = follow::parse_start(q.get("start").map(String::as_str))?;
    let follow_live = match q.get("follow").map(String::as_str) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(o) => {
            return Err(Error::invalid(format!(
                "'follow' must be true or false; got '{o}'"
            )))
        }
    };
    let stream = state.store.require_stream(&name).await?;
    let slot = state.limits.feed_slot(Feed::Follow, stream.id)?;
    let from = follow::first_number(&state.store, &stream, start).await?;
    let body = holding(
        slot,
        follow::feed(state.store.clone(), stream.id, from, follow_live),
    );
    Ok((
        [
            (header::CONTENT_TYPE, "video/mp4".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (
                header::HeaderName::from_static("x-tapedeck-first-fragment"),
                from.to_string(),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn sse_response(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

pub async fn stream_events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
    headers: HeaderMap,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.get("last_event_id").cloned());
    let after = match last.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            Error::invalid(format!(
                "Last-Event-ID must be a fragment number; got '{v}'"
            ))
        })?),
    };
    let stream = state.store.require_stream(&name).await?;
    let slot = state.limits.feed_slot(Feed::Events, stream.id)?;
    let scope = Scope::Stream {
        id: stream.id,
        name,
        after,
    };
    Ok(sse_response(Body::from_stream(holding(
        slot,
        events::events(state.store.clone(), scope),
    ))))
}

pub async fn all_events(State(state): State<AppState>) -> Result<Response> {
    // The global feed is counted as stream 0 (no stream has that id).
    let slot = state.limits.feed_slot(Feed::Events, 0)?;
    Ok(sse_response(Body::from_stream(holding(
        slot,
        events::events(state.store.clone(), Scope::All),
    ))))
}
