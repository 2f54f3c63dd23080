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

use crate::cache::{
    CacheControl, CacheKey, CacheStatus, Flight, Outcome, ResponseCache, embed_local, probe,
    request_key,
};
use crate::config::RouteCacheSettings;
use crate::cost::Meter;
use crate::host_api::{Caller, LlmAccess};
use crate::router::{Attempt, Reply, RouteError, RoutePlan, Router};
use crate::wit::{ChatRequest, ChatResponse, LlmError};

mod costing;

pub use costing::{CallSite, Costing, StreamCharge, estimate_usage};

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
    /// The reply, or why there is none.
    pub result: Result<Reply, RouteError>,
    /// How the cache was involved.
    pub cache: CacheStatus,
    /// For a semantic hit: how similar the last user message was.
    pub similarity: Option<f32>,
    /// For a stream that may be stored: call [`Fill::store`] with the assembled response once
    /// the stream ended cleanly.
    pub fill: Option<Fill>,
    /// For a stream: its cost, settled with [`StreamCharge::finish`] when it ends (or on
    /// drop, with the prompt counted locally).
    pub charge: Option<StreamCharge>,
    /// The cache entry the answer came from or went to (`x-weir-cache-key`), when the route
    /// caches this request.
    pub key: Option<CacheKey>,
}

/// Where the cached part of the step looks.
struct Lookup<'a> {
    /// The route's plan and policy.
    step: &'a RouteStep,
    /// The exact key.
    key: CacheKey,
    /// The tenant in the key, when the route keys by API key.
    tenant: Option<&'a str>,
    /// What the client allowed.
    control: CacheControl,
}

impl StepReply {
    /// A reply with `cache` status and nothing else to report.
    fn new(result: Result<Reply, RouteError>, cache: CacheStatus) -> StepReply {
        StepReply {
            result,
            cache,
            similarity: None,
            fill: None,
            charge: None,
            key: None,
        }
    }
}

/// A pending cache fill for a streamed answer.
pub struct Fill {
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
    /// Stores the assembled response of a stream that ended with its terminal event.
    pub fn store(self, response: ChatResponse) {
        store(
            &self.cache,
            self.key,
            &self.route,
            response,
            self.ttl,
            self.semantic,
        );
    }
}

/// Stores an answer under its exact key and, for a semantic route, remembers its embedding.
fn store(
    cache: &ResponseCache,
    key: CacheKey,
    route: &str,
    response: ChatResponse,
    ttl: std::time::Duration,
    semantic: Option<(CacheKey, Vec<f32>)>,
) {
    cache.put(key, route, response, ttl);
    if let Some((namespace, vector)) = semantic {
        cache.semantic.remember(namespace, vector, key, ttl);
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

    /// The response cache.
    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }

    /// Runs the step for a client request: cache lookup, single-flight for identical misses,
    /// the router (with the call reserved against the key's budgets and settled at its real
    /// cost), and the cache fill.
    #[allow(clippy::too_many_arguments)]
    pub async fn complete(
        &self,
        route: &str,
        request: &ChatRequest,
        forward: &[(HeaderName, HeaderValue)],
        deadline: Option<std::time::Duration>,
        control: CacheControl,
        meter: &Arc<Meter>,
        attempts: &mut Vec<Attempt>,
    ) -> StepReply {
        let Some(step) = self.plans.get(route) else {
            return StepReply::new(
                Err(RouteError::AllFailed {
                    attempts: attempts.clone(),
                }),
                CacheStatus::Bypass,
            );
        };
        let site = |cache| CallSite {
            meter,
            route,
            cache,
        };
        let policy = step.cache;
        let deterministic = request.temperature == Some(0.0);
        if !policy.enabled
            || control.no_store
            || !(deterministic || policy.cache_nonzero_temperature)
        {
            let site = site(CacheStatus::Bypass);
            return self
                .call(step, request, forward, deadline, site, attempts)
                .await;
        }
        let tenant = policy.per_key.then(|| meter.key_name());
        let key = request_key(route, tenant, request);
        let lookup = Lookup {
            step,
            key,
            tenant,
            control,
        };
        let mut reply = self
            .cached(lookup, route, request, forward, deadline, meter, attempts)
            .await;
        reply.key.get_or_insert(key);
        reply
    }

    /// The cached part of [`LlmStep::complete`]: exact and semantic lookups, then a stream
    /// or a single-flight fetch that fills the cache.
    #[allow(clippy::too_many_arguments)]
    async fn cached(
        &self,
        lookup: Lookup<'_>,
        route: &str,
        request: &ChatRequest,
        forward: &[(HeaderName, HeaderValue)],
        deadline: Option<std::time::Duration>,
        meter: &Arc<Meter>,
        attempts: &mut Vec<Attempt>,
    ) -> StepReply {
        let Lookup {
            step,
            key,
            tenant,
            control,
        } = lookup;
        let policy = step.cache;
        let site = |cache| CallSite {
            meter,
            route,
            cache,
        };
        if !control.no_cache
            && let Some(response) = self.cache.get(&key).await
        {
            self.costing.record_free(&response, site(CacheStatus::Hit));
            return StepReply::new(Ok(Reply::Json(response)), CacheStatus::Hit);
        }
        // The semantic tier: the same conversation but for a nearly identical last message.
        let semantic = match policy.semantic_threshold {
            Some(threshold) => self
                .semantic_probe(step, route, tenant, policy.semantic_embeddings, request)
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
                .record_free(&response, site(CacheStatus::SemanticHit));
            return StepReply {
                result: Ok(Reply::Json(response)),
                cache: CacheStatus::SemanticHit,
                similarity: Some(similarity),
                fill: None,
                charge: None,
                key: Some(exact),
            };
        }
        let semantic = semantic.map(|(probe, _)| probe);
        // A fetched answer: a miss, or a bypass when the client refused a cached one.
        let fetched = if control.no_cache {
            CacheStatus::Bypass
        } else {
            CacheStatus::Miss
        };
        if request.stream {
            // A stream is relayed as it comes; it is stored once it ended cleanly.
            let mut reply = self
                .call(step, request, forward, deadline, site(fetched), attempts)
                .await;
            if let Ok(Reply::Json(response)) = &reply.result {
                store(
                    &self.cache,
                    key,
                    route,
                    response.clone(),
                    policy.ttl,
                    semantic.clone(),
                );
            }
            reply.fill = matches!(reply.result, Ok(Reply::Stream(_))).then(|| Fill {
                cache: self.cache.clone(),
                key,
                route: route.to_string(),
                ttl: policy.ttl,
                semantic,
            });
            return reply;
        }
        loop {
            match self.cache.flights.join(key) {
                Flight::Lead(leader) => {
                    let reply = self
                        .call(step, request, forward, deadline, site(fetched), attempts)
                        .await;
                    let shared = match &reply.result {
                        Ok(Reply::Json(response)) => {
                            store(
                                &self.cache,
                                key,
                                route,
                                response.clone(),
                                policy.ttl,
                                semantic.clone(),
                            );
                            Ok(std::sync::Arc::new(response.clone()))
                        }
                        Ok(Reply::Stream(_)) => Err(RouteError::AllFailed {
                            attempts: attempts.clone(),
                        }),
                        Err(err) => Err(err.clone()),
                    };
                    // A refusal by the leader's own key says nothing about the followers'.
                    if matches!(shared, Err(RouteError::Cost(_))) {
                        drop(leader);
                    } else {
                        leader.finish(shared);
                    }
                    return reply;
                }
                Flight::Follow(follower) => match follower.wait().await {
                    Outcome::Done(Ok(response)) => {
                        self.costing
                            .record_free(&response, site(CacheStatus::Coalesced));
                        return StepReply::new(
                            Ok(Reply::Json((*response).clone())),
                            CacheStatus::Coalesced,
                        );
                    }
                    Outcome::Done(Err(err)) => {
                        return StepReply::new(Err(err), CacheStatus::Coalesced);
                    }
                    // The leader's client went away: look again, and lead if nobody does.
                    Outcome::Abandoned => {
                        if let Some(response) = self.cache.get(&key).await {
                            self.costing.record_free(&response, site(CacheStatus::Hit));
                            return StepReply::new(Ok(Reply::Json(response)), CacheStatus::Hit);
                        }
                    }
                },
            }
        }
    }

    /// One metered call along `step`'s chain: reserve, route, charge. A stream's charge is
    /// settled by whoever relays it ([`StepReply::charge`]).
    async fn call(
        &self,
        step: &RouteStep,
        request: &ChatRequest,
        forward: &[(HeaderName, HeaderValue)],
        deadline: Option<std::time::Duration>,
        site: CallSite<'_>,
        attempts: &mut Vec<Attempt>,
    ) -> StepReply {
        let hold = match self
            .costing
            .open(&self.router, &step.plan.chain, request, site.meter)
        {
            Ok(hold) => hold,
            Err(err) => return StepReply::new(Err(err), site.cache),
        };
        let result = self
            .router
            .chat(&step.plan, request, forward, deadline, attempts)
            .await;
        let mut reply = StepReply::new(result, site.cache);
        match &reply.result {
            Ok(Reply::Stream(_)) => {
                // The last attempt is the one streaming (there is one after a reply).
                let (model, earlier) = match attempts.split_last() {
                    Some((last, earlier)) => (last.model.clone(), earlier),
                    None => (String::new(), &[][..]),
                };
                reply.charge = Some(StreamCharge {
                    costing: self.costing.clone(),
                    hold: Some(hold),
                    earlier: self.costing.charges(request, earlier, None),
                    model,
                    request: request.clone(),
                    meter: site.meter.clone(),
                    route: site.route.to_string(),
                    cache: site.cache,
                });
            }
            Ok(Reply::Json(response)) => {
                let charges = self.costing.charges(request, attempts, Some(response));
                self.costing.close(hold, charges, site);
            }
            Err(_) => {
                let charges = self.costing.charges(request, attempts, None);
                self.costing.close(hold, charges, site);
            }
        }
        reply
    }

    /// The semantic namespace of `request` and the embedding of its last user message, from
    /// the local embedder or the route's embeddings target. An embeddings target that fails
    /// costs the request its semantic lookup, never its answer.
    async fn semantic_probe(
        &self,
        step: &RouteStep,
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
        match self
            .router
            .embeddings(&step.plan, Some(index), body, &mut attempts)
            .await
        {
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

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Sends `request` along `route`'s chain without the cache (a stage's `complete()`),
    /// metered like any call; `attempts` records every attempt.
    pub async fn chat(
        &self,
        route: &str,
        request: &ChatRequest,
        forward: &[(HeaderName, HeaderValue)],
        meter: &Arc<Meter>,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Reply, RouteError> {
        let Some(step) = self.plans.get(route) else {
            return Err(RouteError::AllFailed {
                attempts: attempts.clone(),
            });
        };
        let site = CallSite {
            meter,
            route,
            cache: CacheStatus::Bypass,
        };
        self.call(step, request, forward, None, site, attempts)
            .await
            .result
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

fn to_llm_error(err: &RouteError) -> LlmError {
    LlmError {
        status: err.status(),
        code: err.code().to_string(),
        message: err.to_string(),
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
            let mut attempts = Vec::new();
            let forward = match HeaderValue::from_str(&caller.request_id) {
                Ok(id) => vec![(HeaderName::from_static("x-request-id"), id)],
                Err(_) => Vec::new(),
            };
            let meter = caller.meter.clone().unwrap_or_else(|| Meter::new(None));
            match step
                .chat(&route, &request, &forward, &meter, &mut attempts)
                .await
            {
                Ok(Reply::Json(response)) => Ok(response),
                Ok(Reply::Stream(_)) => Err(LlmError {
                    status: 502,
                    code: "unexpected_stream".into(),
                    message: "the upstream streamed a non-stream request".into(),
                }),
                Err(err) => Err(to_llm_error(&err)),
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
            let Some(plan) = step.plans.get(&route).map(|step| &step.plan) else {
                return Err(to_llm_error(&RouteError::AllFailed {
                    attempts: Vec::new(),
                }));
            };
            let body = serde_json::json!({ "model": model, "input": inputs });
            let mut attempts = Vec::new();
            let value = step
                .router
                .embeddings(plan, None, body, &mut attempts)
                .await
                .map_err(|err| to_llm_error(&err))?;
            let vectors = embeddings_of(&value);
            Ok(vectors)
        })
    }
}
