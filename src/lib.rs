//! tapedeck: a self-hosted video stream ingest and archive server.
//!
//! Layers, lowest first (a lower layer knows nothing of the upper ones): `fmp4` (pure box
//! parsing and rewriting), `store` (the only door to disk), `ingest` (producer sessions),
//! `http` (routes and the error-to-status mapping).
//! `codec` (H.264 syntax and decoding, image encoding) sits on `fmp4` and under `analytics`.

pub mod analytics;
pub mod clock;
pub mod codec;
pub mod config;
pub mod error;
pub mod fmp4;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod playback;
pub mod source;
pub mod store;
pub mod stream_name;
pub mod timefmt;
