//! The metrics weir records (the `metrics` facade, rendered by a Prometheus recorder).
//!
//! Every name and label set lives here, so `GET /metrics` is documented in one place:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `weir_requests_total` | counter | `route`, `status` |
//! | `weir_request_duration_seconds` | histogram | `route`, `status` |
//! | `weir_overhead_seconds` | histogram | `route`: total time minus time waiting on upstreams |
//! | `weir_requests_in_flight` | gauge | |
//! | `weir_shed_requests_total` | counter | `route`, `reason` (`overloaded`, `rate_limited`, `budget_exceeded`, `pool_exhausted`) |
//! | `weir_stage_duration_seconds` | histogram | `stage`, `phase` |
//! | `weir_stage_fuel` | histogram | `stage`, `phase` |
//! | `weir_stage_runs_total` | counter | `stage`, `phase`, `outcome` |
//! | `weir_guest_log_lines_dropped_total` | counter | `stage`: lines over `sandbox.log_lines_per_call` |
//! | `weir_upstream_attempts_total` | counter | `target`, `outcome` (`ok`, `timeout`, `deadline`, `connect`, `dropped`, `status_5xx`, `status_429`, `status_4xx`, `protocol`) |
//! | `weir_upstream_attempt_duration_seconds` | histogram | `target` |
//! | `weir_breaker_state` | gauge | `target`: 0 closed, 1 half-open, 2 open |
//! | `weir_sandbox_instances` | gauge | `lane` (`small`, `large`): stage instances alive in the pool (at most `sandbox.pool_size`) |
//! | `weir_cache_lookups_total` | counter | `route`, `result` (`hit`, `semantic-hit`, `miss`, `coalesced`, `bypass`) |
//! | `weir_tokens_total` | counter | `key`, `model`, `kind` (`input`, `cached_input`, `output`) |
//! | `weir_cost_picodollars_total` | counter | `key`, `model` (1e-12 USD, exact) |
//!
//! The `model` label is bounded by the config: a model the config names (a target's `model`,
//! a `[prices]` table, a route's alias) is its own label, and any other (a name an upstream
//! reported or a stage chose) is counted under [`OTHER_MODEL`], so neither the series nor the
//! handles cached for them grow with what upstreams and stages say.
//! | `weir_reloads_total` | counter | `outcome` (`ok`, `failed`) |
//! | `weir_connections_closed_total` | counter | `listener` (`public`, `admin`), `reason` (`header_timeout`, `idle_timeout`, `write_timeout`, `over_limit`) |
//! | `weir_state_fallbacks_total` | counter | `feature` (`budgets`, `rate_limits`, `cache`, `jobs`): a shared feature fell back to its `on_unavailable` policy because Redis failed |
//! | `weir_state_calls_total`, `weir_state_call_seconds`, `weir_state_up`, `weir_state_settles_dropped_total`, `weir_state_cache_rejected_total` | | the fleet's Redis (`state::redis`, `state::budget`, `state::cache`) |
//! | `weir_state_permits_returned_total` | counter | a target's fleet admission sent ahead of the router and given back unused (`router::Start`) |
//!
//! The job queue records its own (`weir_jobs_*`, see `queue::worker`).
//!
//! When metrics are off (`telemetry.metrics = false`) no recorder is installed and every
//! call here returns at once.
//!
//! The hot path records through handles registered once per stage, route, target and
//! key/model (cached here by name), not through a registry lookup per sample: measured on
//! the 3-stage pipeline, per-sample lookups cost about 6 µs of CPU per request.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The installed recorder's handle (`None` when another recorder was installed first).
static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Latency buckets, seconds: 0.5 ms to 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Overhead and stage buckets, seconds: 25 µs to 1 s.
const SHORT_BUCKETS: &[f64] = &[
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    1.0,
];
/// Fuel buckets: 1 thousand to 10 billion units.
const FUEL_BUCKETS: &[f64] = &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// Installs the Prometheus recorder once per process; later calls return the same handle.
pub fn init() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("weir_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("weir_upstream_attempt_duration_seconds".into()),
                        LATENCY_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("weir_overhead_seconds".into()),
                        SHORT_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("weir_stage_duration_seconds".into()),
                        SHORT_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("weir_stage_fuel".into()), FUEL_BUCKETS)
                });
            let handle = builder
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|err| tracing::warn!(error = %err, "no metrics recorder"))
                .ok()?;
            describe();
            let _ = IN_FLIGHT.set(gauge!("weir_requests_in_flight"));
            // Histogram samples pile up in the recorder until drained: drain them every few
            // seconds, not only when someone scrapes, so memory stays flat without a scraper.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("weir-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(err) = spawned {
                tracing::warn!(error = %err, "no metrics upkeep thread; histograms drain at scrapes only");
            }
            Some(handle)
        })
        .as_ref()
}

/// `weir_requests_in_flight`, registered with the recorder.
static IN_FLIGHT: OnceLock<Gauge> = OnceLock::new();

/// Whether a recorder is installed (metrics are on).
fn enabled() -> bool {
    RECORDER.get().is_some_and(Option::is_some)
}

/// Handles cached by name.
type ByName<M> = DashMap<Box<str>, Arc<M>>;

/// The handles cached under `name` in `map`, made by `make` the first time.
fn cached<M>(map: &ByName<M>, name: &str, make: impl FnOnce() -> M) -> Arc<M> {
    if let Some(found) = map.get(name) {
        return found.clone();
    }
    map.entry(name.into())
        .or_insert_with(|| Arc::new(make()))
        .clone()
}

/// The Prometheus text exposition of every metric (empty when metrics are off).
pub fn render() -> String {
    RECORDER
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "weir_requests_total",
        "Requests answered on the public listener, by route and status"
    );
    describe_histogram!(
        "weir_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to the response headers (for a stream: to its first event), by route and status"
    );
    describe_histogram!(
        "weir_overhead_seconds",
        metrics::Unit::Seconds,
        "weir's own time per request: the total minus the time spent waiting on upstreams"
    );
    describe_gauge!(
        "weir_requests_in_flight",
        "Public requests being handled now"
    );
    describe_gauge!(
        "weir_sandbox_instances",
        "Stage instances alive in a sandbox lane's pool (small, large)"
    );
    describe_counter!(
        "weir_service_calls_total",
        "Calls stages made to services, by service and outcome (ok, hit, or the error code)"
    );
    describe_histogram!(
        "weir_service_call_duration_seconds",
        metrics::Unit::Seconds,
        "Time a stage's service call took, retries and fallbacks included"
    );
    describe_counter!(
        "weir_degraded_total",
        "Responses served without a stage's effect under its `degrade` policy, by route and stage"
    );
    describe_counter!(
        "weir_shed_requests_total",
        "Requests refused to protect the node or its upstreams, by route and reason"
    );
    describe_histogram!(
        "weir_stage_duration_seconds",
        metrics::Unit::Seconds,
        "Wall time of a stage phase, instantiation included"
    );
    describe_histogram!("weir_stage_fuel", "Fuel a stage phase burned");
    describe_counter!(
        "weir_stage_runs_total",
        "Stage phases run, by stage, phase and outcome"
    );
    describe_counter!(
        "weir_guest_log_lines_dropped_total",
        "Guest log lines dropped because a phase call wrote more than \
         sandbox.log_lines_per_call, by stage"
    );
    describe_counter!(
        "weir_upstream_attempts_total",
        "Attempts against upstream targets, by target and outcome"
    );
    describe_histogram!(
        "weir_upstream_attempt_duration_seconds",
        metrics::Unit::Seconds,
        "Time an upstream attempt took (for a stream: to its first event)"
    );
    describe_gauge!(
        "weir_breaker_state",
        "Each target's circuit breaker: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(
        "weir_cache_lookups_total",
        "How the response cache answered, by route and result"
    );
    describe_counter!(
        "weir_state_calls_total",
        "Calls to the fleet's Redis, by operation and result (ok, error, timeout, skipped: \
         not made while the breaker around Redis was open)"
    );
    describe_histogram!(
        "weir_state_call_seconds",
        metrics::Unit::Seconds,
        "Time a call to the fleet's Redis took, by operation"
    );
    describe_counter!(
        "weir_state_settles_dropped_total",
        "Budget settles dropped because too many were waiting for the fleet's Redis (their \
         reservations are charged in full when they expire)"
    );
    describe_gauge!(
        "weir_state_up",
        "Whether the breaker around the fleet's Redis is closed (1) or not (0)"
    );
    describe_counter!(
        "weir_tokens_total",
        "Tokens billed by upstreams, by key, model and kind (cache hits excluded)"
    );
    describe_counter!(
        "weir_cost_picodollars_total",
        "Spend in pico-dollars (1e-12 USD), by key and model"
    );
    describe_counter!(
        "weir_reloads_total",
        "Reloads of config and stage files, by outcome (failed: the old version kept serving)"
    );
    describe_counter!(
        "weir_state_fallbacks_total",
        "Calls to the shared state (Redis) that failed or were skipped, so the feature fell \
         back to its state.on_unavailable policy (the cache: a miss), by feature"
    );
    describe_counter!(
        "weir_state_permits_returned_total",
        "Target admissions sent to the fleet's Redis with a call's reservation and given back \
         because no attempt used them (a cache hit, a refusal, another target)"
    );
    describe_counter!(
        "weir_state_cache_rejected_total",
        "Shared cache entries refused, by reason: corrupt (checksum, route or JSON wrong; \
         deleted) or oversize (over state.cache_max_entry_mib)"
    );
    describe_counter!(
        "weir_connections_closed_total",
        "Client connections weir closed itself, by listener and reason (a deadline, or over \
         server.max_connections)"
    );
}

/// A route's handles: its 200s, its overhead, its cache results.
struct RouteMeters {
    ok: Counter,
    ok_duration: Histogram,
    overhead: Histogram,
    cache: [Counter; CACHE_RESULTS.len()],
}

/// Every `result` of `weir_cache_lookups_total`.
const CACHE_RESULTS: [&str; 5] = ["hit", "semantic-hit", "miss", "coalesced", "bypass"];

static ROUTES: LazyLock<ByName<RouteMeters>> = LazyLock::new(DashMap::new);

fn route_meters(route: &str) -> Arc<RouteMeters> {
    cached(&ROUTES, route, || {
        let ok = [("route", route.to_owned()), ("status", "200".to_owned())];
        RouteMeters {
            ok: counter!("weir_requests_total", &ok),
            ok_duration: histogram!("weir_request_duration_seconds", &ok),
            overhead: histogram!("weir_overhead_seconds", "route" => route.to_owned()),
            cache: CACHE_RESULTS.map(|result| {
                counter!("weir_cache_lookups_total", "route" => route.to_owned(), "result" => result)
            }),
        }
    })
}

/// One answered public request: its route (`-` before one was known), status, total time
/// and, for a chat completion, the part that was weir's own.
pub fn request(route: &str, status: u16, total: Duration, overhead: Option<Duration>) {
    if !enabled() {
        return;
    }
    let meters = route_meters(route);
    if status == 200 {
        meters.ok.increment(1);
        meters.ok_duration.record(total.as_secs_f64());
    } else {
        let labels = [("route", route.to_owned()), ("status", status.to_string())];
        counter!("weir_requests_total", &labels).increment(1);
        histogram!("weir_request_duration_seconds", &labels).record(total.as_secs_f64());
    }
    if let Some(overhead) = overhead {
        meters.overhead.record(overhead.as_secs_f64());
    }
}

/// How the response cache answered a request of `route`.
pub fn cache(route: &str, result: &'static str) {
    if !enabled() {
        return;
    }
    match CACHE_RESULTS.iter().position(|r| *r == result) {
        Some(i) => route_meters(route).cache[i].increment(1),
        None => counter!(
            "weir_cache_lookups_total",
            "route" => route.to_owned(),
            "result" => result
        )
        .increment(1),
    }
}

/// A stage's service call that ended with `outcome` after `elapsed`.
pub fn service(service: &str, outcome: &'static str, elapsed: Duration) {
    if !enabled() {
        return;
    }
    counter!("weir_service_calls_total", "service" => service.to_owned(), "outcome" => outcome)
        .increment(1);
    histogram!("weir_service_call_duration_seconds", "service" => service.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Counts a response served without `stage`'s effect (its `degrade` policy).
pub fn degraded(route: &str, stage: &str) {
    counter!("weir_degraded_total", "route" => route.to_owned(), "stage" => stage.to_owned())
        .increment(1);
}

/// A request refused to protect the node or its upstreams.
pub fn shed(route: &str, reason: &'static str) {
    counter!("weir_shed_requests_total", "route" => route.to_owned(), "reason" => reason)
        .increment(1);
}

/// Counts a public request in flight until dropped.
pub struct InFlight(Option<&'static Gauge>);

impl InFlight {
    /// One more request in flight.
    pub fn enter() -> InFlight {
        let gauge = IN_FLIGHT.get();
        if let Some(gauge) = gauge {
            gauge.increment(1.0);
        }
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(gauge) = self.0 {
            gauge.decrement(1.0);
        }
    }
}

/// One phase's handles: wall time, fuel, and runs by outcome.
struct PhaseMeters {
    duration: Histogram,
    fuel: Histogram,
    runs: ByName<Counter>,
}

/// A stage's handles, both phases.
struct StageMeters {
    request: PhaseMeters,
    response: PhaseMeters,
}

static STAGES: LazyLock<ByName<StageMeters>> = LazyLock::new(DashMap::new);

/// One stage phase.
pub fn stage(
    stage: &str,
    phase: &'static str,
    outcome: &str,
    elapsed: Duration,
    fuel: Option<u64>,
) {
    if !enabled() {
        return;
    }
    let meters = cached(&STAGES, stage, || {
        let phase_meters = |phase: &'static str| {
            let labels = [("stage", stage.to_owned()), ("phase", phase.to_owned())];
            PhaseMeters {
                duration: histogram!("weir_stage_duration_seconds", &labels),
                fuel: histogram!("weir_stage_fuel", &labels),
                runs: DashMap::new(),
            }
        };
        StageMeters {
            request: phase_meters("request"),
            response: phase_meters("response"),
        }
    });
    let handles = if phase == "request" {
        &meters.request
    } else {
        &meters.response
    };
    handles.duration.record(elapsed.as_secs_f64());
    if let Some(fuel) = fuel {
        handles.fuel.record(fuel as f64);
    }
    cached(&handles.runs, outcome, || {
        counter!(
            "weir_stage_runs_total",
            "stage" => stage.to_owned(),
            "phase" => phase,
            "outcome" => outcome.to_owned()
        )
    })
    .increment(1);
}

/// Guest log lines a stage's phase call dropped (over `sandbox.log_lines_per_call`). Rare,
/// so recorded through the registry rather than a cached handle.
pub fn guest_log_dropped(stage: &str, lines: u64) {
    if !enabled() {
        return;
    }
    counter!("weir_guest_log_lines_dropped_total", "stage" => stage.to_owned()).increment(lines);
}

/// A target's handles: successful attempts and attempt time.
struct TargetMeters {
    ok: Counter,
    duration: Histogram,
}

static TARGETS: LazyLock<ByName<TargetMeters>> = LazyLock::new(DashMap::new);

/// One upstream attempt: `failure` is `None` when it succeeded, else its class (the
/// `outcome` label: `timeout`, `deadline`, `connect`, ...).
pub fn attempt(target: &str, failure: Option<&'static str>, elapsed: Duration) {
    if !enabled() {
        return;
    }
    let meters = cached(&TARGETS, target, || TargetMeters {
        ok: counter!(
            "weir_upstream_attempts_total",
            "target" => target.to_owned(),
            "outcome" => "ok"
        ),
        duration: histogram!(
            "weir_upstream_attempt_duration_seconds",
            "target" => target.to_owned()
        ),
    });
    match failure {
        None => meters.ok.increment(1),
        Some(outcome) => counter!(
            "weir_upstream_attempts_total",
            "target" => target.to_owned(),
            "outcome" => outcome
        )
        .increment(1),
    }
    meters.duration.record(elapsed.as_secs_f64());
}

/// A sandbox lane's pool, set when `/metrics` is scraped.
pub fn sandbox_pool(usage: crate::sandbox::PoolUsage) {
    gauge!("weir_sandbox_instances", "lane" => usage.lane).set(usage.instances as f64);
}

/// A breaker's state, set when `/metrics` is scraped: 0 closed, 1 half-open, 2 open.
pub fn breaker(target: &str, state: u8) {
    gauge!("weir_breaker_state", "target" => target.to_owned()).set(f64::from(state));
}

/// A key's and model's handles: tokens by kind, cost.
struct SpendMeters {
    input: Counter,
    cached_input: Counter,
    output: Counter,
    cost: Counter,
}

/// Key → model label → handles.
static SPEND: LazyLock<ByName<ByName<SpendMeters>>> = LazyLock::new(DashMap::new);

/// The `model` label of every model the config does not name.
pub const OTHER_MODEL: &str = "other";

/// The models that get a `model` label of their own: those the live config names.
static MODELS: LazyLock<ArcSwap<HashSet<Box<str>>>> = LazyLock::new(ArcSwap::default);

/// Sets the models that get a `model` label of their own to those `config` names: each
/// target's `model`, each priced model, each route's alias (the upstream model when a target
/// pins none). Called with each config that goes live.
pub fn label_models(config: &crate::config::Config) {
    MODELS.store(Arc::new(named_models(config)));
}

/// The models `config` names.
fn named_models(config: &crate::config::Config) -> HashSet<Box<str>> {
    let targets = config.targets.iter().filter_map(|t| t.model.as_deref());
    let prices = config.cost.prices.keys().map(String::as_str);
    let routes = config.routes.iter().map(|r| r.model.as_str());
    targets.chain(prices).chain(routes).map(Box::from).collect()
}

/// The `model` label of `model` with the live config's names.
fn model_label(model: &str) -> &str {
    label_among(&MODELS.load(), model)
}

/// The `model` label of `model`: itself when it is one of `named`, else [`OTHER_MODEL`].
fn label_among<'a>(named: &HashSet<Box<str>>, model: &'a str) -> &'a str {
    if named.contains(model) {
        model
    } else {
        OTHER_MODEL
    }
}

/// One ledger entry: tokens (unless the answer came from the cache) and cost, by key and
/// model label.
pub fn spend(key: &str, model: &str, usage: &crate::wit::Usage, cost: u64, hit: bool) {
    if !enabled() {
        return;
    }
    let model = model_label(model);
    let models = cached(&SPEND, key, DashMap::new);
    let meters = cached(&models, model, || {
        let tokens = |kind: &'static str| {
            counter!(
                "weir_tokens_total",
                "key" => key.to_owned(),
                "model" => model.to_owned(),
                "kind" => kind
            )
        };
        SpendMeters {
            input: tokens("input"),
            cached_input: tokens("cached_input"),
            output: tokens("output"),
            cost: counter!(
                "weir_cost_picodollars_total",
                "key" => key.to_owned(),
                "model" => model.to_owned()
            ),
        }
    });
    if !hit {
        let uncached = usage.prompt_tokens.saturating_sub(usage.cached_tokens);
        meters.input.increment(u64::from(uncached));
        meters
            .cached_input
            .increment(u64::from(usage.cached_tokens));
        meters.output.increment(u64::from(usage.completion_tokens));
    }
    meters.cost.increment(cost);
}

/// Counts one reload by its outcome.
pub fn reload(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    counter!("weir_reloads_total", "outcome" => outcome).increment(1);
}

/// Counts a client connection weir closed itself: a deadline passed (`header_timeout`,
/// `idle_timeout`, `write_timeout`) or the listener was full (`over_limit`).
pub fn connection_closed(listener: &'static str, reason: &'static str) {
    counter!("weir_connections_closed_total", "listener" => listener, "reason" => reason)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_the_config_does_not_name_share_one_label() {
        let text = r#"
[targets.pinned]
base_url = "http://127.0.0.1:9101/v1"
model = "gpt-4o-mini"
[targets.free]
base_url = "http://127.0.0.1:9102/v1"

[prices.priced]
input_per_mtok = 1
output_per_mtok = 2

[[routes]]
model = "demo"
targets = ["pinned", "free"]
"#;
        let config = crate::config::Config::parse(text, "weir.toml".as_ref(), &|_| None)
            .expect("a valid config");
        // The process-wide set is left alone: other tests install configs concurrently.
        let named = named_models(&config);
        assert_eq!(named.len(), 3, "{named:?}");
        for model in ["gpt-4o-mini", "priced", "demo"] {
            assert_eq!(label_among(&named, model), model);
        }
        for other in ["gpt-4o-mini-2024-07-18", "", "m-1", &"x".repeat(1 << 16)] {
            assert_eq!(label_among(&named, other), OTHER_MODEL);
        }
    }
}
