//! `GET /readyz`: whether this server should be sent work now.
//!
//! `/healthz` is liveness only (the process answers HTTP: do not restart it). Readiness is about
//! the write path, because that is what cannot be retried elsewhere without loss: a producer
//! sent to a server whose store cannot make fragments durable gets no acks. So ready means the
//! store is open, its writer thread runs and is not stuck in a commit, and the data disk is
//! writable with room for at least one fragment of the largest size accepted. Not ready answers
//! 503 with the usual JSON error body, whose message says which of these failed. A server that
//! is shutting down is not ready either, so a load balancer drains it; nor is one whose ingest
//! budget is holding producers back ("overloaded": the disk is not keeping up).
//!
//! With an object tier, an unreachable object store does not make the server unready (ingest
//! still works on the local disk), but the body says so, and says loudly when the disk budget
//! has deleted media that was never uploaded (`store/object/mod.rs`).

use super::AppState;
use crate::error::{Error, Result};
use axum::extract::State;

pub async fn readyz(State(state): State<AppState>) -> Result<String> {
    if state.ingest.shutting_down() {
        return Err(Error::unavailable("the server is shutting down"));
    }
    // `statvfs` can block on a failing disk: off the async threads.
    let store = state.store.clone();
    let min_free_bytes = state.config.ingest.max_fragment_bytes;
    tokio::task::spawn_blocking(move || store.check_ready(min_free_bytes))
        .await
        .map_err(|e| Error::internal(format!("readiness task failed: {e}")))??;
    let mut body = String::from("ready\n");
    let b = state.ingest.budget();
    if b.waiting > 0 {
        // Not ready for more: the server is storing what it can at the disk's rate and holding
        // producers back, so whoever balances load should send new producers elsewhere. Those
        // connected keep going (at the disk's rate, or an 'overloaded' error past
        // ingest.max_hold_back_secs).
        return Err(Error::unavailable(format!(
            "overloaded: {} producers held back; {} of {} bytes of received media wait to be \
             made durable (ingest.pending_budget_bytes)",
            b.waiting, b.used_bytes, b.limit_bytes
        )));
    }
    if let Some(o) = state.store.object_stats() {
        if !o.store_reachable {
            body.push_str(&format!(
                "warning: the object store is unreachable; {} files wait for upload ({})\n",
                o.queue_files,
                o.last_error.unwrap_or_default()
            ));
        }
        if o.unuploaded_deleted_bytes_total > 0 {
            body.push_str(&format!(
                "warning: the disk budget deleted {} bytes of media that was not yet uploaded\n",
                o.unuploaded_deleted_bytes_total
            ));
        }
    }
    Ok(body)
}
