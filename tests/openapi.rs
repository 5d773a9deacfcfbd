//! The OpenAPI document against the real server: schemathesis (PyPI, pinned in
//! tests/openapi/requirements.txt) reads `GET /api/v1/openapi.json`, sends a bounded number of
//! generated requests to every operation (valid and invalid ones, then stateful sequences) and
//! checks that no answer is a 5xx and every answer matches what the document says (status
//! code, content type, schema).
//!
//! The stream `cam1` holds a recorded sample at 2026-11-25T17:00:00Z, the time the document's
//! examples use, so reads of media, frames, clips and playlists reach real data. Changes and
//! deletes take their examples from another stream (`old-cam`), so they do not empty `cam1`
//! before the reads run. Settings for the streaming endpoints (the follow feed, server-sent
//! events, blocking reloads) are in tests/openapi/schemathesis.toml, with the reasons.
//!
//! schemathesis is found through `TAPEDECK_SCHEMATHESIS` (the path of its `st` or
//! `schemathesis` executable) or on PATH; without it the test is reported as ignored, or fails under
//! TAPEDECK_REQUIRE_CLIENTS=1.

mod common;

use common::harness::{run_tests, test, Need};
use common::{client, sample, Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() -> std::process::ExitCode {
    run_tests(vec![test(
        "schemathesis_finds_no_server_errors_or_schema_violations",
        schemathesis_finds_no_server_errors_or_schema_violations,
    )
    .needs(&[Need::Check("schemathesis", schemathesis_missing)])])
}

/// Generated test cases per operation and phase (fuzzing); enough to reach the error paths of
/// every parameter, few enough for CI on two cores.
const MAX_EXAMPLES: u32 = 20;
/// Fixed, so a CI failure reproduces; change it locally to explore.
const SEED: u64 = 1;
/// The whole run; it takes about two minutes here in a debug build.
const RUN_LIMIT: Duration = Duration::from_secs(900);
/// Media time of the uploaded sample (matches the document's examples).
const RECORDED_AT: &str = "2026-11-25T17:00:00Z";

/// Where schemathesis is looked for: `TAPEDECK_SCHEMATHESIS`, else `st` or `schemathesis` on PATH.
fn schemathesis_candidates() -> Vec<PathBuf> {
    match std::env::var_os("TAPEDECK_SCHEMATHESIS") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec!["st".into(), "schemathesis".into()],
    }
}

/// The first candidate that runs.
fn schemathesis() -> Option<PathBuf> {
    schemathesis_candidates().into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The harness's check: why schemathesis is missing, or None.
fn schemathesis_missing() -> Option<String> {
    schemathesis().is_none().then(|| {
        format!(
            "schemathesis (tried {:?}; install it with `python3 -m venv /var/tmp/tapedeck-venv && \
             /var/tmp/tapedeck-venv/bin/pip install -r tests/openapi/requirements.txt` and set \
             TAPEDECK_SCHEMATHESIS=/var/tmp/tapedeck-venv/bin/st)",
            schemathesis_candidates()
        )
    })
}

/// Gives the server data to read: a recorded stream with a hold, and a stream to change.
fn seed_data(server: &Server) {
    let body = std::fs::read(sample("h264_aac_gop2s.mp4")).expect("sample");
    let r = client()
        .put(server.api(&format!(
            "/streams/cam1/ingest?producer_start={RECORDED_AT}"
        )))
        .body(body)
        .send()
        .expect("upload");
    assert!(r.status().is_success(), "upload: {}", r.status());
    let r = client()
        .post(server.api("/streams/cam1/holds"))
        .json(&serde_json::json!({
            "start": RECORDED_AT, "end": "2026-11-25T17:00:04Z", "reason": "evidence"
        }))
        .send()
        .expect("hold");
    assert_eq!(r.status().as_u16(), 201, "hold");
    let r = client()
        .post(server.api("/streams"))
        .json(&serde_json::json!({"name": "old-cam"}))
        .send()
        .expect("create");
    assert_eq!(r.status().as_u16(), 201, "create old-cam");
}

/// The end of schemathesis' report: the summary and the failures before it.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let st = schemathesis().expect("checked by the harness");
    let server = Server::start();
    seed_data(&server);

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // schemathesis writes its example database and reports into the working directory.
    let work = tempfile::tempdir().expect("tempdir");
    let log_path = work.path().join("schemathesis.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let started = Instant::now();
    let mut child = Command::new(&st)
        .arg("--config-file")
        .arg(manifest.join("tests/openapi/schemathesis.toml"))
        .arg("run")
        .arg(server.api("/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
        ])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--seed", &SEED.to_string()])
        // Two cores are shared with the rest of the suite.
        .args(["--workers", "1"])
        // Clips and frames are built on request; a debug build is slow at it.
        .args(["--request-timeout", "30"])
        .arg("--no-color")
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("run schemathesis");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for schemathesis") {
            break s;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis did not finish within {RUN_LIMIT:?}; its output:\n{}",
                tail(&std::fs::read_to_string(&log_path).unwrap_or_default(), 200)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "schemathesis found problems ({status}); its report:\n{}\n\nserver log:\n{}",
        tail(&report, 400),
        tail(&server.log(), 50)
    );
    // The counts in CI's log: how many requests this covered.
    let summary = report
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!(
        "schemathesis passed in {:.0?} (seed {SEED}, {MAX_EXAMPLES} examples per operation):\n{summary}",
        started.elapsed()
    );
}
