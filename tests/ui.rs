//! The web UI end to end in real Chromium: tests/browser/ui.mjs (playwright-core driving Debian's
//! /usr/bin/chromium) creates a stream in the UI, watches it go live under an ffmpeg upload,
//! plays it live, clicks a past point on the timeline, drags a range and downloads the clip, and
//! checks the timeline of a stream with two sessions and a gap at every zoom level. This test
//! starts the server, uploads that gap stream, judges ui.mjs's result, probes the clip with
//! ffprobe, and copies the overview and stream-view screenshots to docs/ for the README.
//!
//! Needs node (>= 20), /usr/bin/chromium, ffmpeg/ffprobe and `npm ci` in tests/browser; skips with
//! the reason when one is missing, unless TAPEDECK_REQUIRE_CLIENTS=1 (then it fails).
//! Artifacts (screenshots of every step, console log, result.json, clip.mp4) go to
//! `<target dir>/browser-artifacts/ui/`.

mod common;

use common::*;
use serde_json::Value;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The whole ui.mjs run must finish within this.
const UI_TIMEOUT: Duration = Duration::from_secs(150);
/// The live upload's GOP: what "±1 GOP" means below.
const GOP_SECS: f64 = 2.0;

/// node, Chromium, playwright-core, ffmpeg and ffprobe (else skip with the reason, or fail in CI).
fn have_browser_clients() -> bool {
    have_browser(&["playwright-core/package.json"]) && have("ffmpeg") && have("ffprobe")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// PUTs a sample file as one upload whose first fragment is at `producer_start_ms`.
fn upload_at(server: &Server, stream: &str, sample_name: &str, producer_start_ms: i64) -> Value {
    let body = std::fs::read(sample(sample_name)).expect("read sample");
    let url = server.api(&format!(
        "/streams/{stream}/ingest?producer_start={producer_start_ms}"
    ));
    let r = client().put(&url).body(body).send().expect("PUT ingest");
    let status = r.status();
    let text = r.text().unwrap_or_default();
    assert!(status.is_success(), "upload {url}: {status} {text}");
    serde_json::from_str(&text).expect("upload summary JSON")
}

fn ffprobe_duration(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of"])
        .arg("default=noprint_wrappers=1:nokey=1")
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| {
        panic!(
            "ffprobe gave no duration for {}: {text} {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs ui.mjs (in its own process group, killed with its Chromium and ffmpeg on timeout).
fn run_ui(server: &Server, artifacts: &Path, gap_stream: &str) -> Value {
    let mut child = Command::new("node")
        .current_dir(browser_dir())
        .arg("ui.mjs")
        .args(["--base", &server.base, "--gap-stream", gap_stream])
        .arg("--artifacts")
        .arg(artifacts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn node ui.mjs");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + UI_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for node") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!(
                "ui.mjs did not finish within {UI_TIMEOUT:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    eprintln!("{}", err.trim_end());
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("ui.mjs printed no result ({status}); stdout:\n{out}"));
    let v: Value = serde_json::from_str(line).expect("ui.mjs result is JSON");
    assert!(
        v.get("harnessError").is_none(),
        "browser harness failed: {}\nserver log:\n{}",
        v["harnessError"],
        server.log()
    );
    v
}

#[test]
fn web_ui_end_to_end() {
    if !have_browser_clients() {
        return;
    }
    let server = Server::start();
    let artifacts = browser_artifacts_dir("ui");

    // The UI is served from the binary.
    let r = client().get(server.url("/")).send().expect("GET /");
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/html")));
    let r = client()
        .get(server.url("/ui/nope.js"))
        .send()
        .expect("GET /ui/nope.js");
    assert_eq!(r.status(), 404);

    // Two past sessions of the 10 s sample, 60 s apart: a gap of about 50 s.
    let now = now_ms();
    let a = upload_at(&server, "yard", "h264_aac_gop2s.mp4", now - 300_000);
    let b = upload_at(&server, "yard", "h264_aac_gop2s.mp4", now - 240_000);
    eprintln!("gap stream uploads: {a}\n                    {b}");

    let result = run_ui(&server, &artifacts, "yard");
    eprintln!("artifacts: {}", artifacts.display());
    eprintln!(
        "Chromium {}; live delay shown: {}; archive click: {}; zoom levels: {}",
        result["browserVersion"], result["liveDelay"], result["archiveClick"], result["zooms"]
    );
    let failures = result["failures"].as_array().cloned().unwrap_or_default();
    assert!(
        failures.is_empty(),
        "the UI test failed:\n{}\nserver log tail:\n{}",
        failures
            .iter()
            .map(|f| format!("- {}", f.as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join("\n"),
        server
            .log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The downloaded clip: ffprobe reads it, and it is as long as the selection (±1 GOP).
    let clip = &result["clip"];
    let file = PathBuf::from(clip["file"].as_str().expect("a clip was downloaded"));
    let expected = clip["expectedSecs"].as_f64().unwrap();
    let got = ffprobe_duration(&file);
    let frames = ffprobe_frames(&file);
    println!(
        "clip: selected {expected:.3} s, ffprobe says {got:.3} s and {frames} video frames ({})",
        clip["suggested"]
    );
    assert!(
        (got - expected).abs() <= GOP_SECS + 0.1,
        "clip of a {expected:.3} s selection is {got:.3} s long"
    );
    assert!(frames > 0, "the clip has no video frames");

    // The README's screenshots.
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).expect("create docs/");
    for (from, to) in [
        ("overview.png", "overview.png"),
        ("stream-view.png", "stream.png"),
    ] {
        let src = artifacts.join(from);
        assert!(src.exists(), "no {} screenshot", src.display());
        std::fs::copy(&src, docs.join(to)).expect("copy screenshot to docs/");
    }
}
