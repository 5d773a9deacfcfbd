//! The follow feed and server-sent events against a live ffmpeg upload.

mod common;

use common::harness::{run_tests, test, Need};
use common::*;
use std::io::{BufRead, BufReader, Read};
use std::process::Command;
use std::time::{Duration, Instant};

fn main() -> std::process::ExitCode {
    run_tests(vec![
        test(
            "follow_feed_from_the_past_through_live_exactly_once",
            follow_feed_from_the_past_through_live_exactly_once,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test(
            "resume_after_disconnect_loses_and_repeats_nothing",
            resume_after_disconnect_loses_and_repeats_nothing,
        ),
        test(
            "events_for_every_fragment_in_order_and_resume_with_last_event_id",
            events_for_every_fragment_in_order_and_resume_with_last_event_id,
        ),
        test(
            "sample_motion_job_scores_a_moving_and_a_still_picture",
            sample_motion_job_scores_a_moving_and_a_still_picture,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("python3")]),
    ])
}

/// Reads top-level boxes from a follow-feed response: returns (fragment numbers in order from the
/// `free` markers, all bytes read). Stops after `want` fragments or when the body ends.
fn read_feed(mut r: impl Read, want: usize) -> (Vec<i64>, Vec<u8>) {
    let mut numbers = Vec::new();
    let mut all = Vec::new();
    loop {
        let mut head = [0u8; 8];
        if r.read_exact(&mut head).is_err() {
            break;
        }
        let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let mut body = vec![0u8; size - 8];
        r.read_exact(&mut body).unwrap();
        // (An empty `free` box is the feed's keepalive while it waits; markers carry JSON.)
        if &head[4..] == b"free" && !body.is_empty() {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            numbers.push(v["fragment"].as_i64().unwrap());
        }
        all.extend_from_slice(&head);
        all.extend_from_slice(&body);
        if &head[4..] == b"mdat" && numbers.len() >= want {
            break;
        }
    }
    (numbers, all)
}

fn live_ffmpeg(url: &str, seconds: u32) -> std::process::Child {
    spawn_live_upload(url, "testsrc2=size=320x240:rate=25", seconds, 25)
}

fn fragment_count(server: &Server, stream: &str) -> usize {
    client()
        .get(server.api(&format!("/streams/{stream}")))
        .send()
        .ok()
        .and_then(|r| r.json::<serde_json::Value>().ok())
        .and_then(|v| v["fragment_count"].as_u64())
        .unwrap_or(0) as usize
}

fn follow_feed_from_the_past_through_live_exactly_once() {
    let server = Server::start();
    // 12 s at 1 s GOPs: 12 fragments, 300 frames.
    let mut ffmpeg = live_ffmpeg(&server.api("/streams/live/ingest"), 12);
    wait_until("4 fragments", Duration::from_secs(30), || {
        fragment_count(&server, "live") >= 4
    });
    // Start at the time of fragment 2: part of it is archive, the rest arrives live.
    let frags = all_fragments(&server, "live");
    let start_ms = (frags[1]["producer_time_us"].as_i64().unwrap() + 999) / 1000;
    let resp = client()
        .get(server.api(&format!("/streams/live/media?start={start_ms}")))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tapedeck-first-fragment"], "2");
    let reader = std::thread::spawn(move || read_feed(resp, 11));
    assert!(ffmpeg.wait().unwrap().success());
    let (numbers, bytes) = reader.join().unwrap();
    let stored: Vec<i64> = all_fragments(&server, "live")
        .iter()
        .map(|f| f["fragment"].as_i64().unwrap())
        .collect();
    assert_eq!(stored.len(), 12);
    assert_eq!(
        numbers,
        stored[1..].to_vec(),
        "every fragment from 2 on, once, in order"
    );
    // The response decodes: fragments 2..=12 hold 11 s = 275 frames.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.mp4");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(ffprobe_frames(&path), 275);
}

fn resume_after_disconnect_loses_and_repeats_nothing() {
    let server = Server::start();
    let body = std::fs::read(sample("h264_cmaf_chunks.mp4")).unwrap();
    for _ in 0..2 {
        let r = client()
            .put(server.api("/streams/r/ingest"))
            .body(body.clone())
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }
    // Read 7 fragments, drop the connection, resume after the last one seen.
    let resp = client()
        .get(server.api("/streams/r/media?start=earliest&follow=false"))
        .send()
        .unwrap();
    let (first, _) = read_feed(resp, 7);
    assert_eq!(first.len(), 7);
    let last = *first.last().unwrap();
    let resp = client()
        .get(server.api(&format!("/streams/r/media?start=after:{last}&follow=false")))
        .send()
        .unwrap();
    let (rest, _) = read_feed(resp, usize::MAX);
    let mut all = first.clone();
    all.extend(&rest);
    let stored: Vec<i64> = all_fragments(&server, "r")
        .iter()
        .map(|f| f["fragment"].as_i64().unwrap())
        .collect();
    assert_eq!(all, stored);
    // Bad starts are 400s.
    for bad in ["after:x", "yesterday", "after:-3"] {
        let r = client()
            .get(server.api(&format!("/streams/r/media?start={bad}")))
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = client()
        .get(server.api("/streams/nope/media"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Reads SSE events until `until` says stop; returns (event, id, data) triples.
fn read_events(
    resp: reqwest::blocking::Response,
    mut until: impl FnMut(&[(String, Option<String>, serde_json::Value)]) -> bool,
) -> Vec<(String, Option<String>, serde_json::Value)> {
    let mut out = Vec::new();
    let (mut event, mut id, mut data) = (String::new(), None, String::new());
    for line in BufReader::new(resp).lines() {
        let Ok(line) = line else { break };
        if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_string();
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = v.to_string();
        } else if line.is_empty() && !event.is_empty() {
            out.push((
                std::mem::take(&mut event),
                id.take(),
                serde_json::from_str(&data).unwrap(),
            ));
            if until(&out) {
                break;
            }
        }
    }
    out
}

fn events_for_every_fragment_in_order_and_resume_with_last_event_id() {
    let server = Server::start();
    let events_url = server.api("/streams/ev/events");
    let r = client()
        .post(server.api("/streams"))
        .json(&serde_json::json!({"name": "ev"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let resp = client().get(&events_url).send().unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let collector = std::thread::spawn(move || {
        read_events(resp, |evs| {
            evs.iter().filter(|e| e.0 == "session_ended").count() >= 1
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    let body = std::fs::read(sample("h264_cmaf_chunks.mp4")).unwrap();
    let r = client()
        .put(server.api("/streams/ev/ingest"))
        .body(body.clone())
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let evs = collector.join().unwrap();
    let kinds: Vec<&str> = evs.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"session_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"session_ended"), "{kinds:?}");
    let numbers: Vec<i64> = evs
        .iter()
        .filter(|e| e.0 == "fragment")
        .map(|e| e.2["fragment"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=20).collect::<Vec<_>>());
    let ids: Vec<String> = evs
        .iter()
        .filter(|e| e.0 == "fragment")
        .map(|e| e.1.clone().unwrap())
        .collect();
    assert_eq!(ids[4], "5");
    // Disconnected after 5, more fragments arrive meanwhile; resuming replays 6.. then goes live.
    let r = client()
        .put(server.api("/streams/ev/ingest"))
        .body(body)
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let resp = client()
        .get(&events_url)
        .header("Last-Event-ID", "5")
        .send()
        .unwrap();
    let started = Instant::now();
    let evs = read_events(resp, |evs| {
        evs.iter().filter(|e| e.0 == "fragment").count() >= 35
            || started.elapsed() > Duration::from_secs(10)
    });
    let numbers: Vec<i64> = evs
        .iter()
        .filter(|e| e.0 == "fragment")
        .map(|e| e.2["fragment"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (6..=40).collect::<Vec<_>>());
    let e = &evs.iter().find(|e| e.0 == "fragment").unwrap().2;
    for key in [
        "producer_time",
        "server_time",
        "duration_us",
        "keyframe",
        "size_bytes",
    ] {
        assert!(!e[key].is_null(), "{key} in {e}");
    }
    // The global endpoint sees every stream.
    let resp = client().get(server.api("/events")).send().unwrap();
    let upload = std::thread::spawn({
        let url = server.api("/streams/other/ingest");
        move || {
            std::thread::sleep(Duration::from_millis(200));
            client()
                .put(url)
                .body(std::fs::read(sample("aac_only.mp4")).unwrap())
                .send()
                .unwrap()
                .status()
        }
    });
    let evs = read_events(resp, |evs| evs.iter().any(|e| e.0 == "session_ended"));
    assert!(upload.join().unwrap().is_success());
    assert!(evs
        .iter()
        .filter(|e| e.0 == "fragment")
        .all(|e| e.2["stream"] == "other"));
    assert_eq!(evs.iter().filter(|e| e.0 == "fragment").count(), 10);
    let r = client()
        .get(&events_url)
        .header("Last-Event-ID", "abc")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// The sample analytics job (samples/analytics/motion.py) against live ffmpeg uploads.
fn sample_motion_job_scores_a_moving_and_a_still_picture() {
    let server = Server::start();
    let run = |stream: &str, source: &str| -> Vec<f64> {
        let url = server.api(&format!("/streams/{stream}/ingest"));
        let mut ffmpeg = spawn_live_upload(&url, source, 8, 25);
        wait_until("first fragment", Duration::from_secs(30), || {
            fragment_count(&server, stream) >= 1
        });
        let out = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/samples/analytics/motion.py"
            ))
            .args([
                "--server",
                &server.base,
                "--stream",
                stream,
                "--start",
                "earliest",
                "--seconds",
                "4",
            ])
            .output()
            .unwrap();
        let _ = ffmpeg.kill();
        let _ = ffmpeg.wait();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "motion.py failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{stream}:\n{text}");
        text.lines()
            .map(|l| l.rsplit("motion=").next().unwrap().parse::<f64>().unwrap())
            .collect()
    };
    let moving = run("moving", "testsrc2=size=320x240:rate=25");
    assert_eq!(moving.len(), 4);
    assert!(moving.iter().all(|m| *m > 1.0), "{moving:?}");
    let still = run("still", "color=c=gray:size=320x240:rate=25");
    assert_eq!(still.len(), 4);
    assert!(still.iter().all(|m| *m < 0.5), "{still:?}");
}
