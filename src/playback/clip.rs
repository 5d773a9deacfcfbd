//! Downloadable MP4 clips of a time range (DESIGN.md, "HTTP surface"; issue 3 item 7).
//!
//! A clip is planned, then streamed:
//! 1. [`select`] picks the fragments from the index (from the segment holding `start` through the
//!    last fragment starting before `end`) and names the result with a strong ETag. Fragments are
//!    immutable and stream ids are never reused, so the stream id, the first and last fragment
//!    numbers and the format identify the bytes.
//! 2. [`build`] reads only the `moof` (and mdat header) of each fragment and asks
//!    [`crate::fmp4::clip`] for a [`ClipPlan`]: header bytes plus byte ranges of stored fragments.
//!    The reads and the box work run on one blocking thread. Plans are kept in a small cache so
//!    the many `Range` requests a player makes for one clip do not re-read every moof.
//! 3. [`body`] streams any byte range of the plan, reading media in chunks of at most
//!    [`READ_CHUNK_BYTES`] through the store's byte reader, which holds the clip's fragment files
//!    open: memory per request is one chunk, never the clip.
//!
//! Init changes inside the range: a progressive clip carries several sample descriptions while
//! the track layout (ids, kinds, timescales) stays the same, and ends before a layout change; a
//! fragmented clip ends before any init change (players do not take a second `moov` mid-file).
//! Either way the clip says where and why it ends ([`Clip::truncated`]).

use crate::error::{Error, Result};
use crate::fmp4::{
    fragment_head_len, same_track_layout, ClipFragment, ClipPlan, FragmentedBuilder, InitFacts,
    Piece, ProgressiveBuilder, Pushed,
};
use crate::store::{FragmentRow, OpenFragments, Store};
use crate::timefmt::format_us;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

/// Largest read of media per step of a response body: big enough for few syscalls, small
/// enough that a thousand concurrent downloads stay within a few hundred MB.
pub const READ_CHUNK_BYTES: u64 = 256 * 1024;
/// First read of each fragment when planning: covers the moof and mdat header of typical
/// fragments (a 2 s video+audio moof is about 2 KB); larger moofs take a second read.
const HEAD_GUESS_BYTES: u64 = 8 * 1024;
/// Most fragments one clip may span (a day of 0.5 s CMAF chunks is 172,800).
const MAX_CLIP_FRAGMENTS: u32 = 500_000;
/// Plans kept for repeated (Range) requests of the same clip.
const CACHE_ENTRIES: usize = 8;
/// Bytes all cached plans may hold together (built headers: mostly the sample tables of long
/// clips, about 10 MB per hour of 25 fps video with audio). A bigger plan is not cached.
const CACHE_BUDGET_BYTES: u64 = 64 << 20;
/// Bump when the bytes produced for the same fragments change, so old ETags stop matching.
const CLIP_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipFormat {
    /// Progressive MP4: ftyp, moov with full sample tables, one mdat.
    Mp4,
    /// Fragmented MP4: the init, then the fragments rebased to start near zero.
    Fmp4,
}

impl ClipFormat {
    fn name(self) -> &'static str {
        match self {
            ClipFormat::Mp4 => "mp4",
            ClipFormat::Fmp4 => "fmp4",
        }
    }
}

/// The fragments a clip is made of, and the ETag naming the result.
#[derive(Debug, Clone)]
pub struct Selection {
    pub format: ClipFormat,
    pub rows: Vec<FragmentRow>,
    /// A strong ETag, quotes included.
    pub etag: String,
}

/// A planned clip, ready to stream.
#[derive(Debug)]
pub struct Clip {
    pub etag: String,
    pub plan: ClipPlan,
    /// The fragments the plan's `Piece::Fragment` indexes refer to.
    pub rows: Vec<FragmentRow>,
    /// Why the clip ends before the requested end, if it does.
    pub truncated: Option<String>,
}

impl Clip {
    pub fn len(&self) -> u64 {
        self.plan.len
    }

    pub fn is_empty(&self) -> bool {
        self.plan.len == 0
    }
}

/// Picks the fragments of `[start_us, end_us)` of a stream; `NotFound` when there are none.
pub async fn select(
    store: &Store,
    stream_id: i64,
    stream_name: &str,
    start_us: i64,
    end_us: i64,
    format: ClipFormat,
) -> Result<Selection> {
    let rows = store
        .clip_fragments(stream_id, start_us, end_us, MAX_CLIP_FRAGMENTS + 1)
        .await?;
    if rows.len() > MAX_CLIP_FRAGMENTS as usize {
        return Err(Error::invalid(format!(
            "the range holds more than {MAX_CLIP_FRAGMENTS} fragments; ask for a shorter clip"
        )));
    }
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(Error::not_found(format!(
            "stream '{stream_name}' has no media between {} and {}",
            format_us(start_us),
            format_us(end_us)
        )));
    };
    let etag = format!(
        "\"clip-v{CLIP_VERSION}-{}-{}-{}-{}\"",
        stream_id,
        first.number,
        last.number,
        format.name()
    );
    Ok(Selection { format, rows, etag })
}

/// Plans the clip of a selection (or takes it from the cache).
pub async fn build(store: &Store, selection: Selection) -> Result<Arc<Clip>> {
    if let Some(hit) = cache_get(&selection.etag) {
        return Ok(hit);
    }
    // Inits are few (one per distinct producer configuration): fetch them first.
    let mut inits: Vec<(i64, Bytes)> = Vec::new();
    for row in &selection.rows {
        if inits.iter().any(|(id, _)| *id == row.init_id) {
            continue;
        }
        let bytes = store
            .init_bytes(row.stream_id, row.init_id)
            .await?
            .ok_or_else(|| {
                Error::internal(format!(
                    "init {} of a stored fragment is missing",
                    row.init_id
                ))
            })?;
        inits.push((row.init_id, bytes));
    }
    let store2 = store.clone();
    let clip = tokio::task::spawn_blocking(move || plan_blocking(&store2, selection, inits))
        .await
        .map_err(|e| Error::internal(format!("clip planning task failed: {e}")))??;
    let clip = Arc::new(clip);
    cache_put(&clip);
    Ok(clip)
}

/// `all_inits`: every init the rows use, in order of first use.
fn plan_blocking(
    store: &Store,
    selection: Selection,
    all_inits: Vec<(i64, Bytes)>,
) -> Result<Clip> {
    let Selection {
        format,
        mut rows,
        etag,
    } = selection;
    let mut all_inits = all_inits.into_iter();
    let first = all_inits
        .next()
        .ok_or_else(|| Error::internal("planning an empty clip"))?;
    let first_facts = InitFacts::parse(&first.1)?;

    // The inits the clip can use; cut the rows where it cannot go on.
    let mut inits: Vec<(i64, Bytes)> = vec![first];
    let mut truncated = None;
    let mut cut = rows.len();
    for (i, row) in rows.iter().enumerate() {
        if inits.iter().any(|(id, _)| *id == row.init_id) {
            continue;
        }
        let Some((id, bytes)) = all_inits.next() else {
            return Err(Error::internal("clip rows use an init that was not loaded"));
        };
        debug_assert_eq!(id, row.init_id);
        let compatible = match format {
            ClipFormat::Mp4 => same_track_layout(&first_facts, &InitFacts::parse(&bytes)?),
            ClipFormat::Fmp4 => false,
        };
        if !compatible {
            truncated = Some(format!(
                "the clip ends at {} where the stream's {} change (a new init segment); ask for a \
                 clip starting there for the rest",
                format_us(row.producer_start_us),
                match format {
                    ClipFormat::Mp4 => "tracks",
                    ClipFormat::Fmp4 => "codec settings",
                }
            ));
            cut = i;
            break;
        }
        inits.push((id, bytes));
    }
    rows.truncate(cut);

    let read_head = |row: &FragmentRow| -> Result<Bytes> {
        let mut head = store.fragment_range_blocking(row, 0, HEAD_GUESS_BYTES)?;
        let need = fragment_head_len(&head, row.size_bytes as u64)?;
        if need > head.len() as u64 {
            head = store.fragment_range_blocking(row, 0, need)?;
        }
        Ok(head)
    };
    let plan = match format {
        ClipFormat::Mp4 => {
            let init_refs: Vec<&[u8]> = inits.iter().map(|(_, b)| &b[..]).collect();
            let mut b = ProgressiveBuilder::new(&init_refs)?;
            for row in &rows {
                let head = read_head(row)?;
                let mut f = fragment(row, &head);
                f.init = inits
                    .iter()
                    .position(|(id, _)| *id == row.init_id)
                    .unwrap_or(0);
                b.push(&f).map_err(|e| stored(row, e.into()))?;
            }
            b.finish()?
        }
        ClipFormat::Fmp4 => {
            let mut b = FragmentedBuilder::new(inits[0].1.clone())?;
            for row in &rows {
                let head = read_head(row)?;
                let f = fragment(row, &head);
                if b.push(&f).map_err(|e| stored(row, e.into()))? == Pushed::NeedsWholeFragment {
                    let whole = store.fragment_range_blocking(row, 0, row.size_bytes as u64)?;
                    b.push_whole(&f, &whole)
                        .map_err(|e| stored(row, e.into()))?;
                }
            }
            b.finish()?
        }
    };
    Ok(Clip {
        etag,
        plan,
        rows,
        truncated,
    })
}

fn fragment<'a>(row: &FragmentRow, head: &'a [u8]) -> ClipFragment<'a> {
    ClipFragment {
        init: 0,
        head,
        size: row.size_bytes as u64,
        start_us: row.producer_start_us,
        end_us: row.producer_end_us(),
        discontinuity: row.discontinuity,
    }
}

/// A stored fragment that cannot be read back is our fault, not the client's.
fn stored(row: &FragmentRow, e: Error) -> Error {
    Error::internal(format!(
        "stored fragment {} cannot be used in a clip: {}",
        row.number, e.message
    ))
}

/// The bytes `[start, end)` of a clip, read as the client takes them.
pub fn body(
    store: Store,
    clip: Arc<Clip>,
    start: u64,
    end: u64,
) -> impl futures_util::Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static {
    let end = end.min(clip.plan.len);
    futures_util::stream::unfold((start, None), move |(pos, files)| {
        let (store, clip) = (store.clone(), clip.clone());
        async move {
            if pos >= end {
                return None;
            }
            // Every file of the clip is opened before the first byte goes out, so retention
            // removing a file mid-download cannot cut the response short.
            let files = match files {
                Some(f) => f,
                None => match open_files(&store, &clip).await {
                    Ok(f) => Arc::new(f),
                    Err(e) => {
                        tracing::warn!(error = %e, "clip files could not be opened");
                        return Some((Err(std::io::Error::other(e.message)), (end, None)));
                    }
                },
            };
            match next_chunk(&clip, &files, pos, end).await {
                Ok(bytes) => {
                    let next = pos + bytes.len() as u64;
                    Some((Ok(bytes), (next, Some(files))))
                }
                // Ending the body early makes the server abort the response: the client sees a
                // truncated transfer, never silently wrong bytes.
                Err(e) => {
                    tracing::warn!(error = %e, "clip body read failed");
                    Some((Err(std::io::Error::other(e.message)), (end, None)))
                }
            }
        }
    })
}

async fn open_files(store: &Store, clip: &Arc<Clip>) -> Result<OpenFragments> {
    let (store, clip) = (store.clone(), clip.clone());
    tokio::task::spawn_blocking(move || store.open_fragments_blocking(&clip.rows))
        .await
        .map_err(|e| Error::internal(format!("open task failed: {e}")))?
}

async fn next_chunk(clip: &Clip, files: &OpenFragments, pos: u64, end: u64) -> Result<Bytes> {
    let (i, within) = clip
        .plan
        .piece_at(pos)
        .ok_or_else(|| Error::internal("clip offset past the end"))?;
    let piece = &clip.plan.pieces[i];
    let take = (piece.len() - within).min(end - pos);
    match piece {
        Piece::Bytes(b) => Ok(b.slice(within as usize..(within + take) as usize)),
        Piece::Fragment { index, offset, .. } => {
            let row = clip
                .rows
                .get(*index)
                .ok_or_else(|| Error::internal("clip piece names no fragment"))?;
            files
                .read(row, offset + within, take.min(READ_CHUNK_BYTES))
                .await
        }
    }
}

// ---- plan cache ----

/// Most recently used first, each with its weight in bytes.
type PlanCache = Mutex<VecDeque<(Arc<Clip>, u64)>>;

fn cache() -> &'static PlanCache {
    static CACHE: OnceLock<PlanCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(VecDeque::new()))
}

fn cache_get(etag: &str) -> Option<Arc<Clip>> {
    let mut c = cache().lock().ok()?;
    let i = c.iter().position(|(x, _)| x.etag == etag)?;
    let hit = c.remove(i)?;
    let clip = hit.0.clone();
    c.push_front(hit);
    Some(clip)
}

fn cache_put(clip: &Arc<Clip>) {
    let weight: u64 = clip
        .plan
        .pieces
        .iter()
        .map(|p| match p {
            Piece::Bytes(b) => b.len() as u64 + 32,
            Piece::Fragment { .. } => 32,
        })
        .sum::<u64>()
        + clip.rows.len() as u64 * std::mem::size_of::<FragmentRow>() as u64;
    if weight > CACHE_BUDGET_BYTES {
        return;
    }
    if let Ok(mut c) = cache().lock() {
        c.retain(|(x, _)| x.etag != clip.etag);
        c.push_front((clip.clone(), weight));
        let mut total = 0;
        let keep = c
            .iter()
            .take(CACHE_ENTRIES)
            .take_while(|(_, w)| {
                total += w;
                total <= CACHE_BUDGET_BYTES
            })
            .count();
        c.truncate(keep);
    }
}
