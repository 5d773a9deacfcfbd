//! Bad input of every kind: each gets its documented status and a JSON error, the server keeps
//! serving, and nothing already stored changes.

mod common;

use common::raw_http::RawUpload;
use common::{
    all_fragments, assert_alive, assert_error, client, get_bytes, get_json, json_of, sample,
    split_sample_raw, Server,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const GOP2S: &str = "h264_aac_gop2s.mp4";

// ---------------------------------------------------------------------------------------------
// Local helpers

fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn put_ingest(
    server: &Server,
    stream: &str,
    query: &str,
    body: Vec<u8>,
) -> reqwest::blocking::Response {
    let mut url = server.api(&format!("/streams/{stream}/ingest"));
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    client().put(url).body(body).send().expect("PUT ingest")
}

fn get(server: &Server, path: &str) -> reqwest::blocking::Response {
    client().get(server.api(path)).send().expect("GET")
}

/// A good stream stored before the bad input, to check that nothing stored changes.
/// An upload refused before its first fragment leaves no stream behind (auto-creation happens
/// at the first fragment), so there are no fragments either.
fn assert_no_stream(server: &Server, stream: &str) {
    assert_error(get(server, &format!("/streams/{stream}")), 404, "NOT_FOUND");
}

struct Baseline {
    stream: &'static str,
    rows: Vec<Value>,
    hashes: Vec<[u8; 32]>,
    describe: Value,
}

impl Baseline {
    fn new(server: &Server) -> Baseline {
        let stream = "good";
        let r = put_ingest(server, stream, "", std::fs::read(sample(GOP2S)).unwrap());
        assert_eq!(r.status(), 200);
        let (rows, hashes) = Self::read(server, stream);
        assert_eq!(rows.len(), 5);
        Baseline {
            stream,
            rows,
            hashes,
            describe: get_json(&server.api(&format!("/streams/{stream}"))),
        }
    }

    fn read(server: &Server, stream: &str) -> (Vec<Value>, Vec<[u8; 32]>) {
        let rows = all_fragments(server, stream);
        let hashes = rows
            .iter()
            .map(|f| {
                let b = get_bytes(
                    &server.api(&format!("/streams/{stream}/fragments/{}", f["fragment"])),
                );
                Sha256::digest(&b).into()
            })
            .collect();
        (rows, hashes)
    }

    /// The server still answers, and the good stream is exactly as it was.
    fn check(&self, server: &Server) {
        assert_alive(server);
        let (rows, hashes) = Self::read(server, self.stream);
        assert_eq!(rows, self.rows, "stored fragment rows changed");
        assert_eq!(hashes, self.hashes, "stored fragment bytes changed");
        let d = get_json(&server.api(&format!("/streams/{}", self.stream)));
        assert_eq!(d, self.describe, "describe changed");
    }
}

fn vm_rss_kib(server: &Server) -> u64 {
    let pid = server.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A 16-byte box header with a 64-bit size (size field 1, then largesize).
fn large_header(box_type: &[u8; 4], size: u64) -> Vec<u8> {
    let mut h = 1u32.to_be_bytes().to_vec();
    h.extend_from_slice(box_type);
    h.extend_from_slice(&size.to_be_bytes());
    h
}

fn stream_exists(server: &Server, stream: &str) -> bool {
    get(server, &format!("/streams/{stream}")).status() == 200
}

// ---------------------------------------------------------------------------------------------
// Uploads

#[test]
fn truncated_upload_keeps_complete_fragments() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let (init, raws) = split_sample_raw(GOP2S);
    let mut body = init.clone();
    for f in &raws[..3] {
        body.extend_from_slice(&f.bytes);
    }
    let cut = raws[3].bytes.len() / 2;
    body.extend_from_slice(&raws[3].bytes[..cut]);
    let v = assert_error(
        put_ingest(&server, "trunc", "", body),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(message(&v).contains("truncated"), "{v}");
    assert_eq!(v["summary"]["fragments"], 3, "{v}");
    assert_eq!(v["summary"]["first_fragment"], 1);
    assert_eq!(v["summary"]["last_fragment"], 3);
    let stored = all_fragments(&server, "trunc");
    assert_eq!(stored.len(), 3);
    for (f, raw) in stored.iter().zip(&raws) {
        let b = get_bytes(&server.api(&format!("/streams/trunc/fragments/{}", f["fragment"])));
        // Same size up to the tfdt growing to version 1; same media data at the end.
        assert!(b.len() >= raw.bytes.len() && b.len() <= raw.bytes.len() + 64);
        let tail = raw.bytes.len() / 2;
        assert_eq!(b[b.len() - tail..], raw.bytes[raw.bytes.len() - tail..]);
    }
    // Cut inside a box header, and right after a moof without its mdat.
    let mut body = init.clone();
    body.extend_from_slice(&raws[0].bytes);
    body.extend_from_slice(&raws[1].bytes[..5]);
    let v = assert_error(
        put_ingest(&server, "trunc2", "", body),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(message(&v).contains("truncated"), "{v}");
    assert_eq!(v["summary"]["fragments"], 1);
    let moof_len = u32::from_be_bytes(raws[1].bytes[..4].try_into().unwrap()) as usize;
    let mut body = init;
    body.extend_from_slice(&raws[1].bytes[..moof_len]);
    let v = assert_error(
        put_ingest(&server, "trunc3", "", body),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(message(&v).contains("truncated"), "{v}");
    assert_eq!(v["summary"]["fragments"], 0);
    base.check(&server);
}

#[test]
fn garbage_is_415() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let text = b"this is certainly not an MP4 file, just some text\n".repeat(100);
    let v = assert_error(
        put_ingest(&server, "junk", "", text),
        415,
        "UNSUPPORTED_MEDIA",
    );
    assert!(message(&v).contains("MP4"), "{v}");
    let mut noise = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    assert_error(
        put_ingest(&server, "junk", "", noise),
        415,
        "UNSUPPORTED_MEDIA",
    );
    assert_no_stream(&server, "junk");
    // Garbage into a stream that already has media does not touch it.
    assert_error(
        put_ingest(&server, "good", "", b"GARBAGE!".repeat(10)),
        415,
        "UNSUPPORTED_MEDIA",
    );
    base.check(&server);
}

#[test]
fn huge_box_header_is_413_without_allocating() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let rss_before = vm_rss_kib(&server);
    let (init, _) = split_sample_raw(GOP2S);
    let four_gb = 4_000_000_000u64;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("first box", large_header(b"mdat", four_gb)),
        (
            "after init",
            [init.clone(), large_header(b"mdat", four_gb)].concat(),
        ),
        (
            "moof after init",
            [init.clone(), large_header(b"moof", four_gb)].concat(),
        ),
        (
            "max u64",
            [init.clone(), large_header(b"moov", u64::MAX)].concat(),
        ),
    ];
    for (what, bytes) in cases {
        // Only the header is sent and the body stays open: the server must answer from the
        // header alone.
        let t = Instant::now();
        let mut up = RawUpload::open(&server, "/streams/huge/ingest", "");
        up.send(&bytes);
        let (status, body) = up.response(Duration::from_secs(5));
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{what}: {:?}",
            t.elapsed()
        );
        assert_eq!(status, 413, "{what}: {}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["error"]["code"], "TOO_LARGE", "{what}: {v}");
        assert!(message(&v).contains("max_fragment_bytes"), "{what}: {v}");
    }
    // Whole body sent in one piece too.
    let v = assert_error(
        put_ingest(
            &server,
            "huge",
            "",
            [init, large_header(b"mdat", four_gb)].concat(),
        ),
        413,
        "TOO_LARGE",
    );
    assert_eq!(v["summary"]["fragments"], 0);
    let rss_after = vm_rss_kib(&server);
    assert!(
        rss_after < rss_before + 100 * 1024,
        "server RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_no_stream(&server, "huge");
    base.check(&server);
}

#[test]
fn max_fragment_bytes_is_configurable() {
    let server = Server::start_with_config("[ingest]\nmax_fragment_bytes = 50000\n");
    // gop2s fragments are ~90 KB: refused as too large, with the setting named.
    let v = assert_error(
        put_ingest(&server, "small", "", std::fs::read(sample(GOP2S)).unwrap()),
        413,
        "TOO_LARGE",
    );
    assert!(message(&v).contains("max_fragment_bytes"), "{v}");
    assert_eq!(v["summary"]["fragments"], 0);
}

#[test]
fn media_without_init_is_412() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let (_, raws) = split_sample_raw(GOP2S);
    let v = assert_error(
        put_ingest(&server, "noinit", "", raws[0].bytes.to_vec()),
        412,
        "FAILED_PRECONDITION",
    );
    assert!(message(&v).contains("init"), "{v}");
    assert_no_stream(&server, "noinit");
    // Also into a stream that has an init stored from an earlier session: each upload must
    // bring its own.
    assert_error(
        put_ingest(&server, "good", "", raws[0].bytes.to_vec()),
        412,
        "FAILED_PRECONDITION",
    );
    // Segment files: a media segment before any init file.
    let v = assert_error(
        client()
            .put(server.api("/streams/noinit2/ingest/seg1.m4s"))
            .body(raws[0].bytes.to_vec())
            .send()
            .unwrap(),
        412,
        "FAILED_PRECONDITION",
    );
    assert!(message(&v).contains("init"), "{v}");
    base.check(&server);
}

#[test]
fn progressive_mp4_is_415() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let v = assert_error(
        put_ingest(
            &server,
            "prog",
            "",
            std::fs::read(sample("h264_progressive.mp4")).unwrap(),
        ),
        415,
        "UNSUPPORTED_MEDIA",
    );
    assert!(message(&v).contains("fragmented"), "{v}");
    assert_no_stream(&server, "prog");
    base.check(&server);
}

#[test]
fn empty_body_stores_nothing() {
    // Documented here: an empty upload is a session that ended before any fragment: 200 with a
    // summary of 0 fragments (curl -T of an empty file is not an error worth failing a script),
    // and no stream is created for it.
    let server = Server::start();
    let base = Baseline::new(&server);
    let r = put_ingest(&server, "empty", "", Vec::new());
    let (s, v) = json_of(r);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["fragments"], 0);
    assert_eq!(v["bytes"], 0);
    assert!(v["first_fragment"].is_null(), "{v}");
    assert_no_stream(&server, "empty");
    // The same into the good stream changes nothing there.
    assert_eq!(put_ingest(&server, "good", "", Vec::new()).status(), 200);
    base.check(&server);
}

#[test]
fn bad_stream_names_on_every_route() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let long = "x".repeat(257);
    for name in [
        "a%20b",
        "a%2Fb",
        "%C3%A9t%C3%A9",
        long.as_str(),
        "a*b",
        "a%3Fb",
    ] {
        for path in [
            format!("/streams/{name}"),
            format!("/streams/{name}/fragments"),
            format!("/streams/{name}/fragments/1"),
            format!("/streams/{name}/inits/1"),
            format!("/streams/{name}/sessions"),
        ] {
            assert_error(get(&server, &path), 400, "INVALID_ARGUMENT");
        }
        assert_error(
            put_ingest(&server, name, "", std::fs::read(sample(GOP2S)).unwrap()),
            400,
            "INVALID_ARGUMENT",
        );
        assert_error(
            client()
                .put(server.api(&format!("/streams/{name}/ingest/init.mp4")))
                .body(vec![0u8; 16])
                .send()
                .unwrap(),
            400,
            "INVALID_ARGUMENT",
        );
        assert_error(
            client()
                .patch(server.api(&format!("/streams/{name}")))
                .json(&json!({"retention_hours": 1}))
                .send()
                .unwrap(),
            400,
            "INVALID_ARGUMENT",
        );
        assert_error(
            client()
                .delete(server.api(&format!("/streams/{name}")))
                .send()
                .unwrap(),
            400,
            "INVALID_ARGUMENT",
        );
    }
    // A bad prefix in the list.
    assert_error(
        get(&server, "/streams?prefix=a%20b"),
        400,
        "INVALID_ARGUMENT",
    );
    let names = get_json(&server.api("/streams"))["streams"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(names, 1, "no stream was created by the refused requests");
    base.check(&server);
}

#[test]
fn bad_times() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let gop = || std::fs::read(sample(GOP2S)).unwrap();
    for bad in [
        "yesterday",
        "2026-13-01T00:00:00Z",
        "12:00",
        "",
        "1e3",
        "99999999999999999999",
    ] {
        let v = assert_error(
            put_ingest(&server, "t", &format!("producer_start={bad}"), gop()),
            400,
            "INVALID_ARGUMENT",
        );
        assert!(message(&v).contains("producer_start"), "{bad:?}: {v}");
    }
    // An unknown query parameter is refused rather than silently ignored.
    let v = assert_error(
        put_ingest(&server, "t", "start=0", gop()),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(message(&v).contains("start"), "{v}");
    assert!(
        !stream_exists(&server, "t"),
        "refused uploads created the stream"
    );

    for (q, names) in [
        ("start=abc", "start"),
        ("end=abc", "end"),
        ("start=2026-11-25T17:00:00", "start"),
        ("time=wall", "time"),
        ("start=2000&end=1000", "end"),
        ("start=1000&end=1000", "end"),
        ("time=server&start=2000&end=1000", "end"),
        ("after=abc", "after"),
        // Times RFC 3339 cannot write back (after year 9999, before year 0000).
        ("end=253402300800000", "end"),
        ("start=-1125899906842625", "start"),
    ] {
        let v = assert_error(
            get(&server, &format!("/streams/good/fragments?{q}")),
            400,
            "INVALID_ARGUMENT",
        );
        assert!(message(&v).contains(names), "{q}: {v}");
    }
    let v = assert_error(
        client()
            .post(server.api("/streams/good/holds"))
            .json(&json!({"start": -1_125_899_906_842_625_i64, "end": 0}))
            .send()
            .unwrap(),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(message(&v).contains("start"), "{v}");
    base.check(&server);
}

#[test]
fn negative_after_is_refused() {
    // The server's own message for 'after' says "must be a non-negative integer", but -1 is
    // taken (as "from the start").
    let server = Server::start();
    let base = Baseline::new(&server);
    let v = assert_error(
        get(&server, "/streams/good/fragments?after=-1"),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(message(&v).contains("after"), "{v}");
    base.check(&server);
}

#[test]
fn bad_limits() {
    let server = Server::start();
    let base = Baseline::new(&server);
    for path in [
        "/streams/good/fragments",
        "/streams",
        "/streams/good/sessions",
    ] {
        for bad in ["0", "100000", "-1", "abc", "1.5", ""] {
            let v = assert_error(
                get(&server, &format!("{path}?limit={bad}")),
                400,
                "INVALID_ARGUMENT",
            );
            assert!(message(&v).contains("limit"), "{path} limit={bad}: {v}");
        }
        let ok = get(&server, &format!("{path}?limit=1000"));
        assert_eq!(ok.status(), 200, "{path}");
    }
    base.check(&server);
}

#[test]
fn bad_fragment_and_init_numbers() {
    let server = Server::start();
    let base = Baseline::new(&server);
    for bad in ["abc", "0", "-1", "1.0", "99999999999999999999999"] {
        assert_error(
            get(&server, &format!("/streams/good/fragments/{bad}")),
            400,
            "INVALID_ARGUMENT",
        );
        assert_error(
            get(&server, &format!("/streams/good/inits/{bad}")),
            400,
            "INVALID_ARGUMENT",
        );
    }
    let v = assert_error(
        get(&server, "/streams/good/fragments/999999"),
        404,
        "NOT_FOUND",
    );
    assert!(message(&v).contains("999999"), "{v}");
    assert_error(get(&server, "/streams/good/fragments/6"), 404, "NOT_FOUND");
    assert_error(get(&server, "/streams/good/inits/999"), 404, "NOT_FOUND");
    base.check(&server);
}

#[test]
fn bad_json_bodies() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let post = |body: &str| {
        client()
            .post(server.api("/streams"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    for (body, mentions) in [
        ("", "JSON"),
        ("{", "JSON"),
        ("not json", "JSON"),
        ("[]", "JSON"),
        ("{}", "name"),
        (r#"{"retention_hours": 5}"#, "name"),
        (r#"{"name": "x", "colour": "red"}"#, "colour"),
        (r#"{"name": 5}"#, "JSON"),
        (r#"{"name": "x", "retention_hours": -1}"#, "JSON"),
        (r#"{"name": "x", "retention_hours": "ten"}"#, "JSON"),
        (r#"{"name": "x", "tags": ["a"]}"#, "JSON"),
        (r#"{"name": "x", "tags": {"a": 1}}"#, "JSON"),
        (r#"{"name": "x", "tags": {"": "v"}}"#, "tag"),
        // Past i64 these once wrapped to negative numbers and read back as 0: live only.
        (
            r#"{"name": "x", "retention_hours": 18446744073709551615}"#,
            "retention_hours",
        ),
        (
            r#"{"name": "x", "retention_bytes": 18446744073709551615}"#,
            "retention_bytes",
        ),
    ] {
        let v = assert_error(post(body), 400, "INVALID_ARGUMENT");
        assert!(message(&v).contains(mentions), "{body}: {v}");
    }
    let long_value = format!(r#"{{"name": "x", "tags": {{"k": "{}"}}}}"#, "v".repeat(257));
    assert_error(post(&long_value), 400, "INVALID_ARGUMENT");
    let too_many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let v = assert_error(
        post(&json!({"name": "x", "tags": too_many}).to_string()),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(message(&v).contains("tags"), "{v}");
    let fifty: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
    assert!(
        !stream_exists(&server, "x"),
        "a refused create made the stream"
    );
    let ok = post(&json!({"name": "x", "tags": fifty}).to_string());
    assert_eq!(ok.status(), 201, "50 tags are allowed");

    // PATCH: the same rules, and a refused PATCH changes nothing.
    let patch = |body: &str| {
        client()
            .patch(server.api("/streams/good"))
            .body(body.to_string())
            .send()
            .unwrap()
    };
    for body in [
        "",
        "{",
        r#"{"name": "renamed"}"#,
        r#"{"retention_hours": -5}"#,
        r#"{"tags": {"": "v"}}"#,
        r#"{"retention_hours": 18446744073709551615}"#,
        r#"{"retention_bytes": 18446744073709551615}"#,
    ] {
        assert_error(patch(body), 400, "INVALID_ARGUMENT");
    }
    assert_error(
        patch(&json!({ "tags": too_many }).to_string()),
        400,
        "INVALID_ARGUMENT",
    );
    base.check(&server);
}

#[test]
fn bad_upload_does_not_disturb_a_concurrent_good_one() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let (init, raws) = split_sample_raw(GOP2S);
    // The good producer is mid-upload (its connection open) while bad ones come and go.
    let mut good = RawUpload::open(&server, "/streams/live/ingest", "");
    good.send(&init);
    good.send(&raws[0].bytes);
    good.send(&raws[1].bytes);

    let bad = std::thread::scope(|s| {
        let handles = [
            s.spawn(|| {
                put_ingest(&server, "bad1", "", b"garbage ".repeat(1000))
                    .status()
                    .as_u16()
            }),
            s.spawn(|| {
                put_ingest(
                    &server,
                    "bad2",
                    "",
                    [init.clone(), large_header(b"mdat", 4_000_000_000)].concat(),
                )
                .status()
                .as_u16()
            }),
            s.spawn(|| {
                put_ingest(&server, "bad3", "", raws[2].bytes.to_vec())
                    .status()
                    .as_u16()
            }),
        ];
        handles.map(|h| h.join().unwrap())
    });
    assert_eq!(bad, [415, 413, 412]);
    for f in &raws[2..] {
        good.send(&f.bytes);
    }
    good.finish();
    let (status, body) = good.response(Duration::from_secs(10));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["fragments"], 5, "{v}");
    assert_eq!(v["refused"], 0, "{v}");
    assert_eq!(all_fragments(&server, "live").len(), 5);
    base.check(&server);

    // A good upload to another stream, concurrent with a stream of bad ones.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (summary, bad_statuses) = std::thread::scope(|s| {
        let bad = s.spawn(|| {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && statuses.len() < 200 {
                statuses.push(
                    put_ingest(&server, "bad4", "", b"not mp4 at all".repeat(50))
                        .status()
                        .as_u16(),
                );
            }
            statuses
        });
        let mut up = RawUpload::open(&server, "/streams/live2/ingest", "");
        up.send(&init);
        for f in &raws {
            up.send(&f.bytes);
            std::thread::sleep(Duration::from_millis(50));
        }
        up.finish();
        let (status, body) = up.response(Duration::from_secs(10));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let statuses = bad.join().unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        (serde_json::from_slice::<Value>(&body).unwrap(), statuses)
    });
    assert!(!bad_statuses.is_empty());
    assert!(bad_statuses.iter().all(|s| *s == 415), "{bad_statuses:?}");
    assert_eq!(summary["fragments"], 5, "{summary}");
    assert_eq!(all_fragments(&server, "live2").len(), 5);
    base.check(&server);
}

/// init, 1, 2, 2 again (same tfdt: backwards), 3, 4, 5.
fn backwards_body() -> (Vec<u8>, u64) {
    let (init, raws) = split_sample_raw(GOP2S);
    let mut body = init;
    body.extend_from_slice(&raws[0].bytes);
    body.extend_from_slice(&raws[1].bytes);
    let repeat_offset = body.len() as u64;
    body.extend_from_slice(&raws[1].bytes);
    for f in &raws[2..] {
        body.extend_from_slice(&f.bytes);
    }
    (body, repeat_offset)
}

#[test]
fn backwards_timestamps_drop_the_fragment_and_continue() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let (body, _) = backwards_body();
    let v = assert_error(
        put_ingest(&server, "back", "", body),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(message(&v).contains("backwards"), "{v}");
    assert_eq!(v["summary"]["refused"], 1, "{v}");
    assert_eq!(v["summary"]["fragments"], 5, "{v}");
    assert_eq!(v["summary"]["first_fragment"], 1);
    assert_eq!(v["summary"]["last_fragment"], 5);
    let stored = all_fragments(&server, "back");
    assert_eq!(stored.len(), 5);
    for w in stored.windows(2) {
        assert_eq!(
            w[1]["producer_time_us"].as_i64().unwrap(),
            w[0]["producer_time_us"].as_i64().unwrap() + w[0]["duration_us"].as_i64().unwrap(),
            "the timeline has no hole or overlap where the fragment was dropped"
        );
    }
    base.check(&server);
}

#[test]
fn backwards_timestamps_ndjson_error_line() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let (body, repeat_offset) = backwards_body();
    let r = client()
        .put(server.api("/streams/back/ingest"))
        .header("Accept", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "acks stream: the status is sent before any fragment"
    );
    let text = r.text().unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["event"], "session_started", "{text}");
    let end = lines.last().unwrap();
    assert_eq!(end["event"], "session_ended", "{text}");
    assert_eq!(end["refused"], 1);
    assert_eq!(end["fragments"], 5);
    let errors: Vec<&Value> = lines.iter().filter(|l| l["event"] == "error").collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert_eq!(errors[0]["code"], "INVALID_ARGUMENT");
    assert!(errors[0]["message"].as_str().unwrap().contains("backwards"));
    assert_eq!(
        errors[0]["input_offset"], repeat_offset,
        "the error names where the refused fragment was in the input"
    );
    let persisted: Vec<i64> = lines
        .iter()
        .filter(|l| l["event"] == "persisted")
        .map(|l| l["fragment"].as_i64().unwrap())
        .collect();
    assert_eq!(persisted, [1, 2, 3, 4, 5]);
    base.check(&server);
}

/// Issue 12, case 4: the fragments completed before a fatal input error are stored whatever
/// the chunk boundaries were. Here a good fragment and a box header claiming 4 GB come in one
/// HTTP chunk (before the fix, that fragment was lost; with the header in the next chunk, kept).
#[test]
fn fragments_before_a_fatal_error_are_kept_whatever_the_chunking() {
    let server = Server::start();
    let base = Baseline::new(&server);
    let (init, raws) = split_sample_raw(GOP2S);
    let bad = large_header(b"mdat", 4_000_000_000);
    let good = [init.clone(), raws[0].bytes.to_vec(), raws[1].bytes.to_vec()].concat();
    for (i, split_at) in [good.len(), good.len() + 8, good.len() + bad.len()]
        .into_iter()
        .enumerate()
    {
        let stream = format!("chunks{i}");
        let all = [good.clone(), bad.clone()].concat();
        let mut up = RawUpload::open(&server, &format!("/streams/{stream}/ingest"), "");
        up.send(&all[..split_at]);
        if split_at < all.len() {
            up.send(&all[split_at..]);
        }
        let (status, body) = up.response(Duration::from_secs(10));
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(status, 413, "split at {split_at}: {v}");
        assert_eq!(v["summary"]["fragments"], 2, "split at {split_at}: {v}");
        assert_eq!(
            all_fragments(&server, &stream).len(),
            2,
            "split at {split_at}"
        );
    }
    // The same for a segment file: the complete fragment before the bad box is stored, and the
    // file is still refused.
    let r = common::put_segment_file(&server, "segchunks", "init.mp4", init.clone());
    assert_eq!(r.status(), 201);
    let r = common::put_segment_file(
        &server,
        "segchunks",
        "seg0.m4s",
        [raws[0].bytes.to_vec(), bad.clone()].concat(),
    );
    let (status, v) = json_of(r);
    assert_eq!(status, 413, "{v}");
    assert_eq!(all_fragments(&server, "segchunks").len(), 1, "{v}");
    // ffmpeg never reads the answer: the refusal is logged at WARN with stream, file and reason.
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("segment file refused")
            && l.contains("segchunks")
            && l.contains("seg0.m4s")
            && l.contains("max_fragment_bytes")),
        "{log}"
    );
    base.check(&server);
}
