//! Ingest endpoints: the long upload (with optional NDJSON acks) and segment files.

use super::error::error_response_with;
use super::params::{self, Params};
use super::AppState;
use super::PeerInfo;
use crate::error::{Error, Result};
use crate::ingest::UploadParams;
use crate::stream_name::validate_stream_name;
use crate::timefmt::TimeSpec;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;

const NDJSON: &str = "application/x-ndjson";
/// Ack lines kept while an NDJSON upload's answer waits for its first stored fragment; past
/// this many (every fragment refused), the answer starts anyway.
const MAX_EARLY_LINES: usize = 256;

pub async fn upload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    prompt: Option<axum::Extension<super::read_ahead::PromptAnswers>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let connected_us = state.store.now_us();
    let producer_start_us = match params::time(&q, "producer_start")? {
        None => None,
        Some(TimeSpec::At(us)) => Some(us),
        Some(TimeSpec::Now) => Some(connected_us),
        Some(TimeSpec::Earliest) => {
            return Err(Error::invalid(
                "'producer_start' is when the producer's first fragment was captured: a time \
                 or 'now', not 'earliest'",
            ))
        }
    };
    if let Some(unknown) = q.keys().find(|k| k.as_str() != "producer_start") {
        return Err(Error::invalid(format!(
            "unknown query parameter '{unknown}'; ingest takes producer_start"
        )));
    }
    let wants_acks = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON));
    // Everything that can refuse the upload without its body runs before the body is read, so
    // a client that sent `Expect: 100-continue` gets the refusal instead of `100 Continue`.
    let slot = state.limits.ingest_slot()?;
    state.ingest.check_stream(&name).await?;
    let (first_stored, stored) = tokio::sync::oneshot::channel();
    let params = UploadParams {
        producer_start_us,
        remote: Some(peer.addr.to_string()),
        connected_us: Some(connected_us),
        first_stored: Some(first_stored),
        kind: None,
    };
    let body = state.limits.throttle(&name, body.into_data_stream());
    // On its own task: ffmpeg closes the connection without reading the response, which drops
    // this handler; the upload must still persist everything it received and end its session.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let ingest = state.ingest.clone();
    let mut task = tokio::spawn(async move {
        let _slot = slot;
        ingest
            .upload(&name, params, body, wants_acks.then_some(tx))
            .await
    });
    if wants_acks {
        // The answer waits until the first fragment is durable or the upload ends: a success
        // status then means media was stored, and a refusal before any fragment gets its own
        // status. Waiting here (with the response head unsent) is also what lets hyper answer
        // `Expect: 100-continue` when the upload first reads the body: hyper sends `100
        // Continue` only while no response head has gone out, so answering at once (as this
        // handler did) left `curl -T` waiting a second (its expect timeout) before sending.
        // Ack lines that come meanwhile are kept (and not left to fill the channel, which would
        // stall the upload).
        let mut early = Vec::new();
        let mut stored = stored;
        let outcome = loop {
            tokio::select! {
                line = rx.recv(), if early.len() < MAX_EARLY_LINES => match line {
                    Some(l) => early.push(l),
                    // The upload dropped its sink: it has ended.
                    None => break Some((&mut task).await),
                },
                r = &mut stored => {
                    if r.is_ok() {
                        break None;
                    }
                    // Never sent: the upload ended without storing anything.
                    break Some((&mut task).await);
                }
                // Many ack lines but nothing stored (refused fragments): stop waiting.
                _ = std::future::ready(()), if early.len() >= MAX_EARLY_LINES => break None,
            }
        };
        if let Some(outcome) = outcome {
            let outcome =
                outcome.map_err(|e| Error::internal(format!("upload task failed: {e}")))?;
            if let (Some(e), 0) = (&outcome.error, outcome.summary.fragments) {
                let summary = serde_json::to_value(&outcome.summary).unwrap_or_default();
                return Ok(error_response_with(
                    e,
                    serde_json::json!({ "summary": summary }),
                ));
            }
        }
        let early = futures_util::stream::iter(early.into_iter().map(Ok));
        // The producer reads its acks while it sends: each goes out as it comes, not once
        // the connection's read-ahead has caught up with the upload (see read_ahead.rs).
        let guard = prompt.map(|p| p.hold());
        let lines = early.chain(tokio_stream_from(rx)).map(move |line| {
            let _ = &guard;
            line
        });
        return Ok(([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(lines)).into_response());
    }
    drop(rx);
    let outcome = task
        .await
        .map_err(|e| Error::internal(format!("upload task failed: {e}")))?;
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
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    body: Body,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let _slot = state.limits.ingest_slot()?;
    // Queued before any await: files are processed in arrival order (see ingest/segment_files.rs).
    let task = state.ingest.segment_file(
        &name,
        &file,
        Some(peer.addr.to_string()),
        peer.accept_seq,
        peer.request_index == 0,
        state.limits.throttle(&name, body.into_data_stream()),
    );
    let outcome = task
        .await
        .map_err(|e| Error::internal(format!("segment task failed: {e}")))??;
    if outcome.kind == "manifest" {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok((StatusCode::CREATED, Json(outcome)).into_response())
}

/// ffmpeg deletes segments that left its playlist window; retention is tapedeck's, so this only
/// acknowledges.
pub async fn delete_file(Path((name, _file)): Path<(String, String)>) -> Result<StatusCode> {
    validate_stream_name(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
