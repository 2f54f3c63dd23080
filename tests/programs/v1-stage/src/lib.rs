//! `weir-test-v1-stage`: a stage built against `weir:stage@0.1.0` with the raw bindings, as
//! every stage was before 0.2, so the tests prove such a component still loads and keeps its
//! behaviour: one instance for both phases, state kept in the guest's own memory.
//!
//! `on-request` remembers the last user message's length in a global; `on-response` appends
//! ` (v1 remembered N)` to every choice, which only the same instance can know. It declares
//! itself deterministic, so the tests also prove that such a stage's request phase never
//! comes from the stage output cache (a cached outcome would not recreate the global).

#![allow(missing_docs, unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

wit_bindgen::generate!({
    world: "weir:stage/stage@0.1.0",
    path: "../../../wit",
    generate_all,
});

// The world's `use` brings the types the exports name into scope.
use weir::stage0_1_0::types::{Content, Phases};

/// What `on-request` saw, `usize::MAX` before it ran (a fresh instance).
static REMEMBERED: AtomicUsize = AtomicUsize::new(usize::MAX);

struct V1;

impl Guest for V1 {
    fn describe() -> StageInfo {
        StageInfo {
            name: "v1-stage".to_string(),
            version: "0.1.0".to_string(),
            phases: Phases::REQUEST | Phases::RESPONSE,
            deterministic: true,
            needs_full_response: true,
        }
    }

    fn on_request(
        _ctx: RequestContext,
        request: ChatRequest,
    ) -> Result<RequestOutcome, StageError> {
        let len = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .and_then(|m| match &m.content {
                Some(Content::Text(text)) => Some(text.chars().count()),
                _ => None,
            })
            .unwrap_or(0);
        REMEMBERED.store(len, Ordering::Relaxed);
        Ok(RequestOutcome::Next(request))
    }

    fn on_response(
        _ctx: RequestContext,
        _request: ChatRequest,
        mut response: ChatResponse,
    ) -> Result<ChatResponse, StageError> {
        let remembered = match REMEMBERED.load(Ordering::Relaxed) {
            usize::MAX => "nothing".to_string(),
            n => n.to_string(),
        };
        for choice in &mut response.choices {
            if let Some(Content::Text(text)) = &mut choice.message.content {
                text.push_str(&format!(" (v1 remembered {remembered})"));
            }
        }
        Ok(response)
    }
}

export!(V1);
