//! `GET /readyz`: whether this server should be sent work now.
//!
//! `/healthz` is liveness only (the process answers HTTP: do not restart it). Readiness is about
//! the write path, because that is what cannot be retried elsewhere without loss: a producer
//! sent to a server whose store cannot make fragments durable gets no acks. So ready means the
//! store is open, its writer thread runs and is not stuck in a commit, and the data disk is
//! writable with room for at least one fragment of the largest size accepted. Not ready answers
//! 503 with the usual JSON error body, whose message says which of these failed. A server that
//! is shutting down is not ready either, so a load balancer drains it.

use super::AppState;
use crate::error::{Error, Result};
use axum::extract::State;

pub async fn readyz(State(state): State<AppState>) -> Result<&'static str> {
    if state.ingest.shutting_down() {
        return Err(Error::unavailable("the server is shutting down"));
    }
    // `statvfs` can block on a failing disk: off the async threads.
    let store = state.store.clone();
    let min_free_bytes = state.config.ingest.max_fragment_bytes;
    tokio::task::spawn_blocking(move || store.check_ready(min_free_bytes))
        .await
        .map_err(|e| Error::internal(format!("readiness task failed: {e}")))??;
    Ok("ready\n")
}
