//! Analytics benchmark against the real server binary on loopback (see BENCHMARKS.md, issue 5).
//!
//! ```text
//! cargo bench --bench analytics                      # frames, then follow
//! cargo bench --bench analytics -- frames [--frames-seconds 40] [--requests 60] [--clients 2]
//!     [--concurrent-seconds 15] [--seed 1]
//! cargo bench --bench analytics -- follow [--followers 100[,1,...]] [--follow-seconds 20]
//!     [--follow-mbit 4] [--sample] [--events N]
//! ```
//! Fan-out at scale (issue 15): `follow --followers 1000 --events 100 --follow-seconds 30`.
//! `--keep` leaves the temp dir (media, data dirs, server logs) in place.
//!
//! **Frames.** ffmpeg makes a 1080p25 H.264 High-profile sample (testsrc2, 6 Mbit/s, 2 s closed
//! GOPs, `frag_keyframe`: one fragment per GOP), which is uploaded once with one PUT. Then, over
//! one keep-alive connection, `frame.jpg?at=<epoch ms>`:
//! 1. keyframe-only: `at` = each segment start, cycling twice over every GOP in order. With more
//!    GOPs than the server's decoded-picture cache holds (LRU, `frames.cache_keyframes`), cyclic
//!    access misses every time, so each request decodes its keyframe;
//! 2. random: `requests` times, uniformly random inside a GOP, GOPs visited in shuffled rounds so
//!    every GOP is covered evenly; the latency is also fitted against how deep into its GOP the
//!    frame sits (decode work grows with it);
//! 3. cache hit: one time asked 21 times (the first decodes, the rest are hits);
//! 4. throughput: `clients` threads, each with its own connection, ask random times for a fixed
//!    duration; frames/s, latency, server CPU.
//!
//! **Follow feed.** One live producer (hand-written chunked `PUT .../ingest` with NDJSON acks,
//! paced one fragment per fragment duration; fragments of a real sample looped with increasing
//! `tfdt`), running on its own thread and runtime. N followers (raw TCP, their own runtime) GET
//! `.../media?start=now`, de-chunk the response and walk its top-level boxes: a `free` box names
//! fragment N, and the arrival time of the end of the `mdat` after it is fragment N's last byte.
//! Latency = that moment - the moment the producer parsed fragment N's `persisted` ack line (one
//! process, one monotonic clock). Only fragments acknowledged after every follower had caught up
//! (received its first fragment) are counted. With `--events M`, M more consumers GET
//! `.../events` (server-sent events) beside the followers; an event consumer's latency is the
//! arrival of the blank line ending fragment N's `fragment` event minus the same ack moment. The
//! bench reports how many consumers of each kind got every counted fragment. Connections stay
//! at most 2,000 on loopback; the soft `RLIMIT_NOFILE` is raised to the hard limit first, and the
//! server's per-stream feed limits are set to the consumer counts. Also: the server's RSS before the followers, at its
//! peak and at the end, its CPU, and the spread between the first and last follower per fragment.
//!
//! Every part starts its own server (`serve --listen 127.0.0.1:0`) on a fresh data dir and stops it
//! with SIGTERM. MB = 10^6 bytes.

#[path = "common/box_walker.rs"]
mod box_walker;
#[path = "common/mod.rs"]
mod common;

use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tapedeck::fmp4::{self, Event, InitFacts, Splitter};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

const SAMPLE: &str = "samples/h264_aac_gop2s.mp4";
const FRAMES_STREAM: &str = "benchframes";
const FOLLOW_STREAM: &str = "benchlive";
/// Frame period of the generated samples (25 fps).
const FRAME_US: i64 = 40_000;
/// Issue 5's targets.
const FRAME_TARGET: Duration = Duration::from_millis(150);
const FOLLOW_TARGET_US: i64 = 50_000;
/// Fragments acknowledged before the followers connect.
const PRODUCER_LEAD: usize = 2;

use common::BoxError;
type Res<T> = Result<T, BoxError>;

struct Args {
    frames: bool,
    follow: bool,
    frames_seconds: u64,
    requests: usize,
    clients: usize,
    concurrent_seconds: u64,
    followers: Vec<usize>,
    events: usize,
    follow_seconds: u64,
    follow_mbit: u64,
    force_sample: bool,
    seed: u64,
    keep: bool,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        frames: false,
        follow: false,
        frames_seconds: 40,
        requests: 60,
        clients: 2,
        concurrent_seconds: 15,
        followers: vec![100],
        events: 0,
        follow_seconds: 20,
        follow_mbit: 4,
        force_sample: false,
        seed: 1,
        keep: false,
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
            "frames" => a.frames = true,
            "follow" => a.follow = true,
            "--frames-seconds" => a.frames_seconds = num(it.next(), &arg)?,
            "--requests" => a.requests = num(it.next(), &arg)? as usize,
            "--clients" => a.clients = num(it.next(), &arg)? as usize,
            "--concurrent-seconds" => a.concurrent_seconds = num(it.next(), &arg)?,
            "--followers" => {
                let v = it.next().ok_or("--followers needs a value")?;
                a.followers = v
                    .split(',')
                    .map(|x| x.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--followers: {e}"))?;
            }
            "--follow-seconds" => a.follow_seconds = num(it.next(), &arg)?,
            "--events" => a.events = num(it.next(), &arg)? as usize,
            "--follow-mbit" => a.follow_mbit = num(it.next(), &arg)?,
            "--sample" => a.force_sample = true,
            "--seed" => a.seed = num(it.next(), &arg)?.max(1),
            "--keep" => a.keep = true,
            other => {
                return Err(format!(
                    "unknown argument '{other}'; usage: [frames|follow] [--frames-seconds S] \
                     [--requests N] [--clients C] [--concurrent-seconds S] [--followers N[,N..]] \
                     [--follow-seconds S] [--follow-mbit M] [--sample] [--events N] [--seed N] [--keep]"
                )
                .into())
            }
        }
    }
    if !a.frames && !a.follow {
        a.frames = true;
        a.follow = true;
    }
    let bounded = |v: u64, lo: u64, hi: u64, what: &str| -> Res<()> {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(format!("{what} must be {lo}..={hi}").into())
        }
    };
    bounded(a.frames_seconds, 4, 300, "--frames-seconds")?;
    bounded(a.requests as u64, 1, 2000, "--requests")?;
    bounded(a.clients as u64, 1, 16, "--clients")?;
    bounded(a.concurrent_seconds, 1, 300, "--concurrent-seconds")?;
    bounded(a.follow_seconds, 2, 300, "--follow-seconds")?;
    bounded(a.follow_mbit, 1, 50, "--follow-mbit")?;
    if a.followers.is_empty()
        || a.followers.len() > 4
        || a.followers.iter().any(|n| *n == 0 || *n > 1000)
    {
        return Err("--followers takes 1 to 4 values, each 1..=1000".into());
    }
    if a.events > 1000 {
        return Err("--events must be 0..=1000".into());
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("analytics bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("analytics bench failed: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res<()> {
    let work = tempfile::Builder::new()
        .prefix("tapedeck-analytics-bench-")
        .tempdir()?;
    print_machine(work.path());
    let mut summary = Vec::new();
    if args.frames {
        match frames_part(args, work.path())? {
            Some(s) => summary.extend(s),
            None => summary.push(("frames".to_string(), "skipped (no ffmpeg)".to_string())),
        }
    }
    if args.follow {
        let media = Arc::new(FollowMedia::load(work.path(), args)?);
        for &n in &args.followers {
            summary.extend(follow_part(
                work.path(),
                &media,
                n,
                args.events,
                args.follow_seconds,
            )?);
        }
    }
    println!("\nsummary (load average at the end: {})", loadavg());
    for (k, v) in &summary {
        println!("  {k:<58} {v}");
    }
    if args.keep {
        let kept = work.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}

fn print_machine(dir: &Path) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| kb_field(&s, "MemTotal:"))
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "machine: {cpus} CPUs ({model}), {:.1} GB memory; temp dir {}; load average {}",
        mem_kb as f64 / 1e6,
        dir.display(),
        loadavg()
    );
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn have(program: &str) -> bool {
    tapedeck::codec::ffmpeg::usable(program)
}

/// xorshift64*: reproducible picks without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` (hi > lo).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo).max(1) as u64) as i64
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Nearest-rank percentile of a sorted slice.
fn pct<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------------
// The server process and /proc figures.

struct Server {
    child: Child,
    pid: i32,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(work: &Path, label: &str) -> Res<Server> {
        Self::start_with(work, label, None)
    }

    /// With a config file of the bench's own (`toml`, plus no free-space floor).
    fn start_with(work: &Path, label: &str, toml: Option<&str>) -> Res<Server> {
        let data = work.join(format!("data-{label}"));
        let log = work.join(format!("server-{label}.log"));
        let config = match toml {
            Some(t) => {
                let path = work.join(format!("config-{label}.toml"));
                std::fs::write(&path, format!("[storage]\nmin_free_bytes = 0\n{t}"))?;
                Some(path)
            }
            None => None,
        };
        let (child, port) =
            common::spawn_server(&data, &log, config.as_deref(), Duration::from_secs(60))?;
        let pid = child.id() as i32;
        Ok(Server {
            child,
            pid,
            port,
            log,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn cpu(&self) -> Duration {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .as_deref()
            .and_then(parse_stat)
            .map_or(Duration::ZERO, |(_, d)| d)
    }

    /// CPU time so far per thread name, live threads only.
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

    /// Per thread id: (ns on a CPU, ns runnable but waiting for a CPU), from `schedstat`.
    fn schedstat(&self) -> HashMap<String, (u64, u64)> {
        let mut out = HashMap::new();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return out;
        };
        for t in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
                continue;
            };
            let v: Vec<u64> = text
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() >= 2 {
                out.insert(t.file_name().to_string_lossy().into_owned(), (v[0], v[1]));
            }
        }
        out
    }

    /// "VmRSS x MB, N threads" for progress lines.
    fn rss_text(&self) -> String {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        format!(
            "server VmRSS {:.0} MB, {} threads",
            kb_field(&s, "VmRSS:").unwrap_or(0) as f64 / 1e3,
            kb_field(&s, "Threads:").unwrap_or(0)
        )
    }

    /// (VmRSS, VmHWM) in kB.
    fn memory_kb(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        (
            kb_field(&s, "VmRSS:").unwrap_or(0),
            kb_field(&s, "VmHWM:").unwrap_or(0),
        )
    }

    /// SIGTERM (SIGKILL after 20 s); returns the WARN/ERROR lines of its log.
    fn stop(mut self) -> Vec<String> {
        self.terminate();
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_string)
            .collect()
    }

    fn terminate(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}

/// An error path that never reaches `stop` still stops the server.
impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// (comm, utime + stime) from a `/proc/.../stat` line.
fn parse_stat(s: &str) -> Option<(String, Duration)> {
    let (head, after) = s.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the comm: state is field 3 of the line; utime 14, stime 15.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((name, Duration::from_micros(ticks * 1_000_000 / hz)))
}

fn thread_cpu_text(
    before: &HashMap<String, Duration>,
    after: &HashMap<String, Duration>,
    wall: Duration,
) -> String {
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
    v.iter()
        .map(|(k, d)| format!("{k} {:.0}%", 100.0 * d.as_secs_f64() / wall.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Threads that lived through both readings (and new ones from 0): "on CPU x s, waiting y s".
fn sched_text(
    before: &HashMap<String, (u64, u64)>,
    after: &HashMap<String, (u64, u64)>,
    wall: Duration,
) -> String {
    let (mut run, mut wait) = (0u64, 0u64);
    for (tid, (r, w)) in after {
        let (r0, w0) = before.get(tid).copied().unwrap_or((0, 0));
        run += r.saturating_sub(r0);
        wait += w.saturating_sub(w0);
    }
    format!(
        "server threads on a CPU {:.2} s, runnable but waiting for a CPU {:.2} s, over {:.1} s",
        run as f64 / 1e9,
        wait as f64 / 1e9,
        wall.as_secs_f64()
    )
}

fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn report_log(lines: &[String]) {
    if lines.is_empty() {
        println!("  server log: no WARN/ERROR lines");
    } else {
        println!(
            "  server log: {} WARN/ERROR lines, first ones:",
            lines.len()
        );
        for l in lines.iter().take(5) {
            println!("    {l}");
        }
    }
}

/// Makes an fMP4 H.264 High-profile sample of testsrc2 with a fixed GOP.
fn ffmpeg_sample(out: &Path, size: &str, seconds: u64, gop: u32, mbit: u64) -> Res<()> {
    let result = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
        .arg("-i")
        .arg(format!("testsrc2=size={size}:rate=25"))
        .args(["-t", &seconds.to_string(), "-c:v", "libx264"])
        .args([
            "-preset",
            "veryfast",
            "-profile:v",
            "high",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-g", &gop.to_string(), "-keyint_min", &gop.to_string()])
        .args(["-sc_threshold", "0", "-b:v", &format!("{mbit}M")])
        .args(["-movflags", "frag_keyframe+empty_moov+default_base_moof"])
        .arg(out)
        .stdin(Stdio::null())
        .output()?;
    if !result.status.success() || !out.exists() {
        return Err(format!("ffmpeg failed: {}", String::from_utf8_lossy(&result.stderr)).into());
    }
    Ok(())
}

/// `profile=High` etc. from ffprobe, for the record (empty when ffprobe is missing).
fn probe(path: &Path) -> String {
    Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("stream=codec_name,profile,width,height,has_b_frames,bit_rate")
        .args(["-of", "default=nw=1"])
        .arg(path)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Frames.

#[derive(Clone, Copy)]
struct Segment {
    number: i64,
    start_us: i64,
    end_us: i64,
}

struct Shot {
    took: Duration,
    status: u16,
    bytes: usize,
    fragment: i64,
    frame_time: String,
}

fn get_frame(client: &reqwest::blocking::Client, base: &str, at_ms: i64) -> Res<Shot> {
    let url = format!("{base}/api/v1/streams/{FRAMES_STREAM}/frame.jpg?at={at_ms}");
    let t = Instant::now();
    let r = client.get(&url).send()?;
    let status = r.status().as_u16();
    let header = |k: &str| {
        r.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let fragment = header("x-tapedeck-fragment").parse().unwrap_or(-1);
    let frame_time = header("x-tapedeck-frame-time");
    let ctype = header("content-type");
    let body = r.bytes()?;
    let took = t.elapsed();
    if status == 200 && (ctype != "image/jpeg" || !body.starts_with(&[0xFF, 0xD8])) {
        return Err(format!(
            "GET {url}: 200 but not a JPEG ({ctype}, {} bytes)",
            body.len()
        )
        .into());
    }
    if status != 200 && status != 503 {
        return Err(format!(
            "GET {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
        .into());
    }
    Ok(Shot {
        took,
        status,
        bytes: body.len(),
        fragment,
        frame_time,
    })
}

/// Latency figures of a set of requests, in ms: (n, p50, p99, max, mean).
fn stats(v: &[Duration]) -> (usize, f64, f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_unstable();
    let mean = if s.is_empty() {
        0.0
    } else {
        s.iter().map(|d| ms(*d)).sum::<f64>() / s.len() as f64
    };
    (
        s.len(),
        ms(pct(&s, 50.0)),
        ms(pct(&s, 99.0)),
        ms(s.last().copied().unwrap_or_default()),
        mean,
    )
}

fn print_stats(label: &str, v: &[Duration]) -> (usize, f64, f64, f64, f64) {
    let st = stats(v);
    println!(
        "  {label:<46} n={:<4} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  mean {:>7.1} ms",
        st.0, st.1, st.2, st.3, st.4
    );
    st
}

/// A random time inside a GOP; GOPs are visited in shuffled rounds, so all are covered evenly.
struct Picker {
    rng: Rng,
    segments: Vec<Segment>,
    order: Vec<usize>,
}

impl Picker {
    fn new(seed: u64, segments: &[Segment]) -> Picker {
        Picker {
            rng: Rng(seed),
            segments: segments.to_vec(),
            order: Vec::new(),
        }
    }

    /// (epoch ms, the GOP's index, frames from the GOP's start).
    fn next(&mut self) -> (i64, usize, i64) {
        if self.order.is_empty() {
            self.order = (0..self.segments.len()).collect();
            self.rng.shuffle(&mut self.order);
        }
        let g = self.order.pop().expect("filled above");
        let s = self.segments[g];
        // Whole ms strictly inside the segment.
        let lo = s.start_us.div_euclid(1000) + 1;
        let hi = (s.end_us - 1).div_euclid(1000);
        let at = self.rng.range(lo, hi.max(lo + 1));
        (at, g, (at * 1000 - s.start_us) / FRAME_US)
    }
}

/// Least squares `y = a + b x`.
fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx == 0.0 {
        return None;
    }
    let b = sxy / sxx;
    Some((my - b * mx, b))
}

type Summary = Vec<(String, String)>;

fn frames_part(args: &Args, work: &Path) -> Res<Option<Summary>> {
    println!(
        "\n== frames: 1080p frame.jpg?at= ==  (load average {})",
        loadavg()
    );
    if !have("ffmpeg") {
        println!(
            "  SKIPPED: ffmpeg is not on PATH; it is needed to make the 1080p H.264 sample \
             (install ffmpeg, or run `-- follow` only)"
        );
        return Ok(None);
    }
    let sample = work.join("frames_1080p_gop2s.mp4");
    let t = Instant::now();
    ffmpeg_sample(&sample, "1920x1080", args.frames_seconds, 50, 6)?;
    let size = std::fs::metadata(&sample)?.len();
    println!(
        "  sample: testsrc2 1920x1080 25 fps, {} s, libx264 veryfast High, 6 Mbit/s, GOP 50 \
         (2 s, closed), {:.1} MB, made in {:.1} s; ffprobe: {}",
        args.frames_seconds,
        size as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        probe(&sample)
    );

    let server = Server::start(work, "frames")?;
    let base = server.url("");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    // Producer time: whole seconds, an hour ago.
    let start_ms = (wall_us() / 1_000_000 - 3600) * 1000;
    let body = std::fs::read(&sample)?;
    let r = client
        .put(format!(
            "{base}/api/v1/streams/{FRAMES_STREAM}/ingest?producer_start={start_ms}"
        ))
        .header("content-type", "video/mp4")
        .body(body)
        .send()?;
    let status = r.status();
    let text = r.text()?;
    if !status.is_success() {
        return Err(format!("upload: HTTP {status}: {text}").into());
    }
    let list: serde_json::Value = client
        .get(format!(
            "{base}/api/v1/streams/{FRAMES_STREAM}/fragments?limit=1000"
        ))
        .send()?
        .json()?;
    let rows = list["fragments"].as_array().cloned().unwrap_or_default();
    let mut segments: Vec<Segment> = Vec::new();
    let mut rec_end = 0;
    for row in &rows {
        let number = row["fragment"]
            .as_i64()
            .ok_or("fragment row without number")?;
        let start_us = row["producer_time_us"]
            .as_i64()
            .ok_or("no producer_time_us")?;
        let end_us = start_us + row["duration_us"].as_i64().unwrap_or(0);
        rec_end = rec_end.max(end_us);
        if row["keyframe"].as_bool() == Some(true) {
            segments.push(Segment {
                number,
                start_us,
                end_us,
            });
        } else if let Some(last) = segments.last_mut() {
            last.end_us = end_us;
        }
    }
    if segments.is_empty() {
        return Err("the uploaded sample has no keyframe fragments".into());
    }
    let cache = tapedeck::config::FramesConfig::default();
    let (rss_up, _) = server.memory_kb();
    println!(
        "  uploaded: {} fragments, {} segments (GOPs), {:.1} s of media; server pid {}, VmRSS \
         {:.0} MB; frames config defaults: max_concurrent_decodes {}, cache_keyframes {}, \
         jpeg_quality {}",
        rows.len(),
        segments.len(),
        (rec_end - segments[0].start_us) as f64 / 1e6,
        server.pid,
        rss_up as f64 / 1e3,
        cache.max_concurrent_decodes,
        cache.cache_keyframes,
        cache.jpeg_quality
    );
    if segments.len() <= cache.cache_keyframes {
        println!(
            "  NOTE: {} GOPs <= cache size {}: the keyframe cycle below will hit the cache on \
             its second pass; use a longer --frames-seconds",
            segments.len(),
            cache.cache_keyframes
        );
    }
    let mut seen: HashSet<(i64, String)> = HashSet::new();
    let mut out: Summary = Vec::new();

    // 1. Keyframes, cycling twice over every GOP (the very first request is reported apart).
    let mut first = None;
    let mut key = Vec::new();
    let mut key_bytes = 0;
    let mut wrong = 0;
    for pass in 0..2 {
        for s in &segments {
            let at = (s.start_us + 999).div_euclid(1000);
            let shot = get_frame(&client, &base, at)?;
            if shot.status != 200 {
                return Err(format!("keyframe at {at}: HTTP {}", shot.status).into());
            }
            if shot.fragment != s.number {
                wrong += 1;
            }
            seen.insert((shot.fragment, shot.frame_time.clone()));
            key_bytes += shot.bytes;
            if first.is_none() && pass == 0 {
                first = Some(shot.took);
            } else {
                key.push(shot.took);
            }
        }
    }
    println!(
        "  first request of the server (cold): {:.1} ms",
        ms(first.unwrap_or_default())
    );
    let k = print_stats("keyframe only (at = segment start), uncached", &key);
    println!(
        "    mean JPEG {:.0} KB; {wrong} answers from another fragment than the segment's",
        key_bytes as f64 / (2 * segments.len()) as f64 / 1e3
    );
    println!("    after it: {}", server.rss_text());

    // 2. Random times over all GOPs, sequential.
    let mut picker = Picker::new(args.seed, &segments);
    let mut random = Vec::new();
    let mut points = Vec::new();
    let mut repeats = 0;
    let mut rbytes = 0;
    for _ in 0..args.requests {
        let (at, _, depth) = picker.next();
        let shot = get_frame(&client, &base, at)?;
        if shot.status != 200 {
            return Err(format!("frame at {at}: HTTP {}", shot.status).into());
        }
        if !seen.insert((shot.fragment, shot.frame_time.clone())) {
            repeats += 1;
        }
        rbytes += shot.bytes;
        points.push((depth as f64, ms(shot.took)));
        random.push(shot.took);
    }
    let r = print_stats("random time over all GOPs, sequential", &random);
    println!(
        "    mean JPEG {:.0} KB; {repeats} of {} answers repeat an earlier picture (at most \
         that many cache hits)",
        rbytes as f64 / random.len().max(1) as f64 / 1e3,
        random.len()
    );
    println!("    after it: {}", server.rss_text());
    let mut shallow = Vec::new();
    let mut deep = Vec::new();
    for (p, d) in points.iter().zip(&random) {
        if p.0 < 25.0 {
            shallow.push(*d);
        } else {
            deep.push(*d);
        }
    }
    let (s_half, d_half) = (stats(&shallow), stats(&deep));
    println!(
        "    by depth into the GOP: frames 0-24 p50 {:.1} ms (n={}), frames 25-49 p50 {:.1} ms \
         (n={})",
        s_half.1, s_half.0, d_half.1, d_half.0
    );
    if let Some((a, b)) = fit(&points) {
        println!(
            "    least-squares fit: latency = {a:.1} ms + {b:.2} ms x (frames from the keyframe)"
        );
    }

    // 3. Cache hits: one time, asked again and again.
    let s = segments[segments.len() / 2];
    let at = (s.start_us + 1_000_000 + 20_000).div_euclid(1000);
    let miss = get_frame(&client, &base, at)?;
    let mut hits = Vec::new();
    for _ in 0..20 {
        let shot = get_frame(&client, &base, at)?;
        if shot.frame_time != miss.frame_time {
            return Err("the same 'at' gave another picture".into());
        }
        hits.push(shot.took);
    }
    println!(
        "  same time asked 21 times (frame 25 of a GOP): first {:.1} ms (decode)",
        ms(miss.took)
    );
    let h = print_stats("  the 20 repeats (cache hits: JPEG encode only)", &hits);

    // 4. Concurrent clients for a fixed time.
    let cpu0 = server.cpu();
    let th0 = server.thread_cpu();
    let ss0 = server.schedstat();
    let own0 = own_cpu();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(args.concurrent_seconds);
    let mut handles = Vec::new();
    for c in 0..args.clients {
        let base = base.clone();
        let segs = segments.clone();
        let seed = args.seed.wrapping_mul(1000) + c as u64 + 7;
        handles.push(std::thread::spawn(
            move || -> Res<(Vec<Duration>, usize)> {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()?;
                let mut picker = Picker::new(seed, &segs);
                let mut lat = Vec::new();
                let mut busy = 0;
                while Instant::now() < until {
                    let (at, _, _) = picker.next();
                    let shot = get_frame(&client, &base, at)?;
                    if shot.status == 200 {
                        lat.push(shot.took);
                    } else {
                        busy += 1;
                    }
                }
                Ok((lat, busy))
            },
        ));
    }
    let mut all = Vec::new();
    let mut busy = 0;
    for hd in handles {
        let (lat, b) = hd.join().map_err(|_| "client thread panicked")??;
        all.extend(lat);
        busy += b;
    }
    let wall = t0.elapsed();
    let cpu = server.cpu().saturating_sub(cpu0);
    let th1 = server.thread_cpu();
    let ss1 = server.schedstat();
    let own = own_cpu().saturating_sub(own0);
    let fps = all.len() as f64 / wall.as_secs_f64();
    println!(
        "  {} concurrent clients for {:.1} s: {} frames, {fps:.2} frames/s ({busy} answered 503); \
         1 client sequential above: {:.2} frames/s",
        args.clients,
        wall.as_secs_f64(),
        all.len(),
        1000.0 / r.4.max(1e-9)
    );
    let c = print_stats("  latency with concurrent clients", &all);
    println!(
        "    server CPU {:.0}% of one core ({}); bench client {:.0}%",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        thread_cpu_text(&th0, &th1, wall),
        100.0 * own.as_secs_f64() / wall.as_secs_f64()
    );
    println!("    {}", sched_text(&ss0, &ss1, wall));
    let (rss, hwm) = server.memory_kb();
    println!(
        "  server VmRSS {:.0} MB, VmHWM {:.0} MB at the end; load average {}",
        rss as f64 / 1e3,
        hwm as f64 / 1e3,
        loadavg()
    );
    report_log(&server.stop());

    let verdict = if r.1 < ms(FRAME_TARGET) {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "  target: 1080p frame-at-time median < 150 ms: {verdict} (random-time p50 {:.1} ms)",
        r.1
    );
    out.push((
        "frame.jpg random time, p50 / p99 / max".into(),
        format!(
            "{:.1} / {:.1} / {:.1} ms  (target p50 < 150 ms: {verdict})",
            r.1, r.2, r.3
        ),
    ));
    out.push((
        "frame.jpg keyframe only (uncached), p50 / p99 / max".into(),
        format!("{:.1} / {:.1} / {:.1} ms", k.1, k.2, k.3),
    ));
    out.push((
        "frame.jpg cache hit, p50 / p99".into(),
        format!("{:.1} / {:.1} ms", h.1, h.2),
    ));
    out.push((
        format!("frame.jpg {} clients: frames/s, p50 / p99", args.clients),
        format!("{fps:.2} frames/s, {:.1} / {:.1} ms", c.1, c.2),
    ));
    Ok(Some(out))
}

// ---------------------------------------------------------------------------------------------
// Follow feed: the media a live producer loops.

struct FollowMedia {
    source: String,
    init: Bytes,
    facts: InitFacts,
    frags: Vec<(Bytes, u64)>,
    /// Per track: ticks one pass over all source fragments covers.
    loop_ticks: HashMap<u32, u64>,
    frag_duration: Duration,
}

impl FollowMedia {
    fn load(work: &Path, args: &Args) -> Res<FollowMedia> {
        let generated = work.join("follow_1080p_gop1s.mp4");
        let (path, source) = if !args.force_sample && have("ffmpeg") {
            ffmpeg_sample(&generated, "1920x1080", 10, 25, args.follow_mbit)?;
            (
                generated,
                format!(
                    "ffmpeg testsrc2 1920x1080 25 fps, libx264 veryfast High, {} Mbit/s, 1 s GOP, \
                     10 s looped",
                    args.follow_mbit
                ),
            )
        } else {
            if !args.force_sample {
                println!(
                    "note: no ffmpeg; the follow feed uses {SAMPLE} (2 s fragments, low bitrate)"
                );
            }
            (
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SAMPLE),
                SAMPLE.to_string(),
            )
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
                Event::Fragment(f) => frags.push((f.bytes, f.stream_offset)),
            }
        }
        let (init, facts) = init.ok_or("no init segment in the media file")?;
        if frags.is_empty() {
            return Err("no fragments in the media file".into());
        }
        let mut span: HashMap<u32, (u64, u64)> = HashMap::new();
        let mut total_us = 0i64;
        for (bytes, offset) in &frags {
            let ff = fmp4::fragment_facts_at(&facts, bytes, *offset)?;
            total_us += ff.duration_us();
            for t in &ff.tracks {
                let e = span.entry(t.track_id).or_insert((u64::MAX, 0));
                e.0 = e.0.min(t.base_media_decode_time);
                e.1 = e.1.max(t.base_media_decode_time + t.duration);
            }
        }
        let loop_ticks = span.into_iter().map(|(k, (a, b))| (k, b - a)).collect();
        let frag_duration = Duration::from_micros((total_us / frags.len() as i64).max(1) as u64);
        Ok(FollowMedia {
            source,
            init,
            facts,
            frags,
            loop_ticks,
            frag_duration,
        })
    }

    /// The k-th fragment of the endless loop, tfdt moved forward by whole passes, as one chunk.
    fn chunk(&self, k: usize) -> Res<Bytes> {
        let (src, offset) = &self.frags[k % self.frags.len()];
        let lap = (k / self.frags.len()) as u64;
        let bytes = fmp4::rewrite_fragment(&self.facts, src, *offset, &|tr, old| {
            old + lap * self.loop_ticks.get(&tr).copied().unwrap_or(0)
        })?;
        Ok(chunk(&bytes))
    }
}

fn chunk(data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 12);
    b.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    b.extend_from_slice(data);
    b.extend_from_slice(b"\r\n");
    b.freeze()
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 response bodies, chunked or not, read as they arrive.

struct Body {
    r: BufReader<OwnedReadHalf>,
    chunked: bool,
    /// Bytes left in the current chunk (chunked) or the body (sized; u64::MAX: to the close).
    left: u64,
    /// The CRLF after a finished chunk is still to be read.
    crlf: bool,
    done: bool,
}

impl Body {
    /// Reads the status line and headers.
    async fn open(r: OwnedReadHalf) -> Res<(u16, Body)> {
        let mut r = BufReader::with_capacity(256 * 1024, r);
        let mut status = String::new();
        r.read_line(&mut status).await?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line '{}'", status.trim()))?;
        let mut chunked = false;
        let mut length = u64::MAX;
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
                    length = v.parse().unwrap_or(u64::MAX);
                }
            }
        }
        let left = if chunked { 0 } else { length };
        Ok((
            code,
            Body {
                r,
                chunked,
                left,
                crlf: false,
                done: length == 0 && !chunked,
            },
        ))
    }

    /// Some body bytes into `buf`; 0 at the end of the body.
    async fn read(&mut self, buf: &mut [u8]) -> Res<usize> {
        if self.done {
            return Ok(0);
        }
        if self.chunked {
            if self.crlf {
                let mut crlf = [0u8; 2];
                self.r.read_exact(&mut crlf).await?;
                if &crlf != b"\r\n" {
                    return Err("chunk not followed by CRLF".into());
                }
                self.crlf = false;
            }
            if self.left == 0 {
                let mut line = String::new();
                if self.r.read_line(&mut line).await? == 0 {
                    return Err("connection closed inside the chunked body".into());
                }
                let hex = line.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad chunk size line '{}'", line.trim()))?;
                if size == 0 {
                    loop {
                        let mut t = String::new();
                        if self.r.read_line(&mut t).await? == 0 || t.trim_end().is_empty() {
                            break;
                        }
                    }
                    self.done = true;
                    return Ok(0);
                }
                self.left = size;
            }
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.r.read(&mut buf[..want]).await?;
        if n == 0 {
            if !self.chunked && self.left == u64::MAX {
                self.done = true;
                return Ok(0);
            }
            return Err("connection closed inside the body".into());
        }
        if self.left != u64::MAX {
            self.left -= n as u64;
        }
        if self.chunked && self.left == 0 {
            self.crlf = true;
        }
        if !self.chunked && self.left == 0 {
            self.done = true;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// The live producer.

#[derive(Default)]
struct ProducerLog {
    /// fragment number -> (when its `persisted` line was parsed, server_time_us).
    acks: HashMap<i64, (Instant, i64)>,
    last: i64,
    errors: Vec<String>,
    ended: bool,
}

struct ProducerShared {
    log: Mutex<ProducerLog>,
    stop: AtomicBool,
}

impl ProducerShared {
    fn acked(&self) -> (usize, i64) {
        let l = self.log.lock().expect("producer log");
        (l.acks.len(), l.last)
    }
}

async fn read_acks(r: OwnedReadHalf, shared: Arc<ProducerShared>) {
    let fail = |e: String| shared.log.lock().expect("producer log").errors.push(e);
    let mut body = match Body::open(r).await {
        Ok((200, b)) => b,
        Ok((code, _)) => return fail(format!("upload answered HTTP {code}")),
        Err(e) => return fail(e.to_string()),
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match body.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => return fail(e.to_string()),
        };
        let now = Instant::now();
        pending.extend_from_slice(&buf[..n]);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
                fail(format!("bad ack line {}", String::from_utf8_lossy(&line)));
                continue;
            };
            let mut log = shared.log.lock().expect("producer log");
            match v["event"].as_str() {
                Some("persisted") => {
                    let n = v["fragment"].as_i64().unwrap_or(-1);
                    log.acks
                        .insert(n, (now, v["server_time_us"].as_i64().unwrap_or(0)));
                    log.last = log.last.max(n);
                }
                Some("session_ended") => log.ended = true,
                Some("error") => log.errors.push(v.to_string()),
                _ => {}
            }
        }
    }
}

/// Uploads fragment k at start + k x duration until told to stop; then ends the upload and waits
/// for `session_ended`.
async fn produce(port: u16, media: Arc<FollowMedia>, shared: Arc<ProducerShared>) {
    let fail = |e: String| shared.log.lock().expect("producer log").errors.push(e);
    let tcp = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(t) => t,
        Err(e) => return fail(format!("connect: {e}")),
    };
    let _ = tcp.set_nodelay(true);
    let (r, mut w) = tcp.into_split();
    let head = format!(
        "PUT /api/v1/streams/{FOLLOW_STREAM}/ingest HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: video/mp4\r\nAccept: application/x-ndjson\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = w.write_all(head.as_bytes()).await {
        return fail(format!("write: {e}"));
    }
    if let Err(e) = w.write_all(&chunk(&media.init)).await {
        return fail(format!("write: {e}"));
    }
    let reader = tokio::spawn(read_acks(r, shared.clone()));
    let start = tokio::time::Instant::now();
    for k in 0.. {
        let data = match media.chunk(k) {
            Ok(d) => d,
            Err(e) => return fail(format!("fragment {k}: {e}")),
        };
        tokio::time::sleep_until(start + media.frag_duration * k as u32).await;
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if let Err(e) = w.write_all(&data).await {
            return fail(format!("write: {e}"));
        }
    }
    if let Err(e) = w.write_all(b"0\r\n\r\n").await {
        return fail(format!("write end: {e}"));
    }
    if tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .is_err()
    {
        fail("no session_ended within 60 s of the end of the upload".into());
    }
}

// ---------------------------------------------------------------------------------------------
// Followers.

#[derive(Default)]
struct FollowerLog {
    /// (fragment, end of one of its mdat boxes); the last per fragment is its last byte.
    ends: Vec<(i64, Instant)>,
    markers: Vec<i64>,
    bytes: u64,
    error: Option<String>,
}

struct FollowShared {
    ready: AtomicUsize,
    /// The last fragment to wait for (i64::MAX until the producer has finished).
    last: AtomicI64,
    give_up: AtomicBool,
}

async fn follow(port: u16, shared: Arc<FollowShared>) -> FollowerLog {
    let mut log = FollowerLog::default();
    if let Err(e) = follow_inner(port, &shared, &mut log).await {
        log.error = Some(e.to_string());
    }
    log
}

async fn follow_inner(port: u16, shared: &FollowShared, log: &mut FollowerLog) -> Res<()> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let (r, mut w) = tcp.into_split();
    w.write_all(
        format!(
            "GET /api/v1/streams/{FOLLOW_STREAM}/media?start=now HTTP/1.1\r\n\
             Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let (code, mut body) = Body::open(r).await?;
    if code != 200 {
        return Err(format!("media answered HTTP {code}").into());
    }
    let mut walker = box_walker::BoxWalker::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut ready = false;
    loop {
        match tokio::time::timeout(Duration::from_millis(250), body.read(&mut buf)).await {
            Ok(Ok(0)) => return Err("the feed ended".into()),
            Ok(Ok(n)) => {
                let now = Instant::now();
                log.bytes += n as u64;
                walker.feed(&buf[..n], now, &mut log.ends, &mut log.markers)?;
                if !ready && !log.ends.is_empty() {
                    ready = true;
                    shared.ready.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {} // no data for a while: look at the flags
        }
        let last = shared.last.load(Ordering::SeqCst);
        if log.ends.last().is_some_and(|e| e.0 >= last) || shared.give_up.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
}

/// One `/events` consumer: when each fragment's event ended (its blank line arrived).
async fn events_consumer(port: u16, shared: Arc<FollowShared>) -> FollowerLog {
    let mut log = FollowerLog::default();
    if let Err(e) = events_inner(port, &shared, &mut log).await {
        log.error = Some(e.to_string());
    }
    log
}

async fn events_inner(port: u16, shared: &FollowShared, log: &mut FollowerLog) -> Res<()> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let (r, mut w) = tcp.into_split();
    w.write_all(
        format!(
            "GET /api/v1/streams/{FOLLOW_STREAM}/events HTTP/1.1\r\n\
             Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let (code, mut body) = Body::open(r).await?;
    if code != 200 {
        return Err(format!("events answered HTTP {code}").into());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut text: Vec<u8> = Vec::new();
    let mut ready = false;
    loop {
        match tokio::time::timeout(Duration::from_millis(250), body.read(&mut buf)).await {
            Ok(Ok(0)) => return Err("the event stream ended".into()),
            Ok(Ok(n)) => {
                let now = Instant::now();
                log.bytes += n as u64;
                text.extend_from_slice(&buf[..n]);
                while let Some(end) = text.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = text.drain(..end + 2).collect();
                    let event = String::from_utf8_lossy(&event);
                    if !event.lines().any(|l| l == "event: fragment") {
                        continue;
                    }
                    let Some(n) = event
                        .lines()
                        .find_map(|l| l.strip_prefix("id: "))
                        .and_then(|v| v.trim().parse::<i64>().ok())
                    else {
                        return Err(format!("a fragment event without an id: {event:?}").into());
                    };
                    log.ends.push((n, now));
                    log.markers.push(n);
                    if !ready {
                        ready = true;
                        shared.ready.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
        }
        let last = shared.last.load(Ordering::SeqCst);
        if log.ends.last().is_some_and(|e| e.0 >= last) || shared.give_up.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
}

/// Raises the soft open-files limit to the hard one: 1,000 followers and as many event
/// consumers are 2,000 sockets in this process (and as many in the server, which does the same
/// for itself only if its environment allows; the soft limit is inherited).
fn raise_nofile() -> String {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return "RLIMIT_NOFILE unreadable".into();
        }
        let before = l.rlim_cur;
        l.rlim_cur = l.rlim_max;
        let ok = libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0;
        format!(
            "RLIMIT_NOFILE soft {before} -> {} (hard {}){}",
            l.rlim_cur,
            l.rlim_max,
            if ok { "" } else { " FAILED" }
        )
    }
}

/// Per consumer kind: latencies (µs) of the counted (fragment, consumer) pairs, pairs missing,
/// consumers that got every counted fragment.
fn consumer_latencies(
    logs: &[FollowerLog],
    measured: &[i64],
    acks: &HashMap<i64, (Instant, i64)>,
) -> (Vec<i64>, usize, usize) {
    let mut lat = Vec::new();
    let mut missing = 0;
    let mut complete = 0;
    for l in logs {
        let mut m: HashMap<i64, Instant> = HashMap::new();
        for (n, t) in &l.ends {
            let e = m.entry(*n).or_insert(*t);
            *e = (*e).max(*t);
        }
        let mut all = l.error.is_none();
        for n in measured {
            let Some(&(ack, _)) = acks.get(n) else {
                continue;
            };
            match m.get(n) {
                Some(t) => lat.push(if *t >= ack {
                    t.duration_since(ack).as_micros() as i64
                } else {
                    -(ack.duration_since(*t).as_micros() as i64)
                }),
                None => {
                    missing += 1;
                    all = false;
                }
            }
        }
        complete += usize::from(all);
    }
    lat.sort_unstable();
    (lat, missing, complete)
}

fn follow_part(
    work: &Path,
    media: &Arc<FollowMedia>,
    followers: usize,
    event_consumers: usize,
    seconds: u64,
) -> Res<Summary> {
    println!(
        "\n== follow feed: {followers} followers of one live stream ==  (load average {})",
        loadavg()
    );
    let total: usize = media.frags.iter().map(|f| f.0.len()).sum();
    println!(
        "  producer: {}",
        common::describe_media(&media.source, media.frags.len(), media.frag_duration, total)
    );
    println!("  {}", raise_nofile());
    // The default per-stream feed limits (256 followers) are below what this bench opens.
    let limits = format!(
        "[limits]\nmax_follow_connections_per_stream = {}\nmax_event_connections_per_stream = {}\n",
        followers.max(1),
        event_consumers.max(1)
    );
    let server = Server::start_with(work, &format!("follow-{followers}"), Some(&limits))?;
    let port = server.port;
    println!("  server pid {}", server.pid);
    let pshared = Arc::new(ProducerShared {
        log: Mutex::new(ProducerLog::default()),
        stop: AtomicBool::new(false),
    });
    // The producer gets its own thread and runtime, so its ack times are not delayed behind the
    // followers' work.
    let producer = {
        let (media, shared) = (media.clone(), pshared.clone());
        std::thread::Builder::new()
            .name("producer".into())
            .spawn(move || -> Res<()> {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(produce(port, media, shared));
                Ok(())
            })?
    };
    let deadline = Instant::now() + Duration::from_secs(30) + media.frag_duration * 4;
    while pshared.acked().0 < PRODUCER_LEAD {
        if Instant::now() > deadline || !pshared.log.lock().expect("log").errors.is_empty() {
            pshared.stop.store(true, Ordering::SeqCst);
            let errs = pshared.log.lock().expect("log").errors.clone();
            return Err(format!("the producer got no acks: {errs:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (rss_before, hwm_before) = server.memory_kb();

    let fshared = Arc::new(FollowShared {
        ready: AtomicUsize::new(0),
        last: AtomicI64::new(i64::MAX),
        give_up: AtomicBool::new(false),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let t_connect = Instant::now();
    let tasks: Vec<_> = (0..followers)
        .map(|_| rt.spawn(follow(port, fshared.clone())))
        .collect();
    let event_tasks: Vec<_> = (0..event_consumers)
        .map(|_| rt.spawn(events_consumer(port, fshared.clone())))
        .collect();
    let ready_deadline = Instant::now() + Duration::from_secs(60);
    while fshared.ready.load(Ordering::SeqCst) < followers + event_consumers {
        if Instant::now() > ready_deadline {
            fshared.give_up.store(true, Ordering::SeqCst);
            pshared.stop.store(true, Ordering::SeqCst);
            return Err(format!(
                "only {} of {followers} followers and {event_consumers} event consumers got a \
                 first fragment within 60 s",
                fshared.ready.load(Ordering::SeqCst)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let caught_up = t_connect.elapsed();
    let measure_from = pshared.acked().1 + 1;
    let cpu0 = server.cpu();
    let th0 = server.thread_cpu();
    let ss0 = server.schedstat();
    let own0 = own_cpu();
    let t0 = Instant::now();
    let mut rss_peak = 0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        rss_peak = rss_peak.max(server.memory_kb().0);
        std::thread::sleep(Duration::from_millis(250));
    }
    pshared.stop.store(true, Ordering::SeqCst);
    producer.join().map_err(|_| "producer thread panicked")??;
    let wall = t0.elapsed();
    let cpu = server.cpu().saturating_sub(cpu0);
    let th1 = server.thread_cpu();
    let ss1 = server.schedstat();
    let own = own_cpu().saturating_sub(own0);
    let plog = std::mem::take(&mut *pshared.log.lock().expect("log"));
    fshared.last.store(plog.last, Ordering::SeqCst);
    // Followers get the last fragment within seconds; give up after 20 s.
    let give_up_at = Instant::now() + Duration::from_secs(20);
    while tasks.iter().chain(&event_tasks).any(|t| !t.is_finished()) && Instant::now() < give_up_at
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (rss_end, hwm_end) = server.memory_kb();
    fshared.give_up.store(true, Ordering::SeqCst);
    let logs: Vec<FollowerLog> = tasks
        .into_iter()
        .map(|t| rt.block_on(t).unwrap_or_default())
        .collect();
    let event_logs: Vec<FollowerLog> = event_tasks
        .into_iter()
        .map(|t| rt.block_on(t).unwrap_or_default())
        .collect();
    drop(rt);
    let log_lines = server.stop();

    // (fragment, follower) pairs.
    let measured: Vec<i64> = (measure_from..=plog.last).collect();
    let mut lat_us: Vec<i64> = Vec::new();
    let mut durable_us: Vec<i64> = Vec::new();
    let mut first_per_frag: Vec<i64> = Vec::new();
    let mut last_per_frag: Vec<i64> = Vec::new();
    let mut missing = 0usize;
    let mut no_ack = 0usize;
    let base_instant = t_connect;
    let base_wall = wall_us() - base_instant.elapsed().as_micros() as i64;
    let ends: Vec<HashMap<i64, Instant>> = logs
        .iter()
        .map(|l| {
            let mut m: HashMap<i64, Instant> = HashMap::new();
            for (n, t) in &l.ends {
                let e = m.entry(*n).or_insert(*t);
                *e = (*e).max(*t);
            }
            m
        })
        .collect();
    let signed = |a: Instant, b: Instant| -> i64 {
        if a >= b {
            a.duration_since(b).as_micros() as i64
        } else {
            -(b.duration_since(a).as_micros() as i64)
        }
    };
    for n in &measured {
        let Some(&(ack, server_us)) = plog.acks.get(n) else {
            no_ack += 1;
            continue;
        };
        let mut per: Vec<i64> = Vec::new();
        for e in &ends {
            match e.get(n) {
                Some(t) => {
                    let l = signed(*t, ack);
                    per.push(l);
                    // Wall clock of the follower's moment, from the same monotonic base.
                    let wall_at = base_wall + signed(*t, base_instant);
                    durable_us.push(wall_at - server_us);
                }
                None => missing += 1,
            }
        }
        if let (Some(lo), Some(hi)) = (per.iter().min(), per.iter().max()) {
            first_per_frag.push(*lo);
            last_per_frag.push(*hi);
        }
        lat_us.extend(per);
    }
    lat_us.sort_unstable();
    durable_us.sort_unstable();
    first_per_frag.sort_unstable();
    last_per_frag.sort_unstable();
    // Order: each follower's markers go up by one.
    let mut disorder = 0;
    for l in &logs {
        for w in l.markers.windows(2) {
            if w[1] != w[0] + 1 {
                disorder += 1;
            }
        }
    }
    let errors: Vec<&String> = logs.iter().filter_map(|l| l.error.as_ref()).collect();
    let bytes: u64 = logs.iter().map(|l| l.bytes).sum();
    let f = |us: i64| us as f64 / 1e3;
    let negative = lat_us.iter().filter(|&&v| v < 0).count();
    let (p50, p99, max) = (
        pct(&lat_us, 50.0),
        pct(&lat_us, 99.0),
        lat_us.last().copied().unwrap_or(0),
    );
    println!(
        "  {followers} followers caught up (first fragment each) {:.0} ms after connecting; \
         measured fragments {}..={} ({}) over {:.1} s",
        ms(caught_up),
        measure_from,
        plog.last,
        measured.len(),
        wall.as_secs_f64()
    );
    println!(
        "  ack line at producer -> last byte at follower: n={} p50 {:.1} ms  p99 {:.1} ms  max \
         {:.1} ms  min {:.1} ms ({negative} before the ack line)",
        lat_us.len(),
        f(p50),
        f(p99),
        f(max),
        f(lat_us.first().copied().unwrap_or(0))
    );
    println!(
        "  durable (ack server_time_us) -> last byte at follower: p50 {:.1} ms  p99 {:.1} ms  max \
         {:.1} ms",
        f(pct(&durable_us, 50.0)),
        f(pct(&durable_us, 99.0)),
        f(durable_us.last().copied().unwrap_or(0))
    );
    println!(
        "  per fragment, first follower: p50 {:.1} ms, max {:.1} ms; last follower: p50 {:.1} \
         ms, p99 {:.1} ms, max {:.1} ms",
        f(pct(&first_per_frag, 50.0)),
        f(first_per_frag.last().copied().unwrap_or(0)),
        f(pct(&last_per_frag, 50.0)),
        f(pct(&last_per_frag, 99.0)),
        f(last_per_frag.last().copied().unwrap_or(0))
    );
    println!(
        "  delivered {:.1} MB to followers ({:.1} MB/s over the run); {missing} (fragment, \
         follower) pairs missing, {no_ack} fragments without an ack, {disorder} out-of-order \
         markers, {} follower errors",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / (t_connect.elapsed().as_secs_f64()),
        errors.len()
    );
    for e in errors.iter().take(3) {
        println!("    follower error: {e}");
    }
    if !plog.errors.is_empty() || !plog.ended {
        println!(
            "  PROBLEM: producer errors {:?}, session_ended {}",
            plog.errors, plog.ended
        );
    }
    println!(
        "  server CPU {:.0}% of one core ({}); bench client {:.0}%",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        thread_cpu_text(&th0, &th1, wall),
        100.0 * own.as_secs_f64() / wall.as_secs_f64()
    );
    println!("  {}", sched_text(&ss0, &ss1, wall));
    println!(
        "  server RSS: before followers VmRSS {:.1} MB (VmHWM {:.1}); peak VmRSS during {:.1} MB; \
         at the end VmRSS {:.1} MB, VmHWM {:.1} MB",
        rss_before as f64 / 1e3,
        hwm_before as f64 / 1e3,
        rss_peak as f64 / 1e3,
        rss_end as f64 / 1e3,
        hwm_end as f64 / 1e3
    );
    let (_, _, complete_followers) = consumer_latencies(&logs, &measured, &plog.acks);
    println!("  followers that got every counted fragment: {complete_followers} of {followers}");
    let mut events_line = None;
    if event_consumers > 0 {
        let (ev, ev_missing, ev_complete) = consumer_latencies(&event_logs, &measured, &plog.acks);
        let ev_errors: Vec<&String> = event_logs.iter().filter_map(|l| l.error.as_ref()).collect();
        println!(
            "  ack line at producer -> end of the fragment event at {event_consumers} event \
             consumers: n={} p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; {ev_missing} pairs \
             missing; every counted fragment at {ev_complete} of {event_consumers}; {} errors",
            ev.len(),
            f(pct(&ev, 50.0)),
            f(pct(&ev, 99.0)),
            f(ev.last().copied().unwrap_or(0)),
            ev_errors.len()
        );
        for e in ev_errors.iter().take(3) {
            println!("    event consumer error: {e}");
        }
        events_line = Some((
            format!(
                "events, {event_consumers} consumers beside them: ack -> event p50 / p99 / max"
            ),
            format!(
                "{:.1} / {:.1} / {:.1} ms; complete {ev_complete} of {event_consumers}",
                f(pct(&ev, 50.0)),
                f(pct(&ev, 99.0)),
                f(ev.last().copied().unwrap_or(0))
            ),
        ));
    }
    report_log(&log_lines);
    let complete = missing == 0 && no_ack == 0 && errors.is_empty() && !lat_us.is_empty();
    let verdict = match (p99 < FOLLOW_TARGET_US, complete) {
        _ if followers != 100 && followers != 1000 => {
            "n/a, the targets are for 100 (issue 5) and 1,000 (issue 15) followers"
        }
        (true, true) => "met",
        (false, _) => "MISSED",
        (true, false) => "not shown (incomplete run)",
    };
    println!(
        "  target: p99 < 50 ms with 100 / 1,000 followers: {verdict} (p99 {:.1} ms with \
         {followers}); load average {}",
        f(p99),
        loadavg()
    );
    let mut out = vec![
        (
            format!("follow feed, {followers} followers: ack -> last byte p50 / p99 / max"),
            format!(
                "{:.1} / {:.1} / {:.1} ms  (target p99 < 50 ms: {verdict})",
                f(p50),
                f(p99),
                f(max)
            ),
        ),
        (
            format!("follow feed, {followers} followers: server CPU, RSS before / end"),
            format!(
                "{:.0}% of a core, VmRSS {:.1} / {:.1} MB (VmHWM {:.1} MB)",
                100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
                rss_before as f64 / 1e3,
                rss_end as f64 / 1e3,
                hwm_end as f64 / 1e3
            ),
        ),
    ];
    out.extend(events_line);
    Ok(out)
}
