//! Background jobs: a chat completion submitted now and run later, durably, at a pace the
//! upstreams can bear.
//!
//! Owns: the durable job store (redb under the data directory), the in-memory schedule
//! rebuilt from it at start (a priority heap per route), the worker pool with per-route
//! concurrency, retries with full-jitter exponential backoff, dead jobs, backpressure (a
//! bounded queue, and a bound per API key so one key cannot fill it for the others, whose
//! refusals carry a `Retry-After` from the observed drain rate), signed callbacks, and the
//! retention of finished jobs. Knows nothing of HTTP: the server hands it an [`Executor`] that runs one
//! attempt through the pipeline and says what came of it, and a [`Deliver`] that POSTs a
//! callback.
//!
//! Guarantees: a job is committed to the store before [`Queue::submit`] returns, so an
//! acknowledged job survives a `kill -9`. A job is marked running (durably) before its
//! attempt starts; one found running at start was cut off by a crash and runs again
//! (at-least-once), counted as a duplicate execution. Why a bounded queue with a drain-rate
//! `Retry-After` rather than an unbounded one: an unbounded backlog turns an upstream outage
//! into hours of stale work and unbounded disk; refusing early tells clients when to come back.
//!
//! # Layout
//!
//! - `job`: the stored record ([`Job`], [`JobSpec`], [`Status`], attempts, callback state).
//! - `fleet`: the queue on the fleet's Redis (`[state] backend = "redis"`): the same API,
//!   jobs held in Redis so any node runs and answers for them (keys and scripts in
//!   `state::jobs`).
//! - `store`: redb persistence with a group-commit writer thread; per-job locks.
//! - `index`: the store's indexes (a key's jobs newest first, finished jobs by age), built
//!   at open for a store that has none.
//! - `retention`: the periodic sweep that deletes finished jobs past their retention.
//! - `schedule`: the in-memory heaps, backoff waits, per-route running counts, drain window.
//! - `worker`: the worker loop, one attempt start to end, recovery at start, the callback
//!   loop and the metrics ticker.
//! - `callback`: the callback signature (`t=…,v1=…`).
//! - `destination`: where a callback may go (host allow-list, address classes after DNS,
//!   never weir's own listeners); `address`: the IP address classifier it uses.
//! - `delivery`: what the queue asks of the callback sender, and failure classes.
//! - `view`: the job as clients see it (JSON).
//! - `refusal`: how its errors reach a client (status, type, code, `Retry-After`).
//! - `clock`: Unix ms derived from tokio's clock (paused-time tests see it move).

mod address;
mod callback;
mod clock;
mod delivery;
mod destination;
mod fleet;
mod index;
mod job;
mod refusal;
mod retention;
mod schedule;
mod store;
mod view;
mod worker;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

pub use address::{Class, canonical, classify};
pub use callback::{SIGNATURE_HEADER, sign};
pub use clock::Clock;
pub use delivery::{Deliver, Delivery, DeliveryError, Failure};
pub use destination::{CallbackUrlError, Destinations, Lookup, LookupFuture, ResolveError, Target};
pub use job::{Attempt, Callback, CallbackState, Job, JobSpec, Status};
use schedule::{Entry, Phase, Schedule};
pub use store::StoreError;
use store::{Store, Write, Written};
pub use view::job_json;

use crate::config::JobsSettings;
use crate::router::Backoff;

/// `Retry-After` for a full queue when nothing drained in the last minute (nothing to
/// estimate from), seconds.
pub const DEFAULT_RETRY_AFTER_S: u64 = 5;
/// Longest `Retry-After` a full queue gives, seconds.
pub const MAX_RETRY_AFTER_S: u64 = 600;
/// The owner of jobs submitted without an API key (no `[[keys]]`: auth is off). There is no
/// tenant to protect then, so the per-key bound does not apply to it.
pub const ANONYMOUS: &str = "-";

/// One attempt to run.
#[derive(Clone, Debug)]
pub struct Run {
    /// The job.
    pub id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// What was asked.
    pub spec: JobSpec,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It succeeded: the job is done.
    Succeeded,
    /// It failed in a way another attempt may not (5xx, 429, the upstream unreachable).
    Retry,
    /// It failed in a way no attempt can fix (a 4xx: the request itself is wrong).
    Fail,
}

/// What an attempt came to.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Success, retry or give up.
    pub verdict: Verdict,
    /// The HTTP status the synchronous endpoint would have answered.
    pub status: u16,
    /// Its body (the chat completion, or the error object).
    pub body: Option<serde_json::Value>,
    /// Why it failed, for the attempt log.
    pub error: Option<String>,
    /// What it cost, pico-dollars.
    pub cost_pico: u64,
    /// How long the answer asked to wait before trying again.
    pub retry_after: Option<Duration>,
}

/// Runs one attempt of a job (the server runs it through the pipeline).
pub trait Executor: Send + Sync + 'static {
    /// Runs `run` and says what came of it.
    fn run(&self, run: Run) -> BoxFuture<'static, Outcome>;
}

impl<F, Fut> Executor for F
where
    F: Fn(Run) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn run(&self, run: Run) -> BoxFuture<'static, Outcome> {
        Box::pin(self(run))
    }
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds `max_queued` jobs; try again after `retry_after_s`.
    #[error("the job queue is full ({depth} of {max} jobs queued or running)")]
    Full {
        /// Jobs queued or running.
        depth: usize,
        /// The bound.
        max: u32,
        /// When a slot is expected to be free, from the drain rate.
        retry_after_s: u64,
    },
    /// The submitting key has `max_queued_per_key` jobs queued or running; try again after
    /// `retry_after_s`.
    #[error(
        "this API key has {depth} jobs queued or running, its per-key limit is {max} \
         (jobs.max_queued_per_key)"
    )]
    KeyFull {
        /// The key's jobs queued or running.
        depth: usize,
        /// The per-key bound.
        max: u32,
        /// When a slot is expected to be free, from the drain rate.
        retry_after_s: u64,
    },
    /// The store could not take it (nothing was acknowledged).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The fleet's Redis is unavailable: nothing was acknowledged.
    #[error("the shared job queue is unavailable: {0}")]
    State(crate::state::StateError),
}

/// Why a cancel or a retry was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No such job (for this owner).
    #[error("no job `{0}`")]
    NotFound(String),
    /// The job is not in a status that allows it.
    #[error("job `{id}` is {}", status.as_str())]
    Conflict {
        /// The job.
        id: String,
        /// Its status.
        status: Status,
    },
    /// The queue is full (a retry needs a slot like a submission).
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One page of a key's jobs, newest first.
#[derive(Debug)]
pub struct Page {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// Whether older jobs follow the last one (ask again with it as the cursor).
    pub has_more: bool,
}

/// What a submission came to.
#[derive(Debug)]
pub struct Submitted {
    /// The job (the existing one for a repeated idempotency key).
    pub job: Job,
    /// True when the idempotency key named an existing job.
    pub existing: bool,
}

/// Counters for `GET /v1/jobs` and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Jobs ready to run.
    pub queued: usize,
    /// Jobs waiting out a retry's backoff.
    pub waiting: usize,
    /// Jobs running.
    pub running: usize,
    /// The bound on queued + waiting + running.
    pub max_queued: u32,
    /// Attempts that were under way at a crash and ran again, over every run.
    pub duplicate_executions: u64,
    /// Jobs that ended within the last minute.
    pub drained_last_minute: usize,
    /// How long the oldest job not running has waited, seconds.
    pub oldest_queued_age_s: u64,
}

/// The queue (cheap to clone).
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    /// The local store (empty when [`Inner::fleet`] holds the jobs).
    store: Store,
    /// The fleet's Redis, when jobs live there (`[state] backend = "redis"`).
    fleet: Option<fleet::Fleet>,
    settings: JobsSettings,
    /// Where callbacks may go (the settings plus weir's listeners, set by the server).
    destinations: Arc<Destinations>,
    /// Route → jobs of it running at once.
    limits: HashMap<String, u32>,
    schedule: std::sync::Mutex<Schedule>,
    /// A job became ready, a slot freed, or shutdown began.
    wake: Notify,
    /// A callback became due.
    callbacks_wake: Notify,
    clock: Clock,
    /// When the queue opened (the drain rate's span starts here).
    opened: tokio::time::Instant,
    next_seq: AtomicU64,
    duplicates: AtomicU64,
    /// Draws the jitter of each backoff, uniform in [0, 1).
    jitter: Box<dyn Fn() -> f64 + Send + Sync>,
    /// Set by [`Queue::shutdown`]: workers take no new job.
    stopping: AtomicBool,
    /// Signalled whenever a running attempt ends (shutdown waits on it).
    idle: Notify,
}

impl Queue {
    /// Opens the store (`data_dir/jobs.redb`, or memory without one) and rebuilds the
    /// schedule: jobs found running were cut off by a crash and go back to the queue, each
    /// counted as a duplicate execution. `routes` gives each route that takes jobs its
    /// concurrency. Nothing runs until [`Queue::start`].
    pub async fn open(
        settings: JobsSettings,
        routes: HashMap<String, u32>,
        data_dir: Option<&Path>,
    ) -> Result<Queue, StoreError> {
        Queue::open_with_jitter(settings, routes, data_dir, Box::new(rand::random::<f64>)).await
    }

    /// [`Queue::open`] with the backoff jitter drawn from `jitter` (tests make it fixed).
    pub async fn open_with_jitter(
        settings: JobsSettings,
        routes: HashMap<String, u32>,
        data_dir: Option<&Path>,
        jitter: Box<dyn Fn() -> f64 + Send + Sync>,
    ) -> Result<Queue, StoreError> {
        Queue::open_on(settings, routes, data_dir, jitter, None).await
    }

    /// [`Queue::open`] with the jobs on the fleet's Redis: nothing is stored locally, and
    /// nothing is recovered at start (a claim this node held before a restart lapses and
    /// is taken over like any other).
    pub async fn open_shared(
        settings: JobsSettings,
        routes: HashMap<String, u32>,
        shared: Arc<crate::state::Shared>,
    ) -> Result<Queue, StoreError> {
        let jitter = Box::new(rand::random::<f64>);
        Queue::open_on(
            settings,
            routes,
            None,
            jitter,
            Some(fleet::Fleet::new(shared)),
        )
        .await
    }

    async fn open_on(
        settings: JobsSettings,
        routes: HashMap<String, u32>,
        data_dir: Option<&Path>,
        jitter: Box<dyn Fn() -> f64 + Send + Sync>,
        fleet: Option<fleet::Fleet>,
    ) -> Result<Queue, StoreError> {
        let store = Store::open(data_dir)?;
        let loaded = store.load()?;
        let queue = Queue {
            inner: Arc::new(Inner {
                store,
                fleet,
                destinations: Arc::new(Destinations::new(&settings)),
                settings,
                limits: routes,
                schedule: std::sync::Mutex::new(Schedule::default()),
                wake: Notify::new(),
                callbacks_wake: Notify::new(),
                clock: Clock::new(),
                opened: tokio::time::Instant::now(),
                next_seq: AtomicU64::new(loaded.next_seq),
                duplicates: AtomicU64::new(loaded.duplicates),
                jitter,
                stopping: AtomicBool::new(false),
                idle: Notify::new(),
            }),
        };
        queue.recover(loaded.live).await?;
        Ok(queue)
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        crate::sync::lock(&self.inner.schedule)
    }

    /// The settings the queue was opened with.
    pub fn settings(&self) -> &JobsSettings {
        &self.inner.settings
    }

    /// Where callbacks may go: the submission check and the deliverer share it; the server
    /// records its listeners in it before it serves.
    pub fn destinations(&self) -> Arc<Destinations> {
        self.inner.destinations.clone()
    }

    /// Whether `route` takes jobs.
    pub fn takes(&self, route: &str) -> bool {
        self.inner.limits.contains_key(route)
    }

    /// The backoff bounds of job retries.
    fn backoff(&self) -> Backoff {
        Backoff {
            base: self.inner.settings.backoff_base,
            cap: self.inner.settings.backoff_max,
        }
    }

    /// Stores a new job and queues it; returns once it is durable. A repeated idempotency key
    /// (for the same owner) returns the job it named, whatever the queue's fill.
    pub async fn submit(&self, spec: JobSpec) -> Result<Submitted, SubmitError> {
        if let Some(fleet) = self.fleet() {
            return self.fleet_submit(fleet, self.new_job(spec, 0)).await;
        }
        if let Some(key) = &spec.idempotency_key
            && let Some(job) = self.inner.store.find_idempotent(&spec.owner, key)?
        {
            return Ok(Submitted {
                job,
                existing: true,
            });
        }
        self.reserve(&spec.owner)?;
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        let job = self.new_job(spec, seq);
        let written = self
            .inner
            .store
            .write(vec![Write::Insert(job.clone())])
            .await;
        let mut schedule = self.schedule();
        schedule.unreserve(&job.spec.owner);
        match written?.pop() {
            Some(Written::Existing(id)) => {
                drop(schedule);
                let job = self.inner.store.get(&id)?.ok_or_else(|| StoreError {
                    path: "jobs".into(),
                    message: format!("idempotency key names a missing job {id}"),
                    unavailable: false,
                })?;
                Ok(Submitted {
                    job,
                    existing: true,
                })
            }
            _ => {
                schedule.add(job.id.clone(), entry_of(&job), None);
                drop(schedule);
                self.inner.wake.notify_waiters();
                Ok(Submitted {
                    job,
                    existing: false,
                })
            }
        }
    }

    /// A new queued job of `spec`.
    fn new_job(&self, spec: JobSpec, seq: u64) -> Job {
        Job {
            id: format!("job_{:024x}", rand::random::<u128>() >> 32),
            seq,
            spec,
            status: Status::Queued,
            created_ms: self.inner.clock.now_ms(),
            finished_ms: None,
            next_attempt_ms: None,
            attempts: Vec::new(),
            attempts_before_retry: 0,
            duplicate_executions: 0,
            superseded_cost_pico: 0,
            response: None,
            response_status: None,
            callback: None,
        }
    }

    /// Takes a slot for `owner` under the bounds (the key's, then the queue's), or says when
    /// to come back.
    fn reserve(&self, owner: &str) -> Result<(), SubmitError> {
        let now = tokio::time::Instant::now();
        let mut schedule = self.schedule();
        let own = schedule.depth_of(owner);
        let per_key = self.inner.settings.max_queued_per_key;
        if owner != ANONYMOUS && own >= per_key as usize {
            let (drained, span) = schedule.drained(now, self.inner.opened);
            let retry_after_s = retry_after(own + 1 - per_key as usize, drained, span);
            drop(schedule);
            metrics::counter!("weir_jobs_rejected_total").increment(1);
            return Err(SubmitError::KeyFull {
                depth: own,
                max: per_key,
                retry_after_s,
            });
        }
        let depth = schedule.depth();
        let max = self.inner.settings.max_queued;
        if depth >= max as usize {
            let (drained, span) = schedule.drained(now, self.inner.opened);
            let retry_after_s = retry_after(depth + 1 - max as usize, drained, span);
            drop(schedule);
            metrics::counter!("weir_jobs_rejected_total").increment(1);
            return Err(SubmitError::Full {
                depth,
                max,
                retry_after_s,
            });
        }
        schedule.reserve(owner);
        Ok(())
    }

    /// The job `id`, when it exists and (with `owner`) belongs to `owner`.
    pub fn get(&self, id: &str, owner: Option<&str>) -> Result<Option<Job>, StoreError> {
        Ok(self
            .inner
            .store
            .get(id)?
            .filter(|job| owner.is_none_or(|o| job.spec.owner == o)))
    }

    /// [`Queue::get`] wherever the jobs live (the fleet's Redis, or this node's store).
    pub async fn find(&self, id: &str, owner: Option<&str>) -> Result<Option<Job>, StoreError> {
        match self.fleet() {
            Some(fleet) => self.fleet_get(fleet, id, owner).await,
            None => self.get(id, owner),
        }
    }

    /// [`Queue::list`] wherever the jobs live (the local store's read runs on a blocking
    /// thread).
    pub async fn page(
        &self,
        owner: &str,
        status: Option<Status>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page>, StoreError> {
        if let Some(fleet) = self.fleet() {
            return self.fleet_list(fleet, owner, status, after, limit).await;
        }
        let queue = self.clone();
        let (owner, after) = (owner.to_string(), after.map(str::to_string));
        tokio::task::spawn_blocking(move || queue.list(&owner, status, after.as_deref(), limit))
            .await
            .map_err(|err| StoreError {
                path: "jobs".into(),
                message: err.to_string(),
                unavailable: false,
            })?
    }

    /// At most `limit` of `owner`'s jobs with `status` (any when `None`), newest first,
    /// submitted before the job `after` (from the newest when `None`). Reads `limit` index
    /// rows and records, however many jobs are stored. `Ok(None)`: `owner` has no job
    /// `after`.
    pub fn list(
        &self,
        owner: &str,
        status: Option<Status>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page>, StoreError> {
        let before = match after {
            None => None,
            Some(id) => match self.get(id, Some(owner))? {
                Some(job) => Some(job.seq),
                None => return Ok(None),
            },
        };
        let (jobs, has_more) = self.inner.store.list(owner, status, before, limit)?;
        Ok(Some(Page { jobs, has_more }))
    }

    /// Cancels a queued job (one waiting for a retry included); a running or ended job is a
    /// conflict.
    pub async fn cancel(&self, id: &str, owner: Option<&str>) -> Result<Job, ChangeError> {
        if let Some(fleet) = self.fleet() {
            return self.fleet_cancel(fleet, id, owner).await;
        }
        let store = &self.inner.store;
        let _job_lock = store.lock(id).await;
        let mut job = self
            .get(id, owner)?
            .ok_or_else(|| ChangeError::NotFound(id.to_string()))?;
        if job.status != Status::Queued || !self.schedule().cancel(id) {
            let status = if job.status == Status::Queued {
                Status::Running
            } else {
                job.status
            };
            return Err(ChangeError::Conflict {
                id: id.to_string(),
                status,
            });
        }
        job.status = Status::Cancelled;
        job.finished_ms = Some(self.inner.clock.now_ms());
        job.next_attempt_ms = None;
        store.put(job.clone()).await?;
        metrics::counter!("weir_jobs_total", "outcome" => "cancelled").increment(1);
        Ok(job)
    }

    /// Queues a dead job again with a fresh allowance of attempts (its history kept).
    pub async fn retry(&self, id: &str, owner: Option<&str>) -> Result<Job, ChangeError> {
        if let Some(fleet) = self.fleet() {
            return self.fleet_retry(fleet, id, owner).await;
        }
        let store = &self.inner.store;
        let _job_lock = store.lock(id).await;
        let mut job = self
            .get(id, owner)?
            .ok_or_else(|| ChangeError::NotFound(id.to_string()))?;
        if job.status != Status::Dead {
            return Err(ChangeError::Conflict {
                id: id.to_string(),
                status: job.status,
            });
        }
        self.reserve(&job.spec.owner)?;
        job.status = Status::Queued;
        job.attempts_before_retry = job.attempts.len() as u32;
        job.finished_ms = None;
        job.next_attempt_ms = None;
        job.callback = None;
        let stored = store.put(job.clone()).await;
        let mut schedule = self.schedule();
        schedule.unreserve(&job.spec.owner);
        stored?;
        schedule.add(job.id.clone(), entry_of(&job), None);
        drop(schedule);
        self.inner.wake.notify_waiters();
        Ok(job)
    }

    /// Counters right now.
    pub fn stats(&self) -> Stats {
        if let Some(fleet) = self.fleet() {
            return self.fleet_stats(fleet);
        }
        let now = tokio::time::Instant::now();
        let now_ms = self.inner.clock.now_ms();
        let mut schedule = self.schedule();
        let (queued, waiting, running) = schedule.counts();
        let (drained, _) = schedule.drained(now, self.inner.opened);
        Stats {
            queued,
            waiting,
            running,
            max_queued: self.inner.settings.max_queued,
            duplicate_executions: self.inner.duplicates.load(Ordering::Relaxed),
            drained_last_minute: drained,
            oldest_queued_age_s: schedule
                .oldest_queued_ms()
                .map_or(0, |at| now_ms.saturating_sub(at) / 1000),
        }
    }

    /// Stops taking new jobs and waits up to `timeout` for running attempts to end. What is
    /// still running then runs again at the next start.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        self.inner.stopping.store(true, Ordering::Relaxed);
        self.inner.wake.notify_waiters();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.inner.idle.notified();
            if self.running_here() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.running_here() == 0;
            }
        }
    }

    /// Attempts running on this node.
    fn running_here(&self) -> usize {
        match self.fleet() {
            Some(fleet) => fleet.running_here(),
            None => self.stats().running,
        }
    }
}

/// The schedule entry of a queued job.
fn entry_of(job: &Job) -> Entry {
    Entry {
        route: job.spec.route.clone(),
        owner: job.spec.owner.clone(),
        priority: job.spec.priority,
        seq: job.seq,
        created_ms: job.created_ms,
        phase: Phase::Ready,
    }
}

/// Seconds until `excess` jobs are expected to have drained, at the rate of `drained` jobs
/// over `span`; [`DEFAULT_RETRY_AFTER_S`] with nothing to go on. At least 1, at most
/// [`MAX_RETRY_AFTER_S`].
fn retry_after(excess: usize, drained: usize, span: Duration) -> u64 {
    if drained == 0 || span.is_zero() {
        return DEFAULT_RETRY_AFTER_S;
    }
    let per_second = drained as f64 / span.as_secs_f64().max(1.0);
    let seconds = (excess.max(1) as f64 / per_second).ceil();
    (seconds as u64).clamp(1, MAX_RETRY_AFTER_S)
}

#[cfg(test)]
mod tests;
