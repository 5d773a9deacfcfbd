//! Retention, quotas, holds and the sweeper, against an in-process server whose clock only
//! moves when the test says so (retention is measured in server time).

mod common;

use common::{client, error_message, get_json, sample, split_sample};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tapedeck::clock::{Clock, SimulatedClock};
use tapedeck::config::Config;

const HOUR_US: i64 = 3_600_000_000;

struct SimServer {
    base: String,
    clock: Arc<SimulatedClock>,
    data_dir: std::path::PathBuf,
    shutdown: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    _tmp: tempfile::TempDir,
}

impl SimServer {
    fn start(toml: &str) -> SimServer {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config::from_toml(toml).unwrap();
        config.data_dir = tmp.path().join("data");
        let clock = Arc::new(SimulatedClock::new(tapedeck::clock::SystemClock.now_us()));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (c, s, d) = (clock.clone(), shutdown.clone(), config.data_dir.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                tapedeck::http::serve_on(listener, config, c, s)
                    .await
                    .unwrap();
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        SimServer {
            base: format!("http://{addr}"),
            clock,
            data_dir: d,
            shutdown,
            thread: Some(thread),
            _tmp: tmp,
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    fn advance(&self, us: i64) {
        self.clock.advance_us(us);
    }

    fn upload(&self, stream: &str, file: &str) -> Value {
        let body = std::fs::read(sample(file)).unwrap();
        let r = client()
            .put(self.api(&format!("/streams/{stream}/ingest")))
            .body(body)
            .send()
            .unwrap();
        assert!(
            r.status().is_success(),
            "upload: {}",
            r.text().unwrap_or_default()
        );
        r.json().unwrap()
    }

    fn sweep(&self) -> Value {
        let r = client().post(self.api("/retention/sweep")).send().unwrap();
        assert!(r.status().is_success());
        r.json().unwrap()
    }

    fn describe(&self, stream: &str) -> Value {
        get_json(&self.api(&format!("/streams/{stream}")))
    }

    fn fragment_numbers(&self, stream: &str) -> Vec<i64> {
        let v = get_json(&self.api(&format!("/streams/{stream}/fragments?limit=1000")));
        v["fragments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["fragment"].as_i64().unwrap())
            .collect()
    }

    fn frag_files(&self) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        if let Ok(streams) = std::fs::read_dir(self.data_dir.join("streams")) {
            for s in streams {
                for f in std::fs::read_dir(s.unwrap().path()).unwrap() {
                    out.push(f.unwrap().path());
                }
            }
        }
        out
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn create(s: &SimServer, body: Value) {
    let r = client().post(s.api("/streams")).json(&body).send().unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
}

fn patch(s: &SimServer, stream: &str, body: Value) -> Value {
    let r = client()
        .patch(s.api(&format!("/streams/{stream}")))
        .json(&body)
        .send()
        .unwrap();
    assert!(r.status().is_success());
    r.json().unwrap()
}

fn sha(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[test]
fn old_fragments_vanish_everywhere_and_their_files_go() {
    let s = SimServer::start("[retention]\nsweep_interval_secs = 3600\n");
    create(&s, json!({"name": "old", "retention_hours": 2}));
    s.upload("old", "h264_aac_gop2s.mp4");
    assert!(!s.frag_files().is_empty());
    s.advance(90 * 60 * 1_000_000); // 1.5 h: still inside retention
    create(&s, json!({"name": "new", "retention_hours": 2}));
    s.upload("new", "h264_cmaf_chunks.mp4");
    let keep: Vec<(i64, Vec<u8>)> = s
        .fragment_numbers("new")
        .into_iter()
        .map(|n| {
            (
                n,
                sha(&common::get_bytes(
                    &s.api(&format!("/streams/new/fragments/{n}")),
                )),
            )
        })
        .collect();
    let report = s.sweep();
    assert_eq!(report["by_retention"]["fragments"], 0, "{report}");
    s.advance(60 * 60 * 1_000_000); // now "old" is 2.5 h old, "new" 1 h
    let report = s.sweep();
    assert_eq!(report["by_retention"]["fragments"], 5, "{report}");
    assert!(
        report["by_retention"]["files"].as_u64().unwrap() >= 1,
        "{report}"
    );
    // Gone from every API at once.
    assert!(s.fragment_numbers("old").is_empty());
    let tl = get_json(&s.api("/streams/old/timeline?start=0"));
    assert!(tl["spans"].as_array().unwrap().is_empty(), "{tl}");
    let r = client()
        .get(s.api("/streams/old/hls/archive.m3u8?start=0"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let d = s.describe("old");
    assert_eq!(d["fragment_count"], 0);
    assert_eq!(d["bytes"], 0);
    // Its files are removed; the other stream's are not, and its bytes are untouched.
    let old_dir = s
        .frag_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/streams/1/"))
        .count();
    assert_eq!(old_dir, 0, "files of the expired stream remain");
    for (n, hash) in keep {
        assert_eq!(
            sha(&common::get_bytes(
                &s.api(&format!("/streams/new/fragments/{n}"))
            )),
            hash
        );
    }
    let tl = get_json(&s.api("/streams/new/timeline?start=0"));
    assert_eq!(tl["spans"].as_array().unwrap().len(), 1, "{tl}");
    assert_eq!(tl["spans"][0]["fragments"], 20, "{tl}");
}

#[test]
fn retention_decrease_takes_effect_at_once_and_increase_stops_deletion() {
    let s = SimServer::start("[retention]\nsweep_interval_secs = 3600\n");
    create(&s, json!({"name": "cam", "retention_hours": 72}));
    s.upload("cam", "h264_aac_gop2s.mp4");
    s.advance(3 * HOUR_US);
    s.upload("cam", "h264_aac_gop2s.mp4");
    // An increase (or no change) deletes nothing.
    patch(&s, "cam", json!({"retention_hours": 100}));
    assert_eq!(s.sweep()["by_retention"]["fragments"], 0);
    // A decrease wakes the sweeper: no explicit sweep, no interval wait.
    patch(&s, "cam", json!({"retention_hours": 2}));
    common::wait_until("the decrease to apply", Duration::from_secs(10), || {
        s.fragment_numbers("cam").len() == 5
    });
    assert_eq!(s.fragment_numbers("cam"), vec![6, 7, 8, 9, 10]);
    let d = s.describe("cam");
    assert_eq!(d["retention_hours"], 2);
    assert!(d["next_expiry"].is_string(), "{d}");
}

#[test]
fn quotas_budget_and_holds() {
    // Streams hold ~465 kB per upload of the gop2s sample.
    let s = SimServer::start(
        "[retention]\nsweep_interval_secs = 3600\n[storage]\nmax_bytes = 1000000\n",
    );
    create(
        &s,
        json!({"name": "a", "retention_hours": 72, "retention_bytes": 600000}),
    );
    create(&s, json!({"name": "b", "retention_hours": 72}));
    s.upload("a", "h264_aac_gop2s.mp4");
    s.advance(1_000_000);
    s.upload("a", "h264_aac_gop2s.mp4");
    s.advance(1_000_000);
    s.upload("b", "h264_aac_gop2s.mp4");
    // Hold the first fragment of "a" (its producer time range).
    let first = get_json(&s.api("/streams/a/fragments?limit=1"))["fragments"][0].clone();
    let start_ms = first["producer_time_us"].as_i64().unwrap() / 1000;
    let r = client()
        .post(s.api("/streams/a/holds"))
        .json(&json!({"start": start_ms, "end": start_ms + 1000, "reason": "incident"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let hold: Value = r.json().unwrap();
    let report = s.sweep();
    // Quota: "a" (930 kB) must fit 600 kB: its oldest unheld fragments (2, 3, 4, ...) go.
    let a = s.fragment_numbers("a");
    assert_eq!(a[0], 1, "held fragment survives: {a:?}");
    assert!(!a.contains(&2), "{a:?}");
    let a_bytes = s.describe("a")["bytes"].as_u64().unwrap();
    assert!(a_bytes <= 600_000, "{a_bytes}");
    assert!(
        report["by_stream_quota"]["fragments"].as_u64().unwrap() >= 3,
        "{report}"
    );
    // Budget (1 MB over both): oldest first across streams: "a"'s remaining older fragments
    // go before any of "b".
    let total: u64 =
        s.describe("a")["bytes"].as_u64().unwrap() + s.describe("b")["bytes"].as_u64().unwrap();
    assert!(total <= 1_000_000, "{total} {report}");
    let b = s.fragment_numbers("b");
    assert_eq!(
        b.len(),
        5,
        "b is newer, untouched while a had older media: {b:?} {report}"
    );
    // A 1-byte quota empties "b" (nothing of it is held).
    patch(&s, "b", json!({"retention_bytes": 1}));
    common::wait_until("the quota to apply", Duration::from_secs(10), || {
        s.fragment_numbers("b").is_empty()
    });
    // Now a budget only held media could meet: held media stays, and that is reported.
    drop(s);
    let s2 =
        SimServer::start("[retention]\nsweep_interval_secs = 3600\n[storage]\nmax_bytes = 1\n");
    create(&s2, json!({"name": "h", "retention_hours": 72}));
    s2.upload("h", "h264_aac_gop2s.mp4");
    let r = client()
        .post(s2.api("/streams/h/holds"))
        .json(&json!({"start": 0, "end": "2100-01-01T00:00:00Z", "reason": "legal"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let report = s2.sweep();
    assert_eq!(report["held_only_over_budget"], true, "{report}");
    assert_eq!(
        s2.fragment_numbers("h").len(),
        5,
        "held media is never deleted"
    );
    let d = s2.describe("h");
    assert_eq!(d["held_media_over_budget"], true, "{d}");
    assert_eq!(d["holds"].as_array().unwrap().len(), 1);
    let status = get_json(&s2.api("/retention"));
    assert_eq!(status["last"]["held_only_over_budget"], true);
    let metrics = client()
        .get(format!("{}/metrics", s2.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("\ntapedeck_disk_budget_held_only 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\ntapedeck_disk_budget_crossed 1\n"),
        "{metrics}"
    );
    // Removing the hold lets the budget apply.
    let id = d["holds"][0]["id"].as_i64().unwrap();
    let r = client()
        .delete(s2.api(&format!("/streams/h/holds/{id}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    common::wait_until(
        "expiry after the hold is removed",
        Duration::from_secs(10),
        || s2.fragment_numbers("h").is_empty(),
    );
    assert!(hold["id"].as_i64().is_some());
}

#[test]
fn live_only_stream_keeps_no_archive() {
    let s = SimServer::start("[retention]\nsweep_interval_secs = 3600\nlive_buffer_secs = 60\n");
    create(&s, json!({"name": "lo", "retention_hours": 0}));
    s.upload("lo", "h264_aac_gop2s.mp4");
    let r = client()
        .get(s.api("/streams/lo/hls/archive.m3u8?start=0"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 409);
    let e: Value = r.json().unwrap();
    assert!(
        error_message(&e, "CONFLICT").contains("keeps no archive"),
        "{e}"
    );
    let t = get_json(&s.api("/streams/lo/fragments?limit=1"))["fragments"][0]["producer_time_us"]
        .as_i64()
        .unwrap()
        / 1000;
    let r = client()
        .get(s.api(&format!("/streams/lo/clip.mp4?start={t}&end={}", t + 4000)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 409);
    s.advance(30_000_000);
    assert_eq!(s.sweep()["by_retention"]["fragments"], 0);
    s.advance(60_000_000);
    assert_eq!(s.sweep()["by_retention"]["fragments"], 5);
}

#[test]
fn holds_api_validates() {
    let s = SimServer::start("");
    create(&s, json!({"name": "v"}));
    for bad in [
        json!({"start": 5, "end": 1}),
        json!({"end": 1}),
        json!({"start": "x", "end": 1}),
        json!({"start": 1, "end": 2, "color": "red"}),
    ] {
        let r = client()
            .post(s.api("/streams/v/holds"))
            .json(&bad)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = client()
        .delete(s.api("/streams/v/holds/99"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .post(s.api("/streams/nope/holds"))
        .json(&json!({"start": 1, "end": 2}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn sweeping_while_a_producer_uploads_and_a_viewer_plays() {
    use std::io::{BufRead, BufReader, Write};
    let s = SimServer::start("[retention]\nsweep_interval_secs = 3600\nbatch_rows = 10\n");
    create(&s, json!({"name": "old", "retention_hours": 1}));
    for _ in 0..15 {
        s.upload("old", "h264_cmaf_chunks.mp4");
    }
    assert_eq!(s.describe("old")["fragment_count"], 300);
    s.advance(2 * HOUR_US);
    create(&s, json!({"name": "live", "retention_hours": 1}));
    // A producer sending a fragment every 50 ms, reading NDJSON acks.
    let addr = s.base.trim_start_matches("http://").to_string();
    let (init, frags) = split_sample("h264_aac_gop2s.mp4");
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(conn, "PUT /api/v1/streams/live/ingest HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nAccept: application/x-ndjson\r\n\r\n").unwrap();
    let reader = conn.try_clone().unwrap();
    let acks = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if line.starts_with('{') {
                lines.push(line);
            }
            if lines.last().is_some_and(|l| l.contains("session_ended")) {
                break;
            }
        }
        lines
    });
    let chunk = |c: &mut std::net::TcpStream, d: &[u8]| {
        write!(c, "{:x}\r\n", d.len()).unwrap();
        c.write_all(d).unwrap();
        c.write_all(b"\r\n").unwrap();
    };
    chunk(&mut conn, &init);
    chunk(&mut conn, &frags[0]);
    common::wait_until("the first live fragment", Duration::from_secs(10), || {
        !s.fragment_numbers("live").is_empty()
    });
    // A viewer polling the live playlist and fetching its newest segment.
    let viewer_base = s.api("/streams/live/hls");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_v = stop.clone();
    let viewer = std::thread::spawn(move || {
        let mut failures = Vec::new();
        let mut fetched = 0;
        while !stop_v.load(std::sync::atomic::Ordering::SeqCst) {
            let r = client()
                .get(format!("{viewer_base}/live.m3u8"))
                .send()
                .unwrap();
            if !r.status().is_success() {
                failures.push(format!("playlist {}", r.status()));
                continue;
            }
            let text = r.text().unwrap();
            if let Some(uri) = text.lines().rev().find(|l| l.starts_with("segments/")) {
                let r = client().get(format!("{viewer_base}/{uri}")).send().unwrap();
                if r.status().is_success() {
                    fetched += 1;
                } else {
                    failures.push(format!("{uri} {}", r.status()));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (fetched, failures)
    });
    let sweeper = {
        let url = s.api("/retention/sweep");
        std::thread::spawn(move || client().post(url).send().unwrap().json::<Value>().unwrap())
    };
    // Keep producing while the sweep runs (the media time keeps going, so loop the fragments
    // of one upload: each loop is a new session appended after the previous one).
    for f in &frags[1..] {
        std::thread::sleep(Duration::from_millis(50));
        chunk(&mut conn, f);
    }
    let report = sweeper.join().unwrap();
    conn.write_all(b"0\r\n\r\n").unwrap();
    let lines = acks.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (fetched, failures) = viewer.join().unwrap();
    assert_eq!(report["by_retention"]["fragments"], 300, "{report}");
    assert!(
        failures.is_empty(),
        "playback errors during the sweep: {failures:?}"
    );
    assert!(fetched > 0);
    let persisted = lines.iter().filter(|l| l.contains("\"persisted\"")).count();
    assert_eq!(persisted, frags.len(), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("\"error\"")), "{lines:?}");
    assert!(s.fragment_numbers("old").is_empty());
}
