//! Downloadable MP4 clips of a time range (owned by the clip work; see issue 3 item 7).
