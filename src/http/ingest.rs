//! Ingest endpoints: the long upload (with optional NDJSON acks) and segment files.

use super::error::error_response_with;
use super::params::QueryMap;
use super::AppState;
use crate::error::{Error, Result};
use crate::ingest::UploadParams;
use crate::stream_name::validate_stream_name;
use crate::timefmt::parse_time_us;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use std::net::SocketAddr;

const NDJSON: &str = "application/x-ndjson";

pub async fn upload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QueryMap>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let producer_start_us = q
        .get("producer_start")
        .map(|v| parse_time_us("producer_start", v))
        .transpose()?;
    if let Some(unknown) = q.keys().find(|k| k.as_str() != "producer_start") {
        return Err(Error::invalid(format!(
            "unknown query parameter '{unknown}'; ingest takes producer_start"
        )));
    }
    let wants_acks = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON));
    let params = UploadParams {
        producer_start_us,
        remote: Some(peer.to_string()),
    };
    let body = body.into_data_stream().boxed();
    if wants_acks {
        // Fail fast with a status code for what can be known before the first byte.
        state.ingest.resolve_stream_pub(&name).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let ingest = state.ingest.clone();
        tokio::spawn(async move {
            ingest.upload(&name, params, body, Some(tx)).await;
        });
        let lines = tokio_stream_from(rx);
        return Ok(([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(lines)).into_response());
    }
    let outcome = state.ingest.upload(&name, params, body, None).await;
    let summary = serde_json::to_value(&outcome.summary).unwrap_or_default();
    Ok(match outcome.error {
        None => Json(summary).into_response(),
        Some(e) => error_response_with(&e, serde_json::json!({ "summary": summary })),
    })
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> impl futures_util::Stream<Item = std::result::Result<bytes::Bytes, std::convert::Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}

pub async fn segment_file(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let outcome = state
        .ingest
        .segment_file(
            &name,
            &file,
            Some(peer.to_string()),
            body.into_data_stream(),
        )
        .await?;
    let status = if outcome.kind == "manifest" {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    };
    if status == StatusCode::NO_CONTENT {
        return Ok(status.into_response());
    }
    Ok((status, Json(outcome)).into_response())
}

/// ffmpeg deletes segments that left its playlist window; retention is tapedeck's, so this only
/// acknowledges.
pub async fn delete_file(Path((name, _file)): Path<(String, String)>) -> Result<StatusCode> {
    validate_stream_name(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
