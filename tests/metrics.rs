//! `/metrics` and `/readyz` against a real server: ingest, commit and playback figures match what
//! the clients saw, the text is valid Prometheus exposition format, and readiness follows the
//! real state of the data disk.

mod common;

use common::harness::{run_tests, test, Need};
use common::*;
use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    run_tests(vec![
        test(
            "metrics_count_ingest_commits_and_playback_exactly",
            metrics_count_ingest_commits_and_playback_exactly,
        ),
        test(
            "metrics_count_retention_deletions_by_reason",
            metrics_count_retention_deletions_by_reason,
        ),
        test(
            "readyz_is_ready_on_a_working_server",
            readyz_is_ready_on_a_working_server,
        ),
        test(
            "readyz_reports_a_full_data_disk",
            readyz_reports_a_full_data_disk,
        )
        .needs(&[Need::Root]),
        test(
            "readyz_is_not_ready_while_recovery_runs",
            readyz_is_not_ready_while_recovery_runs,
        ),
    ])
}

/// One sample line: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses a metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*` (labels: no `:`).
fn name_at(s: &str, colon: bool) -> usize {
    s.char_indices()
        .take_while(|(i, c)| {
            c.is_ascii_alphabetic()
                || *c == '_'
                || (colon && *c == ':')
                || (*i > 0 && c.is_ascii_digit())
        })
        .count()
}

/// Parses `{k="v",...}` (with the format's escapes) at the start of `s`; returns the labels and
/// the rest.
fn parse_labels(s: &str, line: &str) -> (BTreeMap<String, String>, String) {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').expect("labels start with {");
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r.to_string());
        }
        let n = name_at(rest, false);
        assert!(n > 0, "bad label name in: {line}");
        let key = rest[..n].to_string();
        rest = rest[n..]
            .strip_prefix("=\"")
            .unwrap_or_else(|| panic!("label without =\" in: {line}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?} in: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) => panic!("raw newline in a label value: {line}"),
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in: {line}"),
            }
        };
        assert!(
            labels.insert(key, value).is_none(),
            "repeated label: {line}"
        );
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else {
            assert!(rest.starts_with('}'), "labels not closed in: {line}");
        }
    }
}

/// Checks every line of a scrape against the text exposition format and the naming rules we
/// keep, and returns the samples.
fn parse_exposition(text: &str) -> Vec<Sample> {
    assert!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: HashMap<String, bool> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            let mut parts = c.splitn(3, ' ');
            let (what, name, rest) = (
                parts.next().unwrap(),
                parts.next().expect("comment names a metric"),
                parts.next().expect("comment has text"),
            );
            assert_eq!(name_at(name, true), name.len(), "bad name: {line}");
            assert!(name.starts_with("tapedeck_"), "unprefixed: {line}");
            match what {
                "HELP" => {
                    assert!(!rest.is_empty(), "empty help: {line}");
                    assert!(helped.insert(name.into(), true).is_none(), "{line}");
                }
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram"].contains(&rest),
                        "bad type: {line}"
                    );
                    assert!(helped.contains_key(name), "TYPE before HELP: {line}");
                    assert!(
                        types.insert(name.into(), rest.into()).is_none(),
                        "family declared twice: {line}"
                    );
                    if rest == "counter" {
                        assert!(name.ends_with("_total"), "counter without _total: {line}");
                    } else {
                        assert!(!name.ends_with("_total"), "non-counter _total: {line}");
                    }
                    if rest == "histogram" {
                        assert!(name.ends_with("_seconds"), "unitless histogram: {line}");
                    }
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line in the exposition");
        let n = name_at(line, true);
        assert!(n > 0, "bad sample line: {line}");
        let name = &line[..n];
        let (labels, rest) = if line[n..].starts_with('{') {
            parse_labels(&line[n..], line)
        } else {
            (BTreeMap::new(), line[n..].to_string())
        };
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
        if kind == "counter" {
            assert!(value >= 0.0, "negative counter: {line}");
        }
        if name.ends_with("_bucket") {
            assert!(labels.contains_key("le"), "bucket without le: {line}");
        }
        assert!(
            seen.insert((name.to_string(), labels.clone())),
            "duplicate series: {line}"
        );
        samples.push((name.to_string(), labels, value));
    }
    // Histograms: cumulative buckets ending in +Inf, which equals _count.
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.0 == format!("{family}_bucket"))
            .collect();
        assert!(!buckets.is_empty(), "{family} has no buckets");
        for w in buckets.windows(2) {
            let le = |s: &Sample| s.1["le"].parse::<f64>().unwrap();
            assert!(le(w[0]) < le(w[1]), "{family}: buckets out of order");
            assert!(w[0].2 <= w[1].2, "{family}: buckets not cumulative");
        }
        let last = buckets.last().unwrap();
        assert_eq!(last.1["le"], "+Inf", "{family}: last bucket is not +Inf");
        let count = value(&samples, &format!("{family}_count"), &[]);
        assert_eq!(last.2, count, "{family}: +Inf bucket != _count");
        value(&samples, &format!("{family}_sum"), &[]);
    }
    samples
}

/// The value of the one sample with this name and exactly these labels.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.0 == name && s.1 == want)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .2
}

fn scrape(server: &Server) -> (String, Vec<Sample>) {
    let r = client().get(server.url("/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().unwrap();
    let samples = parse_exposition(&text);
    (text, samples)
}

fn get_ok(url: &str) -> Vec<u8> {
    let r = client().get(url).send().unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r.bytes().unwrap().to_vec()
}

fn metrics_count_ingest_commits_and_playback_exactly() {
    let server = Server::start();
    // A fresh server already exposes a valid, complete text.
    let (_, fresh) = scrape(&server);
    assert_eq!(
        value(&fresh, "tapedeck_ingest_ack_latency_seconds_count", &[]),
        0.0
    );
    assert_eq!(
        value(
            &fresh,
            "tapedeck_playback_bytes_total",
            &[("kind", "segment")]
        ),
        0.0
    );

    // Upload a sample; the response summary is what the producer was acknowledged.
    let body = std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap();
    let (status, _, summary) = put_ingest(&server, "m1", body);
    assert_eq!(status, 200);
    let acked = summary["fragments"].as_u64().unwrap();
    let acked_bytes = summary["bytes"].as_u64().unwrap();
    assert!(acked > 1, "{summary}");
    let rows = all_fragments(&server, "m1");
    assert_eq!(rows.len() as u64, acked);
    let stored_bytes: u64 = rows.iter().map(|f| f["size_bytes"].as_u64().unwrap()).sum();
    assert_eq!(stored_bytes, acked_bytes);

    // Something that is not MP4 is an ingest error of its stream, by error code.
    let (status, _, err) = put_ingest(&server, "m2", vec![0x55u8; 4096]);
    assert!((400..500).contains(&status), "{status}");
    let code = err["error"]["code"].as_str().unwrap().to_string();

    // Segment files, as ffmpeg's HLS muxer PUTs them; a garbage file is an error of that stream.
    let (seg_init, seg_frags) = split_sample("h264_aac_gop2s.mp4");
    let put = |file: &str, body: Vec<u8>| {
        put_segment_file(&server, "seg", file, body)
            .status()
            .as_u16()
    };
    assert_eq!(put("init.mp4", seg_init), 201);
    for (i, f) in seg_frags.iter().enumerate() {
        assert_eq!(put(&format!("s{i}.m4s"), f.clone()), 201);
    }
    let seg_bytes: u64 = all_fragments(&server, "seg")
        .iter()
        .map(|f| f["size_bytes"].as_u64().unwrap())
        .sum();
    let bad = put("bad.m4s", b"not a segment at all".to_vec());
    assert!((400..500).contains(&bad), "{bad}");

    // Play: an archive playlist, its init and first segment, a clip, and a miss.
    let first_ms = rows[0]["producer_time_us"].as_i64().unwrap() / 1000;
    let last = rows.last().unwrap();
    let end_ms =
        (last["producer_time_us"].as_i64().unwrap() + last["duration_us"].as_i64().unwrap()) / 1000
            + 1;
    let hls = server.api("/streams/m1/hls/");
    let playlist = get_ok(&format!("{hls}archive.m3u8?start={first_ms}&end={end_ms}"));
    let text = String::from_utf8(playlist.clone()).unwrap();
    let segment_uri = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .expect("a segment in the playlist");
    let init_uri = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|l| l.split('"').next())
        .expect("an init in the playlist");
    let segment = get_ok(&format!("{hls}{segment_uri}"));
    let init = get_ok(&format!("{hls}{init_uri}"));
    let clip = get_ok(&server.api(&format!(
        "/streams/m1/clip.mp4?start={first_ms}&end={end_ms}"
    )));
    let r = client()
        .get(format!("{hls}segments/999999.m4s"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    let (text, s) = scrape(&server);
    // Ingest, per stream.
    let m1 = [("stream", "m1")];
    assert_eq!(
        value(&s, "tapedeck_ingest_fragments_total", &m1),
        acked as f64
    );
    assert_eq!(
        value(&s, "tapedeck_ingest_bytes_total", &m1),
        acked_bytes as f64
    );
    assert_eq!(value(&s, "tapedeck_producers_connected", &m1), 0.0);
    assert_eq!(
        value(
            &s,
            "tapedeck_ingest_errors_total",
            &[("stream", "m2"), ("kind", &code)]
        ),
        1.0,
        "{text}"
    );
    assert!(
        !text.contains("tapedeck_ingest_errors_total{stream=\"m1\""),
        "m1 had no errors: {text}"
    );
    assert_eq!(
        value(&s, "tapedeck_ingest_fragments_total", &[("stream", "m2")]),
        0.0
    );
    let seg = [("stream", "seg")];
    assert_eq!(
        value(&s, "tapedeck_ingest_fragments_total", &seg),
        seg_frags.len() as f64
    );
    assert_eq!(
        value(&s, "tapedeck_ingest_bytes_total", &seg),
        seg_bytes as f64
    );
    let seg_errors: f64 = s
        .iter()
        .filter(|x| x.0 == "tapedeck_ingest_errors_total" && x.1["stream"] == "seg")
        .map(|x| x.2)
        .sum();
    assert_eq!(seg_errors, 1.0, "{text}");
    // The segment series stays open (a producer between files) until it idles out.
    assert_eq!(value(&s, "tapedeck_producers_connected", &seg), 1.0);
    let all_acked = (acked + seg_frags.len() as u64) as f64;
    // One ack latency per acknowledged fragment; commits and their fsyncs agree.
    assert_eq!(
        value(&s, "tapedeck_ingest_ack_latency_seconds_count", &[]),
        all_acked
    );
    assert!(value(&s, "tapedeck_ingest_ack_latency_seconds_sum", &[]) > 0.0);
    assert_eq!(
        value(&s, "tapedeck_fragments_committed_total", &[]),
        all_acked
    );
    let groups = value(&s, "tapedeck_commit_groups_total", &[]);
    assert!(groups >= 1.0 && groups <= all_acked, "{groups}");
    assert_eq!(
        value(&s, "tapedeck_commit_fsync_seconds_count", &[]),
        groups
    );
    // Stored media and the disk.
    assert_eq!(value(&s, "tapedeck_stream_fragments", &m1), acked as f64);
    assert_eq!(value(&s, "tapedeck_stream_bytes", &m1), stored_bytes as f64);
    assert_eq!(
        value(&s, "tapedeck_disk_used_bytes", &[]),
        (stored_bytes + seg_bytes) as f64
    );
    let free = value(&s, "tapedeck_disk_free_bytes", &[]);
    let total = value(&s, "tapedeck_disk_total_bytes", &[]);
    assert!(free > 0.0 && free <= total, "{free} of {total}");
    // Playback: requests by kind and status, bytes exactly as served.
    let req = |kind: &str, code: &str| {
        value(
            &s,
            "tapedeck_playback_requests_total",
            &[("kind", kind), ("code", code)],
        )
    };
    assert_eq!(req("playlist", "200"), 1.0);
    assert_eq!(req("init", "200"), 1.0);
    assert_eq!(req("segment", "200"), 1.0);
    assert_eq!(req("segment", "404"), 1.0);
    assert_eq!(req("clip", "200"), 1.0);
    let bytes = |kind: &str| value(&s, "tapedeck_playback_bytes_total", &[("kind", kind)]);
    assert_eq!(bytes("playlist"), playlist.len() as f64);
    assert_eq!(bytes("init"), init.len() as f64);
    assert_eq!(
        bytes("segment"),
        segment.len() as f64,
        "error bodies are not counted"
    );
    assert_eq!(bytes("clip"), clip.len() as f64);
    assert_eq!(bytes("follow"), 0.0);
    // Retention: nothing expired yet, by every reason.
    for reason in ["retention", "stream_quota", "disk_budget"] {
        assert_eq!(
            value(
                &s,
                "tapedeck_retention_deleted_fragments_total",
                &[("reason", reason)]
            ),
            0.0
        );
    }
}

fn metrics_count_retention_deletions_by_reason() {
    let server = Server::start();
    let body = std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap();
    assert_eq!(put_ingest(&server, "q1", body).0, 200);
    let rows = all_fragments(&server, "q1");
    let total: u64 = rows.iter().map(|f| f["size_bytes"].as_u64().unwrap()).sum();
    // A quota of one byte leaves nothing: every fragment goes, for the stream quota.
    let r = client()
        .patch(server.api("/streams/q1"))
        .json(&serde_json::json!({"retention_bytes": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(server.api("/retention/sweep"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // The PATCH woke the sweeper already, so this sweep may find nothing left to do.
    let (_, s) = scrape(&server);
    let quota = [("reason", "stream_quota")];
    assert_eq!(
        value(&s, "tapedeck_retention_deleted_fragments_total", &quota),
        rows.len() as f64
    );
    assert_eq!(
        value(&s, "tapedeck_retention_deleted_bytes_total", &quota),
        total as f64
    );
    assert_eq!(
        value(
            &s,
            "tapedeck_retention_deleted_bytes_total",
            &[("reason", "retention")]
        ),
        0.0
    );
    assert!(value(&s, "tapedeck_retention_sweeps_total", &[]) >= 1.0);
    assert_eq!(value(&s, "tapedeck_disk_used_bytes", &[]), 0.0);
}

fn readyz(server: &Server) -> (u16, String) {
    let r = client().get(server.url("/readyz")).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn readyz_is_ready_on_a_working_server() {
    let server = Server::start();
    assert_eq!(readyz(&server), (200, "ready\n".to_string()));
    assert_alive(&server);
}

/// Readiness follows the real data disk: a full disk makes the server not ready (503, JSON error
/// saying why), and it is ready again once space is freed. Needs to mount a tmpfs (root);
/// skipped where that is not allowed. (A read-only remount is refused while the server has its
/// files open for writing, so that case is not tested here; the kernel does it on I/O errors.)
fn readyz_reports_a_full_data_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("disk");
    let disk = Tmpfs::mount(&root, "64m");
    // One fragment may be up to 4 MiB: the server needs that much free to take ingest.
    let mut server = Server::start_in(&root, "[ingest]\nmax_fragment_bytes = 4194304\n");
    let ready = |server: &Server| {
        wait_until("ready", Duration::from_secs(10), || readyz(server).0 == 200);
    };
    ready(&server);

    // Fill the disk until less than one fragment fits.
    let filler = root.join("filler");
    let fill = disk.free_bytes().saturating_sub(1024 * 1024);
    let f = std::fs::File::create(&filler).unwrap();
    f.set_len(fill).unwrap();
    // tmpfs allocates on write: write it out so the space is really used.
    let chunk = vec![1u8; 1024 * 1024];
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(&f);
        let mut left = fill;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        w.flush().unwrap();
    }
    drop(f);
    assert!(disk.free_bytes() < 4 * 1024 * 1024);
    let (status, body) = readyz(&server);
    assert_eq!(status, 503, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "UNAVAILABLE", "{body}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("disk full"), "{message}");
    assert!(message.contains("ingest.max_fragment_bytes"), "{message}");
    // Liveness is not readiness: the process is fine.
    assert_alive(&server);
    std::fs::remove_file(&filler).unwrap();
    ready(&server);

    server.stop();
}

/// While recovery runs at startup the server already answers: `/healthz` 200 (alive, do not
/// restart it) and `/readyz` 503 "starting"; then 200 once the store is open. Other requests
/// wait for the store and then succeed. Recovery is made
/// to take a while the real way: thousands of orphan fragment files (as a crash leaves behind
/// when no committed row names them) that it must check and delete.
fn readyz_is_not_ready_while_recovery_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut first = Server::start_in(tmp.path(), "");
    first.stop();
    let data_dir = tmp.path().join("data");
    let orphans = data_dir.join("streams").join("999");
    std::fs::create_dir_all(&orphans).unwrap();
    const ORPHANS: usize = 10_000;
    for i in 1..=ORPHANS {
        std::fs::write(orphans.join(format!("{i:010}.frag")), b"x").unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = tmp.path().join("tapedeck.toml");
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let quick = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut starting, mut alive_while_starting) = (0, false);
    let mut waiting_request = None;
    loop {
        assert!(std::time::Instant::now() < deadline, "never became ready");
        let Ok(r) = quick.get(format!("{base}/readyz")).send() else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        let status = r.status().as_u16();
        let body = r.text().unwrap();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        let err: serde_json::Value = serde_json::from_str(&body).unwrap();
        // An existing data dir: what runs is recovery (a new one would say "creating").
        assert!(
            error_message(&err, "UNAVAILABLE").contains("starting")
                && error_message(&err, "UNAVAILABLE").contains("recovering after a restart"),
            "{body}"
        );
        starting += 1;
        if waiting_request.is_none() {
            let url = format!("{base}/api/v1/streams");
            waiting_request = Some(std::thread::spawn(move || {
                let r = client().get(url).send().unwrap();
                r.status().as_u16()
            }));
        }
        if !alive_while_starting {
            let r = quick.get(format!("{base}/healthz")).send().unwrap();
            alive_while_starting = r.status() == 200;
        }
    }
    if let Some(t) = waiting_request {
        assert_eq!(t.join().unwrap(), 200, "a request sent during recovery");
    }
    let _ = child.kill();
    let _ = child.wait();
    println!("{starting} probes answered 503 starting");
    assert!(starting > 0, "recovery ended before the first probe");
    assert!(
        alive_while_starting,
        "/healthz did not answer during recovery"
    );
    assert!(
        std::fs::read_dir(&orphans).unwrap().next().is_none(),
        "recovery removed the orphans"
    );
}
