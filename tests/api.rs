//! The HTTP API against the real binary: stream CRUD, ingest (long upload, NDJSON acks, segment
//! files), reading fragments back, and the time rules of DESIGN.md.

mod common;

use common::raw_http::RawUpload;
use common::{
    all_fragments, assert_error, client, get_bytes, get_json, json_of, now_us, put_segment_file,
    sample, split_sample_raw, Server,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tapedeck::fmp4::{fragment_facts, InitFacts};

const GOP2S: &str = "h264_aac_gop2s.mp4";
/// The content-type header line of the raw uploads here.
const VIDEO_MP4: &str = "Content-Type: video/mp4\r\n";

// ---------------------------------------------------------------------------------------------
// Local helpers

/// Status and JSON body of a response; the body must be JSON.
fn create(server: &Server, body: Value) -> reqwest::blocking::Response {
    client()
        .post(server.api("/streams"))
        .json(&body)
        .send()
        .expect("POST /streams")
}

/// One whole upload with `PUT .../ingest[?query]`; returns status and JSON body.
fn upload(server: &Server, stream: &str, query: &str, body: Vec<u8>) -> (u16, Value) {
    let mut url = server.api(&format!("/streams/{stream}/ingest"));
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    json_of(client().put(url).body(body).send().expect("PUT ingest"))
}

fn upload_file(server: &Server, stream: &str, query: &str, name: &str) -> (u16, Value) {
    upload(
        server,
        stream,
        query,
        std::fs::read(sample(name)).expect("sample"),
    )
}

fn describe(server: &Server, stream: &str) -> Value {
    get_json(&server.api(&format!("/streams/{stream}")))
}

fn ndjson_lines(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}")))
        .collect()
}

fn sessions(server: &Server, stream: &str) -> Vec<Value> {
    get_json(&server.api(&format!("/streams/{stream}/sessions")))["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Fragments stored so far; 0 while the stream does not exist yet.
fn stored_count(server: &Server, stream: &str) -> usize {
    let r = client()
        .get(server.api(&format!("/streams/{stream}/fragments?limit=1000")))
        .send()
        .unwrap();
    if r.status() == 404 {
        return 0;
    }
    let v: Value = r.json().unwrap();
    v["fragments"].as_array().map_or(0, |a| a.len())
}

fn numbers(frags: &[Value]) -> Vec<i64> {
    frags
        .iter()
        .map(|f| f["fragment"].as_i64().unwrap())
        .collect()
}

fn fragments_query(server: &Server, stream: &str, query: &str) -> Value {
    get_json(&server.api(&format!("/streams/{stream}/fragments?{query}")))
}

// ---------------------------------------------------------------------------------------------
// Streams

#[test]
fn create_describe_and_duplicate() {
    let server = Server::start();
    let before = now_us();
    let r = create(
        &server,
        json!({"name": "cam1", "retention_hours": 24, "tags": {"site": "north"}}),
    );
    let (status, created) = json_of(r);
    assert_eq!(status, 201, "{created}");
    let d = describe(&server, "cam1");
    for v in [&created, &d] {
        assert_eq!(v["name"], "cam1");
        assert_eq!(v["status"], "empty");
        assert_eq!(v["retention_hours"], 24);
        assert_eq!(v["tags"], json!({"site": "north"}));
        assert_eq!(v["fragment_count"], 0);
        assert_eq!(v["bytes"], 0);
        assert!(v["first_time"].is_null(), "{v}");
        assert!(v["last_time"].is_null(), "{v}");
        assert!(v["codecs"].is_null(), "{v}");
        assert!(v["resolution"].is_null(), "{v}");
        assert_eq!(v["producer_connected"], false);
        let created_us =
            tapedeck::timefmt::parse_time_us("created", v["created"].as_str().unwrap())
                .expect("created is RFC 3339");
        assert!(
            created_us >= before - 1_000_000 && created_us <= now_us() + 1_000_000,
            "created {} is not the server clock at creation",
            v["created"]
        );
    }
    // Without retention: the configured default (72 h).
    let (status, v) = json_of(create(&server, json!({"name": "cam2"})));
    assert_eq!(status, 201);
    assert_eq!(v["retention_hours"], 72);
    assert_eq!(v["tags"], json!({}));

    let e = assert_error(create(&server, json!({"name": "cam1"})), 409, "CONFLICT");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("cam1"),
        "{e}"
    );
    // The duplicate changed nothing.
    assert_eq!(describe(&server, "cam1")["retention_hours"], 24);
}

#[test]
fn list_with_prefix_and_paging() {
    let server = Server::start();
    for n in ["pg-3", "pg-1", "other", "pg-5", "pg-2", "pg-4", "pgx"] {
        assert_eq!(create(&server, json!({ "name": n })).status(), 201, "{n}");
    }
    let mut seen = Vec::new();
    let mut url = server.api("/streams?prefix=pg-&limit=2");
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 5, "paging does not end");
        let page = get_json(&url);
        let streams = page["streams"].as_array().unwrap();
        assert!(streams.len() <= 2, "{page}");
        seen.extend(
            streams
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(next) => url = server.api(&format!("/streams?prefix=pg-&limit=2&after={next}")),
            None => break,
        }
    }
    assert_eq!(seen, ["pg-1", "pg-2", "pg-3", "pg-4", "pg-5"]);
    assert_eq!(pages, 3);

    let all = get_json(&server.api("/streams"));
    let names: Vec<&str> = all["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["other", "pg-1", "pg-2", "pg-3", "pg-4", "pg-5", "pgx"]
    );
    assert!(all["next"].is_null());
    // List entries are describe documents.
    assert_eq!(all["streams"][0]["status"], "empty");

    let none = get_json(&server.api("/streams?prefix=zzz"));
    assert_eq!(none["streams"], json!([]));
    assert!(none["next"].is_null());
}

#[test]
fn describe_unknown_is_404() {
    let server = Server::start();
    let r = client().get(server.api("/streams/nope")).send().unwrap();
    let e = assert_error(r, 404, "NOT_FOUND");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("nope"),
        "{e}"
    );
    for path in [
        "/streams/nope/fragments",
        "/streams/nope/sessions",
        "/streams/nope/fragments/1",
    ] {
        let r = client().get(server.api(path)).send().unwrap();
        assert_error(r, 404, "NOT_FOUND");
    }
    let r = client()
        .patch(server.api("/streams/nope"))
        .json(&json!({"retention_hours": 1}))
        .send()
        .unwrap();
    assert_error(r, 404, "NOT_FOUND");
    let r = client().delete(server.api("/streams/nope")).send().unwrap();
    assert_error(r, 404, "NOT_FOUND");
}

#[test]
fn patch_retention_and_tags() {
    let server = Server::start();
    assert_eq!(
        create(
            &server,
            json!({"name": "p", "retention_hours": 5, "tags": {"a": "1"}})
        )
        .status(),
        201
    );
    let (s, v) = json_of(
        client()
            .patch(server.api("/streams/p"))
            .json(&json!({"retention_hours": 48}))
            .send()
            .unwrap(),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["retention_hours"], 48);
    assert_eq!(v["tags"], json!({"a": "1"}), "tags untouched when absent");
    let (s, v) = json_of(
        client()
            .patch(server.api("/streams/p"))
            .json(&json!({"tags": {"b": "2", "c": ""}}))
            .send()
            .unwrap(),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["retention_hours"], 48, "retention untouched when absent");
    assert_eq!(v["tags"], json!({"b": "2", "c": ""}), "tags are replaced");
    let d = describe(&server, "p");
    assert_eq!(d["retention_hours"], 48);
    assert_eq!(d["tags"], json!({"b": "2", "c": ""}));
}

/// A hold protects media from retention, not from deleting its stream: the stream's rows and
/// files are purged (the holds row once blocked the purge on its foreign key, for ever).
#[test]
fn deleting_a_stream_with_a_hold_purges_it() {
    let server = Server::start();
    let (s, v) = upload_file(&server, "held", "", GOP2S);
    assert_eq!(s, 200, "{v}");
    let r = client()
        .post(server.api("/streams/held/holds"))
        .json(&json!({"start": "earliest", "end": "now", "reason": "incident"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let streams_dir = server.data_dir.join("streams");
    let dirs = || std::fs::read_dir(&streams_dir).map_or(0, |d| d.count());
    assert_eq!(dirs(), 1, "one stream directory before the delete");
    let r = client().delete(server.api("/streams/held")).send().unwrap();
    assert_eq!(r.status(), 204);
    common::wait_until(
        "the deleted stream's files are purged",
        Duration::from_secs(10),
        || dirs() == 0,
    );
    assert!(
        !server.log().contains("purging deleted stream failed"),
        "{}",
        server.log()
    );
}

#[test]
fn delete_then_recreate_starts_empty() {
    let server = Server::start();
    let (s, v) = upload_file(&server, "d", "", GOP2S);
    assert_eq!(s, 200, "{v}");
    assert_eq!(all_fragments(&server, "d").len(), 5);

    let r = client().delete(server.api("/streams/d")).send().unwrap();
    assert_eq!(r.status(), 204);
    assert_error(
        client().get(server.api("/streams/d")).send().unwrap(),
        404,
        "NOT_FOUND",
    );
    assert_error(
        client()
            .get(server.api("/streams/d/fragments/1"))
            .send()
            .unwrap(),
        404,
        "NOT_FOUND",
    );
    assert_error(
        client().delete(server.api("/streams/d")).send().unwrap(),
        404,
        "NOT_FOUND",
    );

    let (s, v) = json_of(create(&server, json!({"name": "d"})));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["fragment_count"], 0);
    assert_eq!(v["bytes"], 0);
    assert!(v["first_time"].is_null() && v["last_time"].is_null(), "{v}");
    assert!(
        v["codecs"].is_null(),
        "old init leaked into the new stream: {v}"
    );
    assert_eq!(all_fragments(&server, "d"), Vec::<Value>::new());
    assert_eq!(sessions(&server, "d"), Vec::<Value>::new());
    assert_error(
        client()
            .get(server.api("/streams/d/fragments/1"))
            .send()
            .unwrap(),
        404,
        "NOT_FOUND",
    );
    assert_error(
        client()
            .get(server.api("/streams/d/inits/1"))
            .send()
            .unwrap(),
        404,
        "NOT_FOUND",
    );
    // The new stream takes new media normally.
    let (s, v) = upload_file(&server, "d", "", GOP2S);
    assert_eq!(s, 200, "{v}");
    assert_eq!(all_fragments(&server, "d").len(), 5);
    assert_eq!(describe(&server, "d")["fragment_count"], 5);
}

#[test]
fn stream_names() {
    let server = Server::start();
    let long = "n".repeat(256);
    let (s, v) = json_of(create(&server, json!({ "name": long })));
    assert_eq!(s, 201, "{v}");
    assert_eq!(describe(&server, &long)["name"], long.as_str());
    for ok in ["a", "A-Z_0.9", "cam.front-door_2"] {
        assert_eq!(create(&server, json!({ "name": ok })).status(), 201, "{ok}");
    }

    let too_long = "n".repeat(257);
    for bad in [
        too_long.as_str(),
        "a b",
        "a/b",
        "ü",
        "",
        ".",
        "..",
        "a%20b",
        "x\ny",
    ] {
        let e = assert_error(
            create(&server, json!({ "name": bad })),
            400,
            "INVALID_ARGUMENT",
        );
        assert!(
            e["error"]["message"].as_str().unwrap().contains("name"),
            "{bad:?}: {e}"
        );
    }
    // The same names in the path, percent-encoded as a client sends them.
    for path in [
        too_long.as_str(),
        "a%20b",
        "a%2Fb",
        "%C3%BC",
        "a%00b",
        // ("%2E" and "%2E%2E" are left out: the client normalizes them away as dot-segments.)
    ] {
        for url in [
            server.api(&format!("/streams/{path}")),
            server.api(&format!("/streams/{path}/fragments")),
        ] {
            let r = client().get(&url).send().unwrap();
            assert_error(r, 400, "INVALID_ARGUMENT");
        }
        let r = client()
            .put(server.api(&format!("/streams/{path}/ingest")))
            .body(std::fs::read(sample(GOP2S)).unwrap())
            .send()
            .unwrap();
        assert_error(r, 400, "INVALID_ARGUMENT");
    }
    // Nothing was created by the refused requests.
    let names: Vec<String> = get_json(&server.api("/streams"))["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
fn stream_name_with_invalid_utf8_escape_is_json_400() {
    // %FF is not UTF-8: the path cannot be a stream name. The error must still be JSON.
    let server = Server::start();
    let r = client().get(server.api("/streams/%FF")).send().unwrap();
    assert_error(r, 400, "INVALID_ARGUMENT");
}

#[test]
fn unknown_route_is_404_json() {
    let server = Server::start();
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v2/streams",
        "/api/v1/streams/a/b/c/d",
    ] {
        let r = client().get(server.url(path)).send().unwrap();
        assert_error(r, 404, "NOT_FOUND");
    }
}

#[test]
fn wrong_method_is_json_error() {
    // DESIGN.md: every error body is JSON. A known path with a method it does not take.
    let server = Server::start();
    let r = client().delete(server.api("/streams")).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let text = r.text().unwrap_or_default();
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("405 body is not JSON: {text:?}"));
    assert!(v["error"]["code"].is_string(), "{v}");
}

// ---------------------------------------------------------------------------------------------
// Ingest

#[test]
fn ingest_auto_creates_by_default() {
    let server = Server::start();
    let (s, v) = upload_file(&server, "auto", "", GOP2S);
    assert_eq!(s, 200, "{v}");
    let d = describe(&server, "auto");
    assert_eq!(d["fragment_count"], 5);
    assert_eq!(d["retention_hours"], 72);
}

#[test]
fn ingest_without_auto_create_is_404() {
    let server = Server::start_with_config("[ingest]\nauto_create = false\n");
    let r = client()
        .put(server.api("/streams/unknown/ingest"))
        .body(std::fs::read(sample(GOP2S)).unwrap())
        .send()
        .unwrap();
    let e = assert_error(r, 404, "NOT_FOUND");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("auto_create"),
        "{e}"
    );
    // Same with NDJSON acks requested, and for segment files.
    let r = client()
        .put(server.api("/streams/unknown/ingest"))
        .header("Accept", "application/x-ndjson")
        .body(std::fs::read(sample(GOP2S)).unwrap())
        .send()
        .unwrap();
    assert_error(r, 404, "NOT_FOUND");
    let (init, _) = split_sample_raw(GOP2S);
    let r = client()
        .put(server.api("/streams/unknown/ingest/init.mp4"))
        .body(init)
        .send()
        .unwrap();
    assert_error(r, 404, "NOT_FOUND");
    assert_error(
        client().get(server.api("/streams/unknown")).send().unwrap(),
        404,
        "NOT_FOUND",
    );
    // A created stream takes the upload.
    assert_eq!(create(&server, json!({"name": "unknown"})).status(), 201);
    let (s, v) = upload_file(&server, "unknown", "", GOP2S);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["fragments"], 5);
}

#[test]
fn ingest_summary_and_fragment_reads() {
    let server = Server::start();
    let started = now_us();
    let (s, v) = upload_file(&server, "cam", "", GOP2S);
    let finished = now_us();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stream"], "cam");
    assert!(v["session"].as_i64().unwrap() >= 1, "{v}");
    assert_eq!(v["first_fragment"], 1);
    assert_eq!(v["last_fragment"], 5);
    assert_eq!(v["fragments"], 5);
    assert_eq!(v["refused"], 0);
    let media = v["media_duration_us"].as_i64().unwrap();
    assert!(
        (media - 10_000_000).abs() < 100_000,
        "media_duration_us {media}"
    );

    let frags = all_fragments(&server, "cam");
    assert_eq!(numbers(&frags), [1, 2, 3, 4, 5]);
    let total: i64 = frags
        .iter()
        .map(|f| f["size_bytes"].as_i64().unwrap())
        .sum();
    assert_eq!(v["bytes"].as_i64().unwrap(), total);
    let (init_bytes, raws) = split_sample_raw(GOP2S);
    for (i, f) in frags.iter().enumerate() {
        assert_eq!(f["session"], v["session"]);
        assert!(f["keyframe"].as_bool().unwrap(), "{f}");
        let d = f["duration_us"].as_i64().unwrap();
        assert!((d - 2_000_000).abs() < 50_000, "{f}");
        // No times given: the server clock at the first fragment, then media time.
        let p = f["producer_time_us"].as_i64().unwrap();
        if i == 0 {
            assert!(p >= started - 1000 && p <= finished, "{f}");
        } else {
            let prev = &frags[i - 1];
            assert_eq!(
                p,
                prev["producer_time_us"].as_i64().unwrap() + prev["duration_us"].as_i64().unwrap(),
                "fragments follow each other: {prev} {f}"
            );
        }
        let st = f["server_time_us"].as_i64().unwrap();
        assert!(st >= started && st <= finished, "{f}");
        assert_eq!(
            tapedeck::timefmt::parse_time_us("t", f["producer_time"].as_str().unwrap()).unwrap(),
            p
        );
        // Stored bytes: a moof of the advertised size; it grows only by the tfdt rewrite.
        let bytes = get_bytes(&server.url(f["url"].as_str().unwrap()));
        assert_eq!(bytes.len() as i64, f["size_bytes"].as_i64().unwrap());
        assert_eq!(&bytes[4..8], b"moof");
        let raw_len = raws[i].bytes.len();
        assert!(
            bytes.len() >= raw_len && bytes.len() <= raw_len + 64,
            "stored {} bytes for a {raw_len}-byte fragment",
            bytes.len()
        );
    }
    let r = client()
        .get(server.api("/streams/cam/fragments/1"))
        .send()
        .unwrap();
    assert_eq!(r.headers()["content-type"], "video/iso.segment");
    assert_eq!(
        r.headers()["x-tapedeck-init"].to_str().unwrap(),
        frags[0]["init"].to_string()
    );

    let init_id = frags[0]["init"].as_i64().unwrap();
    let init = get_bytes(&server.api(&format!("/streams/cam/inits/{init_id}")));
    assert_eq!(&init[4..8], b"ftyp");
    assert_eq!(init, init_bytes, "the init is stored as sent");
    let init_mp4 = get_bytes(&server.api(&format!("/streams/cam/inits/{init_id}.mp4")));
    assert_eq!(init_mp4, init);

    let d = describe(&server, "cam");
    assert_eq!(d["codecs"], "avc1.64001e,mp4a.40.2");
    assert_eq!(d["resolution"], "640x360");
    assert_eq!(d["fragment_count"], 5);
    assert_eq!(d["bytes"].as_i64().unwrap(), total);
    assert_eq!(d["status"], "idle");
    assert_eq!(d["producer_connected"], false);
    assert_eq!(d["first_time"], frags[0]["producer_time"]);
    let end_us =
        frags[4]["producer_time_us"].as_i64().unwrap() + frags[4]["duration_us"].as_i64().unwrap();
    // The stream ends where its last media of any track ends: the sample's audio runs a little
    // (under 100 ms) past its video.
    let last_time =
        tapedeck::timefmt::parse_time_us("t", d["last_time"].as_str().unwrap()).unwrap();
    assert!(
        (end_us..end_us + 100_000).contains(&last_time),
        "{last_time} vs video end {end_us}"
    );

    // time=producer ranges: [start, end) selects fragments overlapping it.
    let t = |i: usize| frags[i]["producer_time_us"].as_i64().unwrap();
    let page = fragments_query(
        &server,
        "cam",
        &format!("start={}&end={}", (t(1) / 1000) + 500, t(3) / 1000),
    );
    assert_eq!(
        numbers(page["fragments"].as_array().unwrap()),
        [2, 3],
        "fragment 2 overlaps start and is included; fragment 4 starts at/after end: {page}"
    );
    assert!(page["next"].is_null());
    // RFC 3339 times as the API prints them.
    let page = fragments_query(
        &server,
        "cam",
        &format!(
            "time=producer&start={}&end={}",
            frags[2]["producer_time"].as_str().unwrap(),
            frags[3]["producer_time"].as_str().unwrap()
        ),
    );
    assert_eq!(numbers(page["fragments"].as_array().unwrap()), [3]);
    let page = fragments_query(&server, "cam", &format!("start={}", t(4) / 1000 + 1));
    assert_eq!(numbers(page["fragments"].as_array().unwrap()), [5]);
    let page = fragments_query(&server, "cam", &format!("end={}", t(1) / 1000 + 1));
    assert_eq!(numbers(page["fragments"].as_array().unwrap()), [1, 2]);
    let page = fragments_query(&server, "cam", &format!("start={}", end_us / 1000 + 1));
    assert_eq!(page["fragments"], json!([]));
    let page = fragments_query(&server, "cam", &format!("end={}", t(0) / 1000 - 1000));
    assert_eq!(page["fragments"], json!([]));

    // time=server: when each fragment became durable.
    let page = fragments_query(
        &server,
        "cam",
        &format!(
            "time=server&start={}&end={}",
            started / 1000,
            finished / 1000 + 1
        ),
    );
    assert_eq!(
        numbers(page["fragments"].as_array().unwrap()),
        [1, 2, 3, 4, 5]
    );
    let page = fragments_query(
        &server,
        "cam",
        &format!("time=server&start={}", finished / 1000 + 1),
    );
    assert_eq!(page["fragments"], json!([]));

    // Paging: limit + after, following next.
    let mut got = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 10);
        let page = fragments_query(&server, "cam", &format!("limit=2&after={after}"));
        let fr = page["fragments"].as_array().unwrap();
        assert!(fr.len() <= 2);
        got.extend(numbers(fr));
        match page["next"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(got, [1, 2, 3, 4, 5]);
    // Paging inside a time range.
    let page = fragments_query(
        &server,
        "cam",
        &format!("start={}&limit=2&after=3", t(1) / 1000 + 500),
    );
    assert_eq!(numbers(page["fragments"].as_array().unwrap()), [4, 5]);
}

#[test]
fn stored_tfdt_is_producer_time() {
    let server = Server::start();
    let (s, v) = upload_file(
        &server,
        "tf",
        "producer_start=2026-01-02T03:04:05.678Z",
        GOP2S,
    );
    assert_eq!(s, 200, "{v}");
    let (_, raws) = split_sample_raw(GOP2S);
    let frags = all_fragments(&server, "tf");
    assert_eq!(frags.len(), 5);
    let init_id = frags[0]["init"].as_i64().unwrap();
    let init = get_bytes(&server.api(&format!("/streams/tf/inits/{init_id}")));
    let facts = InitFacts::parse(&init).expect("stored init parses");
    let original_facts = InitFacts::parse(&init).unwrap();
    for (f, raw) in frags.iter().zip(&raws) {
        let bytes = get_bytes(&server.api(&format!("/streams/tf/fragments/{}", f["fragment"])));
        let ff = fragment_facts(&facts, &bytes).expect("stored fragment parses");
        let run = ff.reference_run();
        let ts = i128::from(run.timescale);
        let producer_us = i128::from(f["producer_time_us"].as_i64().unwrap());
        let expected_ticks = producer_us * ts / 1_000_000;
        let tfdt = i128::from(run.base_media_decode_time);
        assert!(
            (tfdt - expected_ticks).abs() <= 1,
            "fragment {}: tfdt {tfdt} / {ts} is not producer time {producer_us} us",
            f["fragment"]
        );
        // The index keeps the producer's original media time of the reference track.
        let orig = fragment_facts(&original_facts, &raw.bytes).unwrap();
        assert_eq!(
            f["media_time"].as_i64().unwrap(),
            orig.reference_run().base_media_decode_time as i64
        );
        assert_eq!(f["timescale"].as_i64().unwrap(), i64::from(run.timescale));
        // Every track moved by the same wall-clock offset: audio stays in sync.
        for (new_run, old_run) in ff.tracks.iter().zip(&orig.tracks) {
            let ts = i128::from(new_run.timescale);
            let shift_us = (i128::from(new_run.base_media_decode_time)
                - i128::from(old_run.base_media_decode_time))
                * 1_000_000
                / ts;
            let ref_shift_us = (tfdt - i128::from(orig.reference_run().base_media_decode_time))
                * 1_000_000
                / i128::from(run.timescale);
            // Each track's shift is rounded down to its own tick.
            let slack = 1_000_000 / ts + 1_000_000 / i128::from(run.timescale) + 1;
            assert!(
                (shift_us - ref_shift_us).abs() <= slack,
                "track {} moved by {shift_us} us, the reference track by {ref_shift_us} us",
                new_run.track_id
            );
            assert_eq!(new_run.sample_count, old_run.sample_count);
            assert_eq!(new_run.duration, old_run.duration);
        }
    }
    assert_eq!(
        frags[0]["producer_time"], "2026-01-02T03:04:05.678Z",
        "producer_start honoured"
    );
}

#[test]
fn uploads_without_times_append() {
    let server = Server::start();
    let (s, a) = upload_file(&server, "ap", "", GOP2S);
    assert_eq!(s, 200, "{a}");
    let (s, b) = upload_file(&server, "ap", "", GOP2S);
    assert_eq!(s, 200, "{b}");
    assert_ne!(a["session"], b["session"]);
    assert_eq!(b["first_fragment"], 6);
    assert_eq!(b["last_fragment"], 10);
    let frags = all_fragments(&server, "ap");
    assert_eq!(numbers(&frags), (1..=10).collect::<Vec<_>>());
    let last = &frags[4];
    let video_end =
        last["producer_time_us"].as_i64().unwrap() + last["duration_us"].as_i64().unwrap();
    // The end of the first session's media over all tracks (its audio runs past its video).
    let end = frags[5]["producer_time_us"].as_i64().unwrap();
    assert!(
        (video_end..video_end + 100_000).contains(&end),
        "{end} vs {video_end}"
    );
    assert_eq!(
        frags[5]["producer_time_us"].as_i64().unwrap(),
        end,
        "second session starts exactly at the end of the first (it arrived faster than real time)"
    );
    for w in frags.windows(2) {
        let end =
            w[0]["producer_time_us"].as_i64().unwrap() + w[0]["duration_us"].as_i64().unwrap();
        assert!(
            w[1]["producer_time_us"].as_i64().unwrap() >= end,
            "{} {}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn producer_start_honoured_in_both_formats() {
    let server = Server::start();
    let (s, v) = upload_file(&server, "ps1", "producer_start=2025-06-01T12:00:00Z", GOP2S);
    assert_eq!(s, 200, "{v}");
    let f = all_fragments(&server, "ps1");
    assert_eq!(f[0]["producer_time"], "2025-06-01T12:00:00Z");
    let t0 = f[0]["producer_time_us"].as_i64().unwrap();
    assert_eq!(t0, 1_748_779_200_000_000);
    for (i, fr) in f.iter().enumerate() {
        let p = fr["producer_time_us"].as_i64().unwrap();
        assert!((p - (t0 + i as i64 * 2_000_000)).abs() < 50_000, "{fr}");
    }
    // Epoch milliseconds.
    let (s, v) = upload_file(&server, "ps2", "producer_start=1748779200123", GOP2S);
    assert_eq!(s, 200, "{v}");
    let f = all_fragments(&server, "ps2");
    assert_eq!(f[0]["producer_time_us"], 1_748_779_200_123_000i64);
}

#[test]
fn producer_start_overlapping_the_stream_is_refused() {
    let server = Server::start();
    let t0_ms: i64 = 1_748_779_200_000;
    let (s, v) = upload_file(&server, "ov", &format!("producer_start={t0_ms}"), GOP2S);
    assert_eq!(s, 200, "{v}");
    let before = all_fragments(&server, "ov");
    // The stream's end: where its media of any track ends (the audio runs past the video).
    let end_us = tapedeck::timefmt::parse_time_us(
        "t",
        describe(&server, "ov")["last_time"].as_str().unwrap(),
    )
    .unwrap();

    // 5 s into the stored range: refused, nothing stored.
    let (s, v) = upload_file(
        &server,
        "ov",
        &format!("producer_start={}", t0_ms + 5000),
        GOP2S,
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("producer_start"), "{msg}");
    assert_eq!(v["summary"]["fragments"], 0, "{v}");
    assert_eq!(v["summary"]["refused"], 5, "{v}");
    assert_eq!(
        all_fragments(&server, "ov"),
        before,
        "nothing stored changed"
    );
    assert_eq!(describe(&server, "ov")["fragment_count"], 5);

    // 1.5 s overlap: still beyond the 1 s tolerance.
    let (s, v) = upload_file(
        &server,
        "ov",
        &format!("producer_start={}", end_us / 1000 - 1500),
        GOP2S,
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(all_fragments(&server, "ov"), before);

    // 0.5 s overlap: clock jitter, moved to the end of the stream.
    let (s, v) = upload_file(
        &server,
        "ov",
        &format!("producer_start={}", end_us / 1000 - 500),
        GOP2S,
    );
    assert_eq!(s, 200, "{v}");
    let after = all_fragments(&server, "ov");
    assert_eq!(after.len(), 10);
    assert_eq!(&after[..5], &before[..]);
    assert_eq!(after[5]["producer_time_us"].as_i64().unwrap(), end_us);
    // The shift sticks for the rest of the session.
    let d = after[5]["duration_us"].as_i64().unwrap();
    assert_eq!(after[6]["producer_time_us"].as_i64().unwrap(), end_us + d);
}

#[test]
fn prft_gives_producer_time() {
    let test_start = now_us();
    let server = Server::start();
    let (init, raws) = split_sample_raw("h264_prft.mp4");
    let facts = InitFacts::parse(&init).unwrap();
    // What the prft of the first fragment says its start is on the wall clock.
    let expected: Vec<i64> = raws
        .iter()
        .map(|raw| {
            let ff = fragment_facts(&facts, &raw.bytes).unwrap();
            let p = raw.prft.as_ref().expect("every fragment has a prft");
            let run = ff
                .tracks
                .iter()
                .find(|r| r.track_id == p.reference_track_id)
                .unwrap();
            let prft_media_us =
                (i128::from(p.media_time) * 1_000_000 / i128::from(run.timescale)) as i64;
            ff.start_us() + (p.utc_time_us - prft_media_us)
        })
        .collect();
    assert!(
        expected[0] < test_start - 1_000_000,
        "the sample's prft should predate this test"
    );
    let (s, v) = upload_file(&server, "prft", "", "h264_prft.mp4");
    let frags = all_fragments(&server, "prft");
    assert!(!frags.is_empty(), "nothing stored: {s} {v}");
    let p0 = frags[0]["producer_time_us"].as_i64().unwrap();
    assert!(
        p0 < test_start,
        "producer time {p0} is the server clock, not the prft time"
    );
    assert!(
        (p0 - expected[0]).abs() <= 1,
        "{p0} vs prft {}",
        expected[0]
    );
    // The sample was encoded faster than real time, so its prft wall clocks advance less than
    // its media time: a later fragment may overlap the previous one by more than the jitter
    // tolerance and be refused (documented time rule). Whatever was stored follows its prft and
    // never goes backwards.
    if s != 200 {
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
        assert_eq!(
            v["summary"]["refused"].as_u64().unwrap() + v["summary"]["fragments"].as_u64().unwrap(),
            raws.len() as u64,
            "{v}"
        );
    }
    for w in frags.windows(2) {
        let end =
            w[0]["producer_time_us"].as_i64().unwrap() + w[0]["duration_us"].as_i64().unwrap();
        assert!(w[1]["producer_time_us"].as_i64().unwrap() >= end);
    }
}

#[test]
fn ndjson_acks_in_order() {
    let server = Server::start();
    let r = client()
        .put(server.api("/streams/nd/ingest"))
        .header("Accept", "application/x-ndjson")
        .body(std::fs::read(sample(GOP2S)).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-ndjson"),
        "{:?}",
        r.headers()
    );
    let lines = ndjson_lines(&r.bytes().unwrap());
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "session_started",
            "persisted",
            "persisted",
            "persisted",
            "persisted",
            "persisted",
            "session_ended"
        ],
        "{lines:?}"
    );
    let session = lines[0]["session"].as_i64().unwrap();
    assert_eq!(lines[0]["stream"], "nd");
    let persisted: Vec<&Value> = lines.iter().filter(|l| l["event"] == "persisted").collect();
    assert_eq!(
        persisted
            .iter()
            .map(|l| l["fragment"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let stored = all_fragments(&server, "nd");
    for (l, f) in persisted.iter().zip(&stored) {
        assert_eq!(l["session"], session);
        for k in [
            "fragment",
            "producer_time",
            "producer_time_us",
            "server_time",
            "duration_us",
            "keyframe",
            "size_bytes",
            "session",
            "init",
        ] {
            assert_eq!(l[k], f[k], "ack field {k} matches the index");
        }
    }
    let end = lines.last().unwrap();
    assert_eq!(end["session"], session);
    assert_eq!(end["fragments"], 5);
    assert_eq!(end["first_fragment"], 1);
    assert_eq!(end["last_fragment"], 5);
    assert_eq!(end["refused"], 0);
    assert_eq!(end["reason"], "end of upload");
}

#[test]
fn second_producer_takes_over() {
    let server = Server::start();
    let (init, raws) = split_sample_raw(GOP2S);
    let mut first = RawUpload::open(
        &server,
        "/streams/tk/ingest",
        &format!("{VIDEO_MP4}Accept: application/x-ndjson\r\n"),
    );
    first.send(&init);
    first.send(&raws[0].bytes);
    // (Not waiting for the ack line: see acks_arrive_while_the_producer_pauses.)
    common::wait_until("fragment 1 stored", Duration::from_secs(10), || {
        stored_count(&server, "tk") == 1
    });
    assert!(describe(&server, "tk")["producer_connected"]
        .as_bool()
        .unwrap());
    assert_eq!(describe(&server, "tk")["status"], "live");

    // The second producer: its request completes, with everything stored.
    let (s, v) = upload_file(&server, "tk", "", GOP2S);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["fragments"], 5);
    assert_eq!(v["first_fragment"], 2);

    // The first one's response has ended, without us ending its body.
    let (status, body) = first.response(Duration::from_secs(5));
    assert_eq!(status, 200);
    let lines = ndjson_lines(&body);
    assert_eq!(lines.first().unwrap()["event"], "session_started");
    let end = lines.last().unwrap();
    assert_eq!(end["event"], "session_ended", "{lines:?}");
    assert_eq!(end["fragments"], 1);
    assert!(
        end["reason"].as_str().unwrap().contains("took over"),
        "{end}"
    );

    let frags = all_fragments(&server, "tk");
    assert_eq!(numbers(&frags), [1, 2, 3, 4, 5, 6]);
    let first_session = lines[0]["session"].as_i64().unwrap();
    assert_eq!(frags[0]["session"], first_session);
    assert!(frags[1..].iter().all(|f| f["session"] == v["session"]));
    // The takeover keeps the timeline: the second session starts after the first's fragment.
    let end0 =
        frags[0]["producer_time_us"].as_i64().unwrap() + frags[0]["duration_us"].as_i64().unwrap();
    assert!(frags[1]["producer_time_us"].as_i64().unwrap() >= end0);

    let ss = sessions(&server, "tk");
    assert_eq!(ss.len(), 2, "{ss:?}");
    let ids: Vec<i64> = ss.iter().map(|s| s["session"].as_i64().unwrap()).collect();
    assert!(ids.contains(&first_session) && ids.contains(&v["session"].as_i64().unwrap()));
    for s in &ss {
        assert!(s["ended"].is_string(), "every session ended: {s}");
        assert_eq!(s["kind"], "upload");
    }
    let old = ss.iter().find(|s| s["session"] == first_session).unwrap();
    assert!(
        old["end_reason"].as_str().unwrap().contains("took over"),
        "{old}"
    );
    assert!(!describe(&server, "tk")["producer_connected"]
        .as_bool()
        .unwrap());
}

#[test]
fn acks_arrive_while_the_producer_pauses() {
    // A live producer sends a fragment, then nothing until the next one is ready (2 s here).
    // The ack of a durable fragment must not wait for the producer's next bytes.
    let server = Server::start();
    let (init, raws) = split_sample_raw(GOP2S);
    let mut up = RawUpload::open(
        &server,
        "/streams/ack/ingest",
        &format!("{VIDEO_MP4}Accept: application/x-ndjson\r\n"),
    );
    up.send(&init);
    up.send(&raws[0].bytes);
    common::wait_until("fragment 1 stored", Duration::from_secs(10), || {
        stored_count(&server, "ack") == 1
    });
    let got_ack = up.try_read_until(Duration::from_secs(3), |b| {
        String::from_utf8_lossy(b).contains("\"persisted\"")
    });
    up.send(&raws[1].bytes);
    up.finish();
    let (status, body) = up.response(Duration::from_secs(10));
    assert_eq!(status, 200);
    assert_eq!(
        ndjson_lines(&body)
            .iter()
            .filter(|l| l["event"] == "persisted")
            .count(),
        2
    );
    assert!(
        got_ack,
        "fragment 1 was durable, but its ack had not arrived 3 s later (it came only after the \
         producer sent more bytes)"
    );
}

#[test]
fn idle_producer_is_disconnected() {
    let server = Server::start_with_config("[ingest]\nidle_timeout_secs = 1\n");
    let (init, raws) = split_sample_raw(GOP2S);
    let mut up = RawUpload::open(&server, "/streams/idle/ingest", VIDEO_MP4);
    up.send(&init);
    // One fragment, so the session opens (an upload that never sends one leaves no session).
    up.send(&raws[0].bytes);
    let t = Instant::now();
    let (status, body) = up.response(Duration::from_secs(6));
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "disconnected after {waited:?} with idle_timeout_secs = 1"
    );
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("JSON error");
    assert_eq!(v["error"]["code"], "DEADLINE_EXCEEDED");
    assert_eq!(v["summary"]["fragments"], 1);
    let ss = sessions(&server, "idle");
    assert_eq!(ss.len(), 1, "{ss:?}");
    assert_eq!(ss[0]["end_reason"], "idle timeout");
    assert!(ss[0]["ended"].is_string());
}

#[test]
fn segment_file_ingest() {
    let server = Server::start();
    let (init, raws) = split_sample_raw(GOP2S);
    let put = |file: &str, body: Vec<u8>| put_segment_file(&server, "seg", file, body);
    let (s, v) = json_of(put("init.mp4", init.clone()));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["kind"], "init");
    assert_eq!(v["fragments"], json!([]));
    // The session (and the stream) open at the first fragment, not at the init.
    assert_eq!(v["session"], Value::Null, "{v}");
    let mut session = Value::Null;

    // A styp as ffmpeg's HLS muxer writes before each segment's moof.
    let mut styp = Vec::new();
    styp.extend_from_slice(&24u32.to_be_bytes());
    styp.extend_from_slice(b"stypmsdh\0\0\0\0msdhmsix");
    let mut segments = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let mut seg = if i % 2 == 0 { styp.clone() } else { Vec::new() };
        seg.extend_from_slice(&raw.bytes);
        let (s, v) = json_of(put(&format!("seg{i}.m4s"), seg.clone()));
        assert_eq!(s, 201, "segment {i}: {v}");
        assert_eq!(v["kind"], "media");
        if i == 0 {
            session = v["session"].clone();
            assert!(session.is_i64(), "{v}");
        }
        assert_eq!(v["session"], session);
        assert_eq!(v["fragments"], json!([i as i64 + 1]));
        assert_eq!(v["duplicates"], json!([]));
        segments.push(seg);
    }
    // Re-sent (a client retry): reported, not stored twice.
    let (s, v) = json_of(put("seg2.m4s", segments[2].clone()));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["fragments"], json!([]));
    assert_eq!(v["duplicates"], json!([3]));
    let frags = all_fragments(&server, "seg");
    assert_eq!(numbers(&frags), [1, 2, 3, 4, 5]);
    assert!(frags.iter().all(|f| f["session"] == session));
    for w in frags.windows(2) {
        assert_eq!(
            w[1]["producer_time_us"].as_i64().unwrap(),
            w[0]["producer_time_us"].as_i64().unwrap() + w[0]["duration_us"].as_i64().unwrap()
        );
    }

    // Playlists are accepted and ignored; DELETEs acknowledged.
    let r = put("playlist.m3u8", b"#EXTM3U\n#EXT-X-VERSION:7\n".to_vec());
    assert_eq!(r.status(), 204);
    let r = put("manifest.mpd", b"<MPD/>".to_vec());
    assert_eq!(r.status(), 204);
    let r = client()
        .delete(server.api("/streams/seg/ingest/seg0.m4s"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        all_fragments(&server, "seg"),
        frags,
        "playlist and DELETE store nothing"
    );
    let d = describe(&server, "seg");
    assert_eq!(d["fragment_count"], 5);
    assert_eq!(d["codecs"], "avc1.64001e,mp4a.40.2");
    let ss = sessions(&server, "seg");
    assert_eq!(ss.len(), 1);
    assert_eq!(ss[0]["kind"], "segments");
}
