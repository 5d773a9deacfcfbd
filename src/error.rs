//! The one error type of tapedeck. Every failure is classified by a [`Kind`] once, where it is
//! first understood; the HTTP layer maps kinds to status codes in exactly one place
//! (`http::error`). Messages are written for the person reading them: they say what was wrong
//! and, where possible, what to do instead.

use std::fmt;

/// What kind of failure this is; decides the HTTP status and the JSON `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidArgument,
    NotFound,
    Conflict,
    /// The request is valid but the state does not allow it (e.g. media before an init).
    FailedPrecondition,
    TooLarge,
    UnsupportedMedia,
    /// The client was too slow (idle producer, slow body).
    DeadlineExceeded,
    /// Try again later: shutting down, disk full, overloaded.
    Unavailable,
    /// A per-client or per-stream limit is reached (too many feed connections).
    ResourceExhausted,
    /// No credentials, or credentials that match no key (401 with a Basic challenge).
    Unauthenticated,
    /// A known key (or a playback token) that does not allow this request.
    PermissionDenied,
    Internal,
}

impl Kind {
    /// The stable machine-readable code used in JSON error bodies and ack lines.
    pub fn code(self) -> &'static str {
        match self {
            Kind::InvalidArgument => "INVALID_ARGUMENT",
            Kind::NotFound => "NOT_FOUND",
            Kind::Conflict => "CONFLICT",
            Kind::FailedPrecondition => "FAILED_PRECONDITION",
            Kind::TooLarge => "TOO_LARGE",
            Kind::UnsupportedMedia => "UNSUPPORTED_MEDIA",
            Kind::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Kind::Unavailable => "UNAVAILABLE",
            Kind::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Kind::Unauthenticated => "UNAUTHENTICATED",
            Kind::PermissionDenied => "PERMISSION_DENIED",
            Kind::Internal => "INTERNAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(Kind::FailedPrecondition, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<crate::fmp4::Fmp4Error> for Error {
    fn from(e: crate::fmp4::Fmp4Error) -> Self {
        use crate::fmp4::Fmp4Error as F;
        match e {
            F::NotFmp4(m) => Error::new(
                Kind::UnsupportedMedia,
                format!("not fragmented MP4: {m}"),
            ),
            F::Malformed(m) => Error::invalid(format!("malformed MP4: {m}")),
            F::TooLarge {
                box_type,
                size,
                limit,
            } => Error::new(
                Kind::TooLarge,
                format!(
                    "a '{box_type}' of {size} bytes exceeds the fragment size limit of {limit} bytes \
                     (ingest.max_fragment_bytes); cut smaller fragments, e.g. ffmpeg -frag_duration"
                ),
            ),
            F::MediaBeforeInit => Error::precondition(
                "media fragment (moof) received before any init segment (ftyp+moov); \
                 send the init segment first",
            ),
            F::Unsupported(m) => Error::new(Kind::UnsupportedMedia, m),
        }
    }
}

/// Maps I/O errors once: no space is worth retrying later, everything else is internal.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            Error::unavailable(format!("disk full: {e}"))
        } else {
            Error::internal(format!("I/O error: {e}"))
        }
    }
}

/// SQLite busy/locked means contention (retry); the rest is a bug or corruption.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
                Error::unavailable(format!("database busy: {e}"))
            }
            Some(rusqlite::ErrorCode::DiskFull) => Error::unavailable(format!("disk full: {e}")),
            _ => Error::internal(format!("database error: {e}")),
        }
    }
}
