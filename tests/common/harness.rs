//! The test runner of every test file with a test that needs an external client (ffmpeg, a
//! browser, GStreamer, schemathesis, root for a tmpfs). libtest has no way for a test to say
//! "skipped" at run time: a test that returns early counts as passed. So those files use
//! `harness = false` and list their tests here with what each needs. Needs are checked before
//! anything runs; a test whose need is missing is reported as ignored, with the need in its
//! line (`test [needs ffmpeg] name ... ignored`) and in cargo's summary count, unless
//! `TAPEDECK_REQUIRE_CLIENTS=1` (set by `.ci/run`), where it fails with the reason.
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     run_tests(vec![
//!         test("plain_test", plain_test),
//!         test("plays_in_ffplay", plays_in_ffplay).needs(&[Need::Program("ffmpeg")]),
//!     ])
//! }
//! ```
#![allow(dead_code)]

use libtest_mimic::{Arguments, Failed, Trial};
use std::collections::HashMap;
use std::process::{Command, ExitCode, Stdio};

/// Something a test needs that a fresh machine may lack.
#[derive(Clone, Copy)]
pub enum Need {
    /// A program on PATH (started with `-version` to see that it runs).
    Program(&'static str),
    /// node (>= 20), Chromium and these paths under `tests/browser/node_modules`.
    Browser(&'static [&'static str]),
    /// Root, to mount a small tmpfs (a filesystem that can run out of space).
    Root,
    /// GStreamer elements (`gst-inspect-1.0 <element>` succeeds for each).
    Gst(&'static [&'static str]),
    /// Anything else: a name, and a check that says why it is missing (None: present).
    Check(&'static str, fn() -> Option<String>),
}

impl Need {
    /// Why the need is not met on this machine, or None.
    fn missing(&self) -> Option<String> {
        match *self {
            Need::Program(p) => (!runs(p, "-version")).then(|| format!("{p} (not found)")),
            Need::Browser(modules) => {
                let mut gone = Vec::new();
                if !runs("node", "--version") {
                    gone.push("node (>= 20)".to_string());
                }
                let chromium = super::chromium_path();
                if !chromium.exists() {
                    gone.push(format!("{} (apt-get install chromium)", chromium.display()));
                }
                for m in modules {
                    let p = super::browser_dir().join("node_modules").join(m);
                    if !p.exists() {
                        gone.push(format!("{} (npm ci in tests/browser)", p.display()));
                    }
                }
                (!gone.is_empty()).then(|| gone.join(", "))
            }
            // SAFETY: geteuid has no preconditions.
            Need::Root => {
                (unsafe { libc::geteuid() } != 0).then(|| "root (to mount a tmpfs)".to_string())
            }
            Need::Gst(elements) => {
                let gone: Vec<&str> = elements
                    .iter()
                    .copied()
                    .filter(|e| {
                        !Command::new("gst-inspect-1.0")
                            .arg(e)
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .is_ok_and(|s| s.success())
                    })
                    .collect();
                (!gone.is_empty()).then(|| format!("GStreamer elements {}", gone.join(", ")))
            }
            Need::Check(_, check) => check(),
        }
    }

    fn label(&self) -> String {
        match *self {
            Need::Program(p) => p.to_string(),
            Need::Browser(_) => "browser".to_string(),
            Need::Root => "root".to_string(),
            Need::Gst(_) => "gstreamer".to_string(),
            Need::Check(name, _) => name.to_string(),
        }
    }
}

/// Whether `program arg` can be started at all (its exit status does not matter).
fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// One test of a file: its name (as `cargo test NAME` filters it), body and needs.
pub struct Test {
    name: &'static str,
    body: fn(),
    needs: Vec<Need>,
    /// Like libtest's `#[ignore = "why"]`: run only with `--ignored` / `--include-ignored`.
    ignored: Option<&'static str>,
}

pub fn test(name: &'static str, body: fn()) -> Test {
    Test {
        name,
        body,
        needs: Vec::new(),
        ignored: None,
    }
}

impl Test {
    pub fn needs(mut self, needs: &[Need]) -> Test {
        self.needs.extend_from_slice(needs);
        self
    }

    pub fn ignored(mut self, why: &'static str) -> Test {
        self.ignored = Some(why);
        self
    }
}

/// Runs the file's tests under libtest-mimic (the same flags as libtest: filters, `--exact`,
/// `--ignored`, `--include-ignored`, `--test-threads`, `--list`).
pub fn run_tests(tests: Vec<Test>) -> ExitCode {
    let args = Arguments::from_args();
    let require = std::env::var("TAPEDECK_REQUIRE_CLIENTS").as_deref() == Ok("1");
    // Each distinct need is checked once per run.
    let mut seen: HashMap<String, Option<String>> = HashMap::new();
    let trials = tests
        .into_iter()
        .map(|t| {
            let missing: Vec<(String, String)> = t
                .needs
                .iter()
                .filter_map(|n| {
                    let key = format!("{}:{:?}", n.label(), need_key(n));
                    seen.entry(key)
                        .or_insert_with(|| n.missing())
                        .clone()
                        .map(|why| (n.label(), why))
                })
                .collect();
            let body = t.body;
            if missing.is_empty() {
                let trial = Trial::test(t.name, move || {
                    body();
                    Ok(())
                });
                return match t.ignored {
                    Some(why) => trial.with_kind(why).with_ignored_flag(true),
                    None => trial,
                };
            }
            let labels: Vec<&str> = missing.iter().map(|(l, _)| l.as_str()).collect();
            let why: Vec<&str> = missing.iter().map(|(_, w)| w.as_str()).collect();
            let why = why.join("; ");
            if require {
                Trial::test(t.name, move || {
                    Err(Failed::from(format!(
                        "needs {why} (TAPEDECK_REQUIRE_CLIENTS=1)"
                    )))
                })
            } else {
                eprintln!("{}: ignored, needs {why}", t.name);
                Trial::test(t.name, move || {
                    body();
                    Ok(())
                })
                .with_kind(format!("needs {}", labels.join(", ")))
                .with_ignored_flag(true)
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// What distinguishes two needs of the same label (their element or module lists).
fn need_key(n: &Need) -> String {
    match *n {
        Need::Browser(m) => m.join(","),
        Need::Gst(e) => e.join(","),
        _ => String::new(),
    }
}
