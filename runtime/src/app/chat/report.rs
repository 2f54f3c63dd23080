//! What a chat completion reports once it is over: the response headers, the span, the
//! metrics and the recent-requests record are all made from it.

use std::sync::Arc;

use crate::cache::CacheStatus;
use crate::error::ShedReason;
use crate::pipeline::Forwarded;

/// What a chat completion reports in its response headers.
#[derive(Default)]
pub struct Report {
    /// The stages that ran (`x-weir-stages`).
    pub labels: Vec<Arc<str>>,
    /// How the cache was involved (`x-weir-cache`, `x-weir-semantic-similarity`).
    pub cache: Option<(CacheStatus, Option<f32>)>,
    /// The cache entry of the answer (`x-weir-cache-key`, for `DELETE /admin/cache?key=`).
    pub cache_key: Option<crate::cache::CacheKey>,
    /// What the request cost so far, pico-dollars (`x-weir-cost-usd`); `None` before the
    /// request was admitted.
    pub cost: Option<u64>,
    /// Fuel each stage burned (`x-weir-stage-fuel`).
    pub fuel: Vec<(Arc<str>, u64)>,
    /// The route the request ran on, once known.
    pub route: Option<Arc<str>>,
    /// Each stage phase that ran (`Server-Timing`, the request record).
    pub runs: Vec<crate::pipeline::StageRun>,
    /// Time spent in the LLM step: cache, routing and upstream (`Server-Timing`).
    pub llm: Option<std::time::Duration>,
    /// Each upstream attempt of the LLM step.
    pub attempts: Vec<crate::router::Attempt>,
    /// The key's name, once authenticated.
    pub key: Option<String>,
    /// The W3C trace the request joined (the client's, or a new one), with the request
    /// span's id.
    pub trace: Option<crate::telemetry::TraceParent>,
    /// The client's span (its `traceparent`), the request span's parent.
    pub parent: Option<[u8; 8]>,
    /// When the LLM step started, and the model asked of it.
    pub llm_call: Option<(tokio::time::Instant, String)>,
    /// Why weir shed the request, when it did (`weir_shed_requests_total`).
    pub shed: Option<ShedReason>,
}

impl Report {
    /// Notes what the stages did so far: labels, fuel, each phase.
    pub(super) fn note_stages(&mut self, fwd: &Forwarded) {
        self.labels = fwd.stage_labels();
        self.fuel = fwd.fuel_by_stage();
        self.runs = fwd.runs().to_vec();
    }

    /// Time spent waiting on upstreams: the LLM step's attempts.
    pub fn upstream_time(&self) -> std::time::Duration {
        self.attempts.iter().map(|a| a.elapsed).sum()
    }
}
