//! Clips: one downloadable file made from a run of stored fragments, without holding the media.
//!
//! Two shapes, both described as a [`ClipPlan`]: a list of [`Piece`]s that are either bytes built
//! here (headers) or byte ranges of the stored fragments (media, copied verbatim by the caller).
//! Because the plan knows every piece's length before a byte is sent, the caller can answer with
//! `Content-Length` and serve any `Range` of the clip by walking the plan.
//!
//! - [`ProgressiveBuilder`]: an ordinary MP4 (`ftyp`, `moov` with full sample tables, one `mdat`).
//!   It only reads each fragment's `moof` (and mdat header): the sample tables come from the
//!   `trun`s, and each fragment's mdat payload is copied whole into the clip's mdat, so every
//!   `trun` becomes one chunk whose offset is known without reading the media.
//! - [`FragmentedBuilder`]: the init followed by the fragments with their `tfdt`s rebased; the
//!   mdat payloads are again copied verbatim.
//!
//! Both read a fragment's head with the fmp4 fragment reader (`head.rs`) and move it onto the
//! clip's timeline (`timeline.rs`, which says how gaps collapse).
//!
//! | file | what |
//! |---|---|
//! | `plan.rs` | [`ClipPlan`] and [`Piece`]: what the caller serves |
//! | `head.rs` | reading a stored fragment's moof and mdat header |
//! | `timeline.rs` | the clip's shift from stream time, gaps collapsed |
//! | `progressive.rs` | [`ProgressiveBuilder`]: `ftyp`+`moov`+`mdat` |
//! | `sample_table.rs` | one progressive track's sample tables as fragments are pushed |
//! | `fragmented.rs` | [`FragmentedBuilder`]: init + rebased fragments |

mod fragmented;
mod head;
mod plan;
mod progressive;
mod sample_table;
#[cfg(test)]
mod testutil;
mod timeline;

pub use fragmented::{FragmentedBuilder, Pushed};
pub use plan::{ClipPlan, Piece};
pub use progressive::{ProgressiveBuilder, MOVIE_TIMESCALE};

use super::boxes::{read_header, type_name};
use super::{Fmp4Error, InitFacts};

/// Bytes needed after a fragment's moof to be sure its mdat header (8, or 16 with a largesize) is in.
const MDAT_HEADER_MAX: u64 = 16;

/// Whether two inits can feed one clip: the same tracks (ids, kinds, timescales) in the same
/// order. Codec configuration (e.g. SPS/PPS, resolution) may differ: a progressive clip then
/// carries one sample description per distinct sample entry.
pub fn same_track_layout(a: &InitFacts, b: &InitFacts) -> bool {
    a.tracks.len() == b.tracks.len()
        && a.tracks.iter().zip(&b.tracks).all(|(x, y)| {
            x.track_id == y.track_id && x.kind == y.kind && x.timescale == y.timescale
        })
}

/// How many bytes from the start of a stored fragment of `fragment_size` bytes the builders need
/// (the moof and the mdat header), given at least its first 8 bytes.
pub fn fragment_head_len(prefix: &[u8], fragment_size: u64) -> Result<u64, Fmp4Error> {
    let h = read_header(prefix)
        .map_err(|_| Fmp4Error::Malformed("a stored fragment does not start with a box".into()))?;
    if &h.box_type != b"moof" {
        return Err(Fmp4Error::Malformed(format!(
            "a stored fragment starts with '{}' instead of moof",
            type_name(&h.box_type)
        )));
    }
    let moof = h.size.unwrap_or(fragment_size);
    Ok(moof.saturating_add(MDAT_HEADER_MAX).min(fragment_size))
}

/// One stored fragment as the builders see it.
#[derive(Debug, Clone, Copy)]
pub struct ClipFragment<'a> {
    /// Index of the fragment's init in the list given to the builder.
    pub init: usize,
    /// The first bytes of the fragment: at least its moof and its mdat header
    /// (see [`fragment_head_len`]).
    pub head: &'a [u8],
    /// Size of the whole stored fragment (moof + mdat).
    pub size: u64,
    /// Producer time of the fragment's start and end on the stream timeline (index row), µs.
    pub start_us: i64,
    pub end_us: i64,
    /// The fragment starts a discontinuity (new session, new init, time jump): a gap before it is
    /// collapsed.
    pub discontinuity: bool,
}

fn malformed(m: impl Into<String>) -> Fmp4Error {
    Fmp4Error::Malformed(m.into())
}
