//! `service_call`: what a stage's call to a service costs on top of calling it directly, all
//! on loopback against an in-process `weir sim` search endpoint.
//!
//! - `direct`: one POST with a pooled hyper client (the baseline a stage would pay with no
//!   host in between).
//! - `host`: the same query through `Service::call` (grant lookup excluded): the router's
//!   attempt loop, the record, the bill.
//! - `stage-http`: one request through a pipeline whose one stage (the outbound test program)
//!   makes the query with `weir_sdk::service` (weir's `services` import) and answers with what
//!   it got: instance, guest, the import, `Service::call`, teardown.
//! - `stage-wasi-http`: the same query over standard `wasi:http` (`weir_sdk::service::wasi_http`,
//!   what any `wasi:http` client does): some thirty resource calls instead of one.
//! - `stage-none`: the same stage, answering without a query (`mode = "fanout"` over no
//!   models), so `stage-http - stage-none - direct` is what the host adds to the query (the
//!   stage's own work on the answer, JSON-escaping it into its report, included).
//!
//! Run: `cargo bench -p weir --bench service_call`. After criterion, a plain pass prints the
//! median and p99 of single calls of each variant, and the CPU time per call of the bench's
//! one thread (everything runs on it: client, host, guest and the sim). `VARIANT=stage-http`
//! runs one variant only, `CALLS=N` sets the plain pass's calls (default 5,000); with a filter
//! that matches nothing (`cargo bench ... -- none`) only the plain pass runs.

// Benchmarks measure wall time: std's clock (clippy.toml bans it elsewhere).
#![allow(missing_docs, clippy::unwrap_used, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use weir::config::{Config, SandboxSettings};
use weir::cost::{Ledger, Meter};
use weir::host_api::{HostServices, NoLlm, StageIdentity};
use weir::pipeline::{OnError, Pipeline, PipelineStage, StageEnv};
use weir::sandbox::{Reaper, Sandbox};
use weir::service::{CallContext, Service, ServiceRequest};
use weir::sim::{Sim, SimConfig};
use weir::stages::LoadedStage;
use weir::wit::{ChatRequest, Content, Message};

const PATH: &str = "/api/v2/tenants/t/databases/d/collections/c/query";
const BODY: &str = r#"{"query_embeddings":[[1.0,0.0,0.5]],"n_results":3}"#;

struct Setup {
    runtime: tokio::runtime::Runtime,
    sim: SocketAddr,
    service: Arc<Service>,
    env: StageEnv,
    http: Arc<Pipeline>,
    wasi_http: Arc<Pipeline>,
    none: Arc<Pipeline>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

fn setup() -> Setup {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sim = runtime.block_on(async {
        let sim = Sim::bind(SimConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))))
            .await
            .unwrap();
        let addr = sim.local_addr();
        tokio::spawn(sim.serve(std::future::pending()));
        addr
    });
    let text = format!(
        "[targets.t]\nbase_url = \"http://127.0.0.1:1/v1\"\n\n[services.search]\n\
         urls = [\"http://{sim}\"]\n\n[[routes]]\nmodel = \"m\"\ntargets = [\"t\"]\n"
    );
    let config = Config::parse(&text, Path::new("weir.toml"), &|_| None).unwrap();
    let service = Arc::new(Service::new(
        &config.services[0],
        weir::providers::ProviderClient::new().unwrap(),
        Ledger::open(None, None).unwrap(),
    ));
    let sandbox = Arc::new(Sandbox::new(SandboxSettings::default()).unwrap());
    let services = Arc::new(HostServices::new(Arc::new(NoLlm), 4096));
    let stage = Arc::new(
        runtime
            .block_on(LoadedStage::load(
                &sandbox,
                &services,
                weir_test_artifacts::OUTBOUND.as_ref(),
            ))
            .unwrap(),
    );
    let pipeline = |config: &[(&str, &str)]| {
        Arc::new(Pipeline {
            route: "bench".into(),
            stages: vec![PipelineStage {
                identity: Arc::new(StageIdentity {
                    name: "probe".into(),
                    label: stage.label("probe").into(),
                    config: config
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                    max_llm_calls: 4,
                    services: Arc::new(vec![service.clone()]),
                }),
                stage: stage.clone(),
                on_error: OnError::Fail,
                limits: sandbox.settings().defaults,
            }],
            max_output_retries: 0,
        })
    };
    let url = format!("http://search{PATH}");
    let http = pipeline(&[
        ("mode", "http"),
        ("method", "POST"),
        ("url", &url),
        ("body", BODY),
    ]);
    let wasi_http = pipeline(&[
        ("mode", "http"),
        ("transport", "wasi-http"),
        ("method", "POST"),
        ("url", &url),
        ("body", BODY),
    ]);
    let none = pipeline(&[("mode", "fanout"), ("models", "[]")]);
    let env = StageEnv {
        sandbox,
        services,
        reaper: Reaper::inline(),
        outputs: weir::cache::StageOutputCache::new(0),
    };
    let client = Client::builder(TokioExecutor::new()).build_http();
    Setup {
        runtime,
        sim,
        service,
        env,
        http,
        wasi_http,
        none,
        client,
    }
}

async fn direct(setup: &Setup) {
    let request = http::Request::post(format!("http://{}{PATH}", setup.sim))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    let response = setup.client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    std::hint::black_box(body);
}

async fn host(setup: &Setup, ctx: &CallContext) {
    let request = ServiceRequest {
        method: http::Method::POST,
        path: PATH.to_string(),
        headers: Vec::new(),
        body: Bytes::from_static(BODY.as_bytes()),
    };
    let reply = setup.service.call(request, ctx).await.unwrap();
    assert_eq!(reply.status, 200);
    std::hint::black_box(reply);
}

async fn stage(setup: &Setup, pipeline: &Arc<Pipeline>) {
    let mut fwd = pipeline
        .start(&setup.env, "bench".into(), request())
        .with_meter(Meter::new(None));
    fwd.on_request().await.unwrap();
    let answer = fwd.take_answer().unwrap();
    std::hint::black_box(answer);
}

/// A one-message request.
fn request() -> ChatRequest {
    ChatRequest {
        model: "bench".into(),
        messages: vec![Message {
            role: "user".into(),
            content: Some(Content::Text("What is a weir?".into())),
            name: None,
            extra: "{}".into(),
        }],
        temperature: None,
        top_p: None,
        max_tokens: None,
        stream: false,
        user: None,
        metadata: Vec::new(),
        extra: "{}".into(),
    }
}

/// One call of `variant`.
async fn one(setup: &Setup, variant: &str, ctx: &CallContext) {
    match variant {
        "direct" => direct(setup).await,
        "host" => host(setup, ctx).await,
        "stage-http" => stage(setup, &setup.http).await,
        "stage-wasi-http" => stage(setup, &setup.wasi_http).await,
        _ => stage(setup, &setup.none).await,
    }
}

const VARIANTS: [&str; 5] = [
    "direct",
    "host",
    "stage-http",
    "stage-wasi-http",
    "stage-none",
];

fn context() -> CallContext {
    CallContext {
        meter: Meter::new(None),
        stage: "bench".into(),
        route: "bench".into(),
        deadline: None,
    }
}

fn bench(c: &mut Criterion) {
    let setup = setup();
    let mut group = c.benchmark_group("service_call");
    for variant in VARIANTS {
        group.bench_function(variant, |b| {
            b.iter_custom(|iters| {
                setup.runtime.block_on(async {
                    let ctx = context();
                    let start = Instant::now();
                    for _ in 0..iters {
                        one(&setup, variant, &ctx).await;
                        // Keep the meter's record bounded.
                        ctx.meter.take_services();
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// CPU time this thread has run, in nanoseconds (Linux's schedstat; 0 elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Median and p99 of single calls, which criterion does not report.
fn percentiles() {
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(5_000);
    let only = std::env::var("VARIANT").ok();
    let setup = setup();
    for variant in VARIANTS
        .into_iter()
        .filter(|v| only.as_deref().is_none_or(|o| o == *v))
    {
        let mut samples: Vec<Duration> = setup.runtime.block_on(async {
            let ctx = context();
            for _ in 0..500 {
                one(&setup, variant, &ctx).await;
            }
            let mut samples = Vec::with_capacity(calls);
            let cpu = thread_cpu_ns();
            for _ in 0..calls {
                let start = Instant::now();
                one(&setup, variant, &ctx).await;
                samples.push(start.elapsed());
                ctx.meter.take_services();
            }
            let cpu = thread_cpu_ns().saturating_sub(cpu);
            println!(
                "service_call/{variant}: cpu {:.1} µs per call",
                cpu as f64 / calls as f64 / 1e3
            );
            samples
        });
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "service_call/{variant}: median {:.1} µs, p99 {:.1} µs ({calls} calls)",
            at(0.50).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    percentiles();
}
