//! Auth against the real binary: the role matrix (each role against each endpoint family, with
//! Bearer and with Basic credentials), stream patterns, playback tokens (a token plays a whole
//! HLS presentation with no key; expired, forged and wrong-stream tokens are refused), ffmpeg
//! ingesting with credentials in the URL, and refusing to start on a public address without keys.

mod common;

use common::{assert_alive, client, get_json, now_ms, sample, Server, BIN};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-key-0123456789";
const PRODUCER: &str = "producer-key-0123456789";
const VIEWER: &str = "viewer-key-0123456789";
const WRONG: &str = "not-a-key-0123456789";

/// Admin in clear; producer as a SHA-256 digest; producer and viewer limited to `cam*`.
fn auth_config() -> String {
    let producer_sha = hex(&Sha256::digest(PRODUCER.as_bytes()));
    format!(
        "[auth]\ntoken_secret = \"a-test-secret-0123456789\"\ntoken_max_secs = 86400\nkeys = [\n\
         {{ name = \"ops\", key = \"{ADMIN}\", role = \"admin\" }},\n\
         {{ key_sha256 = \"{producer_sha}\", role = \"producer\", streams = [\"cam*\"] }},\n\
         {{ key = \"{VIEWER}\", role = \"viewer\", streams = [\"cam*\"] }},\n]\n"
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Admin,
    Producer,
    Viewer,
    Anon,
    Wrong,
}
const EVERYONE: [Who; 5] = [
    Who::Admin,
    Who::Producer,
    Who::Viewer,
    Who::Anon,
    Who::Wrong,
];

impl Who {
    fn key(self) -> Option<&'static str> {
        match self {
            Who::Admin => Some(ADMIN),
            Who::Producer => Some(PRODUCER),
            Who::Viewer => Some(VIEWER),
            Who::Anon => None,
            Who::Wrong => Some(WRONG),
        }
    }
}

/// Expected outcome: a 2xx, 401 or 403.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Exp {
    Ok,
    U,
    F,
}
use common::harness::{run_tests, test, Need};
use Exp::{Ok as Y, F, U};

fn main() -> std::process::ExitCode {
    run_tests(vec![
        test("role_matrix", role_matrix),
        test("playback_tokens", playback_tokens),
        test("no_keys_on_loopback_is_open", no_keys_on_loopback_is_open),
        test(
            "ffmpeg_ingests_with_basic_credentials_in_the_url",
            ffmpeg_ingests_with_basic_credentials_in_the_url,
        )
        .needs(&[Need::Program("ffmpeg")]),
        test(
            "refuses_public_address_without_keys",
            refuses_public_address_without_keys,
        ),
    ])
}

fn outcome(status: u16) -> Option<Exp> {
    match status {
        200..=299 => Some(Y),
        401 => Some(U),
        403 => Some(F),
        _ => None,
    }
}

fn with_key(
    rb: reqwest::blocking::RequestBuilder,
    who: Who,
    basic: bool,
) -> reqwest::blocking::RequestBuilder {
    match (who.key(), basic) {
        (None, _) => rb,
        (Some(k), false) => rb.bearer_auth(k),
        (Some(k), true) => rb.basic_auth("someone", Some(k)),
    }
}

fn upload_as(server: &Server, stream: &str, key: &str) {
    let body = std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap();
    let r = client()
        .put(server.api(&format!("/streams/{stream}/ingest")))
        .bearer_auth(key)
        .body(body)
        .send()
        .unwrap();
    let status = r.status();
    assert!(status.is_success(), "{status} {}", r.text().unwrap());
}

fn get_admin(server: &Server, path: &str) -> Value {
    let r = client()
        .get(server.api(path))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().unwrap()
}

struct Case {
    what: String,
    method: reqwest::Method,
    /// Under the server root (`/metrics`) or the API (`/api/v1/...`).
    path: String,
    body: Option<Vec<u8>>,
    /// admin, producer, viewer, no key, wrong key
    exp: [Exp; 5],
}

fn case(what: &str, method: &str, path: &str, body: Option<Vec<u8>>, exp: [Exp; 5]) -> Case {
    Case {
        what: what.to_string(),
        method: method.parse().unwrap(),
        path: path.to_string(),
        body,
        exp,
    }
}

fn js(v: Value) -> Option<Vec<u8>> {
    Some(v.to_string().into_bytes())
}

fn role_matrix() {
    let server = Server::start_with_config(&auth_config());
    let sample_bytes = std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap();
    upload_as(&server, "cam1", ADMIN);
    upload_as(&server, "lobby", ADMIN);
    for mode in ["bearer", "basic"] {
        for s in [format!("del-{mode}"), format!("patch-{mode}")] {
            let r = client()
                .post(server.api("/streams"))
                .bearer_auth(ADMIN)
                .json(&json!({"name": s}))
                .send()
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    }
    let frags = get_admin(&server, "/streams/cam1/fragments?limit=3");
    let first = &frags["fragments"][0];
    let n = first["fragment"].as_i64().unwrap();
    let t0 = first["producer_time"].as_str().unwrap().to_string();
    let t0_ms = time_ms(&t0);
    let archive = format!("/streams/cam1/hls/archive.m3u8?start={t0_ms}");

    // (admin, producer, viewer, no key, wrong key)
    let admin_only = [Y, F, F, U, U];
    let read = [Y, F, Y, U, U];
    let describe = [Y, Y, Y, U, U];
    let produce = [Y, Y, F, U, U];
    let others = [Y, F, F, U, U];
    for (mode, basic) in [("bearer", false), ("basic", true)] {
        let cases = vec![
            case(
                "create stream",
                "POST",
                "/api/v1/streams",
                js(json!({"name": format!("new-{mode}")})),
                admin_only,
            ),
            case(
                "update stream",
                "PATCH",
                &format!("/api/v1/streams/patch-{mode}"),
                js(json!({"retention_hours": 48})),
                admin_only,
            ),
            case(
                "delete stream",
                "DELETE",
                &format!("/api/v1/streams/del-{mode}"),
                None,
                admin_only,
            ),
            case("list", "GET", "/api/v1/streams", None, [Y, Y, Y, U, U]),
            case("describe", "GET", "/api/v1/streams/cam1", None, describe),
            case(
                "describe other",
                "GET",
                "/api/v1/streams/lobby",
                None,
                others,
            ),
            case(
                "sessions",
                "GET",
                "/api/v1/streams/cam1/sessions",
                None,
                read,
            ),
            case(
                "long upload",
                "PUT",
                "/api/v1/streams/cam1/ingest",
                Some(sample_bytes.clone()),
                produce,
            ),
            case(
                "long upload other",
                "PUT",
                "/api/v1/streams/lobby/ingest",
                Some(sample_bytes.clone()),
                others,
            ),
            case(
                "segment ingest",
                "PUT",
                "/api/v1/streams/cam1/ingest/live.m3u8",
                Some(b"#EXTM3U\n".to_vec()),
                produce,
            ),
            case(
                "segment delete",
                "DELETE",
                "/api/v1/streams/cam1/ingest/old.m4s",
                None,
                produce,
            ),
            case(
                "fragments",
                "GET",
                "/api/v1/streams/cam1/fragments?limit=2",
                None,
                read,
            ),
            case(
                "fragments other",
                "GET",
                "/api/v1/streams/lobby/fragments?limit=2",
                None,
                others,
            ),
            case(
                "fragment bytes",
                "GET",
                &format!("/api/v1/streams/cam1/fragments/{n}"),
                None,
                read,
            ),
            case(
                "init bytes",
                "GET",
                &format!("/api/v1/streams/cam1/inits/{}", first["init"]),
                None,
                read,
            ),
            case(
                "hls master",
                "GET",
                "/api/v1/streams/cam1/hls/master.m3u8",
                None,
                read,
            ),
            case(
                "hls archive",
                "GET",
                &format!("/api/v1{archive}"),
                None,
                read,
            ),
            case(
                "hls segment",
                "GET",
                &format!("/api/v1/streams/cam1/hls/segments/{n}.m4s"),
                None,
                read,
            ),
            case(
                "hls other",
                "GET",
                "/api/v1/streams/lobby/hls/master.m3u8",
                None,
                others,
            ),
            case(
                "timeline",
                "GET",
                "/api/v1/streams/cam1/timeline",
                None,
                read,
            ),
            case(
                "clip",
                "GET",
                &format!(
                    "/api/v1/streams/cam1/clip.mp4?start={t0_ms}&end={}",
                    t0_ms + 3000
                ),
                None,
                read,
            ),
            case(
                "frame",
                "GET",
                &format!(
                    "/api/v1/streams/cam1/frame.jpg?at={}&width=160",
                    t0_ms + 500
                ),
                None,
                read,
            ),
            case(
                "media feed",
                "GET",
                "/api/v1/streams/cam1/media?start=earliest&follow=false",
                None,
                read,
            ),
            case(
                "stream events",
                "GET",
                "/api/v1/streams/cam1/events",
                None,
                read,
            ),
            case("all events", "GET", "/api/v1/events", None, admin_only),
            case(
                "holds list",
                "GET",
                "/api/v1/streams/cam1/holds",
                None,
                read,
            ),
            case(
                "hold create",
                "POST",
                "/api/v1/streams/cam1/holds",
                js(json!({"start": t0_ms, "end": t0_ms + 1000, "reason": "test"})),
                admin_only,
            ),
            case(
                "retention status",
                "GET",
                "/api/v1/retention",
                None,
                admin_only,
            ),
            case("sweep", "POST", "/api/v1/retention/sweep", None, admin_only),
            case("metrics", "GET", "/metrics", None, admin_only),
            case(
                "playback token",
                "POST",
                "/api/v1/streams/cam1/playback-tokens",
                js(json!({"expires_in": 60})),
                [Y, F, Y, U, U],
            ),
            case(
                "playback token other",
                "POST",
                "/api/v1/streams/lobby/playback-tokens",
                js(json!({})),
                others,
            ),
        ];
        let mut failures = Vec::new();
        for c in &cases {
            for (i, who) in EVERYONE.iter().enumerate() {
                let mut rb = client().request(c.method.clone(), server.url(&c.path));
                if let Some(b) = &c.body {
                    // A refused upload is refused before its body is read: send little.
                    let b = if c.exp[i] == Y {
                        b.clone()
                    } else {
                        b[..b.len().min(4096)].to_vec()
                    };
                    rb = rb.body(b);
                }
                let r = with_key(rb, *who, basic)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .unwrap_or_else(|e| panic!("{} as {who:?}: {e}", c.what));
                let status = r.status().as_u16();
                let challenge = r
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap().to_string());
                let is_json = r
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
                if outcome(status) != Some(c.exp[i]) {
                    let body = if c.what.contains("events") || c.what.contains("feed") {
                        String::new()
                    } else {
                        r.text().unwrap_or_default()
                    };
                    failures.push(format!(
                        "{mode}: {} as {who:?}: got {status}, want {:?}: {}",
                        c.what,
                        c.exp[i],
                        body.chars().take(200).collect::<String>()
                    ));
                    continue;
                }
                if status == 401 {
                    assert_eq!(
                        challenge.as_deref(),
                        Some("Basic realm=\"tapedeck\""),
                        "{}",
                        c.what
                    );
                }
                if status == 401 || status == 403 {
                    assert!(is_json, "{}: refusals are JSON", c.what);
                    let v: Value = r.json().unwrap();
                    let code = if status == 401 {
                        "UNAUTHENTICATED"
                    } else {
                        "PERMISSION_DENIED"
                    };
                    assert_eq!(v["error"]["code"], code, "{}", c.what);
                }
            }
        }
        assert!(failures.is_empty(), "role matrix:\n{}", failures.join("\n"));
    }

    // Lists are filtered to the key's streams.
    let names = |who: Who| -> Vec<String> {
        let v: Value = with_key(client().get(server.api("/streams?limit=1000")), who, false)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    let all = names(Who::Admin);
    assert!(
        all.contains(&"cam1".to_string()) && all.contains(&"lobby".to_string()),
        "{all:?}"
    );
    assert_eq!(names(Who::Viewer), vec!["cam1".to_string()]);
    assert_eq!(names(Who::Producer), vec!["cam1".to_string()]);

    // `curl -u KEY:` (the key as user name, empty password) works too.
    let r = client()
        .get(server.api("/streams/cam1"))
        .basic_auth(VIEWER, Some(""))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Health and the UI stay open.
    assert_alive(&server);
    let ui = client()
        .get(server.url("/"))
        .send()
        .unwrap()
        .status()
        .as_u16();
    assert!(ui != 401 && ui != 403, "UI page: {ui}");
}

fn time_ms(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn new_token(
    server: &Server,
    stream: &str,
    key: &str,
    expires_in: Value,
) -> reqwest::blocking::Response {
    client()
        .post(server.api(&format!("/streams/{stream}/playback-tokens")))
        .bearer_auth(key)
        .json(&json!({"expires_in": expires_in}))
        .send()
        .unwrap()
}

/// Every URI a playlist lists: plain lines and `URI="..."` attributes (with the tag name).
fn uris(playlist: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in playlist.lines() {
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            out.push(("".to_string(), line.to_string()));
        } else if let Some(i) = line.find("URI=\"") {
            let rest = &line[i + 5..];
            let tag = line.split(':').next().unwrap().to_string();
            out.push((tag, rest[..rest.find('"').unwrap()].to_string()));
        }
    }
    out
}

fn get_status_text(url: &str) -> (u16, String) {
    let r = client().get(url).send().unwrap();
    (r.status().as_u16(), r.text().unwrap_or_default())
}

fn assert_refused(url: &str, status: u16, says: &str) {
    let r = client().get(url).send().unwrap();
    assert_eq!(r.status().as_u16(), status, "{url}");
    let v: Value = r.json().unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(says), "{url}: {v}");
}

fn playback_tokens() {
    let server = Server::start_with_config(&auth_config());
    upload_as(&server, "cam1", ADMIN);
    upload_as(&server, "lobby", ADMIN);
    let r = new_token(&server, "cam1", VIEWER, json!(600));
    assert_eq!(r.status(), 201);
    let v: Value = r.json().unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(v["query"], format!("token={token}"));
    assert!(v["expires"].as_str().unwrap().ends_with('Z'), "{v}");
    let hls = server.api("/streams/cam1/hls/");
    let q = format!("?token={token}");

    // No key, no token: 401 with a challenge.
    let r = client().get(format!("{hls}master.m3u8")).send().unwrap();
    assert_eq!(r.status(), 401);

    // Master → live and archive playlists → every listed URI, all with the token alone.
    let (s, master) = get_status_text(&format!("{hls}master.m3u8{q}"));
    assert_eq!(s, 200, "{master}");
    let variants = uris(&master);
    assert_eq!(variants.len(), 1, "{master}");
    assert_eq!(variants[0].1, format!("live.m3u8{q}"));
    let first = get_json_admin(&server, "/streams/cam1/fragments?limit=1");
    let t0_ms = time_ms(first["fragments"][0]["producer_time"].as_str().unwrap());
    for playlist in [
        format!("{hls}{}", variants[0].1),
        format!("{hls}archive.m3u8{q}&start={t0_ms}&end={}", t0_ms + 8000),
    ] {
        let (s, text) = get_status_text(&playlist);
        assert_eq!(s, 200, "{playlist}: {text}");
        let listed = uris(&text);
        assert!(
            listed.iter().any(|(_, u)| u.starts_with("segments/")),
            "{text}"
        );
        assert!(listed.iter().any(|(t, _)| t == "#EXT-X-MAP"), "{text}");
        for (tag, uri) in listed {
            assert!(uri.ends_with(&q), "{uri} carries the token");
            if tag == "#EXT-X-PRELOAD-HINT" {
                continue; // not there yet; a request would block for it
            }
            let r = client().get(format!("{hls}{uri}")).send().unwrap();
            assert_eq!(r.status(), 200, "{uri}");
            assert!(!r.bytes().unwrap().is_empty());
        }
    }
    // Other reads of that stream take the token too; writes and other streams do not.
    let api = |p: &str| server.api(&format!("/streams{p}"));
    assert_eq!(
        get_status_text(&format!("{}{q}", api("/cam1/timeline"))).0,
        200
    );
    assert_eq!(get_status_text(&format!("{}{q}", api("/cam1"))).0, 200);
    assert_refused(
        &format!("{}{q}", api("/lobby/hls/master.m3u8")),
        403,
        "not 'lobby'",
    );
    let r = client()
        .put(format!("{}{q}", api("/cam1/ingest")))
        .body(vec![0u8; 16])
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "a token does not allow ingest");
    let r = client()
        .get(format!("{}{q}", server.api("/streams")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "a token does not list streams");

    // Forged: a flipped character in the payload or in the signature.
    let (payload, sig) = token.split_once('.').unwrap();
    let flip = |s: &str, i: usize| -> String {
        let mut b = s.as_bytes().to_vec();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    for forged in [
        format!("{}.{sig}", flip(payload, 1)),
        format!("{payload}.{}", flip(sig, sig.len() / 2)),
        "garbage".to_string(),
    ] {
        assert_refused(
            &format!("{hls}master.m3u8?token={forged}"),
            403,
            "invalid playback token",
        );
    }
    // A token for another stream.
    let lobby: Value = new_token(&server, "lobby", ADMIN, json!(600))
        .json()
        .unwrap();
    assert_refused(
        &format!("{hls}master.m3u8?{}", lobby["query"].as_str().unwrap()),
        403,
        "is for stream 'lobby'",
    );
    // Expired.
    let short: Value = new_token(&server, "cam1", VIEWER, json!(1)).json().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_refused(
        &format!("{hls}master.m3u8?{}", short["query"].as_str().unwrap()),
        403,
        "expired",
    );
    // Lifetimes out of range; a viewer of other streams; a missing stream.
    assert_eq!(
        new_token(&server, "cam1", VIEWER, json!(86401)).status(),
        400
    );
    assert_eq!(new_token(&server, "cam1", VIEWER, json!(0)).status(), 400);
    assert_eq!(new_token(&server, "lobby", VIEWER, json!(60)).status(), 403);
    assert_eq!(
        new_token(&server, "cam-none", ADMIN, json!(60)).status(),
        404
    );
    // The default lifetime is 12 h.
    let r = client()
        .post(server.api("/streams/cam1/playback-tokens"))
        .bearer_auth(VIEWER)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().unwrap();
    let left = time_ms(v["expires"].as_str().unwrap()) - now_ms();
    assert!(
        (12 * 3600 * 1000 - 60_000..=12 * 3600 * 1000).contains(&left),
        "{v}"
    );
}

fn get_json_admin(server: &Server, path: &str) -> Value {
    get_admin(server, path)
}

/// Without keys (loopback) nothing is checked, tokens still work, and only verified tokens are
/// copied into playlists.
fn no_keys_on_loopback_is_open() {
    let server = Server::start();
    let body = std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap();
    let r = client()
        .put(server.api("/streams/cam1/ingest"))
        .body(body)
        .send()
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        client()
            .get(server.url("/metrics"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let v: Value = client()
        .post(server.api("/streams/cam1/playback-tokens"))
        .json(&json!({"expires_in": 60}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let q = v["query"].as_str().unwrap();
    let hls = server.api("/streams/cam1/hls/");
    let (s, text) = get_status_text(&format!("{hls}master.m3u8?{q}"));
    assert_eq!(s, 200);
    assert!(text.contains(&format!("live.m3u8?{q}")), "{text}");
    let (s, text) = get_status_text(&format!("{hls}master.m3u8?token=%22%0Aevil"));
    assert_eq!(s, 200);
    assert!(
        !text.contains("evil") && text.contains("live.m3u8\n"),
        "{text}"
    );
    let _ = get_json(&server.api("/streams"));
}

fn ffmpeg_ingests_with_basic_credentials_in_the_url() {
    let server = Server::start_with_config(&auth_config());
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let run = |key: &str, stream: &str, realtime: bool| {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
        if realtime {
            cmd.arg("-re");
        }
        cmd.arg("-i")
            .arg(sample("h264_aac_gop2s.mp4"))
            .args([
                "-c",
                "copy",
                "-f",
                "mp4",
                "-movflags",
                "frag_keyframe+empty_moov+default_base_moof",
                "-method",
                "PUT",
            ])
            .arg(format!(
                "http://p:{key}@127.0.0.1:{port}/api/v1/streams/{stream}/ingest"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ffmpeg");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status.success(), err);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ffmpeg did not finish");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (ok, err) = run(PRODUCER, "cam7", true);
    assert!(ok, "ffmpeg failed: {err}");
    let v = get_admin(&server, "/streams/cam7");
    assert!(v["fragment_count"].as_i64().unwrap() >= 4, "{v}");

    // A wrong key stores nothing (the stream is not even created).
    let _ = run(WRONG, "cam8", false);
    let r = client()
        .get(server.api("/streams/cam8"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

fn spawn_bin(dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    let config = dir.join("empty.toml");
    std::fs::write(&config, "").unwrap();
    Command::new(BIN)
        .arg("serve")
        .args(["--listen", "0.0.0.0:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(extra)
        .env_remove("TAPEDECK_LISTEN")
        .env_remove("TAPEDECK_CONFIG")
        .env_remove("TAPEDECK_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tapedeck")
}

fn refuses_public_address_without_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = spawn_bin(tmp.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tapedeck kept running on 0.0.0.0 without keys");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(
        err.contains("[auth]") && err.contains("--insecure"),
        "{err}"
    );
    assert!(!tmp.path().join("data").exists(), "nothing was opened");

    // --insecure starts it anyway.
    let mut child = spawn_bin(tmp.path(), &["--insecure"]);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("tapedeck listening on ") {
                let _ = tx.send(line);
            }
        }
    });
    let started = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    assert!(started.is_ok(), "--insecure did not start");
}
