//! (b) N paced cameras, each its own upload of `--kbps` media in `--fragment-ms` fragments.
//!
//! Prints ack latency (last byte written -> ack line), how the server grouped its commits
//! (from the acks' `server_time_us` and from `/metrics`), server CPU in total and by thread,
//! RSS over the run, and for overload runs how far the server held producers back: fragments
//! acked against sent, time throttled, the longest gap between two acks, and how every upload
//! ended. With `--verify`, every acked fragment is read back through the fragments API and
//! compared with the producer's SHA-256 (all cameras send the same bytes, placed on the stream
//! timeline with `producer_start`, so the server stores them unchanged).

use super::soak::{acked_items, verify, Tally};
use super::*;
use std::collections::BTreeMap;

pub fn cameras(rt: &tokio::runtime::Runtime, media: &Media, work: &Path, args: &Args) -> Res<()> {
    let (n, seconds) = (args.cameras, args.seconds);
    let pace = media.frag_duration;
    let count = ((seconds as f64 / pace.as_secs_f64()).round() as usize).max(1);
    // Every camera sends the same fragments, already on a timeline that starts now.
    let start_s = wall_us() / 1_000_000;
    let chunks: Vec<Chunk> = (0..count)
        .map(|k| media.placed_fragment(k, start_s))
        .collect::<Res<_>>()?;
    let sums: Vec<(i64, [u8; 32])> = chunks
        .iter()
        .map(|c| -> Res<(i64, [u8; 32])> {
            let start_us = fmp4::fragment_facts_at(&media.facts, c.raw(), 0)?.start_us();
            Ok((start_us, Sha256::digest(c.raw()).into()))
        })
        .collect::<Res<_>>()?;
    let per_cam: usize = chunks.iter().map(|c| c.raw().len()).sum();
    let mbit_each = per_cam as f64 * 8.0 / (count as f64 * pace.as_secs_f64()) / 1e6;
    println!(
        "\n(b) {n} cameras x {count} fragments of {:.2} s ({mbit_each:.2} Mbit/s each, {:.0} \
         Mbit/s = {:.0} MB/s total), starts staggered over {:.2} s",
        pace.as_secs_f64(),
        n as f64 * mbit_each,
        n as f64 * mbit_each / 8.0,
        pace.as_secs_f64()
    );
    let mut config = String::from("[storage]\nmin_free_bytes = 0\n");
    if let Some(ms) = args.group_ms {
        config.push_str(&format!("group_commit_ms = {ms}\n"));
    }
    if let Some(sync) = &args.sync {
        config.push_str(&format!("sync = \"{sync}\"\n"));
    }
    config.push_str("[ingest]\n");
    if let Some(mb) = args.budget_mb {
        config.push_str(&format!("pending_budget_bytes = {}\n", mb * 1_000_000));
    }
    if let Some(s) = args.hold_back_secs {
        config.push_str(&format!("max_hold_back_secs = {s}\n"));
    }
    let config_path = work.join("cameras.toml");
    std::fs::write(&config_path, &config)?;
    println!("  server config: {}", config.replace('\n', " "));
    let data = work.join("data-cameras");
    let server = Server::start_in(work, "cameras", &data, Some(&config_path))?;
    let port = server.port;
    let metrics0 = rt.block_on(scrape(port));
    let cpu0 = server.cpu();
    let threads0 = server.thread_cpu();
    let own0 = own_cpu();
    let t0 = Instant::now();
    let feed = Feed::PlacedFixed {
        chunks: Arc::new(chunks),
        sums: Arc::new(sums),
        start_s,
    };
    let (results, rss) = rt.block_on(async {
        let base = tokio::time::Instant::now() + Duration::from_millis(100);
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let pid = server.pid;
            let sampling = sampling.clone();
            tokio::spawn(async move {
                let mut series = Vec::new();
                let t = Instant::now();
                while sampling.load(Ordering::Relaxed) && series.len() < 4 * 3600 {
                    series.push((t.elapsed(), rss_kb(pid)));
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                series
            })
        };
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let start = base + pace.mul_f64(i as f64 / n as f64);
                tokio::spawn(produce(Plan {
                    port,
                    stream: format!("benchcam{i}"),
                    init: media.init.clone(),
                    feed: feed.clone(),
                    count,
                    start,
                    pace: Some(pace),
                    stop: None,
                }))
            })
            .collect();
        let out = join_producers(tasks).await;
        sampling.store(false, Ordering::Relaxed);
        let series = sampler.await.unwrap_or_default();
        (out, series)
    });
    let wall = t0.elapsed();
    let cpu = server.cpu().saturating_sub(cpu0);
    let own = own_cpu().saturating_sub(own0);
    let threads1 = server.thread_cpu();
    let (hwm, rss_end) = server.memory_kb();
    let metrics1 = rt.block_on(scrape(port));

    let mut lat: Vec<Duration> = results.iter().flat_map(|r| r.latencies()).collect();
    lat.sort_unstable();
    let expected = n * count;
    let sent: usize = results.iter().map(|r| r.sent.len()).sum();
    let acked: usize = results.iter().map(|r| r.log.acks.len()).sum();
    println!("  acked {acked} of {sent} fragments sent ({expected} planned)");
    print_latency("last byte written -> persisted ack line:", lat.clone());
    print_latency(
        "last byte written -> server_time_us (commit):",
        results.iter().flat_map(|r| r.commit_lags()).collect(),
    );
    print_latency_over_time(&results, t0);
    print_latency_at_start(&results, t0);
    print_groups(&groups(&results));
    let delta = |name: &str| metric(&metrics1, name) - metric(&metrics0, name);
    println!(
        "  server: {:.0} commit groups/s (one pass of syncs + one SQLite commit each), {:.1} \
         fragments/group (from /metrics over {:.1} s)",
        delta("tapedeck_commit_groups_total") / wall.as_secs_f64(),
        delta("tapedeck_fragments_committed_total")
            / delta("tapedeck_commit_groups_total").max(1.0),
        wall.as_secs_f64()
    );
    let mean_ms =
        |h: &str| 1e3 * delta(&format!("{h}_sum")) / delta(&format!("{h}_count")).max(1.0);
    println!(
        "  per group: data sync {:.1} ms, SQLite commit {:.1} ms (means)",
        mean_ms("tapedeck_commit_fsync_seconds"),
        mean_ms("tapedeck_commit_sqlite_seconds")
    );
    println!(
        "  budget: {:.0} MB; producers held back {:.1} s in total ({:.0} fragments waited), \
         {:.0} sessions ended 'overloaded'",
        metric(&metrics1, "tapedeck_ingest_budget_bytes") / 1e6,
        delta("tapedeck_ingest_throttled_seconds_total"),
        delta("tapedeck_ingest_throttled_fragments_total"),
        delta("tapedeck_ingest_held_back_sessions_total"),
    );
    println!(
        "  longest time with no ack to any producer: {}",
        ms(longest_ack_gap(&results))
    );
    println!(
        "  server CPU {:.0}% of one core over {:.1} s (bench client itself: {:.0}%)",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        wall.as_secs_f64(),
        100.0 * own.as_secs_f64() / wall.as_secs_f64()
    );
    print_thread_cpu(&threads0, &threads1, wall);
    println!(
        "  server memory: VmHWM {:.0} MB, VmRSS at end {:.0} MB",
        hwm as f64 / 1e3,
        rss_end as f64 / 1e3
    );
    print_rss_series(&rss);
    print_endings(&results);
    let met = pct(&lat, 99.0) < Duration::from_millis(100) && acked == expected;
    println!(
        "  target p99 < 100 ms with every fragment acked: {}",
        if met { "met" } else { "NOT met" }
    );
    let log_lines = if args.verify {
        let tally = Arc::new(Tally::default());
        let streams: Vec<String> = (0..n).map(|i| format!("benchcam{i}")).collect();
        let items = acked_items(&results, &streams, &tally);
        let v = rt.block_on(verify(port, items, tally.clone()));
        println!(
            "  read back: {} of {} acked fragments byte-identical ({} lost, {} corrupt, {} \
             unreadable; {:.0} MB in {:.1} s)",
            v.ok,
            v.acked,
            v.lost,
            v.corrupt,
            v.unreadable,
            v.bytes as f64 / 1e6,
            v.took.as_secs_f64()
        );
        for ((client, kind), (count, first)) in tally.snapshot() {
            println!("    PROBLEM {client} {kind}: {count} (first: {first})");
        }
        server.stop()
    } else {
        server.stop()
    };
    print_problems(&results, &log_lines);
    Ok(())
}

/// Ack latency by when the fragment was sent, in 10 s windows: a start-up storm or a stall
/// shows where it happened, which one p99 over the run hides.
fn print_latency_over_time(results: &[ProducerResult], t0: Instant) {
    let mut by_window: BTreeMap<u64, Vec<Duration>> = BTreeMap::new();
    for r in results {
        for (s, a) in r.sent.iter().zip(&r.log.acks) {
            let w = s.0.saturating_duration_since(t0).as_secs() / 10 * 10;
            by_window
                .entry(w)
                .or_default()
                .push(a.0.saturating_duration_since(s.0));
        }
    }
    let parts: Vec<String> = by_window
        .into_iter()
        .map(|(w, mut v)| {
            v.sort_unstable();
            format!("{w}s {}/{}", ms(pct(&v, 50.0)), ms(pct(&v, 99.0)))
        })
        .collect();
    println!(
        "  ack latency p50/p99 by when sent (10 s windows): {}",
        parts.join(", ")
    );
}

/// Ack latency by a fragment's place in its upload (the first, the next four, the rest) and, for
/// the first 10 s, by the second it was sent in: the start-up storm, where 1,000 sessions open at
/// once, shows apart from the steady state.
fn print_latency_at_start(results: &[ProducerResult], t0: Instant) {
    let mut by_place: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut by_second: BTreeMap<u64, Vec<Duration>> = BTreeMap::new();
    for r in results {
        for (i, (s, a)) in r.sent.iter().zip(&r.log.acks).enumerate() {
            let latency = a.0.saturating_duration_since(s.0);
            let place = match i {
                0 => "1st",
                1..=4 => "2nd-5th",
                _ => "later",
            };
            by_place.entry(place).or_default().push(latency);
            let second = s.0.saturating_duration_since(t0).as_secs();
            if second < 10 {
                by_second.entry(second).or_default().push(latency);
            }
        }
    }
    let fmt = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        format!("{}/{}", ms(pct(v, 50.0)), ms(pct(v, 99.0)))
    };
    let places: Vec<String> = by_place
        .iter_mut()
        .map(|(k, v)| format!("{k} {}", fmt(v)))
        .collect();
    let seconds: Vec<String> = by_second
        .iter_mut()
        .map(|(k, v)| format!("{k}s {}", fmt(v)))
        .collect();
    println!(
        "  ack latency p50/p99 by place in the upload: {}",
        places.join(", ")
    );
    println!(
        "  ack latency p50/p99 by second sent (first 10 s): {}",
        seconds.join(", ")
    );
}

/// `/metrics` as (name with labels -> value); empty if it cannot be read.
async fn scrape(port: u16) -> BTreeMap<String, f64> {
    let Ok((200, body)) = http_call(port, "GET", "/metrics", None, b"").await else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// The longest time between two consecutive ack lines over all producers, from the first
/// ack to the last: a writer that stalls shows here even when every ack comes in the end.
fn longest_ack_gap(results: &[ProducerResult]) -> Duration {
    let mut times: Vec<Instant> = results
        .iter()
        .flat_map(|r| r.log.acks.iter().map(|a| a.0))
        .collect();
    times.sort_unstable();
    times
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or_default()
}

/// The server's RSS through the run: the highest sample in each 5 s.
fn print_rss_series(series: &[(Duration, u64)]) {
    let mut by_5s: BTreeMap<u64, u64> = BTreeMap::new();
    for (t, kb) in series {
        let e = by_5s.entry(t.as_secs() / 5 * 5).or_default();
        *e = (*e).max(*kb);
    }
    let line: Vec<String> = by_5s
        .iter()
        .map(|(s, kb)| format!("{s}s {:.0}", *kb as f64 / 1e3))
        .collect();
    let peak = series.iter().map(|s| s.1).max().unwrap_or(0);
    println!(
        "  server RSS over the run (MB, highest per 5 s; peak sampled {:.0}): {}",
        peak as f64 / 1e3,
        line.join(", ")
    );
}

/// How each upload ended: `session_ended` with its reason, an error without it, or neither.
fn print_endings(results: &[ProducerResult]) {
    let mut endings: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        let key = match (&r.log.end_reason, r.log.errors.first()) {
            (Some(reason), None) => format!("session_ended '{reason}'"),
            (Some(reason), Some(e)) => {
                format!("session_ended '{reason}' after error {}", error_kind(e))
            }
            (None, Some(e)) => format!("error {} (no session_ended)", error_kind(e)),
            (None, None) => "NO ENDING (no session_ended, no error)".to_string(),
        };
        *endings.entry(key).or_default() += 1;
    }
    println!("  uploads ended:");
    for (k, v) in endings {
        println!("    {v:>5} x {k}");
    }
}

/// A short name for an error line: the JSON error code, an HTTP status, or its first words.
fn error_kind(e: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(e) {
        if let Some(code) = v["error"]["code"].as_str() {
            return code.to_string();
        }
    }
    if let Some(rest) = e.strip_prefix("HTTP ") {
        let code: String = rest.chars().take(3).collect();
        let json = rest.get(5..).unwrap_or("");
        let detail = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .unwrap_or_default();
        return format!("HTTP {code} {detail}");
    }
    e.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
