//! Fuzzes the incremental fMP4 splitter the way ingest drives it: an HTTP body in chunks of any
//! size, then the facts and timestamp rewrite of every fragment it hands out.
//!
//! Input layout: `[mode, seed, stream...]`. `mode` and `seed` choose how `stream` is cut into
//! pushes (one push, byte by byte, fixed-size or pseudo-random chunks), so box boundaries land
//! everywhere relative to chunk boundaries. The seed corpus (`fuzz/seed-corpus.sh`) prefixes every
//! sample-derived file with these two bytes.
//!
//! What is asserted is only what the splitter promises:
//! - chunking does not matter: the same events and the same result as one push of everything;
//! - every fragment is exactly one moof box followed by one mdat box, and is byte-for-byte the
//!   input at its `stream_offset`; fragments come in stream order without overlapping;
//! - every init is a `moov`, optionally preceded by an `ftyp`;
//! - after an error, every later call returns that same error;
//! - `bytes_consumed` counts every pushed byte.
//!
//! Fragment facts and rewrite must not panic; when both succeed the rewritten fragment must have
//! the same runs with the new decode times (rewrite's documented contract).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapedeck::fmp4::{fragment_facts_at, rewrite_fragment, Event, Fmp4Error, InitFacts, Splitter};

/// Big enough for any input libFuzzer makes here, so `TooLarge` comes only from absurd box sizes
/// written in the input, as in production where the limit is far above real fragments.
const MAX_BOX_BYTES: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [mode, seed, stream @ ..] = data else {
        return;
    };
    let sizes = chunk_sizes(*mode, *seed, stream.len());

    let (reference, reference_result) = split(stream, &[stream.len()]);
    let (events, result) = split(stream, &sizes);
    assert_eq!(result, reference_result, "chunking changed the outcome");
    assert_eq!(events, reference, "chunking changed the events");

    let mut init: Option<&InitFacts> = None;
    let mut next_free_offset = 0u64;
    for event in &events {
        match event {
            Event::Init { bytes, facts } => {
                check_init(bytes);
                init = Some(facts);
            }
            Event::Fragment(f) => {
                let start = usize::try_from(f.stream_offset).unwrap();
                assert!(f.stream_offset >= next_free_offset, "fragments overlap");
                let end = start + f.bytes.len();
                assert_eq!(&stream[start..end], &f.bytes[..], "fragment bytes differ");
                next_free_offset = end as u64;
                check_fragment(&f.bytes);
                // The splitter refuses a moof before any init.
                let init = init.expect("fragment before any init");
                facts_and_rewrite(init, &f.bytes, f.stream_offset);
            }
        }
    }
});

/// The push sizes for `len` bytes (cycled by `split`).
fn chunk_sizes(mode: u8, seed: u8, len: usize) -> Vec<usize> {
    match mode % 4 {
        0 => vec![len.max(1)],
        1 => vec![1],
        2 => vec![usize::from(seed) + 1],
        _ => {
            // xorshift32 seeded from `seed`: a reproducible irregular cut pattern.
            let mut x = u32::from(seed) | 0x9e37_7900;
            (0..32)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    1 + (x % 600) as usize
                })
                .collect()
        }
    }
}

/// Pushes `stream` in chunks of `sizes` (cycled), then finishes, checking the error contract.
fn split(stream: &[u8], sizes: &[usize]) -> (Vec<Event>, Result<(), Fmp4Error>) {
    let mut s = Splitter::new(MAX_BOX_BYTES);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut result = Ok(());
    for &n in sizes.iter().cycle() {
        if pos >= stream.len() {
            break;
        }
        let end = (pos + n.max(1)).min(stream.len());
        result = s.push(&stream[pos..end], &mut out);
        pos = end;
        if result.is_err() {
            break;
        }
    }
    assert_eq!(s.bytes_consumed(), pos as u64);
    if result.is_ok() {
        result = s.finish();
    }
    if let Err(e) = &result {
        // Sticky: nothing more comes out, and every later call repeats the error.
        let before = out.len();
        assert_eq!(s.push(b"\0\0\0\x08free", &mut out).as_ref(), Err(e));
        assert_eq!(s.finish().as_ref(), Err(e));
        assert_eq!(out.len(), before, "events after an error");
    }
    (out, result)
}

/// (size, type) of the box at the start of `b`; `None` when the header is not all there.
fn box_header(b: &[u8]) -> Option<(u64, [u8; 4])> {
    let size = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    let box_type: [u8; 4] = b.get(4..8)?.try_into().ok()?;
    let size = match size {
        1 => u64::from_be_bytes(b.get(8..16)?.try_into().ok()?),
        n => u64::from(n),
    };
    Some((size, box_type))
}

/// An init is a moov, optionally preceded by an ftyp, and nothing else.
fn check_init(bytes: &[u8]) {
    let (size, box_type) = box_header(bytes).expect("init without a box header");
    let moov = if &box_type == b"ftyp" {
        &bytes[usize::try_from(size).unwrap()..]
    } else {
        bytes
    };
    let (size, box_type) = box_header(moov).expect("init without a moov header");
    assert_eq!(&box_type, b"moov");
    assert_eq!(size, moov.len() as u64, "init has bytes after its moov");
}

/// A fragment is one moof box followed by one mdat box that ends exactly at its end.
fn check_fragment(bytes: &[u8]) {
    let (moof_size, box_type) = box_header(bytes).expect("fragment without a header");
    assert_eq!(&box_type, b"moof");
    let mdat = &bytes[usize::try_from(moof_size).unwrap()..];
    let (mdat_size, box_type) = box_header(mdat).expect("moof without an mdat header");
    assert_eq!(&box_type, b"mdat");
    assert_eq!(
        mdat_size,
        mdat.len() as u64,
        "fragment has bytes after its mdat"
    );
}

/// What ingest does with each fragment. Errors are fine (fuzzed fragments are mostly invalid);
/// a rewrite that succeeds on a fragment with valid facts must keep every run and set exactly the
/// decode times asked for.
fn facts_and_rewrite(init: &InitFacts, fragment: &[u8], stream_offset: u64) {
    let facts = fragment_facts_at(init, fragment, stream_offset);
    if let Ok(f) = &facts {
        let _ = (f.start_us(), f.duration_us(), f.reference_run());
    }
    let new_time = |_track: u32, old: u64| old.saturating_add(1);
    let Ok(rewritten) = rewrite_fragment(init, fragment, stream_offset, &new_time) else {
        return;
    };
    let Ok(before) = facts else {
        return;
    };
    // The rewritten moof uses default-base-is-moof, so its own offset no longer matters.
    let after = fragment_facts_at(init, &rewritten, 0)
        .unwrap_or_else(|e| panic!("facts of a rewritten fragment: {e}"));
    assert_eq!(before.tracks.len(), after.tracks.len());
    for (b, a) in before.tracks.iter().zip(&after.tracks) {
        assert_eq!(a.track_id, b.track_id);
        assert_eq!(a.sample_count, b.sample_count);
        assert_eq!(a.duration, b.duration);
        assert_eq!(
            a.base_media_decode_time,
            new_time(b.track_id, b.base_media_decode_time)
        );
    }
    assert_eq!(after.starts_with_keyframe, before.starts_with_keyframe);
}
