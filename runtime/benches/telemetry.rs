//! `telemetry`: what observability adds to one chat completion on the 3-stage pipeline, piece
//! by piece — the request span under the production log subscriber at `info` (created,
//! joined to a trace, entered and left as often as a request's future is polled), every
//! metric such a request records, and its entry in the recent-requests ring (what span
//! export adds on the request path: the record is queued, its spans built on the exporter's
//! thread). With telemetry
//! off each piece is skipped (`RUST_LOG=warn` disables the span; no recorder, no ring).
//!
//! Run: `cargo bench -p weir --bench telemetry`. End to end: `bench/telemetry.sh`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use weir::telemetry::{self, AttemptStep, LlmStep, Recent, RequestRecord, StageStep};
use weir::wit::Usage;

/// Polls of a request's future, each entering and leaving its span (measured order of
/// magnitude for a request with one upstream call).
const POLLS: usize = 8;

fn record(id: &str) -> RequestRecord {
    let step = |label: &str, phase| StageStep {
        label: label.into(),
        phase,
        at: Duration::from_micros(10),
        elapsed: Duration::from_micros(40),
        fuel: Some(120_000),
        outcome: "next".into(),
    };
    RequestRecord {
        id: id.into(),
        trace: Some(telemetry::TraceParent::random()),
        parent: None,
        started: std::time::SystemTime::now(),
        method: http::Method::POST,
        endpoint: "/v1/chat/completions",
        route: Some("demo".into()),
        key: None,
        status: 200,
        error: None,
        elapsed: Duration::from_micros(190),
        stream: None,
        upstream: Duration::from_micros(60),
        cache: Some("bypass"),
        cost: Some(400_000),
        stages: vec![
            step("prompt-guard@00169057", "request"),
            step("pii-redact@bd3bec7e", "request"),
            step("system-prompt@5c1d7a02", "request"),
            step("pii-redact@bd3bec7e", "response"),
        ],
        llm: Some(LlmStep {
            model: "demo".into(),
            at: Duration::from_micros(100),
            elapsed: Duration::from_micros(70),
            usage: Some((40, 30)),
        }),
        attempts: vec![AttemptStep {
            target: "sim".into(),
            model: "demo".into(),
            status: Some(200),
            outcome: "ok".into(),
            kind: "ok",
            at: Duration::from_micros(105),
            elapsed: Duration::from_micros(60),
            span: telemetry::span_id(),
            upstream_message: None,
        }],
        services: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    // The production subscriber, logs at `info` on stderr (nothing is logged here).
    let _tracing = telemetry::init(false, None).unwrap();
    telemetry::init_metrics();
    c.bench_function("request span: create, join trace, 8 polls, close", |b| {
        b.iter(|| {
            let span = telemetry::request_span("req-1");
            let trace = telemetry::join_trace(None);
            for _ in 0..POLLS {
                let _entered = span.enter();
                black_box(&trace);
            }
        })
    });
    let usage = Usage {
        prompt_tokens: 40,
        completion_tokens: 30,
        total_tokens: 70,
        cached_tokens: 0,
    };
    c.bench_function("metrics of one request (3 stages, 1 attempt)", |b| {
        b.iter(|| {
            let in_flight = telemetry::InFlight::enter();
            for (stage, phase) in [
                ("prompt-guard", "request"),
                ("pii-redact", "request"),
                ("system-prompt", "request"),
                ("pii-redact", "response"),
            ] {
                let outcome = if phase == "request" { "next" } else { "ok" };
                telemetry::stage(
                    stage,
                    phase,
                    outcome,
                    Duration::from_micros(40),
                    Some(120_000),
                );
            }
            telemetry::attempt("sim", None, Duration::from_micros(60));
            telemetry::spend("-", "demo", &usage, 400_000, false);
            telemetry::cache("demo", "bypass");
            telemetry::request(
                "demo",
                200,
                Duration::from_micros(190),
                Some(Duration::from_micros(130)),
            );
            drop(in_flight);
        })
    });
    let recent = Arc::new(Recent::new(256));
    c.bench_function("recent-requests ring: push one record", |b| {
        b.iter(|| recent.push(black_box(record("req-1"))))
    });
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
