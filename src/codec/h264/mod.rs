//! H.264: just enough of the syntax to decode a chosen picture of a GOP without decoding the
//! whole GOP, and the openh264 decoding that uses it.
//!
//! - [`nal`]: the length-prefixed NAL units of MP4 samples, and Annex B for openh264;
//! - [`bits`]: reading and writing RBSP bits (Exp-Golomb, emulation prevention);
//! - [`syntax`]: parameter sets and slice headers;
//! - [`refs`]: which pictures a wanted one depends on (reference planning);
//! - [`rewrite`]: the slice headers of a planned stream, rewritten to conform;
//! - [`decode`]: feeding the planned samples to openh264.

pub mod bits;
pub mod decode;
pub mod nal;
pub mod refs;
pub mod rewrite;
pub mod syntax;
