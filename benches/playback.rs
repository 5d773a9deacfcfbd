//! Playback benchmark against the real server binary on loopback (see BENCHMARKS.md).
//!
//! ```text
//! cargo bench --bench playback
//! cargo bench --bench playback -- [--days 30] [--requests 200] [--wrk-seconds 10] [--rounds 2]
//!     [--connections 32] [--wrk-threads 2] [--segments 20] [--nginx-workers auto] [--seed 1]
//!     [--no-wrk] [--check] [--keep] [--explain] [--recent-segments] [--playlist-only]
//! ```
//! `--check` runs `tapedeck check` on the generated data dir; `--keep` leaves the temp dir (with
//! the data dir, configs and logs) in place for inspection; `--explain` prints the SQLite plans
//! and timings of the two index reads that dominate playback (see `explain`);
//! `--recent-segments` takes the wrk segments from the newest hour instead of the whole archive.
//!
//! 1. Builds an archive: the server ingests `samples/h264_aac_gop2s.mp4` once into stream
//!    `bench` (so the init, session, file and fragment rows are real), then stops. The bench then
//!    adds `days` × 43,200 fragment rows of 2 s (one session per day, 60 s gap between days)
//!    directly into `tapedeck.db` in one transaction, continuing the stream's numbering, segment
//!    and discontinuity counters, spans and totals the way the writer does. Rows point at copies
//!    of the real stored fragments: one `.frag` file per day holding the sample's fragments, rows
//!    cycling over their offsets. The newest fragment ends one hour before the bench started, so
//!    every window is closed (VOD).
//! 2. Restarts the server on that data dir and times, sequentially over one keep-alive
//!    connection, `archive.m3u8` and `timeline` for random 1-hour windows (plus a 30-day timeline
//!    and a 24-hour playlist for scale). Each kind gets a short unrecorded warm-up first.
//! 3. Fetches random segments once, writes the same bytes under the same URL paths into a
//!    directory served by nginx (started here from a generated config), and runs `wrk` against
//!    tapedeck and nginx in alternating rounds with a Lua script rotating over the same paths.
//!    Skipped, saying why, when `nginx` or `wrk` is not installed.
//! 4. Archive playlist cache (issue 15): one closed 1-hour `archive.m3u8` asked for again and
//!    again (the same URL, so every request after the first is a cache hit), beside nginx
//!    serving the same bytes as a static file under the same path (nginx ignores the query),
//!    alternating, same wrk settings; prints both rates and their ratio per round and the
//!    median ratio. `--playlist-only` runs just this part after building the archive.
//!
//! Everything listens on 127.0.0.1 only; the server and nginx are stopped at the end. MB = 10^6
//! bytes.

#[path = "common/mod.rs"]
mod common;

use rusqlite::{params, Connection};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SAMPLE: &str = "samples/h264_aac_gop2s.mp4";
const STREAM: &str = "bench";
const FRAG_US: i64 = 2_000_000;
const FRAGS_PER_DAY: i64 = 86_400_000_000 / FRAG_US;
/// Producer-time gap between two days' sessions: over the 0.5 s span threshold, so each day is
/// its own span and starts a discontinuity.
const SESSION_GAP_US: i64 = 60_000_000;
const HOUR_US: i64 = 3_600_000_000;
const WARMUP: usize = 10;

use common::BoxError;
type Res<T> = Result<T, BoxError>;

struct Args {
    days: i64,
    requests: usize,
    wrk_seconds: u64,
    rounds: usize,
    connections: usize,
    wrk_threads: usize,
    segments: usize,
    nginx_workers: String,
    seed: u64,
    wrk: bool,
    check: bool,
    keep: bool,
    explain: bool,
    recent: bool,
    playlist_only: bool,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        days: 30,
        requests: 200,
        wrk_seconds: 10,
        rounds: 2,
        connections: 32,
        wrk_threads: 2,
        segments: 20,
        nginx_workers: "auto".into(),
        seed: 1,
        wrk: true,
        check: false,
        keep: false,
        explain: false,
        recent: false,
        playlist_only: false,
    };
    let mut it = std::env::args().skip(1);
    fn num(v: Option<String>, flag: &str, lo: u64, hi: u64) -> Res<u64> {
        let n = v
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<u64>()
            .map_err(|e| format!("{flag}: {e}"))?;
        if n < lo || n > hi {
            return Err(format!("{flag} must be {lo}..={hi}").into());
        }
        Ok(n)
    }
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--days" => a.days = num(it.next(), "--days", 1, 60)? as i64,
            "--requests" => a.requests = num(it.next(), "--requests", 1, 5000)? as usize,
            "--wrk-seconds" => a.wrk_seconds = num(it.next(), "--wrk-seconds", 1, 120)?,
            "--rounds" => a.rounds = num(it.next(), "--rounds", 1, 5)? as usize,
            "--connections" => a.connections = num(it.next(), "--connections", 1, 512)? as usize,
            "--wrk-threads" => a.wrk_threads = num(it.next(), "--wrk-threads", 1, 16)? as usize,
            "--segments" => a.segments = num(it.next(), "--segments", 1, 1000)? as usize,
            "--nginx-workers" => {
                let v = it.next().ok_or("--nginx-workers needs a value")?;
                if v != "auto" && !v.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n)) {
                    return Err("--nginx-workers must be auto or 1..=64".into());
                }
                a.nginx_workers = v;
            }
            "--seed" => a.seed = num(it.next(), "--seed", 0, u64::MAX)?,
            "--no-wrk" => a.wrk = false,
            "--check" => a.check = true,
            "--keep" => a.keep = true,
            "--explain" => a.explain = true,
            "--recent-segments" => a.recent = true,
            "--playlist-only" => a.playlist_only = true,
            other => {
                return Err(format!(
                    "unknown argument '{other}'; usage: [--days N] [--requests N] \
                     [--wrk-seconds S] [--rounds R] [--connections C] [--wrk-threads T] \
                     [--segments N] [--nginx-workers auto|N] [--seed N] [--no-wrk] [--check] [--keep] [--explain] [--recent-segments] [--playlist-only]"
                )
                .into())
            }
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("playback bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("playback bench failed: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res<()> {
    let work = tempfile::Builder::new()
        .prefix("tapedeck-playback-")
        .tempdir()?;
    // nginx workers may run as another user (nobody / www-data): let them reach their root.
    set_mode(work.path(), 0o755)?;
    print_machine(work.path());
    let data = work.path().join("data");
    let layout = Layout::new(args.days);
    println!(
        "archive: {} days x {FRAGS_PER_DAY} fragments of 2 s = {} rows, one session per day; \
         {} .. {} (UTC, producer time)",
        args.days,
        args.days * FRAGS_PER_DAY,
        utc(layout.gen_start_us),
        utc(layout.gen_end_us)
    );

    // 1. A real ingest of the sample, then the generated rows.
    let server = Server::start(&data, work.path(), "ingest")?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    ingest_sample(&client, &server, &layout, args.days)?;
    report_log("ingest server", &server.stop());

    let t = Instant::now();
    let gen = generate(&data, &layout, args.days)?;
    let db_mb = std::fs::metadata(data.join("tapedeck.db"))?.len() as f64 / 1e6;
    println!(
        "generated {} fragment rows, {} sessions, {} files, {} spans in {:.1} s; tapedeck.db is \
         {db_mb:.0} MB; the stream now has {} fragments (numbers {}..={}), {:.1} GB indexed",
        gen.rows,
        args.days,
        args.days,
        args.days,
        t.elapsed().as_secs_f64(),
        gen.total_fragments,
        gen.first_number,
        gen.last_number,
        gen.total_bytes as f64 / 1e9
    );
    if args.check {
        run_check(&data)?;
    }
    if args.explain {
        explain(&data, &gen)?;
    }

    // 2. Playlist and timeline latency.
    let t = Instant::now();
    let server = Server::start(&data, work.path(), "playback")?;
    println!(
        "server restarted on the generated data dir: listening after {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    if args.playlist_only {
        let result = if args.wrk {
            playlist_cache_part(&client, &server, work.path(), &layout, args, &mut rng)
        } else {
            Ok(())
        };
        report_log("playback server", &server.stop());
        return result;
    }
    let (latency, notes) = latency_part(&client, &server, &layout, &gen, args, &mut rng)?;

    // 3. Segment throughput beside nginx.
    let throughput = if args.wrk {
        let t = throughput_part(&client, &server, work.path(), &gen, args, &mut rng)?;
        playlist_cache_part(&client, &server, work.path(), &layout, args, &mut rng)?;
        t
    } else {
        println!("\nsegment throughput: skipped (--no-wrk)");
        None
    };
    let log = server.stop();
    print_summary(&latency, &notes, throughput.as_ref(), args);
    report_log("playback server", &log);
    if args.keep {
        println!("kept {}", work.keep().display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Machine and small helpers.

fn print_machine(dir: &Path) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cpus} CPUs ({model}), {:.1} GB memory; load average {}; temp dir {}",
        mem_kb as f64 / 1e6,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        dir.display()
    );
    if let Ok(out) = Command::new("df").arg("-T").arg(dir).output() {
        if let Some(line) = String::from_utf8_lossy(&out.stdout).lines().nth(1) {
            println!("filesystem (df -T): {line}");
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `YYYY-MM-DDTHH:MM:SSZ` from µs since the epoch (civil-from-days, proleptic Gregorian).
fn utc(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// xorshift64*: reproducible windows and segment picks without a dependency.
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
        lo + (self.next() % (hi - lo) as u64) as i64
    }
}

/// (comm, utime + stime) of a `/proc/.../stat` text, and its parent pid.
fn parse_stat(s: &str) -> Option<(i32, Duration)> {
    let (_, after) = s.rsplit_once(')')?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the comm: state, ppid, ... utime is field 14, stime 15 (1-based over the line).
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((ppid, Duration::from_micros(ticks * 1_000_000 / hz)))
}

/// CPU time of a process (all its threads).
fn proc_cpu(pid: i32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .as_deref()
        .and_then(parse_stat)
        .map_or(Duration::ZERO, |(_, d)| d)
}

/// CPU time of a process plus its direct children (nginx master + workers).
fn tree_cpu(pid: i32) -> Duration {
    let mut total = proc_cpu(pid);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((ppid, cpu)) = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                if ppid == pid && child != pid {
                    total += cpu;
                }
            }
        }
    }
    total
}

/// CPU time of this process's waited-for children (wrk, once it has exited).
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn sigterm_and_wait(child: &mut Child, grace: Duration) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

fn report_log(label: &str, lines: &[String]) {
    if !lines.is_empty() {
        println!("{label} log: {} WARN/ERROR lines, first ones:", lines.len());
        for l in lines.iter().take(5) {
            println!("  {l}");
        }
    }
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
    fn start(data: &Path, work: &Path, label: &str) -> Res<Server> {
        let log = work.join(format!("server-{label}.log"));
        let (child, port) = common::spawn_server(data, &log, None, Duration::from_secs(120))?;
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

    /// SIGTERM (SIGKILL after 20 s); returns the WARN/ERROR lines of its log.
    fn stop(mut self) -> Vec<String> {
        sigterm_and_wait(&mut self.child, Duration::from_secs(20));
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_string)
            .collect()
    }
}

/// An error path that never reaches `stop` still stops the server.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            sigterm_and_wait(&mut self.child, Duration::from_secs(20));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building the archive.

/// Where the archive sits in producer time.
struct Layout {
    /// The sample's producer_start: ten minutes before the generated days.
    sample_start_us: i64,
    gen_start_us: i64,
    /// End of the newest fragment: an hour before the bench started (whole seconds).
    gen_end_us: i64,
}

impl Layout {
    fn new(days: i64) -> Layout {
        let gen_end_us = (wall_us() - HOUR_US) / 1_000_000 * 1_000_000;
        let len = days * FRAGS_PER_DAY * FRAG_US + (days - 1) * SESSION_GAP_US;
        let gen_start_us = gen_end_us - len;
        Layout {
            sample_start_us: gen_start_us - 600_000_000,
            gen_start_us,
            gen_end_us,
        }
    }

    /// Producer start of day `d`'s session.
    fn day_start_us(&self, d: i64) -> i64 {
        self.gen_start_us + d * (FRAGS_PER_DAY * FRAG_US + SESSION_GAP_US)
    }
}

fn ingest_sample(
    client: &reqwest::blocking::Client,
    server: &Server,
    layout: &Layout,
    days: i64,
) -> Res<()> {
    // Explicit retention longer than the archive, so a future retention pass leaves it alone.
    let r = client
        .post(server.url("/api/v1/streams"))
        .json(&serde_json::json!({"name": STREAM, "retention_hours": 24 * (days + 30)}))
        .send()?;
    if r.status().as_u16() != 201 {
        return Err(format!("creating the stream: HTTP {}: {}", r.status(), r.text()?).into());
    }
    let sample = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SAMPLE))?;
    let r = client
        .put(server.url(&format!(
            "/api/v1/streams/{STREAM}/ingest?producer_start={}",
            layout.sample_start_us / 1000
        )))
        .header("content-type", "video/mp4")
        .body(sample)
        .send()?;
    let status = r.status();
    let text = r.text()?;
    if !status.is_success() {
        return Err(format!("ingesting {SAMPLE}: HTTP {status}: {text}").into());
    }
    println!("ingested {SAMPLE} through the server: {}", text.trim());
    Ok(())
}

/// A real stored fragment, copied into every generated file.
struct SourceFragment {
    bytes: Vec<u8>,
    sample_count: i64,
}

struct Generated {
    stream_id: i64,
    rows: i64,
    first_number: i64,
    last_number: i64,
    total_fragments: i64,
    total_bytes: i64,
}

/// Adds `days` sessions of 2 s fragments to the stream, as the writer would have stored them.
fn generate(data: &Path, layout: &Layout, days: i64) -> Res<Generated> {
    let mut conn = Connection::open(data.join("tapedeck.db"))?;
    // Generation only: no journal, no syncs (the server sets WAL + FULL again when it opens).
    conn.pragma_update(None, "journal_mode", "MEMORY")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -262_144)?;

    let (stream_id, last_number, last_init_id): (i64, i64, i64) = conn.query_row(
        "SELECT id, last_number, last_init_id FROM streams WHERE name = ? AND deleted_us IS NULL",
        [STREAM],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let (timescale, mut segment_seq, mut disc_seq, session_id): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT timescale, segment_seq, disc_seq, session_id FROM fragments \
             WHERE stream_id = ? ORDER BY number DESC LIMIT 1",
            [stream_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
    let (kind, remote, end_reason): (String, Option<String>, Option<String>) = conn.query_row(
        "SELECT kind, remote, end_reason FROM sessions WHERE id = ?",
        [session_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut sources = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT file_id, file_offset, size_bytes, sample_count FROM fragments \
             WHERE stream_id = ? AND keyframe = 1 ORDER BY number",
        )?;
        let rows: Vec<(i64, i64, i64, i64)> = stmt
            .query_map([stream_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (file_id, offset, size, sample_count) in rows {
            let path = stream_file(data, stream_id, file_id);
            let f = std::fs::File::open(&path)?;
            let mut bytes = vec![0u8; size as usize];
            f.read_exact_at(&mut bytes, offset as u64)?;
            if bytes.get(4..8) != Some(b"moof".as_slice()) {
                return Err(format!("stored fragment at {offset} is not a moof").into());
            }
            sources.push(SourceFragment {
                bytes,
                sample_count,
            });
        }
    }
    if sources.is_empty() {
        return Err("the sample ingest stored no keyframe fragments".into());
    }
    let avg = sources.iter().map(|s| s.bytes.len()).sum::<usize>() / sources.len();
    println!(
        "source: {} real stored fragments, {:.1} KB on average, timescale {timescale}; each \
         generated file holds one copy of them",
        sources.len(),
        avg as f64 / 1e3
    );
    let mut next_file_id: i64 =
        conn.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM files", [], |r| {
            r.get(0)
        })?;

    let tx = conn.transaction()?;
    let mut number = last_number;
    let mut bytes_added = 0i64;
    {
        let mut ins_file =
            tx.prepare("INSERT INTO files (id, stream_id, created_us) VALUES (?, ?, ?)")?;
        let mut ins_session = tx.prepare(
            "INSERT INTO sessions (stream_id, kind, remote, started_us, ended_us, end_reason) \
             VALUES (?,?,?,?,?,?)",
        )?;
        let mut ins_frag = tx.prepare(
            "INSERT INTO fragments (stream_id, number, session_id, init_id, producer_start_us, \
             duration_us, server_time_us, media_time, timescale, keyframe, sample_count, \
             file_id, file_offset, size_bytes, segment_start, discontinuity, segment_seq, \
             disc_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        )?;
        let mut ins_span = tx.prepare(
            "INSERT INTO spans (stream_id, first_number, last_number, start_us, end_us, \
             fragments, bytes) VALUES (?,?,?,?,?,?,?)",
        )?;
        for d in 0..days {
            let day_start = layout.day_start_us(d);
            let day_end = day_start + FRAGS_PER_DAY * FRAG_US;
            // The day's file: the source fragments back to back.
            let file_id = next_file_id;
            next_file_id += 1;
            let mut offsets = Vec::with_capacity(sources.len());
            let mut content = Vec::new();
            for s in &sources {
                offsets.push(content.len() as i64);
                content.extend_from_slice(&s.bytes);
            }
            std::fs::write(stream_file(data, stream_id, file_id), &content)?;
            ins_file.execute(params![file_id, stream_id, day_start + 100_000])?;
            ins_session.execute(params![
                stream_id,
                kind,
                remote,
                day_start + 50_000,
                day_end + 1_000_000,
                end_reason
            ])?;
            let session = tx.last_insert_rowid();
            let first = number + 1;
            let mut day_bytes = 0i64;
            for i in 0..FRAGS_PER_DAY {
                number += 1;
                let k = (i as usize) % sources.len();
                let src = &sources[k];
                let start = day_start + i * FRAG_US;
                let disc = i == 0;
                segment_seq += 1;
                disc_seq += i64::from(disc);
                let size = src.bytes.len() as i64;
                ins_frag.execute(params![
                    stream_id,
                    number,
                    session,
                    last_init_id,
                    start,
                    FRAG_US,
                    start + FRAG_US + 150_000,
                    i * 2 * timescale,
                    timescale,
                    true,
                    src.sample_count,
                    file_id,
                    offsets[k],
                    size,
                    true,
                    disc,
                    segment_seq,
                    disc_seq
                ])?;
                day_bytes += size;
            }
            ins_span.execute(params![
                stream_id,
                first,
                number,
                day_start,
                day_end,
                FRAGS_PER_DAY,
                day_bytes
            ])?;
            bytes_added += day_bytes;
        }
        tx.execute(
            "UPDATE streams SET fragment_count = fragment_count + ?, \
             total_bytes = total_bytes + ?, last_end_us = ?, last_number = ? WHERE id = ?",
            params![
                days * FRAGS_PER_DAY,
                bytes_added,
                layout.gen_end_us,
                number,
                stream_id
            ],
        )?;
    }
    tx.commit()?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let (total_fragments, total_bytes): (i64, i64) = conn.query_row(
        "SELECT fragment_count, total_bytes FROM streams WHERE id = ?",
        [stream_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Generated {
        stream_id,
        rows: days * FRAGS_PER_DAY,
        first_number: last_number + 1,
        last_number: number,
        total_fragments,
        total_bytes,
    })
}

/// `<data>/streams/<stream id>/<file id:010>.frag` (src/store/files.rs).
fn stream_file(data: &Path, stream_id: i64, file_id: i64) -> PathBuf {
    data.join("streams")
        .join(stream_id.to_string())
        .join(format!("{file_id:010}.frag"))
}

/// `tapedeck check --json` over the generated data dir (with --check).
fn run_check(data: &Path) -> Res<()> {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tapedeck"))
        .arg("check")
        .arg("--json")
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("tapedeck check printed no JSON report: {e}"))?;
    let problems = v["problems"].as_array().map_or(0, Vec::len);
    println!(
        "tapedeck check: {} fragments, {} files checked in {:.1} s; {problems} problems{}",
        v["fragments_checked"],
        v["files_checked"],
        t.elapsed().as_secs_f64(),
        v["problems"]
            .as_array()
            .and_then(|p| p.first())
            .map(|p| format!(" (first: {p})"))
            .unwrap_or_default()
    );
    if problems > 0 {
        return Err("the generated archive does not pass tapedeck check".into());
    }
    Ok(())
}

/// With `--explain`: the plans SQLite (the bundled one the server links) picks for the reads
/// behind a segment and an archive page, timed on the oldest day of the generated archive, next
/// to a variant that stays inside the rows asked for. The SQL mirrors `segment_fragments` and
/// `fragments_from_number` in src/store/queries.rs when this bench was written; it is evidence,
/// not a copy that follows later changes.
fn explain(data: &Path, gen: &Generated) -> Res<()> {
    let c = Connection::open_with_flags(
        data.join("tapedeck.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let (id, n) = (gen.stream_id, gen.first_number + 10);
    let (seq, start): (i64, i64) = c.query_row(
        "SELECT segment_seq, producer_start_us FROM fragments WHERE stream_id = ? AND number = ?",
        [gen.stream_id, n],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let end = start + HOUR_US;
    let last: i64 = c.query_row(
        "SELECT MAX(number) FROM fragments WHERE stream_id = ? AND producer_start_us < ?",
        [gen.stream_id, end],
        |r| r.get(0),
    )?;
    let cases: [(&str, &str, Vec<i64>); 4] = [
        (
            "segment rows, as served",
            "SELECT * FROM fragments WHERE stream_id = ? AND segment_seq = ? AND number >= ? \
             ORDER BY number",
            vec![id, seq, n],
        ),
        (
            "segment rows, INDEXED BY fragments_segment",
            "SELECT * FROM fragments INDEXED BY fragments_segment WHERE stream_id = ? \
             AND segment_seq = ? AND number >= ? ORDER BY number",
            vec![id, seq, n],
        ),
        (
            "archive page (1 h), as served",
            "SELECT * FROM fragments WHERE stream_id = ? AND number >= ? \
             AND producer_start_us < ? ORDER BY number LIMIT ?",
            vec![id, n, end, 5000],
        ),
        (
            "archive page (1 h), number bounded by the window's last fragment",
            "SELECT * FROM fragments WHERE stream_id = ? AND number >= ? AND number <= ? \
             AND producer_start_us < ? ORDER BY number LIMIT ?",
            vec![id, n, last, end, 5000],
        ),
    ];
    println!(
        "explain (SQLite {}), fragment {n} on the oldest day, {} rows after it:",
        rusqlite::version(),
        gen.last_number - n
    );
    for (label, sql, p) in cases {
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
            .query_map(rusqlite::params_from_iter(p.iter()), |r| {
                r.get::<_, String>(3)
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = c.prepare(sql)?;
        let mut best = Duration::MAX;
        let mut rows = 0;
        for _ in 0..3 {
            let t = Instant::now();
            rows = stmt
                .query_map(rusqlite::params_from_iter(p.iter()), |_| Ok(()))?
                .count();
            best = best.min(t.elapsed());
        }
        println!(
            "  {label:<66} {rows:>5} rows {:>9.3} ms (best of 3)  plan: {}",
            best.as_secs_f64() * 1e3,
            plan.join(" / ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Latency of playlists and timelines.

struct Latency {
    label: String,
    samples: Vec<Duration>,
    mean_body: f64,
}

impl Latency {
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.samples.clone();
        v.sort_unstable();
        if v.is_empty() {
            return Duration::ZERO;
        }
        // Nearest rank.
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    fn max(&self) -> Duration {
        self.samples.iter().max().copied().unwrap_or_default()
    }
}

/// Times `n` sequential GETs (after `WARMUP` unrecorded ones). `check` validates each response.
fn measure(
    client: &reqwest::blocking::Client,
    label: &str,
    n: usize,
    gzip: bool,
    mut url: impl FnMut() -> String,
    check: impl Fn(&str, &[u8], Option<&str>) -> Result<(), String>,
) -> Res<Latency> {
    let mut samples = Vec::with_capacity(n);
    let mut body_total = 0usize;
    for i in 0..WARMUP.min(n) + n {
        let u = url();
        let mut req = client.get(&u);
        if gzip {
            req = req.header("accept-encoding", "gzip");
        }
        let t = Instant::now();
        let r = req.send()?;
        let status = r.status();
        let encoding = r
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = r.bytes()?;
        let took = t.elapsed();
        if !status.is_success() {
            return Err(format!(
                "{label}: GET {u}: HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )
            .into());
        }
        check(&u, &body, encoding.as_deref()).map_err(|e| format!("{label}: GET {u}: {e}"))?;
        if i >= WARMUP.min(n) {
            samples.push(took);
            body_total += body.len();
        }
    }
    let l = Latency {
        label: label.to_string(),
        mean_body: body_total as f64 / n as f64,
        samples,
    };
    println!(
        "  {:<44} n={:<4} p50 {:>8} p99 {:>8} max {:>8}  body {:.1} KB",
        l.label,
        n,
        ms(l.pct(50.0)),
        ms(l.pct(99.0)),
        ms(l.max()),
        l.mean_body / 1e3
    );
    Ok(l)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A VOD playlist of about `segments` 2 s segments (fewer when the window holds a day's gap).
fn check_playlist(segments: i64) -> impl Fn(&str, &[u8], Option<&str>) -> Result<(), String> {
    move |_, body, encoding| {
        if encoding.is_some() {
            // Compressed (gzip asked for): its size is the check; the text was checked above.
            return if encoding == Some("gzip") && body.len() > 100 {
                Ok(())
            } else {
                Err(format!("expected a gzip body, got {encoding:?}"))
            };
        }
        let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
        let n = text.matches("#EXTINF:").count() as i64;
        if !text.starts_with("#EXTM3U")
            || !text.contains("#EXT-X-ENDLIST")
            || n > segments + 2
            || n < segments - 2 - SESSION_GAP_US / FRAG_US
        {
            return Err(format!(
                "not the VOD playlist expected: {n} segments (expected about {segments})"
            ));
        }
        Ok(())
    }
}

fn check_timeline(
    spans: std::ops::RangeInclusive<usize>,
) -> impl Fn(&str, &[u8], Option<&str>) -> Result<(), String> {
    move |_, body, _| {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let n = v["spans"].as_array().map_or(0, Vec::len);
        if !spans.contains(&n) {
            return Err(format!("{n} spans, expected {spans:?}"));
        }
        Ok(())
    }
}

fn latency_part(
    client: &reqwest::blocking::Client,
    server: &Server,
    layout: &Layout,
    gen: &Generated,
    args: &Args,
    rng: &mut Rng,
) -> Res<(Vec<Latency>, Vec<String>)> {
    println!(
        "\nlatency: sequential GETs on one keep-alive connection, random windows inside the \
         generated days ({WARMUP} unrecorded warm-up requests per kind first)"
    );
    let base = format!("/api/v1/streams/{STREAM}");
    let (lo, hi) = (layout.gen_start_us / 1000, layout.gen_end_us / 1000);
    let hour_ms = HOUR_US / 1000;
    let mut window = |len_ms: i64| {
        let s = rng.range(lo, hi - len_ms);
        (s, s + len_ms)
    };
    let mut out = Vec::new();
    let mut wins: Vec<(i64, i64)> = (0..WARMUP + args.requests)
        .map(|_| window(hour_ms))
        .collect();
    let archive = |w: (i64, i64)| {
        server.url(&format!(
            "{base}/hls/archive.m3u8?start={}&end={}",
            w.0, w.1
        ))
    };
    let timeline =
        |w: (i64, i64)| server.url(&format!("{base}/timeline?start={}&end={}", w.0, w.1));
    let mut it = wins.clone().into_iter().cycle();
    out.push(measure(
        client,
        "archive.m3u8, 1 h window",
        args.requests,
        false,
        || archive(it.next().unwrap_or_default()),
        check_playlist(HOUR_US / FRAG_US),
    )?);
    // Evidence for where the time goes: the same requests by how old the window is.
    let mut notes = Vec::new();
    let by_age = by_age(&out[0], &wins[WARMUP..], hi, args.days);
    println!("    {by_age}");
    notes.push(by_age);
    let mut it = wins.clone().into_iter().cycle();
    out.push(measure(
        client,
        "archive.m3u8, 1 h window, Accept-Encoding: gzip",
        args.requests,
        true,
        || archive(it.next().unwrap_or_default()),
        check_playlist(HOUR_US / FRAG_US),
    )?);
    // Fresh windows for the timeline, so it does not profit from pages the playlists touched.
    wins = (0..WARMUP + args.requests)
        .map(|_| window(hour_ms))
        .collect();
    let mut it = wins.into_iter().cycle();
    out.push(measure(
        client,
        "timeline, 1 h window",
        args.requests,
        false,
        || timeline(it.next().unwrap_or_default()),
        check_timeline(1..=2),
    )?);
    let days = args.days as usize;
    out.push(measure(
        client,
        &format!("timeline, all {days} days"),
        args.requests,
        false,
        || timeline((lo, hi)),
        check_timeline(days..=days),
    )?);
    let day_ms = 86_400_000;
    if hi - lo > day_ms {
        let n = (args.requests / 10).clamp(1, 20);
        out.push(measure(
            client,
            "archive.m3u8, 24 h window (scale)",
            n,
            false,
            || archive(window(day_ms)),
            check_playlist(day_ms * 1000 / FRAG_US),
        )?);
    }
    // Single segment GETs: the newest day against the oldest day.
    let n = args.requests.min(50);
    let newest = (gen.last_number - FRAGS_PER_DAY + 1, gen.last_number + 1);
    let oldest = (gen.first_number, gen.first_number + FRAGS_PER_DAY);
    for (label, (a, b)) in [
        ("segment .m4s, newest day", newest),
        (
            &*format!("segment .m4s, oldest day ({} days back)", args.days),
            oldest,
        ),
    ] {
        out.push(measure(
            client,
            label,
            n,
            false,
            || server.url(&format!("{base}/hls/segments/{}.m4s", rng.range(a, b))),
            |_, body, _| {
                if body.get(4..8) == Some(b"moof".as_slice()) {
                    Ok(())
                } else {
                    Err("not a moof+mdat segment".into())
                }
            },
        )?);
    }
    Ok((out, notes))
}

/// Median latency of the recorded requests by how far the window ends before the archive's end
/// (thirds of the archive).
fn by_age(l: &Latency, wins: &[(i64, i64)], end_ms: i64, days: i64) -> String {
    let third_ms = (days * 86_400_000 / 3).max(1);
    let mut buckets: [Vec<Duration>; 3] = Default::default();
    for (d, w) in l.samples.iter().zip(wins) {
        let b = (((end_ms - w.1) / third_ms) as usize).min(2);
        buckets[b].push(*d);
    }
    let parts: Vec<String> = buckets
        .iter_mut()
        .enumerate()
        .map(|(i, v)| {
            v.sort_unstable();
            let med = v.get(v.len() / 2).copied().unwrap_or_default();
            let (from, to) = (
                i as f64 * days as f64 / 3.0,
                (i + 1) as f64 * days as f64 / 3.0,
            );
            let prec = usize::from(days % 3 != 0);
            format!(
                "{from:.prec$}-{to:.prec$} days before the end: p50 {} (n={})",
                ms(med),
                v.len()
            )
        })
        .collect();
    format!("{} by window age: {}", l.label, parts.join("; "))
}

// ---------------------------------------------------------------------------------------------
// Segment throughput, tapedeck beside nginx.

struct WrkRun {
    target: &'static str,
    round: usize,
    requests: u64,
    bytes: u64,
    seconds: f64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    target_cpu: Duration,
    wrk_cpu: Duration,
}

impl WrkRun {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
}

struct Throughput {
    runs: Vec<WrkRun>,
    mean_segment: f64,
    nginx_workers: String,
}

/// Directories 0755 and files 0644 under `dir`, whatever the umask: nginx workers may run as
/// another user.
fn open_up(dir: &Path) -> std::io::Result<()> {
    set_mode(dir, 0o755)?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            open_up(&e.path())?;
        } else {
            set_mode(&e.path(), 0o644)?;
        }
    }
    Ok(())
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn throughput_part(
    client: &reqwest::blocking::Client,
    server: &Server,
    work: &Path,
    gen: &Generated,
    args: &Args,
    rng: &mut Rng,
) -> Res<Option<Throughput>> {
    println!(
        "\nsegment throughput: wrk -t{} -c{} -d{}s, a Lua script rotating over {} segment paths \
         ({}), tapedeck and nginx alternating, {} round(s)",
        args.wrk_threads,
        args.connections,
        args.wrk_seconds,
        args.segments,
        if args.recent {
            "random segments of the newest hour"
        } else {
            "random segments of the whole archive"
        },
        args.rounds
    );
    let missing: Vec<&str> = ["nginx", "wrk"].into_iter().filter(|p| !have(p)).collect();
    if !missing.is_empty() {
        println!(
            "  SKIPPED: {} not found on PATH; install with `apt-get install -y nginx wrk` \
             (or your system's packages) and run again",
            missing.join(" and ")
        );
        return Ok(None);
    }
    // The same bytes under the same paths for both servers.
    let root = work.join("nginx-root");
    let mut paths = Vec::new();
    let mut total = 0usize;
    let lo = if args.recent {
        gen.last_number + 1 - HOUR_US / FRAG_US
    } else {
        gen.first_number
    };
    for _ in 0..args.segments {
        let n = rng.range(lo, gen.last_number + 1);
        let path = format!("/api/v1/streams/{STREAM}/hls/segments/{n}.m4s");
        let r = client.get(server.url(&path)).send()?;
        if !r.status().is_success() {
            return Err(format!("GET {path}: HTTP {}", r.status()).into());
        }
        let body = r.bytes()?;
        if body.get(4..8) != Some(b"moof".as_slice()) {
            return Err(format!("GET {path}: not a moof+mdat segment").into());
        }
        let file = root.join(path.trim_start_matches('/'));
        let dir = file.parent().ok_or("no parent")?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(&file, &body)?;
        total += body.len();
        paths.push(path);
    }
    open_up(&root)?;
    let mean_segment = total as f64 / paths.len() as f64;
    println!(
        "  {} segments fetched from tapedeck ({:.1} KB on average) and written under {}",
        paths.len(),
        mean_segment / 1e3,
        root.display()
    );
    let script = work.join("rotate.lua");
    std::fs::write(&script, lua_script(&paths))?;
    let nginx = Nginx::start(work, &root, &args.nginx_workers)?;
    println!(
        "  nginx on 127.0.0.1:{} (worker_processes {}, sendfile on, access_log off); tapedeck on \
         127.0.0.1:{}",
        nginx.port, args.nginx_workers, server.port
    );
    let mut runs = Vec::new();
    let result = (|| -> Res<()> {
        for round in 1..=args.rounds {
            for target in ["tapedeck", "nginx"] {
                let (port, pid, tree) = if target == "tapedeck" {
                    (server.port, server.pid, false)
                } else {
                    (nginx.port, nginx.child.id() as i32, true)
                };
                let cpu = |p| if tree { tree_cpu(p) } else { proc_cpu(p) };
                let c0 = cpu(pid);
                let w0 = children_cpu();
                let mut run = wrk(port, &script, args)?;
                run.target_cpu = cpu(pid).saturating_sub(c0);
                run.wrk_cpu = children_cpu().saturating_sub(w0);
                run.target = target;
                run.round = round;
                println!(
                    "  round {round} {target:<8} {:>9.0} req/s {:>8.1} MB/s  latency p50 {:.2} ms \
                     p99 {:.2} ms  errors {}  {target} CPU {:.0}% ({:.0} us/request), wrk CPU {:.0}%",
                    run.rps(),
                    run.mbps(),
                    run.p50_ms,
                    run.p99_ms,
                    run.errors,
                    100.0 * run.target_cpu.as_secs_f64() / run.seconds,
                    run.target_cpu.as_secs_f64() * 1e6 / run.requests.max(1) as f64,
                    100.0 * run.wrk_cpu.as_secs_f64() / run.seconds
                );
                runs.push(run);
            }
        }
        Ok(())
    })();
    let nginx_errors = nginx.stop();
    report_log("nginx error", &nginx_errors);
    result?;
    Ok(Some(Throughput {
        runs,
        mean_segment,
        nginx_workers: args.nginx_workers.clone(),
    }))
}

/// Part 4: one closed 1-hour archive playlist, asked for again and again, tapedeck (cached
/// after the first request) beside nginx serving the same bytes as a file.
fn playlist_cache_part(
    client: &reqwest::blocking::Client,
    server: &Server,
    work: &Path,
    layout: &Layout,
    args: &Args,
    rng: &mut Rng,
) -> Res<()> {
    println!(
        "\narchive playlist cache: wrk -t{} -c{} -d{}s on one 1 h archive.m3u8 URL, tapedeck \
         and nginx (the same bytes as a static file) alternating, {} round(s)",
        args.wrk_threads, args.connections, args.wrk_seconds, args.rounds
    );
    let missing: Vec<&str> = ["nginx", "wrk"].into_iter().filter(|p| !have(p)).collect();
    if !missing.is_empty() {
        println!(
            "  SKIPPED: {} not found on PATH; install with `apt-get install -y nginx wrk`",
            missing.join(" and ")
        );
        return Ok(());
    }
    let (lo, hi) = (layout.gen_start_us / 1000, layout.gen_end_us / 1000);
    let start = rng.range(lo, hi - 2 * HOUR_US / 1000);
    let file_path = format!("/api/v1/streams/{STREAM}/hls/archive.m3u8");
    let path = format!("{file_path}?start={start}&end={}", start + HOUR_US / 1000);
    let r = client.get(server.url(&path)).send()?;
    let status = r.status();
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.bytes()?;
    if !status.is_success() || !body.starts_with(b"#EXTM3U") {
        return Err(format!("GET {path}: HTTP {status}, not a playlist").into());
    }
    let Some(etag) = etag else {
        return Err(format!("GET {path}: no ETag: the range is not settled").into());
    };
    let again = client
        .get(server.url(&path))
        .header("if-none-match", &etag)
        .send()?;
    if again.status() != 304 {
        return Err(format!("GET {path} with its ETag: {} (not 304)", again.status()).into());
    }
    let root = work.join("nginx-playlist-root");
    let file = root.join(file_path.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().ok_or("no parent")?)?;
    std::fs::write(&file, &body)?;
    open_up(&root)?;
    println!(
        "  {path}: {:.1} KB, {} segments, ETag {etag}; 304 to If-None-Match",
        body.len() as f64 / 1e3,
        body.windows(7).filter(|w| w == b"#EXTINF").count()
    );
    let script = work.join("playlist.lua");
    std::fs::write(&script, lua_script(std::slice::from_ref(&path)))?;
    let nginx = Nginx::start(work, &root, &args.nginx_workers)?;
    let mut ratios = Vec::new();
    let result = (|| -> Res<()> {
        for round in 1..=args.rounds {
            let mut rps = [0.0f64; 2];
            for (i, target) in ["tapedeck", "nginx"].into_iter().enumerate() {
                let (port, pid, tree) = if target == "tapedeck" {
                    (server.port, server.pid, false)
                } else {
                    (nginx.port, nginx.child.id() as i32, true)
                };
                let cpu = |p| if tree { tree_cpu(p) } else { proc_cpu(p) };
                let c0 = cpu(pid);
                let run = wrk(port, &script, args)?;
                let target_cpu = cpu(pid).saturating_sub(c0);
                if run.errors > 0 || run.bytes < run.requests * body.len() as u64 {
                    return Err(format!(
                        "{target}: {} errors, {} bytes for {} requests of {} bytes",
                        run.errors,
                        run.bytes,
                        run.requests,
                        body.len()
                    )
                    .into());
                }
                rps[i] = run.rps();
                println!(
                    "  round {round} {target:<8} {:>9.0} req/s {:>8.1} MB/s  latency p50 {:.2} ms \
                     p99 {:.2} ms  {target} CPU {:.0}%",
                    run.rps(),
                    run.mbps(),
                    run.p50_ms,
                    run.p99_ms,
                    100.0 * target_cpu.as_secs_f64() / run.seconds
                );
            }
            let ratio = rps[0] / rps[1].max(1.0);
            println!("  round {round} tapedeck / nginx: {:.1}%", 100.0 * ratio);
            ratios.push(ratio);
        }
        Ok(())
    })();
    report_log("nginx error", &nginx.stop());
    result?;
    ratios.sort_by(f64::total_cmp);
    let median = if ratios.len() % 2 == 1 {
        ratios[ratios.len() / 2]
    } else {
        (ratios[ratios.len() / 2 - 1] + ratios[ratios.len() / 2]) / 2.0
    };
    println!(
        "archive playlist (1 h, cached) tapedeck / nginx: median {:.1}% over {} round(s); \
         target: at least 25%: {}",
        100.0 * median,
        ratios.len(),
        if median >= 0.25 { "met" } else { "NOT met" }
    );
    Ok(())
}

fn lua_script(paths: &[String]) -> String {
    let list: Vec<String> = paths.iter().map(|p| format!("  \"{p}\",")).collect();
    format!(
        r#"-- Generated by benches/playback.rs: rotate over the same segment paths.
paths = {{
{}
}}
counter = 0

function setup(thread)
  thread:set("counter", math.random(#paths))
end

function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d bytes=%d duration_us=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.bytes, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#,
        list.join("\n")
    )
}

fn wrk(port: u16, script: &Path, args: &Args) -> Res<WrkRun> {
    let out = Command::new("wrk")
        .arg(format!("-t{}", args.wrk_threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.wrk_seconds))
        .args(["--timeout", "5s", "-s"])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("BENCH "))
        .ok_or_else(|| {
            format!(
                "wrk printed no summary (status {}): {}{}",
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(WrkRun {
        target: "",
        round: 0,
        requests: field("requests"),
        bytes: field("bytes"),
        seconds: field("duration_us") as f64 / 1e6,
        errors: field("errors"),
        p50_ms: field("p50_us") as f64 / 1e3,
        p99_ms: field("p99_us") as f64 / 1e3,
        target_cpu: Duration::ZERO,
        wrk_cpu: Duration::ZERO,
    })
}

struct Nginx {
    child: Child,
    port: u16,
    error_log: PathBuf,
}

impl Nginx {
    fn start(work: &Path, root: &Path, workers: &str) -> Res<Nginx> {
        let prefix = work.join("nginx");
        std::fs::create_dir_all(&prefix)?;
        // A free port: bind, read it, release it (nginx binds it right after).
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let p = prefix.display();
        let error_log = prefix.join("error.log");
        let conf = format!(
            r#"# Generated by benches/playback.rs
worker_processes {workers};
daemon off;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    types {{ video/iso.segment m4s; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"#,
            root = root.display()
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.join("stderr.log"))?)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default()
                    + &std::fs::read_to_string(&error_log).unwrap_or_default();
                return Err(format!("nginx exited at start ({status}): {err}").into());
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Nginx {
                    child,
                    port,
                    error_log,
                });
            }
            if Instant::now() > deadline {
                sigterm_and_wait(&mut child, Duration::from_secs(5));
                return Err("nginx did not start listening within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM to the master (it stops its workers); returns the error log's lines.
    fn stop(mut self) -> Vec<String> {
        sigterm_and_wait(&mut self.child, Duration::from_secs(10));
        std::fs::read_to_string(&self.error_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("[error]") || l.contains("[crit]") || l.contains("[emerg]"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            sigterm_and_wait(&mut self.child, Duration::from_secs(10));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The table.

fn print_summary(
    latency: &[Latency],
    notes: &[String],
    throughput: Option<&Throughput>,
    args: &Args,
) {
    println!("\n== Playback results ==");
    println!(
        "{:<48} {:>5} {:>10} {:>10} {:>10} {:>10}",
        "request", "n", "median", "p99", "max", "body KB"
    );
    for l in latency {
        println!(
            "{:<48} {:>5} {:>10} {:>10} {:>10} {:>10.1}",
            l.label,
            l.samples.len(),
            ms(l.pct(50.0)),
            ms(l.pct(99.0)),
            ms(l.max()),
            l.mean_body / 1e3
        );
    }
    let one_hour: Vec<&Latency> = latency
        .iter()
        .filter(|l| l.label.contains("1 h window"))
        .collect();
    let met = one_hour
        .iter()
        .all(|l| l.pct(50.0) < Duration::from_millis(10));
    for n in notes {
        println!("{n}");
    }
    println!(
        "target: 1 h archive playlist and timeline median under 10 ms: {}",
        if met { "met" } else { "NOT met" }
    );
    let Some(t) = throughput else {
        println!("segment throughput: not measured");
        return;
    };
    println!(
        "\nsegment serving, wrk -t{} -c{} -d{}s over {} segments {}({:.1} KB mean), nginx \
         worker_processes {}",
        args.wrk_threads,
        args.connections,
        args.wrk_seconds,
        args.segments,
        if args.recent {
            "of the newest hour "
        } else {
            ""
        },
        t.mean_segment / 1e3,
        t.nginx_workers
    );
    println!(
        "{:<6} {:<9} {:>10} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9} {:>8}",
        "round",
        "server",
        "req/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "srv CPU",
        "us/req",
        "wrk CPU"
    );
    for r in &t.runs {
        println!(
            "{:<6} {:<9} {:>10.0} {:>9.1} {:>9.2} {:>9.2} {:>7} {:>9.0}% {:>9.0} {:>7.0}%",
            r.round,
            r.target,
            r.rps(),
            r.mbps(),
            r.p50_ms,
            r.p99_ms,
            r.errors,
            100.0 * r.target_cpu.as_secs_f64() / r.seconds,
            r.target_cpu.as_secs_f64() * 1e6 / r.requests.max(1) as f64,
            100.0 * r.wrk_cpu.as_secs_f64() / r.seconds
        );
    }
    let sum = |name: &str| -> (f64, f64) {
        t.runs
            .iter()
            .filter(|r| r.target == name)
            .fold((0.0, 0.0), |a, r| {
                (a.0 + r.requests as f64, a.1 + r.seconds)
            })
    };
    let per_round: Vec<String> = (1..=args.rounds)
        .filter_map(|round| {
            let get = |name: &str| {
                t.runs
                    .iter()
                    .find(|r| r.round == round && r.target == name)
                    .map(WrkRun::rps)
            };
            Some(format!("{:.1}%", 100.0 * get("tapedeck")? / get("nginx")?))
        })
        .collect();
    let (tr, ts) = sum("tapedeck");
    let (nr, ns) = sum("nginx");
    let ratio = (tr / ts) / (nr / ns);
    let errors: u64 = t.runs.iter().map(|r| r.errors).sum();
    println!(
        "tapedeck / nginx requests per second: {:.1}% over all rounds (per round: {})",
        100.0 * ratio,
        per_round.join(", ")
    );
    println!(
        "target: segment throughput at least 80% of nginx: {}",
        if ratio >= 0.8 && errors == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
