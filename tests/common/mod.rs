//! Test harness: runs the real `tapedeck` binary on a random loopback port with a temp data dir,
//! and helpers for real clients (ffmpeg, ffprobe, curl). Tests that need a client declare it in
//! their file's `main` (see `harness`): reported as ignored when it is missing, failed under
//! TAPEDECK_REQUIRE_CLIENTS=1 (set by .ci/run).
#![allow(dead_code)]

pub mod harness;
pub mod raw_http;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tapedeck");

pub struct Server {
    pub child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// A server on a fresh temp data dir.
    pub fn start() -> Server {
        Self::start_with_config("")
    }

    /// A server on a fresh temp data dir with extra TOML configuration.
    pub fn start_with_config(toml: &str) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_in(tmp.path(), toml);
        s._tmp = Some(tmp);
        s
    }

    /// A server on `root/data` (kept across restarts), configured with `toml`.
    pub fn start_in(root: &Path, toml: &str) -> Server {
        Self::start_in_env(root, toml, &[])
    }

    /// `start_in`, with extra environment variables for the server process.
    pub fn start_in_env(root: &Path, toml: &str, env: &[(&str, &str)]) -> Server {
        let data_dir = root.join("data");
        let config = root.join("tapedeck.toml");
        std::fs::write(&config, with_no_free_space_floor(toml)).expect("write config");
        let log_path = root.join(format!("server-{}.log", std::process::id()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "info,tower_http=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tapedeck");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("tapedeck listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start; log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
        };
        let server = Server {
            child: Some(child),
            base,
            data_dir,
            log_path,
            _tmp: None,
        };
        server.wait_ready();
        server
    }

    /// Waits until `/readyz` says the store has opened: the port is bound before the store has opened
    /// (recovery may run), so "listening" is not "ready". Panics with the log after 30 s.
    fn wait_ready(&self) {
        let quick = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Up means the store has opened: 200, or a 503 for a reason other than starting
            // (a test's nearly full disk makes a working server "not ready" for good).
            let up = quick.get(self.url("/readyz")).send().is_ok_and(|r| {
                r.status() == 200
                    || (r.status() == 503 && !r.text().unwrap_or_default().contains("starting"))
            });
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server at {} not ready within 30 s; log:\n{}",
                self.base,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe_sigterm(c.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("server did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

fn unsafe_sigterm(pid: u32) {
    // SAFETY: kill(2) only sends a signal to our own child process.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

/// Runs a client program to completion (stdin closed); panics with its output unless it exits 0.
/// Returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("run");
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Frames ffprobe decodes from the first stream that `selector` (`v:0`, `a:0`) picks, in a
/// file or at a URL; `Err` holds what ffprobe said. An HLS playlist lists its stream twice (once
/// in its program): the first count is taken.
fn ffprobe_count(path: &Path, selector: &str) -> Result<u64, String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", selector, "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .ok_or_else(|| format!("{} {}", text, String::from_utf8_lossy(&out.stderr)))
}

/// Decoded video frames in a file, counted by ffprobe.
pub fn ffprobe_frames(path: &Path) -> u64 {
    ffprobe_count(path, "v:0")
        .unwrap_or_else(|why| panic!("ffprobe gave no frame count for {}: {why}", path.display()))
}

/// Decoded audio frames (packets) of the first audio stream; 0 when there is none.
pub fn ffprobe_audio_frames(path: &Path) -> u64 {
    ffprobe_count(path, "a:0").unwrap_or(0)
}

pub fn get_json(url: &str) -> serde_json::Value {
    let r = client().get(url).send().expect("GET");
    let status = r.status();
    let body = r.text().unwrap_or_default();
    assert!(status.is_success(), "GET {url}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: bad JSON {e}: {body}"))
}

/// All fragment rows of a stream (pages through the API).
pub fn all_fragments(server: &Server, stream: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let page = get_json(&server.api(&format!(
            "/streams/{stream}/fragments?limit=1000&after={after}"
        )));
        let frags = page["fragments"].as_array().cloned().unwrap_or_default();
        out.extend(frags);
        match page["next"].as_i64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

pub fn get_bytes(url: &str) -> Vec<u8> {
    let r = client().get(url).send().expect("GET");
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.bytes().expect("body").to_vec()
}

/// Writes every stored fragment of a stream after its init into one file, as a player would
/// read them, and returns its path (inside `dir`). Init changes are written inline.
pub fn reassemble(server: &Server, stream: &str, dir: &Path) -> PathBuf {
    let mut out = Vec::new();
    let mut current_init = None;
    for f in all_fragments(server, stream) {
        let init = f["init"].as_i64().unwrap();
        if current_init != Some(init) {
            out.extend(get_bytes(
                &server.api(&format!("/streams/{stream}/inits/{init}")),
            ));
            current_init = Some(init);
        }
        out.extend(get_bytes(
            &server.api(&format!("/streams/{stream}/fragments/{}", f["fragment"])),
        ));
    }
    let path = dir.join(format!("{stream}-reassembled.mp4"));
    std::fs::write(&path, out).unwrap();
    path
}

/// Runs `tapedeck check` on a data dir; returns (exit code, stdout).
pub fn run_check(data_dir: &Path, repair: bool) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("check").arg("--data-dir").arg(data_dir);
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().expect("run check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A sample cut into its init (ftyp+moov) and its fragments (moof+mdat each), as received.
pub fn split_sample_raw(name: &str) -> (Vec<u8>, Vec<tapedeck::fmp4::RawFragment>) {
    use tapedeck::fmp4::{Event, Splitter};
    let data = std::fs::read(sample(name)).expect("read sample");
    let mut splitter = Splitter::new(50_000_000);
    let mut events = Vec::new();
    splitter.push(&data, &mut events).expect("split sample");
    splitter.finish().expect("sample ends on a box boundary");
    let mut init = None;
    let mut fragments = Vec::new();
    for e in events {
        match e {
            Event::Init { bytes, .. } => init = Some(bytes.to_vec()),
            Event::Fragment(f) => fragments.push(f),
        }
    }
    (init.expect("sample has an init"), fragments)
}

/// [`split_sample_raw`] with just each fragment's bytes, as a producer sends them.
pub fn split_sample(name: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (init, frags) = split_sample_raw(name);
    (init, frags.into_iter().map(|f| f.bytes.to_vec()).collect())
}

/// The Playwright scripts' folder (tests/browser, with its own node_modules).
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Debian's Chromium, or `TAPEDECK_CHROMIUM`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("TAPEDECK_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// `<target dir>/browser-artifacts/<test>`, emptied (honours CARGO_TARGET_DIR).
pub fn browser_artifacts_dir(test: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp.parent().unwrap_or(tmp);
    let dir = target.join("browser-artifacts").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create artifacts dir");
    dir
}

/// ffmpeg `-re` encoding a lavfi `source` (e.g. `testsrc2=size=320x240:rate=25`) to H.264 with a
/// `gop`-frame GOP for `seconds`, uploaded live as one fMP4 PUT to `url`.
pub fn spawn_live_upload(url: &str, source: &str, seconds: u32, gop: u32) -> Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            source,
        ])
        .args([
            "-t",
            &seconds.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args(["-g", &gop.to_string(), "-pix_fmt", "yuv420p", "-f", "mp4"])
        .args(["-movflags", "frag_keyframe+empty_moov+default_base_moof"])
        .args(["-method", "PUT", url])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn ffmpeg")
}

/// A small tmpfs mounted for one test (a real filesystem that can run out of space), unmounted
/// lazily on drop (the server may still hold files on it).
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "12m") at `dir`. Needs root (the test declares
    /// `Need::Root`, so the harness has checked).
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tapedeck-test",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount a tmpfs at {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Bytes an unprivileged writer can still write on it.
    pub fn free_bytes(&self) -> u64 {
        let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: statvfs fills the struct we pass; the path is a valid C string.
        unsafe {
            let mut s: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0, "statvfs");
            s.f_bavail as u64 * s.f_frsize as u64
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `PUT .../streams/{stream}/ingest` with `body` in one request: status, `Retry-After`, JSON.
pub fn put_ingest(
    server: &Server,
    stream: &str,
    body: Vec<u8>,
) -> (u16, Option<String>, serde_json::Value) {
    let resp = client()
        .put(server.api(&format!("/streams/{stream}/ingest")))
        .body(body)
        .send()
        .expect("PUT ingest");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        status,
        retry,
        resp.json().unwrap_or(serde_json::Value::Null),
    )
}

/// `PUT .../streams/{stream}/ingest/{file}` (segment-file ingest, as ffmpeg's HLS muxer does it).
pub fn put_segment_file(
    server: &Server,
    stream: &str,
    file: &str,
    body: Vec<u8>,
) -> reqwest::blocking::Response {
    client()
        .put(server.api(&format!("/streams/{stream}/ingest/{file}")))
        .body(body)
        .send()
        .expect("PUT segment file")
}

/// `/healthz` answers 200: the process is alive.
pub fn assert_alive(server: &Server) {
    let status = client()
        .get(server.url("/healthz"))
        .send()
        .expect("GET /healthz")
        .status();
    assert_eq!(status, 200, "/healthz");
}

/// Status and JSON body of a response (panics, showing the body, when it is not JSON).
pub fn json_of(r: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, v)
}

/// The message of an API error body (`{"error":{"code","message"}}`) whose code must be `code`;
/// the message must not be empty.
pub fn error_message<'a>(body: &'a serde_json::Value, code: &str) -> &'a str {
    assert_eq!(body["error"]["code"], code, "code; body {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "message; body {body}");
    message
}

/// Asserts an error response: status, code, non-empty message. Returns the body.
pub fn assert_error(r: reqwest::blocking::Response, status: u16, code: &str) -> serde_json::Value {
    let (s, v) = json_of(r);
    assert_eq!(s, status, "status; body {v}");
    error_message(&v, code);
    v
}

/// Now, in microseconds since the Unix epoch (the server's clock is the system's in these tests).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    now_us() / 1000
}

/// PUTs a sample file as one upload whose first fragment is at `producer_start_ms`; returns the
/// upload summary.
pub fn upload_at(
    server: &Server,
    stream: &str,
    sample_name: &str,
    producer_start_ms: i64,
) -> serde_json::Value {
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

/// `toml` with `storage.min_free_bytes = 0` unless it sets it: the default floor (5 % of the
/// disk) is the host's business, and on a shared machine with little free space the sweeper
/// would delete a test's media moments after it was acknowledged. Tests of that floor set it.
fn with_no_free_space_floor(toml: &str) -> String {
    let mut table: toml::Table = toml::from_str(toml).expect("test config is TOML");
    let storage = table
        .entry("storage")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(storage) = storage {
        storage
            .entry("min_free_bytes")
            .or_insert(toml::Value::Integer(0));
    }
    toml::to_string(&table).expect("serialize test config")
}

/// A value of `/metrics` (a sample without labels); panics if the server does not report it.
pub fn metric(server: &Server, name: &str) -> f64 {
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .expect("GET /metrics")
        .text()
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}
