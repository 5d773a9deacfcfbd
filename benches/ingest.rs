//! Ingest benchmark against the real server binary on loopback (see BENCHMARKS.md).
//!
//! ```text
//! cargo bench --bench ingest                                   # both parts
//! cargo bench --bench ingest -- single [--single-mb 500]
//! cargo bench --bench ingest -- cameras [--cameras 200] [--seconds 20]
//! ```
//! Extra flag: `--sample` skips ffmpeg and loops `samples/h264_aac_gop2s.mp4`.
//!
//! (a) `single`: one producer uploads looped fragments as fast as it can; throughput is measured
//! until the last fragment's durable ack, next to writing the same bytes to a file with fsync.
//! (b) `cameras`: N paced producers (one fragment per fragment duration each); latency from a
//! fragment's last byte written to its `persisted` ack line, plus the server's CPU and RSS.
//!
//! Every run starts its own server process (`serve --listen 127.0.0.1:0`) on a fresh temp dir and
//! stops it with SIGTERM at the end. Fragments of one commit group share `server_time_us`, so the
//! acks also tell how the server grouped its syncs. MB = 10^6 bytes.

use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tapedeck::fmp4::{self, Event, InitFacts, Splitter};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const SAMPLE: &str = "samples/h264_aac_gop2s.mp4";
const MAX_CAMERAS: usize = 2000;
const MAX_SECONDS: u64 = 600;
const MAX_SINGLE_MB: u64 = 4000;
/// How long to wait for the last acks and `session_ended` after a producer's last byte.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

struct Args {
    single: bool,
    cameras_mode: bool,
    cameras: usize,
    seconds: u64,
    single_mb: u64,
    force_sample: bool,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        single: false,
        cameras_mode: false,
        cameras: 200,
        seconds: 20,
        single_mb: 500,
        force_sample: false,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, flag: &str| -> Res<u64> {
        v.ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<u64>()
            .map_err(|e| format!("{flag}: {e}").into())
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "single" => a.single = true,
            "cameras" => a.cameras_mode = true,
            "--cameras" => a.cameras = num(it.next(), "--cameras")? as usize,
            "--seconds" => a.seconds = num(it.next(), "--seconds")?,
            "--single-mb" => a.single_mb = num(it.next(), "--single-mb")?,
            "--sample" => a.force_sample = true,
            other => {
                return Err(format!(
                "unknown argument '{other}'; usage: [single|cameras] [--cameras N] [--seconds S] \
                 [--single-mb M] [--sample]"
            )
                .into())
            }
        }
    }
    if !a.single && !a.cameras_mode {
        a.single = true;
        a.cameras_mode = true;
    }
    if a.cameras == 0 || a.cameras > MAX_CAMERAS {
        return Err(format!("--cameras must be 1..={MAX_CAMERAS}").into());
    }
    if a.seconds == 0 || a.seconds > MAX_SECONDS {
        return Err(format!("--seconds must be 1..={MAX_SECONDS}").into());
    }
    if a.single_mb == 0 || a.single_mb > MAX_SINGLE_MB {
        return Err(format!("--single-mb must be 1..={MAX_SINGLE_MB}").into());
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ingest bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("ingest bench failed: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res<()> {
    let work = tempfile::Builder::new()
        .prefix("tapedeck-bench-")
        .tempdir()?;
    print_machine(work.path());
    let media = Media::load(work.path(), args.force_sample)?;
    println!(
        "media: {} — {} source fragments, {:.2} s each, {:.0} KB average, {:.2} Mbit/s",
        media.source,
        media.frags.len(),
        media.frag_duration.as_secs_f64(),
        media.avg_frag_bytes() / 1e3,
        media.avg_frag_bytes() * 8.0 / media.frag_duration.as_secs_f64() / 1e6
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.single {
        single(&rt, &media, work.path(), args.single_mb)?;
    }
    if args.cameras_mode {
        cameras(&rt, &media, work.path(), args.cameras, args.seconds)?;
    }
    Ok(())
}

fn print_machine(dir: &Path) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| kb_field(&s, "MemTotal:"))
        .unwrap_or(0);
    println!(
        "machine: {cpus} CPUs, {:.1} GB memory; temp dir {}",
        mem_kb as f64 / 1e6,
        dir.display()
    );
    if let Ok(out) = Command::new("df").arg("-T").arg(dir).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().nth(1) {
            println!("filesystem (df -T): {line}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Media: init + fragments from a real file, looped with increasing tfdt.

struct SrcFrag {
    bytes: Bytes,
    stream_offset: u64,
}

struct Media {
    source: String,
    init: Bytes,
    facts: InitFacts,
    frags: Vec<SrcFrag>,
    /// Per track: ticks one pass over all source fragments covers.
    loop_ticks: HashMap<u32, u64>,
    frag_duration: Duration,
}

/// One fragment framed as an HTTP/1.1 chunk; `raw()` is the fragment itself.
#[derive(Clone)]
struct Chunk {
    framed: Bytes,
    head: usize,
}

impl Chunk {
    fn new(data: &[u8]) -> Chunk {
        let head = format!("{:x}\r\n", data.len());
        let mut b = BytesMut::with_capacity(head.len() + data.len() + 2);
        b.extend_from_slice(head.as_bytes());
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
        Chunk {
            framed: b.freeze(),
            head: head.len(),
        }
    }

    fn raw(&self) -> &[u8] {
        &self.framed[self.head..self.framed.len() - 2]
    }
}

impl Media {
    fn load(work: &Path, force_sample: bool) -> Res<Media> {
        let generated = work.join("gen_4mbit_gop1s.mp4");
        let (path, source) = if !force_sample && generate_with_ffmpeg(&generated) {
            (
                generated,
                "ffmpeg testsrc2 1280x720 25 fps, libx264 4 Mbit/s, 1 s GOP, 10 s".to_string(),
            )
        } else {
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
            println!("note: using {SAMPLE} (2 s fragments, far below 4 Mbit/s)");
            (p, SAMPLE.to_string())
        };
        let data = std::fs::read(&path)?;
        let mut splitter = Splitter::new(u64::MAX);
        let mut events = Vec::new();
        splitter.push(&data, &mut events)?;
        splitter.finish()?;
        let mut init = None;
        let mut frags = Vec::new();
        for ev in events {
            match ev {
                Event::Init { bytes, facts } => {
                    if init.is_none() {
                        init = Some((bytes, facts));
                    }
                }
                Event::Fragment(f) => frags.push(SrcFrag {
                    bytes: f.bytes,
                    stream_offset: f.stream_offset,
                }),
            }
        }
        let (init, facts) = init.ok_or("no init segment in the media file")?;
        if frags.is_empty() {
            return Err("no fragments in the media file".into());
        }
        let mut span: HashMap<u32, (u64, u64)> = HashMap::new();
        let mut total_us = 0i64;
        for f in &frags {
            let ff = fmp4::fragment_facts_at(&facts, &f.bytes, f.stream_offset)?;
            total_us += ff.duration_us();
            for t in &ff.tracks {
                let e = span.entry(t.track_id).or_insert((u64::MAX, 0));
                e.0 = e.0.min(t.base_media_decode_time);
                e.1 = e.1.max(t.base_media_decode_time + t.duration);
            }
        }
        let loop_ticks = span.into_iter().map(|(k, (a, b))| (k, b - a)).collect();
        let frag_duration = Duration::from_micros((total_us / frags.len() as i64).max(1) as u64);
        Ok(Media {
            source,
            init,
            facts,
            frags,
            loop_ticks,
            frag_duration,
        })
    }

    fn avg_frag_bytes(&self) -> f64 {
        self.frags.iter().map(|f| f.bytes.len()).sum::<usize>() as f64 / self.frags.len() as f64
    }

    /// The k-th fragment of the endless loop, with tfdt moved forward by whole passes.
    fn fragment(&self, k: usize) -> Res<Chunk> {
        let src = &self.frags[k % self.frags.len()];
        let lap = (k / self.frags.len()) as u64;
        let bytes =
            fmp4::rewrite_fragment(&self.facts, &src.bytes, src.stream_offset, &|tr, old| {
                old + lap * self.loop_ticks.get(&tr).copied().unwrap_or(0)
            })?;
        Ok(Chunk::new(&bytes))
    }
}

fn generate_with_ffmpeg(out: &Path) -> bool {
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("testsrc2=size=1280x720:rate=25")
        .args([
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "4M",
        ])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0"])
        .args(["-pix_fmt", "yuv420p", "-movflags"])
        .arg("frag_keyframe+empty_moov+default_base_moof")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    matches!(status, Ok(s) if s.success()) && out.exists()
}

// ---------------------------------------------------------------------------------------------
// The server process.

struct Server {
    child: Child,
    pid: i32,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(work: &Path, label: &str) -> Res<Server> {
        let data = work.join(format!("data-{label}"));
        std::fs::create_dir_all(&data)?;
        let log = work.join(format!("server-{label}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_tapedeck"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining stdout for the server's life so it never blocks on a full pipe.
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("tapedeck listening on http://") {
                        let port = rest
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.trim().parse().ok())
                            .ok_or_else(|| format!("cannot read the port from '{line}'"))?;
                        return Ok(Server {
                            child,
                            pid,
                            port,
                            log,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!("the server did not start; its log:\n{log_text}").into());
                }
            }
        }
    }

    /// Server CPU time (user + system) so far.
    fn cpu(&self) -> Duration {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .as_deref()
            .and_then(parse_stat)
            .map_or(Duration::ZERO, |(_, cpu)| cpu)
    }

    /// CPU time so far per thread name (`store-writer`, `tokio-runtime-w`, ...), live threads only.
    fn thread_cpu(&self) -> HashMap<String, Duration> {
        let mut out: HashMap<String, Duration> = HashMap::new();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return out;
        };
        for t in dir.flatten() {
            if let Some((name, cpu)) = std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                *out.entry(name).or_default() += cpu;
            }
        }
        out
    }

    /// (VmHWM, VmRSS) in kB.
    fn memory_kb(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        (
            kb_field(&s, "VmHWM:").unwrap_or(0),
            kb_field(&s, "VmRSS:").unwrap_or(0),
        )
    }

    /// SIGTERM, then SIGKILL if it does not exit in 15 s. Returns warnings/errors from its log.
    fn stop(mut self) -> Vec<String> {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_string)
            .collect()
    }
}

/// (comm, utime + stime) from a `/proc/.../stat` line.
fn parse_stat(s: &str) -> Option<(String, Duration)> {
    let (head, after) = s.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the comm: state is field 3, utime 14, stime 15.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((name, Duration::from_micros(ticks * 1_000_000 / hz)))
}

fn print_thread_cpu(
    before: &HashMap<String, Duration>,
    after: &HashMap<String, Duration>,
    wall: Duration,
) {
    let mut v: Vec<(&String, Duration)> = after
        .iter()
        .map(|(k, d)| {
            (
                k,
                d.saturating_sub(before.get(k).copied().unwrap_or_default()),
            )
        })
        .filter(|(_, d)| !d.is_zero())
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    let parts: Vec<String> = v
        .iter()
        .map(|(k, d)| format!("{k} {:.0}%", 100.0 * d.as_secs_f64() / wall.as_secs_f64()))
        .collect();
    println!("  server CPU by thread name: {}", parts.join(", "));
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ---------------------------------------------------------------------------------------------
// One upload connection: hand-written HTTP/1.1, chunked request, chunked NDJSON response.

async fn open_upload(port: u16, stream: &str, init: &[u8]) -> Res<(OwnedReadHalf, OwnedWriteHalf)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let (r, mut w) = tcp.into_split();
    let head = format!(
        "PUT /api/v1/streams/{stream}/ingest HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: video/mp4\r\nAccept: application/x-ndjson\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(&Chunk::new(init).framed).await?;
    Ok((r, w))
}

/// Reads the response head, then hands out body lines (chunked or sized body).
struct LineReader {
    r: BufReader<OwnedReadHalf>,
    buf: Vec<u8>,
    chunked: bool,
    done: bool,
}

impl LineReader {
    async fn new(r: OwnedReadHalf) -> Res<LineReader> {
        let mut r = BufReader::new(r);
        let mut status = String::new();
        r.read_line(&mut status).await?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line '{}'", status.trim()))?;
        let mut chunked = false;
        let mut length = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Err("connection closed in the response head".into());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                    chunked = true;
                } else if k == "content-length" {
                    length = v.parse::<usize>().ok();
                }
            }
        }
        let mut lr = LineReader {
            r,
            buf: Vec::new(),
            chunked,
            done: false,
        };
        if !chunked {
            let mut body = vec![0; length.unwrap_or(0)];
            lr.r.read_exact(&mut body).await?;
            lr.buf = body;
            lr.done = true;
        }
        if code != 200 {
            let mut body = String::from_utf8_lossy(&lr.buf).into_owned();
            if chunked {
                while let Some(l) = lr.next_line().await? {
                    body.push_str(&String::from_utf8_lossy(&l));
                }
            }
            return Err(format!("HTTP {code}: {body}").into());
        }
        Ok(lr)
    }

    async fn next_line(&mut self) -> Res<Option<Vec<u8>>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(line));
            }
            if self.done {
                return Ok((!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf)));
            }
            debug_assert!(self.chunked);
            let mut size_line = String::new();
            if self.r.read_line(&mut size_line).await? == 0 {
                return Err("connection closed inside the chunked response".into());
            }
            let hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| format!("bad chunk size line '{}'", size_line.trim()))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = String::new();
                    if self.r.read_line(&mut t).await? == 0 || t.trim_end().is_empty() {
                        break;
                    }
                }
                self.done = true;
                continue;
            }
            let start = self.buf.len();
            self.buf.resize(start + size, 0);
            self.r.read_exact(&mut self.buf[start..]).await?;
            let mut crlf = [0u8; 2];
            self.r.read_exact(&mut crlf).await?;
            if &crlf != b"\r\n" {
                return Err("chunk not followed by CRLF".into());
            }
        }
    }
}

#[derive(Default)]
struct AckLog {
    /// (arrival, server_time_us, fragment number) of each `persisted` line, in order.
    acks: Vec<(Instant, i64, i64)>,
    errors: Vec<String>,
    ended: bool,
}

async fn read_acks(r: OwnedReadHalf) -> AckLog {
    let mut log = AckLog::default();
    let mut lines = match LineReader::new(r).await {
        Ok(l) => l,
        Err(e) => {
            log.errors.push(e.to_string());
            return log;
        }
    };
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let now = Instant::now();
                let v: serde_json::Value = match serde_json::from_slice(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        log.errors.push(format!("bad ack line: {e}"));
                        continue;
                    }
                };
                match v["event"].as_str() {
                    Some("persisted") => log.acks.push((
                        now,
                        v["server_time_us"].as_i64().unwrap_or(0),
                        v["fragment"].as_i64().unwrap_or(0),
                    )),
                    Some("session_ended") => {
                        log.ended = true;
                        return log;
                    }
                    Some("error") => log.errors.push(v.to_string()),
                    _ => {}
                }
            }
            Ok(None) => return log,
            Err(e) => {
                log.errors.push(e.to_string());
                return log;
            }
        }
    }
}

struct ProducerResult {
    /// When each fragment's last byte was handed to the socket (monotonic, and wall clock in µs).
    sent: Vec<(Instant, i64)>,
    log: AckLog,
}

impl ProducerResult {
    fn latencies(&self) -> impl Iterator<Item = Duration> + '_ {
        self.sent
            .iter()
            .zip(&self.log.acks)
            .map(|(s, a)| a.0.saturating_duration_since(s.0))
    }

    /// Last byte written -> the server's commit time stamp (`server_time_us`, taken after the
    /// group's sync, before its SQLite commit). Same clock: loopback.
    fn commit_lags(&self) -> impl Iterator<Item = Duration> + '_ {
        self.sent
            .iter()
            .zip(&self.log.acks)
            .map(|(s, a)| Duration::from_micros((a.1 - s.1).max(0) as u64))
    }

    fn out_of_order(&self) -> usize {
        let mut bad = 0;
        for (i, a) in self.log.acks.iter().enumerate() {
            if a.2 != i as i64 + 1 {
                bad += 1;
            }
        }
        bad
    }
}

/// Sends init, then each chunk at its due time (if any), then the end; collects the acks.
async fn produce(
    port: u16,
    stream: String,
    init: Bytes,
    chunks: Arc<Vec<Chunk>>,
    count: usize,
    start: tokio::time::Instant,
    pace: Option<Duration>,
) -> ProducerResult {
    tokio::time::sleep_until(start).await;
    let mut sent = Vec::with_capacity(count);
    let (r, mut w) = match open_upload(port, &stream, &init).await {
        Ok(c) => c,
        Err(e) => {
            let mut log = AckLog::default();
            log.errors.push(format!("connect: {e}"));
            return ProducerResult { sent, log };
        }
    };
    let reader = tokio::spawn(read_acks(r));
    let mut write_error = None;
    for k in 0..count {
        if let Some(p) = pace {
            tokio::time::sleep_until(start + p * k as u32).await;
        }
        if let Err(e) = w.write_all(&chunks[k].framed).await {
            write_error = Some(format!("write: {e}"));
            break;
        }
        sent.push((Instant::now(), wall_us()));
    }
    if write_error.is_none() {
        if let Err(e) = w.write_all(b"0\r\n\r\n").await {
            write_error = Some(format!("write end: {e}"));
        }
    }
    let mut log = match tokio::time::timeout(DRAIN_TIMEOUT, reader).await {
        Ok(Ok(log)) => log,
        Ok(Err(e)) => AckLog {
            errors: vec![format!("reader task: {e}")],
            ..Default::default()
        },
        Err(_) => AckLog {
            errors: vec!["timed out waiting for acks / session_ended".into()],
            ..Default::default()
        },
    };
    log.errors.extend(write_error);
    drop(w);
    ProducerResult { sent, log }
}

// ---------------------------------------------------------------------------------------------
// Figures.

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn print_latency(label: &str, mut v: Vec<Duration>) {
    v.sort_unstable();
    let over = v
        .iter()
        .filter(|d| **d >= Duration::from_millis(100))
        .count();
    println!(
        "  {label:<44} p50 {:>9}, p99 {:>9}, max {:>9}  ({over} of {} >= 100 ms)",
        ms(pct(&v, 50.0)),
        ms(pct(&v, 99.0)),
        ms(v.last().copied().unwrap_or_default()),
        v.len()
    );
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Groups = distinct server_time_us over all acks (one commit group stamps one time).
struct Groups {
    count: usize,
    mean: f64,
    p50: usize,
    max: usize,
    mean_interval_ms: f64,
}

fn groups(results: &[ProducerResult]) -> Groups {
    let mut by_time: HashMap<i64, usize> = HashMap::new();
    for r in results {
        for a in &r.log.acks {
            *by_time.entry(a.1).or_default() += 1;
        }
    }
    let mut sizes: Vec<usize> = by_time.values().copied().collect();
    sizes.sort_unstable();
    let total: usize = sizes.iter().sum();
    let (lo, hi) = (
        by_time.keys().min().copied().unwrap_or(0),
        by_time.keys().max().copied().unwrap_or(0),
    );
    Groups {
        count: sizes.len(),
        mean: total as f64 / sizes.len().max(1) as f64,
        p50: sizes.get(sizes.len() / 2).copied().unwrap_or(0),
        max: sizes.last().copied().unwrap_or(0),
        mean_interval_ms: (hi - lo) as f64 / 1e3 / (sizes.len().max(2) - 1) as f64,
    }
}

fn print_groups(g: &Groups) {
    println!(
        "  commit groups (acks sharing server_time_us): {} groups, fragments/group mean {:.1}, \
         p50 {}, max {}; one group every {:.1} ms",
        g.count, g.mean, g.p50, g.max, g.mean_interval_ms
    );
}

fn print_problems(results: &[ProducerResult], log_lines: &[String]) {
    let mut errors: Vec<&String> = results.iter().flat_map(|r| &r.log.errors).collect();
    let not_ended = results.iter().filter(|r| !r.log.ended).count();
    let disorder: usize = results.iter().map(ProducerResult::out_of_order).sum();
    if not_ended > 0 {
        println!("  PROBLEM: {not_ended} uploads never got session_ended");
    }
    if disorder > 0 {
        println!("  PROBLEM: {disorder} acks not numbered 1, 2, 3... in order");
    }
    if !errors.is_empty() {
        println!("  PROBLEM: {} error(s), first ones:", errors.len());
        errors.truncate(5);
        for e in errors {
            println!("    {e}");
        }
    }
    if !log_lines.is_empty() {
        println!(
            "  server log: {} WARN/ERROR lines, first ones:",
            log_lines.len()
        );
        for l in log_lines.iter().take(5) {
            println!("    {l}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (a) one producer, as fast as possible.

fn single(rt: &tokio::runtime::Runtime, media: &Media, work: &Path, mb: u64) -> Res<()> {
    let count = ((mb as f64 * 1e6) / media.avg_frag_bytes()).ceil() as usize;
    let chunks: Vec<Chunk> = (0..count).map(|k| media.fragment(k)).collect::<Res<_>>()?;
    let total: usize = chunks.iter().map(|c| c.raw().len()).sum();
    println!(
        "\n(a) single producer: {count} fragments, {:.1} MB, no pacing",
        total as f64 / 1e6
    );
    let chunks = Arc::new(chunks);
    let server = Server::start(work, "single")?;
    let cpu0 = server.cpu();
    let threads0 = server.thread_cpu();
    let own0 = own_cpu();
    let t0 = Instant::now();
    let result = rt.block_on(produce(
        server.port,
        "benchsingle".into(),
        media.init.clone(),
        chunks.clone(),
        count,
        tokio::time::Instant::now(),
        None,
    ));
    let wall = t0.elapsed();
    let cpu = server.cpu().saturating_sub(cpu0);
    let threads1 = server.thread_cpu();
    let own = own_cpu().saturating_sub(own0);
    let (hwm, rss) = server.memory_kb();
    let log_lines = server.stop();
    let acked = result.log.acks.len();
    let last_ack = result.log.acks.last().map(|a| a.0.duration_since(t0));
    let last_write = result.sent.last().map(|s| s.0.duration_since(t0));
    let results = [result];
    let g = groups(&results);

    // The ceiling: the same bytes written to a file in the same filesystem, in this process.
    let per_group = g.mean.round().max(1.0) as usize;
    let c_each = ceiling(work, &chunks, Some(1))?;
    let c_group = ceiling(work, &chunks, Some(per_group))?;
    let c_end = ceiling(work, &chunks, None)?;
    let rate = |d: Duration| total as f64 / 1e6 / d.as_secs_f64();

    println!("  acked {acked}/{count} fragments");
    if let (Some(ack), Some(wr)) = (last_ack, last_write) {
        let server_rate = rate(ack);
        println!(
            "  {:<58} {:>8.1} MB/s  ({:.2} s; last byte written at {:.2} s)",
            "tapedeck, start -> last durable ack",
            server_rate,
            ack.as_secs_f64(),
            wr.as_secs_f64()
        );
        println!(
            "  {:<58} {:>8.1} MB/s  ({:.2} s)",
            "file, fdatasync after every fragment",
            rate(c_each),
            c_each.as_secs_f64()
        );
        println!(
            "  {:<58} {:>8.1} MB/s  ({:.2} s)",
            format!("file, fdatasync every {per_group} fragments (server's mean group)"),
            rate(c_group),
            c_group.as_secs_f64()
        );
        println!(
            "  {:<58} {:>8.1} MB/s  ({:.2} s)",
            "file, one fsync at the end",
            rate(c_end),
            c_end.as_secs_f64()
        );
        println!(
            "  ratio: {:.0}% of fdatasync at the server's group cadence (the ceiling compared \
             to); {:.0}% of one fsync at the end; {:.0}% of fdatasync per fragment",
            100.0 * server_rate / rate(c_group),
            100.0 * server_rate / rate(c_end),
            100.0 * server_rate / rate(c_each)
        );
        println!(
            "  target >= 70% of the ceiling: {}",
            if server_rate >= 0.7 * rate(c_group) && acked == count {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    print_latency(
        "last byte written -> persisted ack line:",
        results[0].latencies().collect(),
    );
    print_latency(
        "last byte written -> server_time_us (commit):",
        results[0].commit_lags().collect(),
    );
    print_groups(&g);
    println!(
        "  server CPU {:.0}% of one core over {:.2} s (bench client itself: {:.0}%); VmHWM {:.0} \
         MB, VmRSS {:.0} MB at end",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        wall.as_secs_f64(),
        100.0 * own.as_secs_f64() / wall.as_secs_f64(),
        hwm as f64 / 1e3,
        rss as f64 / 1e3
    );
    print_thread_cpu(&threads0, &threads1, wall);
    print_problems(&results, &log_lines);
    Ok(())
}

/// Writes every fragment to a fresh file, syncing every `sync_every` fragments (and at the end).
fn ceiling(work: &Path, chunks: &[Chunk], sync_every: Option<usize>) -> Res<Duration> {
    let path = work.join("ceiling.bin");
    let _ = std::fs::remove_file(&path);
    let t0 = Instant::now();
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    for (i, c) in chunks.iter().enumerate() {
        f.write_all(c.raw())?;
        if sync_every.is_some_and(|n| (i + 1) % n == 0) {
            f.sync_data()?;
        }
    }
    f.sync_all()?;
    let d = t0.elapsed();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(d)
}

// ---------------------------------------------------------------------------------------------
// (b) N paced cameras.

fn cameras(
    rt: &tokio::runtime::Runtime,
    media: &Media,
    work: &Path,
    n: usize,
    seconds: u64,
) -> Res<()> {
    let pace = media.frag_duration;
    let count = ((seconds as f64 / pace.as_secs_f64()).round() as usize).max(1);
    // Every camera sends the same looped fragments to its own stream.
    let chunks: Vec<Chunk> = (0..count).map(|k| media.fragment(k)).collect::<Res<_>>()?;
    let per_cam: usize = chunks.iter().map(|c| c.raw().len()).sum();
    println!(
        "\n(b) {n} cameras x {count} fragments of {:.2} s ({:.2} Mbit/s each, {:.0} Mbit/s total), \
         starts staggered over {:.2} s",
        pace.as_secs_f64(),
        per_cam as f64 * 8.0 / (count as f64 * pace.as_secs_f64()) / 1e6,
        n as f64 * per_cam as f64 * 8.0 / (count as f64 * pace.as_secs_f64()) / 1e6,
        pace.as_secs_f64()
    );
    let chunks = Arc::new(chunks);
    let server = Server::start(work, "cameras")?;
    let port = server.port;
    let cpu0 = server.cpu();
    let threads0 = server.thread_cpu();
    let own0 = own_cpu();
    let t0 = Instant::now();
    let peak_rss = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let results: Vec<ProducerResult> = rt.block_on(async {
        let base = tokio::time::Instant::now() + Duration::from_millis(100);
        let sampler = {
            let peak = peak_rss.clone();
            let pid = server.pid;
            tokio::spawn(async move {
                loop {
                    let s =
                        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    if let Some(kb) = kb_field(&s, "VmRSS:") {
                        peak.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let start = base + pace.mul_f64(i as f64 / n as f64);
                tokio::spawn(produce(
                    port,
                    format!("benchcam{i}"),
                    media.init.clone(),
                    chunks.clone(),
                    count,
                    start,
                    Some(pace),
                ))
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            match t.await {
                Ok(r) => out.push(r),
                Err(e) => out.push(ProducerResult {
                    sent: Vec::new(),
                    log: AckLog {
                        errors: vec![format!("camera task: {e}")],
                        ..Default::default()
                    },
                }),
            }
        }
        sampler.abort();
        out
    });
    let wall = t0.elapsed();
    let cpu = server.cpu().saturating_sub(cpu0);
    let own = own_cpu().saturating_sub(own0);
    let threads1 = server.thread_cpu();
    let (hwm, rss_end) = server.memory_kb();
    let log_lines = server.stop();

    let mut lat: Vec<Duration> = results.iter().flat_map(|r| r.latencies()).collect();
    lat.sort_unstable();
    let expected = n * count;
    let acked: usize = results.iter().map(|r| r.log.acks.len()).sum();
    println!("  acked {acked}/{expected} fragments");
    print_latency("last byte written -> persisted ack line:", lat.clone());
    print_latency(
        "last byte written -> server_time_us (commit):",
        results.iter().flat_map(|r| r.commit_lags()).collect(),
    );
    print_groups(&groups(&results));
    println!(
        "  server CPU {:.0}% of one core over {:.1} s (bench client itself: {:.0}%)",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        wall.as_secs_f64(),
        100.0 * own.as_secs_f64() / wall.as_secs_f64()
    );
    print_thread_cpu(&threads0, &threads1, wall);
    println!(
        "  server memory: VmHWM {:.0} MB, peak sampled VmRSS {:.0} MB, VmRSS at end {:.0} MB",
        hwm as f64 / 1e3,
        peak_rss.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e3,
        rss_end as f64 / 1e3
    );
    println!(
        "  target p99 < 100 ms: {}",
        if pct(&lat, 99.0) < Duration::from_millis(100) && acked == expected {
            "met"
        } else {
            "NOT met"
        }
    );
    print_problems(&results, &log_lines);
    Ok(())
}
