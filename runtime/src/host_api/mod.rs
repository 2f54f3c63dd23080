//! The WIT imports implemented for guests: `log`, `config-get`, `complete`, `embed`,
//! `count-tokens`, `cache-get`, `cache-set`.
//!
//! Owns: [`HostContext`] (what one instance may reach), [`HostServices`] (the process-wide
//! services behind the imports), the [`LlmAccess`] interface the LLM step implements, and the
//! form and budget of guest log lines ([`LogBudget`], [`log_line`]).
//! Guest-visible errors (an `llm-error`, a `none`) are data returned to the guest; only limit
//! violations and host bugs trap. Guest values are untrusted: every size is bounded here
//! (the copy into the host is already bounded by the instance's memory cap; `log` and
//! `count-tokens` read the guest's text in place and copy only what they use).

mod cache;
mod guest_log;
mod imports;
mod in_place;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

pub use cache::{StageCache, StageCacheLimits};
pub use guest_log::{LogBudget, log_line};
pub use in_place::define as define_in_place;

use crate::wit::{ChatRequest, ChatResponse, LlmError};

/// Who is calling the LLM step from inside a stage.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The stage label (`name@abcd1234`).
    pub stage: Arc<str>,
    /// The request the stage is running for.
    pub request_id: Arc<str>,
    /// The route of that request.
    pub route: Arc<str>,
    /// That request's meter, so the stage's calls count against its key and limits
    /// (`None` outside a request, as in `describe()`).
    pub meter: Option<Arc<crate::cost::Meter>>,
}

/// The LLM step as seen by stages: `complete()` and `embed()` go through the same cache,
/// budget and fallback routing as the request itself.
pub trait LlmAccess: Send + Sync + 'static {
    /// Runs a chat completion for a stage.
    fn complete(
        &self,
        caller: Caller,
        request: ChatRequest,
    ) -> BoxFuture<'static, Result<ChatResponse, LlmError>>;

    /// Computes embeddings for a stage.
    fn embed(
        &self,
        caller: Caller,
        model: String,
        inputs: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>, LlmError>>;
}

/// The `LlmAccess` of a host with no LLM step wired (tests, `weir check`): every call is a
/// guest-visible 503 error.
#[derive(Debug, Default)]
pub struct NoLlm;

impl LlmAccess for NoLlm {
    fn complete(
        &self,
        _caller: Caller,
        _request: ChatRequest,
    ) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        Box::pin(async { Err(no_llm()) })
    }

    fn embed(
        &self,
        _caller: Caller,
        _model: String,
        _inputs: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>, LlmError>> {
        Box::pin(async { Err(no_llm()) })
    }
}

fn no_llm() -> LlmError {
    LlmError {
        status: 503,
        code: "llm_unavailable".to_string(),
        message: "no LLM step is available to stages in this host".to_string(),
    }
}

/// Process-wide services behind the imports (shared by every instance).
pub struct HostServices {
    /// The LLM step.
    pub llm: Arc<dyn LlmAccess>,
    /// The stages' private caches.
    pub cache: StageCache,
    /// Cap on one guest log line, bytes; longer lines are cut.
    pub log_line_max_bytes: usize,
}

impl HostServices {
    /// Services with `llm`, a default-sized stage cache and the given log-line cap.
    pub fn new(llm: Arc<dyn LlmAccess>, log_line_max_bytes: usize) -> Self {
        HostServices {
            llm,
            cache: StageCache::new(StageCacheLimits::default()),
            log_line_max_bytes,
        }
    }
}

/// The identity and config of one stage of one pipeline, shared by all its instances.
#[derive(Debug)]
pub struct StageIdentity {
    /// The stage's name in the pipeline (also its cache namespace).
    pub name: Arc<str>,
    /// `name@<first 8 hex of the component blake3>`, for logs and headers.
    pub label: Arc<str>,
    /// The stage's config table, each value rendered as a string (strings as they are,
    /// everything else as JSON).
    pub config: BTreeMap<String, String>,
}

/// What one stage instance may reach through the host API.
#[derive(Clone)]
pub struct HostContext {
    /// The stage this instance belongs to.
    pub stage: Arc<StageIdentity>,
    /// The process-wide services.
    pub services: Arc<HostServices>,
    /// The request the instance serves.
    pub request_id: Arc<str>,
    /// The route of that request.
    pub route: Arc<str>,
    /// That request's meter.
    pub meter: Option<Arc<crate::cost::Meter>>,
}

impl HostContext {
    /// The caller identity passed to the LLM step.
    pub fn caller(&self) -> Caller {
        Caller {
            stage: self.stage.label.clone(),
            request_id: self.request_id.clone(),
            route: self.route.clone(),
            meter: self.meter.clone(),
        }
    }
}

/// Cuts `text` to at most `max` bytes on a char boundary, marking the cut.
pub fn truncate_for_log(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}… [{} bytes cut]",
        &text[..end],
        text.len() - end
    ))
}
