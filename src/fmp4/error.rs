//! The one error type of the `fmp4` module. Each variant maps to one HTTP status in the web layer,
//! so the variant says *what kind* of problem it is and the message says *where* (box, byte offset).

/// Why a byte stream, init segment or fragment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fmp4Error {
    /// The input is not fragmented MP4 at all (HTTP 415).
    #[error("not fragmented MP4: {0}")]
    NotFmp4(String),
    /// Broken box structure, truncated input, inconsistent offsets (HTTP 400).
    #[error("malformed MP4: {0}")]
    Malformed(String),
    /// A declared box (or a moof+mdat pair) is bigger than the configured limit (HTTP 413).
    /// Raised from the header alone, before anything is allocated.
    #[error("{box_type} box of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        box_type: String,
        size: u64,
        limit: u64,
    },
    /// Media (moof/mdat) arrived before any init segment (ftyp/moov) (HTTP 412).
    #[error("media fragment before any init segment: send ftyp+moov first")]
    MediaBeforeInit,
    /// Valid MP4 that tapedeck cannot store (HTTP 415).
    #[error("unsupported MP4: {0}")]
    Unsupported(String),
}

impl Fmp4Error {
    /// Maps a decode error of `mp4-atom` to [`Fmp4Error::Malformed`], naming what was being decoded.
    pub(crate) fn decode(what: &str, offset: u64, err: mp4_atom::Error) -> Self {
        Fmp4Error::Malformed(format!(
            "cannot decode {what} at byte offset {offset}: {err}"
        ))
    }
}
