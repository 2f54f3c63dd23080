//! `retrieve`: a weir stage that adds passages from a vector database (Chroma's v2 query API,
//! through a service the host grants it) to every request: retrieval-augmented generation as
//! a pipeline stage.
//!
//! Request phase only; not deterministic (the collection changes). The last user message is
//! embedded (`embed_model`, through the host's LLM step: budgeted and billed), the service is
//! asked for the `top_k` nearest documents, and those that fit `max_context_tokens` go into one
//! system message right before the last user message (the format is in [`context`]). No user
//! text, or no passage, leaves the request as it is. An embedding error, a transport error, an
//! error status or an answer that is not Chroma's fails the stage, and the stage's `on_error`
//! policy decides. See `README.md` for the config keys.
//!
//! # Layout
//!
//! - [`settings`]: the validated config.
//! - [`chroma`]: the query body and the passages read from Chroma's answer.
//! - [`context`]: the question, the passages within the budget, and the context message.
//! - [`retrieval`]: the flow, over a [`Backend`] so that it runs in tests.
//! - this file: the [`Stage`] implementation and the real backend, the only code that talks
//!   to the host.

pub mod chroma;
pub mod context;
pub mod retrieval;
pub mod settings;

use weir_sdk::service::{ServiceError, ServiceResponse};
use weir_sdk::{
    ChatRequest, LlmError, RequestContext, RequestOutcome, Stage, StageError, StageInfo,
};

use crate::chroma::Query;
use crate::retrieval::Backend;
use crate::settings::Settings;

/// The stage (it keeps no state between phases).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Retrieve;

impl Stage for Retrieve {
    // A key not listed here (a misspelling) is refused when the host loads the config.
    const CONFIG_KEYS: Option<&'static [&'static str]> = Some(&[
        "service",
        "path",
        "embed_model",
        "top_k",
        "max_context_tokens",
        "count_model",
    ]);

    fn info() -> StageInfo {
        StageInfo::new("retrieve", env!("CARGO_PKG_VERSION")).on_request()
    }

    fn on_request(
        &mut self,
        ctx: &RequestContext,
        mut request: ChatRequest,
    ) -> Result<RequestOutcome, StageError> {
        let settings = Settings::load(weir_sdk::config::get)?;
        match retrieval::augment(&mut request, &settings, &mut Host)? {
            Some(added) => weir_sdk::debug!(
                "request {}: added {} of {} passages from `{}`",
                ctx.request_id,
                added.added,
                added.found,
                settings.service
            ),
            None => weir_sdk::debug!("request {}: no passage added", ctx.request_id),
        }
        Ok(RequestOutcome::Next(request))
    }
}

/// The host, through the SDK.
struct Host;

impl Backend for Host {
    fn embed(&mut self, model: &str, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        weir_sdk::llm::embed(model, inputs)
    }

    fn query(
        &mut self,
        service: &str,
        path: &str,
        query: &Query<'_>,
    ) -> Result<ServiceResponse, ServiceError> {
        weir_sdk::service::post_json(service, path, query)
    }

    fn count_tokens(&mut self, model: &str, text: &str) -> u32 {
        weir_sdk::tokens::count(model, text)
    }
}

weir_sdk::export_stage!(Retrieve);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_declares_a_request_stage_that_is_not_deterministic() {
        let info = Retrieve::info();
        assert_eq!(info.name, "retrieve");
        assert_eq!(info.phases, weir_sdk::Phases::REQUEST);
        assert!(!info.deterministic);
    }
}
