//! Sources: streams whose media tapedeck fetches itself (an RTSP camera) instead of a producer
//! pushing it. One supervisor task per source connects, records through the ingest path (see
//! `rtsp.rs`), and when the camera or the network fails, waits (capped, jittered exponential
//! backoff, `backoff.rs`) and connects again, until the source is removed, its stream deleted
//! or the server stopped.
//!
//! Sources are saved in the index (store/sources.rs) and resumed at start; `[[sources]]` in the
//! config file are applied at every start.

mod backoff;
mod rtsp;
pub mod spec;
mod status;
pub mod timing;

pub use spec::{RtspSpec, SourceSpec, Transport};
pub use status::State;

use crate::config::{Config, ConfiguredSource};
use crate::error::{Error, Result};
use crate::ingest::Ingest;
use crate::metrics::{Exposition, Type};
use status::Status;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Sources {
    inner: Arc<Inner>,
}

struct Inner {
    ingest: Ingest,
    config: Config,
    shutdown: CancellationToken,
    running: Mutex<HashMap<String, Running>>,
    /// Every supervisor task started, so shutdown can wait for their last fragments.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct Running {
    spec: SourceSpec,
    cancel: CancellationToken,
    status: Arc<Mutex<Status>>,
}

impl From<&ConfiguredSource> for SourceSpec {
    fn from(c: &ConfiguredSource) -> SourceSpec {
        SourceSpec {
            rtsp: RtspSpec {
                url: c.url.clone(),
                transport: c.transport,
                username: c.username.clone(),
                password: c.password.clone(),
            },
        }
    }
}

impl Sources {
    pub fn new(ingest: Ingest, config: Config, shutdown: CancellationToken) -> Sources {
        Sources {
            inner: Arc::new(Inner {
                ingest,
                config,
                shutdown,
                running: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Resumes the saved sources, then applies the config file's (creating their streams).
    pub async fn start(&self) -> Result<()> {
        let store = self.inner.ingest.store();
        for (name, json) in store.sources().await? {
            match serde_json::from_str::<SourceSpec>(&json) {
                Ok(spec) => self.run(&name, spec),
                Err(e) => {
                    tracing::warn!(stream = %name, error = %e, "saved source unreadable; not started")
                }
            }
        }
        for c in self.inner.config.sources.clone() {
            let spec = SourceSpec::from(&c).validated()?;
            let row = match store.stream(&c.stream).await? {
                Some(r) => r,
                None => {
                    store
                        .create_stream(
                            &c.stream,
                            self.inner.config.retention.default_hours,
                            None,
                            BTreeMap::new(),
                        )
                        .await?
                }
            };
            self.set(row.id, &c.stream, Some(spec)).await?;
        }
        Ok(())
    }

    /// Gives stream `name` (id `stream_id`) a source, replaces it, or (`None`) removes it; saved,
    /// and the pull starts or stops at once.
    pub async fn set(&self, stream_id: i64, name: &str, spec: Option<SourceSpec>) -> Result<()> {
        let store = self.inner.ingest.store();
        match spec {
            Some(spec) => {
                let spec = spec.validated()?;
                let json = serde_json::to_string(&spec)
                    .map_err(|e| Error::internal(format!("cannot save the source: {e}")))?;
                store.put_source(stream_id, json).await?;
                let unchanged = self
                    .lock()
                    .get(name)
                    .is_some_and(|r| r.spec == spec && !r.cancel.is_cancelled());
                if !unchanged {
                    self.stop(name);
                    self.run(name, spec);
                }
            }
            None => {
                store.delete_source(stream_id).await?;
                self.stop(name);
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the pull of `name` (its stream was deleted, or its source removed): the
    /// connection closes and what was received is persisted, within a fraction of a second.
    pub fn stop(&self, name: &str) {
        if let Some(r) = self.lock().remove(name) {
            r.cancel.cancel();
            tracing::info!(stream = name, "source stopped");
        }
    }

    fn run(&self, name: &str, spec: SourceSpec) {
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        let cancel = self.inner.shutdown.child_token();
        let now = self.inner.ingest.store().now_us();
        let status = Arc::new(Mutex::new(Status::new(now)));
        self.lock().insert(
            name.to_string(),
            Running {
                spec: spec.clone(),
                cancel: cancel.clone(),
                status: status.clone(),
            },
        );
        let sup = Supervisor {
            ingest: self.inner.ingest.clone(),
            name: name.to_string(),
            spec: spec.rtsp,
            status,
            cancel,
            chunk_us: Some(self.inner.config.source.chunk_ms * 1000).filter(|c| *c > 0),
            silence: Duration::from_secs(self.inner.config.source.silence_timeout_secs),
        };
        let task = tokio::spawn(async move { sup.supervise().await });
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    /// Waits (at most `limit`) for every pull to end after shutdown began, so the fragments
    /// they were holding are stored before the store closes.
    pub async fn stopped(&self, limit: Duration) {
        let tasks: Vec<_> = self
            .inner
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("sources did not all stop within {} s", limit.as_secs());
        }
    }

    /// The `source` of a stream's describe document: the redacted spec and the status.
    pub fn describe(&self, name: &str) -> Option<serde_json::Value> {
        let running = self.lock();
        let r = running.get(name)?;
        let mut v = r.spec.redacted();
        let status = r.status.lock().ok().map(|s| s.json());
        v["status"] = status.unwrap_or_default();
        Some(v)
    }

    /// Per-source families for `/metrics`.
    pub fn metrics(&self, out: &mut Exposition) {
        let snapshot: Vec<(String, Status)> = {
            let running = self.lock();
            let mut v: Vec<_> = running
                .iter()
                .filter_map(|(n, r)| Some((n.clone(), r.status.lock().ok()?.clone())))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        out.family(
            "tapedeck_source_state",
            Type::Gauge,
            "1 for the state each pulled source (RTSP camera) is in",
        );
        for (name, s) in &snapshot {
            for state in State::ALL {
                let v = u8::from(s.state == state);
                out.sample(
                    "tapedeck_source_state",
                    &[("stream", name), ("state", state.as_str())],
                    v,
                );
            }
        }
        type Get = fn(&Status) -> u64;
        let counters: [(&str, &str, Get); 4] = [
            (
                "tapedeck_source_reconnects_total",
                "connection attempts after the first",
                |s| s.reconnects,
            ),
            (
                "tapedeck_source_bytes_total",
                "media bytes received from the camera",
                |s| s.bytes,
            ),
            (
                "tapedeck_source_frames_total",
                "frames received from the camera",
                |s| s.frames,
            ),
            (
                "tapedeck_source_rtp_packets_lost_total",
                "RTP packets lost (sequence gaps)",
                |s| s.packets_lost,
            ),
        ];
        for (family, help, get) in counters {
            out.family(family, Type::Counter, help);
            for (name, s) in &snapshot {
                out.sample(family, &[("stream", name)], get(s));
            }
        }
    }
}

/// The retry loop of one source.
struct Supervisor {
    ingest: Ingest,
    name: String,
    spec: RtspSpec,
    status: Arc<Mutex<Status>>,
    cancel: CancellationToken,
    chunk_us: Option<u64>,
    silence: Duration,
}

impl Supervisor {
    fn with_status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    async fn supervise(self) {
        let mut backoff = backoff::Backoff::new();
        let store = self.ingest.store().clone();
        tracing::info!(stream = %self.name, url = %self.spec.url, transport = ?self.spec.transport, "source started");
        loop {
            let now = store.now_us();
            self.with_status(|s| {
                if s.attempts > 0 {
                    s.reconnects += 1;
                }
                s.attempts += 1;
                s.set_state(State::Connecting, now);
            });
            let conn = rtsp::Connection {
                ingest: &self.ingest,
                stream: &self.name,
                spec: &self.spec,
                status: &self.status,
                cancel: &self.cancel,
                chunk_us: self.chunk_us,
                silence: self.silence,
            };
            let ended = conn.run().await;
            if ended.stored_any {
                backoff.reset();
            }
            if self.cancel.is_cancelled() {
                break;
            }
            let failure = ended
                .failure
                .unwrap_or(rtsp::Failure::Other("the connection ended".into()));
            let delay = backoff.next_delay(backoff::random_unit());
            let now = store.now_us();
            let state = match &failure {
                rtsp::Failure::Unauthorized(_) => State::Unauthorized,
                rtsp::Failure::Unsupported(_) => State::UnsupportedCodec,
                rtsp::Failure::Other(_) => State::Retrying,
            };
            let message = failure.message().to_string();
            tracing::warn!(stream = %self.name, state = state.as_str(), error = %message, retry_in_ms = delay.as_millis() as u64, "source connection failed");
            self.with_status(|s| {
                s.set_state(state, now);
                s.last_error = Some(message);
                s.last_error_us = Some(now);
                s.next_attempt_us = Some(now + delay.as_micros() as i64);
            });
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        tracing::info!(stream = %self.name, "source supervisor ended");
    }
}
