//! Cost accounting through the real binary: budgets that hold under 1,000 concurrent
//! requests, exact totals with a flaky primary and a fallback, free cache hits, a ledger that
//! survives `kill -9`, per-key RPM/TPM limits with `Retry-After`, auth, streams, and the
//! per-request limit on LLM calls made by stages.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::procs::{Proc, call, get, serve, serve_file, sim};
use crate::sim::client::Answer;

/// Pico-dollars per token of `sim-a`: $1 per million in, $2 out.
pub(crate) const A_IN: u64 = 1_000_000;
pub(crate) const A_OUT: u64 = 2_000_000;
/// Of `sim-b`: $0.50 in, $1 out.
const B_IN: u64 = 500_000;
const B_OUT: u64 = 1_000_000;

pub(crate) const PRICES: &str = r#"
[prices."sim-a"]
input_per_mtok = 1.0
output_per_mtok = 2.0

[prices."sim-b"]
input_per_mtok = 0.5
output_per_mtok = 1.0
"#;

pub(crate) fn key(name: &str, secret: &str, limits: &str) -> String {
    let hash = blake3::Hash::from(weir::config::hash_key(secret)).to_hex();
    format!("[[keys]]\nname = \"{name}\"\nhash = \"blake3:{hash}\"\n{limits}\n")
}

/// One route `demo` over `targets` (`(name, sim, upstream model)`), the prices, and `extra`.
pub(crate) fn config(targets: &[(&str, &Proc, &str)], route_extra: &str, extra: &str) -> String {
    let mut out = String::new();
    for (name, proc, model) in targets {
        out.push_str(&format!(
            "[targets.{name}]\nbase_url = \"http://{}/v1\"\nmodel = \"{model}\"\ntimeout_ms = 5000\n\n",
            proc.addr
        ));
    }
    let names: Vec<String> = targets.iter().map(|t| format!("\"{}\"", t.0)).collect();
    out.push_str(&format!(
        "[[routes]]\nmodel = \"demo\"\ntargets = [{}]\n{route_extra}\n{PRICES}\n{extra}\n",
        names.join(", ")
    ));
    out
}

pub(crate) async fn ask(addr: SocketAddr, secret: Option<&str>, body: &Value) -> Answer {
    let auth = secret.map(|s| format!("Bearer {s}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    call(
        addr,
        Method::POST,
        "/v1/chat/completions",
        &headers,
        Some(Bytes::from(body.to_string())),
    )
    .await
}

pub(crate) fn chat(text: &str, max_tokens: u32) -> Value {
    json!({"model": "demo", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": text}]})
}

/// `x-weir-cost-usd` in pico-dollars.
pub(crate) fn cost_header(answer: &Answer) -> u64 {
    let usd: f64 = answer.headers["x-weir-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (usd * 1e12).round() as u64
}

pub(crate) async fn spend(weir: &Proc, query: &str) -> Value {
    let answer = get(weir.admin.unwrap(), &format!("/admin/spend{query}")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.json()
}

pub(crate) fn total_pico(spend: &Value) -> u64 {
    spend["total"]["cost_pico_usd"].as_u64().unwrap()
}

pub(crate) fn priced(model: &str, usage: &Value) -> u64 {
    let (input, output) = match model {
        "sim-a" => (A_IN, A_OUT),
        "sim-b" => (B_IN, B_OUT),
        other => panic!("unpriced model {other}"),
    };
    usage["prompt_tokens"].as_u64().unwrap() * input
        + usage["completion_tokens"].as_u64().unwrap() * output
}

#[tokio::test]
async fn a_small_budget_holds_under_1000_concurrent_requests() {
    let up = sim(&["--latency-ms", "50"]);
    let budget_usd = 0.002;
    let weir = serve(&config(
        &[("up", &up, "sim-a")],
        "queue_size = 2000\nqueue_timeout_ms = 10000",
        &key(
            "small",
            "sk-small",
            &format!("daily_budget_usd = {budget_usd}"),
        ),
    ));
    let addr = weir.addr;
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            tokio::spawn(async move {
                ask(addr, Some("sk-small"), &chat(&format!("hello {i}"), 16)).await
            })
        })
        .collect();
    let (mut ok, mut refused, mut charged) = (0u64, 0u64, 0u64);
    for task in tasks {
        let answer = task.await.unwrap();
        match answer.status.as_u16() {
            200 => {
                ok += 1;
                charged += cost_header(&answer);
                let body = answer.json();
                assert!(body["usage"]["cost"].as_f64().unwrap() > 0.0);
            }
            429 => {
                refused += 1;
                let body = answer.json();
                assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains("resets at"), "{message}");
                let retry_after: u64 = answer.headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=86_400).contains(&retry_after));
            }
            other => panic!("unexpected status {other}: {:?}", answer.body),
        }
    }
    assert_eq!(ok + refused, 1000);
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    let spend = spend(&weir, "").await;
    let total = total_pico(&spend);
    assert_eq!(total, charged, "ledger vs headers: {spend}");
    // The largest reservation: the longest prompt counted locally plus max_tokens, at the
    // output price for every token (an upper bound).
    weir::cost::tokens::warm_up(["sim-a"]);
    let reservation = (weir::cost::tokens::count_prompt(
        "sim-a",
        &crate::support::request(vec![crate::support::message("user", "hello 999")]),
    ) as u64
        + 16)
        * A_OUT;
    let budget = (budget_usd * 1e12) as u64;
    assert!(
        total <= budget + reservation,
        "spent {total} over budget {budget} + one reservation {reservation}"
    );
    // Nothing stays reserved once every request is done.
    assert_eq!(spend["keys"][0]["reserved_usd"], 0.0, "{spend}");
}

#[tokio::test]
async fn cost_totals_are_exact_with_a_flaky_primary_and_a_fallback() {
    // The primary fails half the time and bills 7 prompt tokens for each failure.
    let primary = sim(&["--error-rate", "0.5", "--error-billed-tokens", "7"]);
    let secondary = sim(&[]);
    let weir = serve(&config(
        &[
            ("primary", &primary, "sim-a"),
            ("secondary", &secondary, "sim-b"),
        ],
        "max_attempts = 2\nretry_budget_percent = 100",
        "",
    ));
    let addr = weir.addr;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move { ask(addr, None, &chat(&format!("question {i}"), 32)).await })
        })
        .collect();
    let (mut expected, mut headers) = (0u64, 0u64);
    let mut models = std::collections::BTreeSet::new();
    for task in tasks {
        let answer = task.await.unwrap();
        headers += cost_header(&answer);
        if answer.status == 200 {
            let body = answer.json();
            let model = body["model"].as_str().unwrap().to_string();
            expected += priced(&model, &body["usage"]);
            models.insert(model);
        }
    }
    let errors = get(primary.addr, "/sim/stats").await.json()["faults"]["errors"]
        .as_u64()
        .unwrap();
    assert!(errors > 0, "the primary never failed");
    expected += errors * 7 * A_IN;
    assert_eq!(models.len(), 2, "both targets answered: {models:?}");
    let spend = spend(&weir, "?group_by=model").await;
    assert_eq!(total_pico(&spend), expected, "{spend}");
    assert_eq!(headers, expected);
    // Grouped by model: the failed attempts' billed tokens are on the primary's model.
    let rows = spend["rows"].as_array().unwrap();
    let row = |m: &str| rows.iter().find(|r| r["model"] == m).unwrap().clone();
    assert!(row("sim-a")["prompt_tokens"].as_u64().unwrap() >= errors * 7);
    assert!(row("sim-b")["calls"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn failed_attempts_are_free_when_configured_so() {
    let primary = sim(&["--error-rate", "1.0", "--error-billed-tokens", "7"]);
    let secondary = sim(&[]);
    let weir = serve(&config(
        &[
            ("primary", &primary, "sim-a"),
            ("secondary", &secondary, "sim-b"),
        ],
        "max_attempts = 2",
        "[cost]\ncount_failed_attempts = false",
    ));
    let answer = ask(weir.addr, None, &chat("only the fallback bills", 32)).await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["model"], "sim-b");
    let expected = priced("sim-b", &body["usage"]);
    assert_eq!(cost_header(&answer), expected);
    assert_eq!(total_pico(&spend(&weir, "").await), expected);
}

/// Third probe, B6: `to` before `from` answered 200 with no rows, and a `group_by` repeated
/// 1000 times was echoed back whole.
#[tokio::test]
async fn a_spend_query_backwards_in_time_is_refused_and_dimensions_count_once() {
    let up = sim(&[]);
    let weir = serve(&config(&[("up", &up, "sim-a")], "", ""));
    let admin = weir.admin.unwrap();
    let backwards = get(admin, "/admin/spend?from=2026-11-10&to=2026-11-01").await;
    assert_eq!(backwards.status, 400, "{:?}", backwards.body);
    assert_eq!(backwards.json()["error"]["code"], "invalid_date_range");
    let repeated = get(admin, "/admin/spend?group_by=key,key,model,key").await;
    assert_eq!(repeated.status, 200, "{:?}", repeated.body);
    assert_eq!(
        repeated.json()["group_by"],
        serde_json::json!(["key", "model"])
    );
}

#[tokio::test]
async fn cache_hits_cost_nothing_and_are_counted_as_hits() {
    let up = sim(&[]);
    let weir = serve(&config(
        &[("up", &up, "sim-a")],
        "cache = { ttl_ms = 60000 }",
        "",
    ));
    let mut body = chat("the same question", 32);
    body["temperature"] = json!(0);
    let miss = ask(weir.addr, None, &body).await;
    assert_eq!(miss.headers["x-weir-cache"], "miss");
    let cost = cost_header(&miss);
    assert_eq!(cost, priced("sim-a", &miss.json()["usage"]));
    let hit = ask(weir.addr, None, &body).await;
    assert_eq!(hit.headers["x-weir-cache"], "hit");
    assert_eq!(hit.headers["x-weir-cost-usd"], "0");
    assert_eq!(hit.json()["usage"]["cost"], 0.0);
    let spend = spend(&weir, "").await;
    assert_eq!(total_pico(&spend), cost);
    assert_eq!(spend["total"]["calls"], 1);
    assert_eq!(spend["total"]["cache_hits"], 1);
}

pub(crate) fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-cost-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn spend_survives_a_kill_and_the_budget_carries_on() {
    let up = sim(&[]);
    let dir = data_dir("restart");
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n\n{}",
        dir.display(),
        config(
            &[("up", &up, "sim-a")],
            "",
            &key("team", "sk-team", "daily_budget_usd = 1.0"),
        )
    );
    let path = crate::procs::scratch_config(&text);
    let weir = serve_file(&path);
    let mut charged = 0;
    for i in 0..5 {
        let answer = ask(
            weir.addr,
            Some("sk-team"),
            &chat(&format!("remember {i}"), 16),
        )
        .await;
        assert_eq!(answer.status, 200);
        charged += cost_header(&answer);
    }
    let before = spend(&weir, "").await;
    assert_eq!(total_pico(&before), charged);
    drop(weir); // SIGKILL: no graceful shutdown
    let weir = serve_file(&path);
    let after = spend(&weir, "").await;
    assert_eq!(after["rows"], before["rows"]);
    assert_eq!(total_pico(&after), charged);
    // The key's window starts from what the ledger holds, not from zero.
    let spent_today = after["keys"][0]["spent_today_usd"].as_f64().unwrap();
    assert!((spent_today * 1e12 - charged as f64).abs() < 1.0, "{after}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn rpm_and_tpm_limits_answer_429_with_retry_after() {
    let up = sim(&[]);
    let keys = key("slow", "sk-slow", "rpm = 2") + &key("thrifty", "sk-thrifty", "tpm = 50");
    let weir = serve(&config(&[("up", &up, "sim-a")], "", &keys));
    for _ in 0..2 {
        assert_eq!(
            ask(weir.addr, Some("sk-slow"), &chat("hi", 8)).await.status,
            200
        );
    }
    let limited = ask(weir.addr, Some("sk-slow"), &chat("hi", 8)).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    // A prompt of ~100 tokens passes on a full bucket, then the key owes the minute.
    let long = "word ".repeat(100);
    assert_eq!(
        ask(weir.addr, Some("sk-thrifty"), &chat(&long, 8))
            .await
            .status,
        200
    );
    let limited = ask(weir.addr, Some("sk-thrifty"), &chat("short", 8)).await;
    assert_eq!(limited.status, 429);
    let body = limited.json();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("tpm"));
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn keys_are_required_once_configured() {
    let up = sim(&[]);
    let weir = serve(&config(&[("up", &up, "sim-a")], "", &key("a", "sk-a", "")));
    let missing = ask(weir.addr, None, &chat("hi", 8)).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"]["code"], "invalid_api_key");
    let wrong = ask(weir.addr, Some("sk-b"), &chat("hi", 8)).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"]["type"], "authentication_error");
    assert_eq!(
        ask(weir.addr, Some("sk-a"), &chat("hi", 8)).await.status,
        200
    );
    let spend = spend(&weir, "?group_by=key").await;
    assert_eq!(spend["rows"][0]["key"], "a");
    assert_eq!(spend["rows"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_streams_cost_is_in_its_usage_chunk_and_the_ledger() {
    let up = sim(&[]);
    let weir = serve(&config(&[("up", &up, "sim-a")], "", ""));
    let mut body = chat("stream me", 16);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let answer = ask(weir.addr, None, &body).await;
    assert_eq!(answer.status, 200);
    let events = answer.events();
    let usage_chunk: Value = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .find(|c| c["usage"].is_object())
        .expect("a usage chunk");
    let expected = priced("sim-a", &usage_chunk["usage"]);
    let cost = usage_chunk["usage"]["cost"].as_f64().unwrap();
    assert_eq!((cost * 1e12).round() as u64, expected);
    // Without include_usage the client sees no usage, and the ledger still has the cost.
    body["stream_options"] = json!({"include_usage": false});
    let answer = ask(weir.addr, None, &body).await;
    assert!(answer.events().iter().all(|e| !e.contains("\"usage\"")));
    assert_eq!(total_pico(&spend(&weir, "").await), expected * 2);
}

/// A route stage running the chaos test program in `mode`, with a generous deadline: a loop
/// of a few hundred LLM calls must be stopped by the budget or the call limit, never by the
/// default 200 ms deadline on a loaded machine. The stage's own limit on calls is raised out
/// of the way (`calls.rs` tests it).
fn chaos(mode: &str) -> String {
    format!(
        "[[routes.stages]]\nname = \"chaos\"\npath = \"{}\"\ndeadline_ms = 60000\n\
         max_llm_calls = 10000\nconfig = {{ mode = \"{mode}\" }}\n",
        weir_test_artifacts::CHAOS
    )
}

#[tokio::test]
async fn a_stage_stuck_in_a_loop_of_calls_is_stopped_and_charged() {
    let up = sim(&[]);
    let keys = key("capped", "sk-capped", "max_llm_calls_per_request = 5")
        + &key("free", "sk-free", "daily_budget_usd = 0.01");
    // The route's limit raised too: here the key's limit, or its budget, stops the loop.
    let weir = serve(&config(
        &[("up", &up, "sim-a")],
        &format!(
            "max_llm_calls_per_request = 10000\n{}",
            chaos("complete-loop")
        ),
        &keys,
    ));
    let answer = ask(weir.addr, Some("sk-capped"), &chat("hi", 16)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let text = answer.json()["choices"][0]["message"]["content"].clone();
    assert_eq!(text, "complete-loop: 5 calls, then llm_calls_exceeded");
    let charged = cost_header(&answer);
    let spend = spend(&weir, "?group_by=key").await;
    let row = |k: &str| {
        spend["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == k)
            .cloned()
    };
    let capped = row("capped").unwrap();
    assert_eq!(capped["calls"], 5, "{spend}");
    assert_eq!(capped["cost_pico_usd"].as_u64().unwrap(), charged);
    assert!(charged > 0);
    // Without a call limit, the budget stops the loop instead.
    let answer = ask(weir.addr, Some("sk-free"), &chat("hi", 16)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let text = answer.json()["choices"][0]["message"]["content"].clone();
    assert!(
        text.as_str().unwrap().ends_with("then budget_exceeded"),
        "{text}"
    );
    assert!(cost_header(&answer) <= 10_000_000_000);
}

#[tokio::test]
async fn admin_spend_groups_and_rejects_bad_parameters() {
    let up = sim(&[]);
    let weir = serve(&config(&[("up", &up, "sim-a")], "", ""));
    assert_eq!(ask(weir.addr, None, &chat("hi", 8)).await.status, 200);
    let by_day = spend(&weir, "?group_by=day").await;
    let rows = by_day["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].get("model").is_none());
    assert_eq!(rows[0]["calls"], 1);
    for bad in ["?group_by=colour", "?from=yesterday", "?colour=red"] {
        let answer = get(weir.admin.unwrap(), &format!("/admin/spend{bad}")).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert!(answer.json()["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn a_per_key_cache_never_shares_answers_between_keys() {
    let up = sim(&[]);
    let keys = key("a", "sk-a", "") + &key("b", "sk-b", "");
    for (per_key, second) in [(true, "miss"), (false, "hit")] {
        let weir = serve(&config(
            &[("up", &up, "sim-a")],
            &format!("cache = {{ ttl_ms = 60000, per_key = {per_key} }}"),
            &keys,
        ));
        let mut body = chat("shared question", 16);
        body["temperature"] = json!(0);
        let first = ask(weir.addr, Some("sk-a"), &body).await;
        assert_eq!(first.headers["x-weir-cache"], "miss");
        let other = ask(weir.addr, Some("sk-b"), &body).await;
        assert_eq!(other.headers["x-weir-cache"], second, "per_key = {per_key}");
        assert_eq!(
            ask(weir.addr, Some("sk-a"), &body).await.headers["x-weir-cache"],
            "hit"
        );
    }
}

#[tokio::test]
async fn a_cut_stream_is_charged_from_a_local_count_marked_estimated() {
    let up = sim(&["--stream-cut-after", "3"]);
    let dir = data_dir("estimated");
    let log = dir.join("requests.jsonl");
    let weir = serve(&config(
        &[("up", &up, "sim-a")],
        "max_attempts = 1",
        &format!("[cost]\nrequest_log = \"{}\"", log.display()),
    ));
    let mut body = chat("tell me a long story about rivers", 64);
    body["stream"] = json!(true);
    let answer = ask(weir.addr, None, &body).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .events()
            .iter()
            .any(|e| e.contains("stream_interrupted"))
    );
    let total = total_pico(&spend(&weir, "").await);
    assert!(total > 0, "the prompt and what arrived are billed");
    let lines = std::fs::read_to_string(&log).unwrap();
    let line: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(line["estimated"], true, "{line}");
    assert_eq!(line["model"], "sim-a");
    assert!(line["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(line["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(line["cache"], "bypass");
    // Its record is made at its end: the charge, and the error after the 200 it sent.
    let record = stream_record(&weir, "").await;
    assert_eq!(record["status"], 200);
    assert_eq!(record["error_code"], "stream_interrupted", "{record}");
    assert_eq!(record["cost_usd"], json!(total as f64 / 1e12), "{record}");
    let failed = get(weir.admin.unwrap(), "/admin/requests?failed=true").await;
    assert_eq!(failed.json()["requests"][0]["id"], record["id"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_stream_is_recorded_at_its_end_with_what_it_cost() {
    let up = sim(&[]);
    let weir = serve(&config(&[("up", &up, "sim-a")], "", ""));
    let mut body = chat("tell me about rivers", 32);
    body["stream"] = json!(true);
    let answer = ask(weir.addr, None, &body).await;
    assert_eq!(answer.status, 200);
    let total = total_pico(&spend(&weir, "").await);
    assert!(total > 0);
    let record = stream_record(&weir, "").await;
    assert_eq!(record["status"], 200);
    assert_eq!(record["error_code"], Value::Null, "{record}");
    assert_eq!(record["cost_usd"], json!(total as f64 / 1e12), "{record}");
    let (headers, end) = (&record["duration_ms"], &record["stream_ms"]);
    assert!(
        end.as_f64().unwrap() >= headers.as_f64().unwrap(),
        "{record}"
    );
    let failed = get(weir.admin.unwrap(), "/admin/requests?failed=true").await;
    assert_eq!(failed.json()["requests"], json!([]));
}

/// The newest request of `/admin/requests{query}` once it is there (a stream's record is
/// made when the stream ended, after the client had its last byte).
async fn stream_record(weir: &Proc, query: &str) -> Value {
    crate::wait::until("a stream's record", || async {
        let list = get(weir.admin.unwrap(), &format!("/admin/requests{query}")).await;
        let newest = list.json()["requests"][0].clone();
        if newest.is_object() {
            Ok(newest)
        } else {
            Err(newest)
        }
    })
    .await
}
