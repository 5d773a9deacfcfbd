//! Accepting connections and serving HTTP/1.1 on them, with the connection-level limits axum's
//! own `serve` does not expose: the largest request head (`limits.max_header_bytes`, larger gets
//! 431) and how long a client may take to send it (`limits.header_read_timeout_secs`, then the
//! connection closes), so a client trickling header bytes cannot hold a connection forever.
//! Accepted sockets get `TCP_NODELAY`, and each request carries [`PeerInfo`] (address and
//! accept order) for the handlers.

use super::peer::{next_accept_seq, PeerInfo};
use super::read_ahead::ReadAhead;
use crate::config::LimitsConfig;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `app` on `listener` until `shutdown` fires; then stops accepting and waits up to
/// `grace` for open connections to finish their requests.
/// The most a connection's read buffer holds (see `max_buf_size` below).
const READ_BUFFER_BYTES: usize = 64 * 1024;

pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: &LimitsConfig,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs.max(1)))
        .max_header_size(limits.max_header_bytes.max(1024))
        // Per connection, the read buffer grows to this while a producer sends faster than it
        // is read (hyper's default is about 400 KB). With a thousand cameras that is the
        // difference between 64 MB and 400 MB of buffers; 64 KB reads still take a single
        // upload at disk speed.
        .max_buf_size(READ_BUFFER_BYTES);
    let graceful = GracefulShutdown::new();
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = io.set_nodelay(true);
        let accept_seq = next_accept_seq();
        let requests = AtomicU64::new(0);
        let app = app.clone();
        // Read ahead of the answers, so a client that pipelines and closes early loses nothing.
        let io = ReadAhead::new(io);
        let prompt = io.prompt_answers();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let peer = PeerInfo {
                addr,
                accept_seq,
                request_index: requests.fetch_add(1, Ordering::Relaxed),
            };
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(prompt.clone());
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %addr, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; persisting what was received");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing anyway");
    }
}
