//! HLS against the real server: every playlist the server generates goes through the rule
//! checker in `hls_check/` (ref = shared/reference/hls-cmaf-rules.md), and is compared with the
//! stored fragment rows. Live producers are driven one fragment at a time over a raw chunked
//! PUT so that reloads, parts and blocking requests are deterministic.

mod common;
mod hls_check;

use common::harness::{run_tests, test, Need};
use common::*;
use hls_check::{
    check_against_truth, check_media, part_numbers, segment_number, Kind, MediaPlaylist, Tracker,
    Truth,
};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn main() -> std::process::ExitCode {
    run_tests(vec![
        test(
            "checker_parses_attribute_lists",
            checker_parses_attribute_lists,
        ),
        test(
            "checker_flags_known_violations",
            checker_flags_known_violations,
        ),
        test(
            "archive_across_sessions_is_clean_vod_and_decodes_fully",
            archive_across_sessions_is_clean_vod_and_decodes_fully,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
        test("archive_range_edges", archive_range_edges),
        test("archive_range_outside_media", archive_range_outside_media),
        test(
            "archive_end_inside_a_segment_lists_it_whole",
            archive_end_inside_a_segment_lists_it_whole,
        ),
        test(
            "live_window_slides_and_reloads_stay_consistent",
            live_window_slides_and_reloads_stay_consistent,
        ),
        test(
            "ll_hls_parts_preload_hint_and_open_segment",
            ll_hls_parts_preload_hint_and_open_segment,
        ),
        test(
            "blocking_reload_and_preload_hint",
            blocking_reload_and_preload_hint,
        ),
        test(
            "master_playlist_codecs_resolution_bandwidth",
            master_playlist_codecs_resolution_bandwidth,
        ),
        test(
            "media_bytes_ranges_etags_cors",
            media_bytes_ranges_etags_cors,
        ),
        test(
            "one_moof_per_track_live_and_archive_playlists_are_clean",
            one_moof_per_track_live_and_archive_playlists_are_clean,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("ffprobe")]),
    ])
}

const GOP2S: &str = "h264_aac_gop2s.mp4";
const CMAF: &str = "h264_cmaf_chunks.mp4";
const H265: &str = "h265_aac.mp4";
const M3U8: &str = "application/vnd.apple.mpegurl";

// ---------------------------------------------------------------------------------------------
// HTTP helpers

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    /// When the whole body had arrived.
    at: Instant,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
    /// Asserts a JSON error `{"error":{"code","message"}}` with this status and code.
    fn assert_error(&self, what: &str, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{what}: status; body {}", self.text());
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!msg.is_empty(), "{what}: error without a message: {v}");
        msg
    }
}

fn get_h(url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().expect("body").to_vec();
    Resp {
        status,
        headers,
        body,
        at: Instant::now(),
    }
}

fn get(url: &str) -> Resp {
    get_h(url, &[])
}

/// A GET on another thread (for blocking requests); the receiver gets the response.
fn spawn_get(url: String) -> mpsc::Receiver<Resp> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(get(&url));
    });
    rx
}

/// Asserts a blocking request is still waiting after `ms`.
fn assert_pending(rx: &mpsc::Receiver<Resp>, ms: u64, what: &str) {
    std::thread::sleep(Duration::from_millis(ms));
    if let Ok(r) = rx.try_recv() {
        panic!(
            "{what}: answered ({}) before the media it waits for exists:\n{}",
            r.status,
            r.text()
        );
    }
}

fn hls(server: &Server, stream: &str, rest: &str) -> String {
    server.api(&format!("/streams/{stream}/hls/{rest}"))
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn truth(server: &Server, stream: &str) -> Truth {
    Truth::from_rows(&all_fragments(server, stream))
}

fn fragment_bytes(server: &Server, stream: &str, n: i64) -> Vec<u8> {
    get_bytes(&server.api(&format!("/streams/{stream}/fragments/{n}")))
}

/// A media playlist: 200, the HLS content type, parsed.
fn playlist(url: &str) -> MediaPlaylist {
    let r = get(url);
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some(M3U8), "GET {url}");
    MediaPlaylist::parse(&r.text())
}

/// Records what one reload of a live playlist showed, if anything: `what` and the problems,
/// with the playlist text for the first few only (the problems name what changed).
fn note_problems(problems: &mut Vec<String>, what: &str, found: &[String], pl: &MediaPlaylist) {
    if found.is_empty() {
        return;
    }
    let text = if problems.len() < 3 {
        pl.text.as_str()
    } else {
        ""
    };
    problems.push(format!("{what}: {}\n{text}", found.join("\n  ")));
}

/// Fails with every problem and the playlist text.
fn assert_clean(problems: &[String], what: &str, text: &str) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}\nplaylist:\n{text}",
        problems.len(),
        problems.join("\n  - ")
    );
}

/// Every init/segment/part URI of a playlist fetched once: 200, the right content type, and
/// the stored bytes (a part is its fragment; a segment its fragments in order; an init the
/// stored init). Bodies are kept by URI.
#[derive(Default)]
struct Media {
    bodies: HashMap<String, Vec<u8>>,
}

impl Media {
    fn fetch(
        &mut self,
        server: &Server,
        stream: &str,
        pl: &MediaPlaylist,
        truth: &Truth,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut uris: Vec<(String, &str)> = Vec::new();
        for s in &pl.segments {
            if let Some(m) = &s.map {
                uris.push((m.clone(), "video/mp4"));
            }
            if let Some(u) = &s.uri {
                uris.push((u.clone(), "video/iso.segment"));
            }
            for p in &s.parts {
                uris.push((p.uri.clone(), "video/iso.segment"));
            }
        }
        for (uri, ctype) in uris {
            if self.bodies.contains_key(&uri) {
                continue;
            }
            let r = get(&hls(server, stream, &uri));
            if r.status != 200 {
                out.push(format!("GET {uri}: {} {}", r.status, r.text()));
                continue;
            }
            if r.header("content-type").as_deref() != Some(ctype) {
                out.push(format!(
                    "GET {uri}: content-type {:?}, expected {ctype} (ref 1.2 item 12)",
                    r.header("content-type")
                ));
            }
            let want: Option<Vec<u8>> = if let Some(n) = segment_number(&uri) {
                let mut b = Vec::new();
                for f in truth.segment(n) {
                    b.extend(fragment_bytes(server, stream, f.number));
                }
                Some(b)
            } else if let Some((n, i)) = part_numbers(&uri) {
                Some(fragment_bytes(server, stream, n + i))
            } else {
                hls_check::init_id(&uri)
                    .map(|id| get_bytes(&server.api(&format!("/streams/{stream}/inits/{id}"))))
            };
            if want.as_ref().is_some_and(|w| *w != r.body) {
                out.push(format!(
                    "GET {uri}: {} bytes differ from the stored bytes ({} bytes)",
                    r.body.len(),
                    want.map_or(0, |w| w.len())
                ));
            }
            self.bodies.insert(uri, r.body);
        }
        out
    }
}

/// All checks of one playlist: text rules, stored rows, media.
fn check_all(
    server: &Server,
    stream: &str,
    pl: &MediaPlaylist,
    kind: Kind,
    media: &mut Media,
) -> (Truth, Vec<String>) {
    let t = truth(server, stream);
    let mut problems = check_media(pl, kind);
    problems.extend(check_against_truth(pl, &t));
    problems.extend(media.fetch(server, stream, pl, &t));
    (t, problems)
}

// ---------------------------------------------------------------------------------------------
// Producers

/// A live producer: one chunked PUT that sends the init, then one fragment per `send_next`.
struct Producer {
    s: TcpStream,
    frags: Vec<Vec<u8>>,
    sent: usize,
}

impl Producer {
    fn start(server: &Server, stream: &str, sample_name: &str) -> Producer {
        let (init, frags) = split_sample(sample_name);
        Producer::start_with(server, stream, &init, frags)
    }

    /// A producer of media made at test time (an init and its fragments, as received).
    fn start_with(server: &Server, stream: &str, init: &[u8], frags: Vec<Vec<u8>>) -> Producer {
        let addr = server.base.trim_start_matches("http://").to_string();
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_nodelay(true).unwrap();
        write!(
            s,
            "PUT /api/v1/streams/{stream}/ingest HTTP/1.1\r\nHost: {addr}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut p = Producer { s, frags, sent: 0 };
        p.chunk(init);
        p
    }

    fn chunk(&mut self, data: &[u8]) {
        write!(self.s, "{:x}\r\n", data.len()).unwrap();
        self.s.write_all(data).unwrap();
        self.s.write_all(b"\r\n").unwrap();
        self.s.flush().unwrap();
    }

    fn remaining(&self) -> usize {
        self.frags.len() - self.sent
    }

    /// Sends the next fragment (in two chunks, the last byte last); returns when its last byte
    /// was written.
    fn send_next(&mut self) -> Instant {
        let f = self.frags[self.sent].clone();
        self.sent += 1;
        let (a, b) = f.split_at(f.len() - 1);
        self.chunk(a);
        self.chunk(b);
        Instant::now()
    }

    /// Ends the upload; returns the status and body of the response.
    fn finish(mut self) -> (u16, String) {
        self.s.write_all(b"0\r\n\r\n").unwrap();
        self.s.flush().unwrap();
        self.s
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = Vec::new();
        let _ = self.s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text)
    }
}

/// Waits until fragment `n` of the stream is durable (listed by the fragments API).
fn wait_durable(server: &Server, stream: &str, n: i64) -> Instant {
    let url = server.api(&format!(
        "/streams/{stream}/fragments?after={}&limit=1",
        n - 1
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&url);
        if r.status == 200 {
            let v = r.json();
            if v["fragments"][0]["fragment"].as_i64() == Some(n) {
                return Instant::now();
            }
        }
        assert!(
            Instant::now() < deadline,
            "fragment {n} of {stream} not durable within 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A whole sample as one sized upload.
fn upload(server: &Server, stream: &str, query: &str, name: &str) -> Value {
    let url = server.api(&format!("/streams/{stream}/ingest{query}"));
    let r = client()
        .put(&url)
        .body(std::fs::read(sample(name)).unwrap())
        .send()
        .unwrap();
    let status = r.status();
    let text = r.text().unwrap();
    assert!(status.is_success(), "PUT {url}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// Three sessions of the 2 s-GOP sample, all in the past: at now−120 s, at now−90 s, and a third
/// starting where the second ends. Returns the stored start (µs) of each session and the end of
/// the last.
fn three_sessions(server: &Server, stream: &str) -> ([i64; 3], i64) {
    let now = now_ms();
    upload(
        server,
        stream,
        &format!("?producer_start={}", now - 120_000),
        GOP2S,
    );
    upload(
        server,
        stream,
        &format!("?producer_start={}", now - 90_000),
        GOP2S,
    );
    let t = truth(server, stream);
    let end_ms = (t.newest().unwrap().end_us() + 999) / 1000;
    upload(server, stream, &format!("?producer_start={end_ms}"), GOP2S);
    let t = truth(server, stream);
    assert_eq!(t.frags.len(), 15, "three uploads of 5 fragments");
    let mut starts = Vec::new();
    let mut session = -1;
    for f in t.frags.values() {
        if f.session != session {
            session = f.session;
            starts.push(f.producer_us);
        }
    }
    assert_eq!(starts.len(), 3, "three sessions");
    assert!(
        t.newest().unwrap().end_us() < now * 1000,
        "all media is in the past"
    );
    (
        [starts[0], starts[1], starts[2]],
        t.newest().unwrap().end_us(),
    )
}

/// Runs a command with a deadline (a live playlist would make ffmpeg reload forever).
fn run_with_timeout(cmd: &mut Command, secs: u64) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        code,
        std::fs::read_to_string(o).unwrap_or_default(),
        std::fs::read_to_string(e).unwrap_or_default(),
    )
}

fn ffprobe_count(url: &str, stream: &str) -> u64 {
    let (code, out, err) = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-select_streams",
            stream,
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            url,
        ]),
        60,
    );
    assert_eq!(code, Some(0), "ffprobe {url}: {err}");
    // The HLS demuxer reports the stream once per program: take the first line.
    out.lines()
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe {url}: no count: {out} {err}"))
}

// ---------------------------------------------------------------------------------------------
// The checker itself

/// The checker's own attribute-list parser (quoted values keep their commas).
fn checker_parses_attribute_lists() {
    let a =
        hls_check::attributes("BANDWIDTH=1,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360");
    assert_eq!(a["BANDWIDTH"], "1");
    assert_eq!(a["CODECS"], "avc1.64001e,mp4a.40.2");
    assert_eq!(a["RESOLUTION"], "640x360");
}

/// The checker finds what it is meant to find (so a clean result means something).
fn checker_flags_known_violations() {
    let bad = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n\
               #EXT-X-PART-INF:PART-TARGET=0.5\n\
               #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.9\n\
               #EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z\n\
               #EXTINF:2.6,\nsegments/1.m4s\n\
               #EXT-X-MEDIA-SEQUENCE:3\n\
               #EXT-X-MAP:URI=\"init/1.mp4\"\n\
               #EXT-X-PART:DURATION=0.6,URI=\"parts/2.0.m4s\"\n\
               #EXT-X-PART:DURATION=0.4,URI=\"parts/2.1.m4s\"\n\
               #EXTINF:2.0,\nsegments/2.m4s\n\
               #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"parts/3.0.m4s\"\n#EXT-X-ENDLIST\n";
    let pl = MediaPlaylist::parse(bad);
    let problems = check_media(&pl, Kind::Vod).join("\n");
    for want in [
        "EXT-X-VERSION",
        "rounds above TARGETDURATION",
        "MEDIA-SEQUENCE after the first media segment",
        "no EXT-X-DISCONTINUITY-SEQUENCE",
        "segments/1.m4s: no EXT-X-MAP",
        "segments/2.m4s: no EXT-X-PROGRAM-DATE-TIME",
        "> PART-TARGET",
        "parts add up to",
        "PART-HOLD-BACK",
        "PRELOAD-HINT in a playlist with EXT-X-ENDLIST",
        "PLAYLIST-TYPE None, expected VOD",
    ] {
        assert!(problems.contains(want), "missing '{want}' in:\n{problems}");
    }
    // Across reloads: an MSN whose URI or EXTINF changes, TD changes, MSN going back.
    let a = MediaPlaylist::parse(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:5\n\
         #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-MAP:URI=\"init/1.mp4\"\n\
         #EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z\n#EXTINF:1.0,\nsegments/1.m4s\n",
    );
    let b = MediaPlaylist::parse(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:4\n\
         #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-MAP:URI=\"init/1.mp4\"\n\
         #EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z\n#EXTINF:1.0,\nsegments/0.m4s\n\
         #EXT-X-DISCONTINUITY\n\
         #EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:01.000Z\n#EXTINF:2.0,\nsegments/9.m4s\n",
    );
    let mut tr = Tracker::default();
    assert!(tr.observe(&a).is_empty());
    let problems = tr.observe(&b).join("\n");
    for want in [
        "MEDIA-SEQUENCE went back",
        "TARGETDURATION changed",
        "MSN 5: DSN 1 was 0",
        "MSN 5: segments/9.m4s EXTINF 2 was segments/1.m4s",
    ] {
        assert!(problems.contains(want), "missing '{want}' in:\n{problems}");
    }
}

// ---------------------------------------------------------------------------------------------
// Archive

/// Three producer sessions (a 20 s gap, then a session that continues in time): the archive
/// is a clean VOD playlist with a DISCONTINUITY at each session change, and ffmpeg decodes
/// every stored frame from it.
fn archive_across_sessions_is_clean_vod_and_decodes_fully() {
    let server = Server::start();
    let (starts, end_us) = three_sessions(&server, "arc");
    let url = hls(
        &server,
        "arc",
        &format!(
            "archive.m3u8?start={}&end={}",
            rfc3339(starts[0] / 1000 - 10_000),
            end_us / 1000 + 5_000
        ),
    );
    let pl = playlist(&url);
    let mut media = Media::default();
    let (t, problems) = check_all(&server, "arc", &pl, Kind::Vod, &mut media);
    assert_clean(&problems, "archive VOD", &pl.text);
    assert_eq!(pl.segments.len(), 15, "{}", pl.text);
    let discs: Vec<usize> = (0..15).filter(|&i| pl.segments[i].discontinuity).collect();
    assert_eq!(
        discs,
        vec![5, 10],
        "DISCONTINUITY at the session changes:\n{}",
        pl.text
    );
    assert_eq!(pl.segments[14].dsn, 2);
    assert_eq!(pl.target_duration, Some(2));
    assert_eq!(pl.segments[0].pdt_ms, Some(starts[0].div_euclid(1000)));
    assert!(t.frags.values().all(|f| f.keyframe));

    let frames = ffprobe_count(&url, "v:0");
    let audio = ffprobe_count(&url, "a:0");
    let want_audio = 3 * ffprobe_audio_frames(&sample(GOP2S));
    println!("ffprobe through archive.m3u8: {frames} video frames, {audio} audio frames");
    assert_eq!(
        frames, 750,
        "video frames decoded through the archive playlist"
    );
    // Audio and a clean decode are checked together so that both are reported. The third
    // session starts at the stored end of the second (producer_time_us + duration_us of its
    // last fragment). That end is the video run's end; this sample's audio runs 80 ms longer,
    // so unless the timeline follows every track, the third session's audio starts before the
    // second's has ended.
    let mut failures = Vec::new();
    if audio != want_audio {
        failures.push(format!(
            "ffprobe -count_frames -select_streams a:0 {url}: {audio} audio frames, the 3 \
             uploads hold {want_audio}"
        ));
    }
    // With -copyts ffmpeg keeps the one media timeline the server writes: no errors allowed.
    // Without it, ffmpeg's CLI closes the 20 s recording gap itself (dts_delta_threshold on an
    // HLS input) and may log a DTS message there, which says nothing about the server: it must
    // decode, and its messages are printed.
    for copyts in [true, false] {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-v", "error"]);
        if copyts {
            cmd.arg("-copyts");
        }
        cmd.args(["-i", &url, "-map", "0", "-f", "null", "-"]);
        let (code, _, err) = run_with_timeout(&mut cmd, 60);
        if code != Some(0) || (copyts && !err.trim().is_empty()) {
            failures.push(format!("{cmd:?}: exit {code:?}, errors:\n{err}"));
        } else if !err.trim().is_empty() {
            println!("note: ffmpeg without -copyts: {}", err.trim());
        }
    }
    assert!(
        failures.is_empty(),
        "decoding the archive of 3 sessions (session 3 starts at the stored end of session \
         2, {} µs):\n{}",
        starts[2],
        failures.join("\n")
    );
}

/// Range edges of archive.m3u8: a start mid-session starts at the segment containing it; the
/// end excludes segments starting at or after it; an open end is EVENT without ENDLIST;
/// end ≤ start → 400.
fn archive_range_edges() {
    let server = Server::start();
    let ([_s1, s2, _s3], _end_us) = three_sessions(&server, "rng");
    let ms = |us: i64| us / 1000;
    let mut media = Media::default();
    let mut check = |query: String, kind: Kind| -> MediaPlaylist {
        let pl = playlist(&hls(&server, "rng", &format!("archive.m3u8?{query}")));
        let (_, problems) = check_all(&server, "rng", &pl, kind, &mut media);
        assert_clean(&problems, &query, &pl.text);
        pl
    };
    let starts = |pl: &MediaPlaylist| -> Vec<i64> {
        pl.segments
            .iter()
            .map(|s| s.pdt_ms.unwrap() - ms(s2))
            .collect()
    };

    // Mid-session start (3 s into session 2, inside its second segment), end at 5 s.
    let pl = check(
        format!("start={}&end={}", ms(s2) + 3000, ms(s2) + 5000),
        Kind::Vod,
    );
    assert_eq!(
        starts(&pl),
        vec![2000, 4000],
        "segments overlapping [3 s, 5 s):\n{}",
        pl.text
    );
    assert!(!pl.segments[0].discontinuity);
    // An end on a segment boundary excludes the segment that starts there.
    let pl = check(
        format!("start={}&end={}", ms(s2) + 2000, ms(s2) + 4000),
        Kind::Vod,
    );
    assert_eq!(
        starts(&pl),
        vec![2000],
        "[2 s, 4 s) is one segment:\n{}",
        pl.text
    );
    // RFC 3339 times work the same.
    let pl = check(
        format!(
            "start={}&end={}",
            rfc3339(ms(s2) + 3000),
            rfc3339(ms(s2) + 5000)
        ),
        Kind::Vod,
    );
    assert_eq!(starts(&pl), vec![2000, 4000]);
    // Open end: EVENT, no ENDLIST, up to the newest segment.
    let pl = check(format!("start={}", ms(s2)), Kind::Event);
    assert_eq!(pl.segments.len(), 10, "{}", pl.text);
    assert!(pl.preload_hints.is_empty() && pl.part_target.is_none());
    // An end in the future is EVENT too.
    let pl = check(
        format!("start={}&end={}", ms(s2), now_ms() + 600_000),
        Kind::Event,
    );
    assert_eq!(pl.segments.len(), 10, "{}", pl.text);

    // end ≤ start.
    get(&hls(
        &server,
        "rng",
        &format!("archive.m3u8?start={}&end={}", ms(s2), ms(s2)),
    ))
    .assert_error("end = start", 400, "INVALID_ARGUMENT");
    get(&hls(
        &server,
        "rng",
        &format!("archive.m3u8?start={}&end={}", ms(s2), ms(s2) - 1000),
    ))
    .assert_error("end < start", 400, "INVALID_ARGUMENT");
    get(&hls(&server, "rng", "archive.m3u8?start=yesterday")).assert_error(
        "bad time",
        400,
        "INVALID_ARGUMENT",
    );
}

/// Ranges that do not reach the media of a segment: a start in a recording gap starts at the
/// next segment (nothing that ended before `start` is listed); ranges with no media → 404.
fn archive_range_outside_media() {
    let server = Server::start();
    let ([s1, s2, _s3], end_us) = three_sessions(&server, "rng");
    let ms = |us: i64| us / 1000;
    let mut failures = Vec::new();
    // Start in the 20 s recording gap between sessions 1 (ends at s1 + 10 s) and 2: the last
    // segment of session 1 ended before `start`, so the playlist starts with session 2.
    let gap_start = ms(s1) + 15_000;
    let query = format!("archive.m3u8?start={gap_start}&end={}", ms(s2) + 1000);
    let r = get(&hls(&server, "rng", &query));
    let pl = MediaPlaylist::parse(&r.text());
    let pdts: Vec<i64> = pl.segments.iter().filter_map(|s| s.pdt_ms).collect();
    if r.status != 200 || pdts != vec![ms(s2)] {
        failures.push(format!(
            "GET {query} (start in the gap between sessions 1 and 2, end 1 s into session 2): \
             expected 200 with only session 2's first segment (PDT {}), got {} with segment \
             PDTs {pdts:?}:\n{}",
            ms(s2),
            r.status,
            r.text()
        ));
    }
    // Ranges with no media at all.
    let after = ms(end_us) + 5_000;
    for (what, query) in [
        (
            "closed range before all media",
            format!(
                "archive.m3u8?start={}&end={}",
                ms(s1) - 60_000,
                ms(s1) - 50_000
            ),
        ),
        (
            "closed range after all media",
            format!("archive.m3u8?start={after}&end={}", after + 5_000),
        ),
        (
            "open range starting after all media",
            format!("archive.m3u8?start={after}"),
        ),
    ] {
        let r = get(&hls(&server, "rng", &query));
        let code = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
        if r.status != 404 || code.as_deref() != Some("NOT_FOUND") {
            failures.push(format!(
                "GET {query} ({what}; media ends at {}): expected 404 NOT_FOUND JSON, got {}:\n{}",
                ms(end_us),
                r.status,
                r.text()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// An archive range whose end falls inside an LL-HLS segment (a GOP of four 0.5 s chunks)
/// lists that segment whole: its URI serves the whole segment, so the EXTINF must be the
/// segment's duration (ref 1.2 item 2, 1.7 item 2: cut at segment boundaries).
fn archive_end_inside_a_segment_lists_it_whole() {
    let server = Server::start();
    upload(
        &server,
        "cut",
        &format!("?producer_start={}", now_ms() - 60_000),
        CMAF,
    );
    let t = truth(&server, "cut");
    let s = t.frags[&1].producer_us / 1000;
    let mut media = Media::default();
    for (a, b) in [(0, 1000), (500, 3000), (0, 10_000)] {
        let query = format!("archive.m3u8?start={}&end={}", s + a, s + b);
        let pl = playlist(&hls(&server, "cut", &query));
        let (_, problems) = check_all(&server, "cut", &pl, Kind::Vod, &mut media);
        assert_clean(&problems, &query, &pl.text);
    }
}

// ---------------------------------------------------------------------------------------------
// Live

/// The 2 s-GOP sample sent live, one fragment at a time, by three producers in a row (so the
/// window slides over discontinuities): each fragment is listed as soon as it is durable; the
/// window keeps ≥ 6 segments and ≥ 3 target durations; reloads stay consistent. Once the last
/// producer is gone and `live_idle_secs` passed, live.m3u8 is a 404 with a reason.
fn live_window_slides_and_reloads_stay_consistent() {
    let server = Server::start_with_config("[hls]\nlive_idle_secs = 1\n");
    let url = hls(&server, "live", "live.m3u8");
    let mut tracker = Tracker::default();
    let mut media = Media::default();
    let mut problems = Vec::new();
    let mut n = 0i64;
    let mut last_durable = Instant::now();
    let mut last = MediaPlaylist::default();
    for session in 0..3 {
        let mut p = Producer::start(&server, "live", GOP2S);
        while p.remaining() > 0 {
            p.send_next();
            n += 1;
            last_durable = wait_durable(&server, "live", n);
            // The first fragment of a session is an open segment until the second one shows
            // whether more fragments join it (a GOP-per-fragment producer, like this one, or
            // CMAF chunks): it is listed as a part at once and as a segment then. The very
            // first playlist request of a stream waits for that, so it is not made here.
            let first_of_session = p.sent == 1;
            if session == 0 && first_of_session {
                continue;
            }
            let pl = playlist(&url);
            let what = format!("after fragment {n} (session {})", session + 1);
            let (_, mut found) = check_all(&server, "live", &pl, Kind::Live, &mut media);
            found.extend(tracker.observe(&pl));
            let complete: Vec<_> = pl.complete().collect();
            let newest_part = format!("parts/{n}.0.m4s");
            let newest_listed = if first_of_session {
                pl.segments
                    .iter()
                    .any(|s| s.parts.iter().any(|p| p.uri == newest_part))
            } else {
                complete.last().and_then(|s| s.uri.as_deref()) == Some(&format!("segments/{n}.m4s"))
            };
            if !newest_listed {
                found.push(format!(
                    "the durable fragment {n} is not listed as the newest segment (or part)"
                ));
            }
            let complete_expected = if first_of_session { n - 1 } else { n };
            let listed = complete.len() as i64;
            if listed < complete_expected.min(6) {
                found.push(format!("{listed} segments listed; the window must keep ≥ 6 (or all {complete_expected}) (ref 1.4 item 3, Apple 8.11)"));
            }
            let dur: f64 = complete.iter().filter_map(|s| s.extinf).sum();
            let td = pl.target_duration.unwrap_or(0) as f64;
            if listed < n && dur < 3.0 * td {
                found.push(format!("window of {dur} s < 3 × TD {td} (ref 1.4 item 3)"));
            }
            if n > 10 && listed >= n {
                found.push(format!(
                    "all {n} segments listed: the window does not slide"
                ));
            }
            note_problems(&mut problems, &what, &found, &pl);
            last = pl;
        }
        let (status, body) = p.finish();
        assert_eq!(status, 200, "upload {}: {body}", session + 1);
    }
    // The window slid past a discontinuity: the header DSN counts it, and the session change
    // still in the window is marked.
    assert_eq!(last.disc_sequence, Some(1), "{}", last.text);
    assert_eq!(
        last.segments.iter().filter(|s| s.discontinuity).count(),
        1,
        "{}",
        last.text
    );
    assert!(
        problems.is_empty(),
        "live playlist problems:\n{}",
        problems.join("\n\n")
    );

    // No producer, nothing new for live_idle_secs = 1: 404 with a reason.
    let deadline = Instant::now() + Duration::from_secs(6);
    let r = loop {
        let r = get(&url);
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let idle = last_durable.elapsed();
    let msg = r.assert_error("live.m3u8 of an idle stream", 404, "NOT_FOUND");
    println!("live.m3u8 went 404 {idle:?} after the last fragment: {msg}");
    assert!(
        idle >= Duration::from_millis(800),
        "404 before live_idle_secs passed ({idle:?})"
    );
}

/// LL-HLS from the CMAF-chunk sample (0.5 s chunks, a keyframe every 4th) sent live: PART-INF,
/// SERVER-CONTROL, parts with INDEPENDENT=YES on keyframe chunks, a preload hint for the next
/// part, the open segment with parts and no EXTINF whose segment URI is a 404 until complete;
/// part URIs serve the fragment bytes; reloads stay consistent from the first fragment on.
fn ll_hls_parts_preload_hint_and_open_segment() {
    let server = Server::start();
    let url = hls(&server, "ll", "live.m3u8");
    let mut tracker = Tracker::default();
    let mut media = Media::default();
    let mut problems = Vec::new();
    let mut p = Producer::start(&server, "ll", CMAF);
    let mut n = 0i64;
    let mut last_send = Instant::now() - Duration::from_secs(1);
    while p.remaining() > 0 {
        // One chunk every ~100 ms at most.
        if let Some(wait) = Duration::from_millis(100).checked_sub(last_send.elapsed()) {
            std::thread::sleep(wait);
        }
        last_send = p.send_next();
        n += 1;
        wait_durable(&server, "ll", n);
        let pl = playlist(&url);
        let (t, mut found) = check_all(&server, "ll", &pl, Kind::Live, &mut media);
        found.extend(tracker.observe(&pl));
        let seg_first = t
            .frags
            .range(..=n)
            .rev()
            .find(|(_, f)| f.segment_start)
            .map(|(k, _)| *k)
            .unwrap();
        // The segment holding fragment n may still grow: it is the open segment.
        match pl.open_segment() {
            Some(open) => {
                if open.first_fragment() != Some(seg_first) || open.parts.len() as i64 != n - seg_first + 1 {
                    found.push(format!(
                        "the open segment should be {seg_first} with {} parts; it is {:?} with {}",
                        n - seg_first + 1,
                        open.first_fragment(),
                        open.parts.len()
                    ));
                }
                if open.extinf.is_some() {
                    found.push("the open segment has an EXTINF".into());
                }
            }
            None => found.push(format!(
                "no open segment: the segment of fragment {n} (starting at {seg_first}) is listed as complete while the producer may add parts to it"
            )),
        }
        let r = get(&hls(&server, "ll", &format!("segments/{seg_first}.m4s")));
        if r.status != 404 {
            found.push(format!(
                "GET segments/{seg_first}.m4s of the open segment: {} ({} bytes, cache-control {:?}), expected 404 until complete",
                r.status,
                r.body.len(),
                r.header("cache-control")
            ));
        }
        if pl.part_target.is_none() {
            found.push("no EXT-X-PART-INF".into());
        }
        let sc = pl.server_control.clone().unwrap_or_default();
        if sc.get("CAN-BLOCK-RELOAD").map(String::as_str) != Some("YES")
            || !sc.contains_key("PART-HOLD-BACK")
        {
            found.push(format!(
                "SERVER-CONTROL {sc:?} lacks CAN-BLOCK-RELOAD=YES or PART-HOLD-BACK"
            ));
        }
        match pl.hint_uri().and_then(part_numbers) {
            Some((a, b)) if a + b == n + 1 => {}
            other => found.push(format!(
                "PRELOAD-HINT {other:?} is not the next part (fragment {})",
                n + 1
            )),
        }
        note_problems(&mut problems, &format!("after fragment {n}"), &found, &pl);
    }
    // Complete segments: their URIs serve all their fragments.
    let t = truth(&server, "ll");
    for first in [1i64, 5, 9, 13] {
        let r = get(&hls(&server, "ll", &format!("segments/{first}.m4s")));
        assert_eq!(r.status, 200, "segments/{first}.m4s: {}", r.text());
        let mut want = Vec::new();
        for f in t.segment(first) {
            want.extend(fragment_bytes(&server, "ll", f.number));
        }
        assert_eq!(t.segment(first).len(), 4);
        if r.body != want {
            problems.push(format!(
                "segments/{first}.m4s: {} bytes, not its 4 fragments ({} bytes)",
                r.body.len(),
                want.len()
            ));
        }
    }
    // Media is served as immutable: a URI fetched during the run must not change later.
    for (uri, body) in &media.bodies {
        let r = get(&hls(&server, "ll", uri));
        if r.body != *body {
            problems.push(format!(
                "{uri} changed: first served {} bytes, now {} bytes, with cache-control {:?} (immutable)",
                body.len(),
                r.body.len(),
                r.header("cache-control")
            ));
        }
    }
    let (status, body) = p.finish();
    assert_eq!(status, 200, "{body}");
    assert!(
        problems.is_empty(),
        "LL-HLS problems ({}):\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

/// Blocking playlist reload and preload-hinted parts: a request for the next segment/part is
/// held until the fragment is durable and then answered at once (latency printed); too far
/// ahead → 400; `_HLS_part` without `_HLS_msn` → 400; never satisfied → 503 after 3 × TD.
fn blocking_reload_and_preload_hint() {
    let server = Server::start();
    let mut figures = Vec::new();

    // A request that can never be satisfied: the CMAF stream's target duration is 1 s while
    // only 1.04 s of it exist.
    let mut p503 = Producer::start(&server, "b503", CMAF);
    p503.send_next();
    p503.send_next();
    wait_durable(&server, "b503", 2);
    let pl = playlist(&hls(&server, "b503", "live.m3u8"));
    let td = pl.target_duration.unwrap_or(0);
    get(&hls(&server, "b503", "live.m3u8?_HLS_msn=3")).assert_error(
        "_HLS_msn 3 ahead of the newest",
        400,
        "INVALID_ARGUMENT",
    );
    let started_503 = Instant::now();
    let rx503 = spawn_get(hls(&server, "b503", "live.m3u8?_HLS_msn=2"));

    // Non-LL (one fragment per segment): _HLS_msn of the next segment.
    let mut pg = Producer::start(&server, "bg", GOP2S);
    pg.send_next();
    pg.send_next();
    wait_durable(&server, "bg", 2);
    let rx = spawn_get(hls(&server, "bg", "live.m3u8?_HLS_msn=2"));
    assert_pending(&rx, 300, "_HLS_msn=2");
    let sent = pg.send_next();
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("blocked reload answered");
    let lat = r.at.saturating_duration_since(sent);
    figures.push(format!("_HLS_msn=2 (2 s GOP): {lat:?}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let pl = MediaPlaylist::parse(&r.text());
    assert_clean(&check_media(&pl, Kind::Live), "blocked reload", &pl.text);
    assert!(
        pl.segments
            .iter()
            .any(|s| s.msn == 2 && s.uri.as_deref() == Some("segments/3.m4s")),
        "{}",
        pl.text
    );
    assert!(
        lat < Duration::from_secs(1),
        "blocked reload answered {lat:?} after the last byte"
    );

    // LL: segment 1 (fragments 1–4) complete, MSN 1 open with parts 5.0 and 5.1.
    let mut p = Producer::start(&server, "bl", CMAF);
    for _ in 0..6 {
        p.send_next();
    }
    wait_durable(&server, "bl", 6);
    let pl = playlist(&hls(&server, "bl", "live.m3u8"));
    assert_eq!(
        pl.open_segment().and_then(|s| s.first_fragment()),
        Some(5),
        "{}",
        pl.text
    );

    // _HLS_msn + _HLS_part of the next part.
    let rx = spawn_get(hls(&server, "bl", "live.m3u8?_HLS_msn=1&_HLS_part=2"));
    assert_pending(&rx, 300, "_HLS_msn=1&_HLS_part=2");
    let sent = p.send_next();
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("blocked reload answered");
    let lat = r.at.saturating_duration_since(sent);
    figures.push(format!("_HLS_msn=1&_HLS_part=2 (LL): {lat:?}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let pl = MediaPlaylist::parse(&r.text());
    assert_clean(&check_media(&pl, Kind::Live), "blocked LL reload", &pl.text);
    assert!(pl.part_uris().any(|u| u == "parts/7.0.m4s"), "{}", pl.text);
    assert!(
        lat < Duration::from_secs(1),
        "blocked LL reload answered {lat:?} after the last byte"
    );

    // The preload-hinted part is held until it exists, then served whole.
    let hint = pl.hint_uri().expect("a preload hint").to_string();
    assert_eq!(
        part_numbers(&hint).map(|(a, b)| a + b),
        Some(8),
        "hint {hint}"
    );
    let rx = spawn_get(hls(&server, "bl", &hint));
    assert_pending(&rx, 300, &hint);
    let sent = p.send_next();
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("hinted part answered");
    let lat = r.at.saturating_duration_since(sent);
    figures.push(format!("preload-hinted {hint}: {lat:?}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("video/iso.segment")
    );
    assert!(
        r.body == fragment_bytes(&server, "bl", 8),
        "hinted part is not fragment 8"
    );
    assert!(
        lat < Duration::from_secs(1),
        "hinted part answered {lat:?} after the last byte"
    );

    // The first part of the next segment (MSN 2 starts with keyframe fragment 9).
    let rx = spawn_get(hls(&server, "bl", "live.m3u8?_HLS_msn=2&_HLS_part=0"));
    assert_pending(&rx, 300, "_HLS_msn=2&_HLS_part=0");
    let sent = p.send_next();
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("blocked reload answered");
    let lat = r.at.saturating_duration_since(sent);
    figures.push(format!("_HLS_msn=2&_HLS_part=0 (LL, new segment): {lat:?}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let pl = MediaPlaylist::parse(&r.text());
    assert!(pl.part_uris().any(|u| u == "parts/9.0.m4s"), "{}", pl.text);
    assert!(
        pl.segments
            .iter()
            .any(|s| s.uri.as_deref() == Some("segments/5.m4s")),
        "{}",
        pl.text
    );
    assert!(
        lat < Duration::from_secs(1),
        "blocked reload answered {lat:?} after the last byte"
    );

    // Errors: too far ahead (newest MSN is 2), _HLS_part alone, not a number.
    let t0 = Instant::now();
    get(&hls(&server, "bl", "live.m3u8?_HLS_msn=5")).assert_error(
        "_HLS_msn > newest + 2",
        400,
        "INVALID_ARGUMENT",
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "the 400 was not immediate"
    );
    get(&hls(&server, "bl", "live.m3u8?_HLS_part=1")).assert_error(
        "_HLS_part without _HLS_msn",
        400,
        "INVALID_ARGUMENT",
    );
    get(&hls(&server, "bl", "live.m3u8?_HLS_msn=x")).assert_error(
        "_HLS_msn not a number",
        400,
        "INVALID_ARGUMENT",
    );

    // The request that never could be satisfied: 503 after 3 target durations.
    let r = rx503
        .recv_timeout(Duration::from_secs(20))
        .expect("unsatisfiable reload answered");
    let waited = r.at.saturating_duration_since(started_503);
    figures.push(format!(
        "unsatisfiable _HLS_msn=2 (TD {td} s): {} after {waited:?}",
        r.status
    ));
    r.assert_error("unsatisfiable blocking reload", 503, "UNAVAILABLE");
    // Before its first segment completes a stream's TD is a guess of at least 2 s.
    assert_eq!(td, 2, "TD of the b503 stream");
    let three_td = Duration::from_secs(3 * td as u64);
    assert!(
        waited >= three_td - Duration::from_millis(100) && waited < three_td * 2,
        "503 after {waited:?}; expected about 3 x TD = {three_td:?}"
    );

    for prod in [p, pg, p503] {
        let (status, body) = prod.finish();
        assert_eq!(status, 200, "{body}");
    }
    println!("blocking reload latency (last byte sent → response received):");
    for f in &figures {
        println!("  {f}");
    }
}

// ---------------------------------------------------------------------------------------------
// Multivariant playlist

fn master_variant(
    server: &Server,
    stream: &str,
) -> (std::collections::BTreeMap<String, String>, String) {
    let r = get(&hls(server, stream, "master.m3u8"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some(M3U8));
    let text = r.text();
    let (problems, variants) = hls_check::parse_master(&text);
    assert_clean(&problems, "master", &text);
    assert!(text.contains("#EXT-X-VERSION:"), "{text}");
    assert_eq!(variants.len(), 1, "{text}");
    let (attrs, uri) = variants[0].clone();
    // The variant URI resolves (relative to the master).
    let v = get(&hls(server, stream, &uri));
    assert_eq!(v.status, 200, "variant {uri}: {}", v.text());
    (attrs, text)
}

/// CODECS, RESOLUTION and BANDWIDTH of the multivariant playlist match the stored media.
fn master_playlist_codecs_resolution_bandwidth() {
    let server = Server::start();
    upload(&server, "m264", "", GOP2S);
    upload(&server, "m265", "", H265);

    let (a, text) = master_variant(&server, "m264");
    assert_eq!(
        a.get("CODECS").map(String::as_str),
        Some("avc1.64001e,mp4a.40.2"),
        "{text}"
    );
    assert_eq!(
        a.get("RESOLUTION").map(String::as_str),
        Some("640x360"),
        "{text}"
    );
    let bw: u64 = a["BANDWIDTH"].parse().expect("BANDWIDTH");
    let avg: u64 = a
        .get("AVERAGE-BANDWIDTH")
        .expect("AVERAGE-BANDWIDTH (Apple 9.14)")
        .parse()
        .unwrap();
    assert!(
        avg > 0 && bw >= avg,
        "BANDWIDTH {bw} ≥ AVERAGE-BANDWIDTH {avg} > 0"
    );
    let t = truth(&server, "m264");
    let bytes: i64 = t.frags.values().map(|f| f.size).sum();
    let us: i64 = t.frags.values().map(|f| f.duration_us).sum();
    let stored_avg = bytes as f64 * 8.0 / (us as f64 / 1e6);
    let stored_peak = t
        .frags
        .values()
        .map(|f| f.size as f64 * 8.0 / (f.duration_us as f64 / 1e6))
        .fold(0.0, f64::max);
    println!("m264: BANDWIDTH {bw}, AVERAGE-BANDWIDTH {avg}; stored average {stored_avg:.0} b/s, peak segment {stored_peak:.0} b/s");
    assert!(
        (avg as f64 - stored_avg).abs() / stored_avg < 0.05,
        "AVERAGE-BANDWIDTH {avg} vs stored {stored_avg:.0}"
    );
    assert!(
        bw as f64 >= stored_peak * 0.99 && (bw as f64) < stored_peak * 1.5,
        "BANDWIDTH {bw} vs peak segment {stored_peak:.0}"
    );

    let (a, text) = master_variant(&server, "m265");
    let codecs = a.get("CODECS").cloned().unwrap_or_default();
    let list: Vec<&str> = codecs.split(',').collect();
    assert_eq!(list.len(), 2, "{text}");
    let hevc = list
        .iter()
        .find(|c| c.starts_with("hvc1."))
        .unwrap_or_else(|| panic!("no hvc1 codec: {text}"));
    // hvc1.<profile>.<compat hex>.<L|H><level>[.<constraint bytes>] (ref 6.2)
    let fields: Vec<&str> = hevc.split('.').collect();
    assert!(fields.len() >= 4, "{hevc}");
    assert!(fields[1].parse::<u32>().is_ok(), "{hevc}: profile");
    assert!(
        u32::from_str_radix(fields[2], 16).is_ok(),
        "{hevc}: compatibility"
    );
    assert!(
        (fields[3].starts_with('L') || fields[3].starts_with('H'))
            && fields[3][1..].parse::<u32>().is_ok(),
        "{hevc}: tier+level"
    );
    assert!(list.contains(&"mp4a.40.2"), "{text}");
    assert!(a.contains_key("RESOLUTION"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Media

/// Segment, part and init responses: the stored bytes, Range (206 exact slice, 416), a strong
/// stable ETag with If-None-Match → 304, content types, CORS.
fn media_bytes_ranges_etags_cors() {
    let server = Server::start();
    // In the past, so that a VOD range up to now holds everything.
    let past = format!("?producer_start={}", now_ms() - 60_000);
    upload(&server, "med", &past, GOP2S);
    upload(&server, "medll", &past, CMAF);
    let t = truth(&server, "med");
    let origin = [("Origin", "http://player.example")];

    // Every URI of the archive playlists, with the stored bytes.
    for stream in ["med", "medll"] {
        let url = hls(
            &server,
            stream,
            &format!("archive.m3u8?start=0&end={}", now_ms()),
        );
        let r = get_h(&url, &origin);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("*"),
            "playlist CORS"
        );
        let pl = playlist(&url);
        let mut media = Media::default();
        let (_, problems) = check_all(&server, stream, &pl, Kind::Vod, &mut media);
        assert_clean(&problems, stream, &pl.text);
    }

    // A segment is its fragment's bytes; parts of the LL stream are fragments; a fragment in
    // the middle of a segment does not name a segment.
    let seg_url = hls(&server, "med", "segments/2.m4s");
    let full = get_h(&seg_url, &origin);
    assert_eq!(full.status, 200);
    assert_eq!(full.body, fragment_bytes(&server, "med", 2));
    assert_eq!(
        full.header("content-type").as_deref(),
        Some("video/iso.segment")
    );
    assert_eq!(
        full.header("access-control-allow-origin").as_deref(),
        Some("*"),
        "segment CORS"
    );
    assert_eq!(full.header("accept-ranges").as_deref(), Some("bytes"));
    assert_eq!(full.body.len() as i64, t.frags[&2].size);
    let part = get(&hls(&server, "medll", "parts/5.2.m4s"));
    assert_eq!(part.status, 200);
    assert_eq!(part.body, fragment_bytes(&server, "medll", 7));
    assert_eq!(
        part.header("content-type").as_deref(),
        Some("video/iso.segment")
    );
    get(&hls(&server, "medll", "segments/2.m4s")).assert_error(
        "segment URI of a non-keyframe fragment",
        404,
        "NOT_FOUND",
    );
    get(&hls(&server, "med", "segments/99.m4s")).assert_error("missing segment", 404, "NOT_FOUND");
    get(&hls(&server, "med", "init/99.mp4")).assert_error("missing init", 404, "NOT_FOUND");

    // Range.
    let total = full.body.len();
    for (range, a, b) in [
        ("bytes=100-199".to_string(), 100, 199),
        ("bytes=-50".to_string(), total - 50, total - 1),
        (format!("bytes={}-", total - 10), total - 10, total - 1),
        (format!("bytes=0-{}", total + 100), 0, total - 1),
    ] {
        let r = get_h(&seg_url, &[("Range", &range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{b}/{total}")),
            "{range}"
        );
        assert_eq!(r.body, full.body[a..=b], "{range}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("video/iso.segment"),
            "{range}"
        );
    }
    let r = get_h(&seg_url, &[("Range", &format!("bytes={total}-"))]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{total}")));

    // Playlists are gzipped when the client accepts it (Apple 10.1); media is not (its
    // ranges are ranges of the stored bytes).
    let gz = [("Accept-Encoding", "gzip")];
    let r = get_h(&hls(&server, "med", "master.m3u8"), &gz);
    assert_eq!(
        r.header("content-encoding").as_deref(),
        Some("gzip"),
        "master.m3u8"
    );
    let r = get_h(&seg_url, &gz);
    assert_eq!(r.header("content-encoding"), None, "segment");
    assert_eq!(r.body, full.body);

    // ETag: strong, stable, 304 on If-None-Match; different media have different tags.
    let etag = full.header("etag").expect("ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "strong ETag: {etag}"
    );
    assert_eq!(
        get(&seg_url).header("etag").as_ref(),
        Some(&etag),
        "stable ETag"
    );
    let r = get_h(&seg_url, &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag").as_ref(), Some(&etag));
    assert_eq!(
        get_h(&seg_url, &[("If-None-Match", "\"other\"")]).status,
        200
    );
    let other = get(&hls(&server, "med", "segments/3.m4s")).header("etag");
    assert!(
        other.is_some() && other.as_ref() != Some(&etag),
        "segments 2 and 3 share ETag {etag}"
    );

    // Init: video/mp4, the stored init, ETag, CORS.
    let init_id = t.frags[&1].init;
    let r = get_h(
        &hls(&server, "med", &format!("init/{init_id}.mp4")),
        &origin,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("video/mp4"));
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*"),
        "init CORS"
    );
    assert_eq!(
        r.body,
        get_bytes(&server.api(&format!("/streams/med/inits/{init_id}")))
    );
    assert_eq!(&r.body[4..8], b"ftyp");
    let ietag = r.header("etag").expect("init ETag");
    assert_eq!(
        get_h(
            &hls(&server, "med", &format!("init/{init_id}.mp4")),
            &[("If-None-Match", &ietag)]
        )
        .status,
        304
    );
}

/// One moof per track, live (issue 12): ffmpeg's `separate_moof` with 0.5 s chunks (cut at each
/// keyframe too) writes an audio and a video fragment for each chunk, a video keyframe every
/// second. Sent fragment by fragment, every live playlist (complete segments only: such
/// fragments overlap, so they are not LL-HLS parts) and the final archive are clean against the
/// stored rows: segments start only at video keyframe fragments, audio fragments belong to the
/// segment they fall in, a segment lasts as long as its video; the archive decodes to every
/// video frame.
fn one_moof_per_track_live_and_archive_playlists_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("separate.mp4");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "6",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "25",
        ])
        .args(["-c:a", "aac", "-f", "mp4", "-frag_duration", "500000"])
        .args([
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof+separate_moof",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (init, frags) = {
        use tapedeck::fmp4::{Event, Splitter};
        let mut splitter = Splitter::new(50_000_000);
        let mut events = Vec::new();
        splitter
            .push(&std::fs::read(&file).unwrap(), &mut events)
            .unwrap();
        let mut init = Vec::new();
        let mut frags = Vec::new();
        for e in events {
            match e {
                Event::Init { bytes, .. } => init = bytes.to_vec(),
                Event::Fragment(f) => frags.push(f.bytes.to_vec()),
            }
        }
        (init, frags)
    };
    let total = frags.len() as i64;
    let server = Server::start();
    let url = hls(&server, "pertrack", "live.m3u8");
    let mut tracker = Tracker::default();
    let mut media = Media::default();
    let mut problems = Vec::new();
    let mut p = Producer::start_with(&server, "pertrack", &init, frags);
    let mut n = 0i64;
    while p.remaining() > 0 {
        p.send_next();
        n += 1;
        wait_durable(&server, "pertrack", n);
        // The first playlist request waits for a complete segment: ask once there is one.
        if truth(&server, "pertrack")
            .frags
            .values()
            .filter(|f| f.segment_start)
            .count()
            < 2
        {
            continue;
        }
        let pl = playlist(&url);
        let (_, mut found) = check_all(&server, "pertrack", &pl, Kind::Live, &mut media);
        found.extend(tracker.observe(&pl));
        note_problems(&mut problems, &format!("after fragment {n}"), &found, &pl);
    }
    let (status, body) = p.finish();
    assert_eq!(status, 200, "{body}");
    assert!(
        problems.is_empty(),
        "live playlist problems:\n{}",
        problems.join("\n\n")
    );

    let t = truth(&server, "pertrack");
    assert_eq!(t.frags.len() as i64, total);
    assert!(
        t.frags.values().any(|f| !f.video),
        "the upload has audio-only fragments"
    );
    assert!(
        t.frags
            .values()
            .filter(|f| f.segment_start)
            .all(|f| f.video || f.discontinuity),
        "only video fragments start segments (or the session's first fragment)"
    );
    let first = t.frags.values().next().unwrap().producer_us / 1000;
    let end = t.frags.values().map(|f| f.end_us()).max().unwrap() / 1000 + 1;
    // The upload ran ahead of the clock: the range must be in the past to be a VOD.
    wait_until(
        "the recording to be in the past",
        Duration::from_secs(30),
        || now_ms() > end,
    );
    let url = hls(
        &server,
        "pertrack",
        &format!("archive.m3u8?start={first}&end={end}"),
    );
    let pl = playlist(&url);
    let (_, problems) = check_all(&server, "pertrack", &pl, Kind::Vod, &mut Media::default());
    assert_clean(&problems, "archive of one moof per track", &pl.text);
    assert_eq!(
        pl.segments.len(),
        6,
        "one segment per 1 s GOP:\n{}",
        pl.text
    );
    assert_eq!(ffprobe_count(&url, "v:0"), ffprobe_frames(&file));
}
