//! Calls to a model through the host's own LLM step.
//!
//! A `complete`, `complete_all` or `embed` call made by a stage goes through the same budget
//! and fallback routing as the request itself and counts against the request's limit on LLM
//! calls and the stage's own (`llm_calls_exceeded` past either; each request of a
//! [`complete_all`] counts as one call), so a stage stuck in a loop cannot run up a bill. None
//! may be called from `describe` (`llm_unavailable_in_describe`).
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
//!
//! Several models at once, each answer or error in the order asked:
//!
//! ```no_run
//! use std::time::Duration;
//! use weir_sdk::{ChatRequest, Message};
//!
//! let ask = |model: &str| ChatRequest::new(model, vec![Message::user("2 + 2?")]);
//! let answers = weir_sdk::llm::complete_all(
//!     &[ask("gpt-4o-mini"), ask("claude-haiku")],
//!     Some(Duration::from_secs(5)),
//! );
//! for answer in answers {
//!     match answer {
//!         Ok(response) => weir_sdk::info!("{}", response.text()),
//!         Err(err) => weir_sdk::warn!("{} {}: {}", err.status, err.code, err.message),
//!     }
//! }
//! ```

use core::time::Duration;

use crate::{ChatRequest, ChatResponse, LlmError};

/// The most requests one [`complete_all`] takes; the host answers every result of a longer
/// list with `too_many_calls`, and traps the stage for a list over 256 (the limits are the
/// host's, stated in `wit/stage.wit`).
pub const MAX_COMPLETE_ALL: usize = 16;

/// Sends `request` through the host's LLM step and returns the response.
pub fn complete(request: &ChatRequest) -> Result<ChatResponse, LlmError> {
    crate::bindings::weir::stage0_1_0::host::complete(request)
}

/// Embeds each input with `model`; one vector per input, in order.
pub fn embed(model: &str, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
    crate::bindings::weir::stage0_1_0::host::embed(model, inputs)
}

/// Sends every request of `requests` through the host's LLM step at once and returns one result
/// per request, in order, when the last one ends or `deadline` passes.
///
/// Each request is a [`complete`] of its own: counted, budgeted, billed, with the route's
/// fallbacks. `deadline` is measured from the call and capped by the request's own deadline
/// (`None`: that deadline alone); a call still running when it passes fails with status 504,
/// code `deadline_exceeded`, and is billed for what its upstream received. The deadline is
/// rounded up to whole milliseconds and saturates at `u32::MAX` ms (about 49 days). At most
/// [`MAX_COMPLETE_ALL`] requests per call.
pub fn complete_all(
    requests: &[ChatRequest],
    deadline: Option<Duration>,
) -> Vec<Result<ChatResponse, LlmError>> {
    crate::bindings::weir::stage0_1_0::host::complete_all(requests, deadline.map(deadline_ms))
}

/// `deadline` in whole milliseconds for the host: rounded up (a deadline of 1 µs is 1 ms, not
/// an already-passed 0) and saturating at `u32::MAX`.
fn deadline_ms(deadline: Duration) -> u32 {
    let millis = deadline.as_nanos().div_ceil(1_000_000);
    u32::try_from(millis).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_milliseconds_and_saturate() {
        assert_eq!(deadline_ms(Duration::ZERO), 0);
        assert_eq!(deadline_ms(Duration::from_nanos(1)), 1);
        assert_eq!(deadline_ms(Duration::from_millis(250)), 250);
        assert_eq!(deadline_ms(Duration::from_micros(250_001)), 251);
        assert_eq!(deadline_ms(Duration::from_secs(5)), 5_000);
        let most = Duration::from_millis(u64::from(u32::MAX));
        assert_eq!(deadline_ms(most), u32::MAX);
        assert_eq!(deadline_ms(most + Duration::from_millis(1)), u32::MAX);
        assert_eq!(deadline_ms(Duration::MAX), u32::MAX);
    }
}
