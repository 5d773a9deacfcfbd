//! Ingest benchmark against the real server binary on loopback (see BENCHMARKS.md).
//!
//! ```text
//! cargo bench --bench ingest                                   # both parts
//! cargo bench --bench ingest -- single [--single-mb 500]
//! cargo bench --bench ingest -- cameras [--cameras 200] [--seconds 20] [--kbps 4000] \
//!     [--fragment-ms 1000] [--budget-mb B] [--hold-back-secs H] [--group-ms G] \
//!     [--sync fdatasync|syncfs] [--verify]
//! cargo bench --bench ingest -- sweep [--rows 1000000] [--cameras 50] [--seconds 10] \
//!     [--batch-rows 2000[,500...]]
//! cargo bench --bench ingest -- soak [--seconds 600] [--producers 50] [--viewers 20] \
//!     [--followers 5]
//! cargo bench --bench ingest -- rtsp [--sources 50] [--seconds 60]
//! ```
//! Extra flag: `--sample` skips ffmpeg and loops `samples/h264_aac_gop2s.mp4`.
//!
//! (a) `single`: one producer uploads looped fragments as fast as it can; throughput is measured
//! until the last fragment's durable ack, next to writing the same bytes to a file with fsync.
//! (b) `cameras`: N paced producers (one fragment per fragment duration each); latency from a
//! fragment's last byte written to its `persisted` ack line, plus the server's CPU and RSS.
//! (c) `sweep` (only when asked for): a data dir with one real upload plus `--rows` synthetic
//! fragment rows, all past retention, in stream `old`; N paced cameras run for `--seconds` of
//! baseline, then `POST /api/v1/retention/sweep` expires the rows while they keep going; ack
//! latency before and during the sweep is compared (issue 4: p99 during <= 2x baseline).
//! (d) `soak` (only when asked for): producers, HLS viewers and follow-feed consumers against one
//! server for `--seconds`, then every acknowledged fragment is read back and compared with the
//! producer's SHA-256 (issue 7; see `soak.rs`).
//!
//! Every run starts its own server process (`serve --listen 127.0.0.1:0`) on a fresh temp dir and
//! stops it with SIGTERM at the end. Fragments of one commit group share `server_time_us`, so the
//! acks also tell how the server grouped its syncs. MB = 10^6 bytes.

#[path = "common/box_walker.rs"]
mod box_walker;
#[path = "ingest/cameras.rs"]
mod cameras;
#[path = "common/mod.rs"]
mod common;
#[path = "ingest/rtsp.rs"]
mod rtsp;
#[path = "ingest/soak.rs"]
mod soak;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
const MAX_ROWS: u64 = 10_000_000;
/// How long to wait for the last acks and `session_ended` after a producer's last byte.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

use common::BoxError;
type Res<T> = Result<T, BoxError>;

struct Args {
    single: bool,
    cameras_mode: bool,
    cameras: usize,
    seconds: u64,
    single_mb: u64,
    force_sample: bool,
    sweep_mode: bool,
    cameras_given: bool,
    seconds_given: bool,
    rows: u64,
    batch_rows: Vec<u32>,
    soak_mode: bool,
    /// `rtsp`: RTSP cameras pulled by the server (benches/ingest/rtsp.rs).
    rtsp_mode: bool,
    sources: usize,
    producers: usize,
    viewers: usize,
    followers: usize,
    /// Media bitrate (ffmpeg CBR) and fragment length of `single` and `cameras`.
    kbps: u32,
    fragment_ms: u32,
    /// Server settings for `cameras` (unset: the server's defaults).
    budget_mb: Option<u64>,
    hold_back_secs: Option<u64>,
    group_ms: Option<u64>,
    /// `storage.sync` for `cameras` (fdatasync, syncfs; unset: the default).
    sync: Option<String>,
    /// `cameras`: read every acked fragment back afterwards and compare checksums.
    verify: bool,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        single: false,
        cameras_mode: false,
        cameras: 200,
        seconds: 20,
        single_mb: 500,
        force_sample: false,
        sweep_mode: false,
        cameras_given: false,
        seconds_given: false,
        rows: 1_000_000,
        batch_rows: vec![2000],
        soak_mode: false,
        rtsp_mode: false,
        sources: 50,
        producers: 50,
        viewers: 20,
        followers: 5,
        kbps: 4000,
        fragment_ms: 1000,
        budget_mb: None,
        hold_back_secs: None,
        group_ms: None,
        sync: None,
        verify: false,
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
            "sweep" => a.sweep_mode = true,
            "soak" => a.soak_mode = true,
            "rtsp" => a.rtsp_mode = true,
            "--sources" => a.sources = num(it.next(), "--sources")? as usize,
            "--producers" => a.producers = num(it.next(), "--producers")? as usize,
            "--viewers" => a.viewers = num(it.next(), "--viewers")? as usize,
            "--followers" => a.followers = num(it.next(), "--followers")? as usize,
            "--cameras" => {
                a.cameras = num(it.next(), "--cameras")? as usize;
                a.cameras_given = true;
            }
            "--seconds" => {
                a.seconds = num(it.next(), "--seconds")?;
                a.seconds_given = true;
            }
            "--rows" => a.rows = num(it.next(), "--rows")?,
            "--batch-rows" => {
                let v = it.next().ok_or("--batch-rows needs a value")?;
                a.batch_rows = v
                    .split(',')
                    .map(|x| x.trim().parse::<u32>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--batch-rows: {e}"))?;
            }
            "--single-mb" => a.single_mb = num(it.next(), "--single-mb")?,
            "--sample" => a.force_sample = true,
            "--kbps" => a.kbps = num(it.next(), "--kbps")?.clamp(100, 50_000) as u32,
            "--fragment-ms" => {
                a.fragment_ms = num(it.next(), "--fragment-ms")?.clamp(200, 10_000) as u32
            }
            "--budget-mb" => a.budget_mb = Some(num(it.next(), "--budget-mb")?.max(1)),
            "--hold-back-secs" => {
                a.hold_back_secs = Some(num(it.next(), "--hold-back-secs")?.max(1))
            }
            "--group-ms" => a.group_ms = Some(num(it.next(), "--group-ms")?.min(1000)),
            "--verify" => a.verify = true,
            "--sync" => a.sync = Some(it.next().ok_or("--sync needs a value")?),
            other => {
                return Err(format!(
                    "unknown argument '{other}'; usage: [single|cameras|sweep|soak|rtsp] [--cameras N] \
                 [--seconds S] [--single-mb M] [--rows R] [--batch-rows B[,B...]] [--sample] \
                 [--producers P] [--viewers V] [--followers F] [--sources N] [--kbps K] \
                 [--fragment-ms M] [--budget-mb B] [--hold-back-secs H] [--group-ms G] [--sync fdatasync|syncfs] [--verify]"
                )
                .into())
            }
        }
    }
    if a.rtsp_mode && !a.seconds_given {
        a.seconds = 60;
    }
    if a.sources == 0 || a.sources > MAX_CAMERAS {
        return Err(format!("--sources must be 1..={MAX_CAMERAS}").into());
    }
    if !a.single && !a.cameras_mode && !a.sweep_mode && !a.soak_mode && !a.rtsp_mode {
        a.single = true;
        a.cameras_mode = true;
    }
    if a.soak_mode && !a.seconds_given {
        // Issue 7's acceptance run: 10 minutes.
        a.seconds = 600;
    }
    if a.producers == 0 || a.producers > soak::MAX_PRODUCERS {
        return Err(format!("--producers must be 1..={}", soak::MAX_PRODUCERS).into());
    }
    if a.viewers > soak::MAX_CLIENTS || a.followers > soak::MAX_CLIENTS {
        return Err(format!(
            "--viewers and --followers must be 0..={}",
            soak::MAX_CLIENTS
        )
        .into());
    }
    if a.sweep_mode && !a.cameras_mode {
        // Sweep defaults: 50 cameras, 10 s of baseline before the sweep.
        if !a.cameras_given {
            a.cameras = 50;
        }
        if !a.seconds_given {
            a.seconds = 10;
        }
    }
    if a.rows == 0 || a.rows > MAX_ROWS {
        return Err(format!("--rows must be 1..={MAX_ROWS}").into());
    }
    if a.batch_rows.is_empty()
        || a.batch_rows.len() > 4
        || a.batch_rows.iter().any(|b| *b == 0 || *b > 1_000_000)
    {
        return Err("--batch-rows takes 1 to 4 values, each 1..=1000000".into());
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.soak_mode {
        let media = Arc::new(Media::load(
            work.path(),
            args.force_sample,
            soak::CAMERA_MBIT * 1000,
            1000,
        )?);
        media.print();
        soak::soak(&rt, &media, work.path(), args)?;
    }
    if args.rtsp_mode {
        rtsp::rtsp(&rt, work.path(), args.sources, args.seconds)?;
    }
    if !args.single && !args.cameras_mode && !args.sweep_mode {
        return Ok(());
    }
    let media = Arc::new(Media::load(
        work.path(),
        args.force_sample,
        args.kbps,
        args.fragment_ms,
    )?);
    media.print();
    if args.single {
        single(&rt, &media, work.path(), args.single_mb)?;
    }
    if args.cameras_mode {
        cameras::cameras(&rt, &media, work.path(), args)?;
    }
    if args.sweep_mode {
        sweep(&rt, &media, work.path(), args)?;
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
    /// Per track: the earliest tfdt in the source.
    first_ticks: HashMap<u32, u64>,
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
    /// `kbps`: the bitrate ffmpeg encodes at (when ffmpeg is there); `gop_ms`: the keyframe
    /// interval, so the fragment length (`frag_keyframe`).
    fn load(work: &Path, force_sample: bool, kbps: u32, gop_ms: u32) -> Res<Media> {
        let generated = work.join(format!("gen_{kbps}kbps_gop{gop_ms}ms.mp4"));
        let (path, source) = if !force_sample && generate_with_ffmpeg(&generated, kbps, gop_ms) {
            (
                generated,
                format!(
                    "ffmpeg testsrc2 1280x720 25 fps, libx264 {kbps} kbit/s, {gop_ms} ms GOP, 10 s"
                ),
            )
        } else {
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
            println!("note: using {SAMPLE} (2 s fragments, far below {kbps} kbit/s)");
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
        let loop_ticks = span.iter().map(|(k, (a, b))| (*k, b - a)).collect();
        let first_ticks = span.iter().map(|(k, (a, _))| (*k, *a)).collect();
        let frag_duration = Duration::from_micros((total_us / frags.len() as i64).max(1) as u64);
        Ok(Media {
            source,
            init,
            facts,
            frags,
            loop_ticks,
            first_ticks,
            frag_duration,
        })
    }

    fn print(&self) {
        let total: usize = self.frags.iter().map(|f| f.bytes.len()).sum();
        let line =
            common::describe_media(&self.source, self.frags.len(), self.frag_duration, total);
        println!("media: {line}");
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

    /// The k-th fragment of the endless loop already on a stream timeline that starts at
    /// `start_s` (seconds since the Unix epoch): every track's tfdt is its media time since the
    /// loop's start plus `start_s` in the track's timescale. Sent with `producer_start` = `start_s`,
    /// the server's timeline shift is zero, so the stored bytes must equal these exactly.
    fn placed_fragment(&self, k: usize, start_s: i64) -> Res<Chunk> {
        let src = &self.frags[k % self.frags.len()];
        let lap = (k / self.frags.len()) as u64;
        let start_s = u64::try_from(start_s).map_err(|_| "negative start time")?;
        let bytes =
            fmp4::rewrite_fragment(&self.facts, &src.bytes, src.stream_offset, &|tr, old| {
                // Whole seconds: exact in any integer timescale.
                let ts = self.facts.track(tr).map_or(1, |t| u64::from(t.timescale));
                old - self.first_ticks.get(&tr).copied().unwrap_or(0)
                    + lap * self.loop_ticks.get(&tr).copied().unwrap_or(0)
                    + start_s * ts
            })?;
        Ok(Chunk::new(&bytes))
    }
}

fn generate_with_ffmpeg(out: &Path, kbps: u32, gop_ms: u32) -> bool {
    // 25 fps: a GOP of gop_ms is this many frames.
    let gop = (gop_ms / 40).max(1).to_string();
    let rate = format!("{kbps}k");
    // Constant bitrate (x264's CBR with filler), so `--kbps` is what goes over the wire and
    // the test picture's easy frames do not come out far below it.
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"])
        .args(["-t", "10", "-c:v", "libx264", "-preset", "ultrafast"])
        .args([
            "-b:v", &rate, "-minrate", &rate, "-maxrate", &rate, "-bufsize", &rate,
        ])
        .args(["-x264-params", "nal-hrd=cbr:filler=1"])
        .args(["-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0"])
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
        Server::start_in(work, label, &data, None)
    }

    /// Starts the server on `data` (created if missing), with an optional `--config` file.
    fn start_in(work: &Path, label: &str, data: &Path, config: Option<&Path>) -> Res<Server> {
        let log = work.join(format!("server-{label}.log"));
        let (child, port) = common::spawn_server(data, &log, config, Duration::from_secs(30))?;
        let pid = child.id() as i32;
        Ok(Server {
            child,
            pid,
            port,
            log,
        })
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

async fn open_upload(
    port: u16,
    stream: &str,
    producer_start_ms: Option<i64>,
    init: &[u8],
) -> Res<(OwnedReadHalf, OwnedWriteHalf)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let (r, mut w) = tcp.into_split();
    let query = producer_start_ms.map_or(String::new(), |ms| format!("?producer_start={ms}"));
    let head = format!(
        "PUT /api/v1/streams/{stream}/ingest{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
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
    /// (arrival, server_time_us, fragment number, producer_time_us) of each `persisted` line,
    /// in order.
    acks: Vec<(Instant, i64, i64, i64)>,
    errors: Vec<String>,
    ended: bool,
    /// The `reason` of the `session_ended` line.
    end_reason: Option<String>,
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
                        v["producer_time_us"].as_i64().unwrap_or(0),
                    )),
                    Some("session_ended") => {
                        log.ended = true;
                        log.end_reason = v["reason"].as_str().map(str::to_string);
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
    /// Only for `Feed::Placed`: per fragment sent, its producer time (µs) and the SHA-256 of
    /// its bytes.
    sums: Vec<(i64, [u8; 32])>,
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

/// Where a producer's fragments come from.
#[derive(Clone)]
enum Feed {
    /// Made up front (and shared by all producers).
    Fixed(Arc<Vec<Chunk>>),
    /// Fragment k of the looped media, made when due (long runs without a big buffer).
    Looped(Arc<Media>),
    /// Like `Looped`, but on the stream timeline from `start_s` (see `Media::placed_fragment`);
    /// the producer keeps a checksum of each fragment it sends.
    Placed { media: Arc<Media>, start_s: i64 },
    /// Made up front on the stream timeline from `start_s`, with their checksums (shared by
    /// all producers: every stream gets the same bytes, and the server must store them as sent).
    PlacedFixed {
        chunks: Arc<Vec<Chunk>>,
        sums: Arc<Vec<(i64, [u8; 32])>>,
        start_s: i64,
    },
}

impl Feed {
    fn chunk(&self, k: usize) -> Res<Chunk> {
        match self {
            Feed::Fixed(v) => v
                .get(k)
                .cloned()
                .ok_or_else(|| format!("no fragment {k} in the feed").into()),
            Feed::Looped(m) => m.fragment(k),
            Feed::Placed { media, start_s } => media.placed_fragment(k, *start_s),
            Feed::PlacedFixed { chunks, .. } => chunks
                .get(k)
                .cloned()
                .ok_or_else(|| format!("no fragment {k} in the feed").into()),
        }
    }

    /// `producer_start` (ms) for the upload: where `Placed` fragments already are.
    fn producer_start_ms(&self) -> Option<i64> {
        match self {
            Feed::Placed { start_s, .. } | Feed::PlacedFixed { start_s, .. } => {
                Some(start_s * 1000)
            }
            _ => None,
        }
    }

    /// (producer time µs, SHA-256) of a `Placed` fragment; `None` for the other feeds.
    fn checksum(&self, k: usize, chunk: &Chunk) -> Res<Option<(i64, [u8; 32])>> {
        if let Feed::PlacedFixed { sums, .. } = self {
            return Ok(sums.get(k).copied());
        }
        let Feed::Placed { media, .. } = self else {
            return Ok(None);
        };
        let start_us = fmp4::fragment_facts_at(&media.facts, chunk.raw(), 0)?.start_us();
        Ok(Some((start_us, Sha256::digest(chunk.raw()).into())))
    }
}

/// One producer's upload.
struct Plan {
    port: u16,
    stream: String,
    init: Bytes,
    feed: Feed,
    /// At most this many fragments.
    count: usize,
    start: tokio::time::Instant,
    /// One fragment per `pace` from `start`; `None`: as fast as possible.
    pace: Option<Duration>,
    /// When set, the producer ends its upload before its next fragment.
    stop: Option<Arc<AtomicBool>>,
}

/// Each producer task's result, in order; a task that panicked counts as a producer with that
/// error and nothing sent.
async fn join_producers(
    tasks: Vec<tokio::task::JoinHandle<ProducerResult>>,
) -> Vec<ProducerResult> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(r) => out.push(r),
            Err(e) => out.push(ProducerResult {
                sent: Vec::new(),
                sums: Vec::new(),
                log: AckLog {
                    errors: vec![format!("camera task: {e}")],
                    ..Default::default()
                },
            }),
        }
    }
    out
}

/// Sends init, then each chunk at its due time (if any), then the end; collects the acks.
async fn produce(plan: Plan) -> ProducerResult {
    let Plan {
        port,
        stream,
        init,
        feed,
        count,
        start,
        pace,
        stop,
    } = plan;
    tokio::time::sleep_until(start).await;
    let mut sent = Vec::with_capacity(count.min(4096));
    let mut sums = Vec::new();
    let (r, mut w) = match open_upload(port, &stream, feed.producer_start_ms(), &init).await {
        Ok(c) => c,
        Err(e) => {
            let mut log = AckLog::default();
            log.errors.push(format!("connect: {e}"));
            return ProducerResult { sent, sums, log };
        }
    };
    let reader = tokio::spawn(read_acks(r));
    let mut write_error = None;
    for k in 0..count {
        let chunk = match feed.chunk(k) {
            Ok(c) => c,
            Err(e) => {
                write_error = Some(format!("fragment {k}: {e}"));
                break;
            }
        };
        if let Some(p) = pace {
            tokio::time::sleep_until(start + p * k as u32).await;
        }
        if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        let sum = match feed.checksum(k, &chunk) {
            Ok(s) => s,
            Err(e) => {
                write_error = Some(format!("fragment {k}: {e}"));
                break;
            }
        };
        if let Err(e) = w.write_all(&chunk.framed).await {
            write_error = Some(format!("write: {e}"));
            break;
        }
        sent.push((Instant::now(), wall_us()));
        sums.extend(sum);
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
    ProducerResult { sent, sums, log }
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
    let result = rt.block_on(produce(Plan {
        port: server.port,
        stream: "benchsingle".into(),
        init: media.init.clone(),
        feed: Feed::Fixed(chunks.clone()),
        count,
        start: tokio::time::Instant::now(),
        pace: None,
        stop: None,
    }));
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
// (c) A large retention sweep while N paced cameras ingest.

const DAY_US: i64 = 86_400_000_000;
/// Producer-time gap between synthetic days, so each day is its own span (gaps > 0.5 s split).
const DAY_GAP_US: i64 = 10_000_000;
/// The cameras keep going this long after the sweep returns (the "after" window).
const AFTER_SWEEP: Duration = Duration::from_secs(3);
/// Fragments at the start of each upload (session start, stream creation) are not measured.
const WARMUP_EXTRA: Duration = Duration::from_secs(1);

/// What the prepared data dir holds in stream `old`.
struct Seeded {
    stream_id: i64,
    real_fragments: usize,
    synthetic: u64,
    files: usize,
    spans: usize,
    total_bytes: i64,
    first_us: i64,
    last_server_us: i64,
}

fn sweep(rt: &tokio::runtime::Runtime, media: &Arc<Media>, work: &Path, args: &Args) -> Res<()> {
    println!(
        "\n(c) retention sweep of {} synthetic rows (+ one real upload) in stream 'old' while {} \
         cameras ingest; baseline {} s; batch_rows {:?}",
        args.rows, args.cameras, args.seconds, args.batch_rows
    );
    let prepared = work.join("data-sweep-prepared");
    let seeded = prepare_sweep_data(rt, work, &prepared, args.rows)?;
    for &batch in &args.batch_rows {
        let dir = work.join(format!("data-sweep-b{batch}"));
        let t = Instant::now();
        let copied = copy_dir(&prepared, &dir)?;
        println!(
            "\n  -- batch_rows = {batch}: copied the prepared data dir ({:.0} MB) in {:.1} s",
            copied as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
        let r = sweep_run(rt, media, work, &dir, &seeded, args, batch);
        let _ = std::fs::remove_dir_all(&dir);
        r?;
    }
    let _ = std::fs::remove_dir_all(&prepared);
    Ok(())
}

fn sweep_config(work: &Path, batch_rows: u32) -> Res<PathBuf> {
    let path = work.join(format!("sweep-b{batch_rows}.toml"));
    // A day between sweeps: the only sweep is the one the bench asks for.
    std::fs::write(
        &path,
        format!("[retention]\nsweep_interval_secs = 86400\nbatch_rows = {batch_rows}\n"),
    )?;
    Ok(path)
}

/// Durations (µs) of the sample's fragments, to place the synthetic history before the upload.
fn sample_durations(data: &[u8]) -> Res<Vec<i64>> {
    let mut splitter = Splitter::new(u64::MAX);
    let mut events = Vec::new();
    splitter.push(data, &mut events)?;
    splitter.finish()?;
    let mut facts = None;
    let mut out = Vec::new();
    for ev in events {
        match ev {
            Event::Init { facts: f, .. } => {
                facts.get_or_insert(f);
            }
            Event::Fragment(f) => {
                let fa = facts.as_ref().ok_or("fragment before init in the sample")?;
                out.push(fmp4::fragment_facts_at(fa, &f.bytes, f.stream_offset)?.duration_us());
            }
        }
    }
    if out.is_empty() {
        return Err("no fragments in the sample".into());
    }
    Ok(out)
}

/// Real server, real upload of the sample into `old`, SIGTERM; then the synthetic rows.
fn prepare_sweep_data(
    rt: &tokio::runtime::Runtime,
    work: &Path,
    data: &Path,
    rows: u64,
) -> Res<Seeded> {
    let sample = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SAMPLE))?;
    let durs = sample_durations(&sample)?;
    let avg_us = (durs.iter().sum::<i64>() / durs.len() as i64).max(1);
    let per_day = (DAY_US / avg_us).max(1) as u64;
    let days = rows.div_ceil(per_day) as i64;
    let history_us = rows as i64 * avg_us + days * DAY_GAP_US + durs.iter().sum::<i64>();
    // Starts 30 days ago, or earlier when the history is longer; it ends over a day ago.
    let t0_ms = (wall_us() - (30 * DAY_US).max(history_us + 2 * DAY_US)) / 1000;

    let t = Instant::now();
    let config = sweep_config(work, 2000)?;
    let server = Server::start_in(work, "sweep-prepare", data, Some(&config))?;
    let upload = rt.block_on(http_call(
        server.port,
        "PUT",
        &format!("/api/v1/streams/old/ingest?producer_start={t0_ms}"),
        Some("video/mp4"),
        &sample,
    ));
    let log = server.stop();
    let (code, body) = upload?;
    if code != 200 {
        return Err(format!(
            "upload of {SAMPLE} into 'old': HTTP {code}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    for l in log.iter().take(3) {
        println!("  prepare: server log: {l}");
    }
    println!(
        "  prepare: real upload of {SAMPLE} into 'old' ({} bytes, producer_start {} ms) in \
         {:.1} s: {}",
        sample.len(),
        t0_ms,
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&body).trim()
    );
    let t = Instant::now();
    let seeded = seed_old_stream(data, rows, per_day)?;
    let db = std::fs::metadata(data.join("tapedeck.db")).map_or(0, |m| m.len());
    println!(
        "  prepare: inserted {} rows with rusqlite in {:.1} s; 'old' (id {}) now has {} + {} \
         fragments, {:.1} GB by its totals, {} files, {} spans; producer time from {} ; newest \
         server_time {:.1} days ago; tapedeck.db {:.0} MB",
        seeded.synthetic,
        t.elapsed().as_secs_f64(),
        seeded.stream_id,
        seeded.real_fragments,
        seeded.synthetic,
        seeded.total_bytes as f64 / 1e9,
        seeded.files,
        seeded.spans,
        seeded.first_us / 1000,
        (wall_us() - seeded.last_server_us) as f64 / DAY_US as f64,
        db as f64 / 1e6
    );
    Ok(seeded)
}

struct RealRow {
    number: i64,
    session_id: i64,
    init_id: i64,
    start_us: i64,
    duration_us: i64,
    media_time: i64,
    timescale: i64,
    keyframe: bool,
    sample_count: i64,
    file_id: i64,
    file_offset: i64,
    size_bytes: i64,
    segment_seq: i64,
    disc_seq: i64,
}

struct SpanAcc {
    first: i64,
    last: i64,
    start_us: i64,
    end_us: i64,
    fragments: i64,
    bytes: i64,
}

/// Makes every row of `old` older than its retention (24 h) and appends `rows` synthetic rows
/// after the real ones: the real fragments' (offset, size) in turn, one span and one file (a
/// copy of the real file) per day of media, with consistent stream totals.
fn seed_old_stream(data: &Path, rows: u64, per_day: u64) -> Res<Seeded> {
    use rusqlite::params;
    let mut conn = rusqlite::Connection::open(data.join("tapedeck.db"))?;
    // Bulk load: no WAL growth, no syncs (the server is stopped; it sets WAL again on open).
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -262_144i64)?;
    let (stream_id, last_number): (i64, i64) = conn.query_row(
        "SELECT id, last_number FROM streams WHERE name = 'old' AND deleted_us IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let real: Vec<RealRow> = {
        let mut stmt = conn.prepare(
            "SELECT number, session_id, init_id, producer_start_us, duration_us, media_time, \
             timescale, keyframe, sample_count, file_id, file_offset, size_bytes, segment_seq, \
             disc_seq FROM fragments WHERE stream_id = ? ORDER BY number",
        )?;
        let rows = stmt
            .query_map([stream_id], |r| {
                Ok(RealRow {
                    number: r.get(0)?,
                    session_id: r.get(1)?,
                    init_id: r.get(2)?,
                    start_us: r.get(3)?,
                    duration_us: r.get(4)?,
                    media_time: r.get(5)?,
                    timescale: r.get(6)?,
                    keyframe: r.get(7)?,
                    sample_count: r.get(8)?,
                    file_id: r.get(9)?,
                    file_offset: r.get(10)?,
                    size_bytes: r.get(11)?,
                    segment_seq: r.get(12)?,
                    disc_seq: r.get(13)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    let (Some(first), Some(last)) = (real.first(), real.last()) else {
        return Err("the real upload left no fragments in 'old'".into());
    };
    if real.iter().any(|r| r.file_id != first.file_id) || last.number != last_number {
        return Err("expected the real upload in one file, numbered up to last_number".into());
    }
    let stream_dir = data.join("streams").join(stream_id.to_string());
    let real_file = stream_dir.join(format!("{:010}.frag", first.file_id));
    let max_file: i64 =
        conn.query_row("SELECT COALESCE(MAX(id), 0) FROM files", [], |r| r.get(0))?;
    let first_us = first.start_us;
    let mut cursor_us = last.start_us + last.duration_us;
    let mut span = SpanAcc {
        first: first.number,
        last: last.number,
        start_us: first_us,
        end_us: cursor_us,
        fragments: real.len() as i64,
        bytes: real.iter().map(|r| r.size_bytes).sum(),
    };
    let mut spans = Vec::new();
    let mut total_bytes = span.bytes;
    let (mut segment_seq, mut disc_seq) = (last.segment_seq, last.disc_seq);
    let mut files = 1;
    let mut last_server_us = cursor_us;

    let tx = conn.transaction()?;
    // The real rows: durable when they were recorded, 30 days ago.
    tx.execute(
        "UPDATE fragments SET server_time_us = producer_start_us + duration_us WHERE stream_id = ?",
        [stream_id],
    )?;
    tx.execute(
        "UPDATE files SET created_us = ? WHERE id = ?",
        params![first_us, first.file_id],
    )?;
    tx.execute("DELETE FROM spans WHERE stream_id = ?", [stream_id])?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO fragments (stream_id, number, session_id, init_id, producer_start_us, \
             duration_us, server_time_us, media_time, timescale, keyframe, sample_count, \
             file_id, file_offset, size_bytes, segment_start, discontinuity, segment_seq, \
             disc_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        )?;
        let mut insert_file =
            tx.prepare("INSERT INTO files (id, stream_id, created_us) VALUES (?, ?, ?)")?;
        let mut file_id = first.file_id;
        for i in 0..rows {
            let r = &real[(i % real.len() as u64) as usize];
            let number = last_number + 1 + i as i64;
            let new_day = i % per_day == 0;
            let disc = new_day && i > 0;
            if disc {
                cursor_us += DAY_GAP_US;
                spans.push(std::mem::replace(
                    &mut span,
                    SpanAcc {
                        first: number,
                        last: number,
                        start_us: cursor_us,
                        end_us: cursor_us,
                        fragments: 0,
                        bytes: 0,
                    },
                ));
            }
            if new_day {
                file_id = max_file + 1 + (i / per_day) as i64;
                std::fs::copy(&real_file, stream_dir.join(format!("{file_id:010}.frag")))?;
                insert_file.execute(params![file_id, stream_id, cursor_us])?;
                files += 1;
            }
            let start = cursor_us;
            cursor_us += r.duration_us;
            let segment_start = disc || r.keyframe;
            segment_seq += i64::from(segment_start);
            disc_seq += i64::from(disc);
            let media_time = first.media_time
                + ((start - first_us) as i128 * r.timescale as i128 / 1_000_000) as i64;
            last_server_us = cursor_us + 1000;
            insert.execute(params![
                stream_id,
                number,
                r.session_id,
                r.init_id,
                start,
                r.duration_us,
                last_server_us,
                media_time,
                r.timescale,
                r.keyframe,
                r.sample_count,
                file_id,
                r.file_offset,
                r.size_bytes,
                segment_start,
                disc,
                segment_seq,
                disc_seq
            ])?;
            span.last = number;
            span.end_us = cursor_us;
            span.fragments += 1;
            span.bytes += r.size_bytes;
            total_bytes += r.size_bytes;
        }
        spans.push(span);
        let mut insert_span = tx.prepare(
            "INSERT INTO spans (stream_id, first_number, last_number, start_us, end_us, \
             fragments, bytes) VALUES (?,?,?,?,?,?,?)",
        )?;
        for s in &spans {
            insert_span.execute(params![
                stream_id,
                s.first,
                s.last,
                s.start_us,
                s.end_us,
                s.fragments,
                s.bytes
            ])?;
        }
    }
    let fragments = real.len() as i64 + rows as i64;
    tx.execute(
        "UPDATE streams SET fragment_count = ?, total_bytes = ?, first_producer_us = ?, \
         last_end_us = ?, last_number = ?, retention_hours = 24 WHERE id = ?",
        params![
            fragments,
            total_bytes,
            first_us,
            cursor_us,
            last_number + rows as i64,
            stream_id
        ],
    )?;
    tx.commit()?;
    let (count, sum): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), SUM(size_bytes) FROM fragments WHERE stream_id = ?",
        [stream_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if count != fragments || sum != total_bytes {
        return Err(format!(
            "seeded totals disagree: {count} rows / {sum} bytes vs {fragments} / {total_bytes}"
        )
        .into());
    }
    if last_server_us > wall_us() - DAY_US - 3_600_000_000 {
        return Err("the synthetic history reaches into the last 25 hours".into());
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(Seeded {
        stream_id,
        real_fragments: real.len(),
        synthetic: rows,
        files,
        spans: spans.len(),
        total_bytes,
        first_us,
        last_server_us,
    })
}

/// Copies a directory tree; returns the bytes copied.
fn copy_dir(from: &Path, to: &Path) -> Res<u64> {
    std::fs::create_dir_all(to)?;
    let mut n = 0;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            n += copy_dir(&e.path(), &dst)?;
        } else {
            n += std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(n)
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the (de-chunked) body.
async fn http_call(
    port: u16,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Res<(u16, Vec<u8>)> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let ct = content_type.map_or(String::new(), |c| format!("Content-Type: {c}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{ct}Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body).await?;
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await?;
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the response head")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in '{head}'"))?;
    let mut rest = &buf[end + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((code, rest.to_vec()));
    }
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunked body")?;
        let hex = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(hex.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size '{hex}'"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok((code, out));
        }
        let chunk = rest.get(..size).ok_or("chunk cut short")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("chunk cut short")?;
    }
}

fn rss_kb(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    kb_field(&s, "VmRSS:").unwrap_or(0)
}

/// (on-CPU, waiting-for-a-CPU) time of the server's `store-writer` thread, from
/// `/proc/<pid>/task/<tid>/schedstat` (nanoseconds).
fn writer_sched(pid: i32) -> (u64, u64) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "store-writer" {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            let mut f = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
            return (f.next().unwrap_or(0), f.next().unwrap_or(0));
        }
    }
    (0, 0)
}

fn print_writer_sched(label: &str, a: (u64, u64), b: (u64, u64), wall: Duration) {
    let pc = |ns: u64| 100.0 * ns as f64 / 1e9 / wall.as_secs_f64().max(1e-9);
    let (run, wait) = (pc(b.0.saturating_sub(a.0)), pc(b.1.saturating_sub(a.1)));
    println!(
        "  store-writer thread, {label}: on a CPU {run:.0}%, runnable but waiting for a CPU \
         {wait:.0}%, blocked (I/O, fsync) or idle {:.0}% of {:.1} s",
        (100.0 - run - wait).max(0.0),
        wall.as_secs_f64()
    );
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Ack figures of one window.
#[derive(Default)]
struct WindowFigures {
    acks: Vec<Duration>,
    durable: Vec<Duration>,
    groups: HashMap<i64, usize>,
}

impl WindowFigures {
    fn print(&mut self, label: &str) -> Duration {
        self.acks.sort_unstable();
        self.durable.sort_unstable();
        let p99 = pct(&self.acks, 99.0);
        println!(
            "  {label:<34} {:>5} acks; ack line p50 {:>8}, p99 {:>8}, max {:>8}; durable p50 \
             {:>8}, p99 {:>8}; largest commit group {}",
            self.acks.len(),
            ms(pct(&self.acks, 50.0)),
            ms(p99),
            ms(self.acks.last().copied().unwrap_or_default()),
            ms(pct(&self.durable, 50.0)),
            ms(pct(&self.durable, 99.0)),
            self.groups.values().max().copied().unwrap_or(0)
        );
        p99
    }
}

fn sweep_run(
    rt: &tokio::runtime::Runtime,
    media: &Arc<Media>,
    work: &Path,
    data: &Path,
    seeded: &Seeded,
    args: &Args,
    batch: u32,
) -> Res<()> {
    let config = sweep_config(work, batch)?;
    let server = Server::start_in(work, &format!("sweep-b{batch}"), data, Some(&config))?;
    println!("  load average at start: {}", loadavg());
    let port = server.port;
    let pid = server.pid;
    let pace = media.frag_duration;
    let n = args.cameras;
    let baseline = Duration::from_secs(args.seconds);
    // Enough fragments for the longest allowed sweep; they are made when due.
    let count = ((args.seconds + MAX_SECONDS + 30) as f64 / pace.as_secs_f64()).ceil() as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let warm_end;
    let mut sweep_wall_us = 0;
    let mut t_sweep = (Instant::now(), Instant::now());
    let mut rss = (0, 0);
    let mut cpu_base = (HashMap::new(), HashMap::new());
    let mut cpu_sweep = (HashMap::new(), HashMap::new());
    let mut sched = [(0, 0); 4];
    let mut sweep_result: Res<(u16, Vec<u8>)> = Err("not run".into());
    let mut describe: Res<(u16, Vec<u8>)> = Err("not run".into());
    {
        let base = tokio::time::Instant::now() + Duration::from_millis(100);
        warm_end = base.into_std() + pace + WARMUP_EXTRA;
        let results = rt.block_on(async {
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    tokio::spawn(produce(Plan {
                        port,
                        stream: format!("sweepcam{i}"),
                        init: media.init.clone(),
                        feed: Feed::Looped(media.clone()),
                        count,
                        start: base + pace.mul_f64(i as f64 / n as f64),
                        pace: Some(pace),
                        stop: Some(stop.clone()),
                    }))
                })
                .collect();
            tokio::time::sleep_until(warm_end.into()).await;
            cpu_base.0 = server.thread_cpu();
            sched[0] = writer_sched(pid);
            tokio::time::sleep_until((warm_end + baseline).into()).await;
            cpu_base.1 = server.thread_cpu();
            cpu_sweep.0 = server.thread_cpu();
            sched[1] = writer_sched(pid);
            sched[2] = sched[1];
            rss.0 = rss_kb(pid);
            let sampler = {
                let peak = peak_rss.clone();
                tokio::spawn(async move {
                    loop {
                        peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                })
            };
            let t0 = Instant::now();
            sweep_wall_us = wall_us();
            let call = tokio::spawn(tokio::time::timeout(
                Duration::from_secs(MAX_SECONDS),
                http_call(port, "POST", "/api/v1/retention/sweep", None, b""),
            ));
            sweep_result = match call.await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(format!("the sweep took over {MAX_SECONDS} s").into()),
                Err(e) => Err(format!("sweep task: {e}").into()),
            };
            let t1 = Instant::now();
            t_sweep = (t0, t1);
            cpu_sweep.1 = server.thread_cpu();
            sched[3] = writer_sched(pid);
            rss.1 = rss_kb(pid);
            sampler.abort();
            tokio::time::sleep(AFTER_SWEEP).await;
            stop.store(true, Ordering::Relaxed);
            let out = join_producers(tasks).await;
            describe = http_call(port, "GET", "/api/v1/streams/old", None, b"").await;
            out
        });
        let files_left = std::fs::read_dir(data.join("streams").join(seeded.stream_id.to_string()))
            .map_or(0, |d| d.count());
        let size = |f: &str| std::fs::metadata(data.join(f)).map_or(0, |m| m.len());
        let (db, wal) = (size("tapedeck.db"), size("tapedeck.db-wal"));
        let log_lines = server.stop();
        report_sweep(
            &results,
            SweepWindows {
                warm_end,
                sweep: t_sweep,
                sweep_wall_us,
            },
            batch,
            seeded,
            &sweep_result,
            &describe,
        )?;
        println!(
            "  server RSS: {:.0} MB before the sweep, {:.0} MB when it returned, {:.0} MB peak \
             sampled during it",
            rss.0 as f64 / 1e3,
            rss.1 as f64 / 1e3,
            peak_rss.load(Ordering::Relaxed).max(rss.1) as f64 / 1e3
        );
        let (t0, t1) = t_sweep;
        print!("  baseline window:");
        print_thread_cpu(&cpu_base.0, &cpu_base.1, baseline);
        print!("  sweep window:");
        print_thread_cpu(&cpu_sweep.0, &cpu_sweep.1, t1 - t0);
        print_writer_sched("baseline", sched[0], sched[1], baseline);
        print_writer_sched("sweep", sched[2], sched[3], t1 - t0);
        println!(
            "  after: 'old' has {files_left} fragment files left on disk; tapedeck.db {:.0} MB, \
             -wal {:.0} MB; load average {}",
            db as f64 / 1e6,
            wal as f64 / 1e6,
            loadavg()
        );
        print_problems(&results, &log_lines);
    }
    Ok(())
}

struct SweepWindows {
    warm_end: Instant,
    sweep: (Instant, Instant),
    /// Wall clock (µs) when the POST was sent, to place commit groups in the sweep.
    sweep_wall_us: i64,
}

fn report_sweep(
    results: &[ProducerResult],
    w: SweepWindows,
    batch: u32,
    seeded: &Seeded,
    sweep_result: &Res<(u16, Vec<u8>)>,
    describe: &Res<(u16, Vec<u8>)>,
) -> Res<()> {
    let (t0, t1) = w.sweep;
    let wall = t1 - t0;
    let report: serde_json::Value = match sweep_result {
        Ok((200, body)) => serde_json::from_slice(body)?,
        Ok((code, body)) => {
            return Err(format!("sweep: HTTP {code}: {}", String::from_utf8_lossy(body)).into())
        }
        Err(e) => return Err(format!("sweep: {e}").into()),
    };
    let r = &report["by_retention"];
    let frags = r["fragments"].as_u64().unwrap_or(0);
    let batches = frags.div_ceil(batch as u64).max(1);
    let server_ms = report["duration_ms"].as_u64().unwrap_or(0);
    println!(
        "  sweep: returned after {:.2} s (server duration_ms {server_ms}); by retention: {} \
         fragments, {:.1} GB (by the index), {} files; by quota {} / by disk budget {} \
         fragments; held_kept {}; over_budget {}",
        wall.as_secs_f64(),
        frags,
        r["bytes"].as_u64().unwrap_or(0) as f64 / 1e9,
        r["files"].as_u64().unwrap_or(0),
        report["by_stream_quota"]["fragments"].as_u64().unwrap_or(0),
        report["by_disk_budget"]["fragments"].as_u64().unwrap_or(0),
        report["held_kept"].as_u64().unwrap_or(0),
        report["over_budget"]
    );
    let expected = seeded.synthetic + seeded.real_fragments as u64;
    println!(
        "  sweep: {:.0} fragments/s; {batches} batches of <= {batch} rows, {:.1} ms of sweep \
         per batch on average (incl. the commit groups in between); expected {expected} \
         fragments and {} files{}",
        frags as f64 / wall.as_secs_f64(),
        server_ms as f64 / batches as f64,
        seeded.files,
        if frags == expected {
            ""
        } else {
            " — MISMATCH"
        }
    );
    if let Ok((code, body)) = describe {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        println!(
            "  describe 'old' after: HTTP {code}, fragment_count {}, bytes {}",
            v["fragment_count"], v["bytes"]
        );
    }

    // Writer stalls: the commit groups with the longest wait from a fragment's last byte to
    // the group's server_time_us, placed on the sweep's timeline.
    let mut slow: HashMap<i64, (Duration, usize)> = HashMap::new();
    for p in results {
        for (s, a) in p.sent.iter().zip(&p.log.acks) {
            if a.0 >= t0 && s.0 <= t1 {
                let e = slow.entry(a.1).or_default();
                e.0 = e.0.max(Duration::from_micros((a.1 - s.1).max(0) as u64));
                e.1 += 1;
            }
        }
    }
    let mut slow: Vec<(i64, Duration, usize)> =
        slow.into_iter().map(|(t, (d, n))| (t, d, n)).collect();
    slow.sort_by_key(|g| std::cmp::Reverse(g.1));
    let over = |ms: u64| {
        slow.iter()
            .filter(|g| g.1 >= Duration::from_millis(ms))
            .count()
    };
    println!(
        "  commit groups during the sweep: {}; waited >= 50 ms: {}, >= 100 ms: {}, >= 200 ms: {}",
        slow.len(),
        over(50),
        over(100),
        over(200)
    );
    let mut top: Vec<String> = slow
        .iter()
        .take(10)
        .map(|g| {
            format!(
                "+{:.2} s {} ({} frags)",
                (g.0 - w.sweep_wall_us) as f64 / 1e6,
                ms(g.1),
                g.2
            )
        })
        .collect();
    top.sort();
    println!(
        "  slowest groups (time into the sweep, wait): {}",
        top.join(", ")
    );

    let (mut base, mut during, mut after) = (
        WindowFigures::default(),
        WindowFigures::default(),
        WindowFigures::default(),
    );
    let mut unacked = 0;
    for p in results {
        unacked += p.sent.len().saturating_sub(p.log.acks.len());
        for (s, a) in p.sent.iter().zip(&p.log.acks) {
            let win = if s.0 < w.warm_end {
                continue;
            } else if a.0 < t0 {
                &mut base
            } else if s.0 <= t1 {
                &mut during
            } else {
                &mut after
            };
            win.acks.push(a.0.saturating_duration_since(s.0));
            win.durable
                .push(Duration::from_micros((a.1 - s.1).max(0) as u64));
            *win.groups.entry(a.1).or_default() += 1;
        }
    }
    println!("  last byte written -> persisted ack line (durable = -> server_time_us):");
    let p_base = base.print("baseline (acked before the POST):");
    let p_sweep = during.print("during the sweep:");
    let p_after = after.print("after it returned:");
    if unacked > 0 {
        println!("  PROBLEM: {unacked} fragments sent but never acknowledged");
    }
    let ratio = p_sweep.as_secs_f64() / p_base.as_secs_f64().max(1e-6);
    let base_vs_after = p_base.as_secs_f64() / p_after.as_secs_f64().max(1e-6);
    if !(0.5..=2.0).contains(&base_vs_after) {
        println!(
            "  NOTE: baseline p99 is {base_vs_after:.1}x the after-sweep p99: the machine was \
             noisy; repeat the run"
        );
    }
    println!(
        "  (p99 during / p99 after the sweep = {:.2}x)",
        p_sweep.as_secs_f64() / p_after.as_secs_f64().max(1e-6)
    );
    println!(
        "  p99 during / p99 baseline = {} / {} = {ratio:.2}x; target <= 2x: {}",
        ms(p_sweep),
        ms(p_base),
        if ratio <= 2.0 && unacked == 0 && frags == expected {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
