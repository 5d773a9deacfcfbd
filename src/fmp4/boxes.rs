//! Box headers and walking: the byte-level layer under the splitter, the fragment reader and the
//! rewriter.
//!
//! Headers are read by hand (not with `mp4-atom`) because the splitter must judge a box from its first
//! 8 or 16 bytes, before its body has arrived, and because the rewriter must copy boxes verbatim.
//! [`read_header`] is public so that tools reading boxes as they arrive (the benches' follow-feed
//! reader) judge headers by the same rules as ingest.

use super::Fmp4Error;

/// A box header: type, header length (8, or 16 with a 64-bit largesize) and total size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxHeader {
    pub box_type: [u8; 4],
    pub header_len: usize,
    /// Total size including the header; `None` for size 0 ("extends to the end of the file").
    pub size: Option<u64>,
}

/// Why a header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Fewer bytes than the header needs; more input may fix it.
    Incomplete,
    /// The 4 type bytes are not printable ASCII: this is not a box.
    BadType,
    /// A declared size smaller than its own header.
    BadSize(u64),
}

/// Reads a box header from the start of `buf`.
pub fn read_header(buf: &[u8]) -> Result<BoxHeader, HeaderProblem> {
    let (Some(size_bytes), Some(type_bytes)) = (buf.get(0..4), buf.get(4..8)) else {
        return Err(HeaderProblem::Incomplete);
    };
    let mut box_type = [0u8; 4];
    box_type.copy_from_slice(type_bytes);
    if !plausible_type(&box_type) {
        return Err(HeaderProblem::BadType);
    }
    let size32 = be_u32(size_bytes);
    match size32 {
        0 => Ok(BoxHeader {
            box_type,
            header_len: 8,
            size: None,
        }),
        1 => {
            let large = buf.get(8..16).ok_or(HeaderProblem::Incomplete)?;
            let size = be_u64(large);
            if size < 16 {
                return Err(HeaderProblem::BadSize(size));
            }
            Ok(BoxHeader {
                box_type,
                header_len: 16,
                size: Some(size),
            })
        }
        s if s < 8 => Err(HeaderProblem::BadSize(u64::from(s))),
        s => Ok(BoxHeader {
            box_type,
            header_len: 8,
            size: Some(u64::from(s)),
        }),
    }
}

/// Box types are four printable ASCII characters in every real file; anything else means we are not
/// looking at a box boundary (garbage, or a size that pointed to the wrong place).
pub(crate) fn plausible_type(t: &[u8; 4]) -> bool {
    t.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// A box type for messages: the characters when printable, else hex.
pub(crate) fn type_name(t: &[u8; 4]) -> String {
    if plausible_type(t) {
        t.iter().map(|&b| char::from(b)).collect()
    } else {
        format!("0x{:08x}", u32::from_be_bytes(*t))
    }
}

/// One complete box inside a parent slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoxRef<'a> {
    pub box_type: [u8; 4],
    /// Offset of the box's first byte within the slice given to [`children`].
    pub offset: usize,
    pub header_len: usize,
    /// The whole box, header included.
    pub bytes: &'a [u8],
}

impl<'a> BoxRef<'a> {
    pub fn body(&self) -> &'a [u8] {
        self.bytes.get(self.header_len..).unwrap_or_default()
    }
}

/// Splits `buf` (the body of a container box, or a whole fragment) into complete child boxes.
/// `base` is the absolute offset of `buf[0]`, used in messages; `parent` names the container.
pub(crate) fn children<'a>(
    buf: &'a [u8],
    base: u64,
    parent: &str,
) -> Result<Vec<BoxRef<'a>>, Fmp4Error> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let at = base + pos as u64;
        let header = read_header(rest).map_err(|p| {
            Fmp4Error::Malformed(match p {
                HeaderProblem::Incomplete => format!(
                    "{parent} ends with {} stray bytes at byte offset {at}",
                    rest.len()
                ),
                HeaderProblem::BadType => {
                    format!("invalid box type inside {parent} at byte offset {at}")
                }
                HeaderProblem::BadSize(s) => {
                    format!("box inside {parent} at byte offset {at} declares impossible size {s}")
                }
            })
        })?;
        let size = match header.size {
            Some(s) => s,
            None => rest.len() as u64,
        };
        if size > rest.len() as u64 {
            return Err(Fmp4Error::Malformed(format!(
                "{} box at byte offset {at} declares {size} bytes but its parent {parent} has only {} left",
                type_name(&header.box_type),
                rest.len()
            )));
        }
        let size = size as usize;
        out.push(BoxRef {
            box_type: header.box_type,
            offset: pos,
            header_len: header.header_len,
            bytes: &rest[..size],
        });
        pos += size;
    }
    Ok(out)
}

pub(crate) fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    for (d, s) in a.iter_mut().zip(b) {
        *d = *s;
    }
    u32::from_be_bytes(a)
}

pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    for (d, s) in a.iter_mut().zip(b) {
        *d = *s;
    }
    u64::from_be_bytes(a)
}

/// Appends a box with a 32-bit size header around `body`.
pub(crate) fn put_box(out: &mut Vec<u8>, box_type: &[u8; 4], body: &[u8]) -> Result<(), Fmp4Error> {
    let size = u32::try_from(body.len() + 8).map_err(|_| {
        Fmp4Error::Unsupported(format!(
            "rebuilt {} box would exceed 4 GiB",
            type_name(box_type)
        ))
    })?;
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(box_type);
    out.extend_from_slice(body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(read_header(b"\0\0\0"), Err(HeaderProblem::Incomplete));
        assert_eq!(
            read_header(b"\0\0\0\x10moof"),
            Ok(BoxHeader {
                box_type: *b"moof",
                header_len: 8,
                size: Some(16)
            })
        );
        assert_eq!(
            read_header(b"\0\0\0\x01mdat\0\0"),
            Err(HeaderProblem::Incomplete)
        );
        assert_eq!(
            read_header(b"\0\0\0\x01mdat\0\0\0\x01\0\0\0\0").map(|h| h.size),
            Ok(Some(1 << 32))
        );
        assert_eq!(
            read_header(b"\0\0\0\x04free"),
            Err(HeaderProblem::BadSize(4))
        );
        assert_eq!(
            read_header(b"\0\0\0\x10\x01ree"),
            Err(HeaderProblem::BadType)
        );
    }

    #[test]
    fn walk_children() {
        let buf = b"\0\0\0\x08free\0\0\0\x0askip\x01\x02";
        let c = children(buf, 100, "moof").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].offset, 8);
        assert_eq!(c[1].body(), b"\x01\x02");
        let err = children(&buf[..17], 100, "moof").unwrap_err();
        assert!(err.to_string().contains("byte offset 108"), "{err}");
    }
}
