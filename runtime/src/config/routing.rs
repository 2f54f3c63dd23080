//! Validated routing settings: per-target limits and breaker thresholds, per-route retry,
//! deadline and queue policy. Data only; the `router` module gives them behaviour.

use std::time::Duration;

/// When a breaker trips and how long it stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures in a row that trip the breaker (default 5).
    pub consecutive_failures: u32,
    /// Failure percentage over the window that trips it (default 50).
    pub failure_rate_percent: u32,
    /// Outcomes in the sliding window (default 20).
    pub window: u32,
    /// Outcomes needed in the window before the rate counts (default 10).
    pub min_requests: u32,
    /// Ejection after the first trip (default 5 s); doubles per consecutive trip.
    pub ejection: Duration,
    /// Longest ejection (default 60 s).
    pub max_ejection: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            consecutive_failures: 5,
            failure_rate_percent: 50,
            window: 20,
            min_requests: 10,
            ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
        }
    }
}

/// Per-target limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetLimits {
    /// Requests in flight at most (default 256).
    pub max_concurrency: u32,
    /// Requests per minute at most, matching the provider account; `None` = unlimited.
    pub rpm: Option<u32>,
    /// Tokens per minute at most (prompt estimate + `max_tokens`, reserved when the attempt
    /// starts); `None` = unlimited.
    pub tpm: Option<u32>,
    /// The breaker's thresholds.
    pub breaker: BreakerSettings,
    /// For streams: the longest wait for the next event once the first has arrived
    /// (`stream_idle_timeout_ms`, default the target's `ttft_timeout_ms`); on expiry the
    /// client's stream ends with a `stream_interrupted` error event.
    pub stream_idle_timeout: Duration,
    /// For streams: the most bytes read from one upstream stream (`max_stream_bytes`, default
    /// [`DEFAULT_MAX_STREAM_BYTES`]); past it the client's stream ends with a
    /// `stream_interrupted` error event.
    pub max_stream_bytes: u64,
}

/// Default `max_stream_bytes` of a target: 64 MiB, far beyond any completion's text.
pub const DEFAULT_MAX_STREAM_BYTES: u64 = 64 << 20;
/// Accepted `max_stream_bytes`: 1 KiB to 1 GiB.
pub const MAX_STREAM_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=(1 << 30);

impl Default for TargetLimits {
    fn default() -> Self {
        TargetLimits {
            max_concurrency: 256,
            rpm: None,
            tpm: None,
            breaker: BreakerSettings::default(),
            stream_idle_timeout: super::target::DEFAULT_TARGET_TIMEOUT,
            max_stream_bytes: DEFAULT_MAX_STREAM_BYTES,
        }
    }
}

/// Default attempts per request, across all targets (the first try included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default total deadline of one request's LLM step.
pub const DEFAULT_ROUTE_DEADLINE: Duration = Duration::from_secs(120);
/// Default bound of the first retry's backoff.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Default longest backoff.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Default cap on an upstream's `Retry-After`.
pub const DEFAULT_RETRY_AFTER_MAX: Duration = Duration::from_secs(10);
/// Default retries allowed per 100 original requests (the retry budget).
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
/// Default requests that may wait for a target with room; more are shed with 503.
pub const DEFAULT_QUEUE_SIZE: u32 = 256;
/// Default longest wait in that queue.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Validated policy values, as the config gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicySettings {
    /// Attempts per request, the first included (default [`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Upstream statuses that are retried on another target (default 408, 429, 5xx).
    /// Connect errors, timeouts and broken replies are always retried; other statuses are
    /// returned to the client.
    pub retry_on: StatusSet,
    /// Total deadline of the LLM step (default [`DEFAULT_ROUTE_DEADLINE`]).
    pub deadline: Duration,
    /// Upper bound of the first retry's full-jitter delay (default 50 ms); doubles per retry.
    pub backoff_base: Duration,
    /// Longest backoff delay (default 2 s).
    pub backoff_max: Duration,
    /// Cap on `Retry-After` (default [`DEFAULT_RETRY_AFTER_MAX`]).
    pub retry_after_max: Duration,
    /// Retries allowed per 100 original requests, over the last 10 s (default
    /// [`DEFAULT_RETRY_BUDGET_PERCENT`]); a floor of one retry per second always remains.
    pub retry_budget_percent: u32,
    /// Waiting requests at most (default [`DEFAULT_QUEUE_SIZE`]); 0 sheds at once.
    pub queue_size: u32,
    /// Longest wait for room (default [`DEFAULT_QUEUE_TIMEOUT`]).
    pub queue_timeout: Duration,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_on: StatusSet::retryable_default(),
            deadline: DEFAULT_ROUTE_DEADLINE,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            retry_after_max: DEFAULT_RETRY_AFTER_MAX,
            retry_budget_percent: DEFAULT_RETRY_BUDGET_PERCENT,
            queue_size: DEFAULT_QUEUE_SIZE,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
        }
    }
}

/// How a route picks the target of a request's first attempt (later attempts fail over in
/// chain order from there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Always start with the first target of the chain. The default.
    #[default]
    Fallback,
    /// Start with a target drawn by the route's `weights`.
    Weighted,
    /// Start with the faster of two targets drawn at random (latency EWMA), the "power of
    /// two choices": near-best choices without herding every request onto one target.
    LeastLatency,
}
