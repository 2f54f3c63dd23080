//! Validated routing settings: per-target limits and breaker thresholds, per-route retry,
//! deadline and queue policy. Data only; the `router` module gives them behaviour.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::check::Source;
use super::error::ConfigError;
use super::value::{Bounded, Int, Ms, Val, choices, millis, ms, serde_default};

/// Any non-negative number: the static bound of a key whose range depends on another key
/// (the second pass checks it).
const ANY: u64 = u64::MAX;
/// Longest breaker ejection accepted, ms: 1 hour.
const MAX_EJECTION_MS: u64 = 3_600_000;
/// Longest route backoff accepted, ms: 10 minutes.
const MAX_BACKOFF_MS: u64 = 600_000;

/// When a breaker trips and how long it stays open (`[targets.NAME.breaker]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct BreakerSettings {
    /// Failures in a row that trip the breaker.
    #[serde(with = "Int::<1, 1000>", default = "Val::<5>::int")]
    pub consecutive_failures: u32,
    /// Failure percentage over the window that trips it.
    #[serde(with = "Int::<1, 100>", default = "Val::<50>::int")]
    pub failure_rate_percent: u32,
    /// Outcomes in the sliding window.
    #[serde(with = "Int::<1, 1000>", default = "Val::<20>::int")]
    pub window: u32,
    /// Outcomes needed in the window before the rate counts: 1 to `window`, default 10 (or
    /// `window` when smaller).
    #[serde(with = "Int::<0, ANY>", default = "Val::<10>::int")]
    pub min_requests: u32,
    /// Ejection after the first trip; doubles per consecutive trip.
    #[serde(rename = "ejection_ms", with = "Ms::<1, MAX_EJECTION_MS>")]
    #[serde(default = "ms::<5000>")]
    pub ejection: Duration,
    /// Longest ejection: `ejection_ms` to 1 h, default 60 s (or `ejection_ms` when longer).
    #[serde(rename = "max_ejection_ms", with = "Ms::<0, ANY>")]
    #[serde(default = "ms::<60_000>")]
    pub max_ejection: Duration,
}

/// Per-target limits (their keys are written in `[targets.NAME]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetLimits {
    /// Requests in flight at most.
    #[serde(with = "Int::<1, 1_000_000>", default = "Val::<256>::int")]
    pub max_concurrency: u32,
    /// Requests per minute at most, matching the provider account; `None` = unlimited.
    #[serde(with = "Int::<1, 1_000_000>", default)]
    pub rpm: Option<u32>,
    /// Tokens per minute at most (prompt estimate + `max_tokens`, reserved when the attempt
    /// starts); `None` = unlimited.
    #[serde(with = "Int::<1, { u32::MAX as u64 }>", default)]
    pub tpm: Option<u32>,
    /// For streams: the longest wait for the next event once the first has arrived (default
    /// the target's `ttft_timeout_ms`); on expiry the client's stream ends with a
    /// `stream_interrupted` error event.
    #[serde(rename = "stream_idle_timeout_ms", with = "Ms::<1, 600_000>")]
    #[serde(default = "ms::<60_000>")]
    pub stream_idle_timeout: Duration,
    /// For streams: the most bytes read from one upstream stream (the default is far beyond
    /// any completion's text); past it the client's stream ends with a `stream_interrupted`
    /// error event.
    #[serde(
        with = "Int::<1024, { 1 << 30 }>",
        default = "Val::<{ 64 << 20 }>::int"
    )]
    pub max_stream_bytes: u64,
    /// For streams: the longest a stream may last once its first event arrived, 1 s to 24 h
    /// (default 10 min); past it the client's stream ends with a `stream_interrupted` error
    /// event. A stream that keeps sending events is cut by nothing else but the bytes.
    #[serde(rename = "max_stream_ms", with = "Ms::<1000, 86_400_000>")]
    #[serde(default = "ms::<600_000>")]
    pub max_stream: Duration,
    /// The breaker's thresholds.
    #[serde(default)]
    pub breaker: BreakerSettings,
}

/// The second pass over a target's breaker (`key`, like `targets.primary.breaker`).
pub(crate) fn check_breaker(
    breaker: &mut BreakerSettings,
    src: &Source<'_>,
    key: &str,
) -> Result<(), ConfigError> {
    let (window, min_requests) = (breaker.window, breaker.min_requests.min(breaker.window));
    let requests = &mut breaker.min_requests;
    src.bounded(
        &format!("{key}.min_requests"),
        requests,
        (1, window.into()),
        min_requests,
    )?;
    let (ejection, longest) = (breaker.ejection, breaker.max_ejection.max(breaker.ejection));
    let range = (millis(ejection), MAX_EJECTION_MS);
    src.bounded(
        &format!("{key}.max_ejection_ms"),
        &mut breaker.max_ejection,
        range,
        longest,
    )
}

/// A set of HTTP statuses in 400..=599, as a bit set (cheap to copy and test). The file and
/// the output write it as an array of statuses. The whole 5xx range fits, Anthropic's 529
/// (overloaded) included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusSet([u128; 2]);

impl StatusSet {
    /// The lowest status a set can hold.
    pub const LOW: u16 = 400;
    /// The highest status a set can hold.
    pub const HIGH: u16 = 599;

    /// An empty set.
    pub const fn empty() -> StatusSet {
        StatusSet([0; 2])
    }

    /// The default statuses worth retrying elsewhere: 408, 429 and every 5xx.
    pub fn retryable_default() -> StatusSet {
        let mut set = StatusSet::empty();
        for status in [408, 429].into_iter().chain(500..=Self::HIGH) {
            set.insert(status);
        }
        set
    }

    /// The word and the bit of `status`, when it is in range.
    fn slot(status: u16) -> Option<(usize, u128)> {
        let index = status
            .checked_sub(Self::LOW)
            .filter(|_| status <= Self::HIGH)?;
        Some((usize::from(index / 128), 1u128 << (index % 128)))
    }

    /// Adds `status`; false when it is outside 400..=599.
    pub fn insert(&mut self, status: u16) -> bool {
        match Self::slot(status) {
            Some((word, bit)) => {
                self.0[word] |= bit;
                true
            }
            None => false,
        }
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        Self::slot(status).is_some_and(|(word, bit)| self.0[word] & bit != 0)
    }

    /// The statuses, ascending.
    pub fn to_vec(&self) -> Vec<u16> {
        (Self::LOW..=Self::HIGH)
            .filter(|s| self.contains(*s))
            .collect()
    }
}

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
    /// Attempts per request across all targets, the first included.
    #[serde(with = "Int::<1, 20>", default = "Val::<3>::int")]
    pub max_attempts: u32,
    /// Upstream statuses that are retried on another target. Connect errors, timeouts and
    /// broken replies are always retried; other statuses are returned to the client.
    #[serde(default = "StatusSet::retryable_default")]
    pub retry_on: StatusSet,
    /// Total deadline of the LLM step.
    #[serde(rename = "deadline_ms", with = "Ms::<1, 3_600_000>")]
    #[serde(default = "ms::<120_000>")]
    pub deadline: Duration,
    /// Upper bound of the first retry's full-jitter delay; doubles per retry.
    #[serde(rename = "backoff_base_ms", with = "Ms::<0, 60_000>")]
    #[serde(default = "ms::<50>")]
    pub backoff_base: Duration,
    /// Longest backoff delay: `backoff_base_ms` to 10 min, default 2 s (or the base when
    /// longer).
    #[serde(rename = "backoff_max_ms", with = "Ms::<0, ANY>")]
    #[serde(default = "ms::<2000>")]
    pub backoff_max: Duration,
    /// Cap on an upstream's `Retry-After`.
    #[serde(rename = "retry_after_max_ms", with = "Ms::<0, MAX_BACKOFF_MS>")]
    #[serde(default = "ms::<10_000>")]
    pub retry_after_max: Duration,
    /// Retries allowed per 100 original requests, over the last 10 s; a floor of one retry
    /// per second always remains.
    #[serde(with = "Int::<0, 1000>", default = "Val::<20>::int")]
    pub retry_budget_percent: u32,
    /// Requests that may wait for a target with room (0 sheds at once); more are shed with
    /// 503.
    #[serde(with = "Int::<0, 1_000_000>", default = "Val::<256>::int")]
    pub queue_size: u32,
    /// Longest wait for room.
    #[serde(rename = "queue_timeout_ms", with = "Ms::<0, MAX_BACKOFF_MS>")]
    #[serde(default = "ms::<2000>")]
    pub queue_timeout: Duration,
    /// Hedged requests: when the first attempt has not answered in time, the same request
    /// goes to the next target too and the first answer wins (`None`: no hedging).
    #[serde(default)]
    pub hedge: Option<HedgeSettings>,
}

/// A route's `hedge` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct HedgeSettings {
    /// How long the first attempt has before the hedge is sent, in ms; left out: the first
    /// target's p95 latency over its recent answers (no hedge until it has answered
    /// [`HEDGE_MIN_SAMPLES`] times).
    #[serde(with = "Int::<1, 600_000>", default)]
    pub after_ms: Option<u32>,
    /// Hedges allowed per 100 requests of the route over the last 10 s (the cancelled
    /// attempt is billed too: this caps what hedging adds to the bill).
    #[serde(with = "Int::<1, 100>", default = "Val::<10>::int")]
    pub max_percent: u32,
}

/// Answers a target must have given before its p95 decides when to hedge.
pub const HEDGE_MIN_SAMPLES: usize = 20;

serde_default!(BreakerSettings, TargetLimits, PolicySettings);

/// The second pass over a route's policy (`key` is the route's, like `routes[0]`).
pub(crate) fn check_policy(
    policy: &mut PolicySettings,
    src: &Source<'_>,
    key: &str,
) -> Result<(), ConfigError> {
    let longest = policy.backoff_max.max(policy.backoff_base);
    let range = (millis(policy.backoff_base), MAX_BACKOFF_MS);
    src.bounded(
        &format!("{key}.backoff_max_ms"),
        &mut policy.backoff_max,
        range,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_set_holds_every_5xx_and_nothing_outside_400_to_599() {
        let retried = StatusSet::retryable_default();
        for status in [408, 429, 500, 503, 527, 529, 599] {
            assert!(retried.contains(status), "{status}");
        }
        for status in [0, 200, 399, 400, 404, 600, u16::MAX] {
            assert!(!retried.contains(status), "{status}");
        }
        let mut set = StatusSet::empty();
        assert!(set.insert(529) && set.insert(400) && set.insert(599));
        assert!(!set.insert(600) && !set.insert(399));
        assert_eq!(set.to_vec(), [400, 529, 599]);
    }
}
