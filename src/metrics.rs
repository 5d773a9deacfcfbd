//! The metrics registry: counters and histograms that ingest and playback bump as they work, and
//! the Prometheus text exposition format they are scraped in (`GET /metrics`).
//!
//! Deliberately small and cheap: atomics, one lock per per-stream map (looked up once per ingest
//! session, not per fragment), and the text format written by hand
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>). The store keeps its own
//! figures (commit groups, fsync latency) because it is a lower layer; the HTTP layer reads both.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in microseconds. From 0.5 ms (a group commit
/// on a fast SSD) to 10 s (a disk that has stopped keeping up), roughly 1-2.5-5 per decade.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram over [`LATENCY_BUCKETS_US`]. Plain numbers: whoever shares one puts it
/// behind a lock it already holds (the writer's stats) or a small one of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is above every bound (`+Inf`).
    counts: [u64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.partition_point(|le| *le < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }
}

/// What a Prometheus metric family is.
#[derive(Debug, Clone, Copy)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
}

/// Builds one exposition-format text: `# HELP` and `# TYPE` once per family, then its samples.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

/// Escapes a label value: backslash, double quote and line feed (the format's three escapes).
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

impl Exposition {
    /// Starts a family. `help` is one line of plain text.
    pub fn family(&mut self, name: &str, kind: Type, help: &str) {
        let kind = match kind {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Type, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A whole histogram family in seconds: cumulative `_bucket`s, `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, Type::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (le_us, n) in LATENCY_BUCKETS_US.iter().zip(h.counts) {
            cumulative += n;
            let le = (*le_us as f64 / 1e6).to_string();
            self.sample(&bucket, &[("le", &le)], cumulative);
        }
        let count = h.count();
        self.sample(&bucket, &[("le", "+Inf")], count);
        self.sample(&format!("{name}_sum"), &[], h.sum_seconds());
        self.sample(&format!("{name}_count"), &[], count);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// What a playback request fetched, for the per-kind request and byte counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlaybackKind {
    Playlist,
    Init,
    Segment,
    Part,
    Fragment,
    Clip,
    Follow,
    Frame,
}

impl PlaybackKind {
    pub const ALL: [PlaybackKind; 8] = [
        PlaybackKind::Playlist,
        PlaybackKind::Init,
        PlaybackKind::Segment,
        PlaybackKind::Part,
        PlaybackKind::Fragment,
        PlaybackKind::Clip,
        PlaybackKind::Follow,
        PlaybackKind::Frame,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlaybackKind::Playlist => "playlist",
            PlaybackKind::Init => "init",
            PlaybackKind::Segment => "segment",
            PlaybackKind::Part => "part",
            PlaybackKind::Fragment => "fragment",
            PlaybackKind::Clip => "clip",
            PlaybackKind::Follow => "follow",
            PlaybackKind::Frame => "frame",
        }
    }
}

/// Ingest counters of one stream.
#[derive(Default)]
pub struct StreamIngest {
    pub bytes: AtomicU64,
    pub fragments: AtomicU64,
    /// Errors by the error code of the JSON error body (`INVALID_ARGUMENT`, `CONFLICT`, ...).
    /// Rare, so a lock is fine.
    pub errors: Mutex<BTreeMap<&'static str, u64>>,
}

/// The figures of one [`StreamIngest`] at one instant.
#[derive(Debug, Clone, Default)]
pub struct IngestSnapshot {
    pub bytes: u64,
    pub fragments: u64,
    pub errors: BTreeMap<&'static str, u64>,
}

impl StreamIngest {
    pub fn snapshot(&self) -> IngestSnapshot {
        IngestSnapshot {
            bytes: self.bytes.load(Ordering::Relaxed),
            fragments: self.fragments.load(Ordering::Relaxed),
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        }
    }
}

/// The server's metrics registry (see the module doc).
#[derive(Default)]
pub struct Metrics {
    ingest: Mutex<BTreeMap<String, Arc<StreamIngest>>>,
    ack_latency: Mutex<Histogram>,
    playback_bytes: [AtomicU64; PlaybackKind::ALL.len()],
    /// Responses by (kind, HTTP status).
    playback_requests: Mutex<BTreeMap<(PlaybackKind, u16), u64>>,
}

/// What an ingest session counts into: its stream's counters and the shared ack histogram.
#[derive(Clone)]
pub struct IngestCounters {
    metrics: Arc<Metrics>,
    stream: Arc<StreamIngest>,
}

impl IngestCounters {
    /// A fragment was acknowledged `latency` after its last byte arrived.
    pub fn acked(&self, size_bytes: u64, latency: Duration) {
        self.stream.bytes.fetch_add(size_bytes, Ordering::Relaxed);
        self.stream.fragments.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = self.metrics.ack_latency.lock() {
            h.observe(latency);
        }
    }

    /// A fragment was refused or a session or file ended with an error.
    pub fn error(&self, kind: crate::error::Kind) {
        if let Ok(mut e) = self.stream.errors.lock() {
            *e.entry(kind.code()).or_default() += 1;
        }
    }
}

impl Metrics {
    /// The counters an ingest session into `stream` updates.
    pub fn ingest(self: &Arc<Self>, stream: &str) -> IngestCounters {
        let stream = self
            .ingest
            .lock()
            .map(|mut m| m.entry(stream.to_string()).or_default().clone())
            .unwrap_or_default();
        IngestCounters {
            metrics: self.clone(),
            stream,
        }
    }

    /// Forgets a deleted stream's counters (a new stream of the same name starts from zero).
    pub fn forget_stream(&self, stream: &str) {
        if let Ok(mut m) = self.ingest.lock() {
            m.remove(stream);
        }
    }

    /// The ingest figures of every stream that has had a session since the server started.
    pub fn ingest_streams(&self) -> Vec<(String, IngestSnapshot)> {
        let streams: Vec<(String, Arc<StreamIngest>)> = self
            .ingest
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        streams
            .into_iter()
            .map(|(k, v)| (k, v.snapshot()))
            .collect()
    }

    pub fn ack_latency(&self) -> Histogram {
        self.ack_latency.lock().map(|h| *h).unwrap_or_default()
    }

    pub fn playback_response(&self, kind: PlaybackKind, status: u16) {
        if let Ok(mut m) = self.playback_requests.lock() {
            *m.entry((kind, status)).or_default() += 1;
        }
    }

    pub fn playback_bytes_sent(&self, kind: PlaybackKind, bytes: u64) {
        self.playback_bytes[kind as usize].fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn playback_bytes(&self, kind: PlaybackKind) -> u64 {
        self.playback_bytes[kind as usize].load(Ordering::Relaxed)
    }

    pub fn playback_requests(&self) -> Vec<((PlaybackKind, u16), u64)> {
        self.playback_requests
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label("cam-1.a_b"), "cam-1.a_b");
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(300)); // <= 0.0005
        h.observe(Duration::from_micros(500)); // on a bound: counted in it
        h.observe(Duration::from_millis(3)); // <= 0.005
        h.observe(Duration::from_secs(60)); // only +Inf
        let mut e = Exposition::default();
        e.histogram("t_seconds", "Test.", &h);
        let text = e.finish();
        assert!(text.starts_with("# HELP t_seconds Test.\n# TYPE t_seconds histogram\n"));
        assert!(
            text.contains("\nt_seconds_bucket{le=\"0.0005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("\nt_seconds_bucket{le=\"0.0025\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("\nt_seconds_bucket{le=\"0.005\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("\nt_seconds_bucket{le=\"10\"} 3\n"), "{text}");
        assert!(
            text.contains("\nt_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("\nt_seconds_sum 60.0038\n"), "{text}");
        assert!(text.ends_with("\nt_seconds_count 4\n"), "{text}");
    }

    #[test]
    fn samples_escape_labels_and_help() {
        let mut e = Exposition::default();
        e.family("x_total", Type::Counter, "Back\\slash\nnewline.");
        e.sample("x_total", &[("a", "q\"uote"), ("b", "n\nl")], 7);
        assert_eq!(
            e.finish(),
            "# HELP x_total Back\\\\slash\\nnewline.\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"uote\",b=\"n\\nl\"} 7\n"
        );
    }
}
