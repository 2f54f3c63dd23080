//! Span export over OTLP/HTTP, made from each sampled request's record once it is over.
//!
//! The request path pays for one uncontended lock and a push of the record it already keeps
//! for `/admin/requests` (an `Arc`); nothing is built for export while the request runs. A
//! thread of its own turns the queued records into spans (the request, its stage phases, the
//! LLM step and each upstream attempt, with the ids the request already used in
//! `traceparent` headers), batches them and sends them with the OpenTelemetry SDK's OTLP/HTTP
//! exporter, every `OTEL_BSP_SCHEDULE_DELAY` milliseconds (default 1,000) or as soon as
//! [`BATCH`] records are waiting. The queue is bounded ([`QUEUE_MAX`]): when the collector
//! cannot keep up, new records are dropped and counted, never held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};

use super::recent::RequestRecord;
use crate::sync::lock;

/// Records waiting to be sent, at most; more are dropped (and counted).
pub const QUEUE_MAX: usize = 4096;
/// Records sent in one export (each is a few spans: 64 of the demo's requests are about 400,
/// near the SDK batch processor's 512), and the queue length that wakes the exporter before
/// its schedule delay. 256 cost the exporter thread a third more CPU per request (13.3 vs
/// 9.8 µs at c=64 on the demo route): its buffers, freshly faulted in for every batch, were
/// each about 0.5 MB.
pub const BATCH: usize = 64;

/// The records waiting, and whether the exporter is asked to stop.
#[derive(Default)]
struct Waiting {
    records: Vec<Arc<RequestRecord>>,
    stopping: bool,
}

/// The queue between the request path and the exporter's thread.
#[derive(Default)]
struct Queue {
    waiting: Mutex<Waiting>,
    ready: Condvar,
    /// Records dropped because the queue was full, since the last warning.
    dropped: AtomicU64,
}

static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();

impl Queue {
    /// Queues `record`, waking the exporter when a batch is ready; a full queue drops it
    /// (and counts it).
    fn push(&self, record: Arc<RequestRecord>) {
        let mut waiting = lock(&self.waiting);
        if waiting.records.len() >= QUEUE_MAX {
            drop(waiting);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        waiting.records.push(record);
        if waiting.records.len() == BATCH {
            self.ready.notify_one();
        }
    }
}

/// Queues `record`'s spans for export (when the exporter runs; a no-op otherwise).
pub fn export(record: Arc<RequestRecord>) {
    if let Some(queue) = QUEUE.get() {
        queue.push(record);
    }
}

/// The exporter's thread, for [`Worker::stop`].
pub struct Worker {
    queue: Arc<Queue>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Worker {
    /// Sends what is queued and stops, waiting `timeout` at most.
    pub fn stop(self, timeout: Duration) {
        lock(&self.queue.waiting).stopping = true;
        self.queue.ready.notify_one();
        if self.done.recv_timeout(timeout).is_err() {
            eprintln!("warning: the last spans were not all exported within {timeout:?}");
        }
    }
}

/// Starts the exporter's thread, sending to the OTLP/HTTP traces URL `endpoint` as
/// `service_name`.
pub fn start(endpoint: &str, service_name: &str) -> Result<Worker, String> {
    crate::tls::install_provider();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|err| format!("OTLP exporter for {endpoint}: {err}"))?;
    exporter.set_resource(
        &opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name.to_string())
            .build(),
    );
    let queue = QUEUE.get_or_init(Arc::default).clone();
    let delay = schedule_delay();
    let (done, finished) = std::sync::mpsc::channel();
    let worker = queue.clone();
    std::thread::Builder::new()
        .name("weir-otlp".into())
        .spawn(move || {
            run(&worker, &exporter, delay);
            let _ = exporter.shutdown();
            let _ = done.send(());
        })
        .map_err(|err| format!("cannot start the OTLP exporter's thread: {err}"))?;
    Ok(Worker {
        queue,
        done: finished,
    })
}

/// `OTEL_BSP_SCHEDULE_DELAY` (milliseconds, as the SDK's batch processor reads it), 1 s by
/// default.
fn schedule_delay() -> Duration {
    std::env::var("OTEL_BSP_SCHEDULE_DELAY")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), |ms| {
            Duration::from_millis(ms.max(1))
        })
}

/// Sends batches until asked to stop, then what is left.
fn run(queue: &Queue, exporter: &opentelemetry_otlp::SpanExporter, delay: Duration) {
    let scope = InstrumentationScope::builder("weir")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    loop {
        let (records, stopping) = {
            let waiting = lock(&queue.waiting);
            let (mut waiting, _) = queue
                .ready
                .wait_timeout_while(waiting, delay, |w| w.records.len() < BATCH && !w.stopping)
                .unwrap_or_else(PoisonError::into_inner);
            (std::mem::take(&mut waiting.records), waiting.stopping)
        };
        let dropped = queue.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                target: "weir::telemetry",
                dropped,
                "the OTLP collector is not keeping up: the spans of {dropped} requests were dropped"
            );
        }
        for batch in records.chunks(BATCH) {
            let spans = batch
                .iter()
                .flat_map(|record| spans(record, &scope))
                .collect();
            if let Err(err) = futures_executor::block_on(exporter.export(spans)) {
                tracing::warn!(target: "weir::telemetry", error = %err, "exporting spans failed");
            }
        }
        if stopping {
            return;
        }
    }
}

/// The spans of one request: the request (a server span, its parent the client's span),
/// under it each stage phase and the LLM step, under that each upstream attempt.
pub fn spans(record: &RequestRecord, scope: &InstrumentationScope) -> Vec<SpanData> {
    let Some(trace) = record.trace else {
        return Vec::new();
    };
    let trace_id = TraceId::from_bytes(trace.trace_id);
    let request_id = SpanId::from_bytes(trace.span_id);
    // A span `elapsed` long from `offset` after the request's start.
    let span = |id: SpanId,
                parent: SpanId,
                name: String,
                kind: SpanKind,
                (offset, elapsed): (Duration, Duration)| SpanData {
        span_context: SpanContext::new(
            trace_id,
            id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: kind,
        name: name.into(),
        start_time: record.started + offset,
        end_time: record.started + offset + elapsed,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    };
    let mut out =
        Vec::with_capacity(2 + record.stages.len() + record.services.len() + record.attempts.len());

    let mut request = span(
        request_id,
        record.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        format!("{} {}", record.method, record.endpoint),
        SpanKind::Server,
        // A relayed stream's request span ends with the stream.
        (Duration::ZERO, record.stream.unwrap_or(record.elapsed)),
    );
    request.parent_span_is_remote = record.parent.is_some();
    let attributes = &mut request.attributes;
    attributes.extend([
        KeyValue::new("request_id", record.id.to_string()),
        KeyValue::new("http.request.method", record.method.to_string()),
        KeyValue::new("url.path", record.endpoint),
        KeyValue::new("http.response.status_code", i64::from(record.status)),
        KeyValue::new("gen_ai.operation.name", "chat"),
    ]);
    // A route is named by the model clients ask for.
    if let Some(route) = &record.route {
        attributes.extend([
            KeyValue::new("gen_ai.request.model", route.to_string()),
            KeyValue::new("weir.route", route.to_string()),
        ]);
    }
    if let Some(key) = &record.key {
        attributes.push(KeyValue::new("weir.key", key.clone()));
    }
    if let Some(cache) = record.cache {
        attributes.push(KeyValue::new("weir.cache", cache));
    }
    if let Some(cost) = record.cost {
        attributes.push(KeyValue::new(
            "weir.cost_usd",
            crate::config::pico_to_usd(cost),
        ));
    }
    if let Some((code, message)) = &record.error {
        attributes.push(KeyValue::new("error.type", code.clone()));
        if record.status >= 500 {
            request.status = Status::error(message.clone());
        }
    }
    out.push(request);

    for step in &record.stages {
        let (name, version) = step.label.rsplit_once('@').unwrap_or((&step.label, ""));
        let mut stage = span(
            SpanId::from_bytes(super::span_id()),
            request_id,
            format!("stage {name} {}", step.phase),
            SpanKind::Internal,
            (step.at, step.elapsed),
        );
        stage.attributes.extend([
            KeyValue::new("weir.stage", name.to_string()),
            KeyValue::new("weir.stage.version", version.to_string()),
            KeyValue::new("weir.phase", step.phase),
            KeyValue::new("weir.outcome", step.outcome.to_string()),
        ]);
        if let Some(fuel) = step.fuel {
            stage.attributes.push(KeyValue::new(
                "weir.fuel",
                i64::try_from(fuel).unwrap_or(i64::MAX),
            ));
        }
        out.push(stage);
    }

    let mut parent = request_id;
    if let Some(llm) = &record.llm {
        let id = SpanId::from_bytes(super::span_id());
        let mut step = span(
            id,
            request_id,
            format!("chat {}", llm.model),
            SpanKind::Internal,
            (llm.at, llm.elapsed),
        );
        step.attributes.extend([
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", llm.model.clone()),
            KeyValue::new("weir.attempts", record.attempts.len() as i64),
        ]);
        if let Some(cache) = record.cache {
            step.attributes.push(KeyValue::new("weir.cache", cache));
        }
        if let Some((input, output)) = llm.usage {
            step.attributes.extend([
                KeyValue::new("gen_ai.usage.input_tokens", i64::from(input)),
                KeyValue::new("gen_ai.usage.output_tokens", i64::from(output)),
            ]);
        }
        out.push(step);
        parent = id;
    }

    // A stage's service call: a client span under the request (the stage's own span id is not
    // kept; its time and name are on the call).
    for call in &record.services {
        let mut step = span(
            SpanId::from_bytes(super::span_id()),
            request_id,
            format!("service {} {}", call.service, call.asked),
            SpanKind::Client,
            (call.at, call.elapsed),
        );
        step.attributes.extend([
            KeyValue::new("weir.service", call.service.to_string()),
            KeyValue::new("weir.stage", call.stage.to_string()),
            KeyValue::new("weir.cache", call.cache),
            KeyValue::new("weir.attempts", i64::from(call.attempts)),
            KeyValue::new("weir.outcome", call.outcome),
        ]);
        if let Some(status) = call.status {
            step.attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if call.outcome != "ok" {
            step.attributes
                .push(KeyValue::new("error.type", call.outcome));
            step.status = Status::error(call.outcome);
        }
        out.push(step);
    }

    for (retry, attempt) in record.attempts.iter().enumerate() {
        let mut call = span(
            SpanId::from_bytes(attempt.span),
            parent,
            format!("chat {}", attempt.model),
            SpanKind::Client,
            (attempt.at, attempt.elapsed),
        );
        call.attributes.extend([
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", attempt.model.clone()),
            KeyValue::new("weir.target", attempt.target.to_string()),
            KeyValue::new("weir.retry", retry as i64),
            KeyValue::new("weir.outcome", attempt.kind),
        ]);
        if let Some(status) = attempt.status {
            call.attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(message) = &attempt.upstream_message {
            call.attributes
                .push(KeyValue::new("weir.upstream_message", message.clone()));
        }
        if !matches!(attempt.kind, "ok" | "hedge_cancelled") {
            call.attributes
                .push(KeyValue::new("error.type", attempt.kind));
            call.status = Status::error(attempt.outcome.to_string());
        }
        out.push(call);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::telemetry::{AttemptStep, LlmStep, StageStep, TraceParent};

    fn record() -> RequestRecord {
        RequestRecord {
            id: "req-1".into(),
            trace: Some(TraceParent::random()),
            parent: Some([7; 8]),
            started: SystemTime::now(),
            method: http::Method::POST,
            endpoint: "/v1/chat/completions",
            route: Some("demo".into()),
            key: None,
            status: 502,
            error: Some((
                "all_targets_failed".into(),
                "all 1 upstream attempts failed".into(),
            )),
            elapsed: Duration::from_millis(10),
            stream: None,
            upstream: Duration::from_millis(8),
            cache: Some("miss"),
            cost: Some(0),
            stages: vec![StageStep {
                label: "pii-redact@bd3bec7e".into(),
                phase: "request",
                at: Duration::from_micros(100),
                elapsed: Duration::from_micros(50),
                fuel: Some(1000),
                outcome: "next".into(),
            }],
            llm: Some(LlmStep {
                model: "demo".into(),
                at: Duration::from_millis(1),
                elapsed: Duration::from_millis(9),
                usage: None,
            }),
            attempts: vec![AttemptStep {
                target: "primary".into(),
                model: "gpt".into(),
                status: Some(500),
                outcome: "upstream status 500".into(),
                kind: "status_5xx",
                at: Duration::from_millis(1),
                elapsed: Duration::from_millis(8),
                span: [9; 8],
                upstream_message: Some("boom".into()),
            }],
            services: vec![crate::telemetry::ServiceStep {
                service: "search".into(),
                stage: "retrieve@1234".into(),
                asked: "POST /query".into(),
                status: None,
                cache: "bypass",
                attempts: 2,
                outcome: "all_targets_failed",
                started: tokio::time::Instant::now(),
                at: Duration::from_micros(110),
                elapsed: Duration::from_micros(30),
            }],
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_keeps_what_it_has() {
        let queue = Queue::default();
        let record = Arc::new(record());
        for _ in 0..QUEUE_MAX + 3 {
            queue.push(record.clone());
        }
        assert_eq!(lock(&queue.waiting).records.len(), QUEUE_MAX);
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_record_becomes_its_request_its_steps_and_its_attempts_with_the_ids_it_used() {
        let record = record();
        let trace = record.trace.unwrap();
        let scope = InstrumentationScope::builder("weir").build();
        let spans = spans(&record, &scope);
        let names: Vec<&str> = spans.iter().map(|s| &*s.name).collect();
        assert_eq!(
            names,
            [
                "POST /v1/chat/completions",
                "stage pii-redact request",
                "chat demo",
                "service search POST /query",
                "chat gpt"
            ]
        );
        let (request, stage, llm, attempt) = (&spans[0], &spans[1], &spans[2], &spans[4]);
        let service = &spans[3];
        assert_eq!(service.parent_span_id, request.span_context.span_id());
        assert_eq!(service.span_kind, SpanKind::Client);
        assert!(
            matches!(service.status, Status::Error { .. }),
            "a failed call"
        );
        assert_eq!(request.span_context.span_id().to_bytes(), trace.span_id);
        assert_eq!(request.parent_span_id.to_bytes(), [7; 8]);
        assert!(request.parent_span_is_remote);
        assert!(matches!(request.status, Status::Error { .. }));
        assert_eq!(stage.parent_span_id, request.span_context.span_id());
        assert_eq!(llm.parent_span_id, request.span_context.span_id());
        // The attempt's id is the one its traceparent named, under the LLM step.
        assert_eq!(attempt.span_context.span_id().to_bytes(), [9; 8]);
        assert_eq!(attempt.parent_span_id, llm.span_context.span_id());
        assert_eq!(attempt.span_kind, SpanKind::Client);
        assert!(
            attempt
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "weir.upstream_message")
        );
        // Every span lies within the request and keeps its own offset and length.
        assert_eq!(
            stage.start_time,
            record.started + Duration::from_micros(100)
        );
        assert_eq!(stage.end_time, record.started + Duration::from_micros(150));
        for span in &spans {
            assert!(request.start_time <= span.start_time && span.end_time <= request.end_time);
        }
        assert!(
            spans
                .iter()
                .all(|s| s.span_context.trace_id().to_bytes() == trace.trace_id)
        );
        // A record without a trace has no spans.
        let untraced = RequestRecord {
            trace: None,
            ..record
        };
        assert!(super::spans(&untraced, &scope).is_empty());
    }
}
