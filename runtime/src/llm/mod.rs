//! The LLM step: what happens between the request phase and the response phase.
//!
//! Owns: sending a (stage-processed) request along its route's target chain through the
//! [`Router`](crate::router::Router), and serving stages' `complete()` / `embed()` calls the
//! same way ([`LlmAccess`]). Later milestones put the exact cache, budgets and cost
//! reconciliation here, around the router call.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::header::{HeaderName, HeaderValue};

use crate::host_api::{Caller, LlmAccess};
use crate::router::{Attempt, Reply, RouteError, RoutePlan, Router};
use crate::wit::{ChatRequest, ChatResponse, LlmError};

/// The LLM step for every route.
pub struct LlmStep {
    /// Targets and the client.
    router: Router,
    /// Route alias → target chain and policy.
    plans: HashMap<String, RoutePlan>,
}

impl LlmStep {
    /// A step over `router`, with each route's plan.
    pub fn new(router: Router, plans: HashMap<String, RoutePlan>) -> LlmStep {
        LlmStep { router, plans }
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
        let Some(plan) = self.plans.get(route) else {
            return Err(RouteError::AllFailed {
                attempts: attempts.clone(),
            });
        };
        self.router
            .chat(plan, request, forward, deadline, attempts)
            .await
    }
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
                .map(|plan| plan.chain.clone())
                .unwrap_or_default();
            let body = serde_json::json!({ "model": model, "input": inputs });
            let mut attempts = Vec::new();
            let value = step
                .router
                .embeddings(&chain, body, &mut attempts)
                .await
                .map_err(|err| to_llm_error(&err))?;
            let vectors = value["data"]
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
                        .collect::<Vec<Vec<f32>>>()
                })
                .unwrap_or_default();
            Ok(vectors)
        })
    }
}
