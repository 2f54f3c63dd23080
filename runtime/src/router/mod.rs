//! Routing one LLM call across a route's upstream targets.
//!
//! Owns: each target's live state (breaker, concurrency limit, RPM bucket, `Retry-After`
//! cool-down), each route's policy (attempts, total deadline, backoff, retry budget, wait
//! queue) and the record of every attempt.
//!
//! One request: targets are tried in the route's order (`fallback`), skipping those whose
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

mod backoff;
mod breaker;
mod budget;
mod policy;
mod refusal;
mod stream;
mod target;
#[cfg(test)]
mod timing_tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use tokio::time::Instant;
use tracing::Instrument;

pub use backoff::Backoff;
pub use policy::RoutePolicy;
pub use stream::{StreamLimits, UpstreamStream};
pub use target::TargetState;

use crate::config::Strategy;

use refusal::refusal;
use target::Unavailable;

use crate::openai::{parse_response, request_to_json};
use crate::providers::{AttemptError, ProviderClient, read_body};
use crate::wit::{ChatRequest, ChatResponse};

/// One attempt against one target.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The target's name.
    pub target: Arc<str>,
    /// `ok`, or what went wrong.
    pub outcome: std::borrow::Cow<'static, str>,
    /// The upstream status, when there was one.
    pub status: Option<u16>,
    /// How long the attempt took.
    pub elapsed: Duration,
    /// The upstream model the attempt asked for (empty for a note that was no attempt).
    pub model: String,
    /// Usage the upstream reported: a JSON answer's, or a failed attempt's error body's
    /// (some providers bill a request that failed after generating). For a stream, filled
    /// in by whoever reads it to the end.
    pub usage: Option<crate::wit::Usage>,
}

/// A successful reply.
pub enum Reply {
    /// A whole `chat.completion`.
    Json(ChatResponse),
    /// A stream whose first event has already arrived.
    Stream(UpstreamStream),
}

/// Why no target produced a reply.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RouteError {
    /// Every target was tried and failed.
    #[error("all {} upstream attempts failed: {}", attempts.len(), describe(attempts))]
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
    /// The HTTP status for the client: 502 when every target failed or one failed with a
    /// status that is not relayed, the upstream's own status when it refused the request.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::AllFailed { .. } | RouteError::Failed { .. } => 502,
            RouteError::Overloaded { .. } => 503,
            RouteError::Refused { status, .. } => *status,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::AllFailed { .. } => "all_targets_failed",
            RouteError::Overloaded { .. } => "overloaded",
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
            RouteError::Overloaded { retry_after_s } => Some(*retry_after_s),
            _ => None,
        }
    }

    fn shed(&self) -> Option<crate::error::ShedReason> {
        match self {
            RouteError::Overloaded { .. } => Some(crate::error::ShedReason::Overloaded),
            _ => None,
        }
    }
}

/// Tokens a request may use on `chain`, for target TPM limits: the prompt counted with the
/// real tokenizer (as budgets count it), plus `max_tokens` (or
/// [`DEFAULT_COMPLETION_ESTIMATE`] when the client set none). 0 when no target of the chain
/// has a TPM limit, so requests that need no count pay nothing for it.
fn estimate_tokens(targets: &[Arc<TargetState>], chain: &[usize], request: &ChatRequest) -> u32 {
    let limited = chain
        .iter()
        .filter_map(|&i| targets.get(i))
        .find(|t| t.limits.tpm.is_some());
    let Some(target) = limited else {
        return 0;
    };
    let model = target.upstream.model.as_deref().unwrap_or(&request.model);
    crate::cost::tokens::count_prompt(model, request)
        .saturating_add(request.max_tokens.unwrap_or(DEFAULT_COMPLETION_ESTIMATE))
}

/// Completion tokens assumed for a TPM limit when the request sets no `max_tokens`.
const DEFAULT_COMPLETION_ESTIMATE: u32 = 256;

/// Adds a note (no upstream call) to the attempt record.
fn note(attempts: &mut Vec<Attempt>, target: &str, outcome: &str) {
    attempts.push(Attempt {
        target: target.into(),
        outcome: outcome.to_string().into(),
        status: None,
        elapsed: Duration::ZERO,
        model: String::new(),
        usage: None,
    });
}

fn describe(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{} ({})", a.target, a.outcome))
        .collect::<Vec<_>>()
        .join("; ")
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

/// The outcome of looking for a target with room.
enum Pick {
    /// This target (index into the chain) took the attempt.
    Got(usize, target::Slot),
    /// None could take it now; wait for the soonest change.
    Wait {
        /// A target at its concurrency limit to wait on, if any.
        busy: Option<usize>,
        /// When a cooling-down or rate-limited target frees up, if any.
        soonest: Option<Instant>,
    },
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

    /// Sends a chat completion along `plan`, under its policy; `attempts` records each try.
    /// `deadline` (from the client) may shorten the route's deadline, never lengthen it.
    pub async fn chat(
        &self,
        plan: &RoutePlan,
        request: &ChatRequest,
        forward: &[(HeaderName, HeaderValue)],
        deadline: Option<Duration>,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Reply, RouteError> {
        let settings = &plan.policy.settings;
        let started = Instant::now();
        let route_deadline = started + settings.deadline;
        let deadline = started + deadline.map_or(settings.deadline, |d| d.min(settings.deadline));
        plan.policy.budget.deposit(started);
        let mut next = plan.first(&self.targets);
        let tokens = estimate_tokens(&self.targets, &plan.chain, request);
        let mut tries = 0u32;
        let mut queued = None;
        let queue_deadline = started + settings.queue_timeout;
        let all_failed = |attempts: &Vec<Attempt>| RouteError::AllFailed {
            attempts: attempts.clone(),
        };
        while tries < settings.max_attempts {
            let now = Instant::now();
            if deadline.saturating_duration_since(now) < policy::MIN_ATTEMPT_TIME {
                note(attempts, "-", "deadline reached; no further attempt");
                return Err(all_failed(attempts));
            }
            let (position, slot) = match self.pick(&plan.chain, next, tokens, now) {
                Pick::Got(position, slot) => (position, slot),
                Pick::Wait { busy, soonest } => {
                    if queued.is_none() {
                        match plan.policy.queue.try_acquire() {
                            Ok(permit) => queued = Some(permit),
                            Err(_) => return Err(RouteError::Overloaded { retry_after_s: 1 }),
                        }
                    }
                    let until = queue_deadline.min(deadline);
                    if now >= until {
                        return Err(RouteError::Overloaded { retry_after_s: 1 });
                    }
                    let wake = soonest.map_or(until, |s| s.min(until));
                    match busy.and_then(|i| self.targets.get(plan.chain[i])) {
                        Some(target) => {
                            let _ = tokio::time::timeout_at(wake, target.wait_for_room()).await;
                        }
                        None => tokio::time::sleep_until(wake).await,
                    }
                    continue;
                }
            };
            drop(queued.take());
            let target = &self.targets[plan.chain[position]];
            tries += 1;
            let per_attempt = if request.stream {
                target.upstream.ttft_timeout
            } else {
                target.upstream.timeout
            };
            let attempt_timeout = per_attempt.min(deadline.saturating_duration_since(now));
            // An attempt the client's `x-weir-deadline-ms` cut shorter than the target's own
            // timeout (and the route's deadline) allow: its timeout says nothing about the
            // target and must not count against its breaker, or any client could eject a
            // target for every tenant. The route's deadline is the operator's and counts.
            let cut_by_client =
                attempt_timeout < per_attempt.min(route_deadline.saturating_duration_since(now));
            let model = target
                .upstream
                .model
                .clone()
                .unwrap_or_else(|| request.model.clone());
            let body =
                Bytes::from(request_to_json(request, target.upstream.model.as_deref()).to_string());
            let span = tracing::debug_span!(
                target: "weir::attempt",
                "weir.attempt",
                otel.name = %format_args!("chat {model}"),
                otel.kind = "client",
                gen_ai.operation.name = "chat",
                gen_ai.request.model = model.as_str(),
                server.address = target.upstream.base_url.as_str(),
                weir.target = &*target.upstream.name,
                weir.retry = tries - 1,
                http.response.status_code = tracing::field::Empty,
                weir.outcome = tracing::field::Empty,
                error.type = tracing::field::Empty,
                weir.upstream_message = tracing::field::Empty,
            );
            let result = self
                .attempt(target, body, request.stream, forward, attempt_timeout)
                .instrument(span.clone())
                .await;
            let done = Instant::now();
            let elapsed = done - now;
            let deadline_cut = cut_by_client && matches!(result, Err(AttemptError::Timeout(_)));
            let outcome = match &result {
                Ok(_) => "ok",
                Err(_) if deadline_cut => "deadline",
                Err(err) => err.kind(),
            };
            crate::telemetry::attempt(&target.upstream.name, outcome, elapsed);
            span.record("weir.outcome", outcome);
            match &result {
                Ok(_) => span.record("http.response.status_code", 200),
                Err(err) => {
                    if let Some(status) = err.status() {
                        span.record("http.response.status_code", status);
                    }
                    if let Some(message) = err.upstream_message() {
                        span.record("weir.upstream_message", message.as_str());
                    }
                    span.record("error.type", outcome)
                }
            };
            drop(span);
            match result {
                Ok(mut reply) => {
                    let mut slot = slot;
                    target.record(&mut slot, true, None, elapsed, done);
                    let usage = match &mut reply {
                        Reply::Json(response) => response.usage,
                        // A live stream keeps the slot until it ends: streams in progress
                        // count against the target's `max_concurrency`.
                        Reply::Stream(stream) => {
                            stream.hold(slot);
                            None
                        }
                    };
                    attempts.push(Attempt {
                        target: target.upstream.name.clone(),
                        outcome: "ok".into(),
                        status: Some(200),
                        elapsed,
                        model,
                        usage,
                    });
                    return Ok(reply);
                }
                Err(err) => {
                    let retryable = err.is_retryable(&settings.retry_on);
                    let retry_after = err.retry_after().map(|ra| ra.min(settings.retry_after_max));
                    if deadline_cut {
                        // No outcome: the slot (a probe included) is given back as if the
                        // attempt had never been made.
                        drop(slot);
                    } else {
                        // A refusal of the request itself says nothing bad about the target.
                        target.finish(slot, !retryable, retry_after, elapsed, done);
                    }
                    tracing::warn!(
                        target = &*target.upstream.name,
                        error = %err,
                        detail = err.upstream_message().as_deref().unwrap_or(""),
                        attempt = tries,
                        "upstream attempt failed"
                    );
                    let outcome = if deadline_cut {
                        format!("cut by the client's deadline: {err}")
                    } else {
                        err.to_string()
                    };
                    attempts.push(Attempt {
                        target: target.upstream.name.clone(),
                        outcome: outcome.into(),
                        status: err.status(),
                        elapsed,
                        model,
                        usage: err.usage(),
                    });
                    if !retryable {
                        return Err(refusal(&target.upstream, &err));
                    }
                }
            }
            if tries >= settings.max_attempts {
                break;
            }
            next = (position + 1) % plan.chain.len().max(1);
            // Failing over to a target not tried yet needs no pause; coming back round to one
            // that already failed backs off, with full jitter.
            let chain_len = plan.chain.len() as u32;
            let delay = if tries < chain_len {
                Duration::ZERO
            } else {
                plan.policy
                    .backoff
                    .delay(tries - chain_len, rand::random::<f64>())
            };
            if Instant::now() + delay + policy::MIN_ATTEMPT_TIME >= deadline {
                note(attempts, "-", "deadline reached; no further attempt");
                return Err(all_failed(attempts));
            }
            if !plan.policy.budget.withdraw(Instant::now()) {
                note(attempts, "-", "retry budget exhausted; no further attempt");
                return Err(all_failed(attempts));
            }
            tokio::time::sleep(delay).await;
        }
        Err(all_failed(attempts))
    }

    /// The first target from `start` (wrapping) that takes the attempt now. If every
    /// breaker is open, the chain's last target is tried anyway.
    fn pick(&self, chain: &[usize], start: usize, tokens: u32, now: Instant) -> Pick {
        let mut busy = None;
        let mut soonest: Option<Instant> = None;
        let mut all_open = true;
        for offset in 0..chain.len() {
            let position = (start + offset) % chain.len();
            let Some(target) = self.targets.get(chain[position]) else {
                continue;
            };
            match target.try_slot(now, tokens, false) {
                Ok(slot) => return Pick::Got(position, slot),
                Err(Unavailable::Open) => {}
                Err(Unavailable::Busy) => {
                    all_open = false;
                    busy.get_or_insert(position);
                }
                Err(Unavailable::CoolingDown(at) | Unavailable::RateLimited(at)) => {
                    all_open = false;
                    soonest = Some(soonest.map_or(at, |s| s.min(at)));
                }
            }
        }
        if all_open && let Some(&last) = chain.last() {
            let position = chain.len() - 1;
            if let Some(target) = self.targets.get(last) {
                match target.try_slot(now, tokens, true) {
                    Ok(slot) => return Pick::Got(position, slot),
                    Err(_) => busy = Some(position),
                }
            }
        }
        Pick::Wait { busy, soonest }
    }

    /// One attempt within `timeout`: headers and, for JSON, the body; for a stream, headers
    /// and the first event. One timer per phase, never beyond `timeout` in all.
    async fn attempt(
        &self,
        state: &TargetState,
        body: Bytes,
        stream: bool,
        forward: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> Result<Reply, AttemptError> {
        let target = &*state.upstream;
        let deadline = Instant::now() + timeout;
        // With spans exported, the upstream's parent is this attempt's span.
        let traced;
        let forward = match crate::telemetry::current_traceparent()
            .and_then(|t| HeaderValue::from_str(&t).ok())
        {
            Some(traceparent) => {
                traced = forward
                    .iter()
                    .filter(|(name, _)| name != "traceparent")
                    .cloned()
                    .chain([(HeaderName::from_static("traceparent"), traceparent)])
                    .collect::<Vec<_>>();
                &traced[..]
            }
            None => forward,
        };
        let response = self
            .client
            .post(target, "/chat/completions", body, forward, timeout)
            .await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AttemptError::Timeout(timeout));
        }
        if stream {
            let limits = StreamLimits {
                idle_timeout: state.limits.stream_idle_timeout,
                max_bytes: state.limits.max_stream_bytes,
            };
            let body = http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(
                response.into_body(),
                Into::into,
            ));
            let stream = UpstreamStream::open(target.name.clone(), body, left, limits).await?;
            return Ok(Reply::Stream(stream));
        }
        let bytes = read_body(response.into_body(), left).await?;
        parse_response(&bytes)
            .map(Reply::Json)
            .ok_or_else(|| AttemptError::Protocol("the reply is not a chat completion".to_string()))
    }

    /// Computes embeddings along `chain`; first success wins. Returns the raw OpenAI body.
    pub async fn embeddings(
        &self,
        chain: &[usize],
        body: serde_json::Value,
        attempts: &mut Vec<Attempt>,
    ) -> Result<serde_json::Value, RouteError> {
        for &index in chain {
            let Some(target) = self.targets.get(index).map(|t| &t.upstream) else {
                continue;
            };
            let started = Instant::now();
            let mut body = body.clone();
            if let Some(model) = &target.model
                && body.get("model").is_none()
            {
                body["model"] = serde_json::Value::String(model.clone());
            }
            let result = async {
                // One deadline for the whole attempt, the body included.
                let deadline = started + target.timeout;
                let response = self
                    .client
                    .post(
                        target,
                        "/embeddings",
                        Bytes::from(body.to_string()),
                        &[],
                        target.timeout,
                    )
                    .await?;
                let left = deadline.saturating_duration_since(Instant::now());
                let bytes = read_body(response.into_body(), left).await?;
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map_err(|err| AttemptError::Protocol(err.to_string()))
            }
            .await;
            let elapsed = started.elapsed();
            let model = body["model"].as_str().unwrap_or_default().to_string();
            match result {
                Ok(value) => {
                    attempts.push(Attempt {
                        target: target.name.clone(),
                        outcome: "ok".into(),
                        status: Some(200),
                        elapsed,
                        model,
                        usage: crate::openai::parse_usage(&value["usage"]),
                    });
                    return Ok(value);
                }
                Err(err) => {
                    attempts.push(Attempt {
                        target: target.name.clone(),
                        outcome: err.to_string().into(),
                        status: err.status(),
                        elapsed,
                        model,
                        usage: err.usage(),
                    });
                    if !err.is_retryable(&crate::config::StatusSet::retryable_default()) {
                        tracing::warn!(
                            target = &*target.name,
                            error = %err,
                            detail = err.upstream_message().as_deref().unwrap_or(""),
                            "upstream embeddings attempt failed"
                        );
                        return Err(refusal(target, &err));
                    }
                }
            }
        }
        Err(RouteError::AllFailed {
            attempts: attempts.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{PolicySettings, TargetLimits};
    use crate::providers::Upstream;
    use crate::wit::{Content, Message};

    /// A loopback listener that accepts connections and never answers.
    async fn black_hole() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        (addr, task)
    }

    fn target(name: &str, addr: std::net::SocketAddr, timeout: Duration) -> Arc<TargetState> {
        target_with(name, addr, timeout, TargetLimits::default())
    }

    fn target_with(
        name: &str,
        addr: std::net::SocketAddr,
        timeout: Duration,
        limits: TargetLimits,
    ) -> Arc<TargetState> {
        Arc::new(TargetState::new(
            Arc::new(Upstream {
                name: name.into(),
                base_url: format!("http://{addr}/v1"),
                api_key: None,
                model: None,
                timeout,
                ttft_timeout: timeout,
                headers: Vec::new(),
            }),
            limits,
        ))
    }

    fn request() -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message {
                role: "user".into(),
                content: Some(Content::Text("hi".into())),
                name: None,
                extra: "{}".into(),
            }],
            temperature: None,
            top_p: None,
            max_tokens: None,
            stream: false,
            user: None,
            metadata: Vec::new(),
            extra: "{}".into(),
        }
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
            .chat(&plan, &request(), &[], None, &mut attempts)
            .await;
        let elapsed = started.elapsed();
        assert!(matches!(result, Err(RouteError::AllFailed { .. })));
        assert!(elapsed <= Duration::from_millis(1000), "{elapsed:?}");
        let tried: Vec<(&str, Duration)> = attempts
            .iter()
            .filter(|a| &*a.target != "-")
            .map(|a| (&*a.target, a.elapsed))
            .collect();
        // 400 ms on a, 400 ms on b, then a gets what is left (~200 ms minus backoff).
        assert_eq!(tried.len(), 3, "{attempts:?}");
        assert_eq!(tried[0], ("a", Duration::from_millis(400)));
        assert_eq!(tried[1], ("b", Duration::from_millis(400)));
        assert!(tried[2].1 < Duration::from_millis(200), "{:?}", tried[2]);

        // A client deadline shortens it further.
        let started = Instant::now();
        let mut attempts = Vec::new();
        let _ = router
            .chat(
                &plan,
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
                    &plan,
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
                    .starts_with("cut by the client's deadline"),
                "{attempts:?}"
            );
            assert_eq!(router.targets()[0].breaker_gauge(), 0, "still closed");
        }
        assert_eq!(router.targets()[0].snapshot(Instant::now())["in_flight"], 0);

        // A timeout at the target's own timeout_ms still counts.
        let mut attempts = Vec::new();
        let _ = router
            .chat(&plan, &request(), &[], None, &mut attempts)
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
            .chat(&short, &request(), &[], None, &mut attempts)
            .await;
        assert_eq!(router.targets()[0].breaker_gauge(), 2, "open");
    }
}
