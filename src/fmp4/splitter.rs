//! Cutting a producer's byte stream into init segments and `moof`+`mdat` fragments, incrementally.
//!
//! The HTTP body arrives in chunks of any size, so the splitter keeps a buffer of the unit in
//! progress, judges each top-level box from its header as soon as the header is complete (so an
//! absurd size is refused before anything is allocated) and hands out a unit only once all of its
//! bytes are in. Each byte is appended once and dropped once: O(total bytes) whatever the chunking.
//! Boxes we do not store (`free`, `sidx`, `mfra`, ...) are skipped without being buffered.

use bytes::Bytes;

use super::boxes::{read_header, type_name, BoxHeader, HeaderProblem};
use super::{Fmp4Error, InitFacts, ProducerReference};

/// Top-level box types a fragmented MP4 stream may start with. Anything else as the very first box
/// means the input is not MP4 at all (e.g. a text file whose first 8 bytes happen to be printable).
const FIRST_BOX_TYPES: &[&[u8; 4]] = &[
    b"ftyp", b"styp", b"moov", b"moof", b"mdat", b"free", b"skip", b"wide", b"sidx", b"prft",
    b"emsg", b"uuid", b"meta", b"pdin", b"mfra",
];

/// What the splitter found.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An init segment: `ftyp`+`moov` (or a lone `moov`), with its facts.
    Init {
        bytes: Bytes,
        facts: InitFacts,
    },
    Fragment(RawFragment),
}

/// One fragment exactly as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFragment {
    /// Exactly the moof+mdat (no styp/sidx/prft).
    pub bytes: Bytes,
    /// Offset of the moof's first byte within the pushed input.
    pub stream_offset: u64,
    /// The `prft` that came right before this moof, if any.
    pub prft: Option<ProducerReference>,
}

/// Incremental splitter: feed arbitrary chunks (down to 1 byte), get events.
#[derive(Debug)]
pub struct Splitter {
    max_box_bytes: u64,
    /// Received bytes not yet handed out or dropped; `buf[0]` is at stream offset `buf_offset`.
    buf: Vec<u8>,
    buf_offset: u64,
    /// Start of the next box to judge, within `buf`.
    pos: usize,
    /// The header of the box at `pos`, once read (so it is read once, not once per push).
    header: Option<BoxHeader>,
    /// Bytes of a skipped box that have not arrived yet; they are dropped as they come.
    skip_remaining: u64,
    skip_type: [u8; 4],
    /// A complete moof at this `buf` index, waiting for its mdat.
    moof_start: Option<usize>,
    /// A complete ftyp waiting for its moov.
    ftyp: Option<Vec<u8>>,
    has_init: bool,
    seen_box: bool,
    seen_fragment: bool,
    prft: Option<ProducerReference>,
    consumed: u64,
    error: Option<Fmp4Error>,
}

impl Splitter {
    /// `max_box_bytes` bounds every box and every moof+mdat pair, hence the memory one stream can use.
    pub fn new(max_box_bytes: u64) -> Self {
        Splitter {
            max_box_bytes,
            buf: Vec::new(),
            buf_offset: 0,
            pos: 0,
            header: None,
            skip_remaining: 0,
            skip_type: [0; 4],
            moof_start: None,
            ftyp: None,
            has_init: false,
            seen_box: false,
            seen_fragment: false,
            prft: None,
            consumed: 0,
            error: None,
        }
    }

    /// Appends events for every complete top-level unit. After an error, every later call returns
    /// the same error.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), Fmp4Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        self.consumed += chunk.len() as u64;
        let mut data = chunk;
        if self.skip_remaining > 0 {
            let n = usize::try_from(self.skip_remaining)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.skip_remaining -= n as u64;
            self.buf_offset += n as u64;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
        let result = self.process(out);
        self.compact();
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    /// End of input: Ok if it ended on a box boundary (a trailing mfra/free etc. is fine).
    pub fn finish(&mut self) -> Result<(), Fmp4Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.check_finished();
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    /// Total bytes pushed so far.
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }

    fn check_finished(&self) -> Result<(), Fmp4Error> {
        if self.skip_remaining > 0 {
            return Err(Fmp4Error::Malformed(format!(
                "truncated: the input ended with {} bytes of a {} box missing",
                self.skip_remaining,
                type_name(&self.skip_type)
            )));
        }
        let have = (self.buf.len() - self.pos) as u64;
        if let Some(h) = &self.header {
            let size = h.size.unwrap_or(0);
            return Err(Fmp4Error::Malformed(format!(
                "truncated: the input ended with {} bytes of a {} box missing",
                size.saturating_sub(have),
                type_name(&h.box_type)
            )));
        }
        if let Some(ms) = self.moof_start {
            return Err(Fmp4Error::Malformed(format!(
                "truncated: the moof at byte offset {} is not followed by its mdat",
                self.buf_offset + ms as u64
            )));
        }
        if have > 0 {
            return Err(Fmp4Error::Malformed(format!(
                "truncated: the input ended inside a box header ({have} bytes of at least 8)"
            )));
        }
        Ok(())
    }

    /// Drops bytes that no pending unit needs, keeping `buf` as small as one unit.
    fn compact(&mut self) {
        let keep_from = self.moof_start.unwrap_or(self.pos).min(self.pos);
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.buf_offset += keep_from as u64;
            self.pos -= keep_from;
            if let Some(ms) = &mut self.moof_start {
                *ms -= keep_from;
            }
        }
    }

    fn process(&mut self, out: &mut Vec<Event>) -> Result<(), Fmp4Error> {
        loop {
            if self.skip_remaining > 0 {
                return Ok(());
            }
            let at = self.buf_offset + self.pos as u64;
            let header = match self.header {
                Some(h) => h,
                None => {
                    let h = match read_header(&self.buf[self.pos..]) {
                        Ok(h) => h,
                        Err(HeaderProblem::Incomplete) => return Ok(()),
                        Err(p) => return Err(self.bad_header(p, at)),
                    };
                    self.judge(&h, at)?;
                    self.header = Some(h);
                    if &h.box_type == b"mdat" {
                        // The fragment's whole size is known now: room for exactly it, so a
                        // producer's buffer is one fragment, not the next power of two.
                        let missing = h
                            .size
                            .unwrap_or(0)
                            .saturating_sub((self.buf.len() - self.pos) as u64);
                        self.buf
                            .reserve_exact(usize::try_from(missing).unwrap_or(0));
                    }
                    h
                }
            };
            // judge() refused size-0 boxes.
            let size = header.size.unwrap_or(0);
            let have = (self.buf.len() - self.pos) as u64;
            let box_type = &header.box_type;
            let buffered = matches!(box_type, b"ftyp" | b"moov" | b"moof" | b"prft" | b"mdat");
            if !buffered {
                // Skip without buffering.
                self.header = None;
                self.seen_box = true;
                if have >= size {
                    self.pos += size as usize;
                    continue;
                }
                self.skip_remaining = size - have;
                self.skip_type = *box_type;
                self.pos = self.buf.len();
                return Ok(());
            }
            if have < size {
                return Ok(());
            }
            self.header = None;
            self.seen_box = true;
            let start = self.pos;
            let end = start + size as usize;
            self.pos = end;
            match box_type {
                b"ftyp" => self.ftyp = Some(self.buf[start..end].to_vec()),
                b"moov" => {
                    let mut init = self.ftyp.take().unwrap_or_default();
                    init.extend_from_slice(&self.buf[start..end]);
                    let facts = InitFacts::parse(&init)?;
                    self.has_init = true;
                    out.push(Event::Init {
                        bytes: Bytes::from(init),
                        facts,
                    });
                }
                b"moof" => self.moof_start = Some(start),
                b"prft" => {
                    self.prft = Some(ProducerReference::parse(&self.buf[start..end], at)?);
                }
                _ => {
                    // mdat; judge() made sure a moof is pending.
                    let ms = self.moof_start.take().unwrap_or(start);
                    self.seen_fragment = true;
                    let stream_offset = self.buf_offset + ms as u64;
                    // The buffer itself becomes the fragment (no copy); what follows the mdat
                    // starts the next buffer.
                    let rest = self.buf.split_off(end);
                    let mut fragment = std::mem::replace(&mut self.buf, rest);
                    fragment.drain(..ms);
                    self.buf_offset += end as u64;
                    self.pos = 0;
                    out.push(Event::Fragment(RawFragment {
                        bytes: Bytes::from(fragment),
                        stream_offset,
                        prft: self.prft.take(),
                    }));
                }
            }
        }
    }

    /// The fragment whose mdat is arriving, once its header is in and before its last byte:
    /// the moof's stream offset and the fragment's whole size (moof + mdat). A caller can take
    /// the fragment's share of a memory budget before it reads the rest.
    pub fn fragment_in_progress(&self) -> Option<(u64, u64)> {
        let ms = self.moof_start?;
        let h = self.header.filter(|h| &h.box_type == b"mdat")?;
        Some((
            self.buf_offset + ms as u64,
            (self.pos - ms) as u64 + h.size?,
        ))
    }

    fn bad_header(&self, problem: HeaderProblem, at: u64) -> Fmp4Error {
        let rest = &self.buf[self.pos..];
        let shown: Vec<String> = rest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        if !self.seen_box {
            return Fmp4Error::NotFmp4(format!(
                "the input does not start with an MP4 box (first bytes: {}); expected fragmented \
                 MP4 starting with ftyp+moov",
                shown.join(" ")
            ));
        }
        Fmp4Error::Malformed(match problem {
            HeaderProblem::BadSize(s) => {
                format!("box at byte offset {at} declares impossible size {s}")
            }
            _ => format!(
                "no valid box header at byte offset {at} (bytes: {}); the previous box's size is \
                 probably wrong or the stream is corrupt",
                shown.join(" ")
            ),
        })
    }

    /// Decides from a header alone whether the box may come here, and whether it fits the limits.
    fn judge(&self, h: &BoxHeader, at: u64) -> Result<(), Fmp4Error> {
        let name = type_name(&h.box_type);
        if !self.seen_box && !FIRST_BOX_TYPES.contains(&&h.box_type) {
            return Err(Fmp4Error::NotFmp4(format!(
                "the input does not start with an MP4 box (first box type would be {name:?}); \
                 expected fragmented MP4 starting with ftyp+moov"
            )));
        }
        let Some(size) = h.size else {
            return Err(Fmp4Error::Unsupported(format!(
                "the {name} box at byte offset {at} has size 0 (\"extends to the end of the file\"), \
                 which a live stream cannot use: write boxes with explicit sizes"
            )));
        };
        if size > self.max_box_bytes {
            return Err(Fmp4Error::TooLarge {
                box_type: name,
                size,
                limit: self.max_box_bytes,
            });
        }
        if let Some(ms) = self.moof_start {
            if &h.box_type != b"mdat" {
                return Err(Fmp4Error::Malformed(format!(
                    "the moof at byte offset {} is followed by a {name} box at byte offset {at}; a \
                     moof must be followed directly by its mdat",
                    self.buf_offset + ms as u64
                )));
            }
            let total = (self.pos - ms) as u64 + size;
            if total > self.max_box_bytes {
                return Err(Fmp4Error::TooLarge {
                    box_type: "moof+mdat".to_string(),
                    size: total,
                    limit: self.max_box_bytes,
                });
            }
            return Ok(());
        }
        match &h.box_type {
            b"moof" if !self.has_init => Err(Fmp4Error::MediaBeforeInit),
            b"mdat" if !self.seen_fragment => Err(Fmp4Error::NotFmp4(format!(
                "mdat box at byte offset {at} before any moov: this looks like a progressive \
                 (non-fragmented) MP4. Send fragmented MP4 instead, e.g. with ffmpeg \
                 `-movflags frag_keyframe+empty_moov+default_base_moof`"
            ))),
            b"mdat" => Err(Fmp4Error::Malformed(format!(
                "mdat box at byte offset {at} does not follow a moof"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::boxes::children;
    use crate::fmp4::testutil::{sample, split, split_chunked, XorShift, FRAGMENTED, LIMIT};
    use crate::fmp4::{fragment_facts_at, rewrite_fragment};

    /// (offset, size, type) of every top-level box.
    fn top_boxes(data: &[u8]) -> Vec<(usize, usize, [u8; 4])> {
        children(data, 0, "file")
            .unwrap()
            .iter()
            .map(|b| (b.offset, b.bytes.len(), b.box_type))
            .collect()
    }

    /// Byte by byte: from the byte that completes a fragment's mdat header until its last byte,
    /// the splitter names that fragment (moof offset, moof + mdat size); at no other time.
    #[test]
    fn names_the_fragment_whose_mdat_is_arriving() {
        let data = sample("h264_aac_gop2s.mp4");
        let boxes = top_boxes(&data);
        let mut fragments = Vec::new();
        for pair in boxes.windows(2) {
            if &pair[0].2 == b"moof" && &pair[1].2 == b"mdat" {
                let (moof, mdat) = (pair[0], pair[1]);
                fragments.push((moof.0, mdat.0 + 8, mdat.0 + mdat.1, moof.1 + mdat.1));
            }
        }
        assert_eq!(fragments.len(), 5);
        let mut s = Splitter::new(LIMIT);
        let mut out = Vec::new();
        for (i, b) in data.iter().enumerate() {
            s.push(std::slice::from_ref(b), &mut out).unwrap();
            let consumed = i + 1;
            let want = fragments
                .iter()
                .find(|f| consumed >= f.1 && consumed < f.2)
                .map(|f| (f.0 as u64, f.3 as u64));
            assert_eq!(s.fragment_in_progress(), want, "after {consumed} bytes");
        }
    }

    #[test]
    fn event_counts() {
        for (name, fragments) in [
            ("h264_aac_gop2s.mp4", 5),
            ("h264_cmaf_chunks.mp4", 20),
            ("h265_aac.mp4", 3),
            ("aac_only.mp4", 10),
            ("h264_prft.mp4", 2),
        ] {
            let data = sample(name);
            let events = split(&data).unwrap();
            assert!(matches!(&events[0], Event::Init { .. }), "{name}");
            assert_eq!(events.len(), 1 + fragments, "{name}");
            let boxes = top_boxes(&data);
            let moofs: Vec<_> = boxes.iter().filter(|b| &b.2 == b"moof").collect();
            for (e, moof) in events[1..].iter().zip(moofs) {
                let Event::Fragment(f) = e else { panic!() };
                assert_eq!(f.stream_offset, moof.0 as u64);
                assert_eq!(&f.bytes[4..8], b"moof");
                assert_eq!(f.prft.is_some(), name.contains("prft"));
            }
            if let Event::Init { bytes, .. } = &events[0] {
                assert_eq!(&bytes[..], &data[..boxes[0].1 + boxes[1].1], "ftyp+moov");
            }
        }
    }

    #[test]
    fn chunking_does_not_matter() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for name in FRAGMENTED {
            let data = sample(name);
            let reference = split(&data).unwrap();
            assert_eq!(
                split_chunked(&data, &[1]).unwrap(),
                reference,
                "{name} bytewise"
            );
            for _ in 0..3 {
                let sizes: Vec<usize> = (0..64).map(|_| 1 + rng.below(40_000)).collect();
                assert_eq!(split_chunked(&data, &sizes).unwrap(), reference, "{name}");
            }
        }
    }

    /// Splits in two at every byte of the first 4 KiB and ±32 bytes around every top-level box
    /// boundary. Each case feeds only the init plus the units around the split, to stay fast.
    #[test]
    fn split_in_two_anywhere() {
        for name in FRAGMENTED {
            let data = sample(name);
            let boxes = top_boxes(&data);
            let init_end = boxes[0].1 + boxes[1].1;
            let mut cases: Vec<usize> = (1..4096).collect();
            for b in &boxes {
                cases.extend(b.0.saturating_sub(32)..b.0 + 32);
            }
            let mut windows = std::collections::HashMap::new();
            for p in cases {
                if p == 0 || p >= data.len() {
                    continue;
                }
                // Whole boxes from the one holding p-32 (or its moof) to the one holding p+32
                // (extended to a complete unit).
                let mut first = boxes
                    .iter()
                    .rposition(|b| b.0 <= p.saturating_sub(32))
                    .unwrap_or(0);
                if first > 0 && &boxes[first].2 == b"mdat" {
                    first -= 1;
                }
                let mut last = boxes.iter().rposition(|b| b.0 < p + 32).unwrap_or(0);
                while last + 1 < boxes.len()
                    && matches!(&boxes[last].2, b"moof" | b"prft" | b"ftyp")
                {
                    last += 1;
                }
                let start = if boxes[first].0 < init_end {
                    0
                } else {
                    boxes[first].0
                };
                let end = boxes[last].0 + boxes[last].1;
                let (stream, reference) = windows.entry((start, end)).or_insert_with(|| {
                    let mut stream = data[..init_end].to_vec();
                    stream.extend_from_slice(&data[start.max(init_end)..end]);
                    let reference = split(&stream).unwrap();
                    (stream, reference)
                });
                let cut = p - start + if start > 0 { init_end } else { 0 };
                let got = split_chunked(stream, &[cut, stream.len()]).unwrap();
                assert_eq!(&got, reference, "{name} split at {p}");
            }
        }
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let mut rng = XorShift(7);
        for name in FRAGMENTED {
            let data = sample(name);
            let boundaries: Vec<usize> = top_boxes(&data).iter().map(|b| b.0 + b.1).collect();
            let mut cuts: Vec<usize> = (0..100).map(|_| rng.below(data.len())).collect();
            cuts.extend((1..64).chain(boundaries.iter().flat_map(|&b| [b - 1, b + 1])));
            for cut in cuts {
                let cut = cut.min(data.len());
                let result = split(&data[..cut]);
                if !boundaries.contains(&cut) {
                    let err = result.unwrap_err();
                    assert!(
                        matches!(&err, Fmp4Error::Malformed(m) if m.starts_with("truncated")),
                        "{name} cut at {cut}: {err}"
                    );
                }
            }
        }
        // A moof at the very end, without its mdat.
        let data = sample("h264_aac_gop2s.mp4");
        let boxes = top_boxes(&data);
        let moof = boxes.iter().find(|b| &b.2 == b"moof").unwrap();
        let err = split(&data[..moof.0 + moof.1]).unwrap_err();
        assert!(
            err.to_string().contains("not followed by its mdat"),
            "{err}"
        );
    }

    #[test]
    fn refuses_what_is_not_fragmented_mp4() {
        for garbage in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
            b"\0\0\0\x02ftyp",
            b"\x47\x40\x11\x10\0\0\0\0\0\0\0\0\0\0\0\0",
        ] {
            let err = split(garbage).unwrap_err();
            assert!(
                matches!(&err, Fmp4Error::NotFmp4(m) if m.contains("does not start with an MP4 box")),
                "{err}"
            );
        }
        let err = split(&sample("h264_progressive.mp4")).unwrap_err();
        assert!(
            matches!(&err, Fmp4Error::NotFmp4(m) if m.contains("frag_keyframe+empty_moov+default_base_moof")),
            "{err}"
        );
        // ftyp then mdat (progressive with the moov at the end).
        let err = split(b"\0\0\0\x08ftyp\0\0\0\x10mdat\0\0\0\0\0\0\0\0").unwrap_err();
        assert!(matches!(err, Fmp4Error::NotFmp4(_)), "{err}");
    }

    #[test]
    fn media_before_init() {
        let data = sample("h264_aac_gop2s.mp4");
        let boxes = top_boxes(&data);
        let moof = boxes[2];
        assert_eq!(split(&data[moof.0..]), Err(Fmp4Error::MediaBeforeInit));
        // Refused from the moof's header alone.
        let mut s = Splitter::new(LIMIT);
        assert_eq!(
            s.push(&data[moof.0..moof.0 + 8], &mut Vec::new()),
            Err(Fmp4Error::MediaBeforeInit)
        );
    }

    #[test]
    fn too_large_from_the_header_alone() {
        let mut s = Splitter::new(LIMIT);
        let mut out = Vec::new();
        let header = b"\0\0\0\x01mdat\x00\x00\x00\x01\x00\x00\x00\x00";
        s.push(&header[..15], &mut out).unwrap();
        let err = s.push(&header[15..], &mut out).unwrap_err();
        assert_eq!(
            err,
            Fmp4Error::TooLarge {
                box_type: "mdat".into(),
                size: 1 << 32,
                limit: LIMIT
            }
        );
        // Every later call gets the same error.
        assert_eq!(s.push(b"x", &mut out), Err(err.clone()));
        assert_eq!(s.finish(), Err(err));

        // After an init, a free box claiming 4 GiB - 1, and a moof+mdat pair over the limit.
        let data = sample("h264_aac_gop2s.mp4");
        let boxes = top_boxes(&data);
        let init = &data[..boxes[2].0];
        let mut s = Splitter::new(LIMIT);
        s.push(init, &mut out).unwrap();
        let err = s.push(b"\xff\xff\xff\xfffree", &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                Fmp4Error::TooLarge {
                    size: 0xffff_ffff,
                    ..
                }
            ),
            "{err}"
        );
        let pair = boxes[2].1 + boxes[3].1;
        let mut s = Splitter::new(pair as u64 - 1);
        s.push(init, &mut out).unwrap();
        let err = s
            .push(&data[boxes[2].0..boxes[3].0 + 8], &mut out)
            .unwrap_err();
        assert!(
            matches!(&err, Fmp4Error::TooLarge { box_type, .. } if box_type == "moof+mdat"),
            "{err}"
        );
    }

    #[test]
    fn structure_errors() {
        let data = sample("h264_aac_gop2s.mp4");
        let boxes = top_boxes(&data);
        let init = &data[..boxes[2].0];
        let moof = &data[boxes[2].0..boxes[3].0];
        // moof followed by something else than mdat.
        let mut stream = [init, moof, b"\0\0\0\x08free"].concat();
        let err = split(&stream).unwrap_err();
        assert!(
            matches!(&err, Fmp4Error::Malformed(m) if m.contains("followed by a free box")),
            "{err}"
        );
        // Size 0 box.
        stream = [init, b"\0\0\0\0mdat"].concat();
        assert!(matches!(split(&stream), Err(Fmp4Error::Unsupported(_))));
        // Garbage after a valid start.
        stream = [init, b"\0\0\0\x10\x01\x02\x03\x04"].concat();
        assert!(
            matches!(split(&stream), Err(Fmp4Error::Malformed(m)) if m.contains(&format!("byte offset {}", init.len())))
        );
        // Skipped boxes between units, a new init later on, a lone moov.
        let moov = &data[boxes[1].0..boxes[2].0];
        let frag = &data[boxes[2].0..boxes[4].0];
        stream = [
            init,
            b"\0\0\0\x0cstyp\0\0\0\0",
            frag,
            b"\0\0\0\x09abcdx",
            moov,
            frag,
        ]
        .concat();
        let events = split(&stream).unwrap();
        assert_eq!(events.len(), 4);
        assert!(matches!(&events[2], Event::Init { bytes, .. } if &bytes[..] == moov));
    }

    /// Seeded random corruptions of every sample: errors are fine, panics are not; every fragment
    /// that gets through is also run through facts and rewrite.
    #[test]
    fn corruptions_never_panic() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for name in FRAGMENTED {
            let full = sample(name);
            // The init and the first few units, so each case stays cheap.
            let boxes = top_boxes(&full);
            let end = boxes.iter().take(8).map(|b| b.0 + b.1).max().unwrap();
            let data = &full[..end];
            // Mostly hit headers and moof/moov bodies, where the parsing happens.
            let interesting: Vec<usize> = boxes
                .iter()
                .filter(|b| b.0 < end)
                .flat_map(|b| {
                    if &b.2 == b"mdat" {
                        b.0..b.0 + 16
                    } else {
                        b.0..b.0 + b.1
                    }
                })
                .collect();
            for _ in 0..400 {
                let mut d = data.to_vec();
                for _ in 0..1 + rng.below(4) {
                    let i = if rng.below(5) == 0 {
                        rng.below(d.len())
                    } else {
                        interesting[rng.below(interesting.len())]
                    };
                    d[i] = match rng.below(3) {
                        0 => d[i] ^ (1 << rng.below(8)),
                        1 => rng.next() as u8,
                        _ => [0, 0xff, 0x7f, 0x80][rng.below(4)],
                    };
                }
                let mut s = Splitter::new(LIMIT);
                let mut out = Vec::new();
                let _ = s.push(&d, &mut out).and_then(|()| s.finish());
                let mut init = None;
                for e in out {
                    match e {
                        Event::Init { facts, .. } => init = Some(facts),
                        Event::Fragment(f) => {
                            let Some(init) = &init else { continue };
                            let _ = fragment_facts_at(init, &f.bytes, f.stream_offset);
                            let _ = crate::fmp4::fragment_facts(init, &f.bytes);
                            let _ =
                                rewrite_fragment(init, &f.bytes, f.stream_offset, &|_, t| t + 1);
                        }
                    }
                }
            }
        }
    }
}
