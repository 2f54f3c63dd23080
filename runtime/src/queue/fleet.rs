//! The queue on the fleet's Redis (`[state] backend = "redis"`): the same API as the local
//! store, with jobs held in Redis (`state::jobs` owns the keys and scripts) so that any node
//! takes them and answers for them.
//!
//! What differs from the local store, and why:
//! - `POST /v1/jobs` is acknowledged once the enqueue script has returned (durable as far as
//!   Redis is: run it with `appendonly yes`); with Redis unavailable it answers 503
//!   `state_unavailable` with a `Retry-After`, since nothing could be acknowledged durably.
//! - A node claims a job atomically (exactly one node runs it), renews the claim every
//!   `jobs.reclaim_idle_ms / 3` while it runs (a long job is never taken from a live node),
//!   and a claim that lapses (the node died) is taken over by the next node that looks: the
//!   job runs again, counted as a duplicate execution (at-least-once).
//! - An attempt's end is written with the claim's token, retried until Redis answers; the
//!   claim is renewed meanwhile.
//! - `max_queued` and `max_queued_per_key` bound the fleet (counters kept by the scripts);
//!   route concurrency and `workers` stay per node; the `Retry-After` of a full queue is
//!   [`super::DEFAULT_RETRY_AFTER_S`] (no fleet-wide drain rate is kept), and
//!   `drained_last_minute` and `oldest_queued_age_s` count this node's view only.
//! - Finished jobs expire after `jobs.retention_ms` (a TTL: `retention_max_jobs` does not
//!   apply). Callbacks are delivered by the node that ran the attempt (see
//!   [`Queue::fleet_callback`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::job::{Attempt, CallbackState, Job, Status};
use super::{
    ANONYMOUS, ChangeError, DEFAULT_RETRY_AFTER_S, Deliver, Executor, Page, Queue, Run, Stats,
    StoreError, SubmitError, Submitted,
};
use crate::state::jobs::{
    Changed, Counts, Ending, Enqueued, Finished, Jobs, MAX_LIST_SCAN, NewJob, Record, Taken,
};
use crate::state::{Shared, StateError};

/// How often an idle node looks for work (a submission to this node wakes it at once).
const POLL: Duration = Duration::from_millis(100);
/// How long a node waits after a failed take before it looks again.
const POLL_AFTER_ERROR: Duration = Duration::from_millis(500);
/// How long an attempt's end waits between writes while Redis does not answer.
const FINISH_RETRY: Duration = Duration::from_millis(500);
/// How long a lost take's job is tried to be put back, at least ([`Queue::untake_later`]);
/// `jobs::TAKE` keeps what it claimed for this long after the claim's life.
const UNTAKE_FOR: Duration = Duration::from_secs(60);
/// How often the fleet counters are read for `stats` and the metrics.
const COUNTS_PERIOD: Duration = Duration::from_secs(1);
/// The error kept for an attempt whose node stopped answering for its claim.
const TAKEN_OVER: &str =
    "the node running this attempt stopped renewing its claim; it runs again (at-least-once)";

/// The queue's side of the fleet backend.
pub(super) struct Fleet {
    /// The connection.
    pub(super) shared: Arc<Shared>,
    /// The fleet counters, as last read.
    counts: std::sync::Mutex<Counts>,
    /// Route → this node's attempts of it running.
    running: std::sync::Mutex<HashMap<String, u32>>,
    /// When this node's attempts ended, within the last minute.
    drained: std::sync::Mutex<std::collections::VecDeque<Instant>>,
}

impl Fleet {
    /// The fleet backend on `shared`.
    pub(super) fn new(shared: Arc<Shared>) -> Fleet {
        Fleet {
            shared,
            counts: std::sync::Mutex::default(),
            running: std::sync::Mutex::default(),
            drained: std::sync::Mutex::default(),
        }
    }

    fn jobs(&self) -> Jobs<'_> {
        Jobs::new(&self.shared.redis)
    }

    /// This node's attempts running.
    pub(super) fn running_here(&self) -> usize {
        crate::sync::lock(&self.running)
            .values()
            .map(|n| *n as usize)
            .sum()
    }
}

/// A store error for a Redis failure on a read: unavailable (503, retry later).
fn store_error(err: StateError) -> StoreError {
    StoreError {
        path: "redis".into(),
        message: err.to_string(),
        unavailable: true,
    }
}

/// The job a [`Record`] holds: its JSON, with the fields the scripts keep laid over it.
fn job_of(id: &str, record: Record) -> Result<Job, StoreError> {
    let mut job: Job = serde_json::from_str(&record.rec).map_err(|e| StoreError {
        path: "redis".into(),
        message: format!("job {id} is unreadable: {e}"),
        unavailable: false,
    })?;
    if let Some(status) = Status::parse(&record.status) {
        job.status = status;
    }
    job.seq = record.seq;
    job.duplicate_executions = record.dup;
    job.superseded_cost_pico = record.late;
    if job.status.is_terminal() && job.finished_ms.is_none() {
        job.finished_ms = record.fin;
    }
    Ok(job)
}

fn rec_of(job: &Job) -> Result<String, StoreError> {
    serde_json::to_string(job).map_err(|e| StoreError {
        path: "redis".into(),
        message: e.to_string(),
        unavailable: false,
    })
}

impl Queue {
    /// The fleet backend, when jobs live on Redis.
    pub(super) fn fleet(&self) -> Option<&Fleet> {
        self.inner.fleet.as_ref()
    }

    /// The per-key bound as the scripts take it (0: none, for the anonymous owner).
    fn per_key_bound(&self, owner: &str) -> u32 {
        if owner == ANONYMOUS {
            0
        } else {
            self.inner.settings.max_queued_per_key.max(1)
        }
    }

    fn retention_ms(&self) -> u64 {
        self.inner.settings.retention.as_millis() as u64
    }

    /// [`Queue::submit`] on Redis.
    pub(super) async fn fleet_submit(
        &self,
        fleet: &Fleet,
        job: Job,
    ) -> Result<Submitted, SubmitError> {
        let rec = rec_of(&job)?;
        let spec = &job.spec;
        let enqueued = fleet
            .jobs()
            .enqueue(
                &NewJob {
                    id: &job.id,
                    owner: &spec.owner,
                    idem: spec.idempotency_key.as_deref(),
                    route: &spec.route,
                    priority: spec.priority,
                    rec: &rec,
                },
                self.inner.settings.max_queued,
                self.per_key_bound(&spec.owner),
            )
            .await
            .map_err(|err| {
                // The policy while Redis is away: refuse (503), nothing acknowledged.
                metrics::counter!("weir_state_fallbacks_total", "feature" => "jobs").increment(1);
                SubmitError::State(err)
            })?;
        match enqueued {
            Enqueued::New(seq) => {
                self.inner.wake.notify_waiters();
                Ok(Submitted {
                    job: Job { seq, ..job },
                    existing: false,
                })
            }
            Enqueued::Existing(id) => {
                let existing = self
                    .fleet_get(fleet, &id, None)
                    .await
                    .map_err(SubmitError::Store)?
                    .ok_or_else(|| StoreError {
                        path: "redis".into(),
                        message: format!("idempotency key names a missing job {id}"),
                        unavailable: false,
                    })?;
                Ok(Submitted {
                    job: existing,
                    existing: true,
                })
            }
            Enqueued::Full(depth) => {
                metrics::counter!("weir_jobs_rejected_total").increment(1);
                Err(SubmitError::Full {
                    depth: depth as usize,
                    max: self.inner.settings.max_queued,
                    retry_after_s: DEFAULT_RETRY_AFTER_S,
                })
            }
            Enqueued::KeyFull(depth) => {
                metrics::counter!("weir_jobs_rejected_total").increment(1);
                Err(SubmitError::KeyFull {
                    depth: depth as usize,
                    max: self.inner.settings.max_queued_per_key,
                    retry_after_s: DEFAULT_RETRY_AFTER_S,
                })
            }
        }
    }

    /// [`Queue::find`] on Redis.
    pub(super) async fn fleet_get(
        &self,
        fleet: &Fleet,
        id: &str,
        owner: Option<&str>,
    ) -> Result<Option<Job>, StoreError> {
        let Some(record) = fleet.jobs().get(id).await.map_err(store_error)? else {
            return Ok(None);
        };
        if owner.is_some_and(|o| o != record.owner) {
            return Ok(None);
        }
        job_of(id, record).map(Some)
    }

    /// [`Queue::page`] on Redis: reads the owner's index newest first, skipping jobs of
    /// another status, at most [`MAX_LIST_SCAN`] rows.
    pub(super) async fn fleet_list(
        &self,
        fleet: &Fleet,
        owner: &str,
        status: Option<Status>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page>, StoreError> {
        let before = match after {
            None => None,
            Some(id) => match self.fleet_get(fleet, id, Some(owner)).await? {
                Some(job) => Some(job.seq),
                None => return Ok(None),
            },
        };
        let jobs_api = fleet.jobs();
        let chunk = limit.saturating_add(1).max(100);
        let mut jobs = Vec::new();
        let mut offset = 0;
        let mut has_more = false;
        while offset < MAX_LIST_SCAN {
            let ids = jobs_api
                .owner_ids(owner, before, offset, chunk)
                .await
                .map_err(store_error)?;
            let read = ids.len();
            let records = jobs_api.get_many(&ids).await.map_err(store_error)?;
            let mut expired = Vec::new();
            for (id, record) in ids.into_iter().zip(records) {
                let Some(record) = record else {
                    expired.push(id);
                    continue;
                };
                match job_of(&id, record) {
                    Ok(job) if status.is_none_or(|s| s == job.status) => {
                        if jobs.len() == limit {
                            has_more = true;
                            break;
                        }
                        jobs.push(job);
                    }
                    Ok(_) => {}
                    Err(err) => tracing::error!(job = id, error = %err, "unreadable job skipped"),
                }
            }
            if let Err(err) = jobs_api.forget(owner, &expired).await {
                tracing::debug!(error = %err, "cannot drop expired jobs from the index");
            }
            if has_more || read < chunk {
                break;
            }
            offset += read - expired.len();
        }
        Ok(Some(Page { jobs, has_more }))
    }

    /// [`Queue::cancel`] on Redis.
    pub(super) async fn fleet_cancel(
        &self,
        fleet: &Fleet,
        id: &str,
        owner: Option<&str>,
    ) -> Result<Job, ChangeError> {
        let mut job = self
            .fleet_get(fleet, id, owner)
            .await?
            .ok_or_else(|| ChangeError::NotFound(id.to_string()))?;
        job.status = Status::Cancelled;
        job.finished_ms = Some(self.inner.clock.now_ms());
        job.next_attempt_ms = None;
        let changed = fleet
            .jobs()
            .cancel(id, owner, &rec_of(&job)?, self.retention_ms())
            .await
            .map_err(|e| ChangeError::Submit(SubmitError::State(e)))?;
        self.changed(id, changed)?;
        metrics::counter!("weir_jobs_total", "outcome" => "cancelled").increment(1);
        Ok(job)
    }

    /// [`Queue::retry`] on Redis.
    pub(super) async fn fleet_retry(
        &self,
        fleet: &Fleet,
        id: &str,
        owner: Option<&str>,
    ) -> Result<Job, ChangeError> {
        let mut job = self
            .fleet_get(fleet, id, owner)
            .await?
            .ok_or_else(|| ChangeError::NotFound(id.to_string()))?;
        job.status = Status::Queued;
        job.attempts_before_retry = job.attempts.len() as u32;
        job.finished_ms = None;
        job.next_attempt_ms = None;
        job.callback = None;
        let changed = fleet
            .jobs()
            .retry(
                id,
                owner,
                &rec_of(&job)?,
                self.inner.settings.max_queued,
                self.per_key_bound(&job.spec.owner),
            )
            .await
            .map_err(|e| ChangeError::Submit(SubmitError::State(e)))?;
        self.changed(id, changed)?;
        self.inner.wake.notify_waiters();
        Ok(job)
    }

    /// A cancel's or a retry's refusal.
    fn changed(&self, id: &str, changed: Changed) -> Result<(), ChangeError> {
        match changed {
            Changed::Ok => Ok(()),
            Changed::Missing => Err(ChangeError::NotFound(id.to_string())),
            Changed::Conflict(status) => Err(ChangeError::Conflict {
                id: id.to_string(),
                status: Status::parse(&status).unwrap_or(Status::Running),
            }),
            Changed::Full(depth) => Err(ChangeError::Submit(SubmitError::Full {
                depth: depth as usize,
                max: self.inner.settings.max_queued,
                retry_after_s: DEFAULT_RETRY_AFTER_S,
            })),
            Changed::KeyFull(depth) => Err(ChangeError::Submit(SubmitError::KeyFull {
                depth: depth as usize,
                max: self.inner.settings.max_queued_per_key,
                retry_after_s: DEFAULT_RETRY_AFTER_S,
            })),
        }
    }

    /// [`Queue::stats`] on Redis: the fleet's counters as last read (every
    /// [`COUNTS_PERIOD`]); the drain count is this node's.
    pub(super) fn fleet_stats(&self, fleet: &Fleet) -> Stats {
        let counts = *crate::sync::lock(&fleet.counts);
        let now = Instant::now();
        let drained = {
            let mut drained = crate::sync::lock(&fleet.drained);
            while drained
                .front()
                .is_some_and(|at| now.duration_since(*at) > Duration::from_secs(60))
            {
                drained.pop_front();
            }
            drained.len()
        };
        let busy = counts.waiting + counts.running;
        Stats {
            queued: counts.depth.saturating_sub(busy) as usize,
            waiting: counts.waiting as usize,
            running: counts.running as usize,
            max_queued: self.inner.settings.max_queued,
            duplicate_executions: counts.duplicates,
            drained_last_minute: drained,
            oldest_queued_age_s: 0,
        }
    }

    /// Starts this node's share of the fleet's work: the dispatcher (claims jobs while it
    /// has free workers and route slots), and the counters' reader.
    pub(super) fn start_fleet(&self, executor: Arc<dyn Executor>, deliver: Arc<dyn Deliver>) {
        let queue = self.clone();
        tokio::spawn(async move { queue.dispatch(executor, deliver).await });
        let queue = self.clone();
        tokio::spawn(async move {
            loop {
                if let Some(fleet) = queue.fleet()
                    && let Ok(counts) = fleet.jobs().counts().await
                {
                    *crate::sync::lock(&fleet.counts) = counts;
                }
                queue.export_metrics();
                tokio::time::sleep(COUNTS_PERIOD).await;
            }
        });
    }

    /// Claims jobs while a worker and a slot of the job's route are free, and runs each.
    async fn dispatch(&self, executor: Arc<dyn Executor>, deliver: Arc<dyn Deliver>) {
        let Some(fleet) = self.fleet() else {
            return;
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(
            self.inner.settings.workers as usize,
        ));
        let reclaim_ms = self.inner.settings.reclaim_idle.as_millis() as u64;
        loop {
            let woken = self.inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let routes: Vec<String> = {
                let running = crate::sync::lock(&fleet.running);
                self.inner
                    .limits
                    .iter()
                    .filter(|(route, limit)| running.get(*route).copied().unwrap_or(0) < **limit)
                    .map(|(route, _)| route.clone())
                    .collect()
            };
            if routes.is_empty() {
                drop(slot);
                tokio::select! {
                    () = &mut woken => {}
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            let names: Vec<&str> = routes.iter().map(String::as_str).collect();
            let token = format!("{:032x}", rand::random::<u128>());
            let taken = fleet
                .jobs()
                .take(
                    &names,
                    &token,
                    reclaim_ms,
                    self.inner.settings.max_attempts,
                    self.retention_ms(),
                )
                .await;
            match taken {
                Ok((reclaimed, taken)) => {
                    if reclaimed > 0 {
                        metrics::counter!("weir_jobs_duplicate_executions_total")
                            .increment(reclaimed);
                        tracing::warn!(
                            jobs = reclaimed,
                            "jobs whose node stopped renewing its claim run again (at-least-once)"
                        );
                    }
                    match taken {
                        Some(taken) => {
                            let queue = self.clone();
                            let executor = executor.clone();
                            let deliver = deliver.clone();
                            tokio::spawn(async move {
                                queue.fleet_attempt(&*executor, deliver, taken).await;
                                drop(slot);
                                queue.inner.idle.notify_waiters();
                                queue.inner.wake.notify_waiters();
                            });
                        }
                        None => {
                            drop(slot);
                            tokio::select! {
                                () = &mut woken => {}
                                () = tokio::time::sleep(POLL) => {}
                            }
                        }
                    }
                }
                Err(err) => {
                    drop(slot);
                    tracing::debug!(error = %err, "cannot take a job from Redis");
                    // Sent, but its answer lost: Redis may yet run it and claim a job for a
                    // token nobody holds.
                    if matches!(err, StateError::Timeout(_) | StateError::Redis(_)) {
                        self.untake_later(token, UNTAKE_FOR.max(Duration::from_millis(reclaim_ms)));
                    }
                    tokio::time::sleep(POLL_AFTER_ERROR).await;
                }
            }
        }
    }

    /// Puts back, off the loop, the job a take with `token` may have claimed after its
    /// answer was lost ([`Jobs::untake`](crate::state::jobs::Jobs::untake)): it never ran
    /// here, and would otherwise wait out its claim and run again as a duplicate. Retried
    /// until Redis answers (through the breaker's open time after an outage), for at most
    /// `within`: a claim reclaimed meanwhile is left alone. Only a take that was sent starts
    /// one (not one the open breaker refused), so an outage starts a few.
    fn untake_later(&self, token: String, within: Duration) {
        let Some(fleet) = self.fleet() else {
            return;
        };
        let shared = fleet.shared.clone();
        fleet.shared.spawn(async move {
            let end = Instant::now() + within;
            loop {
                match Jobs::new(&shared.redis).untake(&token).await {
                    Ok(true) => {
                        tracing::info!(
                            "a job claimed by a take whose answer was lost is queued again"
                        );
                        return;
                    }
                    Ok(false) => return,
                    Err(_) if Instant::now() + FINISH_RETRY < end => {
                        tokio::time::sleep(FINISH_RETRY).await;
                    }
                    Err(_) => return,
                }
            }
        });
    }

    /// One attempt of a job this node claimed: renews the claim while it runs, then writes
    /// its end (retried until Redis answers, or the claim is found taken over).
    async fn fleet_attempt(
        &self,
        executor: &dyn Executor,
        deliver: Arc<dyn Deliver>,
        taken: Taken,
    ) {
        let Some(fleet) = self.fleet() else {
            return;
        };
        let Taken {
            id,
            token,
            rec,
            seq,
            dup,
        } = taken;
        let mut job = match job_of(
            &id,
            Record {
                rec,
                status: "running".into(),
                seq,
                dup,
                fin: None,
                owner: String::new(),
                // Kept apart from the record: read with the job, never written back.
                late: 0,
            },
        ) {
            Ok(job) => job,
            Err(err) => {
                // Left claimed: it is reclaimed (and fails the same way) until dead.
                tracing::error!(job = id, error = %err, "cannot start the job");
                return;
            }
        };
        let route = job.spec.route.clone();
        *crate::sync::lock(&fleet.running)
            .entry(route.clone())
            .or_insert(0) += 1;
        if let Some(last) = job.attempts.last_mut()
            && last.finished_ms.is_none()
        {
            last.error = Some(TAKEN_OVER.to_string());
        }
        job.next_attempt_ms = None;
        job.attempts.push(Attempt {
            started_ms: self.inner.clock.now_ms(),
            ..Attempt::default()
        });
        let jobs = fleet.jobs();
        let reclaim_ms = self.inner.settings.reclaim_idle.as_millis() as u64;
        let held = match rec_of(&job) {
            Ok(rec) => jobs.write(&id, &token, &rec).await,
            Err(err) => Err(StateError::Redis(err.message)),
        };
        if let Ok(false) = held {
            tracing::warn!(job = id, "the job was taken over before it started here");
        } else {
            let renewer = {
                let shared = fleet.shared.clone();
                let (id, token) = (id.clone(), token.clone());
                let period = self.inner.settings.reclaim_idle / 3;
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(period).await;
                        match Jobs::new(&shared.redis)
                            .renew(&id, &token, reclaim_ms)
                            .await
                        {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!(job = id, "the job was taken over while it ran");
                                return;
                            }
                            Err(err) => tracing::warn!(job = id, error = %err, "cannot renew"),
                        }
                    }
                })
            };
            let outcome = executor
                .run(Run {
                    id: id.clone(),
                    attempt: job.attempts.len() as u32,
                    spec: job.spec.clone(),
                })
                .await;
            let now_ms = self.inner.clock.now_ms();
            let retry = self.settle(&mut job, outcome).is_some();
            let delay_ms = job
                .next_attempt_ms
                .map_or(0, |at| at.saturating_sub(now_ms));
            let status = if retry { "queued" } else { job.status.as_str() };
            match rec_of(&job) {
                Ok(rec) => loop {
                    let end = Ending {
                        rec: &rec,
                        status,
                        delay_ms,
                        retention_ms: self.retention_ms(),
                        cost_pico: job.attempts.last().map_or(0, |a| a.cost_pico),
                    };
                    match jobs.finish(&id, &token, &end).await {
                        Ok(Finished::Ended(late)) => {
                            job.superseded_cost_pico = late;
                            if job
                                .callback
                                .as_ref()
                                .is_some_and(|c| c.state == CallbackState::Pending)
                            {
                                let queue = self.clone();
                                let (id, job) = (id.clone(), job.clone());
                                tokio::spawn(async move {
                                    queue.fleet_callback(&*deliver, &id, job).await;
                                });
                            }
                            break;
                        }
                        Ok(Finished::TakenOver) => {
                            tracing::warn!(
                                job = id,
                                "the job was taken over; its other run stands (its cost counts)"
                            );
                            break;
                        }
                        Ok(Finished::Gone) => {
                            tracing::error!(
                                job = id,
                                "the job is gone from Redis (evicted or deleted: see maxmemory-policy): its outcome is lost"
                            );
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(job = id, error = %err, "cannot record the job's outcome yet; retrying");
                            tokio::time::sleep(FINISH_RETRY).await;
                        }
                    }
                },
                Err(err) => tracing::error!(job = id, error = %err, "cannot record the outcome"),
            }
            renewer.abort();
        }
        if let Some(n) = crate::sync::lock(&fleet.running).get_mut(&route) {
            *n = n.saturating_sub(1);
        }
        crate::sync::lock(&fleet.drained).push_back(Instant::now());
    }

    /// Delivers ended job `id`'s callback from this node, redelivering with backoff up to
    /// `callback_max_attempts`, and records each delivery in its record. Held in memory: if
    /// this node stops before it is delivered, it is not redelivered (unlike the local
    /// store, which resumes pending callbacks at start).
    pub(super) async fn fleet_callback(&self, deliver: &dyn Deliver, id: &str, mut job: Job) {
        let Some(fleet) = self.fleet() else {
            return;
        };
        loop {
            let Some(result) = self.send_callback(deliver, &job).await else {
                return;
            };
            let Some(again) = self.note_delivery(&mut job, result) else {
                return;
            };
            match rec_of(&job) {
                Ok(rec) => {
                    if let Err(err) = fleet.jobs().write_ended(id, &rec).await {
                        tracing::warn!(job = id, error = %err, "cannot record the callback delivery");
                    }
                }
                Err(err) => tracing::error!(job = id, error = %err, "cannot record the callback"),
            }
            match again {
                Some(at) => tokio::time::sleep_until(at).await,
                None => return,
            }
        }
    }
}
