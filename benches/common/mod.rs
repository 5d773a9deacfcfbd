//! What the benches share: starting the real server binary on a data dir and learning its port.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starts `tapedeck serve` on 127.0.0.1 (free port) with `data` (created if missing), stderr to
/// `log`, an optional `--config` (none: no free-space floor); waits up to `wait` for its "listening" line. Returns the child
/// and its port. The child's stdout is drained for its whole life so it never blocks.
pub fn spawn_server(
    data: &Path,
    log: &Path,
    config: Option<&Path>,
    wait: Duration,
) -> Result<(Child, u16), BoxError> {
    std::fs::create_dir_all(data)?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapedeck"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data);
    // Without a config of the bench's own: no free-space floor. The default (5 % of the disk)
    // is the host's business; on a shared, nearly full disk the sweeper would delete the media a
    // bench is about to read back and count as lost.
    let default_config = log.with_extension("toml");
    let config = match config {
        Some(c) => c,
        None => {
            std::fs::write(&default_config, "[storage]\nmin_free_bytes = 0\n")?;
            &default_config
        }
    };
    cmd.arg("--config").arg(config);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("tapedeck listening on http://") {
                    let port = rest
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse().ok())
                        .ok_or_else(|| format!("cannot read the port from '{line}'"))?;
                    return Ok((child, port));
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!("the server did not start; its log:\n{text}").into());
            }
        }
    }
}

/// One line describing looped source media: how many fragments, how long, how large, what rate.
/// (The playback bench, which also includes this module, uploads no looped media.)
#[allow(dead_code)]
pub fn describe_media(
    source: &str,
    fragments: usize,
    frag_duration: Duration,
    total_bytes: usize,
) -> String {
    let avg_bytes = total_bytes as f64 / fragments.max(1) as f64;
    format!(
        "{source}; {fragments} source fragments of {:.2} s, {:.0} KB average ({:.2} Mbit/s)",
        frag_duration.as_secs_f64(),
        avg_bytes / 1e3,
        avg_bytes * 8.0 / frag_duration.as_secs_f64() / 1e6
    )
}
