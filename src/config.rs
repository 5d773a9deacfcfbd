//! Settings: built-in defaults < TOML file (`--config`) < environment (`TAPEDECK_*`) < flags.
//! Sections follow the modules that read them. `tapedeck serve --print-config` prints the result.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds; port 0 picks a free port (printed at startup).
    pub listen: String,
    pub data_dir: PathBuf,
    /// Log filter in `RUST_LOG` syntax; `RUST_LOG` itself wins when set.
    pub log: String,
    pub ingest: IngestConfig,
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    pub hls: HlsConfig,
    pub limits: LimitsConfig,
    pub frames: FramesConfig,
    pub auth: AuthConfig,
    /// How pulled sources (RTSP cameras) are recorded.
    pub source: SourceConfig,
    /// Cameras to pull, one `[[sources]]` table each (see README, "Recording RTSP cameras").
    pub sources: Vec<ConfiguredSource>,
}

/// `[source]`: settings shared by every pulled source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// CMAF chunk length in ms, so LL-HLS gets parts; 0: one fragment per GOP.
    pub chunk_ms: u64,
    /// A camera that sends no media for this long is disconnected and called again.
    pub silence_timeout_secs: u64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            chunk_ms: 0,
            silence_timeout_secs: 10,
        }
    }
}

/// One `[[sources]]` table: a stream (created if missing) and the camera it records. Applied at
/// every start, replacing what the API set for that stream.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredSource {
    pub stream: String,
    pub url: String,
    #[serde(default)]
    pub transport: crate::source::Transport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for ConfiguredSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfiguredSource")
            .field("stream", &self.stream)
            .field("url", &"<see the config file>")
            .finish()
    }
}

/// API keys and playback tokens (`http::auth`). No keys: no auth, which is only allowed when
/// listening on loopback (or with `--insecure` / `insecure = true`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub keys: Vec<ApiKeyConfig>,
    /// HMAC key for playback tokens; unset: a random one per start (tokens die with a restart).
    pub token_secret: Option<String>,
    /// Lifetime of a playback token when the request does not say (at most `token_max_secs`).
    pub token_default_secs: u64,
    /// Longest lifetime a playback token may ask for.
    pub token_max_secs: u64,
    /// Serve without keys on a non-loopback address (same as `--insecure`).
    pub insecure: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            keys: Vec::new(),
            token_secret: None,
            token_default_secs: 12 * 3600,
            token_max_secs: 7 * 24 * 3600,
            insecure: false,
        }
    }
}

/// One API key: the key itself (`key`) or its SHA-256 in hex (`key_sha256`), a role, and the
/// streams it covers (`*` globs; empty or absent: all streams).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A label for logs; never used for matching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Ingest into (and describe) matching streams.
    Producer,
    /// Read and play matching streams.
    Viewer,
}

/// Decoded frames (`frame.jpg`, `frames`): decoding is CPU work, so it is bounded and cached.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FramesConfig {
    /// The ffmpeg binary used for codecs openh264 cannot decode (H.265, H.264 4:2:2/4:4:4/10-bit).
    /// A bare name is looked up on `PATH`.
    pub ffmpeg_path: String,
    /// Decodes running at once (each takes one core); further requests wait their turn.
    pub max_concurrent_decodes: usize,
    /// Decoded frames kept in memory (keyframes repeat most: `latest.jpg`, `at` on a GOP start).
    pub cache_keyframes: usize,
    /// Most frames one `frames` request may return; page with `next` for more.
    pub max_frames_per_request: u32,
    /// Smallest `interval_ms` a `frames` request may ask for.
    pub min_interval_ms: u64,
    /// JPEG quality (1-100) when a request does not say.
    pub jpeg_quality: u8,
}

impl Default for FramesConfig {
    fn default() -> Self {
        FramesConfig {
            ffmpeg_path: "ffmpeg".into(),
            max_concurrent_decodes: 2,
            cache_keyframes: 16,
            max_frames_per_request: 100,
            min_interval_ms: 100,
            jpeg_quality: 80,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsConfig {
    /// Complete segments in the live playlist (the window is also kept at three target
    /// durations or more, as the HLS spec requires).
    pub live_window_segments: usize,
    /// A live playlist for a stream with no producer and no fragment newer than this is a 404.
    pub live_idle_secs: u64,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            live_window_segments: 6,
            live_idle_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest clip (`clip.mp4`) one request may ask for.
    pub max_clip_secs: u64,
    /// Longest time range one archive playlist (`archive.m3u8?start=&end=`) may cover: a day of
    /// 2 s segments is 43,200 entries (about 4 MB of playlist).
    pub max_playlist_secs: u64,
    /// Ingest requests (long uploads and segment-file PUTs) in progress at once, server-wide;
    /// more get 503 with Retry-After.
    pub max_ingest_requests: usize,
    /// Per-stream ingest rate in bytes per second (all uploads to one stream together); unset
    /// means unlimited. A producer above it is read more slowly, not cut off.
    pub ingest_bytes_per_sec_per_stream: Option<u64>,
    /// Open follow-feed (`/media`) connections per stream; more get 429 with Retry-After.
    pub max_follow_connections_per_stream: usize,
    /// Open event-stream (`/events`) connections per stream (the global feed counts as one
    /// stream); more get 429 with Retry-After.
    pub max_event_connections_per_stream: usize,
    /// Largest request head (request line plus headers); larger gets 431. At least 1024.
    pub max_header_bytes: usize,
    /// A client must send its whole request head within this time, or the connection closes
    /// (slow-header clients). The clock runs from when the server waits for the next request, so
    /// this is also how long an idle keep-alive connection stays open.
    pub header_read_timeout_secs: u64,
    /// A request body that sends nothing for this long fails with 408 (slow-body clients).
    /// Producers have their own, shorter `ingest.idle_timeout_secs`.
    pub body_read_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_clip_secs: 24 * 3600,
            max_playlist_secs: 24 * 3600,
            max_ingest_requests: 2048,
            ingest_bytes_per_sec_per_stream: None,
            max_follow_connections_per_stream: 256,
            max_event_connections_per_stream: 256,
            max_header_bytes: 64 * 1024,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Create a stream on its first ingest instead of answering 404.
    pub auto_create: bool,
    /// A producer that sends no byte for this long is disconnected.
    pub idle_timeout_secs: u64,
    /// Largest accepted box and fragment (moof+mdat). 50 MB holds a 10 s 40 Mbit/s GOP.
    pub max_fragment_bytes: u64,
    /// Overlap between a fragment and the previous one that is absorbed as clock jitter (the
    /// fragment is moved to start where the previous one ended); larger overlaps are refused.
    pub jitter_tolerance_ms: u64,
    /// Bytes of complete fragments received from producers but not yet durable, over all
    /// producers. At the budget the server stops reading producer sockets (TCP backpressure: the
    /// producer slows down) instead of buffering; each producer may hold one partial fragment
    /// besides. Bounds memory when the disk cannot keep up.
    pub pending_budget_bytes: u64,
    /// A producer held back by the budget for longer than this gets an `overloaded` error
    /// (NDJSON `error` line, or 503 with Retry-After before its first ack) and its session ends
    /// cleanly, every fragment before the held one stored and acked.
    pub max_hold_back_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// A stream's fragment file is closed and a new one started past this size...
    pub file_roll_bytes: u64,
    /// ...or this age, so retention can free space file by file. Each stream rolls at its own
    /// share of both limits, between 7/8 and all of them, so cameras started together do not
    /// open a thousand new files in the same second (`store/writer.rs`, `roll_spread`).
    pub file_roll_secs: u64,
    /// How a commit group is made durable: "fdatasync" of each touched file (in parallel), or
    /// "syncfs" (one call for the whole data filesystem, which also flushes other programs'
    /// writes on it). "auto" is "fdatasync".
    pub sync: SyncMode,
    /// Global budget: the sweeper deletes the oldest media across all streams while the
    /// streams hold more than this (unset: no byte budget).
    pub max_bytes: Option<u64>,
    /// ...or while the data disk has less free space than this (unset: 5 % of the disk).
    /// With `[storage.object]` both count the local disk only.
    pub min_free_bytes: Option<u64>,
    /// A commit group closes this long after its first fragment arrived (then one pass of
    /// syncs, one SQLite commit, all its acks): fewer syncs under load for a bounded ack delay.
    /// 0: a group is whatever queued while the last one was being committed.
    pub group_commit_ms: u64,
    /// ...or as soon as it holds this many bytes, whichever comes first.
    pub group_commit_bytes: u64,
    /// Sealed fragment files tier to S3-compatible object storage (`store/object/`). Absent:
    /// everything stays on the local disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectConfig>,
}

/// `[storage.object]`: where sealed fragment files go, and how long local copies stay.
/// Credentials are not settings: they come from the standard AWS environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), so they stay out of
/// config files and `--print-config`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectConfig {
    /// Bucket and key prefix: `s3://bucket` or `s3://bucket/some/prefix`.
    pub url: String,
    /// The S3 API endpoint for S3-compatible servers (MinIO, Garage, Ceph, R2, ...), e.g.
    /// `http://127.0.0.1:9000`; unset: AWS S3 for `region`. `http://` is allowed.
    pub endpoint: Option<String>,
    /// Unset: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1` (what most S3-compatible
    /// servers accept; R2 wants `auto`).
    pub region: Option<String>,
    /// Address the bucket as `endpoint/bucket/key` instead of `bucket.endpoint/key`: what
    /// MinIO, Garage and most self-hosted servers need.
    pub path_style: bool,
    /// Files uploaded at once.
    pub upload_concurrency: usize,
    /// Local copies of uploaded files are kept this long after their upload (hot reads stay on
    /// disk)...
    pub local_keep_hours: u64,
    /// ...and while all local copies of uploaded files together stay under this (unset: no byte
    /// limit besides the disk budget).
    pub local_keep_bytes: Option<u64>,
    /// Memory for byte ranges read back from object storage (the read cache).
    pub read_cache_bytes: u64,
}

impl Default for ObjectConfig {
    fn default() -> Self {
        ObjectConfig {
            url: String::new(),
            endpoint: None,
            region: None,
            path_style: false,
            upload_concurrency: 4,
            local_keep_hours: 24,
            local_keep_bytes: None,
            read_cache_bytes: 256 << 20,
        }
    }
}

impl ObjectConfig {
    /// The bucket and the key prefix (without slashes at either end) of `url`.
    pub fn bucket_and_prefix(&self) -> Result<(String, String)> {
        let rest = self.url.strip_prefix("s3://").ok_or_else(|| {
            Error::invalid(format!(
                "storage.object.url must look like s3://bucket/prefix, not '{}'",
                self.url
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::invalid(format!(
                "storage.object.url '{}' names no bucket (s3://bucket/prefix)",
                self.url
            )));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }

    pub fn validate(&self) -> Result<()> {
        self.bucket_and_prefix()?;
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Error::invalid(format!(
                    "storage.object.endpoint must be an http:// or https:// URL, not '{e}'"
                )));
            }
        }
        if self.upload_concurrency == 0 {
            return Err(Error::invalid(
                "storage.object.upload_concurrency must be at least 1",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Auto,
    Syncfs,
    Fdatasync,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Retention given to streams created without one (including auto-created streams).
    pub default_hours: u64,
    /// How often the sweeper runs (it also runs at once after a retention decrease).
    pub sweep_interval_secs: u64,
    /// What a live-only stream (`retention_hours = 0`) keeps.
    pub live_buffer_secs: u64,
    /// Fragment rows one expiry step removes; steps run between ingest commit groups, so this
    /// bounds how long a sweep can hold up acknowledgements.
    pub batch_rows: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            log: "info".into(),
            ingest: IngestConfig::default(),
            storage: StorageConfig::default(),
            retention: RetentionConfig::default(),
            hls: HlsConfig::default(),
            limits: LimitsConfig::default(),
            frames: FramesConfig::default(),
            auth: AuthConfig::default(),
            source: SourceConfig::default(),
            sources: Vec::new(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            auto_create: true,
            idle_timeout_secs: 30,
            max_fragment_bytes: 50_000_000,
            jitter_tolerance_ms: 1000,
            pending_budget_bytes: 128 * 1024 * 1024,
            max_hold_back_secs: 20,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            file_roll_bytes: 256 * 1024 * 1024,
            file_roll_secs: 600,
            sync: SyncMode::Auto,
            max_bytes: None,
            min_free_bytes: None,
            group_commit_ms: 10,
            group_commit_bytes: 32 * 1024 * 1024,
            object: None,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            default_hours: 72,
            sweep_interval_secs: 30,
            live_buffer_secs: 300,
            // Measured with 50 cameras and a 1 M-row sweep: 2000-row steps sometimes held a
            // commit group for hundreds of ms; 500 kept ack p99 within noise of no sweep.
            batch_rows: 500,
        }
    }
}

/// Values from the environment and the command line; `None` keeps the file's (or default) value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub log: Option<String>,
}

impl Config {
    /// Loads the TOML file (when given) over the defaults, then applies overrides.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::invalid(format!("cannot read config file {}: {e}", path.display()))
                })?;
                Self::from_toml(&text).map_err(|e| {
                    Error::invalid(format!("config file {}: {}", path.display(), e.message))
                })?
            }
            None => Config::default(),
        };
        if let Some(v) = &overrides.listen {
            config.listen = v.clone();
        }
        if let Some(v) = &overrides.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &overrides.log {
            config.log = v.clone();
        }
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Config> {
        toml::from_str(text).map_err(|e| Error::invalid(e.to_string()))
    }

    /// The configuration as TOML, every secret (API keys, the token secret) shown as
    /// [`REDACTED`]: `--print-config` output ends up in terminals, tickets and chat. Hashes
    /// (`key_sha256`) stay: they are what a config should hold instead of keys. The text still
    /// parses, but a config holding the marker is refused ([`AuthConfig::validate`]), so a
    /// printed config pasted back cannot turn the marker into a working key.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(s) = shown.auth.token_secret.as_mut() {
            *s = REDACTED.to_string();
        }
        for k in &mut shown.auth.keys {
            if let Some(key) = k.key.as_mut() {
                *key = REDACTED.to_string();
            }
        }
        for s in &mut shown.sources {
            if let Some(p) = s.password.as_mut() {
                *p = REDACTED.to_string();
            }
            // A password may also sit in the URL's userinfo.
            if let Ok(mut u) = url::Url::parse(&s.url) {
                if u.password().is_some() {
                    let _ = u.set_password(Some(REDACTED));
                    s.url = u.to_string();
                }
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        if self.source.silence_timeout_secs == 0 {
            return Err(Error::invalid(
                "source.silence_timeout_secs must be at least 1",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.sources {
            crate::stream_name::validate_stream_name(&s.stream)
                .map_err(|e| Error::invalid(format!("[[sources]] stream: {}", e.message)))?;
            if !seen.insert(s.stream.as_str()) {
                return Err(Error::invalid(format!(
                    "[[sources]]: stream '{}' has two sources; give each stream one",
                    s.stream
                )));
            }
            crate::source::SourceSpec::from(s)
                .validated()
                .map_err(|e| {
                    Error::invalid(format!("[[sources]] '{}': {}", s.stream, e.message))
                })?;
        }
        if self.ingest.max_fragment_bytes < 1024 {
            return Err(Error::invalid(
                "ingest.max_fragment_bytes must be at least 1024",
            ));
        }
        if self.ingest.pending_budget_bytes < self.ingest.max_fragment_bytes.min(1024 * 1024) {
            return Err(Error::invalid(
                "ingest.pending_budget_bytes must be at least 1 MiB (or ingest.max_fragment_bytes, if smaller)",
            ));
        }
        if self.ingest.max_hold_back_secs == 0 {
            return Err(Error::invalid(
                "ingest.max_hold_back_secs must be at least 1",
            ));
        }
        if self.ingest.idle_timeout_secs == 0 {
            return Err(Error::invalid(
                "ingest.idle_timeout_secs must be at least 1",
            ));
        }
        if self.retention.sweep_interval_secs == 0 || self.retention.batch_rows == 0 {
            return Err(Error::invalid(
                "retention.sweep_interval_secs and retention.batch_rows must be at least 1",
            ));
        }
        if self.frames.max_concurrent_decodes == 0 || self.frames.max_frames_per_request == 0 {
            return Err(Error::invalid(
                "frames.max_concurrent_decodes and frames.max_frames_per_request must be at least 1",
            ));
        }
        if !(1..=100).contains(&self.frames.jpeg_quality) {
            return Err(Error::invalid(
                "frames.jpeg_quality must be between 1 and 100",
            ));
        }
        let l = &self.limits;
        if l.max_ingest_requests == 0
            || l.max_follow_connections_per_stream == 0
            || l.max_event_connections_per_stream == 0
            || l.header_read_timeout_secs == 0
            || l.body_read_timeout_secs == 0
            || l.max_playlist_secs == 0
            || l.max_clip_secs == 0
        {
            return Err(Error::invalid(
                "limits: every count, timeout and duration must be at least 1",
            ));
        }
        if l.max_header_bytes < 1024 {
            return Err(Error::invalid(
                "limits.max_header_bytes must be at least 1024",
            ));
        }
        // A throttled read waits until its bytes are paid for; far below camera rates, one large
        // read would wait longer than a producer may be idle.
        if l.ingest_bytes_per_sec_per_stream
            .is_some_and(|r| r < 65_536)
        {
            return Err(Error::invalid(
                "limits.ingest_bytes_per_sec_per_stream must be at least 65536 (0.5 Mbit/s)",
            ));
        }
        if self.storage.group_commit_ms > 1000 {
            return Err(Error::invalid(
                "storage.group_commit_ms must be at most 1000 (it delays every ack)",
            ));
        }
        if self.storage.group_commit_bytes < 64 * 1024 {
            return Err(Error::invalid(
                "storage.group_commit_bytes must be at least 65536",
            ));
        }
        if self.storage.file_roll_bytes < 1024 * 1024 {
            return Err(Error::invalid(
                "storage.file_roll_bytes must be at least 1 MiB",
            ));
        }
        if let Some(o) = &self.storage.object {
            o.validate()?;
        }
        self.auth.validate()
    }
}

/// What `--print-config` shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

impl AuthConfig {
    pub fn validate(&self) -> Result<()> {
        let a = self;
        let redacted = |s: &Option<String>| s.as_deref() == Some(REDACTED);
        if redacted(&a.token_secret) || a.keys.iter().any(|k| redacted(&k.key)) {
            return Err(Error::invalid(format!(
                "the [auth] section holds \"{REDACTED}\" where a secret belongs (copied from \
                 --print-config, which hides secrets): put the real key or token_secret back"
            )));
        }
        if a.token_default_secs == 0 || a.token_max_secs == 0 {
            return Err(Error::invalid(
                "auth.token_default_secs and auth.token_max_secs must be at least 1",
            ));
        }
        if a.token_secret.as_deref().is_some_and(|s| s.len() < 16) {
            return Err(Error::invalid(
                "auth.token_secret must be at least 16 characters",
            ));
        }
        for (i, k) in a.keys.iter().enumerate() {
            let which = format!("auth.keys[{i}]");
            let problem = match (&k.key, &k.key_sha256) {
                (Some(key), None) if key.len() >= 8 => None,
                (Some(_), None) => {
                    Some("a key must be at least 8 characters (32 random ones are better)")
                }
                (None, Some(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    None
                }
                (None, Some(_)) => {
                    Some("key_sha256 must be 64 hex digits (`printf %s KEY | sha256sum`)")
                }
                _ => Some("give exactly one of 'key' and 'key_sha256'"),
            };
            if let Some(p) = problem {
                return Err(Error::invalid(format!("{which}: {p}")));
            }
            for p in &k.streams {
                let ok = !p.is_empty()
                    && p.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*')
                    });
                if !ok {
                    return Err(Error::invalid(format!(
                        "{which}: invalid stream pattern '{p}': stream name characters and '*' only"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\n[ingest]\nidle_timeout_secs = 5\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.ingest.idle_timeout_secs, 5);
        assert!(c.ingest.auto_create, "unset keys keep defaults");
        let o = Overrides {
            listen: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        assert_eq!(Config::load(Some(&path), &o).unwrap().listen, "127.0.0.1:1");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::from_toml("[ingest]\nidle_timeout = 5\n").unwrap_err();
        assert!(e.message.contains("idle_timeout"), "{}", e.message);
    }

    #[test]
    fn printed_config_parses_back() {
        let c = Config::default();
        let back = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(back.listen, c.listen);
        assert_eq!(back.storage.sync, SyncMode::Auto);
    }

    #[test]
    fn printed_config_hides_secrets() {
        let text = "[auth]\ntoken_secret = \"0123456789abcdef-secret\"\nkeys = [\n  \
                    { key = \"the-admin-key-1234\", role = \"admin\" },\n  \
                    { key_sha256 = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \
                    role = \"viewer\" },\n]\n";
        let c = Config::from_toml(text).unwrap();
        c.validate().unwrap();
        let printed = c.to_toml();
        assert!(!printed.contains("the-admin-key-1234"), "{printed}");
        assert!(!printed.contains("0123456789abcdef-secret"), "{printed}");
        assert_eq!(printed.matches(REDACTED).count(), 2, "{printed}");
        assert!(printed.contains(&"a".repeat(64)), "hashes stay: {printed}");
        // Pasted back, it parses but is refused, rather than making the marker a key.
        let back = Config::from_toml(&printed).unwrap();
        let e = back.validate().unwrap_err();
        assert!(e.message.contains("--print-config"), "{e}");
    }

    #[test]
    fn object_tier_settings() {
        let c = Config::from_toml(
            "[storage.object]\nurl = \"s3://media/site-a/\"\nendpoint = \"http://127.0.0.1:9000\"\n\
             path_style = true\nlocal_keep_hours = 0\n",
        )
        .unwrap();
        c.validate().unwrap();
        let o = c.storage.object.as_ref().unwrap();
        assert_eq!(
            o.bucket_and_prefix().unwrap(),
            ("media".to_string(), "site-a".to_string())
        );
        assert_eq!(o.upload_concurrency, 4, "unset keys keep defaults");
        assert!(Config::default().storage.object.is_none(), "off by default");
        let bad = |t: &str| Config::from_toml(t).and_then(|c| c.validate()).unwrap_err();
        assert!(bad("[storage.object]\nurl = \"media\"\n")
            .message
            .contains("s3://bucket/prefix"));
        assert!(
            bad("[storage.object]\nurl = \"s3://b\"\nendpoint = \"127.0.0.1:9\"\n")
                .message
                .contains("endpoint")
        );
    }

    #[test]
    fn limits_are_validated() {
        let check = |toml: &str| Config::from_toml(toml).and_then(|c| c.validate());
        assert!(check("[limits]\ningest_bytes_per_sec_per_stream = 150000\n").is_ok());
        let e = check("[limits]\ningest_bytes_per_sec_per_stream = 1000\n").unwrap_err();
        assert!(e.message.contains("ingest_bytes_per_sec_per_stream"), "{e}");
        assert!(check("[limits]\nmax_header_bytes = 100\n").is_err());
        assert!(check("[limits]\nmax_follow_connections_per_stream = 0\n").is_err());
        assert!(check("[limits]\nheader_read_timeout_secs = 0\n").is_err());
    }
}
