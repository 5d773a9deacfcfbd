//! Which route a request took, as a type. The router names each route's [`RouteKind`] where it
//! adds the route (`Routes::route` in mod.rs); [`attach`] puts the matched route on the
//! request, so auth (`auth::classify`) and metrics (`metrics::playback_kind`) decide from the
//! kind and the router's own path parameters instead of parsing URL paths a second and third
//! time. Metrics places every kind (an exhaustive match); auth gives anything it does not
//! place to admins, so a new route is closed until it is given a place.
//!
//! Why a table from the matched template rather than an extension set inside each route:
//! axum runs a router's layers around each route's handler, after routing, but inside-out, so an
//! extension a route sets for itself would only appear after auth and metrics have run.

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Arc;

/// One kind per route of the router; the doc of each is the route's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// `/healthz`
    Health,
    /// `/readyz`
    Ready,
    /// `/metrics`
    Metrics,
    /// `/`
    UiPage,
    /// `/ui/{*path}`
    UiAsset,
    /// `/api/v1/openapi.json`
    OpenApi,
    /// `/api/v1/streams`
    Streams,
    /// `/api/v1/streams/{name}`
    Stream,
    /// `/api/v1/streams/{name}/sessions`
    Sessions,
    /// `/api/v1/streams/{name}/ingest`
    Ingest,
    /// `/api/v1/streams/{name}/ingest/{file}`
    IngestFile,
    /// `/api/v1/streams/{name}/fragments`
    Fragments,
    /// `/api/v1/streams/{name}/fragments/{number}`
    Fragment,
    /// `/api/v1/streams/{name}/inits/{id}`
    Init,
    /// `/api/v1/streams/{name}/timeline`
    Timeline,
    /// `/api/v1/streams/{name}/holds`
    Holds,
    /// `/api/v1/streams/{name}/holds/{id}`
    Hold,
    /// `/api/v1/streams/{name}/media`: the follow feed.
    Follow,
    /// `/api/v1/streams/{name}/events`
    StreamEvents,
    /// `/api/v1/events`
    AllEvents,
    /// `/api/v1/retention`
    Retention,
    /// `/api/v1/retention/sweep`
    RetentionSweep,
    /// `/api/v1/streams/{name}/clip.mp4`
    Clip,
    /// `/api/v1/streams/{name}/frame.jpg`
    FrameJpg,
    /// `/api/v1/streams/{name}/frame.png`
    FramePng,
    /// `/api/v1/streams/{name}/latest.jpg`
    LatestJpg,
    /// `/api/v1/streams/{name}/frames`
    Frames,
    /// `/api/v1/streams/{name}/hls/init/{file}`
    HlsInit,
    /// `/api/v1/streams/{name}/hls/segments/{file}`
    HlsSegment,
    /// `/api/v1/streams/{name}/hls/parts/{file}`
    HlsPart,
    /// `/api/v1/streams/{name}/playback-tokens`
    PlaybackTokens,
    /// `/api/v1/streams/{name}/hls/master.m3u8`
    MasterPlaylist,
    /// `/api/v1/streams/{name}/hls/live.m3u8`
    LivePlaylist,
    /// `/api/v1/streams/{name}/hls/archive.m3u8`
    ArchivePlaylist,
    /// No route takes the path, and it is under the API prefix (`/api/v1/...`).
    UnknownApi,
    /// No route takes the path, and it is outside the API (a typo of `/healthz`, `/favicon.ico`).
    Unknown,
}

/// The route a request matched, as [`attach`] puts it on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub kind: RouteKind,
    /// The route's `{name}` parameter, percent-decoded as the handlers see it; `None` on routes
    /// without one, and when it does not decode to UTF-8 (no handler would take it).
    pub stream: Option<String>,
}

/// Route templates (full paths, as axum's [`MatchedPath`] gives them) and their kinds.
pub struct RouteTable {
    kinds: HashMap<String, RouteKind>,
    /// Unmatched paths under this prefix are [`RouteKind::UnknownApi`].
    api_prefix: &'static str,
}

impl RouteTable {
    pub fn new(routes: &[(String, RouteKind)], api_prefix: &'static str) -> RouteTable {
        RouteTable {
            kinds: routes.iter().cloned().collect(),
            api_prefix,
        }
    }

    /// The kind of the route with template `matched`, or of an unmatched `path`.
    fn kind(&self, matched: Option<&str>, path: &str) -> RouteKind {
        match matched.and_then(|m| self.kinds.get(m)) {
            Some(kind) => *kind,
            None if path
                .strip_prefix(self.api_prefix)
                .is_some_and(|rest| rest.starts_with('/')) =>
            {
                RouteKind::UnknownApi
            }
            None => RouteKind::Unknown,
        }
    }
}

/// The middleware that puts the [`Matched`] route on every request; it must wrap (be layered
/// after) every middleware that reads it.
pub async fn attach(State(table): State<Arc<RouteTable>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let template = parts.extensions.get::<MatchedPath>().cloned();
    let kind = table.kind(template.as_ref().map(|m| m.as_str()), parts.uri.path());
    let stream = match RawPathParams::from_request_parts(&mut parts, &()).await {
        Ok(params) => params
            .iter()
            .find(|(key, _)| *key == "name")
            .map(|(_, value)| value.to_string()),
        Err(_) => None,
    };
    parts.extensions.insert(Matched { kind, stream });
    next.run(Request::from_parts(parts, body)).await
}

/// What [`attach`] would put on a request for `path`, for unit tests of auth and metrics:
/// the router's own table, matched by matchit (axum's matcher) and decoded the way axum decodes
/// path parameters.
#[cfg(test)]
pub fn matched_for_test(path: &str) -> Matched {
    let routes = super::route_templates();
    let mut matcher = matchit::Router::new();
    for (template, kind) in &routes {
        matcher.insert(template.as_str(), *kind).expect("route");
    }
    let table = RouteTable::new(&routes, super::API_PREFIX);
    match matcher.at(path) {
        Ok(m) => Matched {
            kind: *m.value,
            stream: m.params.get("name").and_then(|raw| {
                percent_encoding::percent_decode_str(raw)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned())
            }),
        },
        Err(_) => Matched {
            kind: table.kind(None, path),
            stream: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_own_kind() {
        let routes = super::super::route_templates();
        let mut kinds: Vec<RouteKind> = routes.iter().map(|(_, k)| *k).collect();
        kinds.sort_by_key(|k| format!("{k:?}"));
        let before = kinds.len();
        kinds.dedup();
        assert_eq!(kinds.len(), before, "two routes share a kind: {routes:?}");
    }

    #[test]
    fn matches_templates_and_decodes_the_stream() {
        assert_eq!(
            matched_for_test("/api/v1/streams/%63am/hls/live.m3u8"),
            Matched {
                kind: RouteKind::LivePlaylist,
                stream: Some("cam".into())
            }
        );
        assert_eq!(matched_for_test("/healthz").kind, RouteKind::Health);
        assert_eq!(matched_for_test("/ui/app.js").kind, RouteKind::UiAsset);
        assert_eq!(matched_for_test("/api/v1/nope").kind, RouteKind::UnknownApi);
        assert_eq!(matched_for_test("/api/v1").kind, RouteKind::Unknown);
        assert_eq!(matched_for_test("/favicon.ico").kind, RouteKind::Unknown);
        assert_eq!(matched_for_test("/api/v1/streams/%ff").stream, None);
    }
}
