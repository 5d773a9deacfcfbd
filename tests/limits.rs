//! Limits and hostile clients against the real binary (issue 7): path traversal, oversized
//! heads, clients that trickle bytes, huge queries and absurd time ranges each get a clean 4xx or
//! a timeout close while a producer keeps uploading without error; connection and request limits
//! answer 429/503 with Retry-After and free their slots; the ingest rate paces a fast producer.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What the server did with a hand-written request.
#[derive(Debug)]
enum Reply {
    /// A response: status and body.
    Status(u16, String),
    /// The server closed the connection (or reset it) without a response.
    Closed,
}

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Sends `request` as is and reads until the server closes the connection or `timeout`.
fn raw(server: &Server, request: &[u8], timeout: Duration) -> Reply {
    let mut conn = TcpStream::connect(addr(server)).expect("connect");
    // The server may refuse before reading everything: a failed write is not the result.
    let _ = conn.write_all(request);
    read_reply(&mut conn, timeout)
}

fn read_reply(conn: &mut TcpStream, timeout: Duration) -> Reply {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no reply within {timeout:?}; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                if complete(&buf) {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
    {
        Some(code) => Reply::Status(code, text),
        None => Reply::Closed,
    }
}

/// A response whose body is complete (Content-Length bodies; error bodies are small).
fn complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= len
}

fn get(server: &Server, path: &str) -> Reply {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        addr(server)
    );
    raw(server, req.as_bytes(), Duration::from_secs(10))
}

/// Sends `start`, then one `byte` every `every` (for up to 30 s) on its own thread, and waits
/// for the server's reply: what it was and how many seconds it took.
fn trickle(server: &Server, start: &[u8], byte: u8, every: Duration) -> (Reply, f64) {
    let t = Instant::now();
    let mut conn = TcpStream::connect(addr(server)).unwrap();
    conn.write_all(start).unwrap();
    let mut writer = conn.try_clone().unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            std::thread::sleep(every);
            if writer.write_all(&[byte]).is_err() {
                break;
            }
        }
    });
    let reply = read_reply(&mut conn, Duration::from_secs(15));
    (reply, t.elapsed().as_secs_f64())
}

/// A 4xx with the JSON error body; returns the error code.
fn assert_client_error(what: &str, reply: &Reply) -> String {
    match reply {
        Reply::Status(code, text) if (400..500).contains(code) => {
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let v: Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {text}"));
            let c = v["error"]["code"].as_str().unwrap_or_default().to_string();
            assert!(!c.is_empty(), "{what}: no error code: {text}");
            println!("{what}: {code} {c}");
            c
        }
        Reply::Status(code, text) => panic!(
            "{what}: expected a 4xx, got {code}: {}",
            &text[..text.len().min(400)]
        ),
        Reply::Closed => panic!("{what}: expected a 4xx, the connection closed"),
    }
}

/// A body that hands out `pieces` one at a time, `gap` apart (a camera sending fragments).
struct Paced {
    pieces: std::collections::VecDeque<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    gap: Duration,
}

impl Read for Paced {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.current.len() {
            let Some(next) = self.pieces.pop_front() else {
                return Ok(0);
            };
            std::thread::sleep(self.gap);
            self.current = next;
            self.pos = 0;
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Uploads the sample's init and fragments to `stream`, one fragment every `gap`, on its own
/// thread; the handle gives the status and the upload summary.
fn paced_producer(
    server: &Server,
    stream: &str,
    gap: Duration,
) -> std::thread::JoinHandle<(u16, Value)> {
    let (init, fragments) = split_sample("h264_aac_gop2s.mp4");
    let mut pieces: std::collections::VecDeque<Vec<u8>> = fragments.into();
    pieces.push_front(init);
    let url = server.api(&format!("/streams/{stream}/ingest"));
    std::thread::spawn(move || {
        let body = Paced {
            pieces,
            current: Vec::new(),
            pos: 0,
            gap,
        };
        let resp = client()
            .put(url)
            .body(reqwest::blocking::Body::new(body))
            .send()
            .expect("producer PUT");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    })
}

#[test]
fn hostile_clients_get_clean_refusals_while_a_producer_uploads() {
    let server = Server::start_with_config(
        "[limits]\nheader_read_timeout_secs = 2\nbody_read_timeout_secs = 2\n",
    );
    let producer = paced_producer(&server, "cam", Duration::from_millis(1500));
    let started = Instant::now();

    // Path traversal in stream names, file names and UI paths.
    for path in [
        "/api/v1/streams/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/streams/../../etc/passwd/fragments",
        "/api/v1/streams/cam/hls/segments/..%2F..%2Ftapedeck.db",
        "/api/v1/streams/cam/hls/init/..%2F1.mp4",
        "/api/v1/streams/cam/fragments/..%2F..%2F1",
        "/api/v1/streams/cam/inits/..%2F1",
        "/ui/..%2F..%2FCargo.toml",
        "/ui/../../Cargo.toml",
    ] {
        assert_client_error(&format!("GET {path}"), &get(&server, path));
    }
    let put = format!(
        "PUT /api/v1/streams/cam/ingest/..%2F..%2Fevil.m4s HTTP/1.1\r\nHost: {}\r\n\
         Content-Length: 4\r\nConnection: close\r\n\r\nabcd",
        addr(&server)
    );
    assert_client_error(
        "PUT a segment file named ../../evil.m4s",
        &raw(&server, put.as_bytes(), Duration::from_secs(10)),
    );

    // A request head over limits.max_header_bytes (64 KiB): 431, or a reset if the server hangs up while
    // the rest is still arriving (both refuse it; the connection is not served).
    let big = format!(
        "GET /api/v1/streams HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\n\r\n",
        addr(&server),
        "a".repeat(100_000)
    );
    match raw(&server, big.as_bytes(), Duration::from_secs(10)) {
        Reply::Status(431, _) => println!("100 kB header: 431"),
        Reply::Closed => println!("100 kB header: connection reset"),
        other => panic!("oversized header: expected 431 or a close, got {other:?}"),
    }

    // A client that sends its head one byte a second is cut off after the header timeout.
    let (reply, secs) = trickle(
        &server,
        b"GET /api/v1/streams HTTP/1.1\r\nHost: x\r\n",
        b'X',
        Duration::from_secs(1),
    );
    println!("trickled head: {reply:?} after {secs:.1} s");
    assert!(
        matches!(reply, Reply::Closed | Reply::Status(408, _)),
        "slow head: {reply:?}"
    );
    assert!((1.5..8.0).contains(&secs), "closed after {secs:.1} s");

    // A body that sends one byte every 3 s times out (limits.body_read_timeout_secs = 2).
    let (reply, secs) = trickle(
        &server,
        b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 40\r\n\r\n{",
        b' ',
        Duration::from_secs(3),
    );
    println!("trickled body: after {secs:.1} s");
    assert_client_error("trickled body", &reply);
    assert!(secs < 8.0, "slow body answered after {secs:.1} s");

    // 10,000-element queries (under the head limit) reach the handlers and are refused.
    let many: Vec<String> = (0..10_000).map(|i| format!("p={}", i % 10)).collect();
    let q = many.join("&");
    for path in [
        format!("/api/v1/streams/cam/fragments?{q}"),
        format!("/api/v1/streams/cam/hls/archive.m3u8?{q}"),
        format!(
            "/api/v1/streams/cam/fragments?start={}",
            (0..10_000)
                .map(|i| (i % 10).to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    ] {
        assert_client_error("10,000-element query", &get(&server, &path));
    }

    // Negative, inverted and huge time ranges. (A huge but ordered range for `frames` is not
    // an error: it is answered one page at a time, with a `next` cursor.)
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for path in [
        "/api/v1/streams/cam/fragments?start=-5&end=-9".to_string(),
        format!(
            "/api/v1/streams/cam/fragments?start={now_ms}&end={}",
            now_ms - 60_000
        ),
        "/api/v1/streams/cam/fragments?start=99999999999999999999999".to_string(),
        format!(
            "/api/v1/streams/cam/hls/archive.m3u8?start={now_ms}&end={}",
            now_ms - 1
        ),
        format!(
            "/api/v1/streams/cam/clip.mp4?start={now_ms}&end={}",
            now_ms - 1000
        ),
        format!("/api/v1/streams/cam/clip.mp4?start=0&end={}", i64::MAX),
        "/api/v1/streams/cam/frame.jpg?at=-99999999999999999999".to_string(),
        format!(
            "/api/v1/streams/cam/frames?start={now_ms}&end={}&interval_ms=1000",
            now_ms - 10_000_000_000
        ),
        "/api/v1/streams/cam/frames?start=0&end=1&interval_ms=-1000".to_string(),
        "/api/v1/streams/cam/timeline?start=1e400&end=nan".to_string(),
        "/api/v1/streams/cam/media?start=after:-1".to_string(),
    ] {
        assert_client_error(&format!("GET {path}"), &get(&server, &path));
    }

    // The producer was never disturbed.
    let (status, summary) = producer.join().expect("producer thread");
    println!(
        "producer: {status} {summary} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["fragments"], 5, "{summary}");
    assert_eq!(summary["refused"], 0, "{summary}");
    assert_eq!(all_fragments(&server, "cam").len(), 5);
    assert!(
        !server.log().contains("panicked"),
        "server log:\n{}",
        server.log()
    );
}

/// Reads the first bytes of a streaming response (so the server has counted it).
fn open_stream(url: &str) -> reqwest::blocking::Response {
    let resp = client().get(url).send().expect("GET");
    assert_eq!(resp.status(), 200, "{url}");
    resp
}

fn refused(url: &str, status: u16, code: &str) {
    let resp = client().get(url).send().expect("GET");
    assert_eq!(resp.status().as_u16(), status, "{url}");
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = resp.json().expect("JSON error");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        retry.is_some_and(|r| r.parse::<u64>().is_ok()),
        "Retry-After"
    );
    println!("{url}: {status} {}", body["error"]["message"]);
}

#[test]
fn connection_and_request_limits_answer_with_retry_after() {
    let server = Server::start_with_config(
        "[limits]\nmax_follow_connections_per_stream = 2\nmax_event_connections_per_stream = 1\n\
         max_ingest_requests = 1\nmax_playlist_secs = 5\n",
    );
    // Media from a minute ago, so the archive is all in the past.
    let minute_ago_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 60_000;
    let resp = client()
        .put(server.api(&format!(
            "/streams/cam/ingest?producer_start={minute_ago_ms}"
        )))
        .body(std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Follow feeds: two per stream, the third is refused until one closes.
    let media = server.api("/streams/cam/media?start=earliest");
    let a = open_stream(&media);
    let _b = open_stream(&media);
    refused(&media, 429, "RESOURCE_EXHAUSTED");
    drop(a);
    wait_until("a follow slot frees", Duration::from_secs(5), || {
        client().get(&media).send().is_ok_and(|r| r.status() == 200)
    });

    // Event streams: one per stream; the global feed has its own count.
    let events = server.api("/streams/cam/events");
    let e = open_stream(&events);
    refused(&events, 429, "RESOURCE_EXHAUSTED");
    let _global = open_stream(&server.api("/events"));
    drop(e);

    // Ingest requests: one at a time server-wide.
    let mut conn = TcpStream::connect(addr(&server)).unwrap();
    conn.write_all(
        b"PUT /api/v1/streams/other/ingest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let resp = client()
        .put(server.api("/streams/cam/ingest"))
        .body(Vec::new())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().unwrap();
    assert!(
        error_message(&body, "UNAVAILABLE").contains("max_ingest_requests"),
        "{body}"
    );
    conn.write_all(b"0\r\n\r\n").unwrap();
    let _ = read_reply(&mut conn, Duration::from_secs(10));
    wait_until("the ingest slot frees", Duration::from_secs(5), || {
        put_ingest(&server, "cam2", Vec::new()).0 != 503
    });

    // Archive playlists: at most limits.max_playlist_secs (5 s) per request.
    let first = all_fragments(&server, "cam")[0]["producer_time_us"]
        .as_i64()
        .unwrap()
        / 1000;
    let url = server.api(&format!(
        "/streams/cam/hls/archive.m3u8?start={first}&end={}",
        first + 8000
    ));
    let resp = client().get(url).send().unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_playlist_secs"));
    // Without an end, the playlist is cut to the limit and closed.
    let text = client()
        .get(server.api(&format!("/streams/cam/hls/archive.m3u8?start={first}")))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    let segments = text.matches("#EXTINF").count();
    assert!((2..=4).contains(&segments), "{segments} segments:\n{text}");
}

#[test]
fn ingest_rate_paces_a_fast_producer() {
    let rate = 150_000u64;
    let server = Server::start_with_config(&format!(
        "[limits]\ningest_bytes_per_sec_per_stream = {rate}\n"
    ));
    let bytes = std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap();
    let t = Instant::now();
    let (status, _, summary) = put_ingest(&server, "cam", bytes.clone());
    let secs = t.elapsed().as_secs_f64();
    // One second of burst, then the rest at the rate.
    let expected = (bytes.len() as f64 - rate as f64) / rate as f64;
    println!(
        "{} bytes at {rate} B/s: {secs:.2} s (expected at least {expected:.2} s)",
        bytes.len()
    );
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["fragments"], 5, "nothing is dropped: {summary}");
    assert!(secs >= expected * 0.9, "not paced: {secs:.2} s");
    // Without the limit the same upload is quick (the pacing came from the limit).
    let server = Server::start();
    let t = Instant::now();
    assert_eq!(put_ingest(&server, "cam", bytes).0, 200);
    assert!(
        t.elapsed().as_secs_f64() < expected,
        "unlimited upload was slow too"
    );
}
