//! tapedeck: a self-hosted video stream ingest and archive server.
//!
//! Modules in layers, lowest first. A module may import the base and the layers below it,
//! never one above: that keeps the pure layers testable without a server and lets a new wing
//! (RTSP pull, object storage) slot in at its own height.
//!
//! - Base, importable from every layer: `error` (the one error type and its kinds), `clock`
//!   (the injectable wall clock), `config` (settings), `timefmt` (times in and out of text),
//!   `metrics` (counters and the Prometheus text format), `stream_name`. These import only
//!   `error`, except that `error` maps `fmp4`'s error into its kinds.
//! - `fmp4`: sans-I/O ISO-BMFF: box reading, fragment facts, timestamp rewriting, init and
//!   clip building. Bytes in, facts out. Imports nothing else of the crate; no tokio, no SQLite.
//! - `codec`: codec syntax and decoding (H.264 bit reader, reference planning, slice rewrite,
//!   openh264, picture conversion, JPEG/PNG). Pure or blocking; imports `fmp4` only; no tokio,
//!   no store.
//! - `store`: the only door to disk: SQLite index, fragment files, the durability protocol,
//!   recovery, retention, queries. Decides where HLS segments start as it writes each fragment
//!   (see `playback::segments`). Imports the base only.
//! - `ingest`: producer sessions (a long upload, segment-file series): bytes -> `fmp4` ->
//!   `store`, with placement on the stream timeline, acks, limits and backpressure. Imports
//!   `fmp4` and `store`.
//! - `playback`: HLS playlists as pure functions of index rows (`playlist`, `window`), segment
//!   grouping, and serving segments, parts, inits and clips through the store. Imports `fmp4`
//!   and `store`.
//! - `analytics`: the follow feed, events and the frame service (on `codec`). Imports `fmp4`,
//!   `codec`, `store` and `ingest` (the fragment JSON that acks and events share).
//! - `http`: the axum router, the one error-to-status map (`http::status_of`), auth, metrics
//!   and the web UI. The only layer that knows HTTP; may import every layer below it.

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
