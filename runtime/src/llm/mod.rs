//! The LLM step: what happens between the request phase and the response phase.
//!
//! Owns: the order of the step — exact cache lookup → single-flight → router → cache fill —
//! for a (stage-processed) request, and serving stages' `complete()` / `embed()` calls the
//! same way ([`LlmAccess`]). Later milestones put budgets and cost reconciliation here,
//! around the router call.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::header::{HeaderName, HeaderValue};
use tracing::Instrument;

use crate::cache::{
    CacheControl, CacheKey, CacheStatus, Flight, Outcome, ResponseCache, embed_local, probe,
    request_key,
};
use crate::config::RouteCacheSettings;
use crate::cost::Meter;
use crate::host_api::{Caller, LlmAccess};
use crate::router::{Attempt, Reply, RouteError, RoutePlan, Router};
use crate::wit::{ChatRequest, ChatResponse, LlmError};

mod call;
mod costing;
mod error;
mod stream;

pub use call::Call;
pub use costing::{CallSite, Costing, estimate_usage};
pub use error::StepError;
pub use stream::{AnswerStream, StreamEvent};

use costing::StreamCharge;

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
    router: Router,
    /// Route alias → its plan and cache policy.
    plans: HashMap<String, RouteStep>,
    /// The response cache shared by all routes (keys include the route).
    cache: ResponseCache,
    /// Prices, the ledger and how calls are reserved and charged.
    costing: Arc<Costing>,
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
    fn new(result: Result<Answer, StepError>, cache: CacheStatus) -> StepReply {
        StepReply {
            result,
            cache,
            similarity: None,
            key: None,
            attempts: Vec::new(),
        }
    }
}

/// The LLM step's answer.
pub enum Answer {
    /// A whole `chat.completion`, settled (and stored, when the route caches it).
    Whole(ChatResponse),
    /// A live stream whose first event has arrived; it settles its cost and cache fill as
    /// it is read ([`AnswerStream`]; boxed, it is large).
    Stream(Box<AnswerStream>),
}

/// A pending cache fill for an answer.
struct Fill {
    /// Where to store.
    cache: ResponseCache,
    /// Under which key.
    key: CacheKey,
    /// For which route.
    route: String,
    /// For how long.
    ttl: std::time::Duration,
    /// The semantic namespace and embedding, when the route has a semantic tier.
    semantic: Option<(CacheKey, Vec<f32>)>,
}

impl Fill {
    /// Stores `response` under the exact key and, for a semantic route, remembers its
    /// embedding.
    fn store(self, response: ChatResponse) {
        self.cache.put(self.key, &self.route, response, self.ttl);
        if let Some((namespace, vector)) = self.semantic {
            self.cache
                .semantic
                .remember(namespace, vector, self.key, self.ttl);
        }
    }
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

    /// The cached part of [`LlmStep::complete`] for a request under `key`: exact and
    /// semantic lookups, then a stream or a single-flight fetch that fills the cache.
    async fn cached(&self, step: &RouteStep, call: &Call<'_>, key: CacheKey) -> StepReply {
        let policy = step.cache;
        let control = call.control;
        let tenant = policy.per_key.then(|| call.meter.key_name());
        if !control.no_cache
            && let Some(response) = self.cache.get(&key).await
        {
            self.costing
                .record_free(&response, call.site(CacheStatus::Hit));
            return StepReply::new(Ok(Answer::Whole(response)), CacheStatus::Hit);
        }
        // The semantic tier: the same conversation but for a nearly identical last message.
        let semantic = match policy.semantic_threshold {
            Some(threshold) => self
                .semantic_probe(call.route, tenant, policy.semantic_embeddings, call.request)
                .await
                .map(|p| (p, threshold.as_f32())),
            None => None,
        };
        if !control.no_cache
            && let Some(((namespace, vector), threshold)) = &semantic
            && let Some((exact, similarity)) =
                self.cache.semantic.nearest(namespace, vector, *threshold)
            && let Some(response) = self.cache.get(&exact).await
        {
            self.costing
                .record_free(&response, call.site(CacheStatus::SemanticHit));
            return StepReply {
                similarity: Some(similarity),
                key: Some(exact),
                ..StepReply::new(Ok(Answer::Whole(response)), CacheStatus::SemanticHit)
            };
        }
        let fill = Fill {
            cache: self.cache.clone(),
            key,
            route: call.route.to_string(),
            ttl: policy.ttl,
            semantic: semantic.map(|(probe, _)| probe),
        };
        // A fetched answer: a miss, or a bypass when the client refused a cached one.
        let fetched = if control.no_cache {
            CacheStatus::Bypass
        } else {
            CacheStatus::Miss
        };
        if call.request.stream {
            // A stream is relayed as it comes; it is stored once it ended cleanly.
            let mut reply = self.metered(step, call, fetched).await;
            match &mut reply.result {
                Ok(Answer::Whole(response)) => fill.store(response.clone()),
                Ok(Answer::Stream(stream)) => stream.fill_with(fill),
                Err(_) => {}
            }
            return reply;
        }
        loop {
            match self.cache.flights.join(key) {
                Flight::Lead(leader) => {
                    let reply = self.metered(step, call, fetched).await;
                    let shared = match &reply.result {
                        Ok(Answer::Whole(response)) => {
                            fill.store(response.clone());
                            Some(Ok(Arc::new(response.clone())))
                        }
                        Ok(Answer::Stream(_)) => Some(Err(RouteError::AllFailed {
                            attempts: reply.attempts.clone(),
                        })),
                        Err(StepError::Route(err)) => Some(Err(err.clone())),
                        // A refusal by the leader's own key says nothing about the followers'.
                        Err(
                            StepError::Cost(_)
                            | StepError::UnknownRoute { .. }
                            | StepError::Interrupted { .. },
                        ) => None,
                    };
                    match shared {
                        Some(outcome) => leader.finish(outcome),
                        None => drop(leader),
                    }
                    return reply;
                }
                Flight::Follow(follower) => match follower.wait().await {
                    Outcome::Done(Ok(response)) => {
                        self.costing
                            .record_free(&response, call.site(CacheStatus::Coalesced));
                        return StepReply::new(
                            Ok(Answer::Whole((*response).clone())),
                            CacheStatus::Coalesced,
                        );
                    }
                    Outcome::Done(Err(err)) => {
                        return StepReply::new(Err(StepError::Route(err)), CacheStatus::Coalesced);
                    }
                    // The leader's client went away: look again, and lead if nobody does.
                    Outcome::Abandoned => {
                        if let Some(response) = self.cache.get(&key).await {
                            self.costing
                                .record_free(&response, call.site(CacheStatus::Hit));
                            return StepReply::new(Ok(Answer::Whole(response)), CacheStatus::Hit);
                        }
                    }
                },
            }
        }
    }

    /// One metered call along `step`'s chain, accounted with `cache` as its cache status:
    /// reserve, route, charge. A stream carries its reservation and settles it itself.
    async fn metered(&self, step: &RouteStep, call: &Call<'_>, cache: CacheStatus) -> StepReply {
        let site = call.site(cache);
        let request = call.request;
        let hold = match self
            .costing
            .open(&self.router, &step.plan.chain, request, call.meter)
        {
            Ok(hold) => hold,
            Err(err) => return StepReply::new(Err(StepError::Cost(err)), cache),
        };
        let mut attempts = Vec::new();
        let routed = self
            .router
            .chat(
                &step.plan,
                request,
                call.forward,
                call.deadline,
                &mut attempts,
            )
            .await;
        let result = match routed {
            Ok(Reply::Stream(upstream)) => {
                // A stream came from the last attempt; the ones before it failed.
                let (model, earlier) = match attempts.split_last() {
                    Some((last, earlier)) => (last.model.clone(), earlier),
                    None => (String::new(), &[][..]),
                };
                let charge = StreamCharge {
                    costing: self.costing.clone(),
                    hold: Some(hold),
                    earlier: self.costing.charges(request, earlier, None),
                    model,
                    request: request.clone(),
                    meter: call.meter.clone(),
                    route: call.route.to_string(),
                    cache,
                };
                Ok(Answer::Stream(Box::new(AnswerStream::new(
                    upstream, charge,
                ))))
            }
            Ok(Reply::Json(response)) => {
                let charges = self.costing.charges(request, &attempts, Some(&response));
                self.costing.close(hold, charges, site);
                Ok(Answer::Whole(response))
            }
            Err(err) => {
                let charges = self.costing.charges(request, &attempts, None);
                self.costing.close(hold, charges, site);
                Err(StepError::Route(err))
            }
        };
        StepReply {
            attempts,
            ..StepReply::new(result, cache)
        }
    }

    /// The semantic namespace of `request` and the embedding of its last user message, from
    /// the local embedder or the route's embeddings target. An embeddings target that fails
    /// costs the request its semantic lookup, never its answer.
    async fn semantic_probe(
        &self,
        route: &str,
        tenant: Option<&str>,
        target: Option<usize>,
        request: &ChatRequest,
    ) -> Option<(CacheKey, Vec<f32>)> {
        let Some(index) = target else {
            let (namespace, text) = probe(route, tenant, "local", request)?;
            return Some((namespace, embed_local(&text)));
        };
        let name = self.router.targets().get(index)?.upstream.name.clone();
        let name: &str = &name;
        let (namespace, text) = probe(route, tenant, &format!("target:{name}"), request)?;
        let body = serde_json::json!({ "input": [text] });
        let mut attempts = Vec::new();
        match self.router.embeddings(&[index], body, &mut attempts).await {
            Ok(value) => match first_embedding(&value) {
                Some(vector) => Some((namespace, normalised(vector))),
                None => {
                    tracing::warn!(
                        route,
                        target = name,
                        "the embeddings target answered no vector; semantic lookup skipped"
                    );
                    None
                }
            },
            Err(err) => {
                tracing::warn!(route, target = name, error = %err, "the embeddings target failed; semantic lookup skipped");
                None
            }
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

/// The vectors of an OpenAI-shaped embeddings response, in order.
fn embeddings_of(value: &serde_json::Value) -> Vec<Vec<f32>> {
    value["data"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    item["embedding"]
                        .as_array()
                        .map(|v| {
                            v.iter()
                                .filter_map(|x| x.as_f64())
                                .map(|x| x as f32)
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The first non-empty vector of an embeddings response.
fn first_embedding(value: &serde_json::Value) -> Option<Vec<f32>> {
    embeddings_of(value)
        .into_iter()
        .next()
        .filter(|v| !v.is_empty())
}

/// `vector` scaled to unit length, so a dot product is the cosine similarity.
fn normalised(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// Stages' `complete()` and `embed()`: a request naming a route alias goes along that route's
/// chain (without its stages, so a stage cannot recurse into itself); any other model goes
/// along the caller's route's chain.
///
/// The step is the live one: a config reload swaps it for every stage at once.
pub struct StageLlm {
    /// The step serving requests now.
    pub step: Arc<arc_swap::ArcSwap<LlmStep>>,
}

/// The route a stage's call goes along on `step`: the one its model names, else the
/// caller's.
fn route_for(step: &LlmStep, model: &str, caller: &Caller) -> String {
    if step.plans.contains_key(model) {
        model.to_string()
    } else {
        caller.route.to_string()
    }
}

impl LlmAccess for StageLlm {
    fn complete(
        &self,
        caller: Caller,
        mut request: ChatRequest,
    ) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        let step = self.step.load_full();
        let route = route_for(&step, &request.model, &caller);
        Box::pin(async move {
            request.stream = false;
            let forward = match HeaderValue::from_str(&caller.request_id) {
                Ok(id) => vec![(HeaderName::from_static("x-request-id"), id)],
                Err(_) => Vec::new(),
            };
            let meter = caller.meter.clone().unwrap_or_else(|| Meter::new(None));
            let call = Call {
                route: &route,
                request: &request,
                forward: &forward,
                deadline: None,
                control: CacheControl::default(),
                meter: &meter,
            };
            match step.chat(call).await {
                Ok(Answer::Whole(response)) => Ok(response),
                Ok(Answer::Stream(_)) => Err(LlmError {
                    status: 502,
                    code: "unexpected_stream".into(),
                    message: "the upstream streamed a non-stream request".into(),
                }),
                Err(err) => Err(LlmError::from(&err)),
            }
        })
    }

    fn embed(
        &self,
        caller: Caller,
        model: String,
        inputs: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>, LlmError>> {
        let step = self.step.load_full();
        let route = route_for(&step, &model, &caller);
        Box::pin(async move {
            let chain = step
                .plans
                .get(&route)
                .map(|step| step.plan.chain.clone())
                .unwrap_or_default();
            let body = serde_json::json!({ "model": model, "input": inputs });
            let mut attempts = Vec::new();
            let value = step
                .router
                .embeddings(&chain, body, &mut attempts)
                .await
                .map_err(|err| LlmError::from(&StepError::Route(err)))?;
            let vectors = embeddings_of(&value);
            Ok(vectors)
        })
    }
}
