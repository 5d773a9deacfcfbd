//! Stream delete: unreachable at once, its producer disconnected, its space freed in the
//! background, and a new stream of the same name starts empty.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[test]
fn delete_disconnects_the_producer_and_a_new_stream_starts_empty() {
    let server = Server::start();
    let addr = server.base.trim_start_matches("http://").to_string();
    let (init, frags) = split_sample("h264_aac_gop2s.mp4");
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "PUT /api/v1/streams/del/ingest HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nAccept: application/x-ndjson\r\n\r\n"
    )
    .unwrap();
    for part in [&init, &frags[0], &frags[1]] {
        write!(s, "{:x}\r\n", part.len()).unwrap();
        s.write_all(part).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    wait_until("2 fragments", Duration::from_secs(10), || {
        client()
            .get(server.api("/streams/del"))
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .is_some_and(|v| v["fragment_count"] == 2)
    });
    let stream_dirs = std::fs::read_dir(server.data_dir.join("streams"))
        .unwrap()
        .count();
    assert_eq!(stream_dirs, 1);
    let r = client().delete(server.api("/streams/del")).send().unwrap();
    assert_eq!(r.status(), 204);
    // Unreachable at once.
    let r = client()
        .get(server.api("/streams/del/fragments"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    // The producer's connection is ended by the server (its response completes).
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                resp.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&resp).contains("session_ended") {
                    break;
                }
            }
            Err(e) => panic!("producer not disconnected: {e}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = String::from_utf8_lossy(&resp);
    assert!(text.contains("\"session_ended\""), "{text}");
    // Space is freed in the background: the old stream's folder goes.
    wait_until("old files removed", Duration::from_secs(10), || {
        std::fs::read_dir(server.data_dir.join("streams")).map_or(0, |d| d.count()) == 0
    });
    // Same name, new stream: empty, numbering from 1.
    let body = std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap();
    let r = client()
        .put(server.api("/streams/del/ingest"))
        .body(body)
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let frags = all_fragments(&server, "del");
    assert_eq!(frags.len(), 5);
    assert_eq!(frags[0]["fragment"], 1);
}
