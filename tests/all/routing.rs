//! Chaos tests of the router against real `weir sim` processes, asserting on what the
//! upstreams actually received (`/sim/stats`): all targets down, breakers, `Retry-After` and
//! RPM limits, the retry budget, load shedding, and stream failover. The storm of errors and
//! stalls is in `stress::routing`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::procs::{Proc, get, post, serve, sim};
use crate::wait;

pub(crate) fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "route me"}]})
}

/// Completion and embedding requests a simulator received.
pub(crate) async fn received(sim: &Proc) -> u64 {
    get(sim.addr, "/sim/stats").await.json()["requests"]
        .as_u64()
        .unwrap()
}

pub(crate) fn target(name: &str, sim: &Proc, extra: &str) -> String {
    format!(
        "[targets.{name}]\nbase_url = \"http://{}/v1\"\n{extra}\n",
        sim.addr
    )
}

/// Runs `n` requests with `concurrency` in flight; returns (status, latency) of each.
pub(crate) async fn burst(
    weir: &Proc,
    model: &str,
    n: usize,
    concurrency: usize,
) -> Vec<(u16, Duration)> {
    let addr = weir.addr;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let body = chat(model);
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let answer = post(addr, "/v1/chat/completions", &body).await;
            drop(permit);
            (answer.status.as_u16(), started.elapsed())
        }));
    }
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

/// Two simulators that accept and never answer (`a`, `b`, each with `timeout_ms`) behind a
/// route `model` with the `policy` keys.
fn two_hanging_targets(model: &str, timeout_ms: u64, policy: &str) -> (Proc, Proc, Proc) {
    let a = sim(&["--hang-rate", "1.0"]);
    let b = sim(&["--hang-rate", "1.0"]);
    let timeout = format!("timeout_ms = {timeout_ms}");
    let weir = serve(&format!(
        "{}{}\n[[routes]]\nmodel = \"{model}\"\ntargets = [\"a\", \"b\"]\n{policy}\n",
        target("a", &a, &timeout),
        target("b", &b, &timeout),
    ));
    (a, b, weir)
}

/// One chat request to `model`: the answer, how long it took and its error message (empty
/// for a success).
async fn timed_chat(weir: &Proc, model: &str) -> (crate::sim::client::Answer, Duration, String) {
    let started = Instant::now();
    let answer = post(weir.addr, "/v1/chat/completions", &chat(model)).await;
    let elapsed = started.elapsed();
    let message = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    (answer, elapsed, message)
}

pub(crate) fn p99(results: &[(u16, Duration)]) -> Duration {
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.1).collect();
    latencies.sort_unstable();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

#[tokio::test]
async fn all_targets_down_is_a_502_listing_every_attempt_within_the_timeouts() {
    let (_a, _b, weir) = two_hanging_targets(
        "down",
        200,
        "max_attempts = 2\nbackoff_base_ms = 10\nbackoff_max_ms = 10",
    );
    let (answer, elapsed, message) = timed_chat(&weir, "down").await;
    assert_eq!(answer.status, 502);
    assert!(
        message.contains("a (timed out") && message.contains("b (timed out"),
        "{message}"
    );
    // Exactly two timeouts and no pause between them is the router's unit tests' concern
    // (paused time); here, a bound that holds on a loaded machine and still tells the 200 ms
    // timeouts from the 60 s default.
    assert!(
        elapsed < Duration::from_secs(5),
        "took {elapsed:?}, more than the attempt timeouts allow"
    );
}

/// `/admin/targets` entry of `name`.
async fn target_state(weir: &Proc, name: &str) -> Value {
    let targets = get(weir.admin.unwrap(), "/admin/targets").await.json();
    targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no target {name} in {targets}"))
}

/// Exact ejection times and probe counts are `router::breaker`'s unit tests (paused time);
/// here the same through the binary, with an ejection long enough for a loaded machine.
#[tokio::test]
async fn an_open_breaker_sends_nothing_until_its_single_probe() {
    let ejection = Duration::from_millis(3000);
    let primary = sim(&["--error-rate", "1.0"]);
    let fallback = sim(&[]);
    let weir = serve(&format!(
        "{}{}
[[routes]]
model = \"b\"
targets = [\"primary\", \"fallback\"]
retry_budget_percent = 1000
",
        target(
            "primary",
            &primary,
            &format!(
                "breaker = {{ consecutive_failures = 3, ejection_ms = {} }}",
                ejection.as_millis()
            )
        ),
        target("fallback", &fallback, ""),
    ));
    for _ in 0..3 {
        let answer = post(weir.addr, "/v1/chat/completions", &chat("b")).await;
        assert_eq!(answer.status, 200);
    }
    let opened = Instant::now();
    assert_eq!(received(&primary).await, 3);
    assert_eq!(target_state(&weir, "primary").await["breaker"], "open");
    for _ in 0..20 {
        assert_eq!(
            post(weir.addr, "/v1/chat/completions", &chat("b"))
                .await
                .status,
            200
        );
    }
    assert!(
        opened.elapsed() < ejection,
        "the burst outlasted the ejection"
    );
    assert_eq!(
        received(&primary).await,
        3,
        "nothing reaches an open breaker's target"
    );
    // Wait for the ejection to pass, as weir sees it.
    wait::until("the ejection to pass", || async {
        let state = target_state(&weir, "primary").await;
        let over = state["breaker"] != "open" || state["open_for_ms"] == 0;
        wait::check(over, state)
    })
    .await;
    assert_eq!(
        post(weir.addr, "/v1/chat/completions", &chat("b"))
            .await
            .status,
        200
    );
    assert_eq!(
        received(&primary).await,
        4,
        "exactly one probe after the ejection"
    );
    assert_eq!(
        post(weir.addr, "/v1/chat/completions", &chat("b"))
            .await
            .status,
        200
    );
    assert_eq!(
        received(&primary).await,
        4,
        "the failed probe reopened the breaker"
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_an_rpm_limit_keeps_the_target_under_it() {
    // Retry-After at the 10 s cap: the ten requests below fit in it on a loaded machine.
    let limited = sim(&["--rate-limit-rate", "1.0", "--retry-after-s", "10"]);
    let fallback = sim(&[]);
    let capped = sim(&[]);
    let weir = serve(&format!(
        "{}{}{}
[[routes]]
model = \"ra\"
targets = [\"limited\", \"fallback\"]
[[routes]]
model = \"rpm\"
targets = [\"capped\", \"fallback\"]
",
        target("limited", &limited, ""),
        target("fallback", &fallback, ""),
        target("capped", &capped, "rpm = 10"),
    ));
    for _ in 0..10 {
        assert_eq!(
            post(weir.addr, "/v1/chat/completions", &chat("ra"))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        received(&limited).await,
        1,
        "after a 429 with Retry-After, the target is left alone until it passes"
    );
    // A burst of 30 above a 10-per-minute limit: the capped target gets at most its bucket.
    let results = burst(&weir, "rpm", 30, 10).await;
    assert!(results.iter().all(|r| r.0 == 200));
    let got = received(&capped).await;
    assert!((1..=10).contains(&got), "capped target received {got}");
}

#[tokio::test]
async fn under_total_failure_retries_stay_within_the_budget() {
    let a = sim(&["--error-rate", "1.0"]);
    let b = sim(&["--error-rate", "1.0"]);
    let weir = serve(&format!(
        "{}{}
[[routes]]
model = \"dead\"
targets = [\"a\", \"b\"]
max_attempts = 3
retry_budget_percent = 20
backoff_base_ms = 1
backoff_max_ms = 1
",
        target(
            "a",
            &a,
            "breaker = { consecutive_failures = 1000, failure_rate_percent = 100, window = 1000, min_requests = 1000 }"
        ),
        target(
            "b",
            &b,
            "breaker = { consecutive_failures = 1000, failure_rate_percent = 100, window = 1000, min_requests = 1000 }"
        ),
    ));
    let started = Instant::now();
    let results = burst(&weir, "dead", 100, 4).await;
    // The budget's window is 10 s; on a machine so loaded that the burst outlasts it, each
    // further 10 s brings another floor's worth of retries.
    let windows = (started.elapsed().as_secs_f64() / 10.0).ceil().max(1.0) as u64;
    assert!(results.iter().all(|r| r.0 == 502));
    let attempts = received(&a).await + received(&b).await;
    // 100 first tries + 20% of them + the floor of 1 retry/s over each 10 s window.
    assert!(
        attempts <= 100 + 20 + 10 * windows,
        "{attempts} upstream attempts for 100 requests; without a budget it would be 300"
    );
    assert!(attempts >= 100);
}

#[tokio::test]
async fn overload_is_shed_at_once_and_in_flight_stays_under_the_limit() {
    // Shedding with no wait at all is `router`'s unit tests' concern (paused time); here an
    // upstream slow enough that "did not wait for it" holds on a loaded machine.
    let slow = sim(&["--latency-ms", "2000"]);
    let weir = serve(&format!(
        "{}
[[routes]]
model = \"busy\"
targets = [\"slow\"]
queue_size = 0
",
        target("slow", &slow, "max_concurrency = 4"),
    ));
    let admin = weir.admin.unwrap();
    let watcher = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..20 {
            let targets = get(admin, "/admin/targets").await.json();
            peak = peak.max(targets["targets"][0]["in_flight"].as_u64().unwrap());
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        peak
    });
    let results = burst(&weir, "busy", 20, 20).await;
    let peak = watcher.await.unwrap();
    assert!(peak <= 4, "in flight peaked at {peak}");
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let shed: Vec<Duration> = results.iter().filter(|r| r.0 == 503).map(|r| r.1).collect();
    assert_eq!(ok + shed.len(), 20);
    assert!(ok >= 4, "{ok} served");
    assert!(!shed.is_empty());
    let mut shed_sorted = shed.clone();
    shed_sorted.sort_unstable();
    let median = shed_sorted[shed_sorted.len() / 2];
    eprintln!(
        "shed {} of 20: median {median:?}, max {:?}; served {ok}; in-flight peak {peak}",
        shed.len(),
        shed_sorted[shed_sorted.len() - 1]
    );
    assert!(
        median < Duration::from_millis(1000),
        "shedding took {median:?} (median); it must not wait for the 2 s upstream"
    );
    assert_eq!(received(&slow).await, ok as u64);
    // Each refusal is counted as shed, by route and reason.
    let metrics = String::from_utf8(get(admin, "/metrics").await.body.to_vec()).unwrap();
    let counted = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"weir_shed_requests_total{route="busy",reason="overloaded"} "#)
        })
        .and_then(|v| v.parse::<usize>().ok());
    assert_eq!(counted, Some(shed.len()), "{metrics}");
}

fn stream_body(model: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "stream me please"}]})
}

#[tokio::test]
async fn a_stream_fails_over_before_its_first_byte_and_errors_explicitly_after() {
    let broken = sim(&["--reset-rate", "1.0"]);
    let healthy = sim(&[]);
    let cut = sim(&["--stream-cut-after", "2"]);
    let weir = serve(&format!(
        "{}{}{}
[[routes]]
model = \"failover\"
targets = [\"broken\", \"healthy\"]
[[routes]]
model = \"cut\"
targets = [\"cut\"]
",
        target("broken", &broken, ""),
        target("healthy", &healthy, ""),
        target("cut", &cut, ""),
    ));
    let answer = post(weir.addr, "/v1/chat/completions", &stream_body("failover")).await;
    assert_eq!(answer.status, 200);
    let events = answer.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.iter().all(|e| !e.contains("\"error\"")));
    assert_eq!(received(&broken).await, 1);
    assert_eq!(received(&healthy).await, 1);

    let answer = post(weir.addr, "/v1/chat/completions", &stream_body("cut")).await;
    assert_eq!(answer.status, 200, "headers were already committed");
    let events = answer.events();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    assert!(events.iter().all(|e| e != "[DONE]"));
}

#[tokio::test]
async fn the_total_deadline_is_never_exceeded() {
    let (a, b, weir) = two_hanging_targets(
        "slow",
        400,
        "max_attempts = 5\ndeadline_ms = 500\nretry_budget_percent = 1000",
    );
    let (answer, elapsed, message) = timed_chat(&weir, "slow").await;
    assert_eq!(answer.status, 504, "the deadline ran out");
    assert!(message.contains("deadline reached"), "{message}");
    // The second attempt's timeout is cut to what is left of the 500 ms: two attempts, not
    // five. That it ends at exactly 500 ms is `router`'s unit test (paused time); here, a
    // bound that holds on a loaded machine, well under the 2 s five attempts would take.
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(1500),
        "deadline overrun: {elapsed:?}"
    );
    assert_eq!(received(&a).await + received(&b).await, 2);
}

#[tokio::test]
async fn weighted_and_least_latency_strategies_pick_the_first_target() {
    let heavy = sim(&[]);
    let light = sim(&[]);
    let fast = sim(&[]);
    let slow = sim(&["--latency-ms", "40"]);
    let weir = serve(&format!(
        "{}{}{}{}
[[routes]]
model = \"weighted\"
targets = [\"heavy\", \"light\"]
strategy = \"weighted\"
weights = [3, 1]
[[routes]]
model = \"quick\"
targets = [\"slow\", \"fast\"]
strategy = \"least-latency\"
",
        target("heavy", &heavy, ""),
        target("light", &light, ""),
        target("fast", &fast, ""),
        target("slow", &slow, ""),
    ));
    let results = burst(&weir, "weighted", 400, 8).await;
    assert!(results.iter().all(|r| r.0 == 200));
    let (h, l) = (received(&heavy).await, received(&light).await);
    assert_eq!(h + l, 400);
    // 3:1 of 400 is 300:100; allow generous sampling noise.
    assert!((240..=360).contains(&h), "heavy {h}, light {l}");

    let results = burst(&weir, "quick", 200, 4).await;
    assert!(results.iter().all(|r| r.0 == 200));
    let (f, s) = (received(&fast).await, received(&slow).await);
    assert_eq!(f + s, 200);
    assert!(
        f >= 150,
        "the faster target should win most draws: fast {f}, slow {s}"
    );
}

#[tokio::test]
async fn a_client_deadline_header_shortens_never_lengthens() {
    let stuck = sim(&["--hang-rate", "1.0"]);
    let weir = serve(&format!(
        "{}
[[routes]]
model = \"stuck\"
targets = [\"stuck\"]
deadline_ms = 20000
",
        target("stuck", &stuck, "timeout_ms = 15000"),
    ));
    let body = bytes::Bytes::from(chat("stuck").to_string());
    let started = Instant::now();
    let answer = crate::procs::call(
        weir.addr,
        http::Method::POST,
        "/v1/chat/completions",
        &[("x-weir-deadline-ms", "200")],
        Some(body.clone()),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 504, "{:?}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "deadline_exceeded");
    // Cut at the client's 200 ms (exactly, in `router`'s unit tests), not the target's 15 s.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let answer = crate::procs::call(
        weir.addr,
        http::Method::POST,
        "/v1/chat/completions",
        &[("x-weir-deadline-ms", "soon")],
        Some(body),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"]["code"], "invalid_deadline");
}

#[tokio::test]
async fn a_slow_first_token_fails_over_within_the_ttft_timeout() {
    let sluggish = sim(&["--ttft-ms", "15000"]);
    let healthy = sim(&[]);
    let weir = serve(&format!(
        "{}{}
[[routes]]
model = \"ttft\"
targets = [\"sluggish\", \"healthy\"]
",
        target("sluggish", &sluggish, "ttft_timeout_ms = 150"),
        target("healthy", &healthy, ""),
    ));
    let started = Instant::now();
    let answer = post(weir.addr, "/v1/chat/completions", &stream_body("ttft")).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.events().last().map(String::as_str), Some("[DONE]"));
    assert_eq!(received(&healthy).await, 1);
    // Cut at the 150 ms TTFT timeout (exactly, in `router`'s unit tests), not the 15 s the
    // first token would take.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn a_hung_upstream_costs_a_json_request_its_ttft_timeout_then_the_fallback_answers() {
    // The primary never answers at all; its timeout is 30 s, its TTFT timeout 300 ms, so a
    // JSON request goes to it as a stream (`stream_json`) and is given up at 300 ms.
    let hung = sim(&["--hang-rate", "1.0"]);
    let healthy = sim(&[]);
    let weir = serve(&format!(
        "{}{}
[[routes]]
model = \"hung\"
targets = [\"hung\", \"healthy\"]
",
        target("hung", &hung, "timeout_ms = 30000\nttft_timeout_ms = 300"),
        target(
            "healthy",
            &healthy,
            "timeout_ms = 30000\nttft_timeout_ms = 300"
        ),
    ));
    let started = Instant::now();
    let answer = post(weir.addr, "/v1/chat/completions", &chat("hung")).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let json = answer.json();
    assert_eq!(json["object"], "chat.completion");
    assert!(
        !json["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert!(
        json["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{json}"
    );
    assert_eq!(received(&hung).await, 1);
    // The healthy target was asked for a stream; the client got JSON.
    let seen = crate::procs::sim_requests(&healthy, 1).await;
    assert_eq!(seen[0]["body"]["stream"], true, "{seen:?}");
    assert_eq!(seen[0]["body"]["stream_options"]["include_usage"], true);
    // Cut at the 300 ms TTFT timeout (exactly, in `router`'s unit tests), not the 30 s one.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn a_hedged_route_answers_from_the_next_target_when_the_first_is_late() {
    // The primary never answers and has no TTFT timeout of its own (30 s for everything);
    // the route hedges after 100 ms.
    let hung = sim(&["--hang-rate", "1.0"]);
    let healthy = sim(&[]);
    let weir = serve(&format!(
        "{}{}
[[routes]]
model = \"hedged\"
targets = [\"hung\", \"healthy\"]
hedge = {{ after_ms = 100, max_percent = 100 }}
",
        target("hung", &hung, "timeout_ms = 30000"),
        target("healthy", &healthy, "timeout_ms = 30000"),
    ));
    let started = Instant::now();
    let answer = post(weir.addr, "/v1/chat/completions", &chat("hedged")).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["object"], "chat.completion");
    assert_eq!((received(&hung).await, received(&healthy).await), (1, 1));
    // The hedge went at 100 ms (exactly, in `router::hedge`'s unit tests), not at 30 s.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // The record shows the cancelled attempt beside the one that answered.
    let admin = weir.admin.unwrap();
    let list = get(admin, "/admin/requests?limit=1").await.json();
    let id = list["requests"][0]["id"].as_str().unwrap().to_string();
    let detail = get(admin, &format!("/admin/requests/{id}")).await.json();
    let outcomes: Vec<(String, String)> = detail["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("attempts in {detail}"))
        .iter()
        .map(|a| (a["target"].to_string(), a["outcome"].to_string()))
        .collect();
    assert_eq!(outcomes.len(), 2, "{detail}");
    assert!(outcomes[0].1.contains("cancelled"), "{detail}");
    assert!(outcomes[1].1.contains("ok"), "{detail}");
}

#[tokio::test]
async fn retry_on_decides_which_statuses_fail_over() {
    let five_hundred = sim(&["--error-rate", "1.0", "--error-status", "500"]);
    let unavailable = sim(&["--error-rate", "1.0", "--error-status", "503"]);
    let fallback = sim(&[]);
    let weir = serve(&format!(
        "{}{}{}
[[routes]]
model = \"strict\"
targets = [\"five_hundred\", \"fallback\"]
retry_on = [503]
[[routes]]
model = \"lenient\"
targets = [\"unavailable\", \"fallback\"]
retry_on = [503]
",
        target("five_hundred", &five_hundred, ""),
        target("unavailable", &unavailable, ""),
        target("fallback", &fallback, ""),
    ));
    let answer = post(weir.addr, "/v1/chat/completions", &chat("strict")).await;
    assert_eq!(
        answer.status, 500,
        "a status outside retry_on goes back to the client"
    );
    assert_eq!(answer.json()["error"]["code"], "upstream_refused");
    assert_eq!(received(&fallback).await, 0);
    let answer = post(weir.addr, "/v1/chat/completions", &chat("lenient")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(received(&fallback).await, 1);
}

#[tokio::test]
async fn a_tpm_limit_sends_the_overflow_elsewhere() {
    let capped = sim(&[]);
    let fallback = sim(&[]);
    let weir = serve(&format!(
        "{}{}
[[routes]]
model = \"tpm\"
targets = [\"capped\", \"fallback\"]
",
        target("capped", &capped, "tpm = 1000"),
        target("fallback", &fallback, ""),
    ));
    let mut body = chat("tpm");
    body["max_tokens"] = json!(400);
    for _ in 0..10 {
        assert_eq!(
            post(weir.addr, "/v1/chat/completions", &body).await.status,
            200
        );
    }
    // Each request reserves ~410 tokens of the 1,000 per minute.
    assert_eq!(received(&capped).await, 2);
    assert_eq!(received(&fallback).await, 8);
}
