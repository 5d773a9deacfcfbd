//! Real producers against the real server, with the committed samples: ffmpeg's mp4 muxer (long
//! PUT, paced) and curl (`-T file` sized, `-T -` chunked), whose stored fragments concatenated
//! after their init must decode to the same frame count as the source; ack latency; clean
//! shutdown. The segment muxers and the other producers are in `producer_matrix.rs`.

mod common;

use common::harness::{run_tests, test, Need};
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() -> std::process::ExitCode {
    run_tests(vec![
        test(
            "ffmpeg_long_put_is_stored_incrementally_and_decodes_fully",
            ffmpeg_long_put_is_stored_incrementally_and_decodes_fully,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test(
            "curl_sized_and_chunked_uploads",
            curl_sized_and_chunked_uploads,
        )
        .needs(&[Need::Program("curl"), Need::Program("ffprobe")]),
        test(
            "fragment_is_listed_within_one_second_of_its_last_byte",
            fragment_is_listed_within_one_second_of_its_last_byte,
        ),
        test(
            "clean_shutdown_persists_received_fragments",
            clean_shutdown_persists_received_fragments,
        )
        .needs(&[Need::Program("ffmpeg")]),
    ])
}

const FRAG_FLAGS: &str = "frag_keyframe+empty_moov+default_base_moof";

fn assert_same_frames(server: &Server, stream: &str, source: &str) {
    let dir = tempfile::tempdir().unwrap();
    let stored = reassemble(server, stream, dir.path());
    let expected = ffprobe_frames(&sample(source));
    let got = ffprobe_frames(&stored);
    assert_eq!(
        got, expected,
        "video frames decoded from stored fragments of {stream}"
    );
}

fn ffmpeg_long_put_is_stored_incrementally_and_decodes_fully() {
    let server = Server::start();
    let url = server.api("/streams/ff1/ingest");
    let started = Instant::now();
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(sample("h264_aac_gop2s.mp4"))
        .args([
            "-c",
            "copy",
            "-f",
            "mp4",
            "-movflags",
            FRAG_FLAGS,
            "-method",
            "PUT",
            &url,
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn ffmpeg");
    // While ffmpeg is still uploading (-re: 10 s), fragments must already be listed.
    let mut seen_while_running = 0;
    while ffmpeg.try_wait().unwrap().is_none() {
        if let Ok(r) = client().get(server.api("/streams/ff1/fragments")).send() {
            if r.status().is_success() {
                let v: serde_json::Value = r.json().unwrap();
                seen_while_running =
                    seen_while_running.max(v["fragments"].as_array().unwrap().len());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(60), "ffmpeg hangs");
    }
    assert!(ffmpeg.wait().unwrap().success(), "ffmpeg failed");
    assert!(
        seen_while_running >= 3,
        "only {seen_while_running} fragments were visible while the upload ran"
    );
    // ffmpeg exits once its last bytes are sent; the server may still be making them durable.
    wait_until("the upload session ends", Duration::from_secs(10), || {
        get_json(&server.api("/streams/ff1"))["producer_connected"] == false
    });
    let desc = get_json(&server.api("/streams/ff1"));
    assert_eq!(desc["fragment_count"], 5, "{desc}");
    assert_eq!(desc["codecs"], "avc1.64001e,mp4a.40.2");
    assert_same_frames(&server, "ff1", "h264_aac_gop2s.mp4");
    let dir = tempfile::tempdir().unwrap();
    let stored = reassemble(&server, "ff1", dir.path());
    assert_eq!(
        ffprobe_audio_frames(&stored),
        ffprobe_audio_frames(&sample("h264_aac_gop2s.mp4")),
        "audio frames"
    );
}

fn curl_sized_and_chunked_uploads() {
    let server = Server::start();
    for (stream, file, chunked) in [
        ("curl-sized", "h264_aac_gop2s.mp4", false),
        ("curl-chunked", "h264_cmaf_chunks.mp4", true),
        ("curl-hevc", "h265_aac.mp4", true),
        ("curl-audio", "aac_only.mp4", false),
    ] {
        let url = server.api(&format!("/streams/{stream}/ingest"));
        let out = if chunked {
            let f = std::fs::File::open(sample(file)).unwrap();
            let out = Command::new("curl")
                .args(["-sS", "--fail-with-body", "-T", "-", &url])
                .stdin(Stdio::from(f))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            run_ok(
                Command::new("curl")
                    .args(["-sS", "--fail-with-body", "-T"])
                    .arg(sample(file))
                    .arg(&url),
            )
        };
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(
            summary["fragments"].as_u64().unwrap() >= 2,
            "{stream}: {summary}"
        );
        assert_eq!(summary["refused"], 0, "{stream}: {summary}");
        if file == "aac_only.mp4" {
            let dir = tempfile::tempdir().unwrap();
            let stored = reassemble(&server, stream, dir.path());
            assert_eq!(
                ffprobe_audio_frames(&stored),
                ffprobe_audio_frames(&sample(file))
            );
        } else {
            assert_same_frames(&server, stream, file);
        }
    }
    let hevc = get_json(&server.api("/streams/curl-hevc"));
    assert!(
        hevc["codecs"].as_str().unwrap().starts_with("hvc1."),
        "{hevc}"
    );
}

fn write_chunk(s: &mut TcpStream, data: &[u8]) {
    write!(s, "{:x}\r\n", data.len()).unwrap();
    s.write_all(data).unwrap();
    s.write_all(b"\r\n").unwrap();
    s.flush().unwrap();
}

/// A fragment is listed by the fragments API within 1 s of its last byte arriving, while the
/// upload goes on.
fn fragment_is_listed_within_one_second_of_its_last_byte() {
    let server = Server::start();
    let addr = server.base.trim_start_matches("http://").to_string();
    let (init, frags) = split_sample("h264_aac_gop2s.mp4");
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "PUT /api/v1/streams/inc/ingest HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    write_chunk(&mut s, &init);
    for (i, frag) in frags.iter().enumerate() {
        // Send the fragment in two pieces, the last byte last.
        let (a, b) = frag.split_at(frag.len() - 1);
        write_chunk(&mut s, a);
        std::thread::sleep(Duration::from_millis(100));
        write_chunk(&mut s, b);
        let last_byte_at = Instant::now();
        let want = i + 1;
        loop {
            // (404 until the first fragment: the stream is created when it arrives.)
            let r = client()
                .get(server.api("/streams/inc/fragments"))
                .send()
                .unwrap();
            let listed = if r.status() == 404 {
                0
            } else {
                let v: serde_json::Value = r.json().unwrap();
                v["fragments"].as_array().unwrap().len()
            };
            if listed >= want {
                break;
            }
            assert!(
                last_byte_at.elapsed() < Duration::from_secs(1),
                "fragment {want} not listed within 1 s of its last byte"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        println!(
            "fragment {want} listed {:?} after its last byte",
            last_byte_at.elapsed()
        );
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// SIGTERM while ffmpeg uploads: stop accepting, persist what was received, exit 0.
fn clean_shutdown_persists_received_fragments() {
    let root = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(root.path(), "");
    let url = server.api("/streams/shut/ingest");
    let mut ffmpeg = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "quiet",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "30",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-f", "mp4", "-movflags", FRAG_FLAGS, "-method", "PUT", &url])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("3 fragments", Duration::from_secs(20), || {
        client()
            .get(server.api("/streams/shut"))
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .and_then(|v| v["fragment_count"].as_i64())
            .is_some_and(|n| n >= 3)
    });
    let code = server.stop();
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    assert_eq!(
        code,
        Some(0),
        "exit status after SIGTERM; log:\n{}",
        server.log()
    );
    let (code, out) = run_check(&server.data_dir, false);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("bytes past"),
        "clean shutdown leaves no unindexed tail: {out}"
    );
    let server = Server::start_in(root.path(), "");
    let sessions = get_json(&server.api("/streams/shut/sessions"));
    assert_eq!(
        sessions["sessions"][0]["end_reason"], "server shutting down",
        "{sessions}"
    );
    assert!(
        get_json(&server.api("/streams/shut"))["fragment_count"]
            .as_i64()
            .unwrap()
            >= 3
    );
}
