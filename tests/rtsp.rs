//! Recording RTSP cameras (issue 16): a real RTSP server on 127.0.0.1 (GStreamer's, through
//! Python GI: tests/rtsp/server.py) serving H.264 + AAC, H.265, and H.264 behind a password;
//! tapedeck pulls it as a stream's source. Every test waits for conditions, never for time,
//! except where the time is the point (record for 20 s; the camera is down for 5 s).

mod common;

use common::harness::{run_tests, test, Need};
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test server's keyframe interval (frames) and rate.
const GOP: u64 = 50;
const FPS: u64 = 25;

fn main() -> std::process::ExitCode {
    let rtsp = Need::Check("gst-rtsp-server", rtsp_server_missing);
    let ff = Need::Program("ffprobe");
    run_tests(vec![
        test(
            "h264_aac_starts_within_3s_and_archive_holds_every_frame_sent",
            h264_aac_starts_within_3s_and_archive_holds_every_frame_sent,
        )
        .needs(&[rtsp, ff]),
        test("h265_records", h265_records).needs(&[rtsp, ff]),
        test("udp_transport_records", udp_transport_records).needs(&[rtsp, ff]),
        test(
            "password_protected_camera_records_with_credentials",
            password_protected_camera_records_with_credentials,
        )
        .needs(&[rtsp, ff]),
        test(
            "wrong_password_is_unauthorized_backs_off_and_never_leaks",
            wrong_password_is_unauthorized_backs_off_and_never_leaks,
        )
        .needs(&[rtsp]),
        test(
            "camera_restart_reconnects_with_one_gap",
            camera_restart_reconnects_with_one_gap,
        )
        .needs(&[rtsp]),
        test(
            "removing_the_source_or_deleting_the_stream_stops_the_pull_within_1s",
            removing_the_source_or_deleting_the_stream_stops_the_pull_within_1s,
        )
        .needs(&[rtsp]),
        test(
            "silent_camera_is_detected_and_called_again",
            silent_camera_is_detected_and_called_again,
        )
        .needs(&[rtsp]),
        test("bad_sources_are_refused", bad_sources_are_refused),
        test(
            "live_camera_plays_in_chromium_through_ll_hls",
            live_camera_plays_in_chromium_through_ll_hls,
        )
        .needs(&[
            rtsp,
            Need::Browser(&["playwright-core/package.json", "hls.js/dist/hls.min.js"]),
        ]),
    ])
}

const PYTHON: &str = "/usr/bin/python3";

/// Python with GI and GStreamer's RTSP server, and the encoders the script uses.
fn rtsp_server_missing() -> Option<String> {
    let probe = "import gi; gi.require_version('Gst', '1.0'); \
                 gi.require_version('GstRtspServer', '1.0'); \
                 from gi.repository import Gst, GstRtspServer; Gst.init(None); \
                 missing = [e for e in ('x264enc', 'x265enc', 'avenc_aac', 'rtph264pay', \
                 'rtph265pay', 'rtpmp4gpay', 'videotestsrc') \
                 if Gst.ElementFactory.find(e) is None]; \
                 print(' '.join(missing)); raise SystemExit(1 if missing else 0)";
    match Command::new(PYTHON).args(["-c", probe]).output() {
        Err(e) => Some(format!("{PYTHON} ({e})")),
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "GStreamer's RTSP server through GI (Debian: gir1.2-gst-rtsp-server-1.0 \
             gstreamer1.0-rtsp python3-gi gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad \
             gstreamer1.0-libav): {}{}",
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
    }
}

/// The RTSP server process, on a port chosen here; restartable on the same port.
struct Camera {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Camera {
    fn start(args: &[&str]) -> Camera {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut c = Camera {
            child: None,
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rtsp/server.py");
        let mut child = Command::new(PYTHON)
            .arg(script)
            .args(["--port", &self.port.to_string(), "--gop", &GOP.to_string()])
            .arg("--stats")
            .arg(self.stats_path())
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the RTSP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the RTSP server's first line");
        assert!(line.starts_with("ready"), "RTSP server said {line:?}");
        self.child = Some(child);
    }

    fn stats_path(&self) -> PathBuf {
        self.dir.path().join("stats.json")
    }

    fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}{mount}", self.port)
    }

    fn stats(&self) -> Value {
        std::fs::read_to_string(self.stats_path())
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(json!({"clients": 0, "mounts": {}}))
    }

    fn frames_sent(&self, mount: &str) -> u64 {
        self.stats()["mounts"][mount]["frames"]
            .as_u64()
            .unwrap_or(0)
    }

    fn clients(&self) -> u64 {
        self.stats()["clients"].as_u64().unwrap_or(0)
    }

    /// SIGSTOP or SIGCONT: a camera that hangs without closing its connections, and recovers.
    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) only sends a signal to our own child process.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.stats_path());
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.kill();
    }
}

fn create_with_source(server: &Server, name: &str, source: Value) -> Value {
    let r = client()
        .post(server.api("/streams"))
        .json(&json!({"name": name, "source": source}))
        .send()
        .expect("POST /streams");
    let (status, body) = json_of(r);
    assert_eq!(status, 201, "{body}");
    body
}

fn rtsp_source(url: &str, transport: &str) -> Value {
    json!({"rtsp": {"url": url, "transport": transport}})
}

fn describe(server: &Server, name: &str) -> Value {
    get_json(&server.api(&format!("/streams/{name}")))
}

fn source_state(server: &Server, name: &str) -> String {
    describe(server, name)["source"]["status"]["state"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

fn fragment_count(server: &Server, name: &str) -> u64 {
    describe(server, name)["fragment_count"]
        .as_u64()
        .unwrap_or(0)
}

fn set_source(server: &Server, name: &str, source: Value) {
    let r = client()
        .patch(server.api(&format!("/streams/{name}")))
        .json(&json!({ "source": source }))
        .send()
        .expect("PATCH");
    let (status, body) = json_of(r);
    assert_eq!(status, 200, "{body}");
}

/// Frames decoded from the whole archive (ffprobe -count_frames on the archive playlist).
fn archive_frames(server: &Server, name: &str, selector: &str) -> u64 {
    let url = server.api(&format!(
        "/streams/{name}/hls/archive.m3u8?start=earliest&end=now"
    ));
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", selector])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&url)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "ffprobe gave no frame count for {url}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Start times of the first video and the first audio stream of a file, in seconds.
fn start_times(path: &std::path::Path) -> (f64, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,start_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let find = |kind: &str| {
        text.lines()
            .find_map(|l| {
                let (k, t) = l.split_once(',')?;
                (k == kind).then(|| t.parse::<f64>().ok()).flatten()
            })
            .unwrap_or_else(|| panic!("no {kind} start time in {text}"))
    };
    (find("video"), find("audio"))
}

fn h264_aac_starts_within_3s_and_archive_holds_every_frame_sent() {
    let camera = Camera::start(&[]);
    let server = Server::start();
    let created = Instant::now();
    let body = create_with_source(&server, "cam", rtsp_source(&camera.url("/h264"), "tcp"));
    assert_eq!(body["source"]["rtsp"]["transport"], "tcp", "{body}");
    wait_until("the first fragment", Duration::from_secs(3), || {
        fragment_count(&server, "cam") > 0
    });
    let started_s = created.elapsed().as_secs_f64();
    let d = describe(&server, "cam");
    assert_eq!(d["source"]["status"]["state"], "streaming", "{d}");
    assert_eq!(d["codecs"], "avc1.42c00d,mp4a.40.2", "{d}");
    assert!(
        d["source"]["status"]["bitrate_bps"].as_u64().is_some(),
        "{d}"
    );
    assert!(d["source"]["status"]["last_frame_time"].is_string(), "{d}");
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    assert!(
        metrics.contains(r#"tapedeck_source_state{stream="cam",state="streaming"} 1"#),
        "{metrics}"
    );
    // Record for 20 s, then stop the pull and compare with what the camera sent.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(created.elapsed()));
    set_source(&server, "cam", Value::Null);
    wait_until(
        "the camera to see the pull end",
        Duration::from_secs(2),
        || camera.clients() == 0,
    );
    let sent = camera.frames_sent("/h264");
    let got = archive_frames(&server, "cam", "v:0");
    eprintln!(
        "recording started {started_s:.2} s after create; camera sent {sent} frames, \
         archive decodes {got}"
    );
    assert!(
        sent >= 19 * FPS,
        "the camera sent only {sent} frames in 20 s"
    );
    assert!(
        got <= sent && sent - got <= 2 * GOP,
        "archive decodes {got} frames, camera sent {sent}: more than one GOP ({GOP}) lost at \
         each edge"
    );
    let audio = archive_frames(&server, "cam", "a:0");
    assert!(audio > 0, "no audio frames");
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    std::fs::write(
        &clip,
        get_bytes(&server.api("/streams/cam/clip.mp4?start=earliest&end=now")),
    )
    .unwrap();
    let (v, a) = start_times(&clip);
    eprintln!("clip.mp4: first video pts {v:.3} s, first audio pts {a:.3} s");
    assert!(
        (v - a).abs() < 0.1,
        "audio and video start {:.3} s apart",
        (v - a).abs()
    );
    let sessions = get_json(&server.api("/streams/cam/sessions"));
    assert_eq!(sessions["sessions"][0]["kind"], "rtsp", "{sessions}");
}

fn records_briefly(mount: &str, transport: &str, codec_prefix: &str) {
    let camera = Camera::start(&[]);
    let server = Server::start();
    create_with_source(&server, "cam", rtsp_source(&camera.url(mount), transport));
    wait_until("two fragments", Duration::from_secs(10), || {
        fragment_count(&server, "cam") >= 2
    });
    let d = describe(&server, "cam");
    assert!(
        d["codecs"].as_str().unwrap_or("").starts_with(codec_prefix),
        "{d}"
    );
    assert_eq!(d["source"]["rtsp"]["transport"], transport, "{d}");
    assert_eq!(d["source"]["status"]["state"], "streaming", "{d}");
    set_source(&server, "cam", Value::Null);
    let got = archive_frames(&server, "cam", "v:0");
    assert!(got >= GOP, "only {got} frames decoded");
}

fn h265_records() {
    records_briefly("/h265", "tcp", "hvc1");
}

fn udp_transport_records() {
    records_briefly("/video", "udp", "avc1");
}

fn password_protected_camera_records_with_credentials() {
    let camera = Camera::start(&["--user", "viewer", "--password", "s3cret-Pa55"]);
    let server = Server::start();
    let mut source = rtsp_source(&camera.url("/secure"), "tcp");
    source["rtsp"]["username"] = "viewer".into();
    source["rtsp"]["password"] = "s3cret-Pa55".into();
    let body = create_with_source(&server, "cam", source);
    assert_eq!(body["source"]["rtsp"]["password"], "<redacted>", "{body}");
    wait_until("the first fragment", Duration::from_secs(10), || {
        fragment_count(&server, "cam") > 0
    });
    // Also when the credentials come in the URL: moved out of it, and never shown.
    let url = format!("rtsp://viewer:s3cret-Pa55@127.0.0.1:{}/secure", camera.port);
    set_source(&server, "cam", json!({"rtsp": {"url": url}}));
    let d = describe(&server, "cam");
    let shown = d["source"].to_string();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert_eq!(d["source"]["rtsp"]["username"], "viewer", "{d}");
    assert!(
        !server.log().contains("s3cret-Pa55"),
        "the password is in the log"
    );
}

fn wrong_password_is_unauthorized_backs_off_and_never_leaks() {
    const WRONG: &str = "not-the-Passw0rd";
    let camera = Camera::start(&["--user", "viewer", "--password", "right"]);
    let server = Server::start();
    let mut source = rtsp_source(&camera.url("/secure"), "tcp");
    source["rtsp"]["username"] = "viewer".into();
    source["rtsp"]["password"] = WRONG.into();
    let started = Instant::now();
    let created = create_with_source(&server, "cam", source);
    wait_until("the unauthorized state", Duration::from_secs(5), || {
        source_state(&server, "cam") == "unauthorized"
    });
    std::thread::sleep(Duration::from_secs(20).saturating_sub(started.elapsed()));
    let d = describe(&server, "cam");
    let status = &d["source"]["status"];
    assert_eq!(status["state"], "unauthorized", "{d}");
    let error = status["last_error"].as_str().unwrap_or("");
    assert!(
        error.contains("401"),
        "the camera's answer is not shown: {error}"
    );
    assert!(status["next_attempt"].is_string(), "{d}");
    // Backoff 1, 2, 4, 8 s (with jitter, 75-100 %): 5 or 6 attempts in 20 s, never a loop.
    let attempts = status["attempts"].as_u64().unwrap_or(0);
    eprintln!("{attempts} attempts in 20 s; last error: {error}");
    assert!((3..=7).contains(&attempts), "{attempts} attempts in 20 s");
    assert_eq!(fragment_count(&server, "cam"), 0);
    // The password is in no API response and no log line.
    let mut shown = vec![created.to_string(), d.to_string()];
    shown.push(get_json(&server.api("/streams")).to_string());
    shown.push(
        client()
            .get(server.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default(),
    );
    for text in shown.iter().chain(std::iter::once(&server.log())) {
        assert!(!text.contains(WRONG), "the password leaked: {text}");
    }
}

fn camera_restart_reconnects_with_one_gap() {
    let mut camera = Camera::start(&[]);
    let server = Server::start();
    create_with_source(&server, "cam", rtsp_source(&camera.url("/video"), "tcp"));
    wait_until("two fragments", Duration::from_secs(10), || {
        fragment_count(&server, "cam") >= 2
    });
    camera.kill();
    let killed = Instant::now();
    let mut states = vec!["streaming".to_string()];
    let mut note = |s: String| {
        if states.last() != Some(&s) {
            states.push(s);
        }
    };
    wait_until("the retrying state", Duration::from_secs(5), || {
        let s = source_state(&server, "cam");
        note(s.clone());
        s == "retrying"
    });
    let d = describe(&server, "cam");
    assert!(d["source"]["status"]["last_error"].is_string(), "{d}");
    assert!(d["source"]["status"]["next_attempt"].is_string(), "{d}");
    let before = fragment_count(&server, "cam");
    while killed.elapsed() < Duration::from_secs(5) {
        note(source_state(&server, "cam"));
        std::thread::sleep(Duration::from_millis(100));
    }
    camera.spawn();
    wait_until("streaming again", Duration::from_secs(40), || {
        let s = source_state(&server, "cam");
        note(s.clone());
        s == "streaming" && fragment_count(&server, "cam") > before
    });
    let states: Vec<&str> = states.iter().map(String::as_str).collect();
    eprintln!("states: {states:?}");
    assert_eq!(states.first(), Some(&"streaming"));
    assert_eq!(states.last(), Some(&"streaming"));
    assert!(states.contains(&"retrying"), "{states:?}");
    let d = describe(&server, "cam");
    assert!(
        d["source"]["status"]["reconnects"].as_u64().unwrap_or(0) >= 1,
        "{d}"
    );
    set_source(&server, "cam", Value::Null);
    let t = get_json(&server.api("/streams/cam/timeline?start=earliest&end=now"));
    let gaps: Vec<f64> = t["spans"]
        .as_array()
        .expect("spans")
        .windows(2)
        .map(|w| {
            (w[1]["start_us"].as_i64().unwrap() - w[0]["end_us"].as_i64().unwrap()) as f64 / 1e6
        })
        .collect();
    eprintln!("gaps between recorded spans: {gaps:?} s");
    assert_eq!(gaps.len(), 1, "{t}");
    // Down 5 s, then the next attempt (backoff 1, 2, 4 s) and the first GOP.
    assert!((4.5..=12.0).contains(&gaps[0]), "gap of {} s", gaps[0]);
}

fn removing_the_source_or_deleting_the_stream_stops_the_pull_within_1s() {
    let camera = Camera::start(&[]);
    let server = Server::start();
    let source = rtsp_source(&camera.url("/video"), "tcp");
    create_with_source(&server, "cam", source.clone());
    wait_until("the first fragment", Duration::from_secs(10), || {
        fragment_count(&server, "cam") > 0 && camera.clients() == 1
    });
    let t = Instant::now();
    set_source(&server, "cam", Value::Null);
    wait_until(
        "the camera connection to close",
        Duration::from_secs(1),
        || camera.clients() == 0,
    );
    eprintln!("source removed: pull stopped in {:?}", t.elapsed());
    let d = describe(&server, "cam");
    assert!(d["source"].is_null(), "{d}");
    let n = d["fragment_count"].as_u64().unwrap_or(0);
    assert!(n > 0);
    // Again, then delete the stream.
    set_source(&server, "cam", source);
    wait_until("streaming again", Duration::from_secs(10), || {
        fragment_count(&server, "cam") > n && camera.clients() == 1
    });
    let t = Instant::now();
    let r = client().delete(server.api("/streams/cam")).send().unwrap();
    assert_eq!(r.status(), 204);
    wait_until(
        "the camera connection to close",
        Duration::from_secs(1),
        || camera.clients() == 0,
    );
    eprintln!("stream deleted: pull stopped in {:?}", t.elapsed());
    // It stays stopped (no reconnect, no auto-created stream).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(camera.clients(), 0);
    let r = client().get(server.api("/streams/cam")).send().unwrap();
    assert_eq!(r.status(), 404);
}

fn bad_sources_are_refused() {
    let server = Server::start();
    for (source, want) in [
        (json!({"rtsp": {"url": "http://cam/x"}}), "rtsp://"),
        (
            json!({"rtsp": {"url": "rtsp://cam/x", "transport": "sctp"}}),
            "sctp",
        ),
        (
            json!({"rtsp": {"url": "rtsp://cam/x", "pasword": "x"}}),
            "pasword",
        ),
        (json!({"onvif": {}}), "onvif"),
        (json!({"rtsp": {"url": "rtsp://u:hunter2@/x"}}), "host"),
    ] {
        let r = client()
            .post(server.api("/streams"))
            .json(&json!({"name": "bad", "source": source}))
            .send()
            .unwrap();
        let body = assert_error(r, 400, "INVALID_ARGUMENT");
        let msg = body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(want), "{source}: {msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
    let r = client().get(server.api("/streams/bad")).send().unwrap();
    assert_eq!(r.status(), 404, "a refused source created its stream");
}

/// The browser harness's play.mjs (tests/browser) on the live LL-HLS playlist of a camera
/// recorded in 0.5 s CMAF chunks: hls.js in Chromium starts, and plays on.
fn live_camera_plays_in_chromium_through_ll_hls() {
    use std::os::unix::process::CommandExt;
    let camera = Camera::start(&[]);
    let server = Server::start_with_config("[source]\nchunk_ms = 500\n");
    create_with_source(&server, "cam", rtsp_source(&camera.url("/h264"), "tcp"));
    let live = server.api("/streams/cam/hls/live.m3u8");
    wait_until(
        "three live segments with parts",
        Duration::from_secs(30),
        || {
            let text = client()
                .get(&live)
                .send()
                .and_then(|r| r.text())
                .unwrap_or_default();
            text.contains("#EXT-X-PART:") && text.matches("#EXTINF").count() >= 3
        },
    );
    let artifacts = browser_artifacts_dir("rtsp-live");
    let mut cmd = Command::new("node");
    cmd.current_dir(browser_dir())
        .arg("play.mjs")
        .args(["--url", &live, "--player", "hlsjs", "--name", "rtsp-live"])
        .args(["--watch", "8", "--low-latency", "--catch-up", "1.5"])
        .arg("--artifacts")
        .arg(&artifacts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd.spawn().expect("spawn node play.mjs");
    let out = child.wait_with_output().expect("wait for play.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "play.mjs printed no result: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let result: Value = serde_json::from_str(line).expect("play.mjs result is JSON");
    assert!(result.get("harnessError").is_none(), "{result}");
    let run = &result["runs"][0];
    eprintln!(
        "hls.js: started={} startup_ms={} advanced={} s in {} ms, errors: {}",
        run["started"], run["startupMs"], run["advanced"], run["watchedMs"], run["hlsErrors"]
    );
    assert_eq!(run["fatal"], false, "{run}");
    assert_eq!(run["started"], true, "{run}");
    assert!(run["advanced"].as_f64().unwrap_or(0.0) >= 5.0, "{run}");
    for key in ["pageErrors", "httpErrors", "failedRequests"] {
        assert!(
            run[key].as_array().is_some_and(|a| a.is_empty()),
            "{key}: {}",
            run[key]
        );
    }
}

/// A camera that stops sending without closing (SIGSTOP: the TCP connection stays open) is
/// dropped after `silence_timeout_secs` and called again; once it answers, recording resumes.
fn silent_camera_is_detected_and_called_again() {
    let camera = Camera::start(&[]);
    let server = Server::start_with_config("[source]\nsilence_timeout_secs = 2\n");
    create_with_source(&server, "cam", rtsp_source(&camera.url("/video"), "tcp"));
    wait_until("the first fragment", Duration::from_secs(10), || {
        fragment_count(&server, "cam") > 0
    });
    camera.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    wait_until("the silence to be noticed", Duration::from_secs(5), || {
        source_state(&server, "cam") != "streaming"
    });
    let noticed = stopped.elapsed();
    let d = describe(&server, "cam");
    let error = d["source"]["status"]["last_error"].as_str().unwrap_or("");
    eprintln!("silence noticed after {noticed:?}: {error}");
    assert!(error.contains("no media"), "{d}");
    assert!(
        noticed >= Duration::from_millis(1500),
        "noticed too early: {noticed:?}"
    );
    let before = fragment_count(&server, "cam");
    camera.signal(libc::SIGCONT);
    wait_until("streaming again", Duration::from_secs(40), || {
        source_state(&server, "cam") == "streaming" && fragment_count(&server, "cam") > before
    });
}
