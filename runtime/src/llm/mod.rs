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
use crate::host_api::{Caller, LlmAccess};
use crate::router::{Attempt, Reply, RouteError, RoutePlan, Router};
use crate::wit::{ChatRequest, ChatResponse, LlmError};

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
}

impl StepReply {
    /// A reply with `cache` status and nothing else to report.
    fn new(result: Result<Reply, RouteError>, cache: CacheStatus) -> StepReply {
        StepReply {
            result,
            cache,
            similarity: None,
            fill: None,
        }
    }
}

/// A pending cache fill for a streamed answer.
pub struct Fill {
    /// Where to store.
    cache: ResponseCache,
    /// Under which key.
    key: CacheKey,
    /// For how long.
    ttl: std::time::Duration,
    /// The semantic namespace and embedding, when the route has a semantic tier.
    semantic: Option<(CacheKey, Vec<f32>)>,
}

impl Fill {
    /// Stores the assembled response of a stream that ended with its terminal event.
    pub fn store(self, response: ChatResponse) {
        store(&self.cache, self.key, response, self.ttl, self.semantic);
    }
}

/// Stores an answer under its exact key and, for a semantic route, remembers its embedding.
fn store(
    cache: &ResponseCache,
    key: CacheKey,
    response: ChatResponse,
    ttl: std::time::Duration,
    semantic: Option<(CacheKey, Vec<f32>)>,
) {
    cache.put(key, response, ttl);
    if let Some((namespace, vector)) = semantic {
        cache.semantic.remember(namespace, vector, key, ttl);
    }
}

impl LlmStep {
    /// A step over `router`, with each route's plan, and a response cache.
    pub fn new(router: Router, plans: HashMap<String, RouteStep>, cache: ResponseCache) -> LlmStep {
        LlmStep {
            router,
            plans,
            cache,
        }
    }

    /// The response cache.
    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }

    /// Runs the step for a client request: cache lookup, single-flight for identical misses,
    /// the router, and the cache fill.
    pub async fn complete(
        &self,
        route: &str,
        request: &ChatRequest,
        forward: &[(HeaderName, HeaderValue)],
        deadline: Option<std::time::Duration>,
        control: CacheControl,
        attempts: &mut Vec<Attempt>,
    ) -> StepReply {
        let bypass = |result| StepReply::new(result, CacheStatus::Bypass);
        let Some(step) = self.plans.get(route) else {
            return bypass(Err(RouteError::AllFailed {
                attempts: attempts.clone(),
            }));
        };
        let policy = step.cache;
        let deterministic = request.temperature == Some(0.0);
        if !policy.enabled
            || control.no_store
            || !(deterministic || policy.cache_nonzero_temperature)
        {
            let result = self
                .router
                .chat(&step.plan, request, forward, deadline, attempts)
                .await;
            return bypass(result);
        }
        let key = request_key(route, None, request);
        if !control.no_cache
            && let Some(response) = self.cache.get(&key).await
        {
            return StepReply::new(Ok(Reply::Json(response)), CacheStatus::Hit);
        }
        // The semantic tier: the same conversation but for a nearly identical last message.
        let semantic = match policy.semantic_threshold {
            Some(threshold) => self
                .semantic_probe(route, policy.semantic_embeddings, request)
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
            return StepReply {
                result: Ok(Reply::Json(response)),
                cache: CacheStatus::SemanticHit,
                similarity: Some(similarity),
                fill: None,
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
            let result = self
                .router
                .chat(&step.plan, request, forward, deadline, attempts)
                .await;
            if let Ok(Reply::Json(response)) = &result {
                store(
                    &self.cache,
                    key,
                    response.clone(),
                    policy.ttl,
                    semantic.clone(),
                );
            }
            let fill = matches!(result, Ok(Reply::Stream(_))).then(|| Fill {
                cache: self.cache.clone(),
                key,
                ttl: policy.ttl,
                semantic,
            });
            return StepReply {
                result,
                cache: fetched,
                similarity: None,
                fill,
            };
        }
        loop {
            match self.cache.flights.join(key) {
                Flight::Lead(leader) => {
                    let result = self
                        .router
                        .chat(&step.plan, request, forward, deadline, attempts)
                        .await;
                    let shared = match &result {
                        Ok(Reply::Json(response)) => {
                            store(
                                &self.cache,
                                key,
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
                    leader.finish(shared);
                    return StepReply::new(result, fetched);
                }
                Flight::Follow(follower) => match follower.wait().await {
                    Outcome::Done(Ok(response)) => {
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
                            return StepReply::new(Ok(Reply::Json(response)), CacheStatus::Hit);
                        }
                    }
                },
            }
        }
    }

    /// The semantic namespace of `request` and the embedding of its last user message, from
    /// the local embedder or the route's embeddings target. An embeddings target that fails
    /// costs the request its semantic lookup, never its answer.
    async fn semantic_probe(
        &self,
        route: &str,
        target: Option<usize>,
        request: &ChatRequest,
    ) -> Option<(CacheKey, Vec<f32>)> {
        let Some(index) = target else {
            let (namespace, text) = probe(route, "local", request)?;
            return Some((namespace, embed_local(&text)));
        };
        let name = self.router.targets().get(index)?.upstream.name.clone();
        let name: &str = &name;
        let (namespace, text) = probe(route, &format!("target:{name}"), request)?;
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

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Sends `request` along `route`'s chain; `attempts` records every attempt. `deadline`
    /// may shorten the route's deadline (a client's `x-weir-deadline-ms`).
    pub async fn chat(
        &self,
        route: &str,
        request: &ChatRequest,
        forward: &[(HeaderName, HeaderValue)],
        deadline: Option<std::time::Duration>,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Reply, RouteError> {
        let Some(step) = self.plans.get(route) else {
            return Err(RouteError::AllFailed {
                attempts: attempts.clone(),
            });
        };
        self.router
            .chat(&step.plan, request, forward, deadline, attempts)
            .await
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
pub struct StageLlm {
    /// The step shared with the request path.
    pub step: Arc<LlmStep>,
}

impl StageLlm {
    /// The route a stage's call goes along: the one its model names, else the caller's.
    fn route_for(&self, model: &str, caller: &Caller) -> String {
        if self.step.plans.contains_key(model) {
            model.to_string()
        } else {
            caller.route.to_string()
        }
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
        let step = self.step.clone();
        let route = self.route_for(&request.model, &caller);
        Box::pin(async move {
            request.stream = false;
            let mut attempts = Vec::new();
            let forward = match HeaderValue::from_str(&caller.request_id) {
                Ok(id) => vec![(HeaderName::from_static("x-request-id"), id)],
                Err(_) => Vec::new(),
            };
            match step
                .chat(&route, &request, &forward, None, &mut attempts)
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
        let step = self.step.clone();
        let route = self.route_for(&model, &caller);
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
                .map_err(|err| to_llm_error(&err))?;
            let vectors = embeddings_of(&value);
            Ok(vectors)
        })
    }
}
