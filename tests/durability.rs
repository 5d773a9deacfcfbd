//! Crash safety: SIGKILL the server while ffmpeg uploads, at several points; after restart every
//! acknowledged fragment is present and byte-identical, and `tapedeck check` finds index and
//! files in agreement.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

#[test]
fn sigkill_during_ffmpeg_upload_loses_no_acknowledged_fragment() {
    if !have("ffmpeg") || !have("curl") {
        return;
    }
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
