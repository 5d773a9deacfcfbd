//! `rtsp` mode (issue 16): N sources pulled from one GStreamer RTSP server process (its media
//! shared, so one encoder feeds every connection) for `--seconds`; all must record. Reports the
//! server's CPU per camera and its RSS.
//!
//! ```text
//! cargo bench --bench ingest -- rtsp [--sources 50] [--seconds 60]
//! ```

use super::{http_call, Res, Server};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What each camera sends: 640x360 at 25 fps, 1 Mbit/s H.264 (2 s GOP) + AAC.
const SIZE: &str = "640x360";
const BITRATE_KBIT: &str = "1000";

pub fn rtsp(rt: &tokio::runtime::Runtime, work: &Path, sources: usize, seconds: u64) -> Res<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rtsp/server.py");
    let mut camera = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["--port", &port.to_string(), "--shared", "--size", SIZE])
        .args(["--bitrate", BITRATE_KBIT])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the RTSP server (/usr/bin/python3 with GI): {e}"))?;
    let mut line = String::new();
    BufReader::new(camera.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    if !line.starts_with("ready") {
        let _ = camera.kill();
        return Err(format!("the RTSP server did not start: {line:?}").into());
    }
    // This VM's disk is nearly full; the default free-space floor (5 %) would stop the recording.
    let config = work.join("rtsp.toml");
    std::fs::write(&config, "[storage]\nmin_free_bytes = 1000000000\n")?;
    let server = Server::start_in(work, "rtsp", &work.join("data-rtsp"), Some(&config))?;
    println!(
        "\n== rtsp: {sources} sources ({SIZE}, {BITRATE_KBIT} kbit/s H.264 + AAC, TCP) from one \
         RTSP server process, {seconds} s =="
    );
    let result = rt.block_on(measure(&server, server.port, port, sources, seconds));
    if result.is_err() {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        for l in log
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            println!("  server log: {l}");
        }
    }
    let warnings = server.stop();
    let _ = camera.kill();
    let _ = camera.wait();
    for w in warnings.iter().take(10) {
        println!("  server log: {w}");
    }
    result
}

async fn describe(port: u16, name: &str) -> Res<serde_json::Value> {
    let (code, body) =
        http_call(port, "GET", &format!("/api/v1/streams/{name}"), None, b"").await?;
    if code != 200 {
        return Err(format!("GET {name}: {code}").into());
    }
    Ok(serde_json::from_slice(&body)?)
}

/// `port`: tapedeck's; `camera_port`: the RTSP server's.
async fn measure(
    server: &Server,
    port: u16,
    camera_port: u16,
    sources: usize,
    seconds: u64,
) -> Res<()> {
    let names: Vec<String> = (0..sources).map(|i| format!("rtsp{i:03}")).collect();
    let created = Instant::now();
    for n in &names {
        let body = serde_json::json!({"name": n, "source": {"rtsp": {
            "url": format!("rtsp://127.0.0.1:{camera_port}/h264"), "transport": "tcp"}}});
        let (code, resp) = http_call(
            port,
            "POST",
            "/api/v1/streams",
            Some("application/json"),
            body.to_string().as_bytes(),
        )
        .await
        .map_err(|e| format!("create {n}: {e}"))?;
        if code != 201 {
            return Err(format!("create {n}: {code} {}", String::from_utf8_lossy(&resp)).into());
        }
    }
    // All recording: every stream has a fragment.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut waiting = 0;
        for n in &names {
            if describe(port, n).await?["fragment_count"]
                .as_u64()
                .unwrap_or(0)
                == 0
            {
                waiting += 1;
            }
        }
        if waiting == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{waiting} of {sources} sources recorded nothing in 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "  all {sources} recording {:.1} s after the first create",
        created.elapsed().as_secs_f64()
    );
    let mut before = Vec::new();
    for n in &names {
        before.push(
            describe(port, n).await?["fragment_count"]
                .as_u64()
                .unwrap_or(0),
        );
    }
    let cpu0 = server.cpu();
    let t0 = Instant::now();
    let mut peak_rss_kb = 0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss_kb = peak_rss_kb.max(server.memory_kb().1);
    }
    let cpu = server.cpu().saturating_sub(cpu0);
    let wall = t0.elapsed();
    let (hwm_kb, rss_kb) = server.memory_kb();
    let (mut min_f, mut max_f, mut reconnects, mut lost, mut bytes) = (u64::MAX, 0, 0, 0, 0);
    let mut states = std::collections::BTreeMap::new();
    for (n, b) in names.iter().zip(before) {
        let d = describe(port, n).await?;
        let f = d["fragment_count"].as_u64().unwrap_or(0) - b;
        min_f = min_f.min(f);
        max_f = max_f.max(f);
        let st = &d["source"]["status"];
        reconnects += st["reconnects"].as_u64().unwrap_or(0);
        lost += st["packets_lost"].as_u64().unwrap_or(0);
        bytes += st["bytes"].as_u64().unwrap_or(0);
        *states
            .entry(st["state"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    let cpu_pct = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    println!(
        "  server CPU {:.1} % of one core in total, {:.2} % per camera; RSS {:.1} MB at the end \
         (peak sampled {:.1} MB, VmHWM {:.1} MB)",
        cpu_pct,
        cpu_pct / sources as f64,
        rss_kb as f64 / 1024.0,
        peak_rss_kb as f64 / 1024.0,
        hwm_kb as f64 / 1024.0
    );
    println!(
        "  fragments stored per camera in {:.0} s: {min_f} to {max_f} (one per 2 s GOP); states \
         {states:?}; reconnects {reconnects}; RTP packets lost {lost}; {:.1} MB received",
        wall.as_secs_f64(),
        bytes as f64 / 1e6
    );
    let expected = seconds / 2;
    if min_f + 2 < expected || states.get("streaming").copied().unwrap_or(0) != sources {
        return Err(format!(
            "not every source recorded throughout: fewest fragments {min_f} (expected about \
             {expected}), states {states:?}"
        )
        .into());
    }
    Ok(())
}
