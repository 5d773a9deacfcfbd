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
mod route;
mod startup;
mod streams;
mod timeline;
mod ui;

pub use error::status_of;
pub use peer::PeerInfo;
pub use route::{Matched, RouteKind};

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
    /// The clock the store was opened with, for code that needs the time without the store
    /// (playback-token expiry).
    pub clock: SharedClock,
    /// Streams tapedeck pulls itself (RTSP cameras).
    pub sources: crate::source::Sources,
}

/// Where the API is nested; the routes outside it are probes, metrics and the web UI.
const API_PREFIX: &str = "/api/v1";

/// A router that also keeps the template and [`RouteKind`] of each of its routes: axum cannot
/// list a router's routes, the 404 hint (not_found.rs) must only ever name real ones, and auth
/// and metrics decide from the kind (route.rs).
struct Routes {
    router: Router<AppState>,
    templates: Vec<(String, RouteKind)>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            templates: Vec::new(),
        }
    }

    fn route(
        mut self,
        path: &str,
        kind: RouteKind,
        method_router: MethodRouter<AppState>,
    ) -> Routes {
        self.templates.push((path.to_string(), kind));
        self.router = self.router.route(path, method_router);
        self
    }

    fn merge(mut self, other: Routes) -> Routes {
        self.templates.extend(other.templates);
        self.router = self.router.merge(other.router);
        self
    }

    fn nest(mut self, prefix: &str, other: Routes) -> Routes {
        self.templates.extend(
            other
                .templates
                .into_iter()
                .map(|(path, kind)| (format!("{prefix}{path}"), kind)),
        );
        self.router = self.router.nest(prefix, other.router);
        self
    }
}

/// Every route, its handlers and its kind; [`router`] adds the middleware and the state.
fn routes() -> Routes {
    use RouteKind as K;
    let api = Routes::new()
        .route("/openapi.json", K::OpenApi, get(openapi::document))
        .route(
            "/streams",
            K::Streams,
            get(streams::list).post(streams::create),
        )
        .route(
            "/streams/{name}",
            K::Stream,
            get(streams::describe)
                .patch(streams::update)
                .delete(streams::delete),
        )
        .route(
            "/streams/{name}/sessions",
            K::Sessions,
            get(streams::sessions),
        )
        .route(
            "/streams/{name}/ingest",
            K::Ingest,
            put(ingest::upload).post(ingest::upload),
        )
        .route(
            "/streams/{name}/ingest/{file}",
            K::IngestFile,
            put(ingest::segment_file)
                .post(ingest::segment_file)
                .delete(ingest::delete_file),
        )
        .route(
            "/streams/{name}/fragments",
            K::Fragments,
            get(fragments::list),
        )
        .route(
            "/streams/{name}/fragments/{number}",
            K::Fragment,
            get(fragments::bytes),
        )
        .route("/streams/{name}/inits/{id}", K::Init, get(fragments::init))
        .route(
            "/streams/{name}/timeline",
            K::Timeline,
            get(timeline::timeline),
        )
        .route(
            "/streams/{name}/holds",
            K::Holds,
            get(holds::list).post(holds::create),
        )
        .route(
            "/streams/{name}/holds/{id}",
            K::Hold,
            axum::routing::delete(holds::delete),
        )
        .route("/streams/{name}/media", K::Follow, get(analytics::media))
        .route(
            "/streams/{name}/events",
            K::StreamEvents,
            get(analytics::stream_events),
        )
        .route("/events", K::AllEvents, get(analytics::all_events))
        .route("/retention", K::Retention, get(holds::status))
        .route(
            "/retention/sweep",
            K::RetentionSweep,
            axum::routing::post(holds::sweep_now),
        )
        .route("/streams/{name}/clip.mp4", K::Clip, get(clip::clip))
        .route(
            "/streams/{name}/frame.jpg",
            K::FrameJpg,
            get(frames::frame_jpg),
        )
        .route(
            "/streams/{name}/frame.png",
            K::FramePng,
            get(frames::frame_png),
        )
        .route(
            "/streams/{name}/latest.jpg",
            K::LatestJpg,
            get(frames::latest_jpg),
        )
        .route("/streams/{name}/frames", K::Frames, get(frames::frames))
        .route(
            "/streams/{name}/hls/init/{file}",
            K::HlsInit,
            get(hls::init),
        )
        .route(
            "/streams/{name}/hls/segments/{file}",
            K::HlsSegment,
            get(hls::segment),
        )
        .route(
            "/streams/{name}/hls/parts/{file}",
            K::HlsPart,
            get(hls::part),
        )
        .route(
            "/streams/{name}/playback-tokens",
            K::PlaybackTokens,
            axum::routing::post(auth::create_token),
        );
    let mut playlists = Routes::new()
        .route(
            "/streams/{name}/hls/master.m3u8",
            K::MasterPlaylist,
            get(hls::master),
        )
        .route(
            "/streams/{name}/hls/live.m3u8",
            K::LivePlaylist,
            get(hls::live),
        )
        .route(
            "/streams/{name}/hls/archive.m3u8",
            K::ArchivePlaylist,
            get(hls::archive),
        );
    // Playlists are text that compresses well (Apple requires gzip for them).
    playlists.router = playlists
        .router
        .layer(tower_http::compression::CompressionLayer::new());
    let api = api.merge(playlists);
    let top = Routes::new()
        .route("/healthz", K::Health, get(|| async { "ok\n" }))
        .route("/readyz", K::Ready, get(health::readyz))
        .route("/metrics", K::Metrics, get(metrics::metrics))
        .route("/", K::UiPage, get(ui::index))
        .route("/ui/{*path}", K::UiAsset, get(ui::asset));
    top.nest(API_PREFIX, api)
}

/// Every route template (full path) and its kind.
#[cfg(test)]
pub(crate) fn route_templates() -> Vec<(String, RouteKind)> {
    routes().templates
}

pub fn router(state: AppState) -> Router {
    let Routes { router, templates } = routes();
    let mut known: Vec<String> = templates.iter().map(|(path, _)| path.clone()).collect();
    // Shortest first: the listing in a 404 reads from the top of the tree down.
    known.sort_by_key(|p| (p.matches('/').count(), p.clone()));
    let known = Arc::new(known);
    let table = Arc::new(route::RouteTable::new(&templates, API_PREFIX));
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
    let auth = Arc::new(auth::Auth::new(&state.config.auth, state.clock.clone()));
    let body_timeout = Duration::from_secs(state.config.limits.body_read_timeout_secs.max(1));
    router
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
        // Outside auth and metrics, which read the route it attaches.
        .layer(axum::middleware::from_fn_with_state(table, route::attach))
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
        startup::serve_while_opening(listener, &config, clock.clone(), &shutdown).await?;
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
        clock,
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
