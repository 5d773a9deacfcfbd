//! Fragmented MP4 (ISO-BMFF) handling for ingest and playback: pure, bytes in / facts out.
//!
//! Nothing here does I/O, spawns tasks or knows about tokio or SQLite, so the same code is driven by
//! the HTTP ingest path, by tests (real samples, every chunking, corruptions) and by benches.
//!
//! - [`Splitter`] cuts a producer's byte stream into init segments and `moof`+`mdat` fragments.
//! - [`InitFacts`] describes the tracks of an init segment (codec strings, timescales, defaults).
//! - [`fragment_facts`] says when a fragment starts, how long it is and whether it starts with a
//!   keyframe.
//! - [`rewrite_fragment`] moves a fragment onto the stream's single media timeline (new `tfdt`s),
//!   fixing the data offsets that the rewrite disturbs.
//! - [`clip`] plans downloadable clips (progressive or fragmented) from stored fragments' moofs.
//!
//! Underneath, one reader of fragments (`layout.rs`, [`FragmentLayout`]) resolves base data offsets,
//! sample defaults and bounds for all of them and for the frame service's sample reader; box
//! headers are read by [`read_header`] alone, and [`ticks_to_us`] is the one conversion from media
//! time.
//!
//! Boxes are decoded with `mp4-atom`; walking and rebuilding is done at the byte level so that boxes
//! the crate does not model are kept verbatim.

mod boxes;
pub mod clip;
mod codec;
mod error;
mod fragment;
mod init;
mod layout;
pub mod mux;
mod nal;
mod prft;
mod rewrite;
mod sample;
mod splitter;
mod time;

pub use boxes::{read_header, BoxHeader, HeaderProblem};
pub use clip::{
    fragment_head_len, same_track_layout, ClipFragment, ClipPlan, FragmentedBuilder, Piece,
    ProgressiveBuilder, Pushed,
};
pub use error::Fmp4Error;
pub use fragment::{fragment_facts, fragment_facts_at, FragmentFacts, TrackRun};
pub(crate) use init::decode_moov;
pub use init::{InitFacts, TrackInfo, TrackKind};
pub(crate) use layout::FragmentLayout;
pub use prft::ProducerReference;
pub use rewrite::{rewrite_fragment, rewrite_fragment_head};
pub use splitter::{Event, RawFragment, Splitter};
pub use time::ticks_to_us;

#[cfg(test)]
mod testutil;
