//! The retention sweeper: a background task that expires media by stream retention (server
//! time), per-stream byte quotas and the global disk budget, at an interval and on demand.
//!
//! Order of deletion, each pass:
//! 1. per stream (by stream id): fragments made durable longer ago than its `retention_hours`
//!    (a live-only stream, `retention_hours = 0`, keeps `retention.live_buffer_secs`);
//! 2. per stream with `retention_bytes`: its oldest fragments until it fits its quota;
//! 3. global: while the streams hold more than `storage.max_bytes`, or the data disk has less
//!    free space than `storage.min_free_bytes` (default 5 % of the disk), the oldest fragments
//!    across all streams, ordered by server time, then stream id, then fragment number.
//!
//! Held fragments are skipped at every step; when only held media is left and the budget is
//! still crossed, the sweeper says so (log warning, status, describe) instead of deleting it.

use super::retention::{Expired, StreamExpiry};
use super::Store;
use crate::config::{RetentionConfig, StorageConfig};
use crate::error::Result;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    pub started: String,
    pub duration_ms: u64,
    pub by_retention: Expired,
    pub by_stream_quota: Expired,
    pub by_disk_budget: Expired,
    /// Fragments kept because a hold covers them (examined while expiring).
    pub held_kept: u64,
    pub used_bytes: u64,
    pub disk_free_bytes: u64,
    /// The disk budget was crossed at the start of the pass.
    pub over_budget: bool,
    /// Bytes the budget still wanted freed when nothing deletable was left.
    pub budget_shortfall_bytes: u64,
    /// The budget is still crossed and only held media is left to delete.
    pub held_only_over_budget: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepStatus {
    pub sweeps: u64,
    pub expired_total: Expired,
    /// `expired_total` split by what expired it, as the reports split it.
    pub expired_by_retention: Expired,
    pub expired_by_stream_quota: Expired,
    pub expired_by_disk_budget: Expired,
    pub last: Option<SweepReport>,
}

pub struct Sweeper {
    store: Store,
    retention: RetentionConfig,
    storage: StorageConfig,
    wake: Notify,
    running: tokio::sync::Mutex<()>,
    status: Mutex<SweepStatus>,
}

/// (total, free) bytes of the filesystem holding `dir`.
fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    super::files::disk_space(dir).map(|d| (d.total_bytes, d.free_bytes))
}

impl Sweeper {
    /// Starts the periodic sweeper; it stops with `shutdown`.
    pub fn spawn(
        store: Store,
        retention: RetentionConfig,
        storage: StorageConfig,
        shutdown: CancellationToken,
    ) -> Arc<Sweeper> {
        let sweeper = Arc::new(Sweeper {
            store,
            retention,
            storage,
            wake: Notify::new(),
            running: tokio::sync::Mutex::new(()),
            status: Mutex::new(SweepStatus::default()),
        });
        let s = sweeper.clone();
        tokio::spawn(async move {
            let interval = Duration::from_secs(s.retention.sweep_interval_secs);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                    _ = s.wake.notified() => {}
                }
                if let Err(e) = s.sweep().await {
                    tracing::warn!(error = %e, "retention sweep failed; retried next interval");
                }
            }
        });
        sweeper
    }

    /// Asks for a sweep now (after a retention decrease).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn status(&self) -> SweepStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// One full pass. Passes never overlap.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let _one_at_a_time = self.running.lock().await;
        let started = Instant::now();
        let now = self.store.now_us();
        let batch = self.retention.batch_rows;
        let mut report = SweepReport {
            started: crate::timefmt::format_us(now),
            ..Default::default()
        };
        for (stream_id, name, hours, quota, _) in self.store.retention_settings().await? {
            let keep_us = if hours == 0 {
                self.retention.live_buffer_secs as i64 * 1_000_000
            } else {
                (hours as i64).saturating_mul(3_600_000_000)
            };
            let what = StreamExpiry::OlderThan {
                cutoff_server_us: now.saturating_sub(keep_us),
            };
            let mut cursor = 0;
            loop {
                let b = self
                    .store
                    .expire_stream_batch(stream_id, what, cursor, batch)
                    .await?;
                report.by_retention.add(b.expired);
                report.held_kept += b.held;
                cursor = b.cursor;
                if !b.more {
                    break;
                }
            }
            if let Some(quota) = quota.filter(|q| *q > 0) {
                let total = self
                    .store
                    .stream(&name)
                    .await?
                    .map_or(0, |s| s.total_bytes.max(0) as u64);
                let mut over = total.saturating_sub(quota);
                let mut cursor = 0;
                while over > 0 {
                    let b = self
                        .store
                        .expire_stream_batch(
                            stream_id,
                            StreamExpiry::FreeBytes { bytes: over },
                            cursor,
                            batch,
                        )
                        .await?;
                    report.by_stream_quota.add(b.expired);
                    report.held_kept += b.held;
                    over = over.saturating_sub(b.expired.bytes);
                    cursor = b.cursor;
                    if !b.more {
                        break;
                    }
                }
                if over > 0 {
                    tracing::warn!(stream = %name, over_bytes = over, "stream is over its byte quota and only held media is left");
                }
            }
        }
        let used = self.store.used_bytes().await?;
        let (disk_total, disk_free) = disk_space(self.store.data_dir()).unwrap_or((0, u64::MAX));
        let min_free = self.storage.min_free_bytes.unwrap_or(disk_total / 20);
        let need = self
            .storage
            .max_bytes
            .map_or(0, |m| used.saturating_sub(m))
            .max(min_free.saturating_sub(disk_free));
        report.used_bytes = used;
        report.disk_free_bytes = disk_free;
        if need > 0 {
            report.over_budget = true;
            let mut left = need;
            let mut cursor = (i64::MIN, i64::MIN, i64::MIN);
            let mut held = 0;
            while left > 0 {
                let b = self.store.expire_global_batch(left, cursor, batch).await?;
                report.by_disk_budget.add(b.expired);
                held += b.held;
                left = left.saturating_sub(b.expired.bytes);
                cursor = b.cursor;
                if !b.more {
                    break;
                }
            }
            report.held_kept += held;
            tracing::warn!(
                used_bytes = used,
                disk_free_bytes = disk_free,
                freed_bytes = need - left,
                "disk budget crossed: deleted the oldest media across streams"
            );
            if left > 0 {
                report.budget_shortfall_bytes = left;
                report.held_only_over_budget = held > 0;
                tracing::error!(
                    shortfall_bytes = left,
                    held_fragments = held,
                    "disk budget still crossed and only held media is left: remove holds or add space"
                );
            }
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        let total = {
            let mut r = report.by_retention;
            r.add(report.by_stream_quota);
            r.add(report.by_disk_budget);
            r
        };
        if total.fragments > 0 {
            tracing::info!(
                fragments = total.fragments,
                bytes = total.bytes,
                files = total.files,
                ms = report.duration_ms,
                "retention sweep"
            );
        }
        if let Ok(mut s) = self.status.lock() {
            s.sweeps += 1;
            s.expired_total.add(total);
            s.expired_by_retention.add(report.by_retention);
            s.expired_by_stream_quota.add(report.by_stream_quota);
            s.expired_by_disk_budget.add(report.by_disk_budget);
            s.last = Some(report.clone());
        }
        Ok(report)
    }
}
