//! Calls to a model through the host's own LLM step.
//!
//! A `complete` or `embed` call made by a stage goes through the same budget and fallback
//! routing as the request itself and counts against the request's limit on LLM calls and the
//! stage's own (`llm_calls_exceeded` past either), so a stage stuck in a loop cannot run up a
//! bill. Neither may be called from `describe` (`llm_unavailable_in_describe`).
//!
//! ```no_run
//! use weir_sdk::{ChatRequest, Message};
//!
//! # fn demo() -> Result<(), weir_sdk::LlmError> {
//! let question = ChatRequest::new("gpt-4o-mini", vec![Message::user("Is this text toxic? ...")]);
//! let answer = weir_sdk::llm::complete(&question)?;
//! let verdict = answer.text();
//! let vectors = weir_sdk::llm::embed("text-embedding-3-small", &["hello".to_string()])?;
//! # let _ = (verdict, vectors); Ok(()) }
//! ```

use crate::{ChatRequest, ChatResponse, LlmError};

/// Sends `request` through the host's LLM step and returns the response.
pub fn complete(request: &ChatRequest) -> Result<ChatResponse, LlmError> {
    crate::bindings::weir::stage::host::complete(request)
}

/// Embeds each input with `model`; one vector per input, in order.
pub fn embed(model: &str, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
    crate::bindings::weir::stage::host::embed(model, inputs)
}
