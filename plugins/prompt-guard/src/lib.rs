//! `prompt-guard`: a weir stage that refuses requests that are too big, contain a phrase
//! the operator denies, or look like a prompt injection.
//!
//! Request phase only, deterministic. Every refusal is `400` with one of the codes
//! `too_many_messages`, `prompt_too_long`, `denied_content` or `prompt_injection`, and a
//! message that names the rule that fired (the limit, the deny entry, the injection
//! pattern), never the user's text. See `README.md` for the config keys.
//!
//! # Layout
//!
//! - [`settings`]: the validated config.
//! - [`normalize`]: the folded text and the word list that matching works on.
//! - [`deny`]: the operator's deny list.
//! - [`patterns`]: the built-in injection patterns (data only).
//! - [`vocab`]: the words those patterns use, as numbers and bit sets.
//! - [`injection`]: the matcher for those patterns.
//! - [`guard`]: the checks on a whole request and the [`Violation`](guard::Violation) they
//!   report.
//! - this file: the [`Stage`] implementation, the only code that talks to the host.

pub mod deny;
pub mod guard;
pub mod injection;
pub mod normalize;
#[rustfmt::skip]
pub mod patterns;
pub mod settings;
pub mod vocab;

use weir_sdk::{ChatRequest, RequestContext, RequestOutcome, Stage, StageError, StageInfo};

use crate::settings::Settings;

/// The stage (it keeps no state between phases).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PromptGuard;

impl Stage for PromptGuard {
    // A key not listed here (a misspelling) is refused when the host loads the config.
    const CONFIG_KEYS: Option<&'static [&'static str]> =
        Some(&["max_chars", "max_messages", "deny", "injection", "roles"]);

    fn info() -> StageInfo {
        StageInfo::new("prompt-guard", env!("CARGO_PKG_VERSION"))
            .on_request()
            .deterministic()
    }

    fn on_request(
        &mut self,
        ctx: &RequestContext,
        request: ChatRequest,
    ) -> Result<RequestOutcome, StageError> {
        let settings = Settings::load(weir_sdk::config::get)?;
        if let Err(violation) = guard::check(&settings, &request) {
            weir_sdk::info!(
                "request {}: refused ({}): {}",
                ctx.request_id,
                violation.code(),
                violation.message()
            );
            return Err(violation.into());
        }
        Ok(RequestOutcome::Next(request))
    }
}

weir_sdk::export_stage!(PromptGuard);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_declares_a_deterministic_request_stage() {
        let info = PromptGuard::info();
        assert_eq!(info.name, "prompt-guard");
        assert_eq!(info.phases, weir_sdk::Phases::REQUEST);
        assert!(info.deterministic);
    }
}
