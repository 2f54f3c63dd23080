//! State shared by a fleet of nodes: `[state] backend = "redis"` puts key budgets, rate
//! limits, the response cache, jobs and spend on one Redis (or Valkey) so that N nodes
//! behave like one gateway; `"local"` (the default) keeps all of it in this process.
//!
//! Owns: the connection to Redis (deadlines, the breaker around Redis, `/admin/state`,
//! `weir_state_*`), the key schema and the Lua scripts of each shared feature. Every
//! read-modify-write is one script (`EVALSHA`), so nothing is check-then-act across a round
//! trip; each script touches the keys of one hash tag (`prefix:{tag}:…`), so one key's state
//! lives on one Cluster slot; time inside a script is Redis's (`TIME`), never a node's.
//!
//! When Redis is slow or down a call fails within its deadline, the breaker stops further
//! calls from waiting on it, and each feature follows its `state.on_unavailable` policy;
//! recovery is automatic (the breaker's probe, the connection's reconnect).
//!
//! Circuit breakers on upstream targets stay per node: each node's view of the network
//! differs, and one node's bad path must not open every node's breaker.
//!
//! - `redis`: [`Redis`], the connection every feature calls through, and its breaker.
//! - `limits`: [`limits::FleetLimits`], fleet-wide RPM/TPM of keys and targets (a
//!   sliding-window log per limit, one script per admission).
//! - `budget`: key budgets across the fleet (strict mode: reserve/settle scripts, expiry,
//!   the local share while Redis is away).
//! - `lease`: key budgets in lease mode (slices of the budget spent locally).
//! - `spend`: every node's ledger rows shipped (idempotently) to a fleet-wide aggregate.
//! - `cache`: [`SharedCache`], the response cache's tier on Redis and coalescing of identical
//!   misses across nodes (the semantic tier stays per node).
//! - `jobs`: the job queue's keys and scripts (claims, renewals, reclaims, retries).

pub mod budget;
mod cache;
pub mod jobs;
pub mod lease;
pub mod limits;
mod redis;
pub mod spend;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use serde_json::{Value, json};

pub use self::cache::{Coalesce, Lease, SharedCache};
pub use self::redis::{Lane, Redis};
use crate::config::{Backend, StateSettings};

/// Why shared state could not be read or written.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StateError {
    /// Start-up: the URL or the credentials are wrong (no retry will help).
    #[error("state.url {url}: {message}")]
    Config {
        /// The URL, password masked.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The breaker around Redis is open: the call was not made.
    #[error("Redis is unavailable (its breaker is open)")]
    Unavailable,
    /// The call passed its deadline.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis or the connection failed.
    #[error("Redis error: {0}")]
    Redis(String),
}

/// The fleet's shared state: the Redis connection and the `[state]` it was made from.
/// `None` in [`crate::app::App`] when the backend is local.
#[derive(Debug)]
pub struct Shared {
    /// The connection.
    pub redis: Redis,
    /// The settings (read at start; a reload that changes them needs a restart).
    pub settings: StateSettings,
    /// This node's spend rows on their way to the fleet's aggregate.
    pub spend: spend::Shipper,
    /// Raised each time Redis is found to have lost its data (see [`health`]): budgets put
    /// this node's spend back once per epoch.
    epoch: std::sync::atomic::AtomicU64,
    /// Every key budget made on this connection (dead ones pruned as new ones come), to
    /// re-seed them all when Redis lost its data.
    budgets: std::sync::Mutex<Vec<std::sync::Weak<budget::FleetBudget>>>,
    /// Work on the background lane (settles, cache fills, permits given back, debits), run by
    /// one task ([`background`]).
    background: tokio::sync::mpsc::UnboundedSender<BoxFuture<'static, ()>>,
    /// What [`health`] found out about the server: its eviction policy, and whether another
    /// process uses this node's id.
    checks: std::sync::Mutex<Checks>,
    /// When [`Shared::data_lost`] last acted (unix ms).
    lost_at: std::sync::atomic::AtomicU64,
}

/// What [`health`] found out about Redis beyond its being there.
#[derive(Debug, Default)]
struct Checks {
    /// `maxmemory` (bytes, 0: no limit) and `maxmemory-policy`, from `INFO memory`.
    eviction: Option<(u64, String)>,
    /// Another live process writes this node's id (seen on two checks in a row).
    node_id_taken: bool,
}

impl Checks {
    /// Whether Redis may evict weir's keys: a memory limit with any policy but `noeviction`.
    /// Budget windows, rate-limit logs and ended jobs carry a TTL, so the `volatile-*`
    /// policies evict them as readily as `allkeys-*`.
    fn evicting(&self) -> bool {
        self.eviction
            .as_ref()
            .is_some_and(|(max, policy)| *max > 0 && policy != "noeviction")
    }
}

impl Shared {
    /// Connects when `settings` name Redis; `None` for the local backend.
    pub async fn open(settings: &StateSettings) -> Result<Option<Arc<Shared>>, StateError> {
        if settings.backend == Backend::Local {
            return Ok(None);
        }
        let node = settings
            .node_id
            .clone()
            .unwrap_or_else(|| default_node_id(0));
        let redis = Redis::connect(settings, node).await?;
        let (jobs, queued) = tokio::sync::mpsc::unbounded_channel();
        tracing::info!(url = %crate::config::mask_password(settings.url.as_deref().unwrap_or("")), node = redis.node(), "shared state on Redis");
        let shared = Arc::new(Shared {
            spend: spend::Shipper::new(redis.node()),
            redis,
            settings: settings.clone(),
            epoch: std::sync::atomic::AtomicU64::new(1),
            budgets: std::sync::Mutex::default(),
            background: jobs,
            checks: std::sync::Mutex::default(),
            lost_at: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(background(queued));
        tokio::spawn(health(Arc::downgrade(&shared)));
        tokio::spawn(spend::run(Arc::downgrade(&shared)));
        Ok(Some(shared))
    }

    /// Runs `job` off the request path, on the one task of the background lane: a request
    /// that settles its reservation and fills the cache wakes that task once, where a task
    /// per job woke another worker thread for the second. Each job bounds its own Redis calls
    /// by the background deadline; the queue holds at most what the callers bound (one fill
    /// per call in flight, settles capped, one debit batch per key). Dropped once the runtime
    /// has shut down.
    pub fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) {
        let _ = self.background.send(Box::pin(job));
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        self.redis.node()
    }

    /// Says that Redis lost data this node had written (a budget window of `key` with none of
    /// its spend): the fleet's data token is deleted, so every node's next check ([`health`])
    /// finds a new one and puts its spend back into every key's windows, as after a restart.
    /// At most once per [`DATA_LOST_EVERY`] per node (a re-seed is idempotent; a window just
    /// begun at midnight can look lost once).
    pub fn data_lost(self: &Arc<Self>, key: &str) {
        let now = crate::clock::unix_ms();
        let last = self.lost_at.load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) < DATA_LOST_EVERY.as_millis() as u64
            || self
                .lost_at
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        tracing::warn!(
            key,
            "Redis lost a budget window this node had spent in (evicted or deleted): every node re-seeds its spend"
        );
        let shared = self.clone();
        let epoch = self.redis.key("alive", "epoch");
        self.spawn(async move {
            let _: Result<i64, _> = shared
                .redis
                .query(
                    "data_lost",
                    Lane::Background,
                    ::redis::cmd("DEL").arg(epoch),
                )
                .await;
        });
    }

    /// Which of Redis's lives this node is in: raised when [`health`] finds Redis lost its
    /// data.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The fleet budget of `key`, when it has a budget (`None`: nothing to share).
    pub fn budget(self: &Arc<Self>, key: &crate::config::KeySettings) -> Option<budget::KeyBudget> {
        if key.daily_budget.is_none() && key.monthly_budget.is_none() {
            return None;
        }
        let fleet = Arc::new(budget::FleetBudget::new(
            self.clone(),
            &key.name,
            key.daily_budget,
            key.monthly_budget,
        ));
        {
            let mut budgets = crate::sync::lock(&self.budgets);
            budgets.retain(|b| b.strong_count() > 0);
            budgets.push(Arc::downgrade(&fleet));
        }
        Some(match self.settings.budget_mode {
            crate::config::BudgetMode::Strict => budget::KeyBudget::Strict(fleet),
            crate::config::BudgetMode::Lease => {
                budget::KeyBudget::Lease(Arc::new(lease::LeasedBudget::new(
                    fleet,
                    self.settings.lease_ttl,
                    self.settings.expected_nodes,
                )))
            }
        })
    }
}

/// Checks on Redis every [`HEALTH_PERIOD`] (off the request path), so the breaker and
/// `/admin/state` follow Redis even while no request uses it: an outage opens the breaker
/// before requests pay for it, and the check is the probe that closes it again.
///
/// The check also tells whether Redis lost its data (restarted without persistence,
/// flushed): `SET <prefix>:{alive}:epoch <token> NX GET` answers the fleet's data token,
/// made by the first node to find none. When the token differs from the one this node saw
/// last, the data it saw is gone: [`Shared::epoch`] is raised and every key budget puts this
/// node's spend back at once (and, if that fails, before its next reservation). Each node
/// compares with what it saw itself, so every node notices; a node just started only
/// records the token (its spend is in Redis under its id, or was lost while it was away).
/// Until the next check (at most [`HEALTH_PERIOD`]), a Redis that came back empty admits
/// against windows without the fleet's earlier spend.
///
/// In the same round trip each node writes its id with a token of its process
/// (`{alive}:node:<id>`, living three checks): a token of another process found on two checks
/// in a row means two live nodes share the id, which re-seeding cannot tell apart (one's
/// spend would be lost with Redis's data): an error in the log and `/admin/state`. Every
/// [`EVICTION_CHECK_EVERY`] checks (and the first), `INFO memory` tells whether Redis may
/// evict keys under memory pressure: a budget window, a rate-limit log or an acknowledged
/// job evicted is lost silently (a budget starts again from zero), so any policy but
/// `noeviction` with a memory limit is an error in the log, in `/admin/state` and in
/// `weir_state_redis_evicting`.
async fn health(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(HEALTH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<String> = None;
    let process = format!("{}/{}", std::process::id(), crate::clock::unix_ms());
    let mut foreign = 0u32;
    // Checks until the next look at the eviction policy (at once while Redis has not answered).
    let mut policy_in = 0u64;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        policy_in = match policy_in {
            0 if check_eviction(&shared).await => EVICTION_CHECK_EVERY,
            0 => 0,
            n => n - 1,
        };
        let token = format!("{}/{}", shared.node(), crate::clock::unix_ms());
        let mut check = ::redis::pipe();
        check
            .cmd("SET")
            .arg(shared.redis.key("alive", "epoch"))
            .arg(&token)
            .arg("NX")
            .arg("GET")
            .cmd("SET")
            .arg(
                shared
                    .redis
                    .key("alive", &format!("node:{}", shared.node())),
            )
            .arg(&process)
            .arg("PX")
            .arg(3 * HEALTH_PERIOD.as_millis() as u64)
            .arg("GET");
        let answer: Result<(Option<String>, Option<String>), _> =
            shared.redis.pipe("ping", Lane::Background, &check).await;
        let Ok((old, writer)) = answer else { continue };
        foreign = match writer {
            Some(writer) if writer != process => foreign.saturating_add(1),
            _ => 0,
        };
        let taken = foreign >= 2;
        let was = std::mem::replace(&mut crate::sync::lock(&shared.checks).node_id_taken, taken);
        if taken && !was {
            tracing::error!(
                node_id = shared.node(),
                "another live weir process uses this node's state.node_id: give every node its own (re-seeding a Redis that lost its data would put back only one of their spends)"
            );
        }
        let current = old.unwrap_or(token);
        if seen.as_ref().is_some_and(|seen| *seen != current) {
            let epoch = shared
                .epoch
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                epoch = epoch + 1,
                "Redis lost the fleet's data (restarted empty or flushed): budgets re-seed this node's spend"
            );
            let budgets: Vec<_> = crate::sync::lock(&shared.budgets)
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .collect();
            tokio::spawn(async move {
                for budget in budgets {
                    budget.reseed_now().await;
                }
            });
        } else {
            // Budgets whose node spend is not in Redis yet (the node just started, or it
            // admitted calls on its local share during an outage): put back now, so another
            // node does not spend it again while this one has no traffic for the key.
            let behind: Vec<_> = crate::sync::lock(&shared.budgets)
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .filter(|budget| budget.needs_reseed())
                .collect();
            if !behind.is_empty() {
                tokio::spawn(async move {
                    for budget in behind {
                        budget.reseed_now().await;
                    }
                });
            }
        }
        seen = Some(current);
    }
}

/// The background lane's task: runs every job [`Shared::spawn`] queues, all at once, until
/// the connection is gone and the last job ended.
async fn background(mut queued: tokio::sync::mpsc::UnboundedReceiver<BoxFuture<'static, ()>>) {
    use futures_util::{FutureExt, StreamExt};
    let mut running = futures_util::stream::FuturesUnordered::new();
    // A job that panicked ends alone, as a task of its own would.
    let caught = |job: BoxFuture<'static, ()>| {
        std::panic::AssertUnwindSafe(job)
            .catch_unwind()
            .map(|ended| {
                if ended.is_err() {
                    tracing::error!("a background job of the shared state panicked");
                }
            })
    };
    loop {
        tokio::select! {
            job = queued.recv() => match job {
                Some(job) => running.push(caught(job)),
                None => break,
            },
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    while running.next().await.is_some() {}
}

/// How often [`health`] pings Redis.
const HEALTH_PERIOD: Duration = Duration::from_millis(500);

/// [`Shared::data_lost`] acts at most this often.
const DATA_LOST_EVERY: Duration = Duration::from_secs(10);

/// [`health`] reads Redis's eviction policy every this many checks (a minute).
const EVICTION_CHECK_EVERY: u64 = 120;

/// Reads `maxmemory` and `maxmemory_policy` (`INFO memory`: managed Redis services that
/// rename `CONFIG` still answer it) and says so when Redis may evict weir's keys, once per
/// change; false when Redis did not answer.
async fn check_eviction(shared: &Shared) -> bool {
    let answer: Result<String, _> = shared
        .redis
        .query("info", Lane::Background, ::redis::cmd("INFO").arg("memory"))
        .await;
    let Ok(info) = answer else { return false };
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let max = field("maxmemory").and_then(|v| v.parse::<u64>().ok());
    let (Some(max), Some(policy)) = (max, field("maxmemory_policy")) else {
        return true;
    };
    let mut checks = crate::sync::lock(&shared.checks);
    let was = checks.evicting();
    checks.eviction = Some((max, policy.chars().take(64).collect()));
    let evicting = checks.evicting();
    metrics::gauge!("weir_state_redis_evicting").set(f64::from(u8::from(evicting)));
    if evicting && !was {
        tracing::error!(
            maxmemory = max,
            policy,
            "Redis may evict weir's keys when it is full (maxmemory-policy is not noeviction): an evicted budget window starts again from zero, an evicted job is lost; set maxmemory-policy noeviction, or turn state.shared_cache off if Redis must stay small"
        );
    } else if was && !evicting {
        tracing::info!(policy, "Redis no longer evicts weir's keys");
    }
    true
}

/// `hostname:port` of the API listener; with a port the OS picks (0), `hostname:pid`.
pub fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weir".to_owned());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_graphic() && !"{}\"\\".contains(*c))
        .take(100)
        .collect();
    match port {
        0 => format!("{host}:pid{}", std::process::id()),
        port => format!("{host}:{port}"),
    }
}

/// What `GET /admin/state` answers.
pub fn status(shared: Option<&Shared>) -> Value {
    match shared {
        None => json!({ "backend": "local" }),
        Some(shared) => {
            let mut body = json!({
                "backend": "redis",
                "budget_mode": shared.settings.budget_mode,
                "on_unavailable": shared.settings.on_unavailable,
                "expected_nodes": shared.settings.expected_nodes,
                "shared_cache": shared.settings.shared_cache,
            });
            if let (Some(body), Value::Object(redis)) =
                (body.as_object_mut(), shared.redis.status())
            {
                body.extend(redis);
            }
            let checks = crate::sync::lock(&shared.checks);
            body["eviction"] = match &checks.eviction {
                None => Value::Null,
                Some((max, policy)) => json!({
                    "maxmemory": max,
                    "policy": policy,
                    "safe": !checks.evicting(),
                }),
            };
            body["node_id_taken"] = json!(checks.node_id_taken);
            body
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_background_lane_runs_jobs_together_and_outlives_one_that_panics() {
        let (jobs, queued) = tokio::sync::mpsc::unbounded_channel::<BoxFuture<'static, ()>>();
        let lane = tokio::spawn(background(queued));
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // A job that waits for a later one: both run at once.
        jobs.send(Box::pin(async move {
            let _ = first_rx.await;
            let _ = done_tx.send(());
        }))
        .unwrap();
        jobs.send(Box::pin(async { panic!("a job's bug") }))
            .unwrap();
        jobs.send(Box::pin(async move {
            let _ = first_tx.send(());
        }))
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), done_rx)
            .await
            .expect("the jobs after the panic ran")
            .unwrap();
        // The lane ends once its sender is gone and its jobs are done.
        drop(jobs);
        tokio::time::timeout(Duration::from_secs(10), lane)
            .await
            .expect("the lane ended")
            .unwrap();
    }
}
