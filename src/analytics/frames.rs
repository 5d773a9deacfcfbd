//! Decoded frames for analytics: the picture shown at a producer time, the newest keyframe, or
//! pictures sampled over a range, as JPEG or PNG.
//!
//! How a time becomes a picture: the segment (keyframe fragment and the fragments up to the next
//! keyframe) starting at or before the time is read from the store, its video samples are laid
//! out with their display times ([`super::gop`]), the sample shown at that time is chosen (the
//! latest display time at or before it, so B-frames are handled), and the GOP is decoded from its
//! keyframe just far enough ([`super::decode`]). Many times inside one GOP share one decode.
//! Open GOPs (x265's default) put pictures shown before the keyframe after it in decode order;
//! when such a picture is wanted, the previous segment is decoded along with it.
//!
//! Decoding is CPU work: it runs on blocking threads, at most `frames.max_concurrent_decodes`
//! at once (a request waits for a slot up to [`QUEUE_WAIT`], then gets 503 with Retry-After).
//! Decoded pictures are kept in a small LRU (`frames.cache_keyframes` entries, keyed by stream,
//! fragment and display time). Every decode puts its GOP's keyframe there, so `latest.jpg`
//! polling and repeated times are answered without decoding.

use bytes::Bytes;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::decode;
use super::gop::{Gop, VideoCodec, VideoTrack};
use crate::codec::encode::{self, Encoding};
use crate::codec::error::DecodeError;
use crate::codec::ffmpeg;
use crate::codec::picture::{Decoded, Picture};
use crate::config::FramesConfig;
use crate::error::{Error, Kind, Result};
use crate::store::{FragmentRow, Store, StreamRow};
use crate::timefmt::format_us;

/// How long a request waits for a decode slot before it is told to come back (503).
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// What a 503 suggests as `Retry-After`, seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// One encoded picture.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the picture is shown on the stream timeline (producer time), µs since the epoch.
    pub time_us: i64,
    /// The fragment holding the picture's sample.
    pub fragment: i64,
    pub bytes: Bytes,
    pub width: u32,
    pub height: u32,
}

/// What one asked-for time gave.
#[derive(Debug, Clone)]
pub enum Outcome {
    Image(Snapshot),
    /// Nothing recorded at that time (before the first keyframe, in a gap, after the end).
    NoMedia(String),
    /// Media is there but could not be decoded.
    DecodeError(String),
}

/// Which picture of a segment is wanted.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// The picture shown at this producer time, µs.
    At(i64),
    /// The segment's keyframe.
    Keyframe,
}

type CacheKey = (i64, i64, i64);

/// A least-recently-used set of decoded pictures by (stream id, fragment number, display µs).
struct FrameCache {
    capacity: usize,
    entries: VecDeque<(CacheKey, Arc<Picture>)>,
}

impl FrameCache {
    fn get(&mut self, key: &CacheKey) -> Option<Arc<Picture>> {
        let at = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(at)?;
        let img = entry.1.clone();
        self.entries.push_back(entry);
        Some(img)
    }

    fn put(&mut self, key: CacheKey, img: Arc<Picture>) {
        if self.capacity == 0 {
            return;
        }
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push_back((key, img));
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }
}

pub struct Frames {
    store: Store,
    config: FramesConfig,
    permits: Arc<Semaphore>,
    cache: Arc<Mutex<FrameCache>>,
    /// Set once `frames.ffmpeg_path` ran; a missing ffmpeg is looked for again next time (it may
    /// be installed while the server runs).
    ffmpeg_found: AtomicBool,
}

impl Frames {
    pub fn new(store: Store, config: FramesConfig) -> Frames {
        Frames {
            store,
            permits: Arc::new(Semaphore::new(config.max_concurrent_decodes.max(1))),
            cache: Arc::new(Mutex::new(FrameCache {
                capacity: config.cache_keyframes,
                entries: VecDeque::new(),
            })),
            config,
            ffmpeg_found: AtomicBool::new(false),
        }
    }

    /// A service for `AppState`.
    pub fn shared(store: Store, config: &FramesConfig) -> Arc<Frames> {
        Arc::new(Frames::new(store, config.clone()))
    }

    pub fn config(&self) -> &FramesConfig {
        &self.config
    }

    /// The picture shown at `at_us` (producer time).
    pub async fn frame_at(
        &self,
        stream: &StreamRow,
        at_us: i64,
        enc: &Encoding,
    ) -> Result<Outcome> {
        let mut out = self.frames_at(stream, &[at_us], enc).await?;
        Ok(out
            .pop()
            .unwrap_or_else(|| Outcome::NoMedia(no_media_message(at_us, None))))
    }

    /// The stream's newest keyframe.
    pub async fn latest_keyframe(&self, stream: &StreamRow, enc: &Encoding) -> Result<Outcome> {
        let Some(seg) = self.store.segment_start_near(stream.id, i64::MAX).await? else {
            return Ok(Outcome::NoMedia(format!(
                "stream '{}' has no keyframe yet",
                stream.name
            )));
        };
        let mut out = self
            .decode_segment(stream.id, &seg, vec![seg.clone()], &[Pick::Keyframe], enc)
            .await?;
        Ok(out
            .pop()
            .unwrap_or_else(|| Outcome::NoMedia("the newest keyframe is gone".into())))
    }

    /// One outcome per time in `times_us` (ascending), each GOP decoded once.
    pub async fn frames_at(
        &self,
        stream: &StreamRow,
        times_us: &[i64],
        enc: &Encoding,
    ) -> Result<Vec<Outcome>> {
        let mut out = Vec::with_capacity(times_us.len());
        let mut i = 0;
        while i < times_us.len() {
            let t = times_us[i];
            let seg = self
                .store
                .segment_start_near(stream.id, t)
                .await?
                .filter(|s| s.producer_start_us <= t);
            let Some(seg) = seg else {
                out.push(Outcome::NoMedia(no_media_message(t, None)));
                i += 1;
                continue;
            };
            let fragments = self.segment_fragments(stream.id, &seg).await?;
            let end_us = fragments
                .last()
                .map_or(seg.producer_end_us(), |f| f.producer_end_us());
            if t >= end_us {
                out.push(Outcome::NoMedia(no_media_message(t, Some(end_us))));
                i += 1;
                continue;
            }
            let group = times_us[i..]
                .iter()
                .take_while(|&&u| u < end_us)
                .map(|&u| Pick::At(u))
                .collect::<Vec<_>>();
            i += group.len();
            out.extend(
                self.decode_segment(stream.id, &seg, fragments, &group, enc)
                    .await?,
            );
        }
        Ok(out)
    }

    /// The fragments of the segment that `seg` starts, up to an init change.
    async fn segment_fragments(
        &self,
        stream_id: i64,
        seg: &FragmentRow,
    ) -> Result<Vec<FragmentRow>> {
        let mut rows = self.store.segment_fragments(stream_id, seg.number).await?;
        if rows.is_empty() {
            rows.push(seg.clone());
        }
        let cut = rows
            .iter()
            .position(|r| r.init_id != seg.init_id)
            .unwrap_or(rows.len());
        rows.truncate(cut);
        Ok(rows)
    }

    async fn read(&self, rows: &[FragmentRow]) -> Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(self.store.fragment_bytes(r).await?);
        }
        Ok(out)
    }

    /// The fragments of the segment before `seg`, when it continues into `seg` (same init, no
    /// discontinuity): open-GOP leading pictures of `seg` reference it.
    async fn previous_segment(
        &self,
        stream_id: i64,
        seg: &FragmentRow,
    ) -> Result<Option<Vec<FragmentRow>>> {
        if seg.discontinuity {
            return Ok(None);
        }
        let Some(prev) = self
            .store
            .segment_start_near(stream_id, seg.producer_start_us - 1)
            .await?
            .filter(|p| p.number < seg.number && p.init_id == seg.init_id)
        else {
            return Ok(None);
        };
        let rows = self.segment_fragments(stream_id, &prev).await?;
        let joins = rows.last().is_some_and(|l| l.number + 1 == seg.number);
        Ok(joins.then_some(rows))
    }

    /// Decodes and encodes the pictures `picks` of the segment `seg` (whose fragments are
    /// `rows`). Fragments deleted meanwhile (retention) read as no media.
    async fn decode_segment(
        &self,
        stream_id: i64,
        seg: &FragmentRow,
        mut rows: Vec<FragmentRow>,
        picks: &[Pick],
        enc: &Encoding,
    ) -> Result<Vec<Outcome>> {
        let gone = |e: Error| -> Result<Vec<Outcome>> {
            if e.kind == Kind::NotFound {
                let why = format!("the media was deleted while it was read ({})", e.message);
                Ok(picks
                    .iter()
                    .map(|_| Outcome::NoMedia(why.clone()))
                    .collect())
            } else {
                Err(e)
            }
        };
        let init = match self.store.init_bytes(stream_id, seg.init_id).await? {
            Some(b) => b,
            None => return gone(Error::not_found(format!("init {}", seg.init_id))),
        };
        let track = VideoTrack::from_init(&init)?;
        let ffmpeg = self.decoder_for(&track).await?;
        let mut bytes = match self.read(&rows).await {
            Ok(b) => b,
            Err(e) => return gone(e),
        };
        let decode_error = |m: String| {
            Ok(picks
                .iter()
                .map(|_| Outcome::DecodeError(m.clone()))
                .collect())
        };
        let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_ref()).collect();
        let starts: Vec<i64> = rows.iter().map(|r| r.producer_start_us).collect();
        let gop = match Gop::parse_anchored(&track, &refs, Some(&starts)) {
            Ok(g) => g,
            Err(e) => return decode_error(e.message),
        };
        if gop.samples.is_empty() {
            return decode_error(format!(
                "fragment {} starts a segment but holds no video samples",
                seg.number
            ));
        }
        let mut chosen = choose(&gop, picks);
        let mut gop = gop;
        if chosen.iter().any(|&i| gop.leading(i)) {
            // Leading pictures need the previous GOP; without it, show the keyframe (what a
            // player starting at this segment shows first).
            let prev = match self.previous_segment(stream_id, seg).await? {
                Some(p) => self.read(&p).await.ok().map(|b| (p, b)),
                None => None,
            };
            match prev {
                Some((prev_rows, prev_bytes)) => {
                    let mut all_bytes = prev_bytes;
                    all_bytes.append(&mut bytes);
                    let refs: Vec<&[u8]> = all_bytes.iter().map(|b| b.as_ref()).collect();
                    let starts: Vec<i64> = prev_rows
                        .iter()
                        .chain(&rows)
                        .map(|r| r.producer_start_us)
                        .collect();
                    match Gop::parse_anchored(&track, &refs, Some(&starts)) {
                        Ok(merged) => {
                            let mut all_rows = prev_rows;
                            all_rows.append(&mut rows);
                            rows = all_rows;
                            bytes = all_bytes;
                            gop = merged;
                            chosen = choose(&gop, picks);
                        }
                        Err(e) => return decode_error(e.message),
                    }
                }
                None => {
                    chosen = chosen
                        .into_iter()
                        .map(|i| if gop.leading(i) { 0 } else { i })
                        .collect();
                }
            }
        }

        let permit = self.permit().await?;
        let job = Job {
            stream_id,
            track,
            init,
            rows,
            bytes,
            gop,
            chosen,
            keyframe: seg.number,
            enc: *enc,
            ffmpeg,
            cache: self.cache.clone(),
        };
        tokio::task::spawn_blocking(move || {
            let _permit: OwnedSemaphorePermit = permit;
            job.run()
        })
        .await
        .map_err(|e| Error::internal(format!("frame decode task failed: {e}")))?
    }

    /// A decode slot, waiting up to [`QUEUE_WAIT`].
    async fn permit(&self) -> Result<OwnedSemaphorePermit> {
        match tokio::time::timeout(QUEUE_WAIT, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(Error::unavailable("the frame decoder is shutting down")),
            Err(_) => Err(Error::unavailable(format!(
                "all {} frame decoders (frames.max_concurrent_decodes) stayed busy for {} s; \
                 retry shortly",
                self.config.max_concurrent_decodes,
                QUEUE_WAIT.as_secs()
            ))),
        }
    }

    /// `None` for openh264, the ffmpeg path for what openh264 cannot decode; unsupported media
    /// when neither can.
    async fn decoder_for(&self, track: &VideoTrack) -> Result<Option<PathBuf>> {
        if track.codec.openh264_can_decode() {
            return Ok(None);
        }
        let what = match &track.codec {
            VideoCodec::H265 => "H.265".to_string(),
            VideoCodec::H264 {
                profile_idc,
                chroma_format,
                bit_depth_luma,
                ..
            } => format!(
                "H.264 profile {profile_idc} (chroma format {chroma_format}, {bit_depth_luma}-bit; \
                 openh264 decodes only 8-bit 4:2:0)"
            ),
            VideoCodec::Other(codec) => {
                return Err(Error::new(
                    Kind::UnsupportedMedia,
                    format!(
                        "frames of '{codec}' video cannot be decoded: tapedeck decodes H.264, and \
                         H.265 with ffmpeg"
                    ),
                ))
            }
        };
        let path = self.config.ffmpeg_path.clone();
        if !self.ffmpeg_found.load(Ordering::Relaxed) {
            let probe = path.clone();
            let found = tokio::task::spawn_blocking(move || ffmpeg::usable(&probe))
                .await
                .unwrap_or(false);
            if !found {
                return Err(Error::new(
                    Kind::UnsupportedMedia,
                    format!(
                        "{what} frames need ffmpeg; none found at '{path}' (frames.ffmpeg_path)"
                    ),
                ));
            }
            self.ffmpeg_found.store(true, Ordering::Relaxed);
        }
        Ok(Some(PathBuf::from(path)))
    }
}

/// The sample each pick shows.
fn choose(gop: &Gop, picks: &[Pick]) -> Vec<usize> {
    let first_shown = gop.display_order().first().copied().unwrap_or(0);
    picks
        .iter()
        .map(|p| match p {
            Pick::Keyframe => 0,
            // Before the first display time only by rounding (index times are µs, media times
            // ticks): that is the first picture.
            Pick::At(t) => gop.sample_at(*t).unwrap_or(first_shown),
        })
        .collect()
}

fn no_media_message(t_us: i64, recording_ends_us: Option<i64>) -> String {
    match recording_ends_us {
        Some(end) => format!(
            "no media at {}: the recording before it ends at {}",
            format_us(t_us),
            format_us(end)
        ),
        None => format!(
            "no media at {}: nothing is recorded at or before it",
            format_us(t_us)
        ),
    }
}

/// The blocking half of [`Frames::decode_segment`].
struct Job {
    stream_id: i64,
    track: VideoTrack,
    init: Bytes,
    rows: Vec<FragmentRow>,
    bytes: Vec<Bytes>,
    gop: Gop,
    /// Sample index per pick.
    chosen: Vec<usize>,
    /// Number of the fragment that starts the segment asked about (its keyframe is cached).
    keyframe: i64,
    enc: Encoding,
    ffmpeg: Option<PathBuf>,
    cache: Arc<Mutex<FrameCache>>,
}

impl Job {
    fn key(&self, sample: usize) -> CacheKey {
        let s = &self.gop.samples[sample];
        let fragment = self.rows.get(s.fragment).map_or(0, |r| r.number);
        (self.stream_id, fragment, s.display_us)
    }

    fn run(self) -> Result<Vec<Outcome>> {
        let mut pictures: std::collections::BTreeMap<usize, Arc<Picture>> = Default::default();
        let mut missing = Vec::new();
        {
            let mut cache = self
                .cache
                .lock()
                .map_err(|_| Error::internal("frame cache poisoned"))?;
            for &i in &self.chosen {
                if pictures.contains_key(&i) || missing.contains(&i) {
                    continue;
                }
                match cache.get(&self.key(i)) {
                    Some(img) => {
                        pictures.insert(i, img);
                    }
                    None => missing.push(i),
                }
            }
        }
        let mut failure = None;
        if !missing.is_empty() {
            // The keyframe of the segment asked about comes out of every decode: keep it.
            let key_sample = self.gop.samples.iter().position(|s| {
                self.rows
                    .get(s.fragment)
                    .is_some_and(|r| r.number == self.keyframe)
            });
            let mut wanted = missing.clone();
            if let Some(k) = key_sample.filter(|k| !wanted.contains(k)) {
                wanted.push(k);
            }
            match self.decode(&wanted) {
                Ok(decoded) => {
                    let mut cache = self
                        .cache
                        .lock()
                        .map_err(|_| Error::internal("frame cache poisoned"))?;
                    for (i, img) in decoded {
                        let img = Arc::new(img);
                        if Some(i) == key_sample || missing.contains(&i) {
                            cache.put(self.key(i), img.clone());
                        }
                        pictures.insert(i, img);
                    }
                }
                Err(e) => failure = Some(e.0),
            }
        }
        // Encode each distinct picture once.
        let mut encoded: std::collections::BTreeMap<usize, Outcome> = Default::default();
        let mut out = Vec::with_capacity(self.chosen.len());
        for &i in &self.chosen {
            if let Some(o) = encoded.get(&i) {
                out.push(o.clone());
                continue;
            }
            let outcome = match pictures.get(&i) {
                Some(img) => match encode::encode(img, &self.enc) {
                    Ok((bytes, width, height)) => {
                        let s = &self.gop.samples[i];
                        Outcome::Image(Snapshot {
                            time_us: s.display_us,
                            fragment: self.rows.get(s.fragment).map_or(0, |r| r.number),
                            bytes: Bytes::from(bytes),
                            width,
                            height,
                        })
                    }
                    Err(e) => Outcome::DecodeError(e),
                },
                None => Outcome::DecodeError(
                    failure
                        .clone()
                        .unwrap_or_else(|| "the decoder did not return the picture".to_string()),
                ),
            };
            encoded.insert(i, outcome.clone());
            out.push(outcome);
        }
        Ok(out)
    }

    fn decode(&self, wanted: &[usize]) -> std::result::Result<Decoded, DecodeError> {
        let refs: Vec<&[u8]> = self.bytes.iter().map(|b| b.as_ref()).collect();
        match &self.ffmpeg {
            None => decode::decode_h264(&self.track.codec, &self.gop, &refs, wanted),
            Some(path) => decode::decode_ffmpeg(path, &self.init, &refs, &self.gop, wanted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_keeps_the_recently_used() {
        let img = Arc::new(Picture::from_i420(2, 2, &[0; 6]).expect("a 2x2 picture"));
        let mut c = FrameCache {
            capacity: 2,
            entries: VecDeque::new(),
        };
        c.put((1, 1, 1), img.clone());
        c.put((1, 2, 2), img.clone());
        assert!(c.get(&(1, 1, 1)).is_some());
        c.put((1, 3, 3), img.clone());
        assert!(
            c.get(&(1, 2, 2)).is_none(),
            "least recently used goes first"
        );
        assert!(c.get(&(1, 1, 1)).is_some());
        assert!(c.get(&(1, 3, 3)).is_some());
        let mut none = FrameCache {
            capacity: 0,
            entries: VecDeque::new(),
        };
        none.put((1, 1, 1), img);
        assert!(none.get(&(1, 1, 1)).is_none());
    }
}
