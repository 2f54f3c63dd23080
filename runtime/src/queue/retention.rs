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
                Ok(deleted) => {
                    tracing::debug!(deleted, "finished jobs past their retention deleted")
                }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::tests::{never_delivered, routes, settings, spec, succeeding, until};
    use super::super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn a_finished_job_is_deleted_within_one_sweep_after_its_retention_never_before() {
        let settings = JobsSettings {
            retention: HOUR,
            retention_max_jobs: 0,
            retention_sweep: MINUTE,
            ..settings(1, 100)
        };
        let queue = Queue::open(settings, routes(), None).await.unwrap();
        // A job of priority 0 runs forever (one of the two workers); the others succeed.
        let executor = |run: Run| async move {
            if run.spec.priority == 0 {
                std::future::pending::<()>().await;
            }
            succeeding()
        };
        queue.start(Arc::new(executor), never_delivered());
        let old = queue.submit(spec(Some("order-1"))).await.unwrap().job;
        until(&queue, &old.id, |s| s == Status::Succeeded).await;
        let forever = JobSpec {
            priority: 0,
            ..spec(None)
        };
        let unfinished = queue.submit(forever).await.unwrap().job;
        until(&queue, &unfinished.id, |s| s == Status::Running).await;
        tokio::time::sleep(30 * MINUTE).await;
        let newer = queue.submit(spec(None)).await.unwrap().job;
        until(&queue, &newer.id, |s| s == Status::Succeeded).await;

        // Just short of an hour since it finished: every sweep so far kept it.
        tokio::time::sleep(30 * MINUTE - Duration::from_secs(2)).await;
        assert!(queue.get(&old.id, None).unwrap().is_some());
        // One sweep interval past the hour: gone, with its listing rows and its key.
        tokio::time::sleep(MINUTE + Duration::from_secs(3)).await;
        assert!(queue.get(&old.id, None).unwrap().is_none());
        let page = queue.list(ANONYMOUS, None, None, 10).unwrap().unwrap();
        let listed: Vec<&str> = page.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(listed, [newer.id.as_str(), unfinished.id.as_str()]);
        let again = queue.submit(spec(Some("order-1"))).await.unwrap();
        assert!(!again.existing, "the key was forgotten with its job");

        // The newer job goes an hour after it finished; a job never finished stays.
        tokio::time::sleep(30 * MINUTE + MINUTE).await;
        assert!(queue.get(&newer.id, None).unwrap().is_none());
        assert!(queue.get(&unfinished.id, None).unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_count_the_oldest_finished_jobs_go_and_a_pending_callback_keeps_its_job() {
        let settings = JobsSettings {
            retention: Duration::ZERO,
            retention_max_jobs: 2,
            retention_sweep: MINUTE,
            callback_secret: Some("s3cret".into()),
            ..settings(1, 100)
        };
        let queue = Queue::open(settings, routes(), None).await.unwrap();
        // The receiver never answers: the callback stays pending.
        let silent: Arc<dyn Deliver> =
            Arc::new(|_: Delivery| std::future::pending::<Result<(), DeliveryError>>());
        queue.start(Arc::new(|_: Run| async { succeeding() }), silent);
        let hooked = JobSpec {
            callback_url: Some("http://hooks.example.com/h".into()),
            ..spec(None)
        };
        let mut ids = vec![queue.submit(hooked).await.unwrap().job.id];
        for _ in 0..4 {
            let id = queue.submit(spec(None)).await.unwrap().job.id;
            until(&queue, &id, |s| s == Status::Succeeded).await;
            ids.push(id);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(MINUTE).await;
        let kept: Vec<bool> = ids
            .iter()
            .map(|id| queue.get(id, None).unwrap().is_some())
            .collect();
        assert_eq!(kept, [true, false, false, true, true]);
        // Nothing more goes while the count holds.
        tokio::time::sleep(10 * MINUTE).await;
        assert_eq!(
            queue
                .list(ANONYMOUS, None, None, 10)
                .unwrap()
                .unwrap()
                .jobs
                .len(),
            3
        );
    }
}
