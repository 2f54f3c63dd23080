//! The step itself: the routes it serves, one call through it (with its `weir.llm` span),
//! and the metered router call every path ends in.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::Instrument;

use super::charge::CallCharge;
use super::{AnswerStream, Call, Costing, StepError};
use crate::cache::{CacheKey, CacheStatus, ResponseCache, request_key};
use crate::config::RouteCacheSettings;
use crate::cost::{CostError, Hold};
use crate::router::{Attempt, Reply, RoutePlan, Router, Start};
use crate::wit::ChatResponse;

/// One route as the LLM step sees it.
pub struct RouteStep {
    /// Target chain and routing policy.
    pub plan: RoutePlan,
    /// Cache policy.
    pub cache: RouteCacheSettings,
}

/// The LLM step for every route.
pub struct LlmStep {
    /// Targets and the client.
    pub(super) router: Router,
    /// Route alias → its plan and cache policy.
    pub(super) plans: HashMap<String, RouteStep>,
    /// The response cache shared by all routes (keys include the route).
    pub(super) cache: ResponseCache,
    /// Prices, the ledger and how calls are reserved and charged.
    pub(super) costing: Arc<Costing>,
}

/// What the LLM step produced for one request.
pub struct StepReply {
    /// The answer, or why there is none.
    pub result: Result<Answer, StepError>,
    /// How the cache was involved.
    pub cache: CacheStatus,
    /// For a semantic hit: how similar the last user message was.
    pub similarity: Option<f32>,
    /// The cache entry the answer came from or went to (`x-weir-cache-key`), when the route
    /// caches this request.
    pub key: Option<CacheKey>,
    /// Each upstream attempt the call made (none when the cache answered).
    pub attempts: Vec<Attempt>,
}

impl StepReply {
    /// A reply with `cache` status and nothing else to report.
    pub(super) fn new(result: Result<Answer, StepError>, cache: CacheStatus) -> StepReply {
        StepReply {
            result,
            cache,
            similarity: None,
            key: None,
            attempts: Vec::new(),
        }
    }
}

/// A call opened by [`LlmStep::open`].
pub(super) struct Opened<'a> {
    /// Counted and reserved, or refused.
    pub(super) hold: Result<Hold, CostError>,
    /// Where it starts on its route.
    pub(super) start: Start<'a>,
}

/// The LLM step's answer.
pub enum Answer {
    /// A whole `chat.completion`, settled (and stored, when the route caches it).
    Whole(ChatResponse),
    /// A live stream whose first event has arrived; it settles its cost and cache fill as
    /// it is read ([`AnswerStream`]; boxed, it is large).
    Stream(Box<AnswerStream>),
}

impl LlmStep {
    /// A step over `router`, with each route's plan, a response cache and the costing.
    pub fn new(
        router: Router,
        plans: HashMap<String, RouteStep>,
        cache: ResponseCache,
        costing: Costing,
    ) -> LlmStep {
        LlmStep {
            router,
            plans,
            cache,
            costing: Arc::new(costing),
        }
    }

    /// Prices, the ledger and the reservation rules.
    pub fn costing(&self) -> &Costing {
        &self.costing
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Runs the step for a client's `call`, inside its `weir.llm` span: cache lookup,
    /// single-flight for identical misses, the router (with the call reserved against the
    /// key's budgets and settled at its real cost), and the cache fill.
    pub async fn complete(&self, call: Call<'_>) -> StepReply {
        let span = tracing::debug_span!(
            target: "weir::llm",
            "weir.llm",
            otel.name = %format_args!("chat {}", call.request.model),
            gen_ai.operation.name = "chat",
            gen_ai.request.model = call.request.model.as_str(),
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.response.id = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            weir.cache = tracing::field::Empty,
            weir.attempts = tracing::field::Empty,
        );
        let reply = self.run(call).instrument(span.clone()).await;
        span.record("weir.cache", reply.cache.as_str());
        span.record("weir.attempts", reply.attempts.len());
        if let Ok(Answer::Whole(response)) = &reply.result {
            span.record("gen_ai.response.model", response.model.as_str());
            span.record("gen_ai.response.id", response.id.as_str());
            if let Some(usage) = response.usage {
                span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
                span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
            }
        }
        reply
    }

    /// [`LlmStep::complete`] without its span.
    async fn run(&self, call: Call<'_>) -> StepReply {
        let Some(step) = self.plans.get(call.route) else {
            return StepReply::new(Err(unknown(call.route)), CacheStatus::Bypass);
        };
        let policy = step.cache;
        let deterministic = call.request.temperature == Some(0.0);
        if !policy.enabled
            || call.control.no_store
            || !(deterministic || policy.cache_nonzero_temperature)
        {
            return self.metered(step, &call, CacheStatus::Bypass).await;
        }
        let tenant = policy.per_key.then(|| call.meter.key_name());
        let key = request_key(call.route, tenant, call.request);
        let mut reply = self.cached(step, &call, key).await;
        reply.key.get_or_insert(key);
        reply
    }

    /// One metered call along `step`'s chain, accounted with `cache` as its cache status:
    /// reserve, route, charge. The reservation and the attempt record live in a
    /// [`CallCharge`], so the call settles even when this future is dropped midway; a stream
    /// carries its reservation and settles it itself.
    pub(super) async fn metered(
        &self,
        step: &RouteStep,
        call: &Call<'_>,
        cache: CacheStatus,
    ) -> StepReply {
        let opened = self.open(step, call).await;
        self.metered_with(call, cache, opened).await
    }

    /// Counts and reserves a call along `step`'s chain ([`Costing::open`]) and picks where it
    /// starts on the route. When the first target's fleet admission is a Redis call of its
    /// own, it is sent now, in the same round trip as the key's admission and reservation
    /// (`router::Start`), unless the key's last call was refused or the request has no call
    /// left (a refused call would only hold a provider's permit for nothing).
    pub(super) async fn open<'a>(&self, step: &'a RouteStep, call: &Call<'_>) -> Opened<'a> {
        let meter = call.meter;
        let opening = self
            .costing
            .open(&self.router, &step.plan.chain, call.request, meter);
        let account = meter.account.as_ref();
        let ahead = meter.has_call_left() && account.is_none_or(|a| !a.refused_last());
        let (hold, start) = match ahead {
            true => tokio::join!(opening, self.router.start_ahead(&step.plan, call.request)),
            false => (opening.await, self.router.start(&step.plan)),
        };
        if let Some(account) = account {
            account.note_opened(hold.is_ok());
        }
        Opened { hold, start }
    }

    /// [`LlmStep::metered`] with the call already opened.
    pub(super) async fn metered_with(
        &self,
        call: &Call<'_>,
        cache: CacheStatus,
        opened: Opened<'_>,
    ) -> StepReply {
        let request = call.request;
        let Opened { hold, start } = opened;
        let hold = match hold {
            Ok(hold) => hold,
            Err(err) => return StepReply::new(Err(StepError::Cost(err)), cache),
        };
        let mut charge = CallCharge::new(&self.costing, hold, request, call.site(cache));
        let routed = self
            .router
            .chat(
                start,
                request,
                call.forward,
                call.deadline,
                &mut charge.attempts,
            )
            .await;
        let (result, attempts) = match routed {
            Ok(Reply::Stream(upstream)) => {
                let (charge, attempts) = charge.stream();
                let stream = AnswerStream::new(upstream, charge);
                (Ok(Answer::Stream(Box::new(stream))), attempts)
            }
            Ok(Reply::Json { mut response, .. }) => {
                let attempts = charge.settle(Some(&response));
                if response.usage.is_none() {
                    // The upstream reported none (or none weir could read): the answer carries
                    // the usage it was charged, counted locally, as a stream's usage chunk does.
                    let model = attempts.iter().rev().find(|a| a.outcome.is_ok());
                    let model = model.map_or(request.model.as_str(), |a| a.model.as_str());
                    response.usage = Some(super::costing::estimate_usage(
                        model,
                        request,
                        &response.text(),
                    ));
                }
                (Ok(Answer::Whole(response)), attempts)
            }
            Err(err) => (Err(StepError::Route(err)), charge.settle(None)),
        };
        StepReply {
            attempts,
            ..StepReply::new(result, cache)
        }
    }

    /// Sends `call.request` along `call.route`'s chain without the cache (a stage's
    /// `complete()`), metered like any call.
    pub async fn chat(&self, call: Call<'_>) -> Result<Answer, StepError> {
        let Some(step) = self.plans.get(call.route) else {
            return Err(unknown(call.route));
        };
        self.metered(step, &call, CacheStatus::Bypass).await.result
    }
}

/// The error for a route the step has no plan for.
fn unknown(route: &str) -> StepError {
    StepError::UnknownRoute {
        route: route.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheControl;
    use crate::cost::{Ledger, Meter, PriceTable};
    use crate::providers::ProviderClient;
    use crate::wit::ChatRequest;

    fn step() -> LlmStep {
        LlmStep::new(
            Router::new(ProviderClient::new().unwrap(), Vec::new()),
            HashMap::new(),
            ResponseCache::new(1 << 20),
            Costing {
                prices: PriceTable::default(),
                ledger: Ledger::open(None, None).unwrap(),
                default_max_tokens: 256,
                count_failed_attempts: false,
                fuel_pico_per_million: 0,
            },
        )
    }

    /// The shared one-message request (see `ChatRequest::hi`).
    fn request() -> ChatRequest {
        ChatRequest {
            temperature: Some(0.0),
            ..ChatRequest::hi("m")
        }
    }

    #[tokio::test]
    async fn a_route_without_a_plan_is_an_unknown_route_not_a_failed_upstream() {
        let step = step();
        let meter = Meter::new(None);
        let request = request();
        let call = Call {
            route: "gone",
            request: &request,
            forward: &[],
            deadline: None,
            control: CacheControl::default(),
            meter: &meter,
        };
        let reply = step.complete(call).await;
        assert!(
            matches!(&reply.result, Err(StepError::UnknownRoute { route }) if route == "gone"),
            "{:?}",
            reply.result.as_ref().err()
        );
        assert!(reply.attempts.is_empty());
        assert!(matches!(
            step.chat(call).await,
            Err(StepError::UnknownRoute { .. })
        ));
        assert!(meter.charges().is_empty(), "nothing was called or charged");
    }
}
