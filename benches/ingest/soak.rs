//! (d) Soak (issue 7): `--producers` cameras, `--viewers` HLS players and `--followers` follow-feed
//! consumers against one server for `--seconds`; then every acknowledged fragment is read back.
//!
//! - **Producers** are the paced cameras of part (b): one long chunked `PUT .../ingest` each, one
//!   fragment per fragment duration, NDJSON acks. Their fragments are already on the stream
//!   timeline (`Feed::Placed`, sent with `producer_start`), so the server's timeline shift is zero
//!   and a stored fragment must be byte-identical to the bytes sent. Each producer keeps the
//!   SHA-256 of every fragment it sends; an ack's `producer_time_us` says which one it was, and its
//!   `fragment` number is where to read it back. Producers start at different whole seconds, so no
//!   two streams hold the same bytes (a mix-up between streams would show).
//! - **Viewers** play `live.m3u8` like an LL-HLS player without parts: the first request without
//!   `_HLS_msn`, then blocking reloads for the next segment; each new segment (and each init once)
//!   is fetched and its top-level boxes checked (moof, mdat, sizes adding up to the body).
//!   Segments only ever move forward; a segment that left the window unseen is a gap.
//! - **Followers** read `GET .../media?start=now` and keep reading: the `free` markers must number
//!   the fragments n, n+1, ... with no gap, the body must split as fMP4 (`tapedeck::fmp4::Splitter`,
//!   one marker per fragment) and decode times must rise. On an error they resume with
//!   `start=after:<last>`, like a real consumer.
//! - **End**: viewers stop first (a blocking reload on a stream whose producer has left would end
//!   in 503 by design), then producers end their uploads and wait for `session_ended`, then each
//!   follower reads up to its stream's last acked fragment. Then every acked fragment is fetched
//!   with `GET .../fragments/{n}` over a few connections and compared with its checksum.
//! - **RSS** (VmRSS of the server) is sampled every second; "start" is the sample at the end of
//!   the warm-up (10 % of the run, at least 10 s, at most half), when the clients have all
//!   connected and the server's caches (SQLite pages, playlist views, allocator arenas) have
//!   filled; "end" is taken at the end of the run, before the clients stop, so both are under
//!   the same load. Growth between them is what a leak would show.
//!
//! Exit status is non-zero when an acked fragment is lost, corrupt or unreadable, when any 5xx
//! was answered, when a follower or viewer saw fragments out of order, a gap or unparsable media,
//! or (in runs of at least 5 minutes only; short runs are dominated by warm-up) when RSS grew by
//! more than 10 %. Timeouts and connection errors are counted and shown but do not fail the run
//! on their own (this machine is shared); their effect on fragments does.

use super::{
    loadavg, ms, own_cpu, pct, produce, rss_kb, wall_us, Args, Feed, Media, Plan, ProducerResult,
    Res, Server,
};
use crate::box_walker::BoxWalker;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tapedeck::fmp4::{self, Event, InitFacts, Splitter};

pub const MAX_PRODUCERS: usize = 500;
pub const MAX_CLIENTS: usize = 200;
/// Camera bitrate. 2 Mbit/s with a 1 s GOP is about 250 KB per 1 s fragment, a 720p IP camera's
/// main stream. 50 of them write 12.5 MB/s (7.5 GB in 10 minutes): a steady load this shared
/// 2-core VM sustains next to 20 viewers and 5 followers, not a throughput test.
pub const CAMERA_MBIT: u32 = 2;
/// Connections the final read-back uses.
const VERIFY_CONNECTIONS: usize = 4;
/// Per request (a blocking reload waits at most three 1 s target durations).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long followers get after the producers end to reach their stream's last fragment.
const FOLLOW_DRAIN: Duration = Duration::from_secs(30);
/// A viewer joining the live edge fetches this many of the newest segments first.
const JOIN_SEGMENTS: usize = 3;
/// Issue 7: RSS growth under 10 %, judged only in runs this long or longer.
const RSS_LIMIT_PCT: f64 = 10.0;
const RSS_ENFORCED_FROM_S: u64 = 300;
/// Acks slower than this are listed by when they happened (writer stalls).
const SLOW_ACK: Duration = Duration::from_millis(1000);

/// (threads, open file descriptors) of a process.
fn threads_and_fds(pid: i32) -> (usize, usize) {
    let count = |d: String| std::fs::read_dir(d).map_or(0, |e| e.count());
    (
        count(format!("/proc/{pid}/task")),
        count(format!("/proc/{pid}/fd")),
    )
}

/// (client type, kind) of an error.
type ErrorKey = (&'static str, String);
/// How many, and the first message.
type ErrorCount = (u64, String);

/// Errors by client type and kind.
#[derive(Default)]
pub(super) struct Tally(Mutex<BTreeMap<ErrorKey, ErrorCount>>);

impl Tally {
    fn add(&self, client: &'static str, kind: &str, detail: &str) {
        self.add_n(client, kind, detail, 1);
    }

    fn add_n(&self, client: &'static str, kind: &str, detail: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut m = self.0.lock().expect("tally");
        let e = m
            .entry((client, kind.to_string()))
            .or_insert_with(|| (0, detail.chars().take(200).collect()));
        e.0 += n;
    }

    pub(super) fn snapshot(&self) -> Vec<(ErrorKey, ErrorCount)> {
        let m = self.0.lock().expect("tally");
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The kinds that fail a run besides lost/corrupt fragments.
fn fails_run(kind: &str) -> bool {
    kind.starts_with("HTTP 5") || ["out-of-order", "gap", "parse"].contains(&kind)
}

fn reqwest_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else if let Some(s) = e.status() {
        format!("HTTP {}", s.as_u16())
    } else {
        "io".into()
    }
}

/// GET with a 2xx check: the body, or (kind, message).
async fn get(client: &reqwest::Client, url: &str) -> Result<Bytes, (String, String)> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| (reqwest_kind(&e), format!("{url}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err((
            format!("HTTP {}", status.as_u16()),
            format!("{url}: {}", body.trim()),
        ));
    }
    resp.bytes()
        .await
        .map_err(|e| (reqwest_kind(&e), format!("{url}: {e}")))
}

fn client(timeout: Option<Duration>) -> Res<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(2);
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    Ok(b.build()?)
}

/// The producer-side problems of one upload, by kind.
fn tally_producer(r: &ProducerResult, tally: &Tally) {
    for e in &r.log.errors {
        let kind = if e.starts_with("connect:") {
            "connect".to_string()
        } else if let Some(rest) = e.strip_prefix("HTTP ") {
            format!("HTTP {}", rest.split(':').next().unwrap_or("?"))
        } else if e.starts_with('{') {
            let code = serde_json::from_str::<serde_json::Value>(e)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string))
                .unwrap_or_default();
            format!("ingest error event ({code})")
        } else if e.starts_with("timed out") {
            "timeout".into()
        } else if e.starts_with("bad ack line") {
            "parse".into()
        } else {
            "io".into()
        };
        tally.add("producer", &kind, e);
    }
    if !r.log.ended {
        tally.add(
            "producer",
            "no session_ended",
            "upload ended without session_ended",
        );
    }
    tally.add_n(
        "producer",
        "out-of-order",
        "acks not numbered 1, 2, 3...",
        r.out_of_order() as u64,
    );
    let unacked = r.sent.len().saturating_sub(r.log.acks.len());
    tally.add_n(
        "producer",
        "sent, never acked",
        "fragments written but not acknowledged before the upload ended",
        unacked as u64,
    );
}

// ---------------------------------------------------------------------------------------------
// Viewers.

#[derive(Default)]
struct ViewerLog {
    playlists: u64,
    segments: u64,
    bytes: u64,
}

/// A live playlist: its segments as (media sequence, fragment number, URI), and its maps.
struct Live {
    segments: Vec<(i64, i64, String)>,
    maps: Vec<String>,
}

fn parse_live(text: &[u8]) -> Result<Live, String> {
    let text = std::str::from_utf8(text).map_err(|e| format!("playlist is not UTF-8: {e}"))?;
    if !text.starts_with("#EXTM3U") {
        return Err("playlist does not start with #EXTM3U".into());
    }
    let mut seq = None;
    let mut live = Live {
        segments: Vec::new(),
        maps: Vec::new(),
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = Some(
                v.trim()
                    .parse::<i64>()
                    .map_err(|e| format!("{line}: {e}"))?,
            );
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            let uri = v.split('"').next().unwrap_or_default().to_string();
            if !live.maps.contains(&uri) {
                live.maps.push(uri);
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            let number = line
                .strip_prefix("segments/")
                .and_then(|r| r.split(".m4s").next())
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| format!("unexpected segment URI '{line}'"))?;
            let s = seq.ok_or("segment before #EXT-X-MEDIA-SEQUENCE")?;
            live.segments
                .push((s + live.segments.len() as i64, number, line.to_string()));
        }
    }
    if live.segments.windows(2).any(|w| w[1].1 <= w[0].1) {
        return Err("segment numbers do not rise within the playlist".into());
    }
    Ok(live)
}

/// Top-level boxes of a segment: sizes must add up to the body, with a moof before an mdat.
fn check_boxes(data: &[u8], want_first: &[&[u8; 4]]) -> Result<(), String> {
    let mut at = 0;
    let mut kinds = Vec::new();
    while at < data.len() {
        let header = match fmp4::read_header(&data[at..]) {
            Ok(header) => header,
            Err(fmp4::HeaderProblem::Incomplete) => return Err("truncated box header".into()),
            Err(p) => return Err(format!("no box header at offset {at}: {p:?}")),
        };
        let size = header.size.unwrap_or(0) as usize;
        if size < header.header_len || at + size > data.len() {
            return Err(format!(
                "box size {size} at offset {at} does not fit the body"
            ));
        }
        kinds.push(header.box_type);
        at += size;
    }
    if !kinds.first().is_some_and(|k| want_first.contains(&k)) {
        return Err(format!(
            "starts with {:?}",
            kinds
                .first()
                .map(|k| String::from_utf8_lossy(k).into_owned())
        ));
    }
    if want_first.contains(&b"moof") && !kinds.contains(b"mdat") {
        return Err("no mdat".into());
    }
    Ok(())
}

async fn viewer(base: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> ViewerLog {
    let mut log = ViewerLog::default();
    let client = match client(Some(REQUEST_TIMEOUT)) {
        Ok(c) => c,
        Err(e) => {
            tally.add("viewer", "io", &e.to_string());
            return log;
        }
    };
    let mut inits: HashSet<String> = HashSet::new();
    // (media sequence, fragment number) of the newest segment fetched.
    let mut newest: Option<(i64, i64)> = None;
    while !stop.load(Ordering::Relaxed) {
        let url = match newest {
            None => format!("{base}live.m3u8"),
            Some((seq, _)) => format!("{base}live.m3u8?_HLS_msn={}", seq + 1),
        };
        let live = match get(&client, &url)
            .await
            .and_then(|b| parse_live(&b).map_err(|e| ("parse".to_string(), format!("{url}: {e}"))))
        {
            Ok(l) => l,
            Err((kind, msg)) => {
                tally.add("viewer", &kind, &msg);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        log.playlists += 1;
        for map in &live.maps {
            if inits.insert(map.clone()) {
                match get(&client, &format!("{base}{map}")).await {
                    Ok(b) => {
                        if let Err(e) = check_boxes(&b, &[b"ftyp", b"moov"]) {
                            tally.add("viewer", "parse", &format!("{map}: {e}"));
                        }
                    }
                    Err((kind, msg)) => {
                        tally.add("viewer", &kind, &msg);
                        inits.remove(map);
                    }
                }
            }
        }
        let fresh: Vec<&(i64, i64, String)> = match newest {
            None => {
                let skip = live.segments.len().saturating_sub(JOIN_SEGMENTS);
                live.segments[skip..].iter().collect()
            }
            Some((seq, number)) => {
                if let Some(last) = live.segments.last() {
                    if last.0 < seq || (last.0 == seq && last.1 != number) {
                        tally.add(
                            "viewer",
                            "out-of-order",
                            &format!("{url}: newest segment {last:?} after ({seq}, {number})"),
                        );
                    }
                }
                let fresh: Vec<_> = live.segments.iter().filter(|s| s.0 > seq).collect();
                if fresh.first().is_some_and(|f| f.0 > seq + 1) {
                    tally.add(
                        "viewer",
                        "gap",
                        &format!("{url}: segment {} left the window unseen", seq + 1),
                    );
                }
                fresh
            }
        };
        if fresh.is_empty() && newest.is_none() {
            // No complete segment yet: poll like a player that has nothing to play.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        for (seq, number, uri) in fresh {
            match get(&client, &format!("{base}{uri}")).await {
                Ok(b) => {
                    log.segments += 1;
                    log.bytes += b.len() as u64;
                    if let Err(e) = check_boxes(&b, &[b"moof"]) {
                        tally.add("viewer", "parse", &format!("{uri}: {e}"));
                    }
                }
                Err((kind, msg)) => tally.add("viewer", &kind, &msg),
            }
            newest = Some((*seq, *number));
        }
    }
    log
}

// ---------------------------------------------------------------------------------------------
// Followers.

#[derive(Default)]
struct FollowLog {
    fragments: u64,
    bytes: u64,
    /// The last fragment number seen.
    last: Option<i64>,
    reconnects: u64,
}

/// Reads the follow feed until it has fragment `target` (set when the producers have ended) or
/// `give_up`; reconnects after errors with `start=after:<last>`.
async fn follower(
    base: String,
    target: Arc<AtomicI64>,
    give_up: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> FollowLog {
    let mut log = FollowLog::default();
    let client = match client(None) {
        Ok(c) => c,
        Err(e) => {
            tally.add("follower", "io", &e.to_string());
            return log;
        }
    };
    let done = |log: &FollowLog| {
        give_up.load(Ordering::Relaxed)
            || log
                .last
                .is_some_and(|n| n >= target.load(Ordering::Relaxed))
    };
    while !done(&log) {
        if let Err((kind, msg)) = follow_once(&client, &base, &mut log, &done).await {
            tally.add("follower", &kind, &msg);
            log.reconnects += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    log
}

/// One follow-feed response, read until `done` or an error (kind, message).
async fn follow_once(
    client: &reqwest::Client,
    base: &str,
    log: &mut FollowLog,
    done: &(dyn Fn(&FollowLog) -> bool + Sync),
) -> Result<(), (String, String)> {
    let url = match log.last {
        None => format!("{base}?start=now"),
        Some(n) => format!("{base}?start=after:{n}"),
    };
    let mut resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| (reqwest_kind(&e), format!("{url}: {e}")))?;
    if !resp.status().is_success() {
        let code = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        return Err((format!("HTTP {code}"), format!("{url}: {}", body.trim())));
    }
    let parse = |m: String| ("parse".to_string(), format!("{url}: {m}"));
    let mut walker = BoxWalker::default();
    let mut splitter = Splitter::new(64 << 20);
    let mut facts: Option<InitFacts> = None;
    let (mut markers, mut ends, mut events) = (Vec::new(), Vec::new(), Vec::new());
    let (mut marked, mut split) = (0u64, 0u64);
    let mut prev_start_us = i64::MIN;
    while !done(log) {
        let chunk = match tokio::time::timeout(Duration::from_millis(250), resp.chunk()).await {
            Err(_) => continue, // nothing for a while: look at `done` again
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) => return Err(("feed ended".into(), format!("{url}: body ended"))),
            Ok(Err(e)) => return Err((reqwest_kind(&e), format!("{url}: {e}"))),
        };
        log.bytes += chunk.len() as u64;
        walker
            .feed(&chunk, Instant::now(), &mut ends, &mut markers)
            .map_err(|e| parse(e.to_string()))?;
        ends.clear();
        splitter
            .push(&chunk, &mut events)
            .map_err(|e| parse(e.to_string()))?;
        for n in markers.drain(..) {
            marked += 1;
            if let Some(last) = log.last {
                if n <= last {
                    return Err(("out-of-order".into(), format!("{url}: {n} after {last}")));
                }
                if n > last + 1 {
                    return Err(("gap".into(), format!("{url}: {n} after {last}")));
                }
            }
            log.last = Some(n);
        }
        for ev in events.drain(..) {
            match ev {
                Event::Init { facts: f, .. } => facts = Some(f),
                Event::Fragment(f) => {
                    split += 1;
                    log.fragments += 1;
                    let init = facts
                        .as_ref()
                        .ok_or_else(|| parse("fragment before init".into()))?;
                    let start_us = fmp4::fragment_facts_at(init, &f.bytes, f.stream_offset)
                        .map_err(|e| parse(e.to_string()))?
                        .start_us();
                    if start_us <= prev_start_us {
                        return Err((
                            "out-of-order".into(),
                            format!("{url}: decode time {start_us} us after {prev_start_us} us"),
                        ));
                    }
                    prev_start_us = start_us;
                }
            }
        }
        // Each fragment comes right after its marker: at most one marker ahead of the fragments.
        if !(split..=split + 1).contains(&marked) {
            return Err(parse(format!("{marked} markers for {split} fragments")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The run.

pub(super) struct Verified {
    pub(super) acked: usize,
    pub(super) ok: usize,
    pub(super) lost: usize,
    pub(super) corrupt: usize,
    pub(super) unreadable: usize,
    pub(super) bytes: u64,
    pub(super) took: Duration,
}

/// Reads every (stream, fragment number, checksum) back and compares.
pub(super) async fn verify(
    port: u16,
    items: Vec<(String, i64, [u8; 32])>,
    tally: Arc<Tally>,
) -> Verified {
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..VERIFY_CONNECTIONS)
        .map(|_| {
            let (items, next, tally) = (items.clone(), next.clone(), tally.clone());
            tokio::spawn(async move {
                let (mut ok, mut lost, mut corrupt, mut unreadable, mut bytes) = (0, 0, 0, 0, 0);
                let Ok(client) = client(Some(REQUEST_TIMEOUT)) else {
                    return (0, 0, 0, 0, 0);
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((stream, number, sum)) = items.get(i) else {
                        break;
                    };
                    let url = format!(
                        "http://127.0.0.1:{port}/api/v1/streams/{stream}/fragments/{number}"
                    );
                    // A timeout on this shared machine is not a lost fragment: try three times.
                    let mut result = get(&client, &url).await;
                    for _ in 0..2 {
                        match &result {
                            Err((k, _)) if k != "HTTP 404" => result = get(&client, &url).await,
                            _ => break,
                        }
                    }
                    match result {
                        Ok(b) => {
                            bytes += b.len() as u64;
                            if <[u8; 32]>::from(Sha256::digest(&b)) == *sum {
                                ok += 1;
                            } else {
                                corrupt += 1;
                                tally.add("verify", "corrupt", &format!("{url}: checksum differs"));
                            }
                        }
                        Err((kind, msg)) if kind == "HTTP 404" => {
                            lost += 1;
                            tally.add("verify", "lost (HTTP 404)", &msg);
                        }
                        Err((kind, msg)) => {
                            unreadable += 1;
                            tally.add("verify", &kind, &msg);
                        }
                    }
                }
                (ok, lost, corrupt, unreadable, bytes)
            })
        })
        .collect();
    let mut v = Verified {
        acked: items.len(),
        ok: 0,
        lost: 0,
        corrupt: 0,
        unreadable: 0,
        bytes: 0,
        took: Duration::ZERO,
    };
    for w in workers {
        let (ok, lost, corrupt, unreadable, bytes) = w.await.unwrap_or_default();
        v.ok += ok;
        v.lost += lost;
        v.corrupt += corrupt;
        v.unreadable += unreadable;
        v.bytes += bytes;
    }
    v.unreadable += v.acked - (v.ok + v.lost + v.corrupt + v.unreadable);
    v.took = t0.elapsed();
    v
}

/// Pairs each ack with the fragment the producer sent at that producer time.
pub(super) fn acked_items(
    results: &[ProducerResult],
    streams: &[String],
    tally: &Tally,
) -> Vec<(String, i64, [u8; 32])> {
    let mut items = Vec::new();
    for (r, stream) in results.iter().zip(streams) {
        let sums: BTreeMap<i64, [u8; 32]> = r.sums.iter().copied().collect();
        for a in &r.log.acks {
            let (number, producer_us) = (a.2, a.3);
            // Fragments are a second apart; a millisecond absorbs any rounding of the placement.
            match sums.range(producer_us - 1000..=producer_us + 1000).next() {
                Some((_, sum)) => items.push((stream.clone(), number, *sum)),
                None => tally.add(
                    "producer",
                    "parse",
                    &format!(
                        "{stream}: ack for fragment {number} names producer time {producer_us} \
                         us, which no fragment sent had"
                    ),
                ),
            }
        }
    }
    items
}

pub fn soak(rt: &tokio::runtime::Runtime, media: &Arc<Media>, work: &Path, args: &Args) -> Res<()> {
    let (n, seconds) = (args.producers, args.seconds);
    let run = Duration::from_secs(seconds);
    let warmup = Duration::from_secs((seconds / 10).max(10).min(seconds / 2));
    let pace = media.frag_duration;
    let count = ((seconds + 60) as f64 / pace.as_secs_f64()).ceil() as usize;
    println!(
        "\n(d) soak: {n} producers ({:.0} KB fragments every {:.2} s, {:.2} Mbit/s each, {:.1} \
         MB/s in all), {} HLS viewers, {} follow-feed consumers, {seconds} s; RSS start at {} s \
         (warm-up), end at {seconds} s",
        media.avg_frag_bytes() / 1e3,
        pace.as_secs_f64(),
        media.avg_frag_bytes() * 8.0 / pace.as_secs_f64() / 1e6,
        n as f64 * media.avg_frag_bytes() / pace.as_secs_f64() / 1e6,
        args.viewers,
        args.followers,
        warmup.as_secs()
    );
    println!("  load average at start: {}", loadavg());
    let server = Server::start(work, "soak")?;
    let (port, pid) = (server.port, server.pid);
    let streams: Vec<String> = (0..n).map(|i| format!("soak{i}")).collect();
    let tally = Arc::new(Tally::default());
    let stop_viewers = Arc::new(AtomicBool::new(false));
    let stop_producers = Arc::new(AtomicBool::new(false));
    let give_up = Arc::new(AtomicBool::new(false));
    let targets: Vec<Arc<AtomicI64>> = (0..args.followers)
        .map(|_| Arc::new(AtomicI64::new(i64::MAX)))
        .collect();
    let rss_trace: Arc<Mutex<Vec<(Duration, u64)>>> = Arc::default();
    let now_s = wall_us() / 1_000_000;
    // Server CPU and this process's CPU at the end of the warm-up and at the end of the run.
    let mut cpu = [Duration::ZERO; 4];
    let (mut rss_start, mut rss_end) = (0, 0);
    // (threads, open fds) of the server at the end of the warm-up and at the end.
    let mut handles = [(0, 0); 2];
    let mut t_base = Instant::now();

    let (results, viewers, followers, verified) = rt.block_on(async {
        let base = tokio::time::Instant::now() + Duration::from_millis(100);
        t_base = base.into_std();
        let sampler = {
            let trace = rss_trace.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    trace
                        .lock()
                        .expect("rss trace")
                        .push((base.elapsed(), rss_kb(pid)));
                }
            })
        };
        let producers: Vec<_> = (0..n)
            .map(|i| {
                tokio::spawn(produce(Plan {
                    port,
                    stream: streams[i].clone(),
                    init: media.init.clone(),
                    feed: Feed::Placed {
                        media: media.clone(),
                        // Different whole seconds: different bytes in every stream.
                        start_s: now_s - i as i64,
                    },
                    count,
                    start: base + pace.mul_f64(i as f64 / n as f64),
                    pace: Some(pace),
                    stop: Some(stop_producers.clone()),
                }))
            })
            .collect();
        // Clients join once every stream has its first fragments.
        tokio::time::sleep_until(base + pace * 2).await;
        let spread = |i: usize, of: usize| streams[i * n / of.max(1) % n].clone();
        let viewers: Vec<_> = (0..args.viewers)
            .map(|i| {
                let url = format!(
                    "http://127.0.0.1:{port}/api/v1/streams/{}/hls/",
                    spread(i, args.viewers)
                );
                tokio::spawn(viewer(url, stop_viewers.clone(), tally.clone()))
            })
            .collect();
        let followers: Vec<_> = (0..args.followers)
            .map(|i| {
                let url = format!(
                    "http://127.0.0.1:{port}/api/v1/streams/{}/media",
                    spread(i, args.followers)
                );
                tokio::spawn(follower(
                    url,
                    targets[i].clone(),
                    give_up.clone(),
                    tally.clone(),
                ))
            })
            .collect();

        tokio::time::sleep_until(base + warmup).await;
        rss_start = rss_kb(pid);
        handles[0] = threads_and_fds(pid);
        cpu[0] = server.cpu();
        cpu[1] = own_cpu();
        tokio::time::sleep_until(base + run).await;
        rss_end = rss_kb(pid);
        handles[1] = threads_and_fds(pid);
        cpu[2] = server.cpu();
        cpu[3] = own_cpu();

        stop_viewers.store(true, Ordering::Relaxed);
        let mut viewer_logs = Vec::new();
        for v in viewers {
            viewer_logs.push(v.await.unwrap_or_default());
        }
        stop_producers.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for p in producers {
            results.push(p.await.map_err(|e| format!("producer task: {e}"))?);
        }
        sampler.abort();
        for (i, t) in targets.iter().enumerate() {
            let stream = i * n / args.followers.max(1) % n;
            let last = results[stream].log.acks.last().map_or(0, |a| a.2);
            t.store(last, Ordering::Relaxed);
        }
        let deadline = Instant::now() + FOLLOW_DRAIN;
        while followers.iter().any(|f| !f.is_finished()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        give_up.store(true, Ordering::Relaxed);
        let mut follow_logs = Vec::new();
        for (i, f) in followers.into_iter().enumerate() {
            let log = f.await.unwrap_or_default();
            let want = targets[i].load(Ordering::Relaxed);
            if log.last.unwrap_or(0) < want {
                tally.add(
                    "follower",
                    "behind at end",
                    &format!(
                        "follower {i}: last fragment {:?}, stream's last {want}",
                        log.last
                    ),
                );
            }
            follow_logs.push(log);
        }
        for r in &results {
            tally_producer(r, &tally);
        }
        let items = acked_items(&results, &streams, &tally);
        let verified = verify(port, items, tally.clone()).await;
        Ok::<_, crate::common::BoxError>((results, viewer_logs, follow_logs, verified))
    })?;
    let log_lines = server.stop();
    let rss_trace = rss_trace.lock().expect("rss trace").clone();
    report(ReportIn {
        args,
        warmup,
        results: &results,
        viewers: &viewers,
        followers: &followers,
        verified: &verified,
        tally: &tally,
        rss: (rss_start, rss_end),
        handles,
        t_base,
        rss_trace: &rss_trace,
        cpu,
        log_lines: &log_lines,
    })
}

struct ReportIn<'a> {
    args: &'a Args,
    warmup: Duration,
    results: &'a [ProducerResult],
    viewers: &'a [ViewerLog],
    followers: &'a [FollowLog],
    verified: &'a Verified,
    tally: &'a Tally,
    /// VmRSS (kB) at the end of the warm-up and at the end of the run.
    rss: (u64, u64),
    handles: [(usize, usize); 2],
    /// When the first producer started.
    t_base: Instant,
    rss_trace: &'a [(Duration, u64)],
    cpu: [Duration; 4],
    log_lines: &'a [String],
}

/// Prints the summary; an error when the run failed.
fn report(r: ReportIn) -> Res<()> {
    let mb = |b: u64| b as f64 / 1e6;
    let sent: usize = r.results.iter().map(|p| p.sent.len()).sum();
    let acked: usize = r.results.iter().map(|p| p.log.acks.len()).sum();
    let mut lat: Vec<Duration> = r.results.iter().flat_map(|p| p.latencies()).collect();
    // Slow acks by the second of the run they were sent in: when the writer stalled.
    let mut slow: BTreeMap<u64, (usize, Duration)> = BTreeMap::new();
    for p in r.results {
        for (s, l) in p.sent.iter().zip(p.latencies()) {
            if l >= SLOW_ACK {
                let e = slow
                    .entry(s.0.saturating_duration_since(r.t_base).as_secs())
                    .or_default();
                e.0 += 1;
                e.1 = e.1.max(l);
            }
        }
    }
    lat.sort_unstable();
    println!(
        "  producers: {sent} fragments sent, {acked} acked; last byte -> ack p50 {}, p99 {}, \
         max {}",
        ms(pct(&lat, 50.0)),
        ms(pct(&lat, 99.0)),
        ms(lat.last().copied().unwrap_or_default())
    );
    let mut worst: Vec<(&u64, &(usize, Duration))> = slow.iter().collect();
    worst.sort_by_key(|w| std::cmp::Reverse(w.1 .1));
    let worst: Vec<String> = worst
        .iter()
        .take(6)
        .map(|(t, (n, l))| format!("+{t} s: {n} acks, max {}", ms(*l)))
        .collect();
    println!(
        "  acks >= {} ms: {} fragments sent in {} distinct seconds of the run; worst: {}",
        SLOW_ACK.as_millis(),
        slow.values().map(|v| v.0).sum::<usize>(),
        slow.len(),
        if worst.is_empty() {
            "-".to_string()
        } else {
            worst.join("; ")
        }
    );
    println!(
        "  viewers: {} playlists, {} segments, {:.0} MB",
        r.viewers.iter().map(|v| v.playlists).sum::<u64>(),
        r.viewers.iter().map(|v| v.segments).sum::<u64>(),
        mb(r.viewers.iter().map(|v| v.bytes).sum())
    );
    println!(
        "  followers: {} fragments, {:.0} MB, {} reconnects",
        r.followers.iter().map(|f| f.fragments).sum::<u64>(),
        mb(r.followers.iter().map(|f| f.bytes).sum()),
        r.followers.iter().map(|f| f.reconnects).sum::<u64>()
    );
    let v = r.verified;
    println!(
        "  verify: {} acked fragments read back ({:.0} MB in {:.1} s): {} byte-identical, {} \
         lost, {} corrupt, {} unreadable",
        v.acked,
        mb(v.bytes),
        v.took.as_secs_f64(),
        v.ok,
        v.lost,
        v.corrupt,
        v.unreadable
    );
    let errors = r.tally.snapshot();
    if errors.is_empty() {
        println!("  errors: none");
    } else {
        println!("  errors by client and kind:");
        for ((client, kind), (count, first)) in &errors {
            println!("    {client:<9} {kind:<28} {count:>6}   first: {first}");
        }
    }
    let (start, end) = r.rss;
    let growth = 100.0 * (end as f64 - start as f64) / (start.max(1) as f64);
    let peak = r.rss_trace.iter().map(|s| s.1).max().unwrap_or(0);
    let steady = r.args.seconds.saturating_sub(r.warmup.as_secs()).max(1) as f64;
    println!(
        "  server RSS: {:.1} MB at {} s (end of warm-up), {:.1} MB at {} s (end): growth \
         {growth:+.1} %; peak sampled {:.1} MB",
        start as f64 / 1e3,
        r.warmup.as_secs(),
        end as f64 / 1e3,
        r.args.seconds,
        peak as f64 / 1e3
    );
    let step = (r.rss_trace.len() / 10).max(1);
    let trace: Vec<String> = r
        .rss_trace
        .iter()
        .step_by(step)
        .map(|(t, kb)| format!("{}s {:.0}", t.as_secs(), *kb as f64 / 1e3))
        .collect();
    println!("  RSS trace (MB): {}", trace.join(", "));
    println!(
        "  server threads {} -> {}, open fds {} -> {} (end of warm-up -> end)",
        r.handles[0].0, r.handles[1].0, r.handles[0].1, r.handles[1].1
    );
    println!(
        "  CPU after the warm-up: server {:.0} % of one core, this bench {:.0} %; load average \
         at end {}",
        100.0 * r.cpu[2].saturating_sub(r.cpu[0]).as_secs_f64() / steady,
        100.0 * r.cpu[3].saturating_sub(r.cpu[1]).as_secs_f64() / steady,
        loadavg()
    );
    if !r.log_lines.is_empty() {
        println!(
            "  server log: {} WARN/ERROR lines, first ones:",
            r.log_lines.len()
        );
        for l in r.log_lines.iter().take(5) {
            println!("    {l}");
        }
    }

    let mut fail = Vec::new();
    if acked == 0 {
        fail.push("no fragment was acknowledged".to_string());
    }
    if v.lost + v.corrupt + v.unreadable > 0 {
        fail.push(format!(
            "{} lost, {} corrupt, {} unreadable acked fragments",
            v.lost, v.corrupt, v.unreadable
        ));
    }
    for ((client, kind), (count, _)) in &errors {
        if fails_run(kind) {
            fail.push(format!("{count} x {kind} ({client})"));
        }
    }
    if r.args.seconds >= RSS_ENFORCED_FROM_S && growth > RSS_LIMIT_PCT {
        fail.push(format!("RSS grew {growth:.1} % (limit {RSS_LIMIT_PCT} %)"));
    }
    let rss_note = if r.args.seconds >= RSS_ENFORCED_FROM_S {
        format!("RSS growth {growth:+.1} % (limit {RSS_LIMIT_PCT} %)")
    } else {
        format!(
            "RSS growth {growth:+.1} % (not judged: runs under {RSS_ENFORCED_FROM_S} s are \
             dominated by warm-up)"
        )
    };
    if fail.is_empty() {
        println!(
            "  soak: PASS — {} of {} acked fragments byte-identical, no 5xx; {rss_note}",
            v.ok, v.acked
        );
        Ok(())
    } else {
        println!("  soak: FAIL — {}; {rss_note}", fail.join("; "));
        Err(format!("soak failed: {}", fail.join("; ")).into())
    }
}
