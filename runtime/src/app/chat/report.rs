//! What a chat completion reports once it is over: the response headers, the span, the
//! metrics and the recent-requests record are all made from it.

use std::sync::Arc;

use tokio::time::Instant;

use crate::cache::CacheStatus;
use crate::error::ShedReason;
use crate::pipeline::Forwarded;
use crate::telemetry::{AttemptStep, LlmStep, RequestRecord, StageStep};

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
    pub llm_call: Option<(Instant, String)>,
    /// Why weir shed the request, when it did (`weir_shed_requests_total`).
    pub shed: Option<ShedReason>,
    /// The stages whose failure their `degrade` policy passed over (`x-weir-degraded`).
    pub degraded: Vec<Arc<str>>,
    /// Each call its stages made to a service (`Server-Timing`, the request record).
    pub services: Vec<crate::telemetry::ServiceStep>,
    /// A relayed stream's end, sent once it is settled: its record waits for it.
    pub stream_end: Option<tokio::sync::oneshot::Receiver<super::StreamEnd>>,
}

impl Report {
    /// Notes what the stages did so far: labels, fuel, each phase.
    pub(super) fn note_stages(&mut self, fwd: &Forwarded) {
        self.labels = fwd.stage_labels();
        self.fuel = fwd.fuel_by_stage();
        self.runs = fwd.runs().to_vec();
        self.degraded = fwd.degraded().to_vec();
    }

    /// Time spent waiting on upstreams: the LLM step's attempts.
    pub fn upstream_time(&self) -> std::time::Duration {
        self.attempts.iter().map(|a| a.elapsed).sum()
    }

    /// The request's record, for the recent-requests ring and span export: how it `ended`,
    /// each step with its start after the request's.
    pub fn into_record(self, ended: Ended) -> RequestRecord {
        let Ended {
            id,
            method,
            endpoint,
            status,
            error,
            started,
            elapsed,
            stream,
        } = ended;
        let upstream = self.upstream_time();
        let at = |instant: Instant| instant.saturating_duration_since(started);
        // The answer's usage: the attempt that answered.
        let usage = self
            .attempts
            .iter()
            .find(|a| a.outcome.is_ok())
            .and_then(|a| a.usage)
            .map(|u| (u.prompt_tokens, u.completion_tokens));
        let llm = match (self.llm, self.llm_call) {
            (Some(elapsed), Some((llm_at, model))) => Some(LlmStep {
                model,
                at: at(llm_at),
                elapsed,
                usage,
            }),
            _ => None,
        };
        RequestRecord {
            id,
            trace: self.trace,
            parent: self.parent,
            started: std::time::SystemTime::now()
                .checked_sub(elapsed)
                .unwrap_or(std::time::UNIX_EPOCH),
            method,
            endpoint,
            cache: self.cache.map(|(cache, _)| cache.as_str()),
            stages: self
                .runs
                .into_iter()
                .map(|run| StageStep {
                    label: run.label,
                    phase: run.phase.as_str(),
                    at: at(run.started),
                    elapsed: run.elapsed,
                    fuel: run.fuel_used,
                    outcome: run.outcome,
                })
                .collect(),
            attempts: self
                .attempts
                .into_iter()
                .filter_map(|a| {
                    let (sent, span) = a.span?;
                    Some(AttemptStep {
                        kind: a.outcome.label()?,
                        target: a.target,
                        model: a.model,
                        status: a.status,
                        outcome: a.outcome.into(),
                        at: at(sent),
                        elapsed: a.elapsed,
                        span,
                        upstream_message: a.upstream_message,
                    })
                })
                .collect(),
            services: (self.services.into_iter())
                .map(|call| crate::telemetry::ServiceStep {
                    at: at(call.started),
                    ..call
                })
                .collect(),
            route: self.route,
            key: self.key,
            status,
            error,
            elapsed,
            stream,
            upstream,
            cost: self.cost,
            llm,
        }
    }
}

/// How a request ended, for [`Report::into_record`].
pub struct Ended {
    /// Its id.
    pub id: Arc<str>,
    /// Its method.
    pub method: http::Method,
    /// What it asked for: `/v1/chat/completions`, or `/v1/jobs` for a background job's run.
    pub endpoint: &'static str,
    /// The response status.
    pub status: u16,
    /// The error code and message, when it failed.
    pub error: Option<(String, String)>,
    /// When it started.
    pub started: Instant,
    /// How long it took (to its response headers).
    pub elapsed: std::time::Duration,
    /// For a relayed stream, how long it took to its end.
    pub stream: Option<std::time::Duration>,
}
