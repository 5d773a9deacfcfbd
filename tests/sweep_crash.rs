//! SIGKILL in the middle of a retention sweep: after restart, index and files agree.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn sigkill_mid_sweep_leaves_index_and_files_in_agreement() {
    let root = tempfile::tempdir().unwrap();
    // Small batches and files so a sweep takes many steps and removes many files.
    let toml = "[retention]\nsweep_interval_secs = 3600\nlive_buffer_secs = 1\nbatch_rows = 4\n\
                [storage]\nfile_roll_bytes = 1048576\n";
    let body = std::fs::read(sample("h264_cmaf_chunks.mp4")).unwrap();
    for (round, kill_after_ms) in [15u64, 60, 150].into_iter().enumerate() {
        let mut server = Server::start_in(root.path(), toml);
        if round == 0 {
            let r = client()
                .post(server.api("/streams"))
                .json(&serde_json::json!({"name": "lo", "retention_hours": 0}))
                .send()
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        for _ in 0..10 {
            let r = client()
                .put(server.api("/streams/lo/ingest"))
                .body(body.clone())
                .send()
                .unwrap();
            assert!(r.status().is_success());
        }
        let before = get_json(&server.api("/streams/lo"))["fragment_count"]
            .as_i64()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        let url = server.api("/retention/sweep");
        std::thread::spawn(move || {
            let _ = client().post(url).send();
        });
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        server.kill();
        let (code, report) = run_check(&server.data_dir, false);
        assert_eq!(
            code, 0,
            "check after SIGKILL mid-sweep (round {round}):\n{report}"
        );
        let server = Server::start_in(root.path(), toml);
        let desc = get_json(&server.api("/streams/lo"));
        let left = desc["fragment_count"].as_i64().unwrap();
        assert_eq!(
            left as usize,
            all_fragments(&server, "lo").len(),
            "totals agree with rows"
        );
        println!("round {round}: {before} fragments before, {left} after the interrupted sweep");
        drop(server);
        let (code, report) = run_check(&root.path().join("data"), false);
        assert_eq!(code, 0, "check after restart (round {round}):\n{report}");
        assert!(report.contains("ok: index and files agree"), "{report}");
    }
}
