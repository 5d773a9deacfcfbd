#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 30): `bash fuzz/run-ci.sh [seconds]`.
# Installs cargo-fuzz if it is missing and seeds the corpora from samples/ first. Exits non-zero
# as soon as a target crashes (libFuzzer leaves the input in fuzz/artifacts/<target>/).
set -euo pipefail

secs=${1:-30}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
bash "$here/seed-corpus.sh"

# Separate from the main crate's target dir: fuzz builds use other flags (sanitizer, coverage)
# and would otherwise evict its artifacts.
unset CARGO_TARGET_DIR
for target in $(cargo +nightly fuzz list); do
  echo "== fuzzing $target for ${secs}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$secs"
done
