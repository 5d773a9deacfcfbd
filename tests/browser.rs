//! Real-browser playback: Debian's Chromium (driven by playwright-core from tests/browser) plays
//! what tapedeck serves, through hls.js (MediaSource) and through Chromium's own HLS player
//! (`<video src=….m3u8>`), and a clip through a plain `<video src=clip.mp4>`.
//!
//! Needs node (>= 20), /usr/bin/chromium, ffmpeg and `npm ci` in tests/browser; each test skips
//! with a printed reason when one is missing, unless TAPEDECK_REQUIRE_CLIENTS=1 (then it fails).
//! The tests run one at a time (a browser and a live encoder each; the machine is small).
//! Screenshots, console logs and the raw JSON results go to `<target dir>/browser-artifacts/`.

mod common;

use common::harness::{run_tests, test, Need};
use common::*;
use serde_json::Value;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn main() -> std::process::ExitCode {
    run_tests(vec![
        test(
            "live_plays_in_hlsjs_and_native_hls",
            live_plays_in_hlsjs_and_native_hls,
        )
        .needs(&[
            Need::Browser(&["playwright-core/package.json", "hls.js/dist/hls.min.js"]),
            Need::Program("ffmpeg"),
        ]),
        test(
            "archive_plays_across_a_discontinuity",
            archive_plays_across_a_discontinuity,
        )
        .needs(&[
            Need::Browser(&["playwright-core/package.json", "hls.js/dist/hls.min.js"]),
            Need::Program("ffmpeg"),
        ]),
        test(
            "low_latency_hls_latency_under_two_seconds",
            low_latency_hls_latency_under_two_seconds,
        )
        .needs(&[
            Need::Browser(&["playwright-core/package.json", "hls.js/dist/hls.min.js"]),
            Need::Program("ffmpeg"),
        ]),
        test(
            "clip_seeks_to_the_middle_and_plays",
            clip_seeks_to_the_middle_and_plays,
        )
        .needs(&[
            Need::Browser(&["playwright-core/package.json", "hls.js/dist/hls.min.js"]),
            Need::Program("ffmpeg"),
        ]),
    ])
}

/// One browser test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A whole play.mjs run (browser start, playback, screenshots) must finish within this.
const PLAY_TIMEOUT: Duration = Duration::from_secs(90);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// What to play and how; becomes play.mjs arguments.
struct Play<'a> {
    name: &'a str,
    url: String,
    players: &'a str,
    low_latency: bool,
    catch_up: Option<f64>,
    watch_secs: f64,
    seek: Option<String>,
    until: Option<f64>,
}

impl<'a> Play<'a> {
    fn new(name: &'a str, url: String, players: &'a str) -> Self {
        Play {
            name,
            url,
            players,
            low_latency: false,
            catch_up: None,
            watch_secs: 6.0,
            seek: None,
            until: None,
        }
    }
}

/// Runs play.mjs and returns its JSON result. The browser runs in its own process group, so a
/// run that overstays PLAY_TIMEOUT is killed together with its Chromium.
fn play(p: &Play, artifacts: &Path) -> Value {
    let mut cmd = Command::new("node");
    cmd.current_dir(browser_dir())
        .arg("play.mjs")
        .args(["--url", &p.url, "--player", p.players, "--name", p.name])
        .args(["--watch", &p.watch_secs.to_string()])
        .arg("--artifacts")
        .arg(artifacts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if p.low_latency {
        cmd.arg("--low-latency");
    }
    if let Some(rate) = p.catch_up {
        cmd.args(["--catch-up", &rate.to_string()]);
    }
    if let Some(s) = &p.seek {
        cmd.args(["--seek", s]);
    }
    if let Some(u) = p.until {
        cmd.args(["--until", &u.to_string()]);
    }
    let mut child = cmd.spawn().expect("spawn node play.mjs");
    let stdout = pipe_reader(child.stdout.take().unwrap());
    let stderr = pipe_reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + PLAY_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > deadline {
            kill_group(&mut child);
            panic!(
                "play.mjs ({}) did not finish within {PLAY_TIMEOUT:?}; stderr:\n{}",
                p.name,
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if !err.trim().is_empty() {
        eprintln!("{}", err.trim_end());
    }
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "play.mjs ({}) printed no result ({status}); stdout:\n{out}\nstderr:\n{err}",
                p.name
            )
        });
    let v: Value = serde_json::from_str(line).expect("play.mjs result is JSON");
    assert!(
        v.get("harnessError").is_none(),
        "browser harness failed: {}",
        v["harnessError"]
    );
    v
}

fn pipe_reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// SIGKILL to the process group this test started (node and the Chromium it launched).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

fn run<'v>(result: &'v Value, player: &str) -> &'v Value {
    result["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["player"] == player))
        .unwrap_or_else(|| panic!("no {player} run in {result}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// One-line summary of a run, for the test output.
fn summary(r: &Value) -> String {
    format!(
        "{:<6} started={} startup_ms={} first_t={:.2} last_t={:.2} advanced={:.2}s in {}ms seek={} waiting={} hls_errors={} console_errors={} screenshots={}",
        r["player"].as_str().unwrap_or("?"),
        r["started"],
        r["startupMs"],
        f(&r["firstTime"]),
        f(&r["lastTime"]),
        f(&r["advanced"]),
        r["watchedMs"],
        r["seek"],
        r["waitingEvents"],
        r["hlsErrors"].as_array().map(|a| a.len()).unwrap_or(0),
        r["consoleErrors"].as_array().map(|a| a.len()).unwrap_or(0),
        r["screenshots"].as_array().map(|a| a.len()).unwrap_or(0),
    )
}

/// The player started, saw no fatal error, and the page logged no errors and got no HTTP errors.
/// Non-fatal hls.js errors (stall nudges and the like) are printed, not failed.
fn assert_clean(r: &Value) {
    let who = r["player"].as_str().unwrap_or("?");
    let errs = &r["hlsErrors"];
    if errs.as_array().is_some_and(|a| !a.is_empty()) {
        eprintln!("{who}: non-fatal player errors: {errs}");
    }
    assert!(
        r["fatal"] == false,
        "{who}: fatal playback error: video={} hls.js={}",
        r["videoErrors"],
        errs
    );
    assert!(
        r["started"] == true,
        "{who}: playback never started; video={} hls.js={} http={}",
        r["videoErrors"],
        errs,
        r["httpErrors"]
    );
    for key in [
        "consoleErrors",
        "pageErrors",
        "httpErrors",
        "failedRequests",
    ] {
        assert!(
            r[key].as_array().is_some_and(|a| a.is_empty()),
            "{who}: {key}: {}",
            r[key]
        );
    }
}

/// `ffmpeg -re` encoding a test pattern with a tone and PUTting it as one long fMP4 upload.
/// Stops at `secs` of media or when dropped.
struct LiveProducer {
    child: Child,
}

impl LiveProducer {
    fn start(server: &Server, stream: &str, secs: u32, ll_chunks: bool) -> LiveProducer {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &secs.to_string()])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            ])
            .args([
                "-g",
                "50",
                "-keyint_min",
                "50",
                "-sc_threshold",
                "0",
                "-c:a",
                "aac",
            ])
            .args(["-f", "mp4", "-movflags"])
            .arg("frag_keyframe+empty_moov+default_base_moof");
        if ll_chunks {
            cmd.args(["-frag_duration", "500000"]);
        }
        cmd.args(["-method", "PUT"])
            .arg(server.api(&format!("/streams/{stream}/ingest")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        LiveProducer {
            child: cmd.spawn().expect("spawn ffmpeg"),
        }
    }
}

impl Drop for LiveProducer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get_text(url: &str) -> (u16, String) {
    match client().get(url).send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Waits until the live playlist lists at least `n` complete segments (EXTINF lines).
fn wait_live_segments(server: &Server, stream: &str, n: usize) -> String {
    let url = server.api(&format!("/streams/{stream}/hls/live.m3u8"));
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, text) = get_text(&url);
        if status == 200 && text.matches("#EXTINF:").count() >= n {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "live playlist never listed {n} segments; last answer: {status} {text}; server log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn live_plays_in_hlsjs_and_native_hls() {
    let _one = serial();
    let server = Server::start();
    let artifacts = browser_artifacts_dir("live");
    let _ffmpeg = LiveProducer::start(&server, "cam", 30, false);
    // Three 2 s segments before the player joins: Chromium's native HLS player gives up with
    // DEMUXER_ERROR_COULD_NOT_PARSE when it drains a one-segment live playlist and the reload
    // brings nothing new (HOLD-BACK is 3 target durations anyway).
    let playlist = wait_live_segments(&server, "cam", 3);
    eprintln!("live.m3u8 when the players joined:\n{playlist}");

    let url = server.api("/streams/cam/hls/live.m3u8");
    let result = play(&Play::new("live", url, "hlsjs,native"), &artifacts);
    eprintln!("artifacts: {}", artifacts.display());
    let hlsjs = run(&result, "hlsjs");
    let native = run(&result, "native");
    eprintln!("{}", summary(hlsjs));
    eprintln!("{}", summary(native));
    eprintln!(
        "native HLS: canPlayType('application/vnd.apple.mpegurl') = {:?} in Chromium {}",
        native["canPlayType"]["hls"], result["browserVersion"]
    );
    assert_eq!(
        native["supported"], true,
        "LOUD: this Chromium has no native HLS (canPlayType = {:?}); the native checks cannot run",
        native["canPlayType"]["hls"]
    );
    for r in [hlsjs, native] {
        assert_clean(r);
        assert!(
            f(&r["advanced"]) >= 3.0,
            "{}: currentTime advanced only {:.2} s while watching {} ms",
            r["player"],
            f(&r["advanced"]),
            r["watchedMs"]
        );
    }
}

fn archive_plays_across_a_discontinuity() {
    let _one = serial();
    let server = Server::start();
    let artifacts = browser_artifacts_dir("archive");
    let now = now_ms();
    // Two past sessions of the 10 s sample, 20 s apart.
    let s1_start = now - 120_000;
    let s2_start = now - 90_000;
    let a = upload_at(&server, "past", "h264_aac_gop2s.mp4", s1_start);
    let b = upload_at(&server, "past", "h264_aac_gop2s.mp4", s2_start);
    eprintln!("uploads: {a}\n         {b}");
    let first_session_secs: f64 = all_fragments(&server, "past")
        .iter()
        .filter(|fr| fr["session"] == a["session"])
        .map(|fr| fr["duration_us"].as_f64().unwrap() / 1e6)
        .sum();
    assert!(
        first_session_secs > 5.0,
        "first session: {first_session_secs} s"
    );

    let url = server.api(&format!(
        "/streams/past/hls/archive.m3u8?start={}&end={now}",
        s1_start - 10_000
    ));
    let (status, text) = get_text(&url);
    assert_eq!(status, 200, "archive.m3u8: {text}");
    eprintln!("archive.m3u8:\n{text}");
    assert_eq!(
        text.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "one discontinuity between the sessions"
    );
    assert!(text.contains("#EXT-X-ENDLIST"), "a past range is VOD");

    // Start near the end of the first session and play across the join.
    let mut p = Play::new("archive", url, "hlsjs,native");
    let seek_to = first_session_secs - 2.0;
    let goal = first_session_secs + 2.5;
    p.seek = Some(format!("{seek_to:.3}"));
    p.until = Some(goal + 0.5);
    p.watch_secs = 12.0;
    let result = play(&p, &artifacts);
    eprintln!("artifacts: {}", artifacts.display());
    eprintln!(
        "discontinuity at player time {first_session_secs:.3} s; seek to {seek_to:.3}, need {goal:.3}"
    );
    for player in ["hlsjs", "native"] {
        let r = run(&result, player);
        eprintln!("{}", summary(r));
        assert_clean(r);
        let seek = &r["seek"];
        assert_eq!(
            seek["seeked"], true,
            "{player}: seek never completed: {seek}"
        );
        assert!(
            (f(&seek["landed"]) - seek_to).abs() <= 1.0,
            "{player}: seek to {seek_to} landed at {}",
            seek["landed"]
        );
        assert!(
            f(&r["maxTime"]) >= goal,
            "{player}: playback stopped at {:.3} s, did not get past the discontinuity at {first_session_secs:.3} s (+2.5 s)",
            f(&r["maxTime"])
        );
    }
    // hls.js maps the playing position to wall-clock time with the PDTs: past the join it must
    // be in the second session, 20 s of gap later.
    let hlsjs = run(&result, "hlsjs");
    let last_pdt = hlsjs["samples"]
        .as_array()
        .and_then(|s| s.last())
        .map(|s| f(&s["pdt"]))
        .unwrap_or(f64::NAN);
    eprintln!(
        "hls.js playingDate before/after: {} / {} (second session starts {})",
        hlsjs["firstPlayingDate"], hlsjs["lastPlayingDate"], s2_start
    );
    assert!(
        last_pdt >= s2_start as f64 && last_pdt <= (s2_start + 10_000) as f64,
        "hls.js playingDate {last_pdt} after the discontinuity is not in the second session ({s2_start}..)"
    );
}

/// What one LL-HLS playback measured.
struct LlMeasurement {
    median_ms: f64,
    lat_ms: Vec<f64>,
    /// Why the figure says more about this machine than about tapedeck, if it does: the
    /// producer fell behind real time, or the browser's sampler stalled.
    overloaded: Option<String>,
}

fn ll_attempt(server: &Server, stream: &str, artifacts: &Path) -> LlMeasurement {
    let spawned_ms = now_ms();
    let _ffmpeg = LiveProducer::start(server, stream, 30, true);
    let playlist = wait_live_segments(server, stream, 2);
    assert!(
        playlist.contains("#EXT-X-PART:") && playlist.contains("#EXT-X-PRELOAD-HINT"),
        "0.5 s chunks should be published as LL-HLS parts:\n{playlist}"
    );

    let mut p = Play::new(
        stream,
        server.api(&format!("/streams/{stream}/hls/live.m3u8")),
        "hlsjs",
    );
    p.low_latency = true;
    // Let hls.js speed up (up to 1.5x) to reach its latency target (PART-HOLD-BACK) as an LL
    // player is meant to; at the default rate 1 it keeps whatever latency it joined with
    // (1.6-1.9 s measured here, depending on where in a part it joined).
    p.catch_up = Some(1.5);
    p.watch_secs = 11.0;
    let result = play(&p, artifacts);
    let hlsjs = run(&result, "hlsjs");
    eprintln!("{}", summary(hlsjs));
    assert_clean(hlsjs);
    assert!(
        f(&hlsjs["advanced"]) >= 6.0,
        "hls.js advanced only {:.2} s in 11 s",
        f(&hlsjs["advanced"])
    );

    // How far behind real time the producer's fragments arrived (ffmpeg -re should be on time;
    // a starved encoder makes every PDT-based latency grow).
    let frags = all_fragments(server, stream);
    let first = &frags[0];
    let t0_producer = first["producer_time_us"].as_i64().unwrap();
    let t0_server = first["server_time_us"].as_i64().unwrap();
    let producer_lag_ms = frags
        .iter()
        .map(|fr| {
            let due = fr["producer_time_us"].as_i64().unwrap() - t0_producer;
            let came = fr["server_time_us"].as_i64().unwrap() - t0_server;
            (came - due) / 1000
        })
        .max()
        .unwrap_or(0);

    // Latency = wall clock - PDT of the playing position, once settled (>= 8 s of playback).
    let samples = hlsjs["samples"].as_array().cloned().unwrap_or_default();
    let max_sample_gap_ms = samples
        .windows(2)
        .map(|w| f(&w[1]["wall"]) - f(&w[0]["wall"]))
        .fold(0.0, f64::max);
    let settled: Vec<&Value> = samples
        .iter()
        .filter(|s| f(&s["sinceStart"]) >= 8000.0 && s["latencyMs"].is_number())
        .collect();
    let lat: Vec<f64> = settled.iter().map(|s| f(&s["latencyMs"])).collect();
    let median_ms = median(lat.clone());
    let hls_latency = median(settled.iter().map(|s| f(&s["hlsLatency"])).collect());
    let target = median(settled.iter().map(|s| f(&s["hlsTarget"])).collect());
    let max_rate = samples.iter().map(|s| f(&s["rate"])).fold(1.0, f64::max);
    // Without prft or producer_start the first fragment is stamped when it arrives, so PDT is
    // already behind the camera by ffmpeg's start-up, the encoder's delay and one chunk.
    let stamp_lag_ms = t0_producer / 1000 - spawned_ms;
    println!(
        "LL-HLS latency (Date.now() - hls.playingDate) after 8 s: median {:.0} ms over {} samples {:?}; \
         hls.latency {:.3} s (hls.js target {:.3} s, playbackRate up to {:.2}); first fragment stamped {} ms after ffmpeg was \
         spawned (capture-to-display <= {:.0} ms); producer lag behind real time up to {} ms; \
         largest sampling gap {:.0} ms",
        median_ms,
        lat.len(),
        lat,
        hls_latency,
        target,
        max_rate,
        stamp_lag_ms,
        median_ms + stamp_lag_ms as f64,
        producer_lag_ms,
        max_sample_gap_ms
    );
    let mut why = Vec::new();
    if producer_lag_ms > 500 {
        why.push(format!(
            "ffmpeg -re fell {producer_lag_ms} ms behind real time"
        ));
    }
    if max_sample_gap_ms > 1000.0 {
        why.push(format!(
            "the browser sampler stalled for {max_sample_gap_ms:.0} ms (250 ms expected)"
        ));
    }
    assert!(
        lat.len() >= 4 || !why.is_empty(),
        "too few settled latency samples: {samples:?}"
    );
    LlMeasurement {
        median_ms,
        lat_ms: lat,
        overloaded: (!why.is_empty()).then(|| why.join("; ")),
    }
}

fn low_latency_hls_latency_under_two_seconds() {
    let _one = serial();
    let server = Server::start();
    let artifacts = browser_artifacts_dir("ll-hls");
    let mut m = ll_attempt(&server, "ll", &artifacts);
    // One more try only when this machine demonstrably could not keep up (shared cores).
    if m.median_ms.is_nan() || m.median_ms >= 2000.0 {
        if let Some(why) = &m.overloaded {
            eprintln!(
                "LL-HLS: {:.0} ms with an overloaded machine ({why}); measuring once more",
                m.median_ms
            );
            m = ll_attempt(&server, "ll2", &artifacts);
        }
    }
    eprintln!("artifacts: {}", artifacts.display());
    assert!(
        m.median_ms < 2000.0,
        "LL-HLS latency {:.0} ms (median of {:?}) is not under 2 s{}",
        m.median_ms,
        m.lat_ms,
        m.overloaded
            .map(|w| format!(" (machine overloaded: {w})"))
            .unwrap_or_default()
    );
}

fn clip_seeks_to_the_middle_and_plays() {
    let _one = serial();
    let server = Server::start();
    let artifacts = browser_artifacts_dir("clip");
    let start = now_ms() - 60_000;
    upload_at(&server, "c", "h264_aac_gop2s.mp4", start);
    let url = server.api(&format!(
        "/streams/c/clip.mp4?start={start}&end={}",
        start + 10_000
    ));
    let head = client().get(&url).header("Range", "bytes=0-99").send();
    match head {
        Ok(r) => eprintln!(
            "clip.mp4 Range probe: {} {:?} {:?}",
            r.status(),
            r.headers().get("content-type"),
            r.headers().get("content-range")
        ),
        Err(e) => panic!("clip.mp4: {e}"),
    }

    let mut p = Play::new("clip", url, "file");
    p.seek = Some("middle".to_string());
    p.watch_secs = 3.0;
    let result = play(&p, &artifacts);
    eprintln!("artifacts: {}", artifacts.display());
    let r = run(&result, "file");
    eprintln!("{}", summary(r));
    eprintln!("requests: {}", r["mediaResponses"]);
    assert_clean(r);
    let seek = &r["seek"];
    let duration = f(&seek["durationBefore"]);
    assert!(
        (duration - 10.0).abs() < 0.5,
        "clip of 10 s reports duration {duration}"
    );
    let target = f(&seek["target"]);
    let landed = f(&seek["landed"]);
    println!(
        "clip: duration {duration:.3} s, seek to {target:.3} landed at {landed:.3} in {} ms, then advanced {:.2} s",
        seek["seekMs"],
        f(&r["advanced"])
    );
    assert_eq!(seek["seeked"], true, "seek never completed: {seek}");
    assert!(
        (landed - duration / 2.0).abs() <= 1.0,
        "seek to the middle ({target}) landed at {landed} (Range not honoured snaps to 0)"
    );
    assert!(
        f(&r["firstTime"]) >= duration / 2.0 - 1.0,
        "playback after the seek started at {}",
        r["firstTime"]
    );
    assert!(
        f(&r["advanced"]) >= 1.5,
        "clip did not play on after the seek"
    );
    let ranged = r["mediaResponses"]
        .as_array()
        .is_some_and(|a| a.iter().any(|m| m["status"] == 206));
    assert!(
        ranged,
        "Chromium got no 206 for clip.mp4: {}",
        r["mediaResponses"]
    );
}
