//! The one connection to Redis every shared feature goes through: each call under a deadline
//! (tight on the request path, looser off it), a breaker around Redis itself so that nothing
//! waits on a Redis that is down, and the counters `/admin/state` and `weir_state_*` show.
//!
//! One multiplexed connection (redis-rs `ConnectionManager`) pipelines every task's commands
//! over one socket and reconnects by itself; scripts go by `EVALSHA`, loaded again after a
//! `NOSCRIPT` (a restarted Redis has forgotten them).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::StateError;
use crate::config::{StateSettings, mask_password};
use crate::sync::lock;

/// Where a call is made from: its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// On a client's request: `command_timeout_ms`.
    Request,
    /// Off it (jobs, spend shipping, settles, lease returns): `background_timeout_ms`.
    Background,
}

/// The breaker around Redis: closed while calls succeed; open (no call waits on Redis) after
/// `breaker_failures` failures in a row; after `breaker_open_ms` one probe goes through, and
/// the open time doubles while probes fail, up to 30 s.
#[derive(Debug)]
struct Breaker {
    /// Consecutive failures that open it.
    threshold: u32,
    /// The first open period.
    base: Duration,
    /// Its state.
    state: Mutex<BreakerState>,
}

#[derive(Debug)]
struct BreakerState {
    /// Failures in a row.
    failures: u32,
    /// Open until then; `None`: closed.
    open_until: Option<Instant>,
    /// The current open period.
    period: Duration,
    /// A probe is out (half-open): other calls still skip Redis.
    probing: bool,
}

/// The longest the breaker stays open between probes.
const MAX_OPEN: Duration = Duration::from_secs(30);

impl Breaker {
    fn new(threshold: u32, base: Duration) -> Breaker {
        Breaker {
            threshold,
            base,
            state: Mutex::new(BreakerState {
                failures: 0,
                open_until: None,
                period: base,
                probing: false,
            }),
        }
    }

    /// Whether a call may go to Redis now (the one probe, when the open period is over).
    fn allow(&self, now: Instant) -> bool {
        let mut s = lock(&self.state);
        match s.open_until {
            None => true,
            Some(until) if now >= until && !s.probing => {
                s.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    /// Records a call's result.
    fn record(&self, ok: bool, now: Instant) {
        let mut s = lock(&self.state);
        if ok {
            s.failures = 0;
            s.open_until = None;
            s.period = self.base;
            s.probing = false;
            return;
        }
        s.failures = s.failures.saturating_add(1);
        if s.probing {
            s.period = (s.period * 2).min(MAX_OPEN);
            s.open_until = Some(now + s.period);
            s.probing = false;
        } else if s.open_until.is_none() && s.failures >= self.threshold {
            s.period = self.base;
            s.open_until = Some(now + s.period);
        }
    }

    /// `closed`, `open` or `half_open` (a probe is out).
    fn name(&self) -> &'static str {
        let s = lock(&self.state);
        match (s.open_until, s.probing) {
            (None, _) => "closed",
            (Some(_), true) => "half_open",
            (Some(_), false) => "open",
        }
    }
}

/// Counters of the calls made, for `/admin/state`.
#[derive(Debug, Default)]
struct Stats {
    /// Calls that reached Redis and succeeded.
    ok: AtomicU64,
    /// Calls that failed (an error from Redis or the connection).
    errors: AtomicU64,
    /// Calls cut by their deadline.
    timeouts: AtomicU64,
    /// Calls not made because the breaker was open.
    skipped: AtomicU64,
    /// The latest durations of successful calls, microseconds (at most [`LATENCIES`]).
    latencies: Mutex<VecDeque<u32>>,
    /// The last error and when (Unix ms).
    last_error: Mutex<Option<(String, u64)>>,
    /// When a failed call was last logged (Unix ms): at most one line per [`WARN_EVERY_MS`].
    warned_ms: AtomicU64,
}

/// A failed Redis call is logged (warn) at most this often; every one is counted.
const WARN_EVERY_MS: u64 = 10_000;

/// How many recent latencies `/admin/state` summarizes.
const LATENCIES: usize = 1024;

/// The connection to Redis, its deadlines, its breaker and its counters.
pub struct Redis {
    /// The multiplexed connection.
    conn: ConnectionManager,
    /// The URL, password masked (for logs and errors).
    url: String,
    /// `key_prefix`.
    prefix: String,
    /// This node's id.
    node: String,
    /// Request-path deadline.
    command_timeout: Duration,
    /// Background deadline.
    background_timeout: Duration,
    /// The breaker around Redis.
    breaker: Breaker,
    /// Counters.
    stats: Stats,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.url)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Whether `err` says the credentials are wrong or missing (no retry will help).
fn is_auth_error(err: &redis::RedisError) -> bool {
    if err.kind() == redis::ErrorKind::AuthenticationFailed {
        return true;
    }
    let text = format!("{} {}", err.code().unwrap_or(""), err);
    ["WRONGPASS", "NOAUTH", "NOPERM", "invalid password", "AUTH"]
        .iter()
        .any(|needle| text.contains(needle))
}

impl Redis {
    /// Connects to the `[state]` Redis as `node`. Wrong or missing credentials, or a URL the
    /// client cannot use, are errors (start-up fails naming the URL, password masked); a
    /// Redis that cannot be reached is not: the node starts with Redis unavailable (each
    /// feature follows its policy) and connects once Redis is there.
    pub async fn connect(settings: &StateSettings, node: String) -> Result<Redis, StateError> {
        let url = settings.url.clone().unwrap_or_default();
        let masked = mask_password(&url);
        let config_error = |message: String| StateError::Config {
            url: masked.clone(),
            message,
        };
        let mut info = url
            .as_str()
            .into_connection_info()
            .map_err(|err| config_error(err.to_string()))?;
        if let Some(password) = &settings.password {
            let redis = info.redis_settings().clone().set_password(password.clone());
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info).map_err(|err| config_error(err.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.background_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        // Connect and PING: a server that wants a password accepts the connection and
        // refuses the first command (NOAUTH).
        let first = tokio::time::timeout(settings.connect_timeout, async {
            let mut conn =
                ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        })
        .await;
        let conn = match first {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) if is_auth_error(&err) => {
                return Err(config_error(format!(
                    "Redis refused the credentials: {err}"
                )));
            }
            Ok(Err(err))
                if matches!(
                    err.kind(),
                    redis::ErrorKind::InvalidClientConfig | redis::ErrorKind::Server(_)
                ) =>
            {
                return Err(config_error(err.to_string()));
            }
            other => {
                let why = match other {
                    Ok(Err(err)) => err.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(url = %masked, error = %why, "Redis is unreachable: starting with shared state unavailable; each feature follows its state.on_unavailable policy until Redis answers");
                ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|err| config_error(err.to_string()))?
            }
        };
        Ok(Redis {
            conn,
            url: masked,
            prefix: settings.key_prefix.clone(),
            node,
            command_timeout: settings.command_timeout,
            background_timeout: settings.background_timeout,
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_open),
            stats: Stats::default(),
        })
    }

    /// This node's id in the fleet.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The key `prefix:{tag}:rest`: every key of one `tag` lands on one Cluster slot, so a
    /// script may touch them together.
    pub fn key(&self, tag: &str, rest: &str) -> String {
        format!("{}:{{{tag}}}:{rest}", self.prefix)
    }

    /// The deadline of `lane`.
    pub fn deadline(&self, lane: Lane) -> Duration {
        match lane {
            Lane::Request => self.command_timeout,
            Lane::Background => self.background_timeout,
        }
    }

    /// Whether the breaker lets calls through now (closed): a feature may skip work it
    /// would only waste while Redis is down.
    pub fn available(&self) -> bool {
        self.breaker.name() == "closed"
    }

    /// Runs `cmd` (a command or a pipeline) under `lane`'s deadline and the breaker; `op`
    /// names it in metrics.
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        lane: Lane,
        cmd: &redis::Cmd,
    ) -> Result<T, StateError> {
        let mut conn = self.conn.clone();
        self.guarded(op, lane, async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// [`Redis::query`] for a pipeline (one round trip).
    pub async fn pipe<T: FromRedisValue>(
        &self,
        op: &'static str,
        lane: Lane,
        pipe: &redis::Pipeline,
    ) -> Result<T, StateError> {
        let mut conn = self.conn.clone();
        self.guarded(op, lane, async move { pipe.query_async(&mut conn).await })
            .await
    }

    /// Runs a prepared script invocation (`EVALSHA`, loading the script on `NOSCRIPT`).
    pub async fn script<T: FromRedisValue>(
        &self,
        op: &'static str,
        lane: Lane,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StateError> {
        let mut conn = self.conn.clone();
        self.guarded(
            op,
            lane,
            async move { invocation.invoke_async(&mut conn).await },
        )
        .await
    }

    /// The deadline, the breaker and the counters around one call.
    async fn guarded<T>(
        &self,
        op: &'static str,
        lane: Lane,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        let start = Instant::now();
        if !self.breaker.allow(start) {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("weir_state_calls_total", "op" => op, "result" => "skipped")
                .increment(1);
            return Err(StateError::Unavailable);
        }
        // The client asserts on some replies (a `SCRIPT LOAD` answering another digest):
        // a server that does not conform is an error here, never a panic of the request
        // (fourth probe, R5: every request's connection was dropped).
        let call = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(call));
        let result = tokio::time::timeout(self.deadline(lane), call).await;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(start);
        let (result, outcome) = match result {
            Ok(Ok(Ok(value))) => (Ok(value), "ok"),
            Ok(Ok(Err(err))) => (Err(StateError::Redis(err.to_string())), "error"),
            Ok(Err(_)) => (
                Err(StateError::Redis(
                    "the client refused Redis's reply (a server that does not conform)".into(),
                )),
                "error",
            ),
            Err(_) => (Err(StateError::Timeout(self.deadline(lane))), "timeout"),
        };
        // A script's own refusal is an answer, not a failure of Redis.
        self.breaker.record(result.is_ok(), now);
        metrics::counter!("weir_state_calls_total", "op" => op, "result" => outcome).increment(1);
        metrics::histogram!("weir_state_call_seconds", "op" => op).record(elapsed.as_secs_f64());
        match &result {
            Ok(_) => {
                self.stats.ok.fetch_add(1, Ordering::Relaxed);
                let micros = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
                let mut latencies = lock(&self.stats.latencies);
                if latencies.len() == LATENCIES {
                    latencies.pop_front();
                }
                latencies.push_back(micros);
            }
            Err(err) => {
                let counter = match err {
                    StateError::Timeout(_) => &self.stats.timeouts,
                    _ => &self.stats.errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let text = crate::host_api::truncate_for_log(&err.to_string(), 300).into_owned();
                let at = crate::clock::unix_ms();
                // An error Redis answered (a key of the wrong type, out of memory) is as
                // worth a line as a lost connection: it may go on for good.
                let warned = self.stats.warned_ms.load(Ordering::Relaxed);
                if at.saturating_sub(warned) >= WARN_EVERY_MS
                    && self
                        .stats
                        .warned_ms
                        .compare_exchange(warned, at, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(op, error = %text, "a Redis call failed: the feature follows its state.on_unavailable policy (failures are counted in weir_state_calls_total; at most one such line every 10 s)");
                }
                *lock(&self.stats.last_error) = Some((text, at));
            }
        }
        metrics::gauge!("weir_state_up").set(f64::from(u8::from(self.available())));
        result
    }

    /// What `/admin/state` shows of the connection.
    pub fn status(&self) -> Value {
        let mut latencies: Vec<u32> = lock(&self.stats.latencies).iter().copied().collect();
        latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies.get(i).map(|us| f64::from(*us) / 1000.0)
        };
        let last_error = lock(&self.stats.last_error).clone();
        json!({
            "url": self.url,
            "node_id": self.node,
            "key_prefix": self.prefix,
            "available": self.available(),
            "breaker": self.breaker.name(),
            "command_timeout_ms": self.command_timeout.as_millis() as u64,
            "calls": {
                "ok": self.stats.ok.load(Ordering::Relaxed),
                "errors": self.stats.errors.load(Ordering::Relaxed),
                "timeouts": self.stats.timeouts.load(Ordering::Relaxed),
                "skipped": self.stats.skipped.load(Ordering::Relaxed),
            },
            "latency_ms": { "p50": at(0.5), "p99": at(0.99), "max": at(1.0) },
            "last_error": last_error.map(|(message, at)| json!({"message": message, "at_unix_ms": at})),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_failures_in_a_row_and_probes_with_backoff() {
        let breaker = Breaker::new(3, Duration::from_secs(1));
        let now = Instant::now();
        breaker.record(false, now);
        breaker.record(false, now);
        assert!(breaker.allow(now), "two failures leave it closed");
        breaker.record(false, now);
        assert_eq!(breaker.name(), "open");
        assert!(!breaker.allow(now + Duration::from_millis(999)));
        // One probe after the open period; others still skip.
        let later = now + Duration::from_secs(1);
        assert!(breaker.allow(later));
        assert!(!breaker.allow(later));
        assert_eq!(breaker.name(), "half_open");
        // A failed probe doubles the period.
        breaker.record(false, later);
        assert!(!breaker.allow(later + Duration::from_millis(1999)));
        assert!(breaker.allow(later + Duration::from_secs(2)));
        // A good probe closes it.
        breaker.record(true, later + Duration::from_secs(2));
        assert_eq!(breaker.name(), "closed");
        assert!(breaker.allow(later + Duration::from_secs(2)));
    }

    #[test]
    fn auth_errors_are_told_from_unreachable_servers() {
        let wrong: redis::RedisError = (
            redis::ErrorKind::AuthenticationFailed,
            "WRONGPASS invalid username-password pair",
        )
            .into();
        assert!(is_auth_error(&wrong));
        let refused: redis::RedisError =
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(!is_auth_error(&refused));
    }
}
