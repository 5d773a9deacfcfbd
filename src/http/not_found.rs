//! The answer for a path no route takes: a 404 that names the route the client most likely
//! meant (`/api/v1/stream/cam1` → `/api/v1/streams/cam1`), or else lists the top-level routes.
//! "No such endpoint" alone sends a person to the source to find the right spelling.
//!
//! The route list is the router's own (`http::router` collects it while adding the routes), so
//! a hint can never name a route that does not exist. Matching is by path segment: a template's
//! placeholder (`{name}`) takes any segment, a literal costs its edit distance (a segment that
//! is a prefix of the literal, like `live` for `live.m3u8`, costs 1), and a missing or extra
//! segment costs its length. The `/api/v1` prefix is tried too, for paths written without it or
//! with another version.

use crate::error::Error;

/// Largest total cost still taken as a typo of a route (a plural `s`, a missing extension, a
/// swapped letter or two); beyond it the answer lists the routes instead of guessing.
const MAX_HINT_COST: usize = 3;
/// Cost of a template placeholder the path does not supply: the hint would have to leave it
/// unfilled, which is a guess, not a correction.
const MISSING_PLACEHOLDER_COST: usize = 10;

/// The 404 for `path` (with its `query`, kept in the hint), given every route template.
pub fn error(routes: &[String], path: &str, query: Option<&str>) -> Error {
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    let message = match closest(routes, path) {
        Some(hint) => format!("no such endpoint: {path}; did you mean {hint}{query}?"),
        None => format!(
            "no such endpoint: {path}; the routes are {} (every route and its parameters: GET \
             /api/v1/openapi.json)",
            top_level(routes).join(", ")
        ),
    };
    Error::not_found(message)
}

/// Routes of at most four segments (`/api/v1/streams/{name}` and above): the map of the API.
fn top_level(routes: &[String]) -> Vec<&str> {
    routes
        .iter()
        .filter(|r| !r.starts_with("/ui/") && segments(r).len() <= 4)
        .map(String::as_str)
        .collect()
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn is_placeholder(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// The route `path` most likely meant, filled in with the path's own segments.
pub fn closest(routes: &[String], path: &str) -> Option<String> {
    let given = segments(path);
    // The path as given, with `/api/v1` put in front, and with its first one or two segments
    // replaced by `/api/v1` (`/api/v2/...`, `/api/streams/...`, `/v1/streams/...`).
    let is_version = |s: &str| {
        s.strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut candidates: Vec<(Vec<&str>, usize)> = vec![(given.clone(), 0)];
    let mut prefixed = vec!["api", "v1"];
    prefixed.extend(&given);
    candidates.push((prefixed, 1));
    let skip = match given.as_slice() {
        ["api", v, ..] if is_version(v) => 2,
        ["api", ..] => 1,
        [v, ..] if is_version(v) => 1,
        _ => 0,
    };
    if skip > 0 {
        let mut replaced = vec!["api", "v1"];
        replaced.extend(&given[skip..]);
        candidates.push((replaced, 1));
    }
    let mut best: Option<(usize, String)> = None;
    for route in routes {
        let template = segments(route);
        // `/` is no correction of anything (every short path is close to it), nor is the UI's
        // asset wildcard (which takes any path): people do not type either.
        if template.is_empty() || template.iter().any(|t| t.starts_with("{*")) {
            continue;
        }
        for (path, extra) in &candidates {
            let (cost, filled) = align(path, &template);
            let cost = cost + extra;
            if cost <= MAX_HINT_COST && best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, format!("/{}", filled.join("/"))));
            }
        }
    }
    best.map(|(_, hint)| hint)
}

/// Edit distance over segments between `path` and `template`, and the template filled in with
/// the path segments its placeholders took.
fn align(path: &[&str], template: &[&str]) -> (usize, Vec<String>) {
    let (n, m) = (path.len(), template.len());
    // cost[i][j]: aligning path[..i] with template[..j].
    let mut cost = vec![vec![0usize; m + 1]; n + 1];
    for i in 1..=n {
        cost[i][0] = cost[i - 1][0] + path[i - 1].len().max(1);
    }
    for j in 1..=m {
        cost[0][j] = cost[0][j - 1] + insert_cost(template[j - 1]);
    }
    for i in 1..=n {
        for j in 1..=m {
            let take = cost[i - 1][j - 1] + segment_cost(path[i - 1], template[j - 1]);
            let drop = cost[i - 1][j] + path[i - 1].len().max(1);
            let add = cost[i][j - 1] + insert_cost(template[j - 1]);
            cost[i][j] = take.min(drop).min(add);
        }
    }
    // Walk back to fill the template.
    let mut filled = Vec::with_capacity(m);
    let (mut i, mut j) = (n, m);
    while j > 0 {
        if i > 0 && cost[i][j] == cost[i - 1][j - 1] + segment_cost(path[i - 1], template[j - 1]) {
            let t = template[j - 1];
            filled.push(if is_placeholder(t) { path[i - 1] } else { t }.to_string());
            i -= 1;
            j -= 1;
        } else if i > 0 && cost[i][j] == cost[i - 1][j] + path[i - 1].len().max(1) {
            i -= 1;
        } else {
            filled.push(template[j - 1].to_string());
            j -= 1;
        }
    }
    filled.reverse();
    (cost[n][m], filled)
}

fn insert_cost(template_segment: &str) -> usize {
    if is_placeholder(template_segment) {
        MISSING_PLACEHOLDER_COST
    } else {
        template_segment.len()
    }
}

fn segment_cost(given: &str, template_segment: &str) -> usize {
    if is_placeholder(template_segment) {
        return 0;
    }
    if given == template_segment {
        return 0;
    }
    if !given.is_empty() && template_segment.starts_with(given) {
        return 1;
    }
    levenshtein(given, template_segment)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<String> {
        [
            "/",
            "/healthz",
            "/metrics",
            "/ui/{*path}",
            "/api/v1/openapi.json",
            "/api/v1/streams",
            "/api/v1/streams/{name}",
            "/api/v1/streams/{name}/ingest",
            "/api/v1/streams/{name}/fragments",
            "/api/v1/streams/{name}/frame.jpg",
            "/api/v1/streams/{name}/frame.png",
            "/api/v1/streams/{name}/frames",
            "/api/v1/streams/{name}/clip.mp4",
            "/api/v1/streams/{name}/hls/live.m3u8",
            "/api/v1/streams/{name}/hls/archive.m3u8",
            "/api/v1/events",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn typos_get_the_route_they_meant() {
        let r = routes();
        for (given, meant) in [
            ("/api/v1/stream/cam1", "/api/v1/streams/cam1"),
            ("/api/v1/stream", "/api/v1/streams"),
            (
                "/api/v1/streams/cam1/fragment",
                "/api/v1/streams/cam1/fragments",
            ),
            ("/api/v1/streams/cam1/clip", "/api/v1/streams/cam1/clip.mp4"),
            (
                "/api/v1/streams/cam1/hls/live",
                "/api/v1/streams/cam1/hls/live.m3u8",
            ),
            (
                "/api/v1/streams/cam1/hls/archive.m3u8/",
                "/api/v1/streams/cam1/hls/archive.m3u8",
            ),
            ("/streams/cam1", "/api/v1/streams/cam1"),
            ("/api/v2/streams/cam1/ingest", "/api/v1/streams/cam1/ingest"),
            ("/api/streams", "/api/v1/streams"),
            ("/v1/streams/cam1", "/api/v1/streams/cam1"),
            ("/healtz", "/healthz"),
        ] {
            assert_eq!(closest(&r, given).as_deref(), Some(meant), "{given}");
        }
    }

    #[test]
    fn no_guess_for_what_is_far_from_every_route() {
        let r = routes();
        for given in [
            "/wp-admin/login.php",
            "/api/v1/cameras/cam1/recordings",
            "/x/y/z/w",
            "/foo",
        ] {
            assert_eq!(closest(&r, given), None, "{given}");
        }
        let e = error(&r, "/wp-admin/login.php", None);
        assert!(
            e.message.contains("/api/v1/streams/{name}"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("hls/live.m3u8"), "{}", e.message);
        assert!(!e.message.contains("/ui/"), "{}", e.message);
    }

    #[test]
    fn the_hint_keeps_the_query() {
        let e = error(&routes(), "/api/v1/stream/cam1", Some("x=1"));
        assert!(
            e.message.contains("did you mean /api/v1/streams/cam1?x=1?"),
            "{}",
            e.message
        );
    }

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("stream", "streams"), 1);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
