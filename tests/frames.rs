//! Decoded frames against the real binary: `frame.png`/`frame.jpg` at a time match ffmpeg's own
//! decode of the source file (PSNR), for H.264 (openh264, B-frames) and H.265 (through ffmpeg,
//! open GOPs); `frames` over a range samples the right times and pages without gaps or repeats;
//! `latest.jpg`; every documented error.

mod common;

use common::harness::{run_tests, test, Need};
use common::{all_fragments, client, sample, Server};
use serde_json::Value;
use std::process::Command;
use std::time::Instant;
use tapedeck::timefmt::format_us;

fn main() -> std::process::ExitCode {
    run_tests(vec![
        test(
            "h264_frames_match_ffmpeg_decode",
            h264_frames_match_ffmpeg_decode,
        )
        .needs(&[Need::Program("ffmpeg")]),
        test(
            "h265_frames_match_ffmpeg_decode",
            h265_frames_match_ffmpeg_decode,
        )
        .needs(&[Need::Program("ffmpeg")]),
        test(
            "single_frame_latency_for_information",
            single_frame_latency_for_information,
        ),
        test(
            "frames_over_a_range_page_without_gaps_or_repeats",
            frames_over_a_range_page_without_gaps_or_repeats,
        ),
        test(
            "latest_jpg_is_the_newest_keyframe",
            latest_jpg_is_the_newest_keyframe,
        ),
        test("bad_requests_get_json_errors", bad_requests_get_json_errors),
    ])
}

const GOP2S: &str = "h264_aac_gop2s.mp4";
const HEVC: &str = "h265_aac.mp4";
/// The samples are 25 fps.
const FRAME_US: i64 = 40_000;

fn upload(server: &Server, stream: &str, name: &str) {
    let body = std::fs::read(sample(name)).expect("read sample");
    let r = client()
        .put(server.api(&format!("/streams/{stream}/ingest")))
        .body(body)
        .send()
        .expect("PUT ingest");
    let status = r.status();
    let text = r.text().unwrap_or_default();
    assert!(status.is_success(), "upload {name}: {status} {text}");
}

/// Producer time of the stream's first fragment, µs.
fn first_time_us(server: &Server, stream: &str) -> i64 {
    all_fragments(server, stream)[0]["producer_time_us"]
        .as_i64()
        .expect("producer_time_us")
}

struct Fetched {
    status: u16,
    content_type: String,
    frame_time: Option<String>,
    fragment: Option<i64>,
    body: Vec<u8>,
}

fn fetch(url: &str) -> Fetched {
    let r = client().get(url).send().expect("GET");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Fetched {
        status: r.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        frame_time: header("x-tapedeck-frame-time"),
        fragment: header("x-tapedeck-fragment").and_then(|v| v.parse().ok()),
        body: r.bytes().expect("body").to_vec(),
    }
}

fn error_of(f: &Fetched) -> (String, String) {
    let v: Value = serde_json::from_slice(&f.body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(&f.body)
        )
    });
    (
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// ffmpeg's decode of the source file's frames with these display indexes, as RGB24.
fn ffmpeg_frames(file: &str, indexes: &[i64]) -> Vec<Vec<u8>> {
    let select = indexes
        .iter()
        .map(|n| format!("eq(n\\,{n})"))
        .collect::<Vec<_>>()
        .join("+");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(sample(file))
        .args([
            "-vf",
            &format!("select='{select}'"),
            "-fps_mode",
            "passthrough",
        ])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frame_len = 640 * 360 * 3;
    assert_eq!(out.stdout.len(), frame_len * indexes.len());
    out.stdout.chunks(frame_len).map(<[u8]>::to_vec).collect()
}

/// Pictures in a sample file (25 fps).
fn frame_count(file: &str) -> i64 {
    match file {
        GOP2S => 250,
        HEVC => 150,
        _ => panic!("frame count of {file}?"),
    }
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// For each (offset into the stream, display index in the source, fragment holding it),
/// `frame.png?at=` must be the
/// frame ffmpeg shows there: PSNR over 35 dB against ffmpeg's decode, and the best match among
/// the neighbouring frames (so an off-by-one frame fails even where frames look alike).
fn check_frames_match_ffmpeg(server: &Server, stream: &str, file: &str, cases: &[(i64, i64, i64)]) {
    let t0 = first_time_us(server, stream);
    let mut indexes: Vec<i64> = Vec::new();
    let exists = |i: &i64| (0..frame_count(file)).contains(i);
    for &(_, n, _) in cases {
        indexes.extend([n - 1, n, n + 1].into_iter().filter(exists));
    }
    indexes.sort();
    indexes.dedup();
    let reference = ffmpeg_frames(file, &indexes);
    let by_index = |n: i64| &reference[indexes.iter().position(|&i| i == n).unwrap()];
    for &(offset_us, n, fragment) in cases {
        let at_us = t0 + offset_us;
        let url = server.api(&format!(
            "/streams/{stream}/frame.png?at={}",
            format_us(at_us)
        ));
        let started = Instant::now();
        let f = fetch(&url);
        let took = started.elapsed();
        assert_eq!(f.status, 200, "{url}: {}", String::from_utf8_lossy(&f.body));
        assert_eq!(f.content_type, "image/png");
        let img = image::load_from_memory(&f.body).expect("PNG").to_rgb8();
        assert_eq!(img.dimensions(), (640, 360));
        let ours = img.as_raw();
        let p = psnr(ours, by_index(n));
        eprintln!(
            "{file}: frame.png at +{:.3} s (display frame {n}): PSNR {p:.1} dB, {} ms",
            offset_us as f64 / 1e6,
            took.as_millis()
        );
        assert!(p > 35.0, "{file} at +{offset_us} µs: PSNR {p:.1} dB");
        for other in [n - 1, n + 1].into_iter().filter(exists) {
            let q = psnr(ours, by_index(other));
            assert!(q < p, "{file} at +{offset_us} µs looks more like frame {other} ({q:.1} dB) than {n} ({p:.1} dB)");
        }
        // The picture is shown from its own display time until the next one.
        let shown = t0 + n * FRAME_US;
        assert_eq!(f.frame_time.as_deref(), Some(format_us(shown).as_str()));
        assert_eq!(f.fragment, Some(fragment), "{file} at +{offset_us} µs");
    }
}

fn h264_frames_match_ffmpeg_decode() {
    let server = Server::start();
    upload(&server, "cam", GOP2S);
    check_frames_match_ffmpeg(
        &server,
        "cam",
        GOP2S,
        &[
            (1_520_000, 38, 1), // between keyframes, among B-frames
            (0, 0, 1),          // the first keyframe
            (1_999_999, 49, 1), // the last picture of the first GOP
            (2_000_000, 50, 2), // the second keyframe
            (3_700_000, 92, 2),
            (9_990_000, 249, 5), // the last picture of the stream
        ],
    );
}

fn h265_frames_match_ffmpeg_decode() {
    let server = Server::start();
    upload(&server, "hevc", HEVC);
    check_frames_match_ffmpeg(
        &server,
        "hevc",
        HEVC,
        &[
            (1_520_000, 38, 1),
            // Frame 49 is a leading picture of the second (open) GOP: it follows that GOP's
            // keyframe in decode order and is decoded with the first GOP.
            (1_960_000, 49, 2),
            (2_000_000, 50, 2),
            (4_500_000, 112, 3),
        ],
    );
}

fn single_frame_latency_for_information() {
    let server = Server::start();
    upload(&server, "cam", GOP2S);
    let t0 = first_time_us(&server, "cam");
    let url = |offset_us: i64| {
        server.api(&format!(
            "/streams/cam/frame.jpg?at={}",
            format_us(t0 + offset_us)
        ))
    };
    for (what, offset_us) in [
        ("keyframe", 4_000_000),
        ("keyframe again (cached)", 4_000_000),
        ("frame 38 of a GOP", 5_520_000),
        ("frame 49 of a GOP", 5_999_000),
    ] {
        let started = Instant::now();
        let f = fetch(&url(offset_us));
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(f.status, 200, "{}", String::from_utf8_lossy(&f.body));
        assert_eq!(f.content_type, "image/jpeg");
        assert_eq!(&f.body[..3], &[0xff, 0xd8, 0xff]);
        let build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        println!("640x360 H.264 frame.jpg, {what}: {ms:.1} ms ({build} build)");
    }
}

/// Pages through `frames` and returns every entry.
fn all_frame_entries(
    server: &Server,
    stream: &str,
    query: &str,
    start: &str,
) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut pages = 0;
    let mut start = start.to_string();
    loop {
        let url = server.api(&format!("/streams/{stream}/frames?start={start}&{query}"));
        let page = common::get_json(&url);
        pages += 1;
        out.extend(page["frames"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(n) => {
                assert_eq!(page["next_us"].as_i64().map(format_us).as_deref(), Some(n));
                start = n.to_string();
            }
            None => return (out, pages),
        }
        assert!(pages < 100, "paging does not end");
    }
}

fn frames_over_a_range_page_without_gaps_or_repeats() {
    let server = Server::start();
    upload(&server, "cam", GOP2S);
    let t0 = first_time_us(&server, "cam");
    let end = t0 + 10_000_000;
    let query = format!("end={}&interval_ms=500&limit=8&width=320", format_us(end));
    let (entries, pages) = all_frame_entries(&server, "cam", &query, &format_us(t0));
    assert_eq!(pages, 3, "20 frames in pages of 8");
    assert_eq!(entries.len(), 20, "10 s every 500 ms");
    let mut previous_frame_time = i64::MIN;
    for (k, e) in entries.iter().enumerate() {
        let t = t0 + k as i64 * 500_000;
        assert_eq!(e["time_us"].as_i64(), Some(t), "entry {k}: {e}");
        assert_eq!(e["time"].as_str(), Some(format_us(t).as_str()));
        assert!(e.get("error").is_none(), "entry {k}: {e}");
        // The picture shown at t: displayed at or before t, less than a frame earlier.
        let shown = e["frame_time_us"].as_i64().unwrap();
        assert!(
            shown <= t && shown > t - FRAME_US,
            "entry {k}: shown {shown}, asked {t}"
        );
        assert!(shown > previous_frame_time);
        previous_frame_time = shown;
        assert_eq!(
            e["fragment"].as_i64(),
            Some(1 + k as i64 / 4),
            "2 s fragments"
        );
        assert_eq!(
            (e["width"].as_u64(), e["height"].as_u64()),
            (Some(320), Some(180))
        );
        use base64::Engine;
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(e["image"].as_str().unwrap())
            .unwrap();
        let img = image::load_from_memory(&jpeg).expect("JPEG");
        assert_eq!((img.width(), img.height()), (320, 180), "aspect kept");
    }
    // Different times show different pictures (testsrc2 moves).
    assert_ne!(entries[0]["image"], entries[1]["image"]);

    // Unpaged, PNG, a range that runs past the end of the recording: NO_MEDIA entries there.
    let url = server.api(&format!(
        "/streams/cam/frames?start={}&end={}&interval_ms=1000&format=png",
        format_us(t0 + 8_000_000),
        format_us(t0 + 12_000_000)
    ));
    let page = common::get_json(&url);
    assert!(page["next"].is_null());
    assert_eq!(page["content_type"], "image/png");
    let codes: Vec<&str> = page["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["error"]["code"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(codes, ["ok", "ok", "NO_MEDIA", "NO_MEDIA"]);
}

fn latest_jpg_is_the_newest_keyframe() {
    let server = Server::start();
    upload(&server, "cam", GOP2S);
    let frags = all_fragments(&server, "cam");
    let last = frags.last().unwrap();
    let f = fetch(&server.api("/streams/cam/latest.jpg?width=160"));
    assert_eq!(f.status, 200, "{}", String::from_utf8_lossy(&f.body));
    assert_eq!(f.content_type, "image/jpeg");
    assert_eq!(&f.body[..3], &[0xff, 0xd8, 0xff]);
    let img = image::load_from_memory(&f.body).unwrap();
    assert_eq!((img.width(), img.height()), (160, 90));
    assert_eq!(f.fragment, last["fragment"].as_i64());
    assert_eq!(
        f.frame_time.as_deref(),
        Some(format_us(last["producer_time_us"].as_i64().unwrap()).as_str())
    );
    // A stream with nothing in it yet.
    let r = client()
        .post(server.api("/streams"))
        .json(&serde_json::json!({"name": "empty"}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let f = fetch(&server.api("/streams/empty/latest.jpg"));
    assert_eq!((f.status, error_of(&f).0.as_str()), (404, "NO_MEDIA"));
}

fn bad_requests_get_json_errors() {
    let server = Server::start_with_config("[frames]\nffmpeg_path = \"/nonexistent/ffmpeg\"\n");
    upload(&server, "cam", GOP2S);
    upload(&server, "radio", "aac_only.mp4");
    upload(&server, "hevc", HEVC);
    let t0 = first_time_us(&server, "cam");
    let at = |offset_us: i64| format_us(t0 + offset_us);
    let cases: Vec<(String, u16, &str, &str)> =
        vec![
        (
            format!("/streams/nope/frame.jpg?at={}", at(0)),
            404,
            "NOT_FOUND",
            "nope",
        ),
        ("/streams/cam/frame.jpg".into(), 400, "INVALID_ARGUMENT", "'at' is required"),
        ("/streams/cam/frame.jpg?at=yesterday".into(), 400, "INVALID_ARGUMENT", "'at'"),
        (
            format!("/streams/cam/frame.jpg?at={}", at(-1_000_000)),
            404,
            "NO_MEDIA",
            "no media",
        ),
        (
            format!("/streams/cam/frame.png?at={}", at(60_000_000)),
            404,
            "NO_MEDIA",
            "ends at",
        ),
        (
            format!("/streams/cam/frame.jpg?at={}&width=5", at(0)),
            400,
            "INVALID_ARGUMENT",
            "'width' must be between 16 and 4096",
        ),
        (
            format!("/streams/cam/frame.jpg?at={}&width=100000", at(0)),
            400,
            "INVALID_ARGUMENT",
            "'width'",
        ),
        (
            format!("/streams/cam/frame.jpg?at={}&quality=0", at(0)),
            400,
            "INVALID_ARGUMENT",
            "'quality'",
        ),
        (
            format!("/streams/cam/frames?start={}&end={}", at(2_000_000), at(0)),
            400,
            "INVALID_ARGUMENT",
            "'end' must be after 'start'",
        ),
        (
            format!("/streams/cam/frames?end={}", at(0)),
            400,
            "INVALID_ARGUMENT",
            "'start' is required",
        ),
        (
            format!(
                "/streams/cam/frames?start={}&end={}&interval_ms=10",
                at(0),
                at(1_000_000)
            ),
            400,
            "INVALID_ARGUMENT",
            "at least 100 (frames.min_interval_ms)",
        ),
        (
            format!(
                "/streams/cam/frames?start={}&end={}&limit=500",
                at(0),
                at(1_000_000)
            ),
            400,
            "INVALID_ARGUMENT",
            "at most 100 frames",
        ),
        (
            format!(
                "/streams/cam/frames?start={}&end={}&format=gif",
                at(0),
                at(1_000_000)
            ),
            400,
            "INVALID_ARGUMENT",
            "'format'",
        ),
        (
            format!("/streams/radio/frame.jpg?at={}", format_us(first_time_us(&server, "radio"))),
            415,
            "UNSUPPORTED_MEDIA",
            "no video track",
        ),
        (
            format!("/streams/hevc/frame.jpg?at={}", format_us(first_time_us(&server, "hevc"))),
            415,
            "UNSUPPORTED_MEDIA",
            "H.265 frames need ffmpeg; none found at '/nonexistent/ffmpeg' (frames.ffmpeg_path)",
        ),
    ];
    for (path, status, code, needle) in cases {
        let f = fetch(&server.api(&path));
        let (got_code, message) = error_of(&f);
        assert_eq!(
            (f.status, got_code.as_str()),
            (status, code),
            "{path}: {message}"
        );
        assert!(
            message.contains(needle),
            "{path}: '{message}' lacks '{needle}'"
        );
    }
    // The limit message says how to page.
    let f = fetch(&server.api(&format!(
        "/streams/cam/frames?start={}&end={}&limit=101",
        at(0),
        at(1_000_000)
    )));
    assert!(error_of(&f).1.contains("'next'"));
}
