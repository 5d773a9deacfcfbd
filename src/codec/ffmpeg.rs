//! Decoding through the `ffmpeg` binary, for everything with video that ffmpeg knows and
//! openh264 does not (H.265; H.264 4:2:2, 4:4:4 or 10-bit): the init and the fragments on its
//! stdin, a `select` filter on the wanted presentation timestamps, `showinfo` to say which
//! picture is which, raw `yuv420p` out. Blocking: it waits for the child process.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::error::DecodeError;
use super::picture::{Decoded, Picture};

/// How long one ffmpeg run may take before it is killed. A GOP of 1080p HEVC decodes in well
/// under a second here; this only guards against a wedged process holding a decode slot.
const FFMPEG_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `ffmpeg` runs (`ffmpeg -version` succeeds).
pub fn usable(ffmpeg: &str) -> bool {
    Command::new(ffmpeg)
        .arg("-version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Decodes, with the ffmpeg binary, the pictures whose presentation timestamps (decode time plus
/// composition offset, in the track's timescale; ffmpeg keeps them with `-copyts`) are the keys
/// of `by_pts`, and gives each under its value. `init` and `fragments` are the stored bytes.
pub fn decode(
    ffmpeg: &Path,
    init: &[u8],
    fragments: &[&[u8]],
    by_pts: &BTreeMap<i64, usize>,
) -> Result<Decoded, DecodeError> {
    if by_pts.is_empty() {
        return Ok(Decoded::new());
    }
    let select = by_pts
        .keys()
        .map(|p| format!("eq(pts\\,{p})"))
        .collect::<Vec<_>>()
        .join("+");
    let mut child = Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"])
        .args([
            "-copyts", "-f", "mp4", "-i", "pipe:0", "-map", "0:v:0", "-an",
        ])
        .args(["-vf", &format!("select='{select}',showinfo")])
        .args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg("pipe:1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DecodeError(format!("cannot run {}: {e}", ffmpeg.display())))?;
    let mut input =
        Vec::with_capacity(init.len() + fragments.iter().map(|f| f.len()).sum::<usize>());
    input.extend_from_slice(init);
    for f in fragments {
        input.extend_from_slice(f);
    }
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            // ffmpeg may stop reading once it has what it needs: a broken pipe is fine.
            let _ = s.write_all(&input);
        }
    });
    let mut stderr_pipe = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr_pipe.as_mut() {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    // Kills ffmpeg if it outlives FFMPEG_TIMEOUT; dropped (disarmed) once stdout ends.
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            done_rx.recv_timeout(FFMPEG_TIMEOUT)
        {
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet (we wait
            // for it only after this thread ends).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    });
    let mut raw = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut raw);
    }
    drop(done_tx);
    let _ = watchdog.join();
    let status = child.wait();
    let _ = writer.join();
    let log = stderr_reader.join().unwrap_or_default();
    let failed = |why: String| {
        let tail: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("Parsed_showinfo"))
            .rev()
            .take(3)
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        DecodeError(format!("ffmpeg {why}: {}", tail.join(" | ")))
    };
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(failed(format!("exited with {s}"))),
        Err(e) => return Err(failed(format!("could not be waited for ({e})"))),
    }
    let mut out = Decoded::new();
    let mut offset = 0usize;
    for (pts, (w, h)) in showinfo_frames(&log) {
        let len = Picture::i420_len(w, h);
        let Some(pixels) = raw.get(offset..offset + len) else {
            return Err(failed(format!(
                "wrote {} bytes of pictures, fewer than its log announced",
                raw.len()
            )));
        };
        offset += len;
        if let Some(&i) = by_pts.get(&pts) {
            if let Some(p) = Picture::from_i420(w, h, pixels) {
                out.insert(i, p);
            }
        }
    }
    if out.len() < by_pts.len() {
        return Err(failed(format!(
            "gave {} of the {} pictures wanted",
            out.len(),
            by_pts.len()
        )));
    }
    Ok(out)
}

/// (pts, (width, height)) of each picture `showinfo` reported, in output order.
fn showinfo_frames(log: &str) -> Vec<(i64, (u32, u32))> {
    let field = |line: &str, key: &str| -> Option<String> {
        let at = line.find(key)? + key.len();
        let rest = line[at..].trim_start();
        Some(rest.split_whitespace().next()?.to_string())
    };
    log.lines()
        .filter(|l| l.contains("Parsed_showinfo") && l.contains(" n:"))
        .filter_map(|l| {
            let pts = field(l, " pts:")?.parse::<i64>().ok()?;
            let size = field(l, " s:")?;
            let (w, h) = size.split_once('x')?;
            Some((pts, (w.parse().ok()?, h.parse().ok()?)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn showinfo_lines() {
        let log = "[Parsed_showinfo_1 @ 0x55] config in time_base: 1/12800, frame_rate: 25/1\n\
            [Parsed_showinfo_1 @ 0x55] n:   0 pts:22784 pts_time:1.78 duration: 512 fmt:rgb24 s:640x360 i:P\n\
            [Parsed_showinfo_1 @ 0x55] n:   1 pts:  23296 pts_time:1.82 s:320x180 i:P\n";
        assert_eq!(
            showinfo_frames(log),
            vec![(22784, (640, 360)), (23296, (320, 180))]
        );
    }
}
