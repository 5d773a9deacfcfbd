//! Bundles hls.js into the binary when it was installed from npm (`npm ci --prefix web`), for
//! browsers without native HLS. Without it the UI uses the browser's own HLS player only, so
//! `cargo run` needs nothing but the Rust toolchain.

use std::path::Path;

fn main() {
    let src = Path::new("web/node_modules/hls.js/dist/hls.min.js");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed=web/package-lock.json");
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("hls.min.js");
    let bytes = std::fs::read(src).unwrap_or_default();
    std::fs::write(&out, bytes).expect("write OUT_DIR/hls.min.js");
}
