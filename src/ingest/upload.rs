//! The long upload: one HTTP request body carrying an endless fMP4 stream (ffmpeg `-f mp4
//! -method PUT`, GStreamer, `curl -T`). Fragments are acknowledged as they become durable, while
//! the body is still arriving.

use super::session::{error_json, send_line, Opening, Session, Sink, Summary};
use super::Ingest;
use crate::error::{Error, Kind};
use crate::fmp4::Splitter;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

#[derive(Debug, Default)]
pub struct UploadParams {
    /// `producer_start` query parameter: wall clock of the session's first fragment.
    pub producer_start_us: Option<i64>,
    pub remote: Option<String>,
    /// When the request arrived (server clock); `None`: when the upload begins.
    pub connected_us: Option<i64>,
    /// The sessions table's `kind`; `None`: "upload". Pulled sources say "rtsp".
    pub kind: Option<&'static str>,
    /// Told when the first fragment is durable (dropped unsent if none ever is).
    pub first_stored: Option<tokio::sync::oneshot::Sender<()>>,
}

/// How an upload ended: what was stored, and the error that ended it or refused fragments.
#[derive(Debug)]
pub struct UploadOutcome {
    pub summary: Summary,
    pub error: Option<Error>,
}

enum Step<T> {
    Ack(crate::error::Result<crate::store::FragmentRow>),
    Body(T),
}

impl Ingest {
    pub async fn upload<S, E>(
        &self,
        name: &str,
        params: UploadParams,
        body: S,
        sink: Sink,
    ) -> UploadOutcome
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        match self.upload_inner(name, params, body, &sink).await {
            Ok(outcome) => outcome,
            Err(e) => {
                send_line(&sink, error_json(&e, None)).await;
                UploadOutcome {
                    summary: Summary {
                        stream: name.to_string(),
                        ..Default::default()
                    },
                    error: Some(e),
                }
            }
        }
    }

    async fn upload_inner<S, E>(
        &self,
        name: &str,
        params: UploadParams,
        mut body: S,
        sink: &Sink,
    ) -> crate::error::Result<UploadOutcome>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let store = self.inner.store.clone();
        let connected_us = params.connected_us.unwrap_or_else(|| store.now_us());
        // Refuse early what can be known before the first byte (no stream, no auto-create);
        // the stream itself is created only once a fragment arrives (see session.rs).
        self.check_stream(name).await?;
        let claim = self.inner.registry.claim(name, &self.inner.shutdown).await;
        let mut session = Session::new(
            self,
            name,
            Opening {
                kind: params.kind.unwrap_or("upload"),
                remote: params.remote.clone(),
                connected_us,
                producer_start_us: params.producer_start_us,
            },
        );
        if let Some(tx) = params.first_stored {
            session = session.telling_first_stored(tx);
        }
        let mut splitter = Splitter::new(self.inner.config.ingest.max_fragment_bytes);
        let mut events = Vec::new();
        let idle = self.idle_timeout();
        let mut fatal: Option<Error> = None;
        let end_reason;
        loop {
            // Acks go out as soon as fragments are durable, also while the producer is quiet.
            let next = tokio::select! {
                _ = claim.stop.cancelled() => {
                    end_reason = if self.inner.shutdown.is_cancelled() {
                        "server shutting down"
                    } else {
                        "stopped: another producer took over the stream, or it was deleted"
                    };
                    break;
                }
                ack = session.oldest_ack(), if session.has_inflight() => Step::Ack(ack),
                next = tokio::time::timeout(idle, body.next()) => Step::Body(next),
            };
            let next = match next {
                Step::Ack(ack) => {
                    session.take_oldest(ack, sink).await;
                    continue;
                }
                Step::Body(next) => next,
            };
            let chunk = match next {
                Err(_) => {
                    fatal = Some(Error::new(
                        Kind::DeadlineExceeded,
                        format!(
                            "no data received for {} s (ingest.idle_timeout_secs); disconnected",
                            idle.as_secs()
                        ),
                    ));
                    end_reason = "idle timeout";
                    break;
                }
                Ok(None) => {
                    if let Err(e) = splitter.finish() {
                        fatal = Some(e.into());
                    }
                    end_reason = "end of upload";
                    break;
                }
                Ok(Some(Err(e))) => {
                    fatal = Some(Error::invalid(format!("the upload was interrupted: {e}")));
                    end_reason = "connection lost";
                    break;
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            // The fragments this chunk completes had their last byte arrive now.
            let received_us = store.now_us();
            // The fragments completed before a bad box are stored whatever the chunking: the
            // events the splitter produced before its error are handled first.
            let split = splitter.push(&chunk, &mut events);
            let mut failed = None;
            for ev in events.drain(..) {
                if let Err(e) = session.handle(ev, None, received_us, sink).await {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(e) = failed.or_else(|| split.err().map(Error::from)) {
                end_reason = if session.held_back {
                    "overloaded"
                } else {
                    "bad input"
                };
                fatal = Some(e);
                break;
            }
            if let Some((offset, bytes)) = splitter.fragment_in_progress() {
                if let Err(e) = session.reserve_ahead(offset, bytes, sink).await {
                    end_reason = "overloaded";
                    fatal = Some(e);
                    break;
                }
            }
            session.drain_ready(sink).await;
        }
        // Whatever was received is persisted and acknowledged before the session ends.
        session.finish(sink).await;
        drop(claim);
        let session_id = session.session_id();
        if let Some(e) = &fatal {
            session.counters.error(e.kind);
            send_line(sink, error_json(e, Some(splitter.bytes_consumed()))).await;
            tracing::warn!(stream = name, session = ?session_id, remote = ?params.remote, error = %e, "upload ended with an error");
        }
        if let Some(id) = session_id {
            if let Err(e) = store.end_session(id, end_reason.to_string()).await {
                tracing::warn!(session = id, error = %e, "could not record session end");
            }
        }
        let summary = session.summary.clone();
        tracing::info!(
            stream = name,
            session = ?session_id,
            fragments = summary.fragments,
            reason = end_reason,
            "upload session ended"
        );
        let mut end_line = serde_json::to_value(&summary).unwrap_or_default();
        end_line["event"] = "session_ended".into();
        end_line["reason"] = end_reason.into();
        send_line(sink, end_line).await;
        let error = fatal.or_else(|| {
            summary.first_error.as_ref().map(|m| {
                Error::new(
                    summary.first_error_kind.unwrap_or(Kind::InvalidArgument),
                    format!(
                        "{} of the fragments were refused; first: {m}",
                        summary.refused
                    ),
                )
            })
        });
        Ok(UploadOutcome { summary, error })
    }
}
