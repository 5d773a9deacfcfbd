//! The producer conformance matrix (issue 12): every common producer's upload lands whole.
//!
//! Each row runs a real producer (ffmpeg in its mp4, HLS and DASH modes, GStreamer's `mp4mux`
//! into `curlhttpsink`, curl) against the real server, with source media made at test time by
//! `tests/producer_matrix/make_sources.sh`. For every row:
//! - the upload answers 2xx (or the producer exits 0) and the server logged no refusal;
//! - the fragments API lists exactly as many fragments as the producer wrote moofs, counted
//!   from the producer's own output written to a file with the same settings;
//! - the archive playlist and `clip.mp4` decode (ffprobe `-count_frames`) to the source's video
//!   frame count exactly and its audio frame count ±2;
//! - `frame.jpg` at mid-stream is a JPEG of the source's size;
//! - the follow feed from the start decodes to the same counts, and the timeline shows one span.
//!
//! Rows with one moof per track (`separate_moof`, `mp4mux`) also check A/V sync: the first audio
//! and first video presentation times of `clip.mp4` differ by what they differ in the source.

mod common;

use common::harness::{run_tests, test, Need};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    run_tests(vec![
        test("ffmpeg_put_frag_keyframe", ffmpeg_put_frag_keyframe)
            .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test("ffmpeg_put_separate_moof", ffmpeg_put_separate_moof)
            .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test(
            "ffmpeg_put_frag_duration_200ms",
            ffmpeg_put_frag_duration_200ms,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test("ffmpeg_put_b_frames", ffmpeg_put_b_frames)
            .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test("ffmpeg_put_audio_only", ffmpeg_put_audio_only)
            .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test("ffmpeg_put_h265", ffmpeg_put_h265)
            .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test(
            "ffmpeg_hls_one_connection_per_file",
            ffmpeg_hls_one_connection_per_file,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test(
            "ffmpeg_hls_pipelined_on_one_connection",
            ffmpeg_hls_pipelined_on_one_connection,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test(
            "ffmpeg_hls_pipelined_realtime",
            ffmpeg_hls_pipelined_realtime,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test(
            "ffmpeg_hls_realtime_delete_segments",
            ffmpeg_hls_realtime_delete_segments,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test(
            "ffmpeg_hls_pipelined_delete_segments",
            ffmpeg_hls_pipelined_delete_segments,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test(
            "ffmpeg_dash_pipelined_on_one_connection",
            ffmpeg_dash_pipelined_on_one_connection,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test(
            "gstreamer_mp4mux_audio_and_video",
            gstreamer_mp4mux_audio_and_video,
        )
        .needs(&[
            Need::Program("ffprobe"),
            Need::Gst(&["mp4mux", "curlhttpsink", "x264enc", "avenc_aac"]),
        ]),
        test("gstreamer_mp4mux_video_only", gstreamer_mp4mux_video_only).needs(&[
            Need::Program("ffprobe"),
            Need::Gst(&["mp4mux", "curlhttpsink", "x264enc"]),
        ]),
        test(
            "gstreamer_isofmp4mux_audio_and_video",
            gstreamer_isofmp4mux_audio_and_video,
        )
        .needs(&[
            Need::Program("ffprobe"),
            Need::Gst(&["isofmp4mux", "curlhttpsink", "x264enc", "avenc_aac"]),
        ]),
        test("gstreamer_cmafmux_video", gstreamer_cmafmux_video).needs(&[
            Need::Program("ffprobe"),
            Need::Gst(&["cmafmux", "curlhttpsink", "x264enc"]),
        ]),
        test("curl_sized_and_chunked", curl_sized_and_chunked).needs(&[
            Need::Program("ffmpeg"),
            Need::Program("ffprobe"),
            Need::Program("curl"),
        ]),
    ])
}

const FRAG_FLAGS: &str = "frag_keyframe+empty_moov+default_base_moof";
const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;

/// The sources, made once per test binary.
fn sources() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tapedeck-matrix-{}", std::process::id()));
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/producer_matrix/make_sources.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(&dir)
            .output()
            .expect("run make_sources.sh");
        assert!(
            out.status.success(),
            "make_sources.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn source(name: &str) -> PathBuf {
    sources().join(name)
}

/// Top-level `moof` boxes in an MP4 file (fragmented or a segment file).
fn count_moofs(bytes: &[u8]) -> usize {
    let mut at = 0usize;
    let mut n = 0;
    while at + 8 <= bytes.len() {
        let mut size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as u64;
        if size == 1 && at + 16 <= bytes.len() {
            size = u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        }
        if &bytes[at + 4..at + 8] == b"moof" {
            n += 1;
        }
        if size < 8 {
            break;
        }
        at += size as usize;
    }
    n
}

/// Children of the box whose payload is `bytes[start..end]`: (type, payload start, end).
fn children(bytes: &[u8], start: usize, end: usize) -> Vec<([u8; 4], usize, usize)> {
    let mut out = Vec::new();
    let mut at = start;
    while at + 8 <= end {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if size < 8 || at + size > end {
            break;
        }
        out.push((bytes[at + 4..at + 8].try_into().unwrap(), at + 8, at + size));
        at += size;
    }
    out
}

/// The track ids of each top-level moof's trafs, in order.
fn moof_tracks(bytes: &[u8]) -> Vec<Vec<u32>> {
    children(bytes, 0, bytes.len())
        .into_iter()
        .filter(|(t, ..)| t == b"moof")
        .map(|(_, s, e)| {
            children(bytes, s, e)
                .into_iter()
                .filter(|(t, ..)| t == b"traf")
                .filter_map(|(_, s, e)| {
                    let (_, tfhd, _) = children(bytes, s, e)
                        .into_iter()
                        .find(|(t, ..)| t == b"tfhd")?;
                    // version+flags, then track_ID.
                    Some(u32::from_be_bytes(
                        bytes[tfhd + 4..tfhd + 8].try_into().unwrap(),
                    ))
                })
                .collect()
        })
        .collect()
}

fn moofs_in_file(path: &Path) -> usize {
    count_moofs(&std::fs::read(path).unwrap())
}

/// moofs over every segment file (`.m4s`) a segment muxer wrote into `dir`.
fn moofs_in_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "m4s"))
        .filter(|e| !e.file_name().to_string_lossy().starts_with("init"))
        .map(|e| moofs_in_file(&e.path()))
        .sum()
}

/// (start time of the first video stream, of the first audio stream), seconds, by ffprobe.
fn first_times(target: &str) -> (Option<f64>, Option<f64>) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,start_time",
            "-of",
            "json",
        ])
        .arg(target)
        .output()
        .expect("ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut video = None;
    let mut audio = None;
    for s in v["streams"].as_array().cloned().unwrap_or_default() {
        let t = s["start_time"].as_str().and_then(|t| t.parse::<f64>().ok());
        match s["codec_type"].as_str() {
            Some("video") if video.is_none() => video = t,
            Some("audio") if audio.is_none() => audio = t,
            _ => {}
        }
    }
    (video, audio)
}

fn frames(target: &str, audio: bool) -> u64 {
    let p = Path::new(target);
    if audio {
        ffprobe_audio_frames(p)
    } else {
        ffprobe_frames(p)
    }
}

/// What a row expects of the stored stream.
struct Expect<'a> {
    stream: &'a str,
    /// The producer's own output (or the source it sent as is): the frame counts and A/V offset.
    reference: PathBuf,
    moofs: usize,
    video: bool,
    audio: bool,
    check_sync: bool,
}

fn verify(server: &Server, e: &Expect) {
    let stream = e.stream;
    // Segment muxers do not wait for answers: wait until every fragment is in.
    let mut count = 0;
    wait_until(
        &format!("{} fragments in {stream}", e.moofs),
        Duration::from_secs(20),
        || {
            count = client()
                .get(server.api(&format!("/streams/{stream}")))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .and_then(|v| v["fragment_count"].as_i64())
                .unwrap_or(0) as usize;
            count >= e.moofs
        },
    );
    // Let anything extra land, then count exactly.
    std::thread::sleep(Duration::from_millis(300));
    let fragments = all_fragments(server, stream);
    assert_eq!(
        fragments.len(),
        e.moofs,
        "{stream}: fragments stored vs moofs the producer wrote"
    );

    let log = server.log();
    for refusal in [
        "fragment refused",
        "fragment not stored",
        "upload ended with an error",
        "segment file refused",
    ] {
        assert!(
            !log.contains(refusal),
            "{stream}: the server logged '{refusal}':\n{log}"
        );
    }

    let describe = get_json(&server.api(&format!("/streams/{stream}")));
    let first_ms = describe["first_time_us"]
        .as_i64()
        .map(|us| us / 1000)
        .unwrap_or_else(|| fragments[0]["producer_time_us"].as_i64().unwrap() / 1000);
    let last = fragments.last().unwrap();
    let end_ms = fragments
        .iter()
        .map(|f| {
            (f["producer_time_us"].as_i64().unwrap() + f["duration_us"].as_i64().unwrap()) / 1000
        })
        .max()
        .unwrap()
        + 1;
    let _ = last;
    // An upload faster than real time is placed ahead of the clock (it appends at the server's
    // time plus media time), and a range reaching into the future is an EVENT playlist, which
    // ffprobe reads from near its live edge. Wait until the whole recording is in the past.
    wait_until(
        "the recording to be in the past",
        Duration::from_secs(30),
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
                > end_ms
        },
    );
    let archive = server.api(&format!(
        "/streams/{stream}/hls/archive.m3u8?start={first_ms}&end={end_ms}"
    ));
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    std::fs::write(
        &clip,
        get_bytes(&server.api(&format!(
            "/streams/{stream}/clip.mp4?start={first_ms}&end={end_ms}"
        ))),
    )
    .unwrap();
    // The follow feed from the start, not following live, carries every fragment.
    let feed = dir.path().join("feed.mp4");
    std::fs::write(
        &feed,
        get_bytes(&server.api(&format!(
            "/streams/{stream}/media?start={first_ms}&follow=false"
        ))),
    )
    .unwrap();
    // One recorded span, no gap inside the recording.
    let timeline = get_json(&server.api(&format!(
        "/streams/{stream}/timeline?start={first_ms}&end={end_ms}"
    )));
    let spans = timeline["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 1, "{stream}: one recorded span: {timeline}");
    assert_eq!(
        spans[0]["fragments"].as_u64(),
        Some(e.moofs as u64),
        "{stream}: {timeline}"
    );
    let reference = e.reference.to_str().unwrap();
    let clip_s = clip.to_str().unwrap();
    let feed_s = feed.to_str().unwrap();
    if e.video {
        let want = frames(reference, false);
        assert!(want > 0);
        assert_eq!(
            frames(&archive, false),
            want,
            "{stream}: video frames of archive.m3u8"
        );
        assert_eq!(
            frames(clip_s, false),
            want,
            "{stream}: video frames of clip.mp4"
        );
        assert_eq!(
            frames(feed_s, false),
            want,
            "{stream}: video frames of the follow feed"
        );
        let mid_ms = (first_ms + end_ms) / 2;
        let jpeg = get_bytes(&server.api(&format!("/streams/{stream}/frame.jpg?at={mid_ms}")));
        assert_eq!(&jpeg[..2], &[0xff, 0xd8], "{stream}: frame.jpg is a JPEG");
        let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
            .unwrap_or_else(|err| panic!("{stream}: frame.jpg does not decode: {err}"));
        assert_eq!(
            (img.width(), img.height()),
            (WIDTH, HEIGHT),
            "{stream}: frame.jpg size"
        );
    }
    if e.audio {
        let want = frames(reference, true) as i64;
        assert!(want > 0);
        for (what, target) in [
            ("archive.m3u8", archive.as_str()),
            ("clip.mp4", clip_s),
            ("the follow feed", feed_s),
        ] {
            let got = frames(target, true) as i64;
            assert!(
                (got - want).abs() <= 2,
                "{stream}: audio frames of {what}: {got}, source {want}"
            );
        }
    }
    if e.check_sync {
        let (sv, sa) = first_times(reference);
        let (cv, ca) = first_times(clip_s);
        let source_offset = sa.unwrap() - sv.unwrap();
        let clip_offset = ca.unwrap() - cv.unwrap();
        // One AAC frame at 48 kHz.
        assert!(
            (source_offset - clip_offset).abs() <= 1024.0 / 48000.0 + 1e-6,
            "{stream}: audio starts {clip_offset:.4} s after video in clip.mp4, {source_offset:.4} s in the source"
        );
    }
}

/// ffmpeg's mp4 muxer as a long chunked PUT; the same muxer into a file gives the moof count.
fn ffmpeg_long_put(
    stream: &str,
    src: &str,
    mux: &[&str],
    video: bool,
    audio: bool,
    check_sync: bool,
) {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("producer.mp4");
    let ff = |target: &str| {
        let mut c = Command::new("ffmpeg");
        c.args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(source(src))
            .args(["-c", "copy", "-f", "mp4"])
            .args(mux);
        if target.starts_with("http") {
            c.args(["-method", "PUT"]);
        }
        c.arg(target);
        c
    };
    run_ok(&mut ff(out.to_str().unwrap()));
    run_ok(&mut ff(&server.api(&format!("/streams/{stream}/ingest"))));
    verify(
        &server,
        &Expect {
            stream,
            reference: out.clone(),
            moofs: moofs_in_file(&out),
            video,
            audio,
            check_sync,
        },
    );
}

fn ffmpeg_put_frag_keyframe() {
    ffmpeg_long_put(
        "ff-key",
        "h264_aac.mp4",
        &["-movflags", FRAG_FLAGS],
        true,
        true,
        false,
    );
}

fn ffmpeg_put_separate_moof() {
    ffmpeg_long_put(
        "ff-separate",
        "h264_aac.mp4",
        &["-movflags", &format!("{FRAG_FLAGS}+separate_moof")],
        true,
        true,
        true,
    );
}

fn ffmpeg_put_frag_duration_200ms() {
    ffmpeg_long_put(
        "ff-chunks",
        "h264_aac.mp4",
        &[
            "-movflags",
            "empty_moov+default_base_moof",
            "-frag_duration",
            "200000",
        ],
        true,
        true,
        false,
    );
}

fn ffmpeg_put_b_frames() {
    ffmpeg_long_put(
        "ff-bf3",
        "h264_bf3_aac.mp4",
        &["-movflags", FRAG_FLAGS],
        true,
        true,
        false,
    );
}

fn ffmpeg_put_audio_only() {
    ffmpeg_long_put(
        "ff-audio",
        "aac.mp4",
        &[
            "-movflags",
            "empty_moov+default_base_moof",
            "-frag_duration",
            "1000000",
        ],
        false,
        true,
        false,
    );
}

fn ffmpeg_put_h265() {
    ffmpeg_long_put(
        "ff-hevc",
        "h265_aac.mp4",
        &["-movflags", FRAG_FLAGS],
        true,
        true,
        false,
    );
}

/// ffmpeg's HLS muxer PUTting fMP4 segment files; the same muxer into a directory gives the
/// moof count.
fn ffmpeg_hls(stream: &str, persistent: bool, realtime: bool, delete_segments: bool) {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let ff = |target: &str, remote: bool| {
        let mut c = Command::new("ffmpeg");
        c.args(["-hide_banner", "-loglevel", "error", "-y"]);
        if realtime && remote {
            c.arg("-re");
        }
        c.arg("-i").arg(source("h264_aac.mp4")).args([
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_segment_type",
            "fmp4",
            "-hls_time",
            "2",
            "-hls_list_size",
            "0",
        ]);
        if remote {
            if delete_segments {
                c.args(["-hls_list_size", "3", "-hls_flags", "delete_segments"]);
            }
            c.args([
                "-method",
                "PUT",
                "-http_persistent",
                if persistent { "1" } else { "0" },
            ]);
        }
        c.arg(target);
        c
    };
    run_ok(&mut ff(
        dir.path().join("index.m3u8").to_str().unwrap(),
        false,
    ));
    run_ok(&mut ff(
        &server.api(&format!("/streams/{stream}/ingest/index.m3u8")),
        true,
    ));
    verify(
        &server,
        &Expect {
            stream,
            reference: source("h264_aac.mp4"),
            moofs: moofs_in_segments(dir.path()),
            video: true,
            audio: true,
            check_sync: false,
        },
    );
    assert_one_series(&server, stream);
}

/// The files of one segment-muxer run form one ingest session.
fn assert_one_series(server: &Server, stream: &str) {
    let sessions = get_json(&server.api(&format!("/streams/{stream}/sessions")));
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        1,
        "{stream}: one series: {sessions}"
    );
}

fn ffmpeg_hls_one_connection_per_file() {
    ffmpeg_hls("hls-p0", false, false, false);
}

fn ffmpeg_hls_pipelined_on_one_connection() {
    ffmpeg_hls("hls-p1", true, false, false);
}

fn ffmpeg_hls_pipelined_realtime() {
    ffmpeg_hls("hls-p1-re", true, true, false);
}

fn ffmpeg_hls_realtime_delete_segments() {
    ffmpeg_hls("hls-p0-re-del", false, true, true);
}

fn ffmpeg_hls_pipelined_delete_segments() {
    ffmpeg_hls("hls-p1-del", true, false, true);
}

fn ffmpeg_dash_pipelined_on_one_connection() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // One representation: DASH puts each track in its own segment files, and a stream is one
    // track set.
    let ff = |target: &str, remote: bool| {
        let mut c = Command::new("ffmpeg");
        c.args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(source("h264.mp4"))
            .args([
                "-map",
                "0:v",
                "-c",
                "copy",
                "-f",
                "dash",
                "-seg_duration",
                "2",
            ]);
        if remote {
            c.args(["-method", "PUT", "-http_persistent", "1"]);
        }
        c.arg(target);
        c
    };
    run_ok(&mut ff(
        dir.path().join("manifest.mpd").to_str().unwrap(),
        false,
    ));
    run_ok(&mut ff(
        &server.api("/streams/dash-p1/ingest/manifest.mpd"),
        true,
    ));
    verify(
        &server,
        &Expect {
            stream: "dash-p1",
            reference: source("h264.mp4"),
            moofs: moofs_in_segments(dir.path()),
            video: true,
            audio: false,
            check_sync: false,
        },
    );
    assert_one_series(&server, "dash-p1");
}

/// A GStreamer muxer into `curlhttpsink`, teed into a file that gives the moof count, the frame
/// counts and the A/V offset. Returns the track ids of each moof the muxer wrote.
fn gstreamer(stream: &str, muxer: &str, with_audio: bool) -> Vec<Vec<u32>> {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("producer.mp4");
    let url = server.api(&format!("/streams/{stream}/ingest"));
    let mut pipeline = format!(
        "videotestsrc num-buffers=150 ! video/x-raw,width={WIDTH},height={HEIGHT},framerate=25/1 \
         ! x264enc key-int-max=25 bframes=0 speed-preset=veryfast ! h264parse ! queue ! mux. "
    );
    if with_audio {
        // 6 s of 48 kHz audio in 1024-sample buffers.
        pipeline += "audiotestsrc num-buffers=282 samplesperbuffer=1024 ! audio/x-raw,rate=48000,channels=1 \
                     ! avenc_aac ! aacparse ! queue ! mux. ";
    }
    pipeline += &format!(
        "{muxer} name=mux ! tee name=t t. ! queue ! filesink location={} \
         t. ! queue ! curlhttpsink location={url} use-content-length=false content-type=video/mp4",
        out.display()
    );
    let args: Vec<&str> = pipeline.split_whitespace().collect();
    run_ok(Command::new("gst-launch-1.0").arg("-q").args(&args));
    verify(
        &server,
        &Expect {
            stream,
            reference: out.clone(),
            moofs: moofs_in_file(&out),
            video: true,
            audio: with_audio,
            check_sync: with_audio,
        },
    );
    moof_tracks(&std::fs::read(&out).unwrap())
}

const MP4MUX: &str = "mp4mux fragment-duration=1000 streamable=true";
/// One-second fragments; `send-force-keyunit=false` keeps the encoder's own keyframes (with
/// it, the muxer's keyframe requests arrive late and the layout changes from run to run).
const ISOFMP4MUX: &str = "isofmp4mux fragment-duration=1000000000 send-force-keyunit=false";
const CMAFMUX: &str = "cmafmux fragment-duration=1000000000 send-force-keyunit=false";

fn gstreamer_mp4mux_audio_and_video() {
    let moofs = gstreamer("gst-av", MP4MUX, true);
    // One moof per track: the row is what it claims to be.
    assert!(moofs.iter().all(|m| m.len() == 1), "{moofs:?}");
}

fn gstreamer_mp4mux_video_only() {
    gstreamer("gst-v", MP4MUX, false);
}

/// gst-plugins-rs `isofmp4mux`: both tracks in each moof, and an upload that ends with a moof
/// holding only the audio tail, which starts before the previous moof's video ended.
fn gstreamer_isofmp4mux_audio_and_video() {
    let moofs = gstreamer("gst-iso", ISOFMP4MUX, true);
    assert_eq!(
        moofs.last(),
        Some(&vec![2]),
        "the last moof holds only the audio tail: {moofs:?}"
    );
}

/// gst-plugins-rs `cmafmux` (one track per muxer: video).
fn gstreamer_cmafmux_video() {
    gstreamer("gst-cmaf", CMAFMUX, false);
}

/// curl `-T file` (sized) and `-T -` (chunked) of a fragmented file made by ffmpeg.
fn curl_sized_and_chunked() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fragmented.mp4");
    run_ok(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(source("h264_aac.mp4"))
            .args(["-c", "copy", "-f", "mp4", "-movflags", FRAG_FLAGS])
            .arg(&file),
    );
    for (stream, chunked) in [("curl-sized", false), ("curl-chunked", true)] {
        let url = server.api(&format!("/streams/{stream}/ingest"));
        let mut c = Command::new("curl");
        c.args(["-sS", "--fail-with-body", "-T"]);
        if chunked {
            c.arg("-")
                .stdin(Stdio::from(std::fs::File::open(&file).unwrap()));
        } else {
            c.arg(&file).stdin(Stdio::null());
        }
        let out = c.arg(&url).output().expect("curl");
        assert!(
            out.status.success(),
            "curl {stream}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        verify(
            &server,
            &Expect {
                stream,
                reference: file.clone(),
                moofs: moofs_in_file(&file),
                video: true,
                audio: true,
                check_sync: false,
            },
        );
    }
}
