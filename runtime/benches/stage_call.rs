//! `stage_call`: one request's worth of a pass-through stage — fresh instance from its
//! `StagePre`, `on-request`, `on-response`, teardown — with and without fuel metering, and
//! with teardown inline versus on the reaper thread; plus `demo-pipeline`, the three
//! first-party stages with the demo config on a small prompt with an email address.
//!
//! Run: `cargo bench -p weir --bench stage_call`. Criterion prints the mean/median per
//! variant; afterwards a plain pass prints the median and p99 of single calls (criterion
//! reports no tail). `GAP_US=300 cargo bench -p weir --bench stage_call` skips criterion and
//! sleeps that long before each timed call of the plain pass: calls back to back find the
//! stage's code and memory in the CPU's caches, while in the HTTP path, at c=1, the worker
//! sleeps on the network between requests.

// Benchmarks measure wall time: std's clock (clippy.toml bans it elsewhere).
#![allow(missing_docs, clippy::unwrap_used, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use weir::config::{CallLimits, SandboxSettings};
use weir::host_api::{HostServices, NoLlm, StageIdentity};
use weir::pipeline::{OnError, Pipeline, PipelineStage, StageEnv};
use weir::sandbox::{Reaper, Sandbox};
use weir::stages::LoadedStage;
use weir::wit::{ChatRequest, ChatResponse, Choice, Message};

struct Setup {
    runtime: tokio::runtime::Runtime,
    env: StageEnv,
    pipeline: Arc<Pipeline>,
}

fn setup(fuel: bool, reaper: Reaper) -> Setup {
    setup_with(
        fuel,
        reaper,
        &[("passthrough", weir_test_artifacts::PASSTHROUGH, &[])],
    )
}

/// The demo pipeline: prompt-guard -> pii-redact -> system-prompt, with their demo config.
fn demo_pipeline() -> Setup {
    setup_with(
        true,
        Reaper::inline(),
        &[
            ("prompt-guard", weir_test_artifacts::PROMPT_GUARD, &[]),
            (
                "pii-redact",
                weir_test_artifacts::PII_REDACT,
                &[("restore", "true")],
            ),
            (
                "system-prompt",
                weir_test_artifacts::SYSTEM_PROMPT,
                &[("prompt", "You serve the {{team}} team.")],
            ),
        ],
    )
}

type StageSpec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

fn setup_with(fuel: bool, reaper: Reaper, specs: &[StageSpec<'_>]) -> Setup {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = SandboxSettings {
        fuel_metering: fuel,
        defaults: CallLimits {
            fuel: fuel.then_some(10_000_000),
            ..CallLimits::default()
        },
        ..SandboxSettings::default()
    };
    let sandbox = Arc::new(Sandbox::new(settings).unwrap());
    assert!(
        sandbox.is_pooling(),
        "the benchmark measures the pooling allocator"
    );
    let services = Arc::new(HostServices::new(Arc::new(NoLlm), 4096));
    let limits = sandbox.settings().defaults;
    let mut stages = Vec::new();
    for (name, path, config) in specs {
        let stage = runtime
            .block_on(LoadedStage::load(&sandbox, &services, path.as_ref()))
            .unwrap();
        stages.push(PipelineStage {
            identity: Arc::new(StageIdentity {
                name: (*name).into(),
                label: stage.label(name).into(),
                config: config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                max_llm_calls: weir::config::DEFAULT_STAGE_LLM_CALLS,
                services: Default::default(),
            }),
            stage: Arc::new(stage),
            on_error: OnError::Fail,
            limits,
        });
    }
    let pipeline = Arc::new(Pipeline {
        route: "bench".into(),
        stages,
        max_output_retries: 0,
    });
    Setup {
        runtime,
        env: StageEnv {
            sandbox,
            services,
            reaper,
            outputs: weir::cache::StageOutputCache::default(),
        },
        pipeline,
    }
}

fn message(role: &str, text: &str) -> Message {
    Message::text(role, text)
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "bench".into(),
        messages: vec![
            message("system", "You are terse."),
            message(
                "user",
                "Hello, my email is jane@example.com. What is a weir?",
            ),
        ],
        temperature: None,
        top_p: None,
        max_tokens: Some(64),
        stream: false,
        user: None,
        metadata: Vec::new(),
        extra: "{}".into(),
    }
}

fn response() -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-bench".into(),
        model: "bench".into(),
        created: 0,
        choices: vec![Choice {
            index: 0,
            message: message("assistant", "A low dam across a river."),
            finish_reason: Some("stop".into()),
            extra: "{}".into(),
        }],
        usage: None,
        extra: "{}".into(),
    }
}

/// One request through the one-stage pipeline, teardown included.
async fn one_call(setup: &Setup, request: ChatRequest, response: ChatResponse) {
    let mut fwd = setup.pipeline.start(&setup.env, "bench".into(), request);
    fwd.on_request().await.unwrap();
    let out = fwd.on_response(response, false, 0).await.unwrap();
    std::hint::black_box(out);
    drop(fwd);
}

fn variants() -> Vec<(&'static str, Setup)> {
    vec![
        ("fuel/inline-drop", setup(true, Reaper::inline())),
        ("no-fuel/inline-drop", setup(false, Reaper::inline())),
        ("fuel/reaper", setup(true, Reaper::start())),
        ("demo-pipeline", demo_pipeline()),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("stage_call");
    for (name, setup) in variants() {
        let req = request();
        let resp = response();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                setup.runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        one_call(&setup, req.clone(), resp.clone()).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// Median and p99 of single calls, which criterion does not report.
fn percentiles() {
    const CALLS: usize = 20_000;
    let gap = gap();
    for (name, setup) in variants() {
        let req = request();
        let resp = response();
        let mut samples: Vec<Duration> = setup.runtime.block_on(async {
            for _ in 0..1_000 {
                one_call(&setup, req.clone(), resp.clone()).await;
            }
            let mut samples = Vec::with_capacity(CALLS);
            for _ in 0..CALLS {
                if let Some(gap) = gap {
                    std::thread::sleep(gap);
                }
                let start = Instant::now();
                one_call(&setup, req.clone(), resp.clone()).await;
                samples.push(start.elapsed());
            }
            samples
        });
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "stage_call/{name}: median {:.1} µs, p99 {:.1} µs ({CALLS} calls)",
            at(0.50).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6
        );
    }
}

criterion_group!(benches, bench);

/// The idle time before each timed call of the plain pass (`GAP_US`), if any.
fn gap() -> Option<Duration> {
    let gap = std::env::var("GAP_US").ok()?;
    Some(Duration::from_micros(
        gap.parse().expect("GAP_US is microseconds"),
    ))
}

fn main() {
    if gap().is_none() {
        benches();
    }
    Criterion::default().configure_from_args().final_summary();
    percentiles();
}
