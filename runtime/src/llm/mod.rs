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
use crate::router::{Attempt, Reply, RouteError, Router};
use crate::wit::{ChatRequest, ChatResponse, LlmError};

/// The LLM step for every route.
pub struct LlmStep {
    /// Targets and the client.
    router: Router,
    /// Route alias → target chain.
    chains: HashMap<String, Vec<usize>>,
}

impl LlmStep {
    /// A step over `router`, with each route's chain of target indexes.
    pub fn new(router: Router, chains: HashMap<String, Vec<usize>>) -> LlmStep {
        LlmStep { router, chains }
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Sends `request` along `route`'s chain; `attempts` records every attempt.
    pub async fn chat(
        &self,
        route: &str,
        request: &ChatRequest,
        forward: &[(HeaderName, HeaderValue)],
        attempts: &mut Vec<Attempt>,
    ) -> Result<Reply, RouteError> {
        let chain = self.chains.get(route).map(Vec::as_slice).unwrap_or(&[]);
        self.router.chat(chain, request, forward, attempts).await
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
    fn chain_for(&self, model: &str, caller: &Caller) -> Vec<usize> {
        self.step
            .chains
            .get(model)
            .or_else(|| self.step.chains.get(&*caller.route))
            .cloned()
            .unwrap_or_default()
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
        let chain = self.chain_for(&request.model, &caller);
        Box::pin(async move {
            request.stream = false;
            let mut attempts = Vec::new();
            let forward = match HeaderValue::from_str(&caller.request_id) {
                Ok(id) => vec![(HeaderName::from_static("x-request-id"), id)],
                Err(_) => Vec::new(),
            };
            match step
                .router
                .chat(&chain, &request, &forward, &mut attempts)
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
        let chain = self.chain_for(&model, &caller);
        Box::pin(async move {
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
