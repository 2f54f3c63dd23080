//! What a broken or hostile upstream can do to weir, black-box against real `weir sim`
//! processes: streams that stall or never end, client deadlines that must not trip a breaker,
//! absurd usage numbers, error statuses that quote the operator's key, error bodies that
//! dribble, and live streams counted against `max_concurrency`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::procs::{Proc, call, get, post, scratch_config, serve, serve_file, serve_logged, sim};
use crate::sim::client::{Answer, ReqBody, connect, full};
use crate::wait;

fn target(name: &str, sim: &Proc, extra: &str) -> String {
    format!(
        "[targets.{name}]\nbase_url = \"http://{}/v1\"\n{extra}\n",
        sim.addr
    )
}

fn route(model: &str, targets: &[&str], extra: &str) -> String {
    let names: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[[routes]]\nmodel = \"{model}\"\ntargets = [{}]\n{extra}\n",
        names.join(", ")
    )
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn stream(model: &str, text: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": text}]})
}

/// A prompt whose echo makes a stream of ~70 chunks (about 10 KiB of SSE).
fn long_prompt() -> String {
    "tell me about rivers and the sea ".repeat(8)
}

/// The error object of a JSON error answer.
fn error(answer: &Answer) -> Value {
    answer.json()["error"].clone()
}

/// The last event of an SSE answer, parsed.
fn last_event(answer: &Answer) -> Value {
    let events = answer.events();
    serde_json::from_str(events.last().expect("at least one event")).expect("a JSON event")
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

/// Completion requests a simulator received.
async fn received(sim: &Proc) -> u64 {
    get(sim.addr, "/sim/stats").await.json()["requests"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_stall_after_the_first_events_ends_the_stream_within_the_idle_timeout() {
    let stalling = sim(&["--stream-stall-after", "2"]);
    let weir = serve(&format!(
        "{}{}",
        target(
            "stalling",
            &stalling,
            "timeout_ms = 5000\nstream_idle_timeout_ms = 500"
        ),
        route("stall", &["stalling"], ""),
    ));
    let started = Instant::now();
    // `post` gives up after 10 s: without an idle timeout this would never end.
    let answer = post(weir.addr, "/v1/chat/completions", &stream("stall", "hello")).await;
    let elapsed = started.elapsed();
    assert_eq!(
        answer.status, 200,
        "headers were committed with the first event"
    );
    assert!(answer.body_error.is_none(), "{:?}", answer.body_error);
    let events = answer.events();
    assert_eq!(
        events.len(),
        4,
        "role, 2 content chunks, the error: {events:?}"
    );
    let last = last_event(&answer);
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    assert_eq!(last["error"]["type"], "upstream_error");
    let message = last["error"]["message"].as_str().unwrap();
    assert!(message.contains("stream_idle_timeout_ms"), "{message}");
    // Ended at exactly the idle timeout in `router::stream`'s unit tests (paused time); here
    // a bound with room for a loaded machine.
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_stream_past_max_stream_bytes_ends_with_an_error_event() {
    let up = sim(&[]);
    let weir = serve(&format!(
        "{}{}{}{}",
        target("capped", &up, "max_stream_bytes = 2048"),
        target("open", &up, ""),
        route("capped", &["capped"], ""),
        route("open", &["open"], ""),
    ));
    // The same stream passes whole under the default cap...
    let whole = post(
        weir.addr,
        "/v1/chat/completions",
        &stream("open", &long_prompt()),
    )
    .await;
    assert_eq!(whole.events().last().map(String::as_str), Some("[DONE]"));
    assert!(whole.body.len() > 4096, "{} bytes", whole.body.len());
    // ...and is cut with an explicit error past 2 KiB.
    let cut = post(
        weir.addr,
        "/v1/chat/completions",
        &stream("capped", &long_prompt()),
    )
    .await;
    assert_eq!(cut.status, 200);
    let events = cut.events();
    assert!(events.iter().all(|e| e != "[DONE]"), "{events:?}");
    let last = last_event(&cut);
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    let message = last["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_stream_bytes"), "{message}");
    assert!(cut.body.len() < 4096, "{} bytes relayed", cut.body.len());
}

#[tokio::test]
async fn client_deadlines_never_open_the_primarys_breaker() {
    let primary = sim(&["--latency-ms", "100"]);
    let fallback = sim(&[]);
    let weir = serve(&format!(
        "{}{}{}",
        target(
            "primary",
            &primary,
            "breaker = { consecutive_failures = 3, ejection_ms = 60000 }"
        ),
        target("fallback", &fallback, ""),
        route("demo", &["primary", "fallback"], ""),
    ));
    for _ in 0..10 {
        let answer = call(
            weir.addr,
            Method::POST,
            "/v1/chat/completions",
            &[("x-weir-deadline-ms", "10")],
            Some(Bytes::from(chat("demo", "hurry").to_string())),
        )
        .await;
        assert_eq!(answer.status, 504, "{:?}", answer.body);
    }
    let state = target_state(&weir, "primary").await;
    assert_eq!(state["breaker"], "closed", "{state}");
    assert_eq!(state["consecutive_failures"], 0, "{state}");
    let metrics =
        String::from_utf8(get(weir.admin.unwrap(), "/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"weir_breaker_state{target="primary"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l
            .starts_with(r#"weir_upstream_attempts_total{target="primary",outcome="deadline"} "#)
            || l.starts_with(
                r#"weir_upstream_attempts_total{outcome="deadline",target="primary"} "#
            )),
        "{metrics}"
    );
    // The next normal request goes to the primary.
    let (primary_before, fallback_before) = (received(&primary).await, received(&fallback).await);
    let answer = post(weir.addr, "/v1/chat/completions", &chat("demo", "no rush")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(received(&primary).await, primary_before + 1);
    assert_eq!(received(&fallback).await, fallback_before);
}

/// Pico-dollars per token of `sim-a` in the absurd-usage tests: the most a price may be
/// ($100,000 per million input tokens), so u32::MAX prompt tokens saturate a u64 of
/// pico-dollars at once.
const ABSURD_PRICES: &str = r#"
[prices."sim-a"]
input_per_mtok = 100000.0
output_per_mtok = 1.0
"#;

fn key(name: &str, secret: &str, limits: &str) -> String {
    let hash = blake3::Hash::from(weir::config::hash_key(secret)).to_hex();
    format!("[[keys]]\nname = \"{name}\"\nhash = \"blake3:{hash}\"\n{limits}\n")
}

async fn ask(addr: SocketAddr, secret: &str, body: &Value) -> Answer {
    let auth = format!("Bearer {secret}");
    call(
        addr,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", &auth)],
        Some(Bytes::from(body.to_string())),
    )
    .await
}

fn small_chat(text: &str) -> Value {
    json!({"model": "demo", "max_tokens": 8, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn absurd_usage_never_panics_and_spend_saturates_across_a_restart() {
    let up = sim(&["--usage-prompt-tokens", "4294967295"]);
    let dir = std::env::temp_dir().join(format!("weir-upstream-absurd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n\n{}{}{ABSURD_PRICES}{}{}",
        dir.display(),
        target("up", &up, "model = \"sim-a\""),
        route("demo", &["up"], ""),
        key("free", "sk-free", ""),
        key("capped", "sk-capped", "daily_budget_usd = 1000.0"),
    );
    let path = scratch_config(&text);
    let weir = serve_file(&path);
    let mut ok = 0u64;
    for i in 0..5 {
        let answer = ask(weir.addr, "sk-free", &small_chat(&format!("absurd {i}"))).await;
        assert!(
            answer.status == 200 || answer.status == 502,
            "{:?}",
            answer.body
        );
        if answer.status == 200 {
            assert_eq!(answer.json()["usage"]["prompt_tokens"], 4294967295u64);
            ok += 1;
        }
    }
    assert!(ok > 0, "no absurd reply was served");
    // The capped key may spend once; its spend is then beyond any budget.
    let first = ask(weir.addr, "sk-capped", &small_chat("capped once")).await;
    assert!(first.status == 200 || first.status == 502);
    if first.status == 200 {
        ok += 1;
    }
    let refused = ask(weir.addr, "sk-capped", &small_chat("capped twice")).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(error(&refused)["code"], "budget_exceeded");
    assert_eq!(get(weir.addr, "/healthz").await.status, 200, "still alive");

    let spend = get(weir.admin.unwrap(), "/admin/spend").await.json();
    let check = |spend: &Value| {
        assert_eq!(
            spend["total"]["cost_pico_usd"].as_u64(),
            Some(u64::MAX),
            "saturated, not wrapped: {spend}"
        );
        assert_eq!(
            spend["total"]["prompt_tokens"].as_u64(),
            Some(ok * u64::from(u32::MAX)),
            "{spend}"
        );
    };
    check(&spend);
    drop(weir); // /admin/spend flushed the ledger; SIGKILL now.

    let weir = serve_file(&path);
    check(&get(weir.admin.unwrap(), "/admin/spend").await.json());
    let refused = ask(weir.addr, "sk-capped", &small_chat("after the restart")).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(error(&refused)["code"], "budget_exceeded");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Usage weir cannot read (past u32) is not shown to the client: a JSON answer carries the
/// usage it was charged, counted locally, with its cost, as a stream's usage chunk does.
#[tokio::test]
async fn an_answer_whose_usage_is_unreadable_carries_the_usage_it_was_charged() {
    let up = sim(&["--usage-prompt-tokens", "18446744073709551615"]);
    let weir = serve(&format!(
        "{}{}{ABSURD_PRICES}",
        target("up", &up, "model = \"sim-a\""),
        route("demo", &["up"], ""),
    ));
    let answer = post(weir.addr, "/v1/chat/completions", &small_chat("unreadable")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let usage = answer.json()["usage"].clone();
    let prompt = usage["prompt_tokens"].as_u64().unwrap_or(u64::MAX);
    assert!(prompt > 0 && prompt < 1000, "a local count: {usage}");
    assert!(usage["completion_tokens"].as_u64().is_some(), "{usage}");
    assert!(usage["cost"].as_f64().is_some_and(|c| c > 0.0), "{usage}");
}

#[tokio::test]
async fn a_tpm_limited_key_is_admitted_again_within_the_minute_after_absurd_usage() {
    let up = sim(&["--usage-prompt-tokens", "4294967295"]);
    let weir = serve(&format!(
        "{}{}{}",
        target("up", &up, "model = \"sim-a\""),
        route("demo", &["up"], ""),
        key("metered", "sk-metered", "tpm = 1000"),
    ));
    let answer = ask(weir.addr, "sk-metered", &small_chat("absurd")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // Debited at most one minute's worth: admitted again well within the window (a debit of
    // 4294967295 tokens would refuse the key for about 8,000 years).
    let started = Instant::now();
    let mut refusals = 0;
    wait::until_within(
        Duration::from_secs(60),
        "the key to be admitted again within the minute",
        || {
            refusals += 1;
            let refusals = refusals;
            async move {
                let answer = ask(weir.addr, "sk-metered", &small_chat("again")).await;
                if answer.status == 200 {
                    return Ok(());
                }
                assert_eq!(answer.status, 429, "{:?}", answer.body);
                assert_eq!(error(&answer)["code"], "rate_limit_exceeded");
                Err(format!("{refusals} refusals"))
            }
        },
    )
    .await;
    eprintln!(
        "admitted again after {:?} ({} refusals)",
        started.elapsed(),
        refusals - 1
    );
}

/// A target whose key was revoked (401), whose account is suspended (403) or out of credit
/// (402), or whose pinned model is gone (404) cannot serve any request: the route fails over
/// to the next target whatever `retry_on` says, and the failures open the target's breaker,
/// so the dead key stops being tried first.
#[tokio::test]
async fn a_target_whose_key_or_pinned_model_is_refused_fails_over_and_trips_its_breaker() {
    for (status, extra) in [
        ("401", ""),
        ("402", ""),
        ("403", ""),
        ("404", "model = \"gone\""),
    ] {
        let dead = sim(&["--error-rate", "1.0", "--error-status", status]);
        let healthy = sim(&[]);
        let weir = serve(&format!(
            "{}{}{}",
            target(
                "dead",
                &dead,
                &format!("{extra}\nbreaker = {{ consecutive_failures = 2, ejection_ms = 60000 }}")
            ),
            target("healthy", &healthy, ""),
            route("demo", &["dead", "healthy"], "retry_on = [503]"),
        ));
        for i in 0..4 {
            let answer = post(
                weir.addr,
                "/v1/chat/completions",
                &chat("demo", &format!("hi {i}")),
            )
            .await;
            assert_eq!(answer.status, 200, "{status}: {:?}", answer.body);
        }
        assert_eq!(received(&healthy).await, 4, "{status}");
        // Two failures in a row opened the breaker: the last two went straight to the healthy one.
        assert_eq!(received(&dead).await, 2, "{status}");
        let state = target_state(&weir, "dead").await;
        assert_eq!(state["breaker"], "open", "{status}: {state}");
    }
}

#[tokio::test]
async fn an_upstream_401_quoting_the_operators_key_becomes_a_generic_502() {
    const SECRET: &str = "sk-operator-upstream-secret-7q2x";
    let up = sim(&["--error-rate", "1.0", "--error-status", "401"]);
    let log = std::env::temp_dir().join(format!("weir-upstream-401-{}.log", std::process::id()));
    let weir = serve_logged(
        &format!(
            "{}{}",
            target("up", &up, "api_key_env = \"UPSTREAM_TEST_KEY\""),
            route("demo", &["up"], ""),
        ),
        &[("UPSTREAM_TEST_KEY", SECRET)],
        &log,
    );
    // The upstream does quote (part of) the key it was sent.
    let direct = call(
        up.addr,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {SECRET}"))],
        Some(Bytes::from(chat("demo", "x").to_string())),
    )
    .await;
    assert_eq!(direct.status, 401);
    let quoted = error(&direct)["message"].as_str().unwrap().to_string();
    assert!(quoted.contains("7q2x"), "{quoted}");

    let answer = post(weir.addr, "/v1/chat/completions", &chat("demo", "hello")).await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    let body = String::from_utf8_lossy(&answer.body).to_string();
    assert_eq!(error(&answer)["type"], "upstream_error", "{body}");
    // The target's key is dead: every attempt of the route failed over, and none says why.
    assert_eq!(error(&answer)["code"], "all_targets_failed", "{body}");
    assert!(
        body.contains("the target could not serve the request"),
        "{body}"
    );
    for leak in ["7q2x", "sk-", "Incorrect API key", "401"] {
        assert!(!body.contains(leak), "{leak} reached the client: {body}");
    }
    // The detail is for the operator: in the log.
    wait::until("the upstream's message in the log", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        wait::check(
            text.contains("Incorrect API key provided"),
            format!("\n{text}"),
        )
    })
    .await;
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn one_attempt_is_bounded_by_its_timeout_even_when_the_error_body_stalls() {
    // Headers after 3.6 s, then half an error body and nothing more.
    let up = sim(&[
        "--error-rate",
        "1.0",
        "--error-status",
        "500",
        "--latency-ms",
        "3600",
        "--error-body-stall",
    ]);
    let weir = serve(&format!(
        "{}{}",
        target("up", &up, "timeout_ms = 4000"),
        route("demo", &["up"], "max_attempts = 1"),
    ));
    let started = Instant::now();
    let answer = post(weir.addr, "/v1/chat/completions", &chat("demo", "x")).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    // One 4 s deadline for headers and body together; a fresh timeout for the body would make
    // it about 7.6 s. Exactly 4 s is `providers`' unit test (paused time); here a bound with
    // room for a loaded machine on both sides.
    assert!(
        elapsed >= Duration::from_millis(3600) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    assert_eq!(received(&up).await, 1);
}

/// A stream read up to its first event, kept open.
struct OpenStream {
    /// The response body, still being sent.
    body: Incoming,
    /// What arrived so far.
    text: String,
    /// The connection.
    _sender: SendRequest<ReqBody>,
}

impl OpenStream {
    async fn open(addr: SocketAddr, body: &Value) -> OpenStream {
        let mut sender = connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/chat/completions")
            .header("host", "weir")
            .header("content-type", "application/json")
            .body(full(Bytes::from(body.to_string())))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .expect("headers within 10 s")
            .expect("a response");
        assert_eq!(response.status(), 200);
        let mut stream = OpenStream {
            body: response.into_body(),
            text: String::new(),
            _sender: sender,
        };
        while !stream.text.contains("\n\n") {
            let frame = tokio::time::timeout(Duration::from_secs(10), stream.body.frame())
                .await
                .expect("a first event within 10 s")
                .expect("the stream is not over")
                .expect("the stream is not broken");
            if let Ok(data) = frame.into_data() {
                stream.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        stream
    }

    /// Reads the rest; returns the whole text.
    async fn finish(mut self) -> String {
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(20), self.body.frame())
            .await
            .expect("the stream ends within 20 s")
        {
            if let Ok(data) = frame.expect("the stream is not broken").into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        self.text
    }
}

/// Waits until the target `name` has `n` attempts in flight.
async fn in_flight_becomes(weir: &Proc, name: &str, n: u64) {
    wait::until(&format!("{name}'s in_flight to become {n}"), || async {
        let state = target_state(weir, name).await;
        wait::check(state["in_flight"] == n, &state["in_flight"])
    })
    .await;
}

#[tokio::test]
async fn live_streams_count_against_max_concurrency_until_they_end() {
    // About 70 chunks 50 ms apart: a stream that lasts a few seconds.
    let slow = sim(&["--inter-token-ms", "50"]);
    let spare = sim(&[]);
    let weir = serve(&format!(
        "{}{}{}{}",
        target("slow", &slow, "max_concurrency = 1"),
        target("spare", &spare, ""),
        route("solo", &["slow"], "queue_timeout_ms = 300"),
        route("chain", &["slow", "spare"], ""),
    ));
    let first = OpenStream::open(weir.addr, &stream("solo", &long_prompt())).await;
    assert_eq!(target_state(&weir, "slow").await["in_flight"], 1);

    // While it streams, the slot is taken: alone, a request waits in the queue and is shed...
    let started = Instant::now();
    let shed = post(weir.addr, "/v1/chat/completions", &chat("solo", "me too")).await;
    assert_eq!(shed.status, 503, "{:?}", shed.body);
    assert_eq!(error(&shed)["code"], "overloaded");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // ...and with a fallback, it goes there.
    let moved = post(weir.addr, "/v1/chat/completions", &chat("chain", "me too")).await;
    assert_eq!(moved.status, 200);
    assert_eq!(received(&spare).await, 1);
    assert_eq!(received(&slow).await, 1);

    // Once the stream has ended, the slot is free again.
    let text = first.finish().await;
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    in_flight_becomes(&weir, "slow", 0).await;
    let after = post(weir.addr, "/v1/chat/completions", &chat("solo", "now")).await;
    assert_eq!(after.status, 200);

    // A client that goes away mid-stream gives the slot back too.
    let second = OpenStream::open(weir.addr, &stream("solo", &long_prompt())).await;
    assert_eq!(target_state(&weir, "slow").await["in_flight"], 1);
    drop(second);
    in_flight_becomes(&weir, "slow", 0).await;
    let again = post(weir.addr, "/v1/chat/completions", &chat("solo", "again")).await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn a_json_answer_to_a_stream_request_goes_out_as_events_charged_as_billed() {
    // A provider (or a proxy before it) that ignores `stream: true` answers whole.
    let up = sim(&["--json-for-streams"]);
    let weir = serve(&(target("up", &up, "") + &route("demo", &["up"], "")));
    let mut body = stream("demo", "hello there");
    body["stream_options"] = json!({"include_usage": true});
    let answer = post(weir.addr, "/v1/chat/completions", &body).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let events = answer.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/content")?.as_str())
        .collect();
    assert!(!text.is_empty(), "{events:?}");
    // Charged with the usage the upstream billed, not an estimate.
    let billed = get(up.addr, "/sim/stats").await.json()["billed"].clone();
    let usage = chunks
        .iter()
        .find_map(|c| c.get("usage").filter(|u| u.is_object()));
    let usage = usage.unwrap_or_else(|| panic!("no usage chunk: {events:?}"));
    assert_eq!(usage["prompt_tokens"], billed["prompt_tokens"], "{usage}");
    assert_eq!(
        usage["completion_tokens"], billed["completion_tokens"],
        "{usage}"
    );
    assert_eq!(get(up.addr, "/sim/stats").await.json()["requests"], 1);
}
