//! Stages' `complete()` and `embed()` through the live LLM step.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::header::{HeaderName, HeaderValue};

use super::semantic::embeddings_of;
use super::{Answer, Call, LlmStep, StepError};
use crate::cache::CacheControl;
use crate::cost::Meter;
use crate::host_api::{Caller, LlmAccess};
use crate::wit::{ChatRequest, ChatResponse, LlmError};

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
            let Some(plan) = step.plans.get(&route).map(|step| &step.plan) else {
                return Err(LlmError::from(&StepError::UnknownRoute { route }));
            };
            let body = serde_json::json!({ "model": model, "input": inputs });
            let mut attempts = Vec::new();
            let value = step
                .router
                .embeddings(plan, None, body, &mut attempts)
                .await
                .map_err(|err| LlmError::from(&StepError::Route(err)))?;
            let vectors = embeddings_of(&value);
            Ok(vectors)
        })
    }
}
