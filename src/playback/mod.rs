//! Playback: HLS playlists as pure functions of index rows, and the serving of segments, parts,
//! inits and clips. Reads the fragment log through the store; never touches files itself.

pub mod archive_cache;
pub mod clip;
pub mod hls;
pub mod playlist;
pub mod segments;
pub mod window;
