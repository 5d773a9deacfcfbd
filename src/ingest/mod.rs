//! Producer sessions: HTTP body -> fMP4 splitter -> store, with acks and limits.
//! Two ways in: one long upload per session (`upload.rs`) and a series of segment files as
//! ffmpeg's HLS and DASH muxers PUT them (`segment_files.rs`). Both feed a session
//! (`session.rs`), which places each fragment on the stream's timeline (`placement.rs`, pure).

mod budget;
pub mod placement;
mod registry;
mod segment_files;
mod session;
mod upload;

pub use budget::BudgetStats;
pub use segment_files::SegmentOutcome;
pub use session::{fragment_json, Summary};
pub use upload::{UploadOutcome, UploadParams};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::{IngestCounters, Metrics};
use crate::store::{InitToStore, OpenedSession, SessionOpening, Store, StreamRow};
use registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: Config,
    registry: Registry,
    series: Mutex<HashMap<String, Arc<segment_files::SeriesSlot>>>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    /// Bytes received but not yet durable, over all producers (`budget.rs`).
    budget: budget::Budget,
}

impl Ingest {
    pub fn new(
        store: Store,
        config: Config,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Ingest {
        let ingest = Ingest {
            inner: Arc::new(Inner {
                budget: budget::Budget::new(
                    config.ingest.pending_budget_bytes,
                    std::time::Duration::from_secs(config.ingest.max_hold_back_secs),
                ),
                store,
                config,
                registry: Registry::default(),
                series: Mutex::new(HashMap::new()),
                shutdown,
                metrics,
            }),
        };
        let reaper = ingest.clone();
        tokio::spawn(async move { reaper.reap_idle_series().await });
        ingest
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The ingest budget's use and how much producers have been held back.
    pub fn budget(&self) -> BudgetStats {
        self.inner.budget.stats()
    }

    /// The stream to ingest into: existing, or created when `ingest.auto_create` is on.
    /// Called when a session's first fragment arrives (see session.rs), never earlier.
    /// Opens a session at its first fragment: its stream (created when `ingest.auto_create`
    /// allows), its session row and its init, in one store call.
    async fn open_session(
        &self,
        name: &str,
        opening: &session::Opening,
        init: InitToStore,
    ) -> Result<OpenedSession> {
        let opened = self
            .inner
            .store
            .open_session(SessionOpening {
                stream: name.to_string(),
                create_with_retention_hours: self
                    .inner
                    .config
                    .ingest
                    .auto_create
                    .then_some(self.inner.config.retention.default_hours),
                kind: opening.kind,
                remote: opening.remote.clone(),
                started_us: opening.connected_us,
                init,
            })
            .await;
        match opened {
            Ok(o) => {
                if o.created {
                    tracing::info!(stream = name, "stream auto-created on first ingest");
                }
                Ok(o)
            }
            Err(e) if e.kind == crate::error::Kind::NotFound => Err(no_auto_create(name)),
            Err(e) => Err(e),
        }
    }

    /// The stream an upload will go to: `Some` when it exists, `None` when it does not yet but
    /// may be created at the first fragment, 404 when it may not. Creates nothing, so it can
    /// refuse an upload before its body is read (and before `100 Continue`).
    pub async fn check_stream(&self, name: &str) -> Result<Option<StreamRow>> {
        if let Some(s) = self.inner.store.stream(name).await? {
            return Ok(Some(s));
        }
        if !self.inner.config.ingest.auto_create {
            return Err(no_auto_create(name));
        }
        Ok(None)
    }

    /// Whether a producer is sending to the stream right now.
    pub fn is_connected(&self, name: &str) -> bool {
        if self.inner.registry.is_active(name) {
            return true;
        }
        let series = self
            .inner
            .series
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned());
        series.is_some_and(|s| {
            s.series
                .try_lock()
                .map(|s| {
                    s.as_ref()
                        .is_some_and(|s| !s.is_expired(self.idle_timeout()))
                })
                .unwrap_or(true)
        })
    }

    /// Whether the server has been told to stop (it no longer takes new work).
    pub fn shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// The metrics an ingest session into `name` counts into.
    fn counters(&self, name: &str) -> IngestCounters {
        self.inner.metrics.ingest(name)
    }

    /// Disconnects the producer of a deleted stream.
    pub fn stream_deleted(&self, name: &str) {
        self.inner.metrics.forget_stream(name);
        self.inner.registry.stop(name);
        if let Ok(mut m) = self.inner.series.lock() {
            m.remove(name);
        }
    }

    fn idle_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.inner.config.ingest.idle_timeout_secs)
    }

    fn jitter_tolerance_us(&self) -> i64 {
        (self.inner.config.ingest.jitter_tolerance_ms as i64).saturating_mul(1000)
    }
}

/// Why an upload to a stream that does not exist is refused.
fn no_auto_create(name: &str) -> Error {
    Error::not_found(format!(
        "stream '{name}' does not exist and ingest.auto_create is off; create it first with \
         POST /api/v1/streams"
    ))
}
