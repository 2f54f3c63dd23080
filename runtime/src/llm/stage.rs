//! Stages' `complete()` and `embed()` through the live LLM step, each counted against the
//! stage's own limit and the request's, priced and ledgered like the request's own call.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::header::{HeaderName, HeaderValue};

use super::embedding::EmbedCall;
use super::semantic::embeddings_of;
use super::{Answer, Call, CallSite, LlmStep, StepError};
use crate::cache::{CacheControl, CacheStatus};
use crate::host_api::{Caller, LlmAccess};
use crate::wit::{ChatRequest, ChatResponse, LlmError};

/// Most texts one `embed()` may send (OpenAI's limit per embeddings request).
pub const MAX_EMBED_INPUTS: usize = 2048;

/// Most bytes of text one `embed()` may send, all inputs together: 1 MiB, the default
/// `server.max_body_bytes` of a client request.
pub const MAX_EMBED_INPUT_BYTES: usize = 1 << 20;

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

/// The `llm-error` a stage gets for `err`.
fn refused(err: StepError) -> LlmError {
    LlmError::from(&err)
}

/// Refuses `inputs` over [`MAX_EMBED_INPUTS`] or [`MAX_EMBED_INPUT_BYTES`], before anything
/// is counted or sent.
fn check_inputs(inputs: &[String]) -> Result<(), LlmError> {
    let bytes = inputs
        .iter()
        .fold(0usize, |sum, s| sum.saturating_add(s.len()));
    if inputs.len() <= MAX_EMBED_INPUTS && bytes <= MAX_EMBED_INPUT_BYTES {
        return Ok(());
    }
    Err(LlmError {
        status: 413,
        code: "embed_input_too_large".into(),
        message: format!(
            "embed() takes at most {MAX_EMBED_INPUTS} inputs of {MAX_EMBED_INPUT_BYTES} bytes \
             in all; got {} inputs of {bytes} bytes",
            inputs.len()
        ),
    })
}

impl LlmAccess for StageLlm {
    fn complete(
        &self,
        caller: Caller,
        mut request: ChatRequest,
        deadline: Option<std::time::Duration>,
    ) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        let step = self.step.load_full();
        let route = route_for(&step, &request.model, &caller);
        Box::pin(async move {
            caller
                .begin_call()
                .map_err(|e| refused(StepError::Cost(e)))?;
            request.stream = false;
            let forward = match HeaderValue::from_str(&caller.request_id) {
                Ok(id) => vec![(HeaderName::from_static("x-request-id"), id)],
                Err(_) => Vec::new(),
            };
            let call = Call {
                route: &route,
                request: &request,
                forward: &forward,
                deadline,
                control: CacheControl::default(),
                meter: &caller.meter,
            };
            match step.chat(call).await {
                Ok(Answer::Whole(response)) => Ok(response),
                Ok(Answer::Stream(_)) => Err(LlmError {
                    status: 502,
                    code: "unexpected_stream".into(),
                    message: "the upstream streamed a non-stream request".into(),
                }),
                Err(err) => Err(refused(err)),
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
            check_inputs(&inputs)?;
            if inputs.is_empty() {
                return Ok(Vec::new());
            }
            let Some(route_step) = step.plans.get(&route) else {
                return Err(refused(StepError::UnknownRoute { route }));
            };
            caller
                .begin_call()
                .map_err(|e| refused(StepError::Cost(e)))?;
            let call = EmbedCall {
                site: CallSite {
                    meter: &caller.meter,
                    route: &route,
                    cache: CacheStatus::Bypass,
                },
                model: Some(&model),
                inputs: &inputs,
                only: None,
                spare: 0,
                body: None,
                deadline: None,
            };
            let value = step.embeddings(route_step, call).await.map_err(refused)?;
            Ok(embeddings_of(&value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embed_inputs_are_bounded_in_count_and_bytes() {
        assert!(check_inputs(&[]).is_ok());
        assert!(check_inputs(&vec!["x".to_string(); MAX_EMBED_INPUTS]).is_ok());
        assert!(check_inputs(&["x".repeat(MAX_EMBED_INPUT_BYTES)]).is_ok());
        let many = check_inputs(&vec!["x".to_string(); MAX_EMBED_INPUTS + 1]).unwrap_err();
        assert_eq!(
            (many.status, many.code.as_str()),
            (413, "embed_input_too_large")
        );
        assert!(many.message.contains("got 2049 inputs"), "{}", many.message);
        let half = "x".repeat(MAX_EMBED_INPUT_BYTES / 2);
        let big = check_inputs(&[half.clone(), half, "xy".to_string()]).unwrap_err();
        assert_eq!(big.code, "embed_input_too_large");
        assert!(big.message.contains("of 1048578 bytes"), "{}", big.message);
    }
}
