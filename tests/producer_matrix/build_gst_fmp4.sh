#!/usr/bin/env bash
# Builds GStreamer's Rust fragmented-MP4 muxer plugin (crate gst-plugin-fmp4 from gst-plugins-rs,
# elements isofmp4mux and cmafmux) against the system GStreamer (Debian bookworm: 1.22), and
# caches the result.
#
#   usage: build_gst_fmp4.sh CACHE_DIR
#
# On success prints the path of CACHE_DIR/libgstfmp4.so on stdout (and nothing else there: all
# progress goes to stderr) and exits 0; use it with GST_PLUGIN_PATH=CACHE_DIR. A cache hit returns
# at once. GST_FMP4_VERSION overrides the crate version below.
set -euo pipefail

version="${GST_FMP4_VERSION:-0.14.5}"

die() { echo "build_gst_fmp4.sh: error: $*" >&2; exit 1; }
log() { echo "build_gst_fmp4.sh: $*" >&2; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: build_gst_fmp4.sh CACHE_DIR"
mkdir -p "$1" || die "cannot create cache directory $1"
cache="$(cd "$1" && pwd)"
out="$cache/libgstfmp4.so"

if [ -f "$out" ]; then
  echo "$out"
  exit 0
fi

# Build dependencies: only the GStreamer headers/.pc files and pkg-config are needed.
missing=()
for pkg in libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
fi
for pc in gstreamer-1.0 gstreamer-base-1.0 gstreamer-audio-1.0 gstreamer-video-1.0 \
          gstreamer-pbutils-1.0 gstreamer-tag-1.0; do
  pkg-config --atleast-version=1.20 "$pc" 2>/dev/null \
    || die "pkg-config finds no $pc >= 1.20 (GStreamer dev packages missing or too old)"
done
command -v cargo >/dev/null || die "cargo not found in PATH"

# Fetch the crate source through a throwaway project, so cargo does the download and unpacking.
fetch="$cache/fetch-$version"
mkdir -p "$fetch/src"
cat >"$fetch/Cargo.toml" <<EOF
[package]
name = "gst-fmp4-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
gst-plugin-fmp4 = "=$version"

[workspace]
EOF
: >"$fetch/src/lib.rs"
log "fetching gst-plugin-fmp4 $version"
cargo fetch --manifest-path "$fetch/Cargo.toml" >&2 \
  || die "cargo fetch of gst-plugin-fmp4 =$version failed"

src=""
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/gst-plugin-fmp4-"$version"; do
  [ -f "$d/Cargo.toml" ] && { src="$d"; break; }
done
[ -n "$src" ] || die "unpacked source of gst-plugin-fmp4-$version not found under ${CARGO_HOME:-$HOME/.cargo}/registry/src"

# Build in a copy (the registry's sources must stay pristine). The crate ships its Cargo.lock,
# which cargo honours; the empty [workspace] keeps cargo from adopting an enclosing workspace.
work="$cache/gst-plugin-fmp4-$version"
rm -rf "$work"
cp -a "$src" "$work"
chmod -R u+w "$work"
grep -q '^\[workspace\]' "$work/Cargo.toml" || printf '\n[workspace]\n' >>"$work/Cargo.toml"

log "building gst-plugin-fmp4 $version (cargo build --release --lib; takes a few minutes)"
start=$SECONDS
(cd "$work" && CARGO_TARGET_DIR="$cache/target" nice -n 10 cargo build --release --lib >&2) \
  || die "cargo build of gst-plugin-fmp4 $version failed (see the output above)"
built="$cache/target/release/libgstfmp4.so"
[ -f "$built" ] || die "cargo build finished but $built does not exist"
log "built in $((SECONDS - start)) s"

# Check that GStreamer can load it and that it has the two muxers before publishing it.
# A throwaway registry, so the user's registry never records the plugin at its build-tree path.
if command -v gst-inspect-1.0 >/dev/null; then
  reg="$cache/registry-check.bin"
  rm -f "$reg"
  inspect="$(GST_REGISTRY="$reg" gst-inspect-1.0 "$built" 2>&1)" \
    || die "gst-inspect-1.0 cannot load $built: $inspect"
  rm -f "$reg"
  for el in isofmp4mux cmafmux; do
    grep -qw "$el" <<<"$inspect" || die "$built has no element $el"
  done
fi

cp "$built" "$out.tmp.$$"
mv -f "$out.tmp.$$" "$out"
# GStreamer scans GST_PLUGIN_PATH recursively: a second libgstfmp4.so left in the build tree would
# be found too (and may be the one the registry records). The build tree is no use after a success
# (a cache hit never rebuilds), so drop it; after a failure it stays, for a faster retry.
rm -rf "$cache/target" "$work" "$fetch"
echo "$out"
