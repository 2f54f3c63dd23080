//! Telemetry: the `tracing` subscriber (logs on stderr, span export over OTLP), W3C trace
//! context, the process-wide metrics registry rendered by `GET /metrics`, and the ring of
//! recent requests behind `GET /admin/requests`.
//!
//! A leaf module: everyone may record into it; it depends on nothing of weir's but config
//! values and the WIT usage type.
//!
//! - `traces`: [`init`] installs the subscriber; [`request_span`] opens a request's span
//!   for log lines; [`TraceParent`], [`join_trace`] and [`reparent`] carry the client's trace
//!   to upstreams.
//! - `export`: a sampled request's record becomes its spans, sent over OTLP/HTTP in batches
//!   by a thread of its own ([`export`]).
//! - `meters`: every metric's name and labels, and one function per thing counted, recording
//!   through handles cached by name.
//! - `recent`: [`Recent`], the bounded ring of [`RequestRecord`]s.

mod export;
mod meters;
mod recent;
mod traces;

pub use export::export;
pub use meters::{
    InFlight, OTHER_MODEL, attempt, breaker, cache, connection_closed, degraded, guest_log_dropped,
    init as init_metrics, label_models, reload, render, request, sandbox_pool, service, shed,
    spend, stage,
};
pub use recent::{AttemptStep, LlmStep, Recent, RequestRecord, STEPS_MAX, ServiceStep, StageStep};
pub use traces::{
    Export, TraceParent, Tracing, exported, init, join_trace, reparent, request_span, span_id,
};
