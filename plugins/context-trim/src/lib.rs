//! `context-trim`: a weir stage that keeps a chat conversation under a prompt-token budget, so
//! a long chat cannot quietly grow the bill.
//!
//! Request phase only, deterministic (the outcome depends only on the request and the config;
//! the host's token count is a pure function). The leading system and developer messages and
//! the last `keep_last_turns` turns are always kept; older turns are dropped whole, oldest
//! first, until the prompt fits `max_tokens`. When the kept part alone is over the budget the
//! request is refused with `400 context_length_exceeded`. See `README.md` for the config keys.
//!
//! # Layout
//!
//! - [`settings`]: the validated config.
//! - [`turns`]: the leading system messages and the turns of a conversation.
//! - [`trim`]: dropping turns until the prompt fits, or the refusal; prompts are counted
//!   with [`weir_sdk::tokens::Tokens`], the host's own formula (shared, not copied), so a
//!   prompt trimmed to `max_tokens` is at most `max_tokens` when the host counts it.
//! - this file: the [`Stage`] implementation, the only code that talks to the host (config,
//!   `count-tokens`, log).

pub mod settings;
pub mod trim;
pub mod turns;

use weir_sdk::{ChatRequest, RequestContext, RequestOutcome, Stage, StageError, StageInfo};

use crate::settings::Settings;

/// The stage (it keeps no state between phases).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ContextTrim;

impl Stage for ContextTrim {
    // A key not listed here (a misspelling) is refused when the host loads the config.
    const CONFIG_KEYS: Option<&'static [&'static str]> =
        Some(&["max_tokens", "keep_last_turns", "model"]);

    fn info() -> StageInfo {
        StageInfo::new("context-trim", env!("CARGO_PKG_VERSION"))
            .on_request()
            .deterministic()
    }

    fn on_request(
        &mut self,
        ctx: &RequestContext,
        mut request: ChatRequest,
    ) -> Result<RequestOutcome, StageError> {
        let settings = Settings::load(weir_sdk::config::get)?;
        let model = settings.model(&request.model).to_string();
        let count = |text: &str| weir_sdk::tokens::count(&model, text);
        match trim::trim(&mut request, &settings, &count) {
            Ok(trimmed) => {
                if trimmed.dropped_anything() {
                    weir_sdk::info!(
                        "request {}: {}",
                        ctx.request_id,
                        trimmed.summary(settings.max_tokens)
                    );
                }
                Ok(RequestOutcome::Next(request))
            }
            Err(overflow) => {
                weir_sdk::info!(
                    "request {}: refused ({}): {}",
                    ctx.request_id,
                    trim::CODE,
                    overflow.message()
                );
                Err(overflow.into())
            }
        }
    }
}

weir_sdk::export_stage!(ContextTrim);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_declares_a_deterministic_request_stage() {
        let info = ContextTrim::info();
        assert_eq!(info.name, "context-trim");
        assert_eq!(info.phases, weir_sdk::Phases::REQUEST);
        assert!(info.deterministic);
    }
}
