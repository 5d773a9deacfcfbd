//! `GET /metrics`: Prometheus text exposition of what the server is doing.

use super::AppState;
use crate::error::Result;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;

/// Escapes a label value (stream names are `[A-Za-z0-9_.-]`, so this is belt and braces).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let mut out = String::new();
    let g = state.store.group_stats();
    metric(
        &mut out,
        "tapedeck_commit_groups_total",
        "counter",
        "Commit groups made durable.",
        g.groups,
    );
    metric(
        &mut out,
        "tapedeck_fragments_committed_total",
        "counter",
        "Fragments acknowledged.",
        g.fragments,
    );
    metric(
        &mut out,
        "tapedeck_sync_seconds_total",
        "counter",
        "Time spent making commit groups durable.",
        g.sync_us_total as f64 / 1e6,
    );
    let sweep = state.sweeper.status();
    metric(
        &mut out,
        "tapedeck_retention_sweeps_total",
        "counter",
        "Retention sweeps run.",
        sweep.sweeps,
    );
    metric(
        &mut out,
        "tapedeck_retention_deleted_fragments_total",
        "counter",
        "Fragments removed by retention, quotas and the disk budget.",
        sweep.expired_total.fragments,
    );
    metric(
        &mut out,
        "tapedeck_retention_deleted_bytes_total",
        "counter",
        "Bytes removed by retention, quotas and the disk budget.",
        sweep.expired_total.bytes,
    );
    metric(
        &mut out,
        "tapedeck_retention_deleted_files_total",
        "counter",
        "Fragment files removed.",
        sweep.expired_total.files,
    );
    let last = sweep.last.unwrap_or_default();
    metric(
        &mut out,
        "tapedeck_disk_budget_crossed",
        "gauge",
        "1 when the last sweep found the disk budget crossed.",
        u8::from(last.over_budget),
    );
    metric(
        &mut out,
        "tapedeck_disk_budget_held_only",
        "gauge",
        "1 when the disk budget is still crossed and only held media is left.",
        u8::from(last.held_only_over_budget),
    );
    metric(
        &mut out,
        "tapedeck_disk_free_bytes",
        "gauge",
        "Free space on the data disk at the last sweep.",
        last.disk_free_bytes,
    );
    let streams = state.store.list_streams(None, None, 100_000).await?;
    let _ = writeln!(
        out,
        "# HELP tapedeck_stream_bytes Bytes stored per stream.\n# TYPE tapedeck_stream_bytes gauge"
    );
    for s in &streams {
        let _ = writeln!(
            out,
            "tapedeck_stream_bytes{{stream=\"{}\"}} {}",
            label(&s.name),
            s.total_bytes
        );
    }
    let _ = writeln!(
        out,
        "# HELP tapedeck_stream_fragments Fragments stored per stream.\n# TYPE tapedeck_stream_fragments gauge"
    );
    for s in &streams {
        let _ = writeln!(
            out,
            "tapedeck_stream_fragments{{stream=\"{}\"}} {}",
            label(&s.name),
            s.fragment_count
        );
    }
    let _ = writeln!(
        out,
        "# HELP tapedeck_stream_producer_connected 1 while a producer sends to the stream.\n# TYPE tapedeck_stream_producer_connected gauge"
    );
    for s in &streams {
        let _ = writeln!(
            out,
            "tapedeck_stream_producer_connected{{stream=\"{}\"}} {}",
            label(&s.name),
            u8::from(state.ingest.is_connected(&s.name))
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
