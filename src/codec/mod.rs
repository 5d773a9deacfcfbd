//! Codecs: decoding video samples to pictures and encoding pictures as images. Pure or
//! blocking CPU work (callers run it on blocking threads); no tokio, and nothing of the crate
//! above `fmp4` (no store, ingest, analytics or HTTP): samples and bytes in, pictures or image
//! bytes out.
//!
//! - [`h264`]: H.264 syntax, reference planning and slice-header rewriting, and decoding chosen
//!   pictures of a GOP with openh264;
//! - [`openh264`]: a small safe wrapper over openh264's decoder;
//! - [`ffmpeg`]: decoding through the `ffmpeg` binary, for what openh264 cannot decode;
//! - [`picture`]: the decoded picture (Y'CbCr 4:2:0), scaling and RGB conversion;
//! - [`encode`]: pictures as JPEG or PNG.
//!
//! Codec strings of sample entries (`avc1.64001f`) stay in `fmp4`: they are read from box data
//! while parsing an init, and `fmp4` imports nothing else of the crate.

pub mod encode;
pub mod error;
pub mod ffmpeg;
pub mod h264;
pub mod openh264;
pub mod picture;
