//! The HTTP surface: the axum router, shared state and server lifecycle. Handlers parse and
//! validate requests and shape responses; they never parse boxes or touch files.

mod analytics;
pub mod auth;
mod clip;
mod error;
mod fragments;
mod frames;
mod health;
pub(crate) mod hls;
mod holds;
mod ingest;
pub mod limits;
mod listen;
mod metrics;
mod not_found;
mod openapi;
mod params;
mod peer;
pub mod range;
mod read_ahead;
mod refusal_log;
mod startup;
mod streams;
mod timeline;
mod ui;

pub use error::status_of;
pub use peer::PeerInfo;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ingest::Ingest;
use crate::playback::hls::Hls;
use crate::store::sweeper::Sweeper;
use crate::store::Store;
use axum::http::{header, Method};
use axum::routing::{get, put, MethodRouter};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{Any, CorsLayer};

/// How long shutdown waits for uploads to persist and connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How long shutdown waits for pulled sources to store their last fragments (a flush and one
/// commit group each: well under a second).
const SOURCES_STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub ingest: Ingest,
    pub hls: Arc<Hls>,
    pub sweeper: Arc<Sweeper>,
    pub frames: Arc<crate::analytics::frames::Frames>,
    pub limits: Arc<limits::Limits>,
    pub config: Config,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Streams tapedeck pulls itself (RTSP cameras).
    pub sources: crate::source::Sources,
}

/// A router that also keeps the paths of its routes: axum cannot list a router's routes, and
/// the 404 hint (not_found.rs) must only ever name real ones.
struct Routes {
    router: Router<AppState>,
    paths: Vec<String>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    fn route(mut self, path: &str, method_router: MethodRouter<AppState>) -> Routes {
        self.paths.push(path.to_string());
        self.router = self.router.route(path, method_router);
        self
    }

    fn merge(mut self, other: Routes) -> Routes {
        self.paths.extend(other.paths);
        self.router = self.router.merge(other.router);
        self
    }
}

pub fn router(state: AppState) -> Router {
    let api = Routes::new()
        .route("/openapi.json", get(openapi::document))
        .route("/streams", get(streams::list).post(streams::create))
        .route(
            "/streams/{name}",
            get(streams::describe)
                .patch(streams::update)
                .delete(streams::delete),
        )
        .route("/streams/{name}/sessions", get(streams::sessions))
        .route(
            "/streams/{name}/ingest",
            put(ingest::upload).post(ingest::upload),
        )
        .route(
            "/streams/{name}/ingest/{file}",
            put(ingest::segment_file)
                .post(ingest::segment_file)
                .delete(ingest::delete_file),
        )
        .route("/streams/{name}/fragments", get(fragments::list))
        .route("/streams/{name}/fragments/{number}", get(fragments::bytes))
        .route("/streams/{name}/inits/{id}", get(fragments::init))
        .route("/streams/{name}/timeline", get(timeline::timeline))
        .route(
            "/streams/{name}/holds",
            get(holds::list).post(holds::create),
        )
        .route(
            "/streams/{name}/holds/{id}",
            axum::routing::delete(holds::delete),
        )
        .route("/streams/{name}/media", get(analytics::media))
        .route("/streams/{name}/events", get(analytics::stream_events))
        .route("/events", get(analytics::all_events))
        .route("/retention", get(holds::status))
        .route("/retention/sweep", axum::routing::post(holds::sweep_now))
        .route("/streams/{name}/clip.mp4", get(clip::clip))
        .route("/streams/{name}/frame.jpg", get(frames::frame_jpg))
        .route("/streams/{name}/frame.png", get(frames::frame_png))
        .route("/streams/{name}/latest.jpg", get(frames::latest_jpg))
        .route("/streams/{name}/frames", get(frames::frames))
        .route("/streams/{name}/hls/init/{file}", get(hls::init))
        .route("/streams/{name}/hls/segments/{file}", get(hls::segment))
        .route("/streams/{name}/hls/parts/{file}", get(hls::part))
        .route(
            "/streams/{name}/playback-tokens",
            axum::routing::post(auth::create_token),
        );
    let mut playlists = Routes::new()
        .route("/streams/{name}/hls/master.m3u8", get(hls::master))
        .route("/streams/{name}/hls/live.m3u8", get(hls::live))
        .route("/streams/{name}/hls/archive.m3u8", get(hls::archive));
    // Playlists are text that compresses well (Apple requires gzip for them).
    playlists.router = playlists
        .router
        .layer(tower_http::compression::CompressionLayer::new());
    let api = api.merge(playlists);
    // Reads may come from players on other origins (hls.js fetches with XHR).
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers([
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ETAG,
            header::CONTENT_DISPOSITION,
            header::HeaderName::from_static("x-tapedeck-clip-truncated"),
            header::HeaderName::from_static("x-tapedeck-frame-time"),
            header::HeaderName::from_static("x-tapedeck-fragment"),
            header::HeaderName::from_static("x-tapedeck-first-fragment"),
        ]);
    let auth = Arc::new(auth::Auth::new(&state.config.auth));
    let body_timeout = Duration::from_secs(state.config.limits.body_read_timeout_secs.max(1));
    let top = Routes::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(ui::index))
        .route("/ui/{*path}", get(ui::asset));
    let mut known = top.paths;
    known.extend(api.paths.iter().map(|p| format!("/api/v1{p}")));
    // Shortest first: the listing in a 404 reads from the top of the tree down.
    known.sort_by_key(|p| (p.matches('/').count(), p.clone()));
    let known = Arc::new(known);
    let api = api.router;
    top.router
        .nest("/api/v1", api)
        .fallback(move |uri: axum::http::Uri| {
            let known = known.clone();
            async move { not_found::error(&known, uri.path(), uri.query()) }
        })
        .layer(axum::middleware::from_fn_with_state(auth, auth::middleware))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::count_playback,
        ))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(cors)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Runs the server until `shutdown` fires, then stops accepting, lets uploads persist what they
/// received, and closes the store.
pub async fn serve(config: Config, clock: SharedClock, shutdown: CancellationToken) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {}: {e}", config.listen)))?;
    serve_on(listener, config, clock, shutdown).await
}

/// [`serve`] on a listener the caller bound (tests bind port 0 and read the address).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = listener.local_addr()?;
    // Serves from now on: probes are answered while recovery runs, other requests wait for it.
    let (serving, store) =
        startup::serve_while_opening(listener, &config, clock, &shutdown).await?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let ingest = Ingest::new(
        store.clone(),
        config.clone(),
        shutdown.clone(),
        metrics.clone(),
    );
    let sweeper = Sweeper::spawn(
        store.clone(),
        config.retention.clone(),
        config.storage.clone(),
        shutdown.clone(),
    );
    let sources = crate::source::Sources::new(ingest.clone(), config.clone(), shutdown.clone());
    if let Err(e) = sources.start().await {
        tracing::error!(error = %e, "sources could not all be started");
    }
    let app = router(AppState {
        store: store.clone(),
        ingest,
        sources: sources.clone(),
        hls: Arc::new(Hls::new(store.clone(), config.hls.clone())),
        sweeper,
        frames: Arc::new(crate::analytics::frames::Frames::new(
            store.clone(),
            config.frames.clone(),
        )),
        limits: Arc::new(limits::Limits::new(&config.limits)),
        config: config.clone(),
        metrics,
    });
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "tapedeck serving");
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("tapedeck listening on http://{addr}");
    // The server task stops accepting when `shutdown` fires and ends once open connections
    // finish (at most SHUTDOWN_GRACE later; see listen.rs).
    if let Err(e) = serving.open(app).await {
        tracing::warn!(error = %e, "server task failed");
    }
    // The pulls stopped with `shutdown`; what they held is stored before the store closes.
    sources.stopped(SOURCES_STOP_GRACE).await;
    store.shutdown().await;
    tracing::info!("store closed; bye");
    Ok(())
}
