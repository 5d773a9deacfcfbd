//! One RTSP connection to a camera: DESCRIBE, SETUP, PLAY with `retina`, then frames to fMP4
//! ([`crate::fmp4::mux`]) fed through [`Ingest::upload`], the code an HTTP upload runs: the same
//! placement, durability, acks, events, retention and metrics. There is no second path to disk.
//!
//! One ingest session per continuous run of media: packet loss (frames are dropped until the
//! next keyframe) and a parameter change (new SPS/PPS, resolution: a new init) end the session
//! and start another, which is how the index records a discontinuity.

use super::spec::{RtspSpec, Transport};
use super::status::{State, Status};
use super::timing::{self, SenderReport};
use crate::fmp4::mux::{self, Fragment, Fragmenter, MuxKind, MuxSample, MuxTrack};
use crate::ingest::{Ingest, UploadOutcome, UploadParams};
use bytes::Bytes;
use futures_util::StreamExt;
use mp4_atom::Decode;
use retina::client::{PlayOptions, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// DESCRIBE to PLAY: a camera that takes longer is as good as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An RTP timestamp jump larger than this ends the connection (retina refuses the frame): a
/// camera whose clock stepped, so the next session gets a fresh time mapping.
const MAX_TIMESTAMP_JUMP_SECS: u32 = 10;
/// Chunks of bytes between the puller and its ingest session: a few fragments, so a slow disk
/// holds the camera back (TCP backpressure) instead of filling memory.
const BODY_QUEUE: usize = 8;

/// Why a connection ended (other than being told to stop).
#[derive(Debug)]
pub enum Failure {
    /// 401/403: the camera refused the credentials. The message is the camera's answer.
    Unauthorized(String),
    /// No track tapedeck can store.
    Unsupported(String),
    Other(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Unauthorized(m) | Failure::Unsupported(m) | Failure::Other(m) => m,
        }
    }
}

/// What one connection needs.
pub struct Connection<'a> {
    pub ingest: &'a Ingest,
    pub stream: &'a str,
    pub spec: &'a RtspSpec,
    pub status: &'a Arc<Mutex<Status>>,
    pub cancel: &'a CancellationToken,
    /// CMAF chunk length; `None`: one fragment per GOP.
    pub chunk_us: Option<u64>,
    /// No frame for this long: the camera is presumed stalled and the connection dropped.
    pub silence: Duration,
}

/// How a connection ended: whether it stored anything (which resets the backoff), and the
/// failure that ended it (`None`: it was told to stop).
pub struct Ended {
    pub stored_any: bool,
    pub failure: Option<Failure>,
}

/// A track chosen for recording: its index among the camera's streams.
struct Chosen {
    stream_index: usize,
    kind: MuxKind,
    timescale: u32,
    codec: Option<mp4_atom::Codec>,
    rfc6381: String,
}

impl Connection<'_> {
    fn now_us(&self) -> i64 {
        self.ingest.store().now_us()
    }

    fn with_status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// The first line of a client error, scrubbed of credentials (retina's messages carry
    /// several lines of connection context).
    fn clean(&self, e: impl std::fmt::Display) -> String {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("").trim();
        self.spec.scrub(first)
    }

    fn classify(&self, e: retina::Error) -> Failure {
        let msg = self.clean(&e);
        match e.status_code() {
            Some(401) | Some(403) => Failure::Unauthorized(msg),
            _ => Failure::Other(msg),
        }
    }

    /// Connects and records until told to stop or the connection fails.
    pub async fn run(&self) -> Ended {
        let mut stored_any = false;
        let failure = self.record(&mut stored_any).await.err();
        Ended {
            stored_any,
            failure,
        }
    }

    async fn record(&self, stored_any: &mut bool) -> Result<(), Failure> {
        let url = self.spec.url().map_err(|e| Failure::Other(e.message))?;
        let creds = self
            .spec
            .username
            .clone()
            .map(|username| retina::client::Credentials {
                username,
                password: self.spec.password.clone().unwrap_or_default(),
            });
        let options = SessionOptions::default()
            .creds(creds)
            .user_agent(format!("tapedeck/{}", env!("CARGO_PKG_VERSION")));
        let transport: retina::client::Transport = match self.spec.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
        .parse()
        .map_err(|e| Failure::Other(self.clean(e)))?;
        let connect = async {
            let mut session = retina::client::Session::describe(url, options)
                .await
                .map_err(|e| self.classify(e))?;
            let chosen = self.choose_tracks(session.streams())?;
            for c in &chosen {
                session
                    .setup(
                        c.stream_index,
                        SetupOptions::default()
                            .transport(transport.clone())
                            .frame_format(FrameFormat::MP4),
                    )
                    .await
                    .map_err(|e| self.classify(e))?;
            }
            let max_jump = NonZeroU32::new(MAX_TIMESTAMP_JUMP_SECS).unwrap_or(NonZeroU32::MIN);
            let playing = session
                .play(PlayOptions::default().enforce_timestamps_with_max_jump_secs(max_jump))
                .await
                .map_err(|e| self.classify(e))?;
            let demuxed = playing.demuxed().map_err(|e| self.classify(e))?;
            Ok::<_, Failure>((demuxed, chosen))
        };
        let (mut demuxed, chosen) = tokio::select! {
            _ = self.cancel.cancelled() => return Ok(()),
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect) => match r {
                Err(_) => return Err(Failure::Other(format!(
                    "the camera did not complete DESCRIBE/SETUP/PLAY within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))),
                Ok(r) => r?,
            },
        };
        let mut pipe = Pipe::new(self, chosen);
        let result = loop {
            let item = tokio::select! {
                _ = self.cancel.cancelled() => break Ok(()),
                item = tokio::time::timeout(self.silence, demuxed.next()) => item,
            };
            let item = match item {
                Err(_) => {
                    break Err(Failure::Other(format!(
                        "no media from the camera for {} s (source.silence_timeout_secs); \
                         reconnecting",
                        self.silence.as_secs()
                    )))
                }
                Ok(None) => break Err(Failure::Other("the camera ended the session".into())),
                Ok(Some(Err(e))) => break Err(self.classify(e)),
                Ok(Some(Ok(item))) => item,
            };
            let step = match item {
                CodecItem::VideoFrame(f) => {
                    let params = if f.has_new_parameters() || !pipe.has_video_codec() {
                        demuxed
                            .streams()
                            .get(f.stream_id())
                            .and_then(|s| s.parameters())
                            .and_then(|p| match p {
                                ParametersRef::Video(v) => Some(v.clone()),
                                _ => None,
                            })
                    } else {
                        None
                    };
                    pipe.video(f, params).await
                }
                CodecItem::AudioFrame(f) => pipe.audio(f).await,
                CodecItem::Rtcp(r) => {
                    pipe.rtcp(&r);
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(e) = step {
                break Err(e);
            }
        };
        // What arrived before the stop or the failure is good media: stored too.
        if let Some(f) = pipe.fragmenter.as_mut().and_then(|f| f.flush()) {
            let _ = pipe.send(f).await;
        }
        pipe.end_session().await;
        *stored_any = pipe.stored_any;
        result
    }

    /// The first H.264/H.265 video track and the first AAC audio track; every other track is
    /// skipped and said so in the status.
    fn choose_tracks(&self, streams: &[retina::client::Stream]) -> Result<Vec<Chosen>, Failure> {
        let mut chosen: Vec<Chosen> = Vec::new();
        let mut skipped = Vec::new();
        for (i, s) in streams.iter().enumerate() {
            let (media, enc) = (s.media(), s.encoding_name());
            let have = |k: fn(&MuxKind) -> bool| chosen.iter().any(|c| k(&c.kind));
            match (media, enc) {
                ("video", "h264" | "h265") if !have(|k| matches!(k, MuxKind::Video { .. })) => {
                    chosen.push(Chosen {
                        stream_index: i,
                        kind: MuxKind::Video {
                            width: 0,
                            height: 0,
                        },
                        timescale: s.clock_rate_hz(),
                        codec: None,
                        rfc6381: String::new(),
                    });
                }
                ("audio", "mpeg4-generic") if !have(|k| matches!(k, MuxKind::Audio)) => {
                    let entry = match s.parameters() {
                        Some(ParametersRef::Audio(a)) => a
                            .mp4_sample_entry()
                            .build()
                            .map_err(|e| self.clean(e))
                            .and_then(|b| {
                                mp4_atom::Codec::decode(&mut &b[..])
                                    .map_err(|e| format!("cannot read its sample entry: {e}"))
                            })
                            .map(|c| (c, a.rfc6381_codec().unwrap_or("mp4a.40.2").to_string())),
                        _ => Err("the camera's SDP carries no AAC configuration".into()),
                    };
                    match entry {
                        Ok((codec, rfc6381)) => chosen.push(Chosen {
                            stream_index: i,
                            kind: MuxKind::Audio,
                            timescale: s.clock_rate_hz(),
                            codec: Some(codec),
                            rfc6381,
                        }),
                        Err(why) => skipped.push(format!("audio track {i} (AAC): {why}")),
                    }
                }
                ("video" | "audio", _) if matches!(enc, "h264" | "h265" | "mpeg4-generic") => {
                    skipped.push(format!(
                        "{media} track {i} ({enc}): only one {media} track is recorded"
                    ));
                }
                ("video", _) => skipped.push(format!(
                    "video track {i} ({enc}): tapedeck stores H.264 and H.265 video only"
                )),
                ("audio", _) => skipped.push(format!(
                    "audio track {i} ({enc}): tapedeck stores AAC audio only; set the camera's \
                     audio to AAC to record it"
                )),
                _ => skipped.push(format!(
                    "{media} track {i} ({enc}): not audio or video; not recorded"
                )),
            }
        }
        // Video first: it is the reference track (see fmp4::mux).
        chosen.sort_by_key(|c| !matches!(c.kind, MuxKind::Video { .. }));
        self.with_status(|s| s.skipped_tracks = skipped.clone());
        if chosen.is_empty() {
            return Err(Failure::Unsupported(format!(
                "the camera offers no track tapedeck can store: {}",
                if skipped.is_empty() {
                    "it described no tracks".to_string()
                } else {
                    skipped.join("; ")
                }
            )));
        }
        Ok(chosen)
    }
}

/// The current ingest session: the body it reads and the task running it.
struct Upload {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<UploadOutcome>,
    /// Producer time minus media time (µs), fixed for the session (see `timing`).
    offset_us: i64,
}

/// Frames of one connection to fragments to ingest sessions.
struct Pipe<'a> {
    conn: &'a Connection<'a>,
    chosen: Vec<Chosen>,
    fragmenter: Option<Fragmenter>,
    init: Option<Bytes>,
    upload: Option<Upload>,
    /// The newest sender report of the reference (first chosen) track.
    report: Option<SenderReport>,
    /// RTP start of the reference track (`Timestamp::start`), to map decode times back to RTP.
    reference_start: Option<i64>,
    /// Server time and decode time of the fragmenter's first accepted frame.
    first_frame: Option<(i64, u64)>,
    stored_any: bool,
    /// Loss seen: drop frames until the next keyframe.
    resyncing: bool,
}

impl<'a> Pipe<'a> {
    fn new(conn: &'a Connection<'a>, chosen: Vec<Chosen>) -> Pipe<'a> {
        Pipe {
            conn,
            chosen,
            fragmenter: None,
            init: None,
            upload: None,
            report: None,
            reference_start: None,
            first_frame: None,
            stored_any: false,
            resyncing: false,
        }
    }

    fn has_video_codec(&self) -> bool {
        self.chosen
            .iter()
            .any(|c| matches!(c.kind, MuxKind::Video { .. }) && c.codec.is_some())
    }

    fn index_of(&self, stream_id: usize) -> Option<usize> {
        self.chosen.iter().position(|c| c.stream_index == stream_id)
    }

    /// Builds the init and a new fragmenter once every chosen track has its codec.
    fn ensure_muxer(&mut self) -> Result<(), Failure> {
        if self.fragmenter.is_some() || self.chosen.iter().any(|c| c.codec.is_none()) {
            return Ok(());
        }
        let tracks: Vec<MuxTrack> = self
            .chosen
            .iter()
            .enumerate()
            .map(|(i, c)| MuxTrack {
                track_id: i as u32 + 1,
                kind: c.kind,
                timescale: c.timescale,
                codec: c.codec.clone().expect("checked above"),
            })
            .collect();
        let init = mux::init_segment(&tracks).map_err(|e| Failure::Other(e.to_string()))?;
        self.init = Some(Bytes::from(init));
        self.fragmenter = Some(Fragmenter::new(&tracks, self.conn.chunk_us));
        self.first_frame = None;
        let codecs = self.chosen.iter().map(|c| c.rfc6381.clone()).collect();
        self.conn.with_status(|s| s.codecs = codecs);
        Ok(())
    }

    fn rtcp(&mut self, r: &retina::rtcp::ReceivedCompoundPacket) {
        if self.index_of(r.stream_id()) != Some(0) {
            return;
        }
        let Some(ts) = r.rtp_timestamp() else { return };
        let Some(Ok(Some(sr))) = r.pkts().next().map(|p| p.as_sender_report()) else {
            return;
        };
        self.report = Some(SenderReport {
            wall_us: crate::fmp4::mux::ntp_to_unix_us(sr.ntp_timestamp().0),
            rtp_timestamp: ts.timestamp(),
            clock_rate: ts.clock_rate().get(),
        });
    }

    async fn video(
        &mut self,
        f: retina::codec::VideoFrame,
        params: Option<retina::codec::VideoParameters>,
    ) -> Result<(), Failure> {
        let now = self.conn.now_us();
        let Some(index) = self.index_of(f.stream_id()) else {
            return Ok(());
        };
        self.conn
            .with_status(|s| s.frame(f.data().len(), f.loss(), now));
        if let Some(p) = params {
            let entry = p
                .mp4_sample_entry()
                .build()
                .map_err(|e| Failure::Unsupported(self.conn.clean(e)))?;
            let codec = mp4_atom::Codec::decode(&mut &entry[..]).map_err(|e| {
                Failure::Unsupported(format!("cannot read the video sample entry: {e}"))
            })?;
            let (w, h) = p.pixel_dimensions();
            let c = &mut self.chosen[index];
            // Some cameras (and GStreamer's H.265 payloader) repeat the parameter sets in a
            // way the client reports as new; only a real change makes a new init.
            if c.codec.as_ref() == Some(&codec) {
                return self.video_frame(index, f, now).await;
            }
            let changed = c.codec.is_some();
            c.codec = Some(codec);
            c.kind = MuxKind::Video {
                width: u16::try_from(w).unwrap_or(u16::MAX),
                height: u16::try_from(h).unwrap_or(u16::MAX),
            };
            c.rfc6381 = p.rfc6381_codec().to_string();
            if changed {
                tracing::info!(stream = self.conn.stream, codec = %p.rfc6381_codec(), width = w, height = h, "camera parameters changed: new init");
                self.restart_session().await;
                self.fragmenter = None;
            }
        }
        self.video_frame(index, f, now).await
    }

    async fn video_frame(
        &mut self,
        index: usize,
        f: retina::codec::VideoFrame,
        now: i64,
    ) -> Result<(), Failure> {
        if f.loss() > 0 && self.fragmenter.is_some() {
            tracing::info!(
                stream = self.conn.stream,
                lost = f.loss(),
                "RTP packets lost: frames dropped until the next keyframe"
            );
            self.restart_session().await;
            self.resyncing = true;
        }
        if self.resyncing {
            if !f.is_random_access_point() {
                return Ok(());
            }
            self.resyncing = false;
        }
        self.ensure_muxer()?;
        let ts = f.timestamp();
        if index == 0 {
            self.reference_start.get_or_insert(i64::from(ts.start()));
        }
        let Ok(decode_time) = u64::try_from(ts.elapsed()) else {
            return Ok(());
        };
        let keyframe = f.is_random_access_point();
        tracing::debug!(
            stream = self.conn.stream,
            decode_time,
            keyframe,
            new_params = f.has_new_parameters(),
            "video frame"
        );
        let sample = MuxSample {
            decode_time,
            duration: None,
            keyframe,
            data: Bytes::from(f.into_data()),
        };
        self.push(index, sample, now).await
    }

    async fn audio(&mut self, f: retina::codec::AudioFrame) -> Result<(), Failure> {
        let now = self.conn.now_us();
        let Some(index) = self.index_of(f.stream_id()) else {
            return Ok(());
        };
        self.conn
            .with_status(|s| s.frame(f.data().len(), f.loss(), now));
        if index == 0 {
            self.reference_start
                .get_or_insert(i64::from(f.timestamp().start()));
            if f.loss() > 0 && self.fragmenter.is_some() {
                self.restart_session().await;
            }
        }
        self.ensure_muxer()?;
        let Ok(decode_time) = u64::try_from(f.timestamp().elapsed()) else {
            return Ok(());
        };
        let sample = MuxSample {
            decode_time,
            duration: Some(f.frame_length().get()),
            keyframe: true,
            data: Bytes::copy_from_slice(f.data()),
        };
        self.push(index, sample, now).await
    }

    async fn push(&mut self, index: usize, sample: MuxSample, now_us: i64) -> Result<(), Failure> {
        let Some(fragmenter) = self.fragmenter.as_mut() else {
            return Ok(());
        };
        let decode_time = sample.decode_time;
        let was_started = fragmenter.started();
        let out = fragmenter.push(index, sample);
        if !was_started && fragmenter.started() {
            self.first_frame = Some((now_us, decode_time));
        }
        match out {
            Some(fragment) => self.send(fragment).await,
            None => Ok(()),
        }
    }

    /// Hands a fragment to the ingest session, opening one (with the init) first if needed.
    async fn send(&mut self, fragment: Fragment) -> Result<(), Failure> {
        let Some(run) = fragment.reference_run() else {
            return Ok(());
        };
        let timescale = i128::from(run.timescale.max(1));
        let media_us = (i128::from(run.base_decode_time) * 1_000_000 / timescale) as i64;
        if self.upload.is_none() {
            let (first_us, first_decode) = self.first_frame.unwrap_or((self.conn.now_us(), 0));
            let since_first_us = ((i128::from(run.base_decode_time) - i128::from(first_decode))
                * 1_000_000
                / timescale) as i64;
            let arrived_us = first_us + since_first_us;
            let rtp = self.reference_start.unwrap_or(0) + run.base_decode_time as i64;
            let (wall_us, basis) = timing::frame_wall_clock(self.report.as_ref(), rtp, arrived_us);
            self.conn
                .with_status(|s| s.time_basis = Some(basis.describe()));
            self.open_session(wall_us - media_us);
        }
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        let bytes = fragment
            .encode(Some(media_us + upload.offset_us))
            .map_err(|e| Failure::Other(e.to_string()))?;
        if upload.tx.send(Bytes::from(bytes)).await.is_err() {
            // The session ended on its own (the stream was deleted, another producer took it
            // over, or the store refused): its outcome says why.
            let reason = match self.end_session().await {
                Some(UploadOutcome { error: Some(e), .. }) => self.conn.spec.scrub(&e.message),
                _ => "the ingest session ended".into(),
            };
            return Err(Failure::Other(reason));
        }
        self.stored_any = true;
        let now = self.conn.now_us();
        self.conn
            .with_status(|s| s.set_state(State::Streaming, now));
        Ok(())
    }

    fn open_session(&mut self, offset_us: i64) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(BODY_QUEUE);
        if let Some(init) = &self.init {
            // Cannot fail: the channel is new and has room.
            let _ = tx.try_send(init.clone());
        }
        let ingest = self.conn.ingest.clone();
        let name = self.conn.stream.to_string();
        let remote = self.conn.spec.url().ok().and_then(|u| {
            u.host_str()
                .map(|h| format!("rtsp://{h}:{}", u.port().unwrap_or(554)))
        });
        let params = UploadParams {
            remote,
            connected_us: Some(self.conn.now_us()),
            kind: Some("rtsp"),
            ..Default::default()
        };
        let body = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|o| o.map(Ok::<Bytes, std::convert::Infallible>))
        });
        let task = tokio::spawn(async move { ingest.upload(&name, params, body, None).await });
        self.upload = Some(Upload {
            tx,
            task,
            offset_us,
        });
    }

    /// Flushes what the fragmenter holds into the current session and ends it; the next
    /// fragment opens a new one (a discontinuity in the index).
    async fn restart_session(&mut self) {
        if let Some(f) = self.fragmenter.as_mut().and_then(|f| f.flush()) {
            let _ = self.send(f).await;
        }
        if self.end_session().await.is_some() {
            self.conn.with_status(|s| s.discontinuities += 1);
        }
        if self.fragmenter.is_some() {
            // Same tracks, same init: only the fragment boundaries start again.
            self.fragmenter = Some(Fragmenter::new(&self.tracks(), self.conn.chunk_us));
        }
        self.first_frame = None;
    }

    fn tracks(&self) -> Vec<MuxTrack> {
        self.chosen
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                Some(MuxTrack {
                    track_id: i as u32 + 1,
                    kind: c.kind,
                    timescale: c.timescale,
                    codec: c.codec.clone()?,
                })
            })
            .collect()
    }

    /// Closes the session's body and waits for it to persist what it received.
    async fn end_session(&mut self) -> Option<UploadOutcome> {
        let upload = self.upload.take()?;
        drop(upload.tx);
        match upload.task.await {
            Ok(outcome) => {
                if let Some(e) = &outcome.error {
                    tracing::warn!(stream = self.conn.stream, error = %self.conn.spec.scrub(&e.message), "source ingest session ended with an error");
                }
                Some(outcome)
            }
            Err(e) => {
                tracing::warn!(stream = self.conn.stream, error = %e, "source ingest task failed");
                None
            }
        }
    }
}
