//! The web UI: the files of `web/`, embedded at compile time and served at `/` and `/ui/...`.
//!
//! With `TAPEDECK_WEB_DIR` set, the same files are read from that directory on every request
//! instead (edit and reload while developing). Only the files listed here are served, from either.

use crate::error::Error;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// `web/` file name → (content type, embedded bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "player.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/player.js"),
    ),
    (
        "timeline.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/timeline.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
];

/// `GET /`: the single page.
pub async fn index() -> Response {
    serve("index.html").await
}

/// `GET /ui/{*path}`: the page's scripts and styles.
pub async fn asset(Path(path): Path<String>) -> Response {
    serve(&path).await
}

async fn serve(path: &str) -> Response {
    let Some(&(name, content_type, embedded)) = ASSETS.iter().find(|(n, _, _)| *n == path) else {
        return Error::not_found(format!("no UI file '{path}'")).into_response();
    };
    let body = match std::env::var_os("TAPEDECK_WEB_DIR") {
        Some(dir) => match tokio::fs::read(std::path::Path::new(&dir).join(name)).await {
            Ok(bytes) => bytes,
            Err(e) => {
                return Error::not_found(format!(
                    "TAPEDECK_WEB_DIR is set but {} cannot be read: {e}",
                    std::path::Path::new(&dir).join(name).display()
                ))
                .into_response()
            }
        },
        None => embedded.to_vec(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Small files that change with every build: always revalidate.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
