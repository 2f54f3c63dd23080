//! The moving parts: recovery at start, the worker pool, one attempt from start to end, the
//! callback loop and the metrics ticker (the retention sweep is `retention`'s).
//!
//! An attempt is marked running in the store before it starts and its outcome written after
//! it ends; a crash in between leaves it running, which the next start turns back into
//! queued (at-least-once) and counts as a duplicate execution.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::job::{Attempt, Callback, CallbackState, Job, Status};
use super::schedule::Pick;
use super::store::Write;
use super::{
    Deliver, Delivery, DeliveryError, Executor, Failure, Outcome, Queue, Run, StoreError, Verdict,
    entry_of,
};

/// How often the queue gauges are refreshed.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// Callback deliveries in flight at once.
const MAX_DELIVERIES: usize = 16;

/// Route concurrency for a job whose route no longer takes jobs (it was stored before a
/// config change): it runs one at a time, and fails if the route is gone.
const UNKNOWN_ROUTE_CONCURRENCY: u32 = 1;

/// The error kept for an attempt the host stopped in the middle of.
const CUT_OFF: &str = "the host stopped during this attempt; it runs again (at-least-once)";

impl Queue {
    /// Turns what the store holds into the schedule (see [`Queue::open`]).
    pub(super) async fn recover(&self, live: Vec<Job>) -> Result<(), StoreError> {
        let max_attempts = self.inner.settings.max_attempts;
        let now_ms = self.inner.clock.now_ms();
        let mut writes = Vec::new();
        let mut duplicates = 0;
        let mut jobs = Vec::with_capacity(live.len());
        for mut job in live {
            if job.status == Status::Running {
                duplicates += 1;
                job.duplicate_executions += 1;
                if let Some(last) = job.attempts.last_mut()
                    && last.finished_ms.is_none()
                {
                    last.error = Some(CUT_OFF.to_string());
                }
                if job.attempts_in_run() >= max_attempts {
                    job.status = Status::Dead;
                    job.finished_ms = Some(now_ms);
                    self.callback_due(&mut job, now_ms);
                } else {
                    job.status = Status::Queued;
                }
                writes.push(Write::Put(job.clone()));
            }
            jobs.push(job);
        }
        if duplicates > 0 {
            writes.push(Write::AddDuplicates(duplicates));
            self.inner.store.write(writes).await?;
            self.inner
                .duplicates
                .fetch_add(duplicates, Ordering::Relaxed);
            metrics::counter!("weir_jobs_duplicate_executions_total").increment(duplicates);
            tracing::warn!(
                jobs = duplicates,
                "jobs were running when the host stopped; they run again (at-least-once)"
            );
        }
        let mut schedule = self.schedule();
        for job in &jobs {
            if job.status == Status::Queued {
                let due = job
                    .next_attempt_ms
                    .map(|at| self.inner.clock.instant_of(at));
                schedule.add(job.id.clone(), entry_of(job), due);
            }
            if let Some(callback) = &job.callback
                && callback.state == CallbackState::Pending
            {
                let due = self
                    .inner
                    .clock
                    .instant_of(callback.next_ms.unwrap_or(now_ms));
                schedule.callbacks.insert((due, job.seq), job.id.clone());
            }
        }
        let (queued, waiting, _) = schedule.counts();
        if queued + waiting > 0 {
            tracing::info!(queued, waiting, "job queue recovered");
        }
        Ok(())
    }

    /// Starts the workers, the callback loop, the retention sweep and the metrics ticker.
    /// With the jobs on the fleet's Redis, starts this node's dispatcher instead (see
    /// `fleet`).
    pub fn start(&self, executor: Arc<dyn Executor>, deliver: Arc<dyn Deliver>) {
        if self.fleet().is_some() {
            self.start_fleet(executor, deliver);
            return;
        }
        for _ in 0..self.inner.settings.workers {
            let queue = self.clone();
            let executor = executor.clone();
            tokio::spawn(async move { queue.work(&*executor).await });
        }
        let queue = self.clone();
        tokio::spawn(async move { queue.deliver_callbacks(deliver).await });
        let queue = self.clone();
        tokio::spawn(async move { queue.retain().await });
        let queue = self.clone();
        tokio::spawn(async move {
            loop {
                queue.export_metrics();
                tokio::time::sleep(METRICS_INTERVAL).await;
            }
        });
    }

    /// One worker: takes the best runnable job, runs an attempt, repeats; sleeps until a job
    /// is submitted, a slot frees or a retry falls due.
    async fn work(&self, executor: &dyn Executor) {
        loop {
            let woken = self.inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            let limits = &self.inner.limits;
            let pick = self.schedule().pick(Instant::now(), |route| {
                limits
                    .get(route)
                    .copied()
                    .unwrap_or(UNKNOWN_ROUTE_CONCURRENCY)
            });
            match pick {
                Pick::Run(id, route) => {
                    self.attempt(executor, &id, &route).await;
                    self.inner.idle.notify_waiters();
                }
                Pick::Wait(Some(due)) => {
                    tokio::select! {
                        () = &mut woken => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                Pick::Wait(None) => woken.await,
            }
        }
    }

    /// One attempt of job `id`, which the schedule has marked running.
    async fn attempt(&self, executor: &dyn Executor, id: &str, route: &str) {
        let store = &self.inner.store;
        let started = {
            let _job_lock = store.lock(id).await;
            match store.get(id) {
                Ok(Some(mut job)) if job.status == Status::Queued => {
                    job.status = Status::Running;
                    job.next_attempt_ms = None;
                    job.attempts.push(Attempt {
                        started_ms: self.inner.clock.now_ms(),
                        ..Attempt::default()
                    });
                    match store.put(job.clone()).await {
                        Ok(()) => Ok(job),
                        Err(err) => Err(err.to_string()),
                    }
                }
                Ok(Some(job)) => Err(format!("is {}, not queued", job.status.as_str())),
                Ok(None) => Err("is not in the store".to_string()),
                Err(err) => Err(err.to_string()),
            }
        };
        let mut job = match started {
            Ok(job) => job,
            Err(reason) => {
                tracing::error!(job = id, %reason, "cannot start the job; it is left aside");
                self.schedule().finish(id, route, None, Instant::now());
                self.inner.wake.notify_waiters();
                return;
            }
        };
        let attempt = job.attempts.len() as u32;
        let outcome = executor
            .run(Run {
                id: id.to_string(),
                attempt,
                spec: job.spec.clone(),
            })
            .await;
        let retry_at = self.settle(&mut job, outcome);
        {
            let _job_lock = store.lock(id).await;
            if let Err(err) = store.put(job.clone()).await {
                // The store still says running: the attempt runs again at the next start.
                tracing::error!(job = id, error = %err, "cannot record the job's outcome");
            }
        }
        let now = Instant::now();
        let mut schedule = self.schedule();
        schedule.finish(id, route, retry_at, now);
        if let Some(callback) = &job.callback
            && callback.state == CallbackState::Pending
        {
            schedule.callbacks.insert((now, job.seq), id.to_string());
            self.inner.callbacks_wake.notify_one();
        }
        drop(schedule);
        self.inner.wake.notify_waiters();
    }

    /// Records `outcome` in `job` and decides what follows: `Some(when)` to retry, `None`
    /// when the job has ended.
    pub(super) fn settle(&self, job: &mut Job, outcome: Outcome) -> Option<Instant> {
        let now_ms = self.inner.clock.now_ms();
        if let Some(last) = job.attempts.last_mut() {
            last.finished_ms = Some(now_ms);
            last.status = Some(outcome.status);
            last.error = outcome.error.clone();
            last.cost_pico = outcome.cost_pico;
        }
        if outcome.body.is_some() {
            job.response = outcome.body;
            job.response_status = Some(outcome.status);
        }
        let status = match outcome.verdict {
            Verdict::Succeeded => Status::Succeeded,
            Verdict::Fail => Status::Failed,
            Verdict::Retry if job.attempts_in_run() >= self.inner.settings.max_attempts => {
                Status::Dead
            }
            Verdict::Retry => {
                let retry = job.attempts_in_run().saturating_sub(1);
                let mut delay = self.backoff().delay(retry, (self.inner.jitter)());
                if let Some(asked) = outcome.retry_after {
                    delay = delay.max(asked.min(self.inner.settings.backoff_max));
                }
                job.status = Status::Queued;
                job.next_attempt_ms = Some(now_ms + delay.as_millis() as u64);
                metrics::counter!("weir_jobs_retries_total").increment(1);
                return Some(Instant::now() + delay);
            }
        };
        job.status = status;
        job.finished_ms = Some(now_ms);
        metrics::counter!("weir_jobs_total", "outcome" => status.as_str()).increment(1);
        self.callback_due(job, now_ms);
        None
    }

    /// Marks an ended job's callback as due now, when it has one.
    fn callback_due(&self, job: &mut Job, now_ms: u64) {
        if job.spec.callback_url.is_some() {
            job.callback = Some(Callback {
                state: CallbackState::Pending,
                attempts: 0,
                last_error: None,
                delivered_ms: None,
                next_ms: Some(now_ms),
            });
        }
    }

    /// Delivers due callbacks, at most [`MAX_DELIVERIES`] at once.
    async fn deliver_callbacks(&self, deliver: Arc<dyn Deliver>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_DELIVERIES));
        loop {
            let woken = self.inner.callbacks_wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let now = Instant::now();
            let (due, next) = {
                let mut schedule = self.schedule();
                let mut due = Vec::new();
                while let Some(entry) = schedule.callbacks.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    due.push(entry.remove());
                }
                let next = schedule.callbacks.first_key_value().map(|(k, _)| k.0);
                (due, next)
            };
            for id in due {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let queue = self.clone();
                let deliver = deliver.clone();
                tokio::spawn(async move {
                    queue.deliver_one(&*deliver, &id).await;
                    drop(slot);
                });
            }
            match next {
                Some(next) => {
                    tokio::select! {
                        () = &mut woken => {}
                        () = tokio::time::sleep_until(next) => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    /// One delivery of job `id`'s callback, and what follows from it.
    async fn deliver_one(&self, deliver: &dyn Deliver, id: &str) {
        let store = &self.inner.store;
        let job = match store.get(id) {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(err) => {
                tracing::error!(job = id, error = %err, "cannot read the job for its callback");
                return;
            }
        };
        let Some(result) = self.send_callback(deliver, &job).await else {
            return;
        };
        let _job_lock = store.lock(id).await;
        let mut job = match store.get(id) {
            Ok(Some(job)) => job,
            _ => return,
        };
        let Some(again) = self.note_delivery(&mut job, result) else {
            return;
        };
        if let Err(err) = store.put(job.clone()).await {
            tracing::error!(job = id, error = %err, "cannot record the callback delivery");
        }
        if let Some(at) = again {
            self.schedule()
                .callbacks
                .insert((at, job.seq), id.to_string());
            self.inner.callbacks_wake.notify_one();
        }
    }

    /// Delivers `job`'s pending callback once; `None` when it has none pending.
    pub(super) async fn send_callback(
        &self,
        deliver: &dyn Deliver,
        job: &Job,
    ) -> Option<Result<(), DeliveryError>> {
        let (Some(url), Some(callback)) = (job.spec.callback_url.clone(), job.callback.as_ref())
        else {
            return None;
        };
        if callback.state != CallbackState::Pending {
            return None;
        }
        Some(match &self.inner.settings.callback_secret {
            Some(secret) => {
                let body = bytes::Bytes::from(crate::openai::to_bytes(&super::job_json(job)));
                let now_s = self.inner.clock.now_ms() / 1000;
                let signature = super::sign(secret.as_bytes(), now_s, &body);
                deliver
                    .deliver(Delivery {
                        url,
                        body,
                        signature,
                        timeout: self.inner.settings.callback_timeout,
                    })
                    .await
            }
            None => Err(DeliveryError::new(
                Failure::NotConfigured,
                "no jobs.callback_secret_env is configured to sign it",
            )),
        })
    }

    /// Records a delivery's `result` in `job`'s callback: `None` when it has no callback,
    /// `Some(Some(when))` when it is to be delivered again then.
    pub(super) fn note_delivery(
        &self,
        job: &mut Job,
        result: Result<(), DeliveryError>,
    ) -> Option<Option<Instant>> {
        let id = job.id.clone();
        let callback = job.callback.as_mut()?;
        callback.attempts += 1;
        let now_ms = self.inner.clock.now_ms();
        let mut again = None;
        match result {
            Ok(()) => {
                callback.state = CallbackState::Delivered;
                callback.delivered_ms = Some(now_ms);
                callback.next_ms = None;
                metrics::counter!("weir_jobs_callbacks_total", "outcome" => "delivered")
                    .increment(1);
            }
            Err(err) => {
                // The detail is for the log only: the submitter sees the class (see
                // `delivery`).
                tracing::warn!(
                    job = id,
                    attempt = callback.attempts,
                    class = err.class.as_str(),
                    error = %err.detail,
                    "callback delivery failed"
                );
                callback.last_error = Some(err.class.as_str().to_string());
                if callback.attempts >= self.inner.settings.callback_max_attempts {
                    callback.state = CallbackState::Failed;
                    callback.next_ms = None;
                    metrics::counter!("weir_jobs_callbacks_total", "outcome" => "failed")
                        .increment(1);
                } else {
                    let delay = self
                        .backoff()
                        .delay(callback.attempts - 1, (self.inner.jitter)());
                    callback.next_ms = Some(now_ms + delay.as_millis() as u64);
                    again = Some(Instant::now() + delay);
                    metrics::counter!("weir_jobs_callbacks_total", "outcome" => "retried")
                        .increment(1);
                }
            }
        }
        Some(again)
    }

    /// Sets the queue gauges.
    pub(super) fn export_metrics(&self) {
        let stats = self.stats();
        metrics::gauge!("weir_jobs_queued").set((stats.queued + stats.waiting) as f64);
        metrics::gauge!("weir_jobs_running").set(stats.running as f64);
        metrics::gauge!("weir_jobs_oldest_age_seconds").set(stats.oldest_queued_age_s as f64);
    }
}
