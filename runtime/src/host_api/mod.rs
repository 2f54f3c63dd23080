//! The WIT imports implemented for guests: `log`, `config-get`, `complete`, `complete-all`
//! (fan-out, `fan_out`), `embed`, `count-tokens`, `cache-get`, `cache-set`, `retry-response`.
//!
//! Owns: [`HostContext`] (what one instance may reach, and for what: [`CallScope`]),
//! [`HostServices`] (the process-wide services behind the imports), the [`LlmAccess`]
//! interface the LLM step implements, called with a request's [`Caller`] (never from
//! `describe()`), and the form and budget of guest log lines ([`LogBudget`], [`log_line`]).
//! Guest-visible errors (an `llm-error`, a `none`) are data returned to the guest; only limit
//! violations and host bugs trap. Guest values are untrusted: every size is bounded here
//! (the copy into the host is already bounded by the instance's memory cap; `log` and
//! `count-tokens` read the guest's text in place and copy only what they use).

mod cache;
mod fan_out;
mod guest_log;
mod imports;
mod in_place;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

pub use cache::{StageCache, StageCacheLimits};
pub use guest_log::{LogBudget, log_line};
pub use in_place::define as define_in_place;

use crate::cost::{CostError, Meter};
use crate::wit::{ChatRequest, ChatResponse, LlmError};

/// What an instance runs for: loading (`describe()`) or one request.
#[derive(Clone, Debug)]
pub enum CallScope {
    /// `describe()` at load: no request, no key, no limit to count against. The WIT says
    /// `describe` must not call `complete` or `embed`; such a call is refused with an
    /// `llm-error` (`llm_unavailable_in_describe`), with no upstream call, and the stage
    /// loads as if it had not made it.
    Describe,
    /// A phase of one request, whose meter counts and prices the stage's LLM calls.
    Request(Arc<Meter>),
}

/// Who is calling the LLM step from inside a stage, during a request (a call from
/// `describe()` never gets this far: [`HostContext::caller`]).
#[derive(Clone, Debug)]
pub struct Caller {
    /// The stage label (`name@abcd1234`).
    pub stage: Arc<str>,
    /// The request the stage is running for.
    pub request_id: Arc<str>,
    /// The route of that request.
    pub route: Arc<str>,
    /// That request's meter, so the stage's calls count against its key and limits.
    pub meter: Arc<Meter>,
    /// Most LLM calls the stage may make in the request (its `max_llm_calls`).
    pub max_llm_calls: u32,
}

impl Caller {
    /// Counts one more LLM call of the stage against its own limit; the call still counts
    /// against the request's limit when it begins.
    pub fn begin_call(&self) -> Result<(), CostError> {
        self.meter.begin_stage_call(&self.stage, self.max_llm_calls)
    }
}

/// The LLM step as seen by stages: `complete()` and `embed()` go through the same cache,
/// budget and fallback routing as the request itself.
pub trait LlmAccess: Send + Sync + 'static {
    /// Runs a chat completion for a stage, within `deadline` when given (as a client's
    /// `x-weir-deadline-ms` would: it may shorten the route's deadline, never lengthen it).
    fn complete(
        &self,
        caller: Caller,
        request: ChatRequest,
        deadline: Option<std::time::Duration>,
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
        _deadline: Option<std::time::Duration>,
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
    /// The stage's name in the pipeline (with the route, its cache namespace).
    pub name: Arc<str>,
    /// `name@<first 8 hex of the component blake3>`, for logs and headers.
    pub label: Arc<str>,
    /// The stage's config table, each value rendered as a string (strings as they are,
    /// everything else as JSON).
    pub config: BTreeMap<String, String>,
    /// Most LLM calls (`complete()`, `embed()`) the stage may make in one request.
    pub max_llm_calls: u32,
    /// The services the stage may call (its `services`), this config's.
    pub services: Arc<crate::service::Grant>,
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
    /// Loading or serving a request (with its meter).
    pub scope: CallScope,
}

impl HostContext {
    /// The caller identity passed to the LLM step; in `describe()`, the refusal the guest
    /// gets instead of any LLM call.
    pub fn caller(&self) -> Result<Caller, LlmError> {
        let meter = match &self.scope {
            CallScope::Request(meter) => meter.clone(),
            CallScope::Describe => {
                // Debug: a describe() calling in a loop must not flood the log.
                tracing::debug!(
                    target: "weir::guest",
                    stage = &*self.stage.label,
                    "describe() called complete() or embed(); refused (no upstream call)"
                );
                return Err(LlmError {
                    status: 403,
                    code: "llm_unavailable_in_describe".to_string(),
                    message: "describe() runs when the stage loads, outside any request: it \
                              may not call complete() or embed()"
                        .to_string(),
                });
            }
        };
        Ok(Caller {
            stage: self.stage.label.clone(),
            request_id: self.request_id.clone(),
            route: self.route.clone(),
            meter,
            max_llm_calls: self.stage.max_llm_calls,
        })
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
