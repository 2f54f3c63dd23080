//! Retention: a periodic sweep, off the request path, deletes finished jobs (succeeded,
//! failed, dead or cancelled, with no callback still to deliver) once they are older than
//! `jobs.retention_ms`, and the oldest beyond the newest `jobs.retention_max_jobs`, with
//! their index rows and idempotency keys.
//!
//! Why a sweep rather than a check at each write: the retention index lists finished jobs by
//! when they finished, so a sweep reads only the rows it deletes, in batches that each commit
//! in one transaction; nothing on the submission or listing path pays for it.
//!
//! A dead job retried while the sweep deletes it is decided by the store: the deletion
//! applies only if the record is still the one the index listed, and a retry that read the
//! job before the deletion writes it back whole (it runs again, without its idempotency key).

use super::Queue;
use super::store::{StoreError, Write, Written};

/// Jobs one transaction of the sweep deletes at most.
const SWEEP_BATCH: usize = 256;

impl Queue {
    /// Runs the sweep now and then every `jobs.retention_sweep_ms`, for as long as the queue
    /// lives.
    pub(super) async fn retain(&self) {
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(deleted) => tracing::debug!(deleted, "finished jobs past their retention deleted"),
                Err(err) => tracing::error!(error = %err, "the retention sweep failed"),
            }
            tokio::time::sleep(self.inner.settings.retention_sweep).await;
        }
    }

    /// Deletes every finished job past its retention now; returns how many.
    pub(super) async fn sweep(&self) -> Result<usize, StoreError> {
        let settings = &self.inner.settings;
        let keep = (settings.retention_max_jobs > 0).then_some(settings.retention_max_jobs);
        let age = (!settings.retention.is_zero()).then_some(settings.retention);
        if keep.is_none() && age.is_none() {
            return Ok(0);
        }
        let mut deleted = 0;
        loop {
            let cutoff = age.map(|age| {
                let age = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                self.inner.clock.now_ms().saturating_sub(age)
            });
            let due = self.inner.store.retirable(cutoff, keep, SWEEP_BATCH)?;
            let full = due.len() == SWEEP_BATCH;
            if due.is_empty() {
                break;
            }
            let writes = due
                .into_iter()
                .map(|(id, seq, at)| Write::Retire { id, seq, at })
                .collect();
            let done = self.inner.store.write(writes).await?;
            let removed = done.iter().filter(|w| **w == Written::Done).count();
            metrics::counter!("weir_jobs_deleted_total").increment(removed as u64);
            deleted += removed;
            if !full {
                break;
            }
            // Other writers get their turn between two batches.
            tokio::task::yield_now().await;
        }
        Ok(deleted)
    }
}
