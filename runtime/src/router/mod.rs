//! Routing one upstream call (a chat completion or embeddings) across a route's targets.
//!
//! Owns: each target's live state (breaker, concurrency limit, RPM bucket, `Retry-After`
//! cool-down), each route's policy (attempts, total deadline, backoff, retry budget, wait
//! queue) and the record of every attempt.
//!
//! One call: targets are tried in the route's order (`fallback`), skipping those whose
//! breaker is open, that cool down after a `Retry-After`, or that are at their RPM or
//! concurrency limit. A retryable failure (connect error, timeout, 408/429/5xx, a broken
//! reply) moves on to the next target at once, and to a target that already failed only after
//! a full-jitter backoff, if the retry budget and the deadline allow; another status stops:
//! relayed when it is about the request itself, a generic 502 otherwise (`refusal`). No
//! attempt starts with less than [`policy::MIN_ATTEMPT_TIME`] left, and each attempt's timeout
//! is cut to the time left, so the deadline is never exceeded; a timeout the client's deadline
//! caused never counts against the target's breaker. When every target is busy, the request
//! waits in a bounded queue; beyond it, it is shed at once (503). If every breaker is open,
//! the last target is tried anyway rather than failing without trying. For streams, the
//! first event is read before the caller commits anything to its client, so a target that
//! fails before its first byte falls back invisibly; the stream then keeps its target's
//! concurrency slot until it ends, within its idle and size bounds (`stream`).
//!
//! # Layout
//!
//! The loop ([`Router::chat`], [`Router::embeddings`]) is written once, here, and composes:
//!
//! - `ahead`: where a chat call starts ([`Start`]): its first target, picked when the LLM
//!   step opens the call, with that target's fleet admission sent in the same Redis round
//!   trip as the call's reservation, and given back when no attempt uses it.
//! - `slot`: a target with room, or a place in the wait queue, or shedding.
//! - `attempt`: one attempt — body, span, timeout cut to the deadline, outcome recorded in
//!   the target's state and the attempt record.
//! - `retry`: whether and when to try again (backoff, retry budget, deadline).
//! - `hedge`: a route's hedged first attempt (a second target after a delay, first answer
//!   wins, the other cancelled and billed), within its hedge budget.
//! - `exchange`: what differs between chat completions and embeddings (path, body, timeout,
//!   how the reply is read); `service`: the same for a stage's service call ([`Router::service`]).
//! - `record`: the attempt record and its typed [`Outcome`]s.
//! - `target` (live state), `breaker`, `budget`, `backoff`, `policy`, `refusal` (which
//!   failures reach the client), `stream` (a live upstream stream).

mod ahead;
mod attempt;
mod backoff;
mod breaker;
mod budget;
mod exchange;
mod hedge;
mod policy;
mod record;
mod refusal;
mod retry;
mod service;
mod slot;
mod stream;
mod target;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod timing_tests;

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use tokio::time::Instant;

pub use ahead::{FRESH as AHEAD_FRESH, Start};
pub use backoff::Backoff;
pub use policy::RoutePolicy;
pub use record::{Attempt, Outcome, Stop};
pub use service::{HOP_BY_HOP, ServiceCall, ServiceReply, asked};
pub use stream::{StreamLimits, UpstreamStream};
pub use target::TargetState;

use crate::config::Strategy;

use attempt::{Attempter, Deadline, Failed};
use exchange::{Chat, Embeddings, Exchange};
use record::describe;
use slot::{NoSlot, Slots};

use crate::providers::ProviderClient;
use crate::wit::{ChatRequest, ChatResponse};

/// A successful reply.
pub enum Reply {
    /// A whole `chat.completion`.
    Json {
        /// The answer.
        response: ChatResponse,
        /// Of its usage's prompt tokens, those written to the provider's prompt cache.
        cache_writes: u32,
    },
    /// A stream whose first event has already arrived.
    Stream(UpstreamStream),
}

/// Why no target produced a reply.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RouteError {
    /// Every target was tried and failed, or the deadline (the route's, or the client's
    /// `x-weir-deadline-ms`) ran out first.
    #[error("{}", all_failed_text(attempts))]
    AllFailed {
        /// Each attempt, in order.
        attempts: Vec<Attempt>,
    },
    /// Every target was at its limit and the wait queue was full or timed out.
    #[error("all targets of the route are at their limits; retry after {retry_after_s} s")]
    Overloaded {
        /// Seconds the client should wait.
        retry_after_s: u64,
    },
    /// Every target with room later is over its RPM or TPM (the fleet's, with a Redis
    /// backend) for longer than the request may wait: 429 with `Retry-After`.
    #[error("every target of the route is over its rate limit; retry after {retry_after_s} s")]
    RateLimited {
        /// Seconds until a target has room.
        retry_after_s: u64,
    },
    /// The targets' fleet-wide limits cannot be read (Redis unavailable, with
    /// `state.on_unavailable.rate_limits = "fail_closed"`).
    #[error("the fleet's rate limits are unavailable (Redis); retry later")]
    StateUnavailable,
    /// A target refused the request itself (a status weir does not retry and may relay, see
    /// `router::refusal`); its status and, for a client error, its message are passed on.
    #[error("upstream {target} refused the request: {message}")]
    Refused {
        /// The target.
        target: Arc<str>,
        /// Its status.
        status: u16,
        /// Its message (the upstream's own for a client error, generic otherwise).
        message: String,
    },
    /// A target failed with a status weir does not retry and must not relay (credentials,
    /// permissions, redirects, informational statuses: see `router::refusal`). The client gets a
    /// generic 502; the upstream's detail is only in the log and the attempt's span.
    #[error("upstream {target} could not serve the request")]
    Failed {
        /// The target.
        target: Arc<str>,
        /// The upstream status (for the log and the attempt record, not the client).
        status: u16,
    },
}

impl RouteError {
    /// Whether the call ended because its deadline ran out.
    fn deadline_ran_out(&self) -> bool {
        matches!(self, RouteError::AllFailed { attempts } if ran_out(attempts))
    }

    /// The HTTP status for the client: 504 when the deadline ran out, 502 when every target
    /// failed or one failed with a status that is not relayed, the upstream's own status
    /// when it refused the request.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::AllFailed { .. } if self.deadline_ran_out() => 504,
            RouteError::AllFailed { .. } | RouteError::Failed { .. } => 502,
            RouteError::Overloaded { .. } | RouteError::StateUnavailable => 503,
            RouteError::RateLimited { .. } => 429,
            RouteError::Refused { status, .. } => *status,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::AllFailed { .. } if self.deadline_ran_out() => "deadline_exceeded",
            RouteError::AllFailed { .. } => "all_targets_failed",
            RouteError::Overloaded { .. } => "overloaded",
            RouteError::RateLimited { .. } => "rate_limit_exceeded",
            RouteError::StateUnavailable => "state_unavailable",
            RouteError::Refused { .. } => "upstream_refused",
            RouteError::Failed { .. } => "upstream_error",
        }
    }
}

/// A routing failure as the client sees it: 502 listing every attempt, 503 with
/// `Retry-After` when every target was at its limit (shed), or the upstream's own refusal
/// with its status. The `type` follows the status: `invalid_request_error` below 500,
/// `upstream_error` from 500.
impl crate::error::ClientFacing for RouteError {
    fn status(&self) -> u16 {
        RouteError::status(self)
    }

    fn error_type(&self) -> &str {
        if let RouteError::RateLimited { .. } = self {
            return "rate_limit_error";
        }
        if RouteError::status(self) < 500 {
            "invalid_request_error"
        } else {
            "upstream_error"
        }
    }

    fn code(&self) -> &str {
        RouteError::code(self)
    }

    fn client_message(&self) -> String {
        self.to_string()
    }

    fn retry_after_s(&self) -> Option<u64> {
        match self {
            RouteError::Overloaded { retry_after_s }
            | RouteError::RateLimited { retry_after_s } => Some(*retry_after_s),
            RouteError::StateUnavailable => Some(1),
            _ => None,
        }
    }

    fn shed(&self) -> Option<crate::error::ShedReason> {
        match self {
            RouteError::Overloaded { .. } => Some(crate::error::ShedReason::Overloaded),
            RouteError::RateLimited { .. } => Some(crate::error::ShedReason::RateLimited),
            _ => None,
        }
    }
}

/// A route's chain of targets and its policy.
pub struct RoutePlan {
    /// Indexes into the router's targets, in fallback order.
    pub chain: Vec<usize>,
    /// Attempts, deadline, backoff, budget, queue.
    pub policy: RoutePolicy,
    /// How the first attempt's target is chosen.
    pub strategy: Strategy,
    /// One weight per chain entry, for [`Strategy::Weighted`].
    pub weights: Vec<u32>,
}

impl RoutePlan {
    /// The chain position of the first attempt's target.
    fn first(&self, targets: &[Arc<TargetState>]) -> usize {
        let n = self.chain.len();
        if n < 2 {
            return 0;
        }
        match self.strategy {
            Strategy::Fallback => 0,
            Strategy::Weighted => {
                let total: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
                if total == 0 {
                    return 0;
                }
                let mut draw = rand::random_range(0..total);
                for (position, weight) in self.weights.iter().enumerate() {
                    if draw < u64::from(*weight) {
                        return position;
                    }
                    draw -= u64::from(*weight);
                }
                0
            }
            Strategy::LeastLatency => {
                let a = rand::random_range(0..n);
                let b = (a + rand::random_range(1..n)) % n;
                let ewma = |p: usize| targets.get(self.chain[p]).map_or(u64::MAX, |t| t.ewma_us());
                if ewma(b) < ewma(a) { b } else { a }
            }
        }
    }
}

/// The targets and the client that reaches them.
pub struct Router {
    /// The pooled client.
    client: ProviderClient,
    /// Every configured target, indexed by the routes' chains.
    targets: Vec<Arc<TargetState>>,
}

impl Router {
    /// A router over `targets`.
    pub fn new(client: ProviderClient, targets: Vec<Arc<TargetState>>) -> Router {
        Router { client, targets }
    }

    /// The targets.
    pub fn targets(&self) -> &[Arc<TargetState>] {
        &self.targets
    }

    /// Sends a chat completion along a route from `start` ([`Router::start`]), under the
    /// route's policy; `attempts` records each try. `deadline` (from the client) may shorten
    /// the route's deadline, never lengthen it.
    pub async fn chat(
        &self,
        start: Start<'_>,
        request: &ChatRequest,
        forward: &[(HeaderName, HeaderValue)],
        deadline: Option<Duration>,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Reply, RouteError> {
        let Start {
            plan,
            position,
            ahead,
        } = start;
        let walk = Walk {
            chain: &plan.chain,
            first: position,
            policy: &plan.policy,
            ahead,
        };
        self.run(walk, &Chat { request, forward }, deadline, attempts)
            .await
    }

    /// Computes embeddings along `plan`'s chain, or on `only` that target (the semantic
    /// tier's embeddings target), under `plan`'s policy: the same loop as [`Router::chat`],
    /// with the route's deadline, which the caller's `deadline` may shorten. `body` is an
    /// OpenAI embeddings request; a target's `model` replaces its `model`. Returns the raw
    /// OpenAI body.
    pub async fn embeddings(
        &self,
        plan: &RoutePlan,
        only: Option<usize>,
        body: serde_json::Value,
        deadline: Option<Duration>,
        attempts: &mut Vec<Attempt>,
    ) -> Result<serde_json::Value, RouteError> {
        // Targets whose provider has no embeddings endpoint (Anthropic, Gemini) are left out
        // of the chain, so a chat route's fallbacks serve its embeddings too; when none has
        // one, the first attempt says so (a 400 naming the target).
        let embeds = |i: &usize| {
            self.targets
                .get(*i)
                .is_some_and(|t| t.upstream.dialect.kind().embeds())
        };
        let capable: Vec<usize>;
        let walk = match &only {
            Some(target) => Walk {
                chain: std::slice::from_ref(target),
                first: 0,
                policy: &plan.policy,
                ahead: None,
            },
            None if plan.chain.iter().all(embeds) || !plan.chain.iter().any(embeds) => Walk {
                chain: &plan.chain,
                first: plan.first(&self.targets),
                policy: &plan.policy,
                ahead: None,
            },
            None => {
                capable = plan.chain.iter().copied().filter(embeds).collect();
                Walk {
                    chain: &capable,
                    first: 0,
                    policy: &plan.policy,
                    ahead: None,
                }
            }
        };
        self.run(walk, &Embeddings { body }, deadline, attempts)
            .await
    }

    /// The attempt loop: take a slot (or wait for one, or shed), attempt, and after a
    /// retryable failure move on to the next target after the retry delay, until a reply, a
    /// final failure, `max_attempts`, the deadline or the retry budget ends the call.
    async fn run<E: Exchange>(
        &self,
        walk: Walk<'_>,
        exchange: &E,
        deadline: Option<Duration>,
        attempts: &mut Vec<Attempt>,
    ) -> Result<E::Output, RouteError> {
        let Walk {
            chain,
            first,
            policy,
            ahead,
        } = walk;
        let settings = &policy.settings;
        let started = Instant::now();
        let deadline = Deadline::new(started, settings.deadline, deadline);
        policy.budget.deposit(started);
        if let Some(hedges) = &policy.hedges {
            hedges.deposit(started);
        }
        let slots = Slots {
            targets: &self.targets,
            chain,
            policy,
            // Counted when the admission was sent ahead (the same estimate: one tokenizer
            // pass per call, not two).
            tokens: match &ahead {
                Some(ahead) => ahead.tokens(),
                None => exchange.tokens(&self.targets, chain),
            },
            queue_deadline: started + settings.queue_timeout,
            ahead: std::sync::Mutex::new(ahead),
        };
        let attempter = Attempter {
            client: &self.client,
            exchange,
            settings,
            deadline,
        };
        let mut next = first;
        let mut tries = 0u32;
        // Targets skipped in a row because they cannot carry the request, and the chain
        // positions of those that cannot (nothing allocated unless one is found).
        let mut skipped = 0usize;
        let mut cannot: Vec<usize> = Vec::new();
        while tries < settings.max_attempts {
            let taken = match slots.take(next, deadline.at).await {
                Ok(taken) => taken,
                Err(NoSlot::Shed) => return Err(RouteError::Overloaded { retry_after_s: 1 }),
                Err(NoSlot::Deadline) => return Err(stopped(attempts, Stop::Deadline)),
                Err(NoSlot::RateLimited(at)) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    let retry_after_s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    return Err(RouteError::RateLimited {
                        retry_after_s: retry_after_s.max(1),
                    });
                }
                Err(NoSlot::StateUnavailable) => return Err(RouteError::StateUnavailable),
            };
            let (result, position) = match (&policy.hedges, &settings.hedge) {
                (Some(budget), Some(hedge)) if tries == 0 && chain.len() > 1 => {
                    let hedged =
                        hedge::first_attempt(&attempter, &slots, hedge, budget, taken, attempts)
                            .await;
                    tries = hedged.made;
                    (hedged.result, hedged.position)
                }
                _ => {
                    tries += 1;
                    let position = taken.position;
                    let result = attempter
                        .attempt(taken.target, taken.slot, tries - 1, attempts)
                        .await;
                    (result, position)
                }
            };
            match result {
                Ok(output) => return Ok(output),
                Err(Failed::Final(err)) => return Err(err),
                Err(Failed::Retryable) => {}
            }
            next = (position + 1) % chain.len().max(1);
            if attempts.last().is_some_and(Attempt::untranslatable) {
                // Nothing was sent: the attempt is not spent, until a whole round of the chain
                // was skipped, and the next target goes at once unless it already failed
                // (then its backoff, counted over the targets that can carry the request).
                skipped += 1;
                if !cannot.contains(&position) {
                    cannot.push(position);
                }
                if skipped >= chain.len() {
                    break;
                }
                tries = tries.saturating_sub(1);
                let live = chain.len().saturating_sub(cannot.len());
                match retry::backoff(policy, tries, live, deadline.at, rand::random()) {
                    Ok(wait) if tries > 0 => tokio::time::sleep(wait).await,
                    Ok(_) => {}
                    Err(stop) => return Err(stopped(attempts, stop)),
                }
                continue;
            }
            skipped = 0;
            if tries >= settings.max_attempts {
                break;
            }
            let live = chain.len().saturating_sub(cannot.len());
            match retry::delay(policy, tries, live, deadline.at, rand::random()) {
                Ok(delay) => tokio::time::sleep(delay).await,
                Err(stop) => return Err(stopped(attempts, stop)),
            }
        }
        Err(all_failed(attempts))
    }
}

/// The text of [`RouteError::AllFailed`]: how many upstream calls were made (the loop
/// stopping is not one), and each entry of the record.
fn all_failed_text(attempts: &[Attempt]) -> String {
    let made = attempts.iter().filter(|a| a.outcome.is_attempt()).count();
    let calls = if made == 1 { "attempt" } else { "attempts" };
    if ran_out(attempts) {
        format!(
            "the deadline ran out after {made} upstream {calls}: {}",
            describe(attempts)
        )
    } else {
        format!("all {made} upstream {calls} failed: {}", describe(attempts))
    }
}

/// Whether a record ends because the call's deadline ran out: the loop stopped for it, or the
/// client's deadline cut the last attempt.
fn ran_out(attempts: &[Attempt]) -> bool {
    matches!(
        attempts.last().map(|a| &a.outcome),
        Some(Outcome::Stopped(Stop::Deadline) | Outcome::Cut { .. })
    )
}

/// What one call walks: a chain of targets from a first position, under a route's policy.
struct Walk<'a> {
    /// Indexes into the router's targets, in fallback order.
    chain: &'a [usize],
    /// The chain position of the first attempt's target.
    first: usize,
    /// Attempts, deadline, backoff, budget, queue.
    policy: &'a RoutePolicy,
    /// The first target's fleet admission, when it was sent ahead.
    ahead: Option<ahead::Ahead>,
}

/// Records that the loop stopped for `stop` and fails with every attempt.
fn stopped(attempts: &mut Vec<Attempt>, stop: Stop) -> RouteError {
    // Only skipped targets so far: the request is what no target took (the 400).
    let refused = !attempts.is_empty() && attempts.iter().all(Attempt::untranslatable);
    let failed = refused.then(|| all_failed(attempts));
    attempts.push(Attempt::stopped(stop));
    failed.unwrap_or_else(|| RouteError::AllFailed {
        attempts: attempts.clone(),
    })
}

/// The error of a call whose every attempt failed: when no target could carry the request
/// (each was untranslatable), the request itself is what no target of the route takes, a
/// 400 naming the field; otherwise every attempt, for the client to read.
fn all_failed(attempts: &[Attempt]) -> RouteError {
    match attempts.last() {
        Some(last) if attempts.iter().all(Attempt::untranslatable) => RouteError::Refused {
            target: last.target.clone(),
            status: 400,
            message: last
                .upstream_message
                .clone()
                .unwrap_or_else(|| last.outcome.to_string()),
        },
        _ => RouteError::AllFailed {
            attempts: attempts.to_vec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{black_hole, request, sim, target, target_with};
    use super::*;
    use crate::config::{BreakerSettings, PolicySettings, TargetLimits};
    use crate::sim::Faults;

    fn plan(chain: Vec<usize>, settings: PolicySettings) -> RoutePlan {
        RoutePlan {
            weights: vec![1; chain.len()],
            chain,
            policy: RoutePolicy::new(settings),
            strategy: Strategy::Fallback,
        }
    }

    fn failing() -> Faults {
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        }
    }

    fn tried(attempts: &[Attempt]) -> Vec<(&str, &str)> {
        attempts
            .iter()
            .map(|a| (&*a.target, a.outcome.as_str()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn embeddings_fail_over_skip_an_open_breaker_and_may_go_to_one_target() {
        let fragile = TargetLimits {
            breaker: BreakerSettings {
                consecutive_failures: 1,
                ..BreakerSettings::default()
            },
            ..TargetLimits::default()
        };
        let second = Duration::from_secs(1);
        let router = Router::new(
            ProviderClient::new().unwrap(),
            vec![
                target_with("broken", sim(failing()).await, second, fragile),
                target("good", sim(Faults::default()).await, second),
            ],
        );
        let plan = plan(vec![0, 1], PolicySettings::default());
        let body = serde_json::json!({"model": "e", "input": ["hello"]});
        let mut attempts = Vec::new();
        let value = router
            .embeddings(&plan, None, body.clone(), None, &mut attempts)
            .await
            .unwrap();
        assert!(
            value["data"][0]["embedding"]
                .as_array()
                .is_some_and(|v| !v.is_empty())
        );
        assert_eq!(
            tried(&attempts),
            [("broken", "upstream status 500"), ("good", "ok")]
        );
        assert_eq!(attempts[1].model, "e");
        assert!(attempts[1].usage.is_some());
        assert_eq!(router.targets()[0].breaker_gauge(), 2, "open");

        // The open breaker is skipped, as for chat.
        let mut attempts = Vec::new();
        router
            .embeddings(&plan, None, body.clone(), None, &mut attempts)
            .await
            .unwrap();
        assert_eq!(tried(&attempts), [("good", "ok")]);

        // One target alone (the semantic tier's), outside the chain, under its policy.
        let broken_only = self::plan(vec![0], PolicySettings::default());
        let mut attempts = Vec::new();
        router
            .embeddings(&broken_only, Some(1), body, None, &mut attempts)
            .await
            .unwrap();
        assert_eq!(tried(&attempts), [("good", "ok")]);
    }

    #[tokio::test(start_paused = true)]
    async fn embeddings_keep_the_routes_deadline_and_retry_budget() {
        let (hole, _server) = black_hole().await;
        let router = Router::new(
            ProviderClient::new().unwrap(),
            vec![target("slow", hole, Duration::from_secs(10))],
        );
        let short = plan(
            vec![0],
            PolicySettings {
                max_attempts: 1,
                deadline: Duration::from_millis(300),
                ..PolicySettings::default()
            },
        );
        let started = Instant::now();
        let mut attempts = Vec::new();
        let body = serde_json::json!({"input": ["x"]});
        let result = router
            .embeddings(&short, None, body.clone(), None, &mut attempts)
            .await;
        assert!(matches!(result, Err(RouteError::AllFailed { .. })));
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        assert_eq!(tried(&attempts), [("slow", "timed out after 300ms")]);

        // No ratio: the budget's floor grants 10 retries in 10 s, then stops the call.
        let router = Router::new(
            ProviderClient::new().unwrap(),
            vec![target(
                "broken",
                sim(failing()).await,
                Duration::from_secs(1),
            )],
        );
        let tight = plan(
            vec![0],
            PolicySettings {
                max_attempts: 20,
                retry_budget_percent: 0,
                backoff_base: Duration::ZERO,
                ..PolicySettings::default()
            },
        );
        let mut attempts = Vec::new();
        let err = router
            .embeddings(&tight, None, body, None, &mut attempts)
            .await
            .err()
            .unwrap();
        assert_eq!(attempts.len(), 12, "{attempts:?}");
        assert!(attempts[..11].iter().all(|a| a.status == Some(500)));
        assert_eq!(attempts[11].outcome, Outcome::Stopped(Stop::Budget));
        assert!(
            err.to_string()
                .starts_with("all 11 upstream attempts failed: broken (upstream status 500); ")
                && err
                    .to_string()
                    .ends_with("; - (retry budget exhausted; no further attempt)"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_never_exceeded_and_cuts_the_last_attempt() {
        let (addr, _server) = black_hole().await;
        let router = Router::new(
            ProviderClient::new().unwrap(),
            vec![
                target("a", addr, Duration::from_millis(400)),
                target("b", addr, Duration::from_millis(400)),
            ],
        );
        let plan = RoutePlan {
            chain: vec![0, 1],
            policy: RoutePolicy::new(PolicySettings {
                max_attempts: 10,
                deadline: Duration::from_millis(1000),
                retry_budget_percent: 1000,
                ..PolicySettings::default()
            }),
            strategy: Strategy::Fallback,
            weights: vec![1, 1],
        };
        let started = Instant::now();
        let mut attempts = Vec::new();
        let result = router
            .chat(router.start(&plan), &request(), &[], None, &mut attempts)
            .await;
        let elapsed = started.elapsed();
        assert!(matches!(result, Err(RouteError::AllFailed { .. })));
        assert!(elapsed <= Duration::from_millis(1000), "{elapsed:?}");
        let tried: Vec<(&str, Duration)> = attempts
            .iter()
            .filter(|a| a.outcome.is_attempt())
            .map(|a| (&*a.target, a.elapsed))
            .collect();
        // 400 ms on a, 400 ms on b, then a gets what is left (~200 ms minus backoff).
        assert_eq!(tried.len(), 3, "{attempts:?}");
        assert_eq!(tried[0], ("a", Duration::from_millis(400)));
        assert_eq!(tried[1], ("b", Duration::from_millis(400)));
        assert!(tried[2].1 < Duration::from_millis(200), "{:?}", tried[2]);
        assert_eq!(
            attempts.last().map(|a| &a.outcome),
            Some(&Outcome::Stopped(Stop::Deadline))
        );

        // A client deadline shortens it further.
        let started = Instant::now();
        let mut attempts = Vec::new();
        let _ = router
            .chat(
                router.start(&plan),
                &request(),
                &[],
                Some(Duration::from_millis(250)),
                &mut attempts,
            )
            .await;
        assert!(started.elapsed() <= Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_cut_by_the_client_deadline_never_counts_against_the_breaker() {
        let (addr, _server) = black_hole().await;
        let limits = TargetLimits {
            breaker: crate::config::BreakerSettings {
                consecutive_failures: 1,
                ..crate::config::BreakerSettings::default()
            },
            ..TargetLimits::default()
        };
        let router = Router::new(
            ProviderClient::new().unwrap(),
            vec![target_with("primary", addr, Duration::from_secs(1), limits)],
        );
        let plan = RoutePlan {
            chain: vec![0],
            policy: RoutePolicy::new(PolicySettings {
                max_attempts: 1,
                ..PolicySettings::default()
            }),
            strategy: Strategy::Fallback,
            weights: vec![1],
        };
        for _ in 0..10 {
            let mut attempts = Vec::new();
            let result = router
                .chat(
                    router.start(&plan),
                    &request(),
                    &[],
                    Some(Duration::from_millis(20)),
                    &mut attempts,
                )
                .await;
            assert!(matches!(result, Err(RouteError::AllFailed { .. })));
            assert!(
                attempts[0]
                    .outcome
                    .as_str()
                    .starts_with("cut by the client's deadline"),
                "{attempts:?}"
            );
            assert_eq!(router.targets()[0].breaker_gauge(), 0, "still closed");
        }
        assert_eq!(router.targets()[0].snapshot(Instant::now())["in_flight"], 0);

        // A timeout at the target's own timeout_ms still counts.
        let mut attempts = Vec::new();
        let _ = router
            .chat(router.start(&plan), &request(), &[], None, &mut attempts)
            .await;
        assert_eq!(attempts[0].elapsed, Duration::from_secs(1));
        assert_eq!(router.targets()[0].breaker_gauge(), 2, "open");

        // So does a timeout at the route's own deadline, shorter than the target's timeout:
        // that is the operator's choice, not the client's.
        let router = Router::new(
            ProviderClient::new().unwrap(),
            vec![target_with("primary", addr, Duration::from_secs(1), limits)],
        );
        let short = RoutePlan {
            policy: RoutePolicy::new(PolicySettings {
                max_attempts: 1,
                deadline: Duration::from_millis(100),
                ..PolicySettings::default()
            }),
            ..plan
        };
        let mut attempts = Vec::new();
        let _ = router
            .chat(router.start(&short), &request(), &[], None, &mut attempts)
            .await;
        assert_eq!(router.targets()[0].breaker_gauge(), 2, "open");
    }
}
