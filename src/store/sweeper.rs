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
//!
//! With an object tier the budget counts the local disk only, and step 3 first deletes local
//! copies of files already uploaded (oldest upload first); only what that cannot free is taken
//! from the oldest media that has no object yet, which is logged as an error and counted
//! (`unuploaded_deleted_bytes`): see the policy in `object/mod.rs`.

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
    /// Bytes of local copies of uploaded files deleted for the budget (object tier only).
    pub local_copies_freed_bytes: u64,
    /// Bytes of media the budget deleted before it was uploaded (object tier only).
    pub unuploaded_deleted_bytes: u64,
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
            let freed = self.store.free_local_copies(need).await?;
            report.local_copies_freed_bytes = freed;
            let mut left = need.saturating_sub(freed);
            let mut cursor = (i64::MIN, i64::MIN, i64::MIN);
            let mut held = 0;
            while left > 0 {
                let b = self.store.expire_global_batch(left, cursor, batch).await?;
                report.by_disk_budget.add(b.expired);
                report.unuploaded_deleted_bytes += b.unuploaded_bytes;
                held += b.held;
                left = left.saturating_sub(b.expired.bytes);
                cursor = b.cursor;
                if !b.more {
                    break;
                }
            }
            report.held_kept += held;
            if report.unuploaded_deleted_bytes > 0 {
                self.store
                    .note_unuploaded_deleted(report.unuploaded_deleted_bytes);
                tracing::error!(
                    deleted_bytes = report.unuploaded_deleted_bytes,
                    "disk budget crossed while the object store is behind: deleted the oldest \
                     media before it was uploaded; check the object store (see /metrics \
                     tapedeck_object_upload_queue_files) or add local space"
                );
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{TestStore, T0_US};

    fn sweeper(ts: &TestStore, storage: StorageConfig) -> Sweeper {
        Sweeper {
            store: ts.store.clone(),
            retention: RetentionConfig::default(),
            storage,
            wake: Notify::new(),
            running: tokio::sync::Mutex::new(()),
            status: Mutex::new(SweepStatus::default()),
        }
    }

    async fn numbers(ts: &TestStore, stream_id: i64) -> Vec<i64> {
        let rows = ts
            .store
            .fragments_between(stream_id, 0, i64::MAX, 100)
            .await
            .unwrap();
        rows.iter().map(|r| r.number).collect()
    }

    /// `retention_hours` counts in server time, on the injected clock.
    #[tokio::test]
    async fn retention_hours_expire_by_server_time() {
        let ts = TestStore::new();
        let row = ts
            .store
            .create_stream("cam", 1, None, Default::default())
            .await
            .unwrap();
        let cam = ts.with_session(row).await;
        ts.append(&cam, 0, 1000, 100).await;
        ts.clock.advance_us(30 * 60 * 1_000_000);
        ts.append(&cam, 1000, 1000, 100).await;
        ts.clock.advance_us(45 * 60 * 1_000_000);
        let report = sweeper(&ts, ts.config.clone()).sweep().await.unwrap();
        assert_eq!(report.by_retention.fragments, 1);
        assert_eq!(numbers(&ts, cam.row.id).await, [2]);
    }

    /// A stream over its byte quota loses its oldest unheld fragments until it fits.
    #[tokio::test]
    async fn quota_frees_the_oldest_and_spares_holds() {
        let ts = TestStore::new();
        let row = ts
            .store
            .create_stream("cam", 72, Some(232), Default::default())
            .await
            .unwrap();
        let cam = ts.with_session(row).await;
        for i in 0..5 {
            ts.append(&cam, i * 1000, 1000, 100).await;
        }
        ts.store
            .add_hold(cam.row.id, T0_US + 1_000_000, T0_US + 2_000_000, "x".into())
            .await
            .unwrap();
        let report = sweeper(&ts, ts.config.clone()).sweep().await.unwrap();
        assert_eq!(report.by_stream_quota.fragments, 3);
        assert_eq!(report.held_kept, 1);
        assert_eq!(numbers(&ts, cam.row.id).await, [2, 5]);
        let s = ts.store.stream("cam").await.unwrap().unwrap();
        assert_eq!(s.total_bytes, 232);
    }

    /// Over the global byte budget, the oldest media across streams goes first.
    #[tokio::test]
    async fn global_budget_takes_the_oldest_across_streams() {
        let ts = TestStore::new();
        let a = ts.add_stream("a").await;
        let b = ts.add_stream("b").await;
        for i in 0..2 {
            ts.append(&a, i * 1000, 1000, 100).await;
            ts.clock.advance_us(1_000_000);
            ts.append(&b, i * 1000, 1000, 100).await;
            ts.clock.advance_us(1_000_000);
        }
        let storage = StorageConfig {
            max_bytes: Some(232),
            ..ts.config.clone()
        };
        let report = sweeper(&ts, storage).sweep().await.unwrap();
        assert!(report.over_budget);
        assert_eq!(report.by_disk_budget.fragments, 2);
        assert_eq!(report.budget_shortfall_bytes, 0);
        assert_eq!(numbers(&ts, a.row.id).await, [2]);
        assert_eq!(numbers(&ts, b.row.id).await, [2]);
    }

    /// When only held media is left over the budget, nothing held is deleted and the report
    /// says how far over it still is.
    #[tokio::test]
    async fn held_media_is_kept_over_budget_and_reported() {
        let ts = TestStore::new();
        let cam = ts.add_stream("cam").await;
        for i in 0..3 {
            ts.append(&cam, i * 1000, 1000, 100).await;
        }
        ts.store
            .add_hold(cam.row.id, T0_US, T0_US + 3_000_000, "all".into())
            .await
            .unwrap();
        let storage = StorageConfig {
            max_bytes: Some(100),
            ..ts.config.clone()
        };
        let s = sweeper(&ts, storage);
        let report = s.sweep().await.unwrap();
        assert_eq!(report.by_disk_budget.fragments, 0);
        assert_eq!(report.budget_shortfall_bytes, 348 - 100);
        assert!(report.held_only_over_budget);
        assert_eq!(numbers(&ts, cam.row.id).await, [1, 2, 3]);
        assert_eq!(s.status().sweeps, 1);
    }

    /// With an object tier the budget counts the local disk: it first deletes local copies of
    /// uploaded files (their media stays, read from the bucket), and only then the oldest media
    /// not yet uploaded, which it counts as lost before upload.
    #[tokio::test]
    async fn budget_frees_uploaded_copies_before_unuploaded_media() {
        let ts = TestStore::with_config(StorageConfig {
            // 116-byte fragments: every fragment gets a file of its own.
            file_roll_bytes: 100,
            min_free_bytes: Some(0),
            object: Some(crate::store::object::testing_config()),
            ..StorageConfig::default()
        });
        let cam = ts.add_stream("cam").await;
        let mut rows = Vec::new();
        for i in 0..4 {
            rows.push(ts.append(&cam, i * 1000, 1000, 100).await);
        }
        let uploaded = [rows[0].file_id, rows[1].file_id];
        crate::store::object::mark_uploaded_for_test(&ts.store, &uploaded).await;
        let storage = StorageConfig {
            max_bytes: Some(116),
            ..ts.config.clone()
        };
        let s = sweeper(&ts, storage);
        let report = s.sweep().await.unwrap();
        assert_eq!(report.local_copies_freed_bytes, 232);
        assert_eq!(report.by_disk_budget.fragments, 1);
        assert_eq!(report.unuploaded_deleted_bytes, 116);
        assert_eq!(
            numbers(&ts, cam.row.id).await,
            [1, 2, 4],
            "remote-only media stays"
        );
        assert!(!ts.file_of(&rows[0]).exists() && !ts.file_of(&rows[1]).exists());
        let stream = ts.store.stream("cam").await.unwrap().unwrap();
        assert_eq!((stream.local_bytes(), stream.remote_bytes), (116, 232));
        assert_eq!(ts.store.used_bytes().await.unwrap(), 116);
        assert_eq!(
            ts.store
                .object_stats()
                .unwrap()
                .unuploaded_deleted_bytes_total,
            116
        );
        // Its only copy is in a bucket that cannot be reached: Unavailable (503), not lost.
        let err = ts.store.fragment_bytes(&rows[0]).await.unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Unavailable, "{err:?}");
    }
}
