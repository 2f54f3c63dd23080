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
//! - `jobs`: the job queue's keys and scripts (claims, renewals, reclaims, retries).

pub mod jobs;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

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
        tracing::info!(url = %crate::config::mask_password(settings.url.as_deref().unwrap_or("")), node = redis.node(), "shared state on Redis");
        let shared = Arc::new(Shared {
            redis,
            settings: settings.clone(),
        });
        tokio::spawn(health(Arc::downgrade(&shared)));
        Ok(Some(shared))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        self.redis.node()
    }
}

/// Pings Redis every [`HEALTH_PERIOD`] (off the request path), so the breaker and
/// `/admin/state` follow Redis even while no request uses it: an outage opens the breaker
/// before requests pay for it, and the ping is the probe that closes it again.
async fn health(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(HEALTH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let _: Result<String, _> = shared
            .redis
            .query("ping", Lane::Background, &::redis::cmd("PING"))
            .await;
    }
}

/// How often [`health`] pings Redis.
const HEALTH_PERIOD: Duration = Duration::from_millis(500);

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
            body
        }
    }
}
