//! Serving while the store opens.
//!
//! Opening the store runs recovery (cutting unacknowledged tails, deleting orphan files), which
//! takes a while on a large archive. The port is bound before that; if nothing answered until
//! recovery ended, probes would hang, and an orchestrator's liveness probe could restart the
//! server in the middle of recovery, again and again. So the server starts serving at once,
//! through a gate: until the router exists, `/healthz` answers 200 (alive) and `/readyz` 503
//! (not ready: starting); every other request waits for the router, as it would have waited in
//! the listen queue before, and is then handled normally.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Store;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The running server, before its router exists.
pub struct Serving {
    app: watch::Sender<Option<Router>>,
    server: JoinHandle<()>,
}

impl Serving {
    /// Hands every request, from now on and those waiting, to `app`; returns the server task.
    pub fn open(self, app: Router) -> JoinHandle<()> {
        self.app.send_replace(Some(app));
        self.server
    }
}

/// `phase`: what `/readyz` says the server is doing until the router exists.
async fn gate(app: watch::Receiver<Option<Router>>, phase: &'static str, req: Request) -> Response {
    let current = app.borrow().clone();
    let app = match current {
        Some(app) => app,
        None => match req.uri().path() {
            "/healthz" => return "ok\n".into_response(),
            "/readyz" => return Error::unavailable(phase).into_response(),
            _ => {
                let mut rx = app.clone();
                let ready = rx.wait_for(Option::is_some).await.map(|a| a.clone());
                match ready {
                    Ok(Some(app)) => app,
                    _ => {
                        return Error::unavailable("the server stopped while starting")
                            .into_response()
                    }
                }
            }
        },
    };
    match app.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// Starts serving on `listener` through the gate (see the module doc), then opens the store off
/// the async threads. The server stops with `shutdown`, or when the store cannot be opened.
pub async fn serve_while_opening(
    listener: tokio::net::TcpListener,
    config: &Config,
    clock: SharedClock,
    shutdown: &CancellationToken,
) -> Result<(Serving, Store)> {
    let (tx, rx) = watch::channel(None::<Router>);
    let phase = if Store::index_exists(&config.data_dir) {
        "starting: the store is opening (recovering after a restart)"
    } else {
        "starting: creating a new store"
    };
    let front = Router::new().fallback(move |req: Request| gate(rx.clone(), phase, req));
    let stop = shutdown.child_token();
    let limits = config.limits.clone();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            super::listen::serve_connections(listener, front, &limits, stop, super::SHUTDOWN_GRACE)
                .await
        }
    });
    let (dir, storage) = (config.data_dir.clone(), config.storage.clone());
    let opened = tokio::task::spawn_blocking(move || Store::open(&dir, &storage, clock))
        .await
        .map_err(|e| Error::internal(format!("store open task failed: {e}")));
    match opened {
        Ok(Ok(store)) => Ok((Serving { app: tx, server }, store)),
        Ok(Err(e)) | Err(e) => {
            // Requests waiting for the router get a 503 and the server stops.
            drop(tx);
            stop.cancel();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
            Err(e)
        }
    }
}
