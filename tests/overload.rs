//! Overload (issue 15) against the real binary: when received media cannot be made durable as
//! fast as it arrives, the server holds producers back at `ingest.pending_budget_bytes` instead
//! of buffering, says so in `/metrics` and `/readyz`, and a producer held back longer than
//! `ingest.max_hold_back_secs` gets an `overloaded` error and a clean session end.
//!
//! The slow disk is made on demand with `TAPEDECK_WRITER_FAULT=sync_delay_ms:N` (every group's
//! sync takes N ms longer), so nothing here depends on how fast this machine's disk is. The
//! sample's five fragments are 85-101 KB; a budget of 200 KB holds two of them.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

const SAMPLE: &str = "h264_aac_gop2s.mp4";
const SAMPLE_FRAGMENTS: usize = 5;
const BUDGET_BYTES: u64 = 200 * 1024;
/// Any fixed time: both servers place the same fragments at the same producer times.
const PRODUCER_START_MS: i64 = 1_750_000_000_000;

fn small_budget(hold_back_secs: u64) -> String {
    format!(
        "[ingest]\nmax_fragment_bytes = {BUDGET_BYTES}\npending_budget_bytes = {BUDGET_BYTES}\n\
         max_hold_back_secs = {hold_back_secs}\n"
    )
}

fn slow_disk(ms: u64) -> String {
    format!("sync_delay_ms:{ms}")
}

/// SHA-256 of every stored fragment of `stream`, in order.
fn fragment_sums(server: &Server, stream: &str) -> Vec<String> {
    all_fragments(server, stream)
        .iter()
        .map(|f| {
            let n = f["fragment"].as_i64().unwrap();
            let b = get_bytes(&server.api(&format!("/streams/{stream}/fragments/{n}")));
            format!("{:x}", Sha256::digest(&b))
        })
        .collect()
}

#[test]
fn a_throttled_producer_slows_down_and_its_fragments_are_intact() {
    let root = tempfile::tempdir().unwrap();
    let delay = slow_disk(150);
    let server = Server::start_in_env(
        root.path(),
        &small_budget(60),
        &[("TAPEDECK_WRITER_FAULT", delay.as_str())],
    );
    let summary = upload_at(&server, "cam", SAMPLE, PRODUCER_START_MS);
    assert_eq!(
        summary["fragments"], SAMPLE_FRAGMENTS,
        "every fragment stored: {summary}"
    );
    // The upload is 466 KB and the budget 200 KB, and nothing becomes durable in less than
    // 150 ms: the server must have stopped reading at least once.
    assert!(
        metric(&server, "tapedeck_ingest_throttled_fragments_total") >= 1.0,
        "throttling engaged"
    );
    assert!(metric(&server, "tapedeck_ingest_throttled_seconds_total") > 0.0);
    assert_eq!(metric(&server, "tapedeck_ingest_budget_used_bytes"), 0.0);
    assert_eq!(
        metric(&server, "tapedeck_ingest_budget_bytes"),
        BUDGET_BYTES as f64
    );

    // The same upload into a server that never throttles stores the same bytes.
    let reference = Server::start();
    upload_at(&reference, "cam", SAMPLE, PRODUCER_START_MS);
    let throttled = fragment_sums(&server, "cam");
    assert_eq!(throttled.len(), SAMPLE_FRAGMENTS);
    assert_eq!(throttled, fragment_sums(&reference, "cam"));
    assert_alive(&server);
}

/// Sends the sample as a chunked upload asking for NDJSON acks; returns the status and lines.
fn ndjson_upload(server: &Server, stream: &str) -> (u16, Vec<serde_json::Value>) {
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = std::fs::read(sample(SAMPLE)).unwrap();
    write!(
        conn,
        "PUT /api/v1/streams/{stream}/ingest?producer_start={PRODUCER_START_MS} HTTP/1.1\r\n\
         Host: {addr}\r\nContent-Type: video/mp4\r\nAccept: application/x-ndjson\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The server stops reading once it holds the producer back; a write that fails after it
    // has answered is not the result.
    let writer = {
        let mut w = conn.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(&body);
        })
    };
    let mut reader = BufReader::new(conn);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut chunked = false;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        chunked |= h
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked");
    }
    let mut lines = Vec::new();
    let mut text = String::new();
    if chunked {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap() == 0 {
                break;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            std::io::Read::read_exact(&mut reader, &mut chunk).unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    } else {
        std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
    }
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        lines.push(serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")));
    }
    let _ = writer.join();
    (status, lines)
}

#[test]
fn a_producer_held_back_past_the_limit_gets_overloaded_and_a_clean_end() {
    let root = tempfile::tempdir().unwrap();
    // Each group takes 4 s to become durable and a producer may wait 1 s: the third fragment
    // (the budget holds two) cannot get in in time.
    let delay = slow_disk(4000);
    let server = Server::start_in_env(
        root.path(),
        &small_budget(1),
        &[("TAPEDECK_WRITER_FAULT", delay.as_str())],
    );
    let watcher = {
        let url = server.url("/readyz");
        std::thread::spawn(move || {
            // While the producer is held back, readiness says why.
            let mut seen = None;
            wait_until("/readyz to say overloaded", Duration::from_secs(30), || {
                let r = client().get(&url).send().unwrap();
                let status = r.status().as_u16();
                let text = r.text().unwrap_or_default();
                if text.contains("overloaded") {
                    seen = Some((status, text));
                    return true;
                }
                false
            });
            seen.unwrap()
        })
    };
    let (status, lines) = ndjson_upload(&server, "cam");
    let (ready_status, ready_text) = watcher.join().unwrap();
    assert_eq!(ready_status, 503, "{ready_text}");
    assert!(ready_text.contains("producers held back"), "{ready_text}");

    assert_eq!(status, 200, "the first fragments were stored: {lines:?}");
    let persisted: Vec<i64> = lines
        .iter()
        .filter(|l| l["event"] == "persisted")
        .map(|l| l["fragment"].as_i64().unwrap())
        .collect();
    let error = lines
        .iter()
        .find(|l| l["event"] == "error")
        .unwrap_or_else(|| panic!("an error line: {lines:?}"));
    assert_eq!(error["code"], "UNAVAILABLE", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("overloaded"), "{message}");
    assert!(message.contains("ingest.max_hold_back_secs"), "{message}");
    assert!(message.contains("were not stored"), "{message}");
    let ended = lines.last().unwrap();
    assert_eq!(ended["event"], "session_ended", "{lines:?}");
    assert_eq!(ended["reason"], "overloaded");
    // Everything acknowledged is what the session says it stored, and it is all readable.
    assert!(!persisted.is_empty() && persisted.len() < SAMPLE_FRAGMENTS);
    assert_eq!(ended["fragments"], persisted.len());
    let stored = all_fragments(&server, "cam");
    assert_eq!(
        stored
            .iter()
            .map(|f| f["fragment"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        persisted
    );
    assert_eq!(
        metric(&server, "tapedeck_ingest_held_back_sessions_total"),
        1.0
    );
    assert_eq!(metric(&server, "tapedeck_ingest_budget_used_bytes"), 0.0);

    // Without NDJSON acks the answer is 503 with Retry-After, and the summary of what was kept.
    let body = std::fs::read(sample(SAMPLE)).unwrap();
    let (status, retry_after, json) = put_ingest(&server, "cam2", body);
    assert_eq!(status, 503, "{json}");
    assert!(retry_after.is_some());
    assert_eq!(json["error"]["code"], "UNAVAILABLE");
    assert!(
        json["summary"]["fragments"].as_u64().unwrap() >= 1,
        "{json}"
    );
    assert_alive(&server);
}
