//! `GET /api/v1/streams/{name}/clip.mp4` against the real binary: clips across producer restarts
//! and gaps decode in ffprobe with every frame and continuous timestamps; Range/ETag/HEAD
//! behave as players need; HEVC and audio-only clips; errors.

mod common;

use common::harness::{run_tests, test, Need};
use common::{
    all_fragments, client, ffprobe_audio_frames, ffprobe_frames, json_of, sample, Server,
};
use reqwest::header;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> std::process::ExitCode {
    run_tests(vec![
        test(
            "clip_across_restarts_and_gaps_plays_continuously",
            clip_across_restarts_and_gaps_plays_continuously,
        )
        .needs(&[Need::Program("ffprobe")]),
        test("ranges_etags_and_head", ranges_etags_and_head),
        test("hevc_and_audio_only_clips", hevc_and_audio_only_clips)
            .needs(&[Need::Program("ffprobe")]),
        test(
            "cmaf_chunks_clip_starts_at_a_keyframe",
            cmaf_chunks_clip_starts_at_a_keyframe,
        )
        .needs(&[Need::Program("ffprobe")]),
        test("clip_errors", clip_errors),
        test(
            "clip_ends_before_an_init_it_cannot_carry",
            clip_ends_before_an_init_it_cannot_carry,
        )
        .needs(&[Need::Program("ffprobe")]),
    ])
}

const GOP2S: &str = "h264_aac_gop2s.mp4";

/// Uploads a sample file in one `PUT .../ingest[?query]`; panics unless it is stored.
fn upload(server: &Server, stream: &str, query: &str, name: &str) {
    let body = std::fs::read(sample(name)).expect("read sample");
    let mut url = server.api(&format!("/streams/{stream}/ingest"));
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    let r = client().put(url).body(body).send().expect("PUT ingest");
    let status = r.status();
    let text = r.text().unwrap_or_default();
    assert!(status.is_success(), "upload {name}: {status} {text}");
}

/// (first fragment start, last fragment end) of a stream, µs.
fn span_us(server: &Server, stream: &str) -> (i64, i64) {
    let frags = all_fragments(server, stream);
    let first = frags.first().expect("stream has fragments");
    let last = frags.last().unwrap();
    let start = first["producer_time_us"]
        .as_i64()
        .expect("producer_time_us");
    let end =
        last["producer_time_us"].as_i64().unwrap() + last["duration_us"].as_i64().expect("dur");
    (start, end)
}

fn clip_url(server: &Server, stream: &str, query: &str) -> String {
    server.api(&format!("/streams/{stream}/clip.mp4?{query}"))
}

/// GETs a clip, checks the download headers, writes it to `dir`; returns its path and bytes.
fn fetch_clip(url: &str, dir: &Path, file: &str) -> (PathBuf, Vec<u8>) {
    let r = client().get(url).send().expect("GET clip");
    let status = r.status();
    let headers = r.headers().clone();
    let bytes = r.bytes().expect("body").to_vec();
    assert_eq!(
        status,
        200,
        "GET {url}: {}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
    );
    assert_eq!(headers[header::CONTENT_TYPE], "video/mp4");
    assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
    assert_eq!(
        headers[header::CONTENT_LENGTH].to_str().unwrap(),
        bytes.len().to_string()
    );
    let cd = headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        cd.starts_with("attachment; filename=\"") && cd.ends_with(".mp4\""),
        "{cd}"
    );
    let path = dir.join(file);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn ffprobe(args: &[&str], path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn duration_s(path: &Path) -> f64 {
    ffprobe(
        &["-show_entries", "format=duration", "-of", "csv=p=0"],
        path,
    )
    .trim()
    .parse()
    .expect("duration")
}

/// Video packet decode times in file order, seconds.
fn video_dts(path: &Path) -> Vec<f64> {
    ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=dts_time",
            "-of",
            "csv=p=0",
        ],
        path,
    )
    .lines()
    .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
    .collect()
}

/// No jump between consecutive video packets larger than two frame durations (25 fps).
fn assert_continuous(path: &Path) -> Vec<f64> {
    let dts = video_dts(path);
    assert!(!dts.is_empty(), "no video packets in {}", path.display());
    for w in dts.windows(2) {
        let step = w[1] - w[0];
        assert!(
            step > 0.0 && step <= 0.080 + 1e-6,
            "video timestamps jump from {} to {} in {}",
            w[0],
            w[1],
            path.display()
        );
    }
    dts
}

fn error_of(r: reqwest::blocking::Response) -> (u16, Value) {
    let (status, v) = json_of(r);
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{v}");
    (status, v)
}

/// Three sessions of the 10 s sample: the second appended right after the first (no times given),
/// the third 30 s after the second ends. Returns (start of session 1, end of session 3), µs.
fn three_sessions(server: &Server, stream: &str) -> (i64, i64) {
    upload(server, stream, "", GOP2S);
    let (s1_start, _) = span_us(server, stream);
    upload(server, stream, "", GOP2S);
    let (_, s2_end) = span_us(server, stream);
    assert!(
        (s2_end - s1_start - 20_000_000).abs() < 100_000,
        "second session appends right after the first: {s1_start}..{s2_end}"
    );
    let gap_start_ms = (s2_end + 30_000_000) / 1000;
    upload(
        server,
        stream,
        &format!("producer_start={gap_start_ms}"),
        GOP2S,
    );
    let (_, s3_end) = span_us(server, stream);
    (s1_start, s3_end)
}

fn clip_across_restarts_and_gaps_plays_continuously() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (start, end) = three_sessions(&server, "cam");
    let query = format!("start={}&end={}", start / 1000, end / 1000 + 1000);
    let (path, _) = fetch_clip(&clip_url(&server, "cam", &query), dir.path(), "all.mp4");
    assert_eq!(
        ffprobe_frames(&path),
        750,
        "every frame of the three sessions"
    );
    assert!(ffprobe_audio_frames(&path) > 1000, "audio is present");
    let d = duration_s(&path);
    assert!((d - 30.0).abs() <= 2.0, "gaps collapse: duration {d}");
    let dts = assert_continuous(&path);
    assert!(dts[0].abs() < 0.2, "starts near zero: {}", dts[0]);

    // From the middle of session 1: starts at the keyframe at or before start (4 s), through the
    // last fragment starting before end (8 s): 6 s.
    let query = format!("start={}&end={}", start / 1000 + 5000, start / 1000 + 9000);
    let (path, _) = fetch_clip(&clip_url(&server, "cam", &query), dir.path(), "mid.mp4");
    let d = duration_s(&path);
    assert!((d - 6.0).abs() < 0.2, "clip from the keyframe at 4 s: {d}");
    assert_eq!(ffprobe_frames(&path), 150);
    assert_continuous(&path);

    // Fragmented: same frames, continuous from near zero.
    let query = format!(
        "start={}&end={}&format=fmp4",
        start / 1000,
        end / 1000 + 1000
    );
    let (path, bytes) = fetch_clip(&clip_url(&server, "cam", &query), dir.path(), "all-f.mp4");
    assert!(bytes.windows(4).any(|w| w == b"moof"), "fragmented output");
    assert_eq!(ffprobe_frames(&path), 750);
    let dts = assert_continuous(&path);
    assert!(dts[0].abs() < 0.2, "fmp4 starts near zero: {}", dts[0]);
    let span = dts.last().unwrap() - dts[0];
    assert!((span - 30.0).abs() <= 2.0, "fmp4 gaps collapse: {span}");
}

fn ranges_etags_and_head() {
    let server = Server::start();
    upload(&server, "r", "", GOP2S);
    upload(&server, "r", "", GOP2S);
    let (start, end) = span_us(&server, "r");
    for format in ["mp4", "fmp4"] {
        let url = clip_url(
            &server,
            "r",
            &format!("start={}&end={}&format={format}", start / 1000, end / 1000),
        );
        let full = client().get(&url).send().unwrap();
        assert_eq!(full.status(), 200);
        let etag = full.headers()[header::ETAG].to_str().unwrap().to_string();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "strong: {etag}"
        );
        let full = full.bytes().unwrap().to_vec();
        let len = full.len();
        assert!(len > 100_000, "{format}: {len}");

        let get_range = |range: &str| {
            let r = client()
                .get(&url)
                .header(header::RANGE, range)
                .send()
                .unwrap();
            let status = r.status().as_u16();
            let cr = r
                .headers()
                .get(header::CONTENT_RANGE)
                .map(|v| v.to_str().unwrap().to_string());
            (status, cr, r.bytes().unwrap().to_vec())
        };
        // A middle range that crosses the header and the media.
        let (a, b) = (len / 3, len / 3 + 123_456);
        let (s, cr, body) = get_range(&format!("bytes={a}-{b}"));
        assert_eq!(s, 206);
        assert_eq!(cr.unwrap(), format!("bytes {a}-{b}/{len}"));
        assert_eq!(body, &full[a..=b]);
        // A range inside the header.
        let (s, _, body) = get_range("bytes=0-99");
        assert_eq!((s, &body[..]), (206, &full[..100]));
        // Suffix and open ranges.
        let (s, cr, body) = get_range("bytes=-100");
        assert_eq!(s, 206);
        assert_eq!(
            cr.unwrap(),
            format!("bytes {}-{}/{len}", len - 100, len - 1)
        );
        assert_eq!(body, &full[len - 100..]);
        let n = len - 5000;
        let (s, _, body) = get_range(&format!("bytes={n}-"));
        assert_eq!((s, &body[..]), (206, &full[n..]));
        // Past the end: 416, JSON, with the length.
        let r = client()
            .get(&url)
            .header(header::RANGE, format!("bytes={len}-"))
            .send()
            .unwrap();
        assert_eq!(
            r.headers()[header::CONTENT_RANGE].to_str().unwrap(),
            format!("bytes */{len}")
        );
        let (s, v) = error_of(r);
        assert_eq!(s, 416, "{v}");

        // Stable ETag; 304 when the client has it.
        let again = client().get(&url).send().unwrap();
        assert_eq!(again.headers()[header::ETAG].to_str().unwrap(), etag);
        assert_eq!(again.bytes().unwrap().to_vec(), full, "same bytes again");
        let r = client()
            .get(&url)
            .header(header::IF_NONE_MATCH, &etag)
            .send()
            .unwrap();
        assert_eq!(r.status(), 304);
        assert!(r.bytes().unwrap().is_empty());

        // HEAD: same length, no body.
        let r = client().head(&url).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()[header::CONTENT_LENGTH].to_str().unwrap(),
            len.to_string()
        );
        assert_eq!(r.headers()[header::ETAG].to_str().unwrap(), etag);
        assert!(r.bytes().unwrap().is_empty());
    }
}

fn hevc_and_audio_only_clips() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    upload(&server, "hevc", "", "h265_aac.mp4");
    upload(&server, "hevc", "", "h265_aac.mp4");
    let (start, end) = span_us(&server, "hevc");
    for format in ["mp4", "fmp4"] {
        let q = format!("start={}&end={}&format={format}", start / 1000, end / 1000);
        let (path, _) = fetch_clip(
            &clip_url(&server, "hevc", &q),
            dir.path(),
            &format!("hevc-{format}.mp4"),
        );
        assert_eq!(ffprobe_frames(&path), 300, "{format}");
        assert!(ffprobe_audio_frames(&path) > 500, "{format}");
        assert_continuous(&path);
    }

    upload(&server, "radio", "", "aac_only.mp4");
    let (start, end) = span_us(&server, "radio");
    // From the middle: audio fragments are all "keyframes" (1 s each).
    let q = format!("start={}&end={}", start / 1000 + 2500, end / 1000);
    let (path, _) = fetch_clip(&clip_url(&server, "radio", &q), dir.path(), "radio.mp4");
    let d = duration_s(&path);
    assert!((d - 8.0).abs() < 0.2, "audio-only clip from 2 s: {d}");
    let frames = ffprobe_audio_frames(&path);
    assert!((370..=380).contains(&frames), "audio frames {frames}");
}

fn cmaf_chunks_clip_starts_at_a_keyframe() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    upload(&server, "chunks", "", "h264_cmaf_chunks.mp4");
    upload(&server, "chunks", "", "h264_cmaf_chunks.mp4");
    let (start, end) = span_us(&server, "chunks");
    // 3.3 s falls in a part; the clip must start at the keyframe at 2 s.
    let q = format!("start={}&end={}", start / 1000 + 3300, end / 1000);
    let (path, _) = fetch_clip(&clip_url(&server, "chunks", &q), dir.path(), "chunks.mp4");
    assert_eq!(
        ffprobe_frames(&path),
        450,
        "18 s of 25 fps from the keyframe at 2 s"
    );
    assert_continuous(&path);
}

fn clip_errors() {
    let server = Server::start_with_config("[limits]\nmax_clip_secs = 5\n");
    upload(&server, "e", "", GOP2S);
    let (start, _) = span_us(&server, "e");
    let s = start / 1000;
    let get = |q: &str| client().get(clip_url(&server, "e", q)).send().unwrap();

    let (status, v) = error_of(get(&format!("start={}&end={}", s - 100_000, s - 97_000)));
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "NOT_FOUND");
    let (status, v) = error_of(get(&format!("start={s}&end={s}")));
    assert_eq!(status, 400, "{v}");
    let (status, v) = error_of(get(&format!("start={}&end={s}", s + 1000)));
    assert_eq!(status, 400, "{v}");
    let (status, v) = error_of(get(&format!("end={s}")));
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("'start'"),
        "{v}"
    );
    let (status, v) = error_of(get(&format!("start=yesterday&end={s}")));
    assert_eq!(status, 400, "{v}");
    let (status, v) = error_of(get(&format!("start={s}&end={}&format=avi", s + 1000)));
    assert_eq!(status, 400, "{v}");
    let (status, v) = error_of(get(&format!("start={s}&end={}", s + 6000)));
    assert_eq!(status, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("max_clip_secs") && msg.contains("5 s"),
        "{msg}"
    );
    // Within the limit it works.
    assert_eq!(get(&format!("start={s}&end={}", s + 5000)).status(), 200);
    // Unknown stream.
    let r = client()
        .get(clip_url(
            &server,
            "nope",
            &format!("start={s}&end={}", s + 1000),
        ))
        .send()
        .unwrap();
    assert_eq!(error_of(r).0, 404);
}

fn clip_ends_before_an_init_it_cannot_carry() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // Video+audio, then audio only: another track layout.
    upload(&server, "mix", "", GOP2S);
    upload(&server, "mix", "", "aac_only.mp4");
    let (start, end) = span_us(&server, "mix");
    let q = format!("start={}&end={}", start / 1000, end / 1000);
    let r = client().get(clip_url(&server, "mix", &q)).send().unwrap();
    assert_eq!(r.status(), 200);
    let why = r.headers()["x-tapedeck-clip-truncated"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(why.contains("tracks"), "{why}");
    let path = dir.path().join("mix.mp4");
    std::fs::write(&path, r.bytes().unwrap()).unwrap();
    assert_eq!(ffprobe_frames(&path), 250, "the first session only");

    // Fragmented clips end at any init change; a clip of one init carries no such header.
    upload(&server, "codecs", "", GOP2S);
    upload(&server, "codecs", "", "h265_aac.mp4");
    let (start, end) = span_us(&server, "codecs");
    let q = format!("start={}&end={}&format=fmp4", start / 1000, end / 1000);
    let r = client()
        .get(clip_url(&server, "codecs", &q))
        .send()
        .unwrap();
    assert!(r.headers().contains_key("x-tapedeck-clip-truncated"));
    let q = format!("start={}&end={}", start / 1000, start / 1000 + 4000);
    let r = client()
        .get(clip_url(&server, "codecs", &q))
        .send()
        .unwrap();
    assert!(!r.headers().contains_key("x-tapedeck-clip-truncated"));
}
