//! Validated routing settings: per-target limits and breaker thresholds, per-route retry,
//! deadline and queue policy. Data only; the `router` module gives them behaviour.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::check::Source;
use super::error::ConfigError;
use super::value::{Bounded, Int, Ms, Val, choices, defaults};

/// Any non-negative number: the static bound of a key whose range depends on another key
/// (checked by the second pass).
const ANY: u64 = u64::MAX;
/// Longest breaker ejection accepted, ms: 1 hour.
const MAX_EJECTION_MS: u64 = 3_600_000;
/// Longest route backoff accepted, ms: 10 minutes.
const MAX_BACKOFF_MS: u64 = 600_000;

/// When a breaker trips and how long it stays open (`[targets.NAME.breaker]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct BreakerSettings {
    /// Failures in a row that trip the breaker, 1 to 1000 (default 5).
    #[serde(with = "Int::<1, 1000>", default = "Val::<5>::int")]
    pub consecutive_failures: u32,
    /// Failure percentage over the window that trips it, 1 to 100 (default 50).
    #[serde(with = "Int::<1, 100>", default = "Val::<50>::int")]
    pub failure_rate_percent: u32,
    /// Outcomes in the sliding window, 1 to 1000 (default 20).
    #[serde(with = "Int::<1, 1000>", default = "Val::<20>::int")]
    pub window: u32,
    /// Outcomes needed in the window before the rate counts, 1 to `window` (default 10, or
    /// `window` when that is smaller).
    #[serde(with = "Int::<0, ANY>", default = "Val::<10>::int")]
    pub min_requests: u32,
    /// Ejection after the first trip (`ejection_ms`), 1 ms to 1 h, default 5 s; doubles per
    /// consecutive trip.
    #[serde(
        rename = "ejection_ms",
        with = "Ms::<1, MAX_EJECTION_MS>",
        default = "Val::<5000>::ms"
    )]
    pub ejection: Duration,
    /// Longest ejection (`max_ejection_ms`), `ejection_ms` to 1 h, default 60 s (or
    /// `ejection_ms` when that is longer).
    #[serde(
        rename = "max_ejection_ms",
        with = "Ms::<0, ANY>",
        default = "Val::<60_000>::ms"
    )]
    pub max_ejection: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        defaults()
    }
}

/// Per-target limits (their keys are written in `[targets.NAME]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetLimits {
    /// Requests in flight at most, 1 to 1,000,000 (default 256).
    #[serde(with = "Int::<1, 1_000_000>", default = "Val::<256>::int")]
    pub max_concurrency: u32,
    /// Requests per minute at most, matching the provider account, 1 to 1,000,000; `None` =
    /// unlimited.
    #[serde(with = "Int::<1, 1_000_000>", default)]
    pub rpm: Option<u32>,
    /// Tokens per minute at most (prompt estimate + `max_tokens`, reserved when the attempt
    /// starts), 1 to 2³²-1; `None` = unlimited.
    #[serde(with = "Int::<1, { u32::MAX as u64 }>", default)]
    pub tpm: Option<u32>,
    /// For streams: the longest wait for the next event once the first has arrived
    /// (`stream_idle_timeout_ms`, 1 ms to 10 min, default the target's `ttft_timeout_ms`); on
    /// expiry the client's stream ends with a `stream_interrupted` error event.
    #[serde(
        rename = "stream_idle_timeout_ms",
        with = "Ms::<1, 600_000>",
        default = "Val::<60_000>::ms"
    )]
    pub stream_idle_timeout: Duration,
    /// For streams: the most bytes read from one upstream stream, 1 KiB to 1 GiB (default
    /// 64 MiB, far beyond any completion's text); past it the client's stream ends with a
    /// `stream_interrupted` error event.
    #[serde(
        with = "Int::<1024, { 1 << 30 }>",
        default = "Val::<{ 64 << 20 }>::int"
    )]
    pub max_stream_bytes: u64,
    /// The breaker's thresholds.
    #[serde(default)]
    pub breaker: BreakerSettings,
}

impl Default for TargetLimits {
    fn default() -> Self {
        defaults()
    }
}

/// The second pass over a target's breaker (`key` is the breaker's, like
/// `targets.primary.breaker`): the bounds that depend on another key.
pub(crate) fn check_breaker(
    breaker: &mut BreakerSettings,
    src: &Source<'_>,
    key: &str,
) -> Result<(), ConfigError> {
    let window = u64::from(breaker.window);
    let min_requests = breaker.min_requests.min(breaker.window);
    let requests = format!("{key}.min_requests");
    src.bounded(
        &requests,
        &mut breaker.min_requests,
        (1, window),
        min_requests,
    )?;
    let ejection = breaker.ejection.as_millis() as u64;
    let longest = breaker.max_ejection.max(breaker.ejection);
    let max_key = format!("{key}.max_ejection_ms");
    src.bounded(
        &max_key,
        &mut breaker.max_ejection,
        (ejection, MAX_EJECTION_MS),
        longest,
    )
}

/// A set of HTTP statuses in 400..=527, as a bit set (cheap to copy and test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusSet(u128);

impl StatusSet {
    /// The lowest status a set can hold.
    pub const LOW: u16 = 400;
    /// The highest status a set can hold.
    pub const HIGH: u16 = 527;

    /// An empty set.
    pub const fn empty() -> StatusSet {
        StatusSet(0)
    }

    /// The default statuses worth retrying elsewhere: 408, 429 and every 5xx.
    pub fn retryable_default() -> StatusSet {
        let mut set = StatusSet::empty();
        set.insert(408);
        set.insert(429);
        for status in 500..=Self::HIGH {
            set.insert(status);
        }
        set
    }

    /// Adds `status`; false when it is outside 400..=527.
    pub fn insert(&mut self, status: u16) -> bool {
        if (Self::LOW..=Self::HIGH).contains(&status) {
            self.0 |= 1u128 << (status - Self::LOW);
            true
        } else {
            false
        }
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        (Self::LOW..=Self::HIGH).contains(&status) && self.0 & (1u128 << (status - Self::LOW)) != 0
    }

    /// The statuses, ascending.
    pub fn to_vec(&self) -> Vec<u16> {
        (Self::LOW..=Self::HIGH)
            .filter(|s| self.contains(*s))
            .collect()
    }
}

/// Read as an array of statuses, each in 400..=527.
impl<'de> Deserialize<'de> for StatusSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        type Status = Bounded<{ StatusSet::LOW as u64 }, { StatusSet::HIGH as u64 }>;
        let mut set = StatusSet::empty();
        for status in Vec::<Status>::deserialize(d)? {
            set.insert(status.0 as u16);
        }
        Ok(set)
    }
}

/// Written as the array of statuses, ascending.
impl Serialize for StatusSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_vec().serialize(s)
    }
}

/// Validated policy values, as the config gives them (their keys are written in the route's
/// table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Attempts per request across all targets, the first included, 1 to 20 (default 3).
    #[serde(with = "Int::<1, 20>", default = "Val::<3>::int")]
    pub max_attempts: u32,
    /// Upstream statuses that are retried on another target (default 408, 429, 5xx).
    /// Connect errors, timeouts and broken replies are always retried; other statuses are
    /// returned to the client.
    #[serde(default = "StatusSet::retryable_default")]
    pub retry_on: StatusSet,
    /// Total deadline of the LLM step (`deadline_ms`), 1 ms to 1 h, default 120 s.
    #[serde(
        rename = "deadline_ms",
        with = "Ms::<1, 3_600_000>",
        default = "Val::<120_000>::ms"
    )]
    pub deadline: Duration,
    /// Upper bound of the first retry's full-jitter delay (`backoff_base_ms`), 0 to 60 s,
    /// default 50 ms; doubles per retry.
    #[serde(
        rename = "backoff_base_ms",
        with = "Ms::<0, 60_000>",
        default = "Val::<50>::ms"
    )]
    pub backoff_base: Duration,
    /// Longest backoff delay (`backoff_max_ms`), `backoff_base_ms` to 10 min, default 2 s (or
    /// `backoff_base_ms` when that is longer).
    #[serde(
        rename = "backoff_max_ms",
        with = "Ms::<0, ANY>",
        default = "Val::<2000>::ms"
    )]
    pub backoff_max: Duration,
    /// Cap on an upstream's `Retry-After` (`retry_after_max_ms`), 0 to 10 min, default 10 s.
    #[serde(
        rename = "retry_after_max_ms",
        with = "Ms::<0, MAX_BACKOFF_MS>",
        default = "Val::<10_000>::ms"
    )]
    pub retry_after_max: Duration,
    /// Retries allowed per 100 original requests, over the last 10 s, 0 to 1000 (default
    /// 20); a floor of one retry per second always remains.
    #[serde(with = "Int::<0, 1000>", default = "Val::<20>::int")]
    pub retry_budget_percent: u32,
    /// Requests that may wait for a target with room, 0 (shed at once) to 1,000,000 (default
    /// 256); more are shed with 503.
    #[serde(with = "Int::<0, 1_000_000>", default = "Val::<256>::int")]
    pub queue_size: u32,
    /// Longest wait for room (`queue_timeout_ms`), 0 to 10 min, default 2 s.
    #[serde(
        rename = "queue_timeout_ms",
        with = "Ms::<0, MAX_BACKOFF_MS>",
        default = "Val::<2000>::ms"
    )]
    pub queue_timeout: Duration,
}

impl Default for PolicySettings {
    fn default() -> Self {
        defaults()
    }
}

/// The second pass over a route's policy (`key` is the route's, like `routes[0]`).
pub(crate) fn check_policy(
    policy: &mut PolicySettings,
    src: &Source<'_>,
    key: &str,
) -> Result<(), ConfigError> {
    let base = policy.backoff_base.as_millis() as u64;
    let longest = policy.backoff_max.max(policy.backoff_base);
    let max_key = format!("{key}.backoff_max_ms");
    src.bounded(
        &max_key,
        &mut policy.backoff_max,
        (base, MAX_BACKOFF_MS),
        longest,
    )
}

choices! {
    /// How a route picks the target of a request's first attempt (later attempts fail over
    /// in chain order from there).
    pub enum Strategy {
        /// Always start with the first target of the chain. The default.
        Fallback = "fallback",
        /// Start with a target drawn by the route's `weights`.
        Weighted = "weighted",
        /// Start with the faster of two targets drawn at random (latency EWMA), the "power of
        /// two choices": near-best choices without herding every request onto one target.
        LeastLatency = "least-latency",
    }
}
