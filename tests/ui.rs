//! The web UI end to end in real Chromium: tests/browser/ui.mjs (playwright-core driving Debian's
//! /usr/bin/chromium) creates a stream in the UI, watches it go live under an ffmpeg upload,
//! plays it live, clicks a past point on the timeline, drags a range and downloads the clip, and
//! checks the timeline of a stream with two sessions and a gap at every zoom level. This test
//! starts the server, uploads that gap stream, judges ui.mjs's result, probes the clip with
//! ffprobe, and (with TAPEDECK_UPDATE_DOCS=1) copies the overview and stream-view screenshots to
//! docs/ for the README.
//!
//! Needs node (>= 20), /usr/bin/chromium, ffmpeg/ffprobe and `npm ci` in tests/browser; skips with
//! the reason when one is missing, unless TAPEDECK_REQUIRE_CLIENTS=1 (then it fails).
//! Artifacts (screenshots of every step, console log, result.json, clip.mp4) go to
//! `<target dir>/browser-artifacts/ui/`.

mod common;

use common::harness::{run_tests, test, Need};
use common::*;
use serde_json::Value;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() -> std::process::ExitCode {
    run_tests(vec![
        test("web_ui_end_to_end", web_ui_end_to_end).needs(&[
            Need::Browser(&["playwright-core/package.json"]),
            Need::Program("ffmpeg"),
            Need::Program("ffprobe"),
        ]),
        test(
            "web_ui_live_under_a_second_with_and_without_native_hls",
            web_ui_live_under_a_second_with_and_without_native_hls,
        )
        .needs(&[
            Need::Browser(&["playwright-core/package.json"]),
            Need::Program("ffmpeg"),
            Need::Program("ffprobe"),
        ]),
        test(
            "web_ui_states_a_new_user_meets",
            web_ui_states_a_new_user_meets,
        )
        .needs(&[
            Need::Browser(&["playwright-core/package.json"]),
            Need::Program("ffmpeg"),
            Need::Program("ffprobe"),
        ]),
        test(
            "web_ui_with_auth_uses_its_own_key_form",
            web_ui_with_auth_uses_its_own_key_form,
        )
        .needs(&[
            Need::Browser(&["playwright-core/package.json"]),
            Need::Program("ffmpeg"),
            Need::Program("ffprobe"),
        ]),
    ])
}

/// The whole ui.mjs run must finish within this.
const UI_TIMEOUT: Duration = Duration::from_secs(150);
/// The live upload's GOP: what "±1 GOP" means below.
const GOP_SECS: f64 = 2.0;

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
    run_script(
        server,
        "ui.mjs",
        &["--gap-stream", gap_stream],
        artifacts,
        UI_TIMEOUT,
    )
}

/// Runs one of tests/browser's scripts against `server` and returns its JSON result (the
/// script's harness must not have failed; its `failures` are for the caller to judge).
fn run_script(
    server: &Server,
    script: &str,
    args: &[&str],
    artifacts: &Path,
    timeout: Duration,
) -> Value {
    let mut child = Command::new("node")
        .current_dir(browser_dir())
        .arg(script)
        .args(["--base", &server.base])
        .args(args)
        .arg("--artifacts")
        .arg(artifacts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn node");
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
    let deadline = Instant::now() + timeout;
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
                "{script} did not finish within {timeout:?}; stderr:\n{}",
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
        .unwrap_or_else(|| panic!("{script} printed no result ({status}); stdout:\n{out}"));
    let v: Value = serde_json::from_str(line).expect("the script's result is JSON");
    assert!(
        v.get("harnessError").is_none(),
        "browser harness failed: {}\nserver log:\n{}",
        v["harnessError"],
        server.log()
    );
    v
}

fn web_ui_end_to_end() {
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
    assert_no_failures(&server, "the UI test", &result);

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

    // The README's screenshots: always taken, copied into the checkout only when asked
    // (TAPEDECK_UPDATE_DOCS=1), so `cargo test` leaves the work tree as it found it.
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    for (from, to) in [
        ("overview.png", "overview.png"),
        ("stream-view.png", "stream.png"),
    ] {
        let src = artifacts.join(from);
        assert!(src.exists(), "no {} screenshot", src.display());
        if std::env::var_os("TAPEDECK_UPDATE_DOCS").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(&docs).expect("create docs/");
            std::fs::copy(&src, docs.join(to)).expect("copy screenshot to docs/");
        }
    }
}

/// Fails with the script's failures and the server log's tail when the run had any.
fn assert_no_failures(server: &Server, what: &str, result: &Value) {
    let failures = result["failures"].as_array().cloned().unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{what} failed:\n{}\nserver log tail:\n{}",
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
}

/// The live producer of the latency test: ffmpeg `-re`, H.264 (no look-ahead) and AAC, 2 s
/// GOP, sent in 0.2 s CMAF chunks, each one stored and playable as it arrives. Its
/// `producer_start` is the wall clock just before ffmpeg starts, so the delay the UI shows
/// also counts ffmpeg's own start-up and encoding: glass to glass, not server to screen.
fn spawn_chunked_producer(server: &Server, stream: &str, secs: u32) -> Child {
    let url = server.api(&format!(
        "/streams/{stream}/ingest?producer_start={}",
        now_ms()
    ));
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            &secs.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
        ])
        .args([
            "-tune",
            "zerolatency",
            "-g",
            "50",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ])
        .args([
            "-f",
            "mp4",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
        ])
        .args(["-frag_duration", "200000", "-method", "PUT"])
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ffmpeg")
}

fn fragment_count(server: &Server, stream: &str) -> i64 {
    client()
        .get(server.api(&format!("/streams/{stream}")))
        .send()
        .ok()
        .and_then(|r| r.json::<Value>().ok())
        .and_then(|v| v["fragment_count"].as_i64())
        .unwrap_or(0)
}

/// Live in the stream view is under a second behind, in Chromium as it is and with its native
/// HLS player taken away (what Firefox has), on the default build (nothing from npm in the
/// binary); clicking the archive plays from the clicked time in both.
fn web_ui_live_under_a_second_with_and_without_native_hls() {
    let server = Server::start();
    let mut ffmpeg = spawn_chunked_producer(&server, "cam1", 90);
    // 3 s recorded before the browser opens; the script itself waits for the live edge.
    wait_until("15 fragments", Duration::from_secs(30), || {
        fragment_count(&server, "cam1") >= 15
    });
    let mut delays = Vec::new();
    for (variant, flag) in [("as-is", None), ("no-native-hls", Some("--no-native-hls"))] {
        let artifacts = browser_artifacts_dir(&format!("ui-live-{variant}"));
        let mut args = vec!["--stream", "cam1"];
        args.extend(flag);
        let r = run_script(
            &server,
            "ui_live.mjs",
            &args,
            &artifacts,
            Duration::from_secs(90),
        );
        println!(
            "{}: live delay median {} s (max {}; from the shown position {} s), archive click {} (native HLS: {:?}, playlist requests {})",
            r["variant"], r["liveDelayS"], r["liveDelayMaxS"], r["liveDelayOwnS"], r["archive"], r["nativeHls"], r["m3u8Requests"]
        );
        assert_no_failures(&server, &format!("live in the UI ({variant})"), &r);
        delays.push(r["liveDelayS"].as_f64().expect("a measured delay"));
    }
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    assert!(delays.iter().all(|d| *d < 1.0), "live delays {delays:?}");
}

/// Runs one case of ui_states.mjs; its screenshots go to `browser-artifacts/ui-states/<case>`.
fn ui_state(server: &Server, case: &str, extra: &[&str]) -> Value {
    let artifacts = browser_artifacts_dir(&format!("ui-states/{case}"));
    let mut args = vec!["--case", case];
    args.extend_from_slice(extra);
    let r = run_script(
        server,
        "ui_states.mjs",
        &args,
        &artifacts,
        Duration::from_secs(90),
    );
    println!("{case}: {}", r["steps"]);
    assert_no_failures(server, &format!("the UI state '{case}'"), &r);
    r
}

/// What a new user meets, each with a screenshot: the empty overview (whose command, run as
/// shown, makes a first stream), a stream that does not exist, an idle stream with its last
/// frame as the poster, a producer that stops while watched, and H.265 in a browser that
/// cannot decode it.
fn web_ui_states_a_new_user_meets() {
    let server = Server::start();
    let r = ui_state(&server, "empty", &[]);
    // The command the page shows works as shown (cut to 3 s).
    let cmd = r["steps"][0]["cmd"]
        .as_str()
        .expect("the shown command")
        .to_string();
    let cmd = cmd.replace("-method PUT", "-t 3 -method PUT");
    run_ok(Command::new("sh").args(["-c", &format!("{cmd} -loglevel error")]));
    let n = fragment_count(&server, "cam1");
    println!("the empty overview's command stored {n} fragments in cam1");
    assert!(n >= 10, "the first-stream command stored {n} fragments");

    ui_state(&server, "unknown", &["--stream", "nope"]);

    upload_at(&server, "yard", "h264_aac_gop2s.mp4", now_ms() - 120_000);
    ui_state(&server, "idle", &["--stream", "yard"]);

    let mut ffmpeg = spawn_chunked_producer(&server, "stop1", 12);
    wait_until("stop1 live", Duration::from_secs(30), || {
        fragment_count(&server, "stop1") >= 5
    });
    ui_state(&server, "stopped", &["--stream", "stop1"]);
    let _ = ffmpeg.wait();

    let tmp = tempfile::tempdir().expect("tempdir");
    let h265 = tmp.path().join("h265.mp4");
    run_ok(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
            .args(["-i", "testsrc2=size=320x240:rate=25", "-t", "4"])
            .args(["-c:v", "libx265", "-preset", "ultrafast"])
            .args([
                "-x265-params",
                "log-level=error",
                "-tag:v",
                "hvc1",
                "-g",
                "25",
            ])
            .args([
                "-f",
                "mp4",
                "-movflags",
                "frag_keyframe+empty_moov+default_base_moof",
            ])
            .arg(&h265),
    );
    let body = std::fs::read(&h265).expect("read the H.265 file");
    let r = client()
        .put(server.api("/streams/hevc/ingest"))
        .body(body)
        .send()
        .expect("PUT H.265");
    assert!(r.status().is_success(), "H.265 upload: {}", r.status());
    ui_state(&server, "codec", &["--stream", "hevc"]);
}

/// With auth on, the UI asks for the key in its own form (a password field; no Basic dialog,
/// no window.prompt), says when a key is refused, remembers the key, plays with it, and
/// forgets it on request, leaving a way to enter one again.
fn web_ui_with_auth_uses_its_own_key_form() {
    const ADMIN: &str = "ui-admin-key-0123456789";
    const VIEWER: &str = "ui-viewer-key-0123456789";
    let server = Server::start_with_config(&format!(
        "[auth]\ntoken_secret = \"a-ui-test-secret-0123456789\"\nkeys = [\n\
         {{ key = \"{ADMIN}\", role = \"admin\" }},\n\
         {{ key = \"{VIEWER}\", role = \"viewer\" }},\n]\n"
    ));
    let body = std::fs::read(sample("h264_aac_gop2s.mp4")).expect("read sample");
    let url = server.api(&format!(
        "/streams/cam1/ingest?producer_start={}",
        now_ms() - 120_000
    ));
    let r = client()
        .put(url)
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .expect("PUT with the admin key");
    assert!(r.status().is_success(), "upload: {}", r.status());
    ui_state(&server, "auth", &["--stream", "cam1", "--key", VIEWER]);
}
