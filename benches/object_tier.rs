//! Object-tier benchmark (issue 17): reads from the remote tier against local reads, and upload
//! throughput against the object server's own PUT rate for the same bytes, in one run.
//!
//! ```text
//! cargo bench --bench object_tier -- [--streams 4] [--uploads 10] [--rounds 20] [--server s3s-fs|moto]
//! ```
//! 1. Starts the S3-compatible server (s3s-fs by default, as `.ci/run` installs it; `moto` is
//!    far slower, being Python) on 127.0.0.1 and tapedeck with `[storage.object]`, files rolling
//!    only every 10 minutes, so nothing is sealed yet. Ingests `samples/h264_aac_gop2s.mp4`
//!    `--uploads` times into each of `--streams` streams (one file per stream).
//! 2. Local reads: `archive.m3u8` of each stream's whole range (`--rounds` times each) and every
//!    segment once.
//! 3. Restarts tapedeck: every file is sealed at once, the uploader takes them all; upload
//!    throughput is the bytes over the time from the restart until the queue is empty and every
//!    local copy is deleted (`local_keep_hours = 0`).
//! 4. Restarts again (an empty read cache), then the same reads, now from the bucket: every
//!    segment once (cache misses), then again (cache hits).
//! 5. The object server's own PUT rate: the same object bytes PUT under another prefix with the
//!    same concurrency, through the same client library.
//!
//! Figures: median and p99 per kind of request, MB/s (10^6 bytes) for uploads.

#[path = "common/mod.rs"]
mod common;

use common::BoxError;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Res<T> = Result<T, BoxError>;

const BUCKET: &str = "bench";
const KEY: &str = "bench-key";
const SECRET: &str = "bench-secret-0123456789";
const CONCURRENCY: usize = 4;

struct Args {
    streams: usize,
    uploads: usize,
    rounds: usize,
    moto: bool,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        streams: 4,
        uploads: 10,
        rounds: 20,
        moto: false,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, name: &str| -> Res<usize> {
        v.and_then(|v| v.parse().ok())
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("{name} needs a number from 1 to 1000").into())
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {}
            "--streams" => a.streams = num(it.next(), "--streams")?,
            "--uploads" => a.uploads = num(it.next(), "--uploads")?,
            "--rounds" => a.rounds = num(it.next(), "--rounds")?,
            "--server" => match it.next().as_deref() {
                Some("moto") => a.moto = true,
                Some("s3s-fs") => a.moto = false,
                _ => return Err("--server is s3s-fs or moto".into()),
            },
            other => {
                return Err(format!(
                    "unknown argument '{other}'; usage: [--streams N] [--uploads N] [--rounds N] \
                     [--server s3s-fs|moto]"
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
            eprintln!("object_tier bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("object_tier bench failed: {e}");
        std::process::exit(1);
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Res<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn start_s3(args: &Args, root: &Path, port: u16) -> Res<Killed> {
    let mut cmd = if args.moto {
        let bin = std::env::var("TAPEDECK_MOTO")
            .unwrap_or_else(|_| "/var/tmp/tapedeck-moto-venv/bin/moto_server".into());
        let mut c = Command::new(bin);
        c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        c
    } else {
        let bin = std::env::var("TAPEDECK_S3S_FS")
            .unwrap_or_else(|_| "/var/tmp/tapedeck-s3s-fs/bin/s3s-fs".into());
        let fs = root.join("s3");
        std::fs::create_dir_all(fs.join(BUCKET))?;
        let mut c = Command::new(bin);
        c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .arg(fs);
        c
    };
    let child = Killed(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("s3.log"))?)
            .spawn()
            .map_err(|e| format!("cannot start the S3 server (see .ci/run): {e}"))?,
    );
    let addr = format!("127.0.0.1:{port}");
    wait_for("the S3 server", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&addr).is_ok()
    })?;
    if args.moto {
        reqwest::blocking::Client::new()
            .put(format!("http://{addr}/{BUCKET}"))
            .send()?
            .error_for_status()?;
    }
    Ok(child)
}

struct Tapedeck {
    _child: Killed,
    base: String,
}

fn start_tapedeck(root: &Path, n: usize) -> Res<Tapedeck> {
    let (child, port) = common::spawn_server(
        &root.join("data"),
        &root.join(format!("tapedeck-{n}.log")),
        Some(&root.join("tapedeck.toml")),
        Duration::from_secs(60),
    )?;
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::blocking::Client::new();
    wait_for("tapedeck ready", Duration::from_secs(60), || {
        c.get(format!("{base}/readyz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    })?;
    Ok(Tapedeck {
        _child: Killed(child),
        base,
    })
}

fn metric(c: &reqwest::blocking::Client, base: &str, name: &str) -> Res<f64> {
    let text = c.get(format!("{base}/metrics")).send()?.text()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no metric {name}").into())
}

/// (median, p99) in ms.
fn summary(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.99))
}

fn time_get(c: &reqwest::blocking::Client, url: &str) -> Res<(Duration, usize)> {
    let t = Instant::now();
    let r = c.get(url).send()?.error_for_status()?;
    let n = r.bytes()?.len();
    Ok((t.elapsed(), n))
}

/// The archive playlist of each stream (`rounds` times) and the segment URLs in it.
fn playlists(
    c: &reqwest::blocking::Client,
    base: &str,
    streams: &[String],
    rounds: usize,
) -> Res<(Vec<Duration>, Vec<String>)> {
    let mut times = Vec::new();
    let mut segments = Vec::new();
    for s in streams {
        let d: serde_json::Value = c.get(format!("{base}/api/v1/streams/{s}")).send()?.json()?;
        let (first, last) = (d["first_time"].as_str(), d["last_time"].as_str());
        let url = format!(
            "{base}/api/v1/streams/{s}/hls/archive.m3u8?start={}&end={}",
            first.ok_or("no first_time")?,
            last.ok_or("no last_time")?
        );
        let text = c.get(&url).send()?.error_for_status()?.text()?;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            segments.push(if line.starts_with("http") {
                line.to_string()
            } else {
                format!("{base}/api/v1/streams/{s}/hls/{line}")
            });
        }
        for _ in 0..rounds {
            times.push(time_get(c, &url)?.0);
        }
    }
    Ok((times, segments))
}

fn segment_reads(c: &reqwest::blocking::Client, urls: &[String]) -> Res<(Vec<Duration>, usize)> {
    let mut times = Vec::new();
    let mut bytes = 0;
    for u in urls {
        let (t, n) = time_get(c, u)?;
        times.push(t);
        bytes += n;
    }
    Ok((times, bytes))
}

fn row(what: &str, v: Vec<Duration>) {
    let n = v.len();
    let (med, p99) = summary(v);
    println!("{what:<44} {n:>6} {med:>10.2} {p99:>10.2}");
}

fn run(args: &Args) -> Res<()> {
    std::env::set_var("AWS_ACCESS_KEY_ID", KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
    let work = tempfile::tempdir()?;
    let root = work.path();
    let port = free_port()?;
    let _s3 = start_s3(args, root, port)?;
    let endpoint = format!("http://127.0.0.1:{port}");
    std::fs::write(
        root.join("tapedeck.toml"),
        format!(
            "[storage]\nfile_roll_secs = 600\n\n[storage.object]\nurl = \"s3://{BUCKET}/tapedeck\"\n\
             endpoint = \"{endpoint}\"\npath_style = true\nlocal_keep_hours = 0\n\
             upload_concurrency = {CONCURRENCY}\n"
        ),
    )?;
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let sample = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/h264_aac_gop2s.mp4"),
    )?;
    let streams: Vec<String> = (0..args.streams).map(|i| format!("cam{i}")).collect();

    // 1-2: record, read locally.
    let (local_playlists, urls, local_segments, segment_bytes) = {
        let td = start_tapedeck(root, 1)?;
        for s in &streams {
            for _ in 0..args.uploads {
                c.put(format!("{}/api/v1/streams/{s}/ingest", td.base))
                    .body(sample.clone())
                    .send()?
                    .error_for_status()?;
            }
        }
        let (p, urls) = playlists(&c, &td.base, &streams, args.rounds)?;
        let (seg, bytes) = segment_reads(&c, &urls)?;
        (p, urls, seg, bytes)
    };
    let stored: u64 = walk_bytes(&root.join("data/streams"));

    // 3: upload everything.
    let (upload_s, uploaded_bytes) = {
        let started = Instant::now();
        let td = start_tapedeck(root, 2)?;
        let base = td.base.clone();
        wait_for("every file uploaded", Duration::from_secs(600), || {
            metric(&c, &base, "tapedeck_object_local_bytes").is_ok_and(|b| b == 0.0)
                && metric(&c, &base, "tapedeck_object_upload_queue_files").is_ok_and(|q| q == 0.0)
        })?;
        let secs = started.elapsed().as_secs_f64();
        (
            secs,
            metric(&c, &base, "tapedeck_object_uploaded_bytes_total")? as u64,
        )
    };

    // 4: read from the bucket (fresh process: empty read cache).
    let td = start_tapedeck(root, 3)?;
    let base = td.base.clone();
    let rebased: Vec<String> = urls
        .iter()
        .map(|u| {
            let path = &u[u.find("/api/").unwrap_or(0)..];
            format!("{base}{path}")
        })
        .collect();
    let (remote_playlists, _) = playlists(&c, &base, &streams, args.rounds)?;
    let (remote_cold, bytes_cold) = segment_reads(&c, &rebased)?;
    let (remote_warm, _) = segment_reads(&c, &rebased)?;
    if bytes_cold != segment_bytes {
        return Err(
            format!("remote segments gave {bytes_cold} bytes, local {segment_bytes}").into(),
        );
    }
    let gets = metric(&c, &base, "tapedeck_object_read_seconds_count")?;
    let get_s = metric(&c, &base, "tapedeck_object_read_seconds_sum")?;

    // 5: the object server's own PUT rate for the same bytes.
    let objects = object_files(&endpoint)?;
    let put_s = raw_put(&endpoint, &objects)?;
    let put_bytes: u64 = objects.iter().map(|o| o.1.len() as u64).sum();

    println!(
        "object tier bench: {} streams x {} uploads of the sample, {:.1} MB stored in {} files; \
         server {}",
        args.streams,
        args.uploads,
        stored as f64 / 1e6,
        objects.len(),
        if args.moto { "moto" } else { "s3s-fs" }
    );
    println!(
        "{:<44} {:>6} {:>10} {:>10}",
        "request", "n", "median ms", "p99 ms"
    );
    row("archive.m3u8, local", local_playlists);
    row("archive.m3u8, remote tier", remote_playlists);
    row("segment, local", local_segments);
    row("segment, remote (cache miss, GET)", remote_cold);
    row("segment, remote (read cache hit)", remote_warm);
    println!(
        "remote GETs (2 MiB chunks) made: {gets}, mean {:.1} ms each; segment bytes read: {:.1} MB",
        get_s * 1e3 / gets.max(1.0),
        segment_bytes as f64 / 1e6
    );
    println!(
        "upload: tapedeck {:.1} MB in {:.2} s = {:.1} MB/s (restart to all local copies deleted, \
         incl. verify and record); server's own PUT rate, same {:.1} MB, {} at once: {:.2} s = {:.1} MB/s",
        uploaded_bytes as f64 / 1e6,
        upload_s,
        uploaded_bytes as f64 / 1e6 / upload_s,
        put_bytes as f64 / 1e6,
        CONCURRENCY,
        put_s,
        put_bytes as f64 / 1e6 / put_s
    );
    Ok(())
}

fn walk_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// Every object tapedeck uploaded: (key, bytes), listed and read through the S3 API.
fn object_files(endpoint: &str) -> Res<Vec<(String, Vec<u8>)>> {
    let rt = tokio::runtime::Runtime::new()?;
    let store = client(endpoint)?;
    rt.block_on(async {
        use futures_util::StreamExt;
        let mut out = Vec::new();
        let prefix = ObjectPath::from("tapedeck");
        let mut list = store.list(Some(&prefix));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            let bytes = store.get(&meta.location).await?.bytes().await?;
            out.push((meta.location.to_string(), bytes.to_vec()));
        }
        if out.is_empty() {
            return Err::<_, BoxError>("no objects in the bucket".into());
        }
        Ok(out)
    })
}

fn client(endpoint: &str) -> Res<object_store::aws::AmazonS3> {
    Ok(AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(endpoint)
        .with_region("us-east-1")
        .with_access_key_id(KEY)
        .with_secret_access_key(SECRET)
        .with_virtual_hosted_style_request(false)
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .build()?)
}

/// PUTs the objects again under `raw/`, `CONCURRENCY` at once (multipart above 16 MiB, as the
/// uploader does); returns the seconds taken.
fn raw_put(endpoint: &str, objects: &[(String, Vec<u8>)]) -> Res<f64> {
    let rt = tokio::runtime::Runtime::new()?;
    let store = client(endpoint)?;
    let part = 16usize << 20;
    rt.block_on(async {
        use futures_util::StreamExt;
        let started = Instant::now();
        let results: Vec<Res<()>> = futures_util::stream::iter(objects)
            .map(|(key, bytes)| {
                let store = &store;
                async move {
                    let path = ObjectPath::from(format!("raw/{key}"));
                    if bytes.len() <= part {
                        store.put(&path, PutPayload::from(bytes.clone())).await?;
                    } else {
                        let mut up = store.put_multipart(&path).await?;
                        for chunk in bytes.chunks(part) {
                            up.put_part(PutPayload::from(chunk.to_vec())).await?;
                        }
                        up.complete().await?;
                    }
                    Ok(())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for r in results {
            r?;
        }
        Ok(started.elapsed().as_secs_f64())
    })
}
