//! The object tier (`[storage.object]`, issue 17) against real S3-compatible servers on
//! 127.0.0.1, started here as processes: moto's standalone server (PyPI `moto[server]`) and
//! `s3s-fs` (crates.io, file-backed). `.ci/run` installs both outside the clone; the tests find
//! them through `TAPEDECK_MOTO` / `TAPEDECK_S3S_FS` or at the paths `.ci/run` uses, and are
//! reported as ignored (failed under TAPEDECK_REQUIRE_CLIENTS=1) when one is missing.
//!
//! Crash points come from the uploader's fault injection: `TAPEDECK_OBJECT_FAULT=stop_after_upload`
//! (or `stop_after_record`) parks the upload right after that protocol step and logs it; the
//! test waits for that line and SIGKILLs the server there.

mod common;

use common::harness::{run_tests, test, Need};
use common::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "tapedeck-test";
const ACCESS_KEY: &str = "tapedeck-test-key";
const SECRET_KEY: &str = "tapedeck-test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    // Every server process of this file (tapedeck and the S3 servers) reads these.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_REGION", "us-east-1");
    let moto = [Need::Check("moto", moto_missing)];
    let s3s = [Need::Check("s3s-fs", s3s_missing)];
    run_tests(vec![
        test("moto_tiered_reads_are_identical", || {
            tiered_reads_are_identical(Kind::Moto)
        })
        .needs(&moto),
        test("s3s_fs_tiered_reads_are_identical", || {
            tiered_reads_are_identical(Kind::S3sFs)
        })
        .needs(&s3s),
        test("moto_crash_after_upload_before_record", || {
            crash_at(Kind::Moto, "stop_after_upload")
        })
        .needs(&moto),
        test("moto_crash_after_record_before_local_delete", || {
            crash_at(Kind::Moto, "stop_after_record")
        })
        .needs(&moto),
        test("s3s_fs_crash_after_upload_before_record", || {
            crash_at(Kind::S3sFs, "stop_after_upload")
        })
        .needs(&s3s),
        test("s3s_fs_crash_after_record_before_local_delete", || {
            crash_at(Kind::S3sFs, "stop_after_record")
        })
        .needs(&s3s),
        // moto keeps its buckets in memory: a stopped moto comes back empty, which is a lost
        // bucket, not an outage. The outage is played with s3s-fs, whose files survive.
        test("s3s_fs_store_down_during_ingest", || {
            store_down_during_ingest(Kind::S3sFs)
        })
        .needs(&s3s),
        test("moto_retention_and_delete_leave_no_objects", || {
            retention_and_delete_leave_no_objects(Kind::Moto)
        })
        .needs(&moto),
        test("s3s_fs_retention_and_delete_leave_no_objects", || {
            retention_and_delete_leave_no_objects(Kind::S3sFs)
        })
        .needs(&s3s),
    ])
}

fn moto_path() -> PathBuf {
    std::env::var_os("TAPEDECK_MOTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/tapedeck-moto-venv/bin/moto_server".into())
}

fn s3s_path() -> PathBuf {
    std::env::var_os("TAPEDECK_S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/tapedeck-s3s-fs/bin/s3s-fs".into())
}

fn moto_missing() -> Option<String> {
    (!moto_path().exists()).then(|| {
        format!(
            "moto_server at {} (pip install 'moto[server]', or set TAPEDECK_MOTO)",
            moto_path().display()
        )
    })
}

fn s3s_missing() -> Option<String> {
    (!s3s_path().exists()).then(|| {
        format!(
            "s3s-fs at {} (cargo install s3s-fs --features binary, or set TAPEDECK_S3S_FS)",
            s3s_path().display()
        )
    })
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Moto,
    S3sFs,
}

/// An S3-compatible server process on 127.0.0.1.
struct S3Server {
    kind: Kind,
    port: u16,
    /// s3s-fs's storage (kept across restarts).
    root: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl S3Server {
    /// Starts the server; the bucket is made by `create_bucket`.
    fn start(kind: Kind) -> S3Server {
        let mut s = S3Server {
            kind,
            port: free_port(),
            root: tempfile::tempdir().unwrap(),
            child: None,
        };
        s.restart();
        s
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the process on the same port (and, for s3s-fs, the same files).
    fn restart(&mut self) {
        let log = std::fs::File::create(self.root.path().join(format!(
            "server-{}.log",
            Instant::now().elapsed().as_nanos()
        )))
        .unwrap();
        let mut cmd = match self.kind {
            Kind::Moto => {
                let mut c = Command::new(moto_path());
                c.args(["-H", "127.0.0.1", "-p", &self.port.to_string()]);
                c
            }
            Kind::S3sFs => {
                let data = self.root.path().join("fs");
                std::fs::create_dir_all(&data).unwrap();
                let mut c = Command::new(s3s_path());
                c.args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                    .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                    .arg(&data);
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the S3 server");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until("the S3 server to listen", WAIT, || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn create_bucket(&self) {
        match self.kind {
            // moto does not check signatures: a plain PUT makes the bucket.
            Kind::Moto => {
                let r = client()
                    .put(format!("{}/{BUCKET}", self.endpoint()))
                    .send()
                    .unwrap();
                assert!(r.status().is_success(), "create bucket: {}", r.status());
            }
            // s3s-fs keeps a bucket as a directory.
            Kind::S3sFs => {
                std::fs::create_dir_all(self.root.path().join("fs").join(BUCKET)).unwrap()
            }
        }
    }

    /// Every object key in the bucket with its size.
    fn list(&self) -> BTreeMap<String, u64> {
        match self.kind {
            Kind::Moto => {
                let mut out = BTreeMap::new();
                let mut token: Option<String> = None;
                loop {
                    let mut url = format!("{}/{BUCKET}?list-type=2", self.endpoint());
                    if let Some(t) = &token {
                        url.push_str(&format!("&continuation-token={t}"));
                    }
                    let text = client().get(url).send().unwrap().text().unwrap();
                    for item in text.split("<Contents>").skip(1) {
                        let key = between(item, "<Key>", "</Key>");
                        let size = between(item, "<Size>", "</Size>").parse().unwrap();
                        out.insert(key.to_string(), size);
                    }
                    if text.contains("<IsTruncated>true</IsTruncated>") {
                        token = Some(between(&text, "<NextContinuationToken>", "<").to_string());
                    } else {
                        return out;
                    }
                }
            }
            Kind::S3sFs => {
                let root = self.root.path().join("fs").join(BUCKET);
                let mut out = BTreeMap::new();
                walk(&root, &root, &mut out);
                out
            }
        }
    }

    /// Puts an object no index names (an orphan), straight to the server.
    fn put_orphan(&self, key: &str) {
        match self.kind {
            Kind::Moto => {
                let r = client()
                    .put(format!("{}/{BUCKET}/{key}", self.endpoint()))
                    .body(vec![7u8; 100])
                    .send()
                    .unwrap();
                assert!(r.status().is_success());
            }
            Kind::S3sFs => {
                let p = self.root.path().join("fs").join(BUCKET).join(key);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, vec![7u8; 100]).unwrap();
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> &'a str {
    let start = s.find(a).map(|i| i + a.len()).unwrap_or(0);
    let end = s[start..].find(b).map(|i| start + i).unwrap_or(s.len());
    &s[start..end]
}

/// Files under `dir` as keys relative to `root` (s3s-fs keeps upload metadata in dot files).
fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let key = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            out.insert(key, e.metadata().unwrap().len());
        }
    }
}

/// The tapedeck config for the tier at `s3` (local copies go as soon as they are uploaded).
fn config(s3: &S3Server, extra: &str) -> String {
    format!(
        "[storage]\nfile_roll_secs = 1\n\n[storage.object]\nurl = \"s3://{BUCKET}/site-a\"\n\
         endpoint = \"{}\"\npath_style = true\nlocal_keep_hours = 0\nupload_concurrency = 1\n{extra}",
        s3.endpoint()
    )
}

/// The `tapedeck check` of a data dir with the server's config.
fn check(root: &Path, repair: bool) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("check")
        .arg("--config")
        .arg(root.join("tapedeck.toml"))
        .arg("--data-dir")
        .arg(root.join("data"));
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().expect("run check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn describe(server: &Server, stream: &str) -> serde_json::Value {
    get_json(&server.api(&format!("/streams/{stream}")))
}

/// Ingests the sample (acked) and returns how many fragments it stored.
fn ingest(server: &Server, stream: &str) -> usize {
    let body = std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap();
    let (status, _, json) = put_ingest(server, stream, body);
    assert_eq!(status, 200, "{json}");
    all_fragments(server, stream).len()
}

/// Waits until every byte of the stream is in the bucket and none is on the local disk.
fn wait_all_remote(server: &Server, stream: &str) {
    wait_until(
        "every file uploaded and its local copy deleted",
        WAIT,
        || {
            let d = describe(server, stream);
            d["local_bytes"] == 0 && d["remote_bytes"].as_i64() >= d["bytes"].as_i64()
        },
    );
}

fn sha(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Everything a client can read of a stream, hashed: every fragment (fragments API), the
/// archive playlist and every segment in it, a clip, a frame, and the follow feed from
/// `earliest`.
fn read_everything(server: &Server, stream: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in all_fragments(server, stream) {
        let n = f["fragment"].as_i64().unwrap();
        let b = get_bytes(&server.api(&format!("/streams/{stream}/fragments/{n}")));
        out.insert(format!("fragment {n:05}"), sha(&b));
    }
    let d = describe(server, stream);
    let (first, last) = (
        d["first_time"].as_str().unwrap().to_string(),
        d["last_time"].as_str().unwrap().to_string(),
    );
    let playlist = String::from_utf8(get_bytes(&server.api(&format!(
        "/streams/{stream}/hls/archive.m3u8?start={first}&end={last}"
    ))))
    .unwrap();
    for line in playlist
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let url = if line.starts_with("http") {
            line.to_string()
        } else {
            server.api(&format!("/streams/{stream}/hls/{line}"))
        };
        out.insert(format!("segment {line}"), sha(&get_bytes(&url)));
    }
    out.insert("archive.m3u8".into(), sha(playlist.as_bytes()));
    let clip = get_bytes(&server.api(&format!(
        "/streams/{stream}/clip.mp4?start={first}&end={last}"
    )));
    out.insert("clip.mp4".into(), sha(&clip));
    let frame = get_bytes(&server.api(&format!("/streams/{stream}/frame.jpg?at={first}")));
    out.insert("frame.jpg".into(), sha(&frame));
    let feed = get_bytes(&server.api(&format!(
        "/streams/{stream}/media?start=earliest&follow=false"
    )));
    out.insert("follow feed".into(), sha(&feed));
    out
}

/// Record, seal, upload, delete locally: every read gives the same bytes as before.
fn tiered_reads_are_identical(kind: Kind) {
    let mut s3 = S3Server::start(kind);
    // The object server is not running yet: uploads fail (and are retried), so the first reads
    // are all local. (A missing bucket would not do: s3s-fs makes the bucket's directory on the
    // first PUT into it.)
    s3.stop();
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_in(root.path(), &config(&s3, ""));
    let fragments = ingest(&server, "cam");
    assert!(fragments > 3);
    let before = read_everything(&server, "cam");
    assert_eq!(describe(&server, "cam")["remote_bytes"], 0);
    assert!(
        before.keys().any(|k| k.starts_with("segment")),
        "{before:?}"
    );

    s3.restart();
    s3.create_bucket();
    wait_all_remote(&server, "cam");
    let local_files = std::fs::read_dir(root.path().join("data/streams"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .count();
    assert_eq!(local_files, 0, "no local fragment file is left");
    let objects = s3.list();
    assert!(!objects.is_empty());
    assert!(
        objects.keys().all(|k| k.starts_with("site-a/streams/")),
        "{objects:?}"
    );

    let after = read_everything(&server, "cam");
    assert_eq!(before, after, "reads from the object tier differ");
    assert!(metric(&server, "tapedeck_object_read_seconds_count") > 0.0);
    assert_eq!(metric(&server, "tapedeck_object_local_bytes"), 0.0);
    assert!(metric(&server, "tapedeck_object_uploads_total") >= 1.0);

    // A restart reads the same from the bucket, and check agrees with it.
    let mut server = server;
    server.stop();
    let (code, out) = check(root.path(), false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: index and files agree"), "{out}");
    let server = Server::start_in(root.path(), &config(&s3, ""));
    let restarted = read_everything(&server, "cam");
    let differ: Vec<&String> = before
        .keys()
        .filter(|k| restarted.get(*k) != before.get(*k))
        .collect();
    assert!(
        differ.is_empty(),
        "after a restart these reads differ: {differ:?}\nbefore: {before:?}\nafter: {restarted:?}"
    );
}

/// SIGKILL at a protocol step; restart: every fragment is there and identical, the files end
/// up uploaded and local copies deleted, and check is clean (after --repair for the orphan).
fn crash_at(kind: Kind, step: &str) {
    let s3 = S3Server::start(kind);
    s3.create_bucket();
    let root = tempfile::tempdir().unwrap();
    let toml = config(&s3, "");
    let mut server = Server::start_in_env(root.path(), &toml, &[("TAPEDECK_OBJECT_FAULT", step)]);
    ingest(&server, "cam");
    let hashes: Vec<String> = all_fragments(&server, "cam")
        .iter()
        .map(|f| {
            let n = f["fragment"].as_i64().unwrap();
            sha(&get_bytes(
                &server.api(&format!("/streams/cam/fragments/{n}")),
            ))
        })
        .collect();
    let line = format!("object fault injection: stopped after {step}");
    wait_until(&line, WAIT, || server.log().contains(&line));
    server.kill();
    assert!(
        !s3.list().is_empty(),
        "the object was uploaded before the kill"
    );

    let (code, out) = check(root.path(), false);
    if step == "stop_after_upload" {
        // Uploaded, not recorded: a note (the next start uploads it again), not a problem.
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("not recorded"), "{out}");
        // And a real orphan, which is a problem until --repair deletes it.
        s3.put_orphan("site-a/streams/999/0000000999.frag");
        let (code, out) = check(root.path(), false);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("orphan"), "{out}");
        let (code, out) = check(root.path(), true);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("repaired: deleted object site-a/streams/999"),
            "{out}"
        );
    } else {
        assert_eq!(code, 0, "{out}");
    }

    let server = Server::start_in(root.path(), &toml);
    wait_all_remote(&server, "cam");
    let after: Vec<String> = all_fragments(&server, "cam")
        .iter()
        .map(|f| {
            let n = f["fragment"].as_i64().unwrap();
            sha(&get_bytes(
                &server.api(&format!("/streams/cam/fragments/{n}")),
            ))
        })
        .collect();
    assert_eq!(hashes, after, "every fragment is there, byte for byte");
    let mut server = server;
    server.stop();
    let (code, out) = check(root.path(), false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: index and files agree"), "{out}");
    assert!(!out.contains("note:"), "{out}");
    assert!(!s3.list().contains_key("site-a/streams/999/0000000999.frag"));
}

/// The object server is stopped during ingest: acks go on, remote-only media answers 503 with
/// Retry-After, and after the server is back every file is uploaded.
fn store_down_during_ingest(kind: Kind) {
    let mut s3 = S3Server::start(kind);
    s3.create_bucket();
    let root = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(root.path(), &config(&s3, ""));
    ingest(&server, "old");
    wait_all_remote(&server, "old");
    let old = all_fragments(&server, "old");
    // A fresh start: no newest-fragment bytes in memory, so "old" is read from the bucket.
    server.stop();
    let server = Server::start_in(root.path(), &config(&s3, ""));

    s3.stop();
    // Ingest is unaffected: every fragment of a new upload is acknowledged.
    let body = std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap();
    let (status, _, json) = put_ingest(&server, "new", body);
    assert_eq!(status, 200, "{json}");
    let new_fragments = all_fragments(&server, "new");
    assert!(!new_fragments.is_empty());
    // Local media still plays.
    get_bytes(&server.api("/streams/new/fragments/1"));
    // Remote-only media answers 503 with Retry-After.
    let n = old[0]["fragment"].as_i64().unwrap();
    let r = client()
        .get(server.api(&format!("/streams/old/fragments/{n}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let r = client()
        .get(server.api("/streams/old/hls/segments/1.m4s"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    // The queue waits, and says so.
    wait_until("an upload error and a queued file", WAIT, || {
        metric(&server, "tapedeck_object_upload_errors_total") > 0.0
            && metric(&server, "tapedeck_object_upload_queue_files") > 0.0
    });
    let ready = client().get(server.url("/readyz")).send().unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().unwrap().contains("unreachable"));

    s3.restart();
    wait_all_remote(&server, "new");
    wait_until("the queue to drain", WAIT, || {
        metric(&server, "tapedeck_object_upload_queue_files") == 0.0
    });
    get_bytes(&server.api(&format!("/streams/old/fragments/{n}")));
    let keys = s3.list();
    let new_id = all_fragments(&server, "new").len();
    assert!(new_id > 0 && keys.len() >= 2, "{keys:?}");
}

/// Retention and stream delete remove index rows, then objects: the bucket ends empty.
fn retention_and_delete_leave_no_objects(kind: Kind) {
    let s3 = S3Server::start(kind);
    s3.create_bucket();
    let root = tempfile::tempdir().unwrap();
    let toml = config(
        &s3,
        "[retention]\nsweep_interval_secs = 1\nlive_buffer_secs = 1\n",
    );
    let server = Server::start_in(root.path(), &toml);
    for stream in ["expires", "deleted"] {
        ingest(&server, stream);
        wait_all_remote(&server, stream);
    }
    let listed = s3.list();
    assert!(listed.len() >= 2, "{listed:?}");
    let r = client()
        .delete(server.api("/streams/deleted"))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // Live-only: its media expires after retention.live_buffer_secs.
    let r = client()
        .patch(server.api("/streams/expires"))
        .json(&serde_json::json!({"retention_hours": 0}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    wait_until("the bucket to be empty", WAIT, || s3.list().is_empty());
    wait_until("the stream to be empty", WAIT, || {
        describe(&server, "expires")["fragment_count"] == 0
    });
    assert_eq!(describe(&server, "expires")["remote_bytes"], 0);
    let mut server = server;
    server.stop();
    let (code, out) = check(root.path(), false);
    assert_eq!(code, 0, "{out}");
}
