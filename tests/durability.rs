//! Crash safety: SIGKILL the server while ffmpeg uploads, at several points; after restart every
//! acknowledged fragment is present and byte-identical, and `tapedeck check` finds index and
//! files in agreement.

mod common;

use common::harness::{run_tests, test, Need};
use common::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    run_tests(vec![
        test(
            "sigkill_during_ffmpeg_upload_loses_no_acknowledged_fragment",
            sigkill_during_ffmpeg_upload_loses_no_acknowledged_fragment,
        )
        .needs(&[Need::Program("ffmpeg"), Need::Program("curl")]),
        test(
            "check_reports_and_repairs_inconsistencies",
            check_reports_and_repairs_inconsistencies,
        ),
    ])
}

/// Starts `ffmpeg (live test source) | curl -N -T - (NDJSON acks)` to the stream; returns the
/// two children and a receiver of acknowledged fragment numbers.
fn start_producer(
    url: &str,
) -> (
    std::process::Child,
    std::process::Child,
    mpsc::Receiver<i64>,
) {
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
            "60",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "12",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-f",
            "mp4",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "pipe:1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg");
    let mut curl = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "-T",
            "-",
            "-H",
            "Accept: application/x-ndjson",
            url,
        ])
        .stdin(Stdio::from(ffmpeg.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn curl");
    let (tx, rx) = mpsc::channel();
    let out = curl.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["event"] == "persisted" {
                let _ = tx.send(v["fragment"].as_i64().unwrap());
            }
        }
    });
    (ffmpeg, curl, rx)
}

fn sigkill_during_ffmpeg_upload_loses_no_acknowledged_fragment() {
    let root = tempfile::tempdir().unwrap();
    // Fragment hashes taken right after each ack, while the server was alive.
    let mut acked: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    for (round, kill_after_acks) in [3usize, 6, 1, 9].into_iter().enumerate() {
        let mut server = Server::start_in(root.path(), "");
        // Everything acknowledged in earlier rounds survived the earlier kills.
        for (n, hash) in acked.iter_mut() {
            let bytes = get_bytes(&server.api(&format!("/streams/crash/fragments/{n}")));
            let now = Sha256::digest(&bytes).to_vec();
            if hash.is_empty() {
                // Acked as the server died: present, and from now on it must not change.
                *hash = now;
            } else {
                assert_eq!(&now, hash, "fragment {n} changed (round {round})");
            }
        }
        let (mut ffmpeg, mut curl, acks) = start_producer(&server.api("/streams/crash/ingest"));
        let mut this_round = 0;
        while this_round < kill_after_acks {
            let n = acks
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| {
                    panic!("no ack in 20 s (round {round}); log:\n{}", server.log())
                });
            let bytes = get_bytes(&server.api(&format!("/streams/crash/fragments/{n}")));
            acked.insert(n, Sha256::digest(&bytes).to_vec());
            this_round += 1;
        }
        // Mid-upload: ffmpeg is still producing and curl still sending.
        assert!(
            ffmpeg.try_wait().unwrap().is_none(),
            "ffmpeg ended too early"
        );
        server.kill();
        let _ = curl.kill();
        let _ = ffmpeg.kill();
        let _ = curl.wait();
        let _ = ffmpeg.wait();
        // Acks that raced the kill still count: they were sent after commit.
        while let Ok(n) = acks.try_recv() {
            acked.entry(n).or_default();
        }
        let (code, report) = run_check(&server.data_dir, false);
        assert_eq!(code, 0, "check after SIGKILL (round {round}):\n{report}");
        let server = Server::start_in(root.path(), "");
        let frags = all_fragments(&server, "crash");
        let stored: BTreeMap<i64, ()> = frags
            .iter()
            .map(|f| (f["fragment"].as_i64().unwrap(), ()))
            .collect();
        for (n, hash) in &acked {
            assert!(
                stored.contains_key(n),
                "acknowledged fragment {n} lost (round {round})"
            );
            if !hash.is_empty() {
                let bytes = get_bytes(&server.api(&format!("/streams/crash/fragments/{n}")));
                assert_eq!(
                    &Sha256::digest(&bytes).to_vec(),
                    hash,
                    "fragment {n} differs after restart"
                );
            }
        }
        drop(server);
        let (code, report) = run_check(&root.path().join("data"), false);
        assert_eq!(code, 0, "check after restart (round {round}):\n{report}");
        assert!(report.contains("ok: index and files agree"), "{report}");
        assert!(
            !report.contains("bytes past"),
            "restart cut every unacknowledged tail: {report}"
        );
    }
    assert!(acked.len() >= 19, "acked {} fragments", acked.len());
}

fn frag_files(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for stream in std::fs::read_dir(data_dir.join("streams")).unwrap() {
        for f in std::fs::read_dir(stream.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn check_reports_and_repairs_inconsistencies() {
    let root = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(root.path(), "");
    let body = std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap();
    let r = client()
        .put(server.api("/streams/chk/ingest"))
        .body(body)
        .send()
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(server.stop(), Some(0));
    let data = root.path().join("data");
    let (code, out) = run_check(&data, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checked 5 fragments in 1 files"), "{out}");

    let files = frag_files(&data);
    let file = files[0].clone();
    let len = std::fs::metadata(&file).unwrap().len();
    // 1. An unacknowledged tail (what a crash leaves) is a note, not a problem.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    std::io::Write::write_all(&mut f, b"half a fragment").unwrap();
    drop(f);
    let (code, out) = run_check(&data, false);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("15 bytes past its last indexed fragment"),
        "{out}"
    );
    // 2. A file no row names, and 3. an indexed fragment cut in half.
    let orphan = file.with_file_name("0000009999.frag");
    std::fs::write(&orphan, b"junk").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();
    let (code, out) = run_check(&data, false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not in the index"), "{out}");
    assert!(out.contains("fragment 5: ends at byte"), "{out}");
    assert!(out.contains("problem: stream"), "{out}");
    // Repair, then the index and files agree and the stream lost just the damaged fragment.
    let (code, out) = run_check(&data, true);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("repaired:"), "{out}");
    assert!(!orphan.exists());
    let (code, out) = run_check(&data, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: index and files agree"), "{out}");
    let server = Server::start_in(root.path(), "");
    let desc = get_json(&server.api("/streams/chk"));
    assert_eq!(desc["fragment_count"], 4, "{desc}");
    assert_eq!(all_fragments(&server, "chk").len(), 4);
}
