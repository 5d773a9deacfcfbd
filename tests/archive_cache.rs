//! Settled archive playlists (`playback/archive_cache.rs`): a strong ETag, 304 to
//! `If-None-Match`, the same bytes as a fresh build, and never stale after media in the range
//! is removed or the stream is replaced; open and still-growing ranges keep their old
//! behaviour (no ETag, no long caching).

mod common;

use common::{client, get_json, upload_at, Server};
use reqwest::blocking::Response;
use serde_json::json;
use std::io::Read;

const SAMPLE: &str = "h264_aac_gop2s.mp4";
/// The sample: five 2 s fragments, each a segment.
const SAMPLE_MS: i64 = 10_000;
/// Between the two sessions each test records: over the span threshold, and longer than the
/// ranges asked for reach into it.
const GAP_MS: i64 = 60_000;
/// Sweeps run only when a test asks for one.
const CONFIG: &str = "[retention]\nsweep_interval_secs = 3600\n";

struct Got {
    status: u16,
    etag: Option<String>,
    cache_control: String,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

fn got(r: Response) -> Got {
    let h = r.headers().clone();
    let text = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    Got {
        status: r.status().as_u16(),
        etag: text("etag"),
        cache_control: text("cache-control").unwrap_or_default(),
        headers: h,
        body: r.bytes().expect("body").to_vec(),
    }
}

/// GET with extra request headers; reqwest here sends no `Accept-Encoding` of its own.
fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    got(req.send().expect("GET"))
}

/// A stream of two sessions, `GAP_MS` apart, the first one starting at `t0_ms`.
fn two_sessions(server: &Server, stream: &str, t0_ms: i64) {
    upload_at(server, stream, SAMPLE, t0_ms);
    upload_at(server, stream, SAMPLE, t0_ms + SAMPLE_MS + GAP_MS);
}

fn archive_url(server: &Server, stream: &str, start_ms: i64, end: &str) -> String {
    server.api(&format!(
        "/streams/{stream}/hls/archive.m3u8?start={start_ms}&end={end}"
    ))
}

fn fragment_count(server: &Server, stream: &str) -> i64 {
    get_json(&server.api(&format!("/streams/{stream}")))["fragment_count"]
        .as_i64()
        .expect("fragment_count")
}

fn create(server: &Server, body: serde_json::Value) {
    let r = client()
        .post(server.api("/streams"))
        .json(&body)
        .send()
        .expect("POST /streams");
    assert!(r.status().is_success(), "create: {}", r.text().unwrap());
}

/// A range that ends in the past, with a segment starting after its end: settled.
#[test]
fn settled_playlist_answers_304_and_is_byte_identical_to_a_fresh_build() {
    let root = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(root.path(), CONFIG);
    let t0 = common::now_ms() - 3_600_000;
    two_sessions(&server, "cam", t0);
    let url = archive_url(
        &server,
        "cam",
        t0,
        &(t0 + SAMPLE_MS + GAP_MS / 2).to_string(),
    );

    let first = get(&url, &[]);
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let etag = first.etag.clone().expect("a settled playlist has an ETag");
    assert!(etag.starts_with('"'), "strong ETag, not weak: {etag}");
    assert!(
        first.cache_control.contains("max-age=86400"),
        "{}",
        first.cache_control
    );
    let text = String::from_utf8(first.body.clone()).unwrap();
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    assert_eq!(text.matches("#EXTINF").count(), 5, "{text}");

    // Again: the same bytes under the same ETag.
    let again = get(&url, &[]);
    assert_eq!(again.status, 200);
    assert_eq!(again.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(again.body, first.body);

    // If-None-Match: the ETag, a list holding it, its weak form, and `*` are all 304, with
    // the ETag, the caching and the CORS headers a 200 has.
    let other = "\"a-not-this-one\"";
    let list = format!("{other}, {etag}");
    let weak = format!("W/{etag}");
    for inm in [etag.as_str(), list.as_str(), weak.as_str(), "*"] {
        let r = get(
            &url,
            &[("if-none-match", inm), ("origin", "http://player.test")],
        );
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.etag.as_deref(), Some(etag.as_str()), "{inm}");
        assert_eq!(r.cache_control, first.cache_control, "{inm}");
        assert_eq!(
            r.headers
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some("*"),
            "{inm}"
        );
    }
    // Any other validator: the full playlist.
    let r = get(&url, &[("if-none-match", other)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, first.body);

    // gzip: another representation, so another strong ETag; the same text inside.
    let gz = get(&url, &[("accept-encoding", "gzip")]);
    assert_eq!(gz.status, 200);
    assert_eq!(
        gz.headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let gz_etag = gz.etag.clone().expect("ETag");
    assert_ne!(gz_etag, etag);
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, first.body);
    let r = get(
        &url,
        &[("accept-encoding", "gzip"), ("if-none-match", &gz_etag)],
    );
    assert_eq!(r.status, 304);

    // A fresh build by a restarted server (nothing cached): the same bytes and ETag.
    server.stop();
    let server = Server::start_in(root.path(), CONFIG);
    let url = archive_url(
        &server,
        "cam",
        t0,
        &(t0 + SAMPLE_MS + GAP_MS / 2).to_string(),
    );
    let fresh = get(&url, &[]);
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.body, first.body, "cached bytes = a fresh build's");
    assert_eq!(fresh.etag.as_deref(), Some(etag.as_str()));
    // The restarted server honours the ETag the first one gave.
    assert_eq!(get(&url, &[("if-none-match", &etag)]).status, 304);
}

/// Retention (a quota here) removing media in a cached range: the next answer is rebuilt.
#[test]
fn a_sweep_removing_media_in_the_range_changes_the_playlist() {
    let server = Server::start_with_config(CONFIG);
    let t0 = common::now_ms() - 3_600_000;
    // About 0.93 MB of media: over the quota, so the first sweep removes the oldest.
    create(
        &server,
        json!({"name": "q", "retention_hours": 72, "retention_bytes": 600_000}),
    );
    two_sessions(&server, "q", t0);
    let all = fragment_count(&server, "q");
    let url = archive_url(&server, "q", t0, &(t0 + SAMPLE_MS + GAP_MS / 2).to_string());
    let before = get(&url, &[]);
    let etag = before.etag.clone().expect("settled");
    // Served from the cache now.
    assert_eq!(get(&url, &[("if-none-match", &etag)]).status, 304);
    assert_eq!(fragment_count(&server, "q"), all, "nothing swept yet");

    let r = client()
        .post(server.api("/retention/sweep"))
        .send()
        .expect("sweep");
    assert!(r.status().is_success());
    let left = fragment_count(&server, "q");
    assert!(
        left < all,
        "the sweep removed nothing ({left} of {all} left)"
    );

    let after = get(&url, &[]);
    assert_eq!(after.status, 200);
    assert_ne!(after.body, before.body, "the removed segments are gone");
    assert_ne!(after.etag, before.etag);
    assert_eq!(get(&url, &[("if-none-match", &etag)]).status, 200);
    let text = String::from_utf8(after.body).unwrap();
    assert!(
        text.matches("#EXTINF").count() < 5,
        "removed segments still listed: {text}"
    );
}

/// A stream deleted and created again under the same name: its old playlist is never served.
#[test]
fn a_stream_deleted_and_recreated_gets_a_new_playlist() {
    let server = Server::start_with_config(CONFIG);
    let t0 = common::now_ms() - 3_600_000;
    two_sessions(&server, "re", t0);
    let end = (t0 + SAMPLE_MS + GAP_MS / 2).to_string();
    let url = archive_url(&server, "re", t0, &end);
    let old = get(&url, &[]);
    let etag = old.etag.clone().expect("settled");
    assert_eq!(get(&url, &[("if-none-match", &etag)]).status, 304);

    let r = client()
        .delete(server.api("/streams/re"))
        .send()
        .expect("DELETE");
    assert!(r.status().is_success());
    // Recorded again 4 s later in the same range: other segment times.
    two_sessions(&server, "re", t0 + 4_000);
    let new = get(&url, &[]);
    assert_eq!(new.status, 200);
    assert_ne!(new.body, old.body);
    assert_ne!(new.etag, old.etag);
    assert_eq!(get(&url, &[("if-none-match", &etag)]).status, 200);
}

/// Open, relative, future and still-growing ranges behave as before: no ETag, no 304, no
/// long caching; a producer adding to a range whose recording stopped inside it is seen at
/// once.
#[test]
fn open_and_growing_ranges_are_not_settled() {
    let server = Server::start_with_config(CONFIG);
    let t0 = common::now_ms() - 3_600_000;
    upload_at(&server, "open", SAMPLE, t0);
    let in_an_hour = (common::now_ms() + 3_600_000).to_string();
    // Ends after the recording stopped, with nothing recorded after it: still growing.
    let growing_end = (t0 + SAMPLE_MS + GAP_MS).to_string();
    let cases = [
        (
            server.api(&format!("/streams/open/hls/archive.m3u8?start={t0}")),
            "no-cache",
        ),
        (archive_url(&server, "open", t0, "now"), "no-cache"),
        (archive_url(&server, "open", t0, &in_an_hour), "no-cache"),
        (
            archive_url(&server, "open", t0, &growing_end),
            "public, max-age=60",
        ),
    ];
    for (url, cache_control) in &cases {
        for _ in 0..2 {
            let r = get(url, &[("if-none-match", "*")]);
            assert_eq!(r.status, 200, "{url}");
            assert_eq!(r.etag, None, "{url}");
            assert_eq!(&r.cache_control, cache_control, "{url}");
        }
    }
    // The growing range takes a new session placed inside it.
    let growing = archive_url(&server, "open", t0, &growing_end);
    let before = get(&growing, &[]).body;
    upload_at(&server, "open", SAMPLE, t0 + SAMPLE_MS + GAP_MS / 4);
    let after = get(&growing, &[]).body;
    let count = |b: &[u8]| String::from_utf8_lossy(b).matches("#EXTINF").count();
    assert_eq!(count(&before), 5);
    assert_eq!(count(&after), 10, "{}", String::from_utf8_lossy(&after));
    assert_eq!(get(&growing, &[]).etag, None, "still nothing after its end");
    // A session starting after the range's end settles it, and adds nothing to it.
    upload_at(&server, "open", SAMPLE, t0 + SAMPLE_MS + GAP_MS + 1_000);
    let r = get(&growing, &[]);
    assert!(
        r.etag.is_some(),
        "settled once a segment starts after its end"
    );
    assert_eq!(r.body, after);
}
