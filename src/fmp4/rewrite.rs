//! Moving a fragment onto the stream's single media timeline (DESIGN.md, "Time rules"): new `tfdt`s,
//! and every data offset made relative to the moof so the stored fragment stands alone.
//!
//! Done at the byte level: only `tfhd`, `tfdt` and `trun` are rebuilt; every other box (`senc`,
//! `sbgp`, unknown ones) is copied verbatim, which a decode/encode round trip would not guarantee.
//! Known limit: `saio` offsets that point into the moof itself (encrypted streams with `senc`) are
//! not adjusted.

use super::boxes::{put_box, BoxRef};
use super::layout::{FragmentLayout, TrafLayout};
use super::Fmp4Error;
use super::InitFacts;

/// `tfhd` flag: an explicit `base_data_offset` field follows the track id.
const TFHD_BASE_DATA_OFFSET: u32 = 0x00_0001;
/// `tfhd` flag: data offsets are relative to the moof start.
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flag: a `data_offset` field follows the sample count.
const TRUN_DATA_OFFSET: u32 = 0x00_0001;

/// Returns a new moof+mdat in which: every traf's tfdt is version 1 with the value given for its
/// track (a tfdt box is inserted if the traf had none); every tfhd uses default-base-is-moof (an
/// explicit base_data_offset is removed; `moof_stream_offset` is the moof's offset in the producer's
/// input so an absolute base_data_offset can be converted); every trun's data_offset is recomputed so
/// that it points at the same sample bytes in the new layout (the moof may grow, e.g. +4 bytes per
/// v0->v1 tfdt). mdat bytes and everything else are unchanged.
pub fn rewrite_fragment(
    init: &InitFacts,
    fragment: &[u8],
    moof_stream_offset: u64,
    new_base_media_decode_time: &dyn Fn(u32, u64) -> u64,
) -> Result<Vec<u8>, Fmp4Error> {
    let (head, tail_start) = rewrite_fragment_head(
        init,
        fragment,
        moof_stream_offset,
        new_base_media_decode_time,
    )?;
    let tail = fragment.get(tail_start..).unwrap_or_default();
    let mut out = Vec::with_capacity(head.len() + tail.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(tail);
    Ok(out)
}

/// [`rewrite_fragment`] without copying the media: returns the new head (the rebuilt moof, plus
/// an explicit mdat size where the mdat had size 0) and the offset in `fragment` from which the
/// rest follows unchanged. Readers that send one fragment to many consumers (the follow feed)
/// share that tail instead of copying the mdat for each of them.
pub fn rewrite_fragment_head(
    init: &InitFacts,
    fragment: &[u8],
    moof_stream_offset: u64,
    new_base_media_decode_time: &dyn Fn(u32, u64) -> u64,
) -> Result<(Vec<u8>, usize), Fmp4Error> {
    let layout = FragmentLayout::parse(init, fragment, Some(moof_stream_offset))?;
    // Box sizes do not depend on the offset values, so build once to measure the new moof, then
    // again with every run shifted by how much the moof grew or shrank.
    let measured = build_moof(&layout, new_base_media_decode_time, 0)?;
    let delta = measured.len() as i64 - layout.mdat_start as i64;
    let mut head = build_moof(&layout, new_base_media_decode_time, delta)?;
    let mdat = fragment.get(layout.mdat_start..).unwrap_or_default();
    // A size-0 ("to end of file") mdat would swallow whatever is stored after it: make it explicit.
    match (mdat.get(..4), u32::try_from(mdat.len())) {
        (Some([0, 0, 0, 0]), Ok(len)) => {
            head.extend_from_slice(&len.to_be_bytes());
            Ok((head, layout.mdat_start + 4))
        }
        _ => Ok((head, layout.mdat_start.min(fragment.len()))),
    }
}

fn build_moof(
    layout: &FragmentLayout,
    new_tfdt: &dyn Fn(u32, u64) -> u64,
    delta: i64,
) -> Result<Vec<u8>, Fmp4Error> {
    let mut body = Vec::with_capacity(layout.moof.bytes.len() + 64);
    for (i, child) in layout.moof_children.iter().enumerate() {
        match layout.trafs.iter().find(|t| t.child_index == i) {
            Some(traf) => build_traf(&mut body, traf, new_tfdt, delta)?,
            None => body.extend_from_slice(child.bytes),
        }
    }
    let mut moof = Vec::with_capacity(body.len() + 8);
    put_box(&mut moof, b"moof", &body)?;
    Ok(moof)
}

fn build_traf(
    out: &mut Vec<u8>,
    traf: &TrafLayout,
    new_tfdt: &dyn Fn(u32, u64) -> u64,
    delta: i64,
) -> Result<(), Fmp4Error> {
    let track_id = traf.tfhd.track_id;
    let tfdt_box = |body: &mut Vec<u8>| -> Result<(), Fmp4Error> {
        let value = new_tfdt(track_id, traf.tfdt.unwrap_or(0));
        let mut b = vec![1, 0, 0, 0]; // version 1, no flags
        b.extend_from_slice(&value.to_be_bytes());
        put_box(body, b"tfdt", &b)
    };
    let mut body = Vec::new();
    for (j, child) in traf.children.iter().enumerate() {
        match &child.box_type {
            b"tfhd" => {
                put_box(&mut body, b"tfhd", &tfhd_body(child)?)?;
                if traf.tfdt.is_none() {
                    tfdt_box(&mut body)?;
                }
            }
            b"tfdt" => tfdt_box(&mut body)?,
            b"trun" => {
                let run = traf.runs.iter().find(|r| r.child_index == j);
                let start = run.and_then(|r| r.data_start).ok_or_else(|| {
                    Fmp4Error::Malformed(format!(
                        "cannot locate the sample data of a trun of track {track_id}"
                    ))
                })?;
                let offset =
                    i32::try_from(i128::from(start) + i128::from(delta)).map_err(|_| {
                        Fmp4Error::Unsupported(format!(
                        "sample data of track {track_id} lies beyond the 2 GiB a trun data_offset \
                         can reach"
                    ))
                    })?;
                put_box(&mut body, b"trun", &trun_body(child, offset)?)?;
            }
            _ => body.extend_from_slice(child.bytes),
        }
    }
    put_box(out, b"traf", &body)
}

/// Version/flags and the rest of a full box body.
fn split_full_box<'a>(b: &BoxRef<'a>, min_len: usize) -> Result<(u8, u32, &'a [u8]), Fmp4Error> {
    let body = b.body();
    if body.len() < min_len {
        return Err(Fmp4Error::Malformed(format!(
            "{} box is too short",
            super::boxes::type_name(&b.box_type)
        )));
    }
    let flags = u32::from_be_bytes([0, body[1], body[2], body[3]]);
    Ok((body[0], flags, &body[4..]))
}

fn version_flags(version: u8, flags: u32) -> [u8; 4] {
    let f = flags.to_be_bytes();
    [version, f[1], f[2], f[3]]
}

/// tfhd with default-base-is-moof and without base_data_offset; everything else kept.
fn tfhd_body(b: &BoxRef) -> Result<Vec<u8>, Fmp4Error> {
    let (version, flags, rest) = split_full_box(b, 8)?;
    let (track_id, mut rest) = rest.split_at(4);
    if flags & TFHD_BASE_DATA_OFFSET != 0 {
        rest = rest.get(8..).ok_or_else(|| {
            Fmp4Error::Malformed("tfhd box is too short for its base_data_offset".to_string())
        })?;
    }
    let new_flags = (flags & !TFHD_BASE_DATA_OFFSET) | TFHD_DEFAULT_BASE_IS_MOOF;
    let mut out = Vec::with_capacity(8 + rest.len());
    out.extend_from_slice(&version_flags(version, new_flags));
    out.extend_from_slice(track_id);
    out.extend_from_slice(rest);
    Ok(out)
}

/// trun with an explicit data_offset; per-sample entries kept byte for byte.
fn trun_body(b: &BoxRef, data_offset: i32) -> Result<Vec<u8>, Fmp4Error> {
    let (version, flags, rest) = split_full_box(b, 8)?;
    let (count, mut rest) = rest.split_at(4);
    if flags & TRUN_DATA_OFFSET != 0 {
        rest = rest.get(4..).ok_or_else(|| {
            Fmp4Error::Malformed("trun box is too short for its data_offset".to_string())
        })?;
    }
    let mut out = Vec::with_capacity(12 + rest.len());
    out.extend_from_slice(&version_flags(version, flags | TRUN_DATA_OFFSET));
    out.extend_from_slice(count);
    out.extend_from_slice(&data_offset.to_be_bytes());
    out.extend_from_slice(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::boxes::{be_u32, children};
    use crate::fmp4::testutil::{sample, split, FRAGMENTED};
    use crate::fmp4::{fragment_facts, fragment_facts_at, Event, RawFragment};

    const SHIFT: u64 = 1_000_000_000_000;

    fn events(name: &str) -> (Vec<u8>, InitFacts, Vec<RawFragment>) {
        let mut init = None;
        let mut frags = Vec::new();
        for e in split(&sample(name)).unwrap() {
            match e {
                Event::Init { bytes, facts } => init = Some((bytes.to_vec(), facts)),
                Event::Fragment(f) => frags.push(f),
            }
        }
        let (bytes, facts) = init.unwrap();
        (bytes, facts, frags)
    }

    /// The first 16 bytes of every run's sample data.
    fn run_heads(init: &InitFacts, frag: &[u8], off: u64) -> Vec<Vec<u8>> {
        let layout = FragmentLayout::parse(init, frag, Some(off)).unwrap();
        let mut heads = Vec::new();
        for traf in &layout.trafs {
            for run in &traf.runs {
                let s = run.data_start.unwrap() as usize;
                heads.push(frag[s..s + 16.min(run.data_len as usize)].to_vec());
            }
        }
        heads
    }

    #[test]
    fn shift_every_sample() {
        for name in FRAGMENTED {
            let (_, init, frags) = events(name);
            for f in &frags {
                let old = fragment_facts(&init, &f.bytes).unwrap();
                let new_bytes =
                    rewrite_fragment(&init, &f.bytes, f.stream_offset, &|_, t| t + SHIFT).unwrap();
                let new = fragment_facts(&init, &new_bytes).unwrap();
                assert_eq!(new.tracks.len(), old.tracks.len());
                for (n, o) in new.tracks.iter().zip(&old.tracks) {
                    assert_eq!(n.base_media_decode_time, o.base_media_decode_time + SHIFT);
                    assert_eq!(
                        (n.duration, n.sample_count, n.first_sample_is_sync),
                        (o.duration, o.sample_count, o.first_sample_is_sync)
                    );
                }
                assert_eq!(new.starts_with_keyframe, old.starts_with_keyframe);
                assert_eq!(new.sequence_number, old.sequence_number);
                assert_eq!(
                    run_heads(&init, &new_bytes, 0),
                    run_heads(&init, &f.bytes, f.stream_offset),
                    "{name}"
                );
                // Already v1 tfdts, moof-relative offsets: the identity rewrite changes nothing.
                let same = rewrite_fragment(&init, &f.bytes, f.stream_offset, &|_, t| t).unwrap();
                assert_eq!(same, &f.bytes[..], "{name}");
            }
        }
    }

    /// Rebuilds a fragment's moof with `edit(traf_index, child_box)` applied to every traf child,
    /// then adds `fix(traf_index, moof_growth)` to every trun data_offset.
    fn surgery(
        frag: &[u8],
        edit: &dyn Fn(usize, &[u8]) -> Vec<u8>,
        fix: &dyn Fn(usize, i64) -> i64,
    ) -> Vec<u8> {
        let top = children(frag, 0, "fragment").unwrap();
        let (moof, mdat) = (top[0], top[1]);
        let boxed = |t: &[u8], body: &[u8]| {
            [&((body.len() + 8) as u32).to_be_bytes()[..], t, body].concat()
        };
        let mut body = Vec::new();
        let mut traf_index = 0;
        for c in children(moof.body(), 8, "moof").unwrap() {
            if &c.box_type != b"traf" {
                body.extend_from_slice(c.bytes);
                continue;
            }
            let mut traf = Vec::new();
            for k in children(c.body(), 0, "traf").unwrap() {
                traf.extend(edit(traf_index, k.bytes));
            }
            body.extend(boxed(b"traf", &traf));
            traf_index += 1;
        }
        let mut new_moof = boxed(b"moof", &body);
        let growth = new_moof.len() as i64 - moof.bytes.len() as i64;
        // Patch data offsets in place.
        let mut pos = 8;
        let mut traf_index = 0;
        while pos < new_moof.len() {
            let size = be_u32(&new_moof[pos..]) as usize;
            if &new_moof[pos + 4..pos + 8] == b"traf" {
                let mut k = pos + 8;
                while k < pos + size {
                    let ksize = be_u32(&new_moof[k..]) as usize;
                    if &new_moof[k + 4..k + 8] == b"trun" && new_moof[k + 11] & 1 != 0 {
                        let o = k + 16;
                        let v = i64::from(be_u32(&new_moof[o..]) as i32) + fix(traf_index, growth);
                        new_moof[o..o + 4].copy_from_slice(&(v as i32).to_be_bytes());
                    }
                    k += ksize;
                }
                traf_index += 1;
            }
            pos += size;
        }
        [new_moof, mdat.bytes.to_vec()].concat()
    }

    fn tfhd_flags(b: &[u8]) -> u32 {
        be_u32(&b[8..12]) & 0x00ff_ffff
    }

    fn with_flags(b: &[u8], flags: u32) -> Vec<u8> {
        let mut v = b.to_vec();
        v[9..12].copy_from_slice(&flags.to_be_bytes()[1..]);
        v
    }

    #[test]
    fn tfdt_version_0_grows_the_moof() {
        for name in ["h264_aac_gop2s.mp4", "h264_cmaf_chunks.mp4"] {
            let (_, init, frags) = events(name);
            for f in &frags {
                let v0 = surgery(
                    &f.bytes,
                    &|_, b| {
                        if &b[4..8] != b"tfdt" {
                            return b.to_vec();
                        }
                        let value =
                            u32::try_from(u64::from_be_bytes(b[12..20].try_into().unwrap()))
                                .unwrap();
                        [
                            &16u32.to_be_bytes()[..],
                            b"tfdt",
                            &[0, 0, 0, 0],
                            &value.to_be_bytes(),
                        ]
                        .concat()
                    },
                    &|_, growth| growth,
                );
                let trafs = fragment_facts(&init, &f.bytes).unwrap().tracks.len();
                assert_eq!(v0.len() + 4 * trafs, f.bytes.len());
                let old = fragment_facts(&init, &f.bytes).unwrap();
                let facts = fragment_facts(&init, &v0).unwrap();
                assert_eq!(facts.tracks, old.tracks);
                assert_eq!(facts.moof_size as usize + 4 * trafs, old.moof_size as usize);
                let rewritten = rewrite_fragment(&init, &v0, f.stream_offset, &|_, t| t).unwrap();
                assert_eq!(
                    rewritten,
                    &f.bytes[..],
                    "{name}: back to v1 tfdt, offsets +4 per traf"
                );
            }
        }
    }

    #[test]
    fn explicit_base_data_offset_is_converted() {
        let (_, init, frags) = events("h264_aac_gop2s.mp4");
        for f in &frags {
            let moof_offset = f.stream_offset;
            let variant = surgery(
                &f.bytes,
                &|_, b| {
                    if &b[4..8] != b"tfhd" {
                        return b.to_vec();
                    }
                    let flags =
                        (tfhd_flags(b) & !TFHD_DEFAULT_BASE_IS_MOOF) | TFHD_BASE_DATA_OFFSET;
                    let b = with_flags(b, flags);
                    let body = [&b[8..16], &moof_offset.to_be_bytes()[..], &b[16..]].concat();
                    [&((body.len() + 8) as u32).to_be_bytes()[..], b"tfhd", &body].concat()
                },
                &|_, growth| growth,
            );
            assert_eq!(variant.len(), f.bytes.len() + 16);
            let old = fragment_facts(&init, &f.bytes).unwrap();
            assert_eq!(
                fragment_facts_at(&init, &variant, moof_offset)
                    .unwrap()
                    .tracks,
                old.tracks
            );
            // Without the stream offset the facts still come out (positions are not checked).
            assert_eq!(fragment_facts(&init, &variant).unwrap().tracks, old.tracks);
            let rewritten = rewrite_fragment(&init, &variant, moof_offset, &|_, t| t).unwrap();
            assert_eq!(rewritten, &f.bytes[..]);
            // A base before the moof is refused.
            assert!(rewrite_fragment(&init, &variant, moof_offset + 1, &|_, t| t).is_err());
        }
    }

    /// No base flags at all: the second traf's data follows the first's; its trun has no
    /// data_offset either.
    #[test]
    fn implicit_base_is_followed() {
        for name in ["h264_aac_gop2s.mp4", "h265_aac.mp4"] {
            let (_, init, frags) = events(name);
            for f in &frags {
                let variant = surgery(
                    &f.bytes,
                    &|traf, b| match &b[4..8] {
                        b"tfhd" => with_flags(b, tfhd_flags(b) & !TFHD_DEFAULT_BASE_IS_MOOF),
                        b"trun" if traf == 1 => {
                            let flags = tfhd_flags(b) & !TRUN_DATA_OFFSET;
                            let b = with_flags(b, flags);
                            let body = [&b[8..16], &b[20..]].concat();
                            [&((body.len() + 8) as u32).to_be_bytes()[..], b"trun", &body].concat()
                        }
                        _ => b.to_vec(),
                    },
                    &|traf, growth| if traf == 0 { growth } else { 0 },
                );
                let old = fragment_facts(&init, &f.bytes).unwrap();
                assert_eq!(fragment_facts(&init, &variant).unwrap().tracks, old.tracks);
                let rewritten =
                    rewrite_fragment(&init, &variant, f.stream_offset, &|_, t| t).unwrap();
                assert_eq!(rewritten, &f.bytes[..], "{name}");
            }
        }
    }

    #[test]
    fn inserts_missing_tfdt() {
        let (_, init, frags) = events("aac_only.mp4");
        let f = &frags[3];
        let variant = surgery(
            &f.bytes,
            &|_, b| {
                if &b[4..8] == b"tfdt" {
                    Vec::new()
                } else {
                    b.to_vec()
                }
            },
            &|_, growth| growth,
        );
        let facts = fragment_facts(&init, &variant).unwrap();
        assert_eq!(
            facts.tracks[0].base_media_decode_time, 0,
            "absent tfdt reads as 0"
        );
        let old = fragment_facts(&init, &f.bytes).unwrap();
        let tfdt = old.tracks[0].base_media_decode_time;
        let rewritten = rewrite_fragment(&init, &variant, f.stream_offset, &|_, _| tfdt).unwrap();
        assert_eq!(rewritten, &f.bytes[..]);
    }

    fn frame_counts(path: &std::path::Path) -> Option<String> {
        let out = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-show_entries",
                "stream=nb_read_frames",
                "-of",
                "csv=p=0",
            ])
            .arg(path)
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "ffprobe failed on {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// init + rewritten fragments, as the store will serve them, decode to as many frames as the
    /// original file.
    #[test]
    fn rewritten_stream_plays_in_ffprobe() {
        let probe = std::process::Command::new("ffprobe")
            .arg("-version")
            .output();
        if probe.is_err() {
            assert!(
                std::env::var("TAPEDECK_REQUIRE_CLIENTS").as_deref() != Ok("1"),
                "ffprobe is required (TAPEDECK_REQUIRE_CLIENTS=1) but not installed"
            );
            eprintln!("skipping rewritten_stream_plays_in_ffprobe: ffprobe is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("tapedeck-fmp4-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in FRAGMENTED {
            let (init_bytes, init, frags) = events(name);
            let mut file = init_bytes;
            for f in &frags {
                file.extend(
                    rewrite_fragment(&init, &f.bytes, f.stream_offset, &|_, t| t + SHIFT).unwrap(),
                );
            }
            let path = dir.join(name);
            std::fs::write(&path, &file).unwrap();
            let original = format!("{}/samples/{name}", env!("CARGO_MANIFEST_DIR"));
            let expected = frame_counts(original.as_ref()).unwrap();
            assert!(!expected.trim().is_empty());
            assert_eq!(frame_counts(&path).unwrap(), expected, "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
