//! Disk full (issue 7) on a real filesystem that runs out: the data dir is a small tmpfs, filled
//! up by a file of ours. A producer that hits the limit gets an error, not an ack; no index row
//! points at partial bytes; other streams keep being served; once space returns, ingest works
//! again without a restart; `tapedeck check` is clean. Needs root (mount); skips with a reason
//! otherwise, unless TAPEDECK_REQUIRE_CLIENTS=1 (CI, as root), where it fails.

mod common;

use common::harness::{run_tests, test, Need};
use common::*;

fn main() -> std::process::ExitCode {
    run_tests(vec![test(
        "disk_full_refuses_cleanly_and_recovers_when_space_returns",
        disk_full_refuses_cleanly_and_recovers_when_space_returns,
    )
    .needs(&[Need::Root])])
}

/// The stored fragments of `stream` are `expected`, in order: same sizes, and the same media
/// bytes (the moof is rewritten onto the stream's timeline, the mdat is the source's).
fn assert_intact(server: &Server, stream: &str, expected: &[&Vec<u8>]) {
    let rows = all_fragments(server, stream);
    assert_eq!(rows.len(), expected.len(), "fragments of {stream}");
    for (row, want) in rows.iter().zip(expected) {
        let n = row["fragment"].as_i64().unwrap();
        let bytes = get_bytes(&server.api(&format!("/streams/{stream}/fragments/{n}")));
        assert_eq!(bytes.len(), want.len(), "fragment {n} of {stream}: size");
        let tail = 1000.min(bytes.len());
        assert_eq!(
            bytes[bytes.len() - tail..],
            want[want.len() - tail..],
            "fragment {n} of {stream}: media bytes differ"
        );
    }
}

fn disk_full_refuses_cleanly_and_recovers_when_space_returns() {
    let root = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&root.path().join("data"), "12m");
    let mut server = Server::start_in(root.path(), "");
    let sample_bytes = std::fs::read(sample("h264_aac_gop2s.mp4")).unwrap();
    let (_, source) = split_sample("h264_aac_gop2s.mp4");

    let (status, _, summary) = put_ingest(&server, "steady", sample_bytes.clone());
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["fragments"], 5);

    // Fill the filesystem up to 150 kB of free space: room for one fragment at most.
    let filler = fs.0.join("filler.bin");
    let free = fs.free_bytes();
    std::fs::write(&filler, vec![7u8; (free - 150_000) as usize]).unwrap();
    println!("filled: {} bytes free", fs.free_bytes());

    let (status, retry, body) = put_ingest(&server, "victim", sample_bytes.clone());
    println!("upload on a full disk: {status} {body}");
    assert_eq!(status, 503, "{body}");
    assert!(
        error_message(&body, "UNAVAILABLE").contains("disk full"),
        "{body}"
    );
    assert!(retry.is_some(), "Retry-After on a full disk");
    let acked = body["summary"]["fragments"].as_u64().unwrap() as usize;
    assert!(acked < 5, "{body}");
    // What the index lists is exactly what was acknowledged, and intact.
    let once: Vec<&Vec<u8>> = source.iter().collect();
    assert_intact(&server, "victim", &once[..acked]);

    // The other stream is still served while the disk is full: index, bytes, playlist.
    assert_intact(&server, "steady", &once);
    let pl = client()
        .get(server.api("/streams/steady/hls/archive.m3u8"))
        .send()
        .unwrap();
    assert_eq!(pl.status(), 200);
    assert_eq!(pl.text().unwrap().matches("#EXTINF").count(), 5);

    // Space returns: the next upload works, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let (status, _, summary) = put_ingest(&server, "victim", sample_bytes.clone());
    assert_eq!(status, 200, "after freeing space: {summary}");
    assert_eq!(summary["fragments"], 5);
    // The stream holds what was acked before the disk filled, then the new upload.
    let both: Vec<&Vec<u8>> = once[..acked].iter().chain(&once).copied().collect();
    assert_intact(&server, "victim", &both);
    let (status, _, _) = put_ingest(&server, "steady", sample_bytes);
    assert_eq!(status, 200);

    server.stop();
    let (code, report) = run_check(&fs.0, false);
    assert_eq!(code, 0, "tapedeck check after a full disk:\n{report}");
    println!("check: {report}");
}
