//! The limits on LLM calls through the real binary, against a `weir sim` that counts what it
//! served: the default loop guard without keys, a route's own limit that a key may only
//! lower, the request's own call counted, each stage's budget, `embed()` counted, billed and
//! ledgered under the target's model pin (and bounded), the semantic tier's embedding call
//! billed to the request, and `describe()` refused any LLM call.

use http::Method;
use serde_json::{Value, json};

use crate::cost::{ask, chat, cost_header, key, spend};
use crate::procs::{Proc, call, get, serve, serve_file_logged, sim, sim_requests};
use crate::wait;

/// Pico-dollars per prompt token of `sim-embed`: $1 per million.
const EMBED_IN: u64 = 1_000_000;

/// Targets `up` (chat, `sim-a`) and `emb` (embeddings, pinned to `sim-embed`) on `sim`, their
/// prices, and `routes` after them.
fn config(sim: &Proc, routes: &str) -> String {
    format!(
        "[targets.up]\nbase_url = \"http://{addr}/v1\"\nmodel = \"sim-a\"\ntimeout_ms = 5000\n\n\
         [targets.emb]\nbase_url = \"http://{addr}/v1\"\nmodel = \"sim-embed\"\n\
         timeout_ms = 5000\n\n\
         [prices.\"sim-a\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n\n\
         [prices.\"sim-embed\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 0\n\n{routes}\n",
        addr = sim.addr
    )
}

/// The route `demo` over `up`, with `route` keys, running the chaos stage with `stage` keys
/// and the stage config `chaos` (a generous deadline: a loop of calls must be stopped by a
/// limit, never by the default 200 ms deadline on a loaded machine).
fn demo(route: &str, stage: &str, chaos: &str) -> String {
    format!(
        "[[routes]]\nmodel = \"demo\"\ntargets = [\"up\"]\n{route}\n\n\
         [[routes.stages]]\nname = \"chaos\"\npath = \"{}\"\ndeadline_ms = 60000\n{stage}\n\
         config = {{ {chaos} }}\n",
        weir_test_artifacts::CHAOS
    )
}

/// The chaos stage's config for `mode`; its `embed()` names the route `embeddings`.
fn chaos(mode: &str) -> String {
    format!("mode = \"{mode}\", model = \"embeddings\"")
}

/// The route `embeddings` over `emb` (what the chaos stage's `embed()` names).
const EMBEDDINGS_ROUTE: &str = "[[routes]]\nmodel = \"embeddings\"\ntargets = [\"emb\"]\n";

async fn stats(sim: &Proc) -> Value {
    get(sim.addr, "/sim/stats").await.json()
}

async fn reset(sim: &Proc) {
    let answer = call(sim.addr, Method::POST, "/sim/reset", &[], Some("{}".into())).await;
    assert_eq!(answer.status, 200);
}

/// The text of a 200 answer.
fn text(answer: &crate::sim::client::Answer) -> String {
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let body = answer.json();
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The `/admin/spend?group_by=key,model` row of `model` (and `key`).
async fn spend_row(weir: &Proc, key: &str, model: &str) -> Option<Value> {
    let spend = spend(weir, "?group_by=key,model").await;
    spend["rows"]
        .as_array()?
        .iter()
        .find(|r| r["key"] == key && r["model"] == model)
        .cloned()
}

#[tokio::test]
async fn a_stage_in_a_loop_of_complete_calls_is_stopped_by_the_default_limits() {
    // Seen before the guard: 957 upstream calls for one request, with no keys configured.
    let up = sim(&[]);
    let weir = serve(&config(&up, &demo("", "", &chaos("complete-loop"))));
    let answer = ask(weir.addr, None, &chat("hi", 16)).await;
    assert_eq!(
        text(&answer),
        "complete-loop: 4 calls, then llm_calls_exceeded",
        "the stage's default budget"
    );
    assert_eq!(stats(&up).await["chat_completions"], 4);
    drop(weir);

    // A stage allowed more still meets the request's default limit.
    reset(&up).await;
    let stage = "max_llm_calls = 10000";
    let weir = serve(&config(&up, &demo("", stage, &chaos("complete-loop"))));
    let answer = ask(weir.addr, None, &chat("hi", 16)).await;
    assert_eq!(
        text(&answer),
        "complete-loop: 10 calls, then llm_calls_exceeded"
    );
    assert_eq!(
        stats(&up).await["chat_completions"],
        10,
        "the server's default"
    );
    assert!(cost_header(&answer) > 0, "every call was charged");
}

#[tokio::test]
async fn the_requests_own_call_counts_and_a_key_may_only_lower_the_routes_limit() {
    let up = sim(&[]);
    // The loop runs in the response phase, after the request's own call.
    let routes = demo(
        "max_llm_calls_per_request = 3",
        "max_llm_calls = 100",
        &format!("{}, fault_phase = \"response\"", chaos("complete-loop")),
    );
    let keys = key("low", "sk-low", "max_llm_calls_per_request = 2")
        + &key("high", "sk-high", "max_llm_calls_per_request = 50");
    let weir = serve(&(config(&up, &routes) + &keys));
    for (secret, stage_calls, upstream_calls) in [("sk-high", 2, 3), ("sk-low", 1, 2)] {
        reset(&up).await;
        let answer = ask(weir.addr, Some(secret), &chat("hi", 16)).await;
        assert_eq!(
            text(&answer),
            format!("complete-loop: {stage_calls} calls, then llm_calls_exceeded"),
            "{secret}"
        );
        assert_eq!(
            stats(&up).await["chat_completions"],
            upstream_calls,
            "{secret}: the request's own call and its stage's"
        );
    }
}

#[tokio::test]
async fn embed_is_counted_billed_and_ledgered_under_the_targets_model() {
    let up = sim(&[]);
    let routes = demo("", "", &chaos("embed-loop")) + EMBEDDINGS_ROUTE;
    let keys = key(
        "capped",
        "sk-capped",
        "max_llm_calls_per_request = 2\ndaily_budget_usd = 1",
    );
    let weir = serve(&(config(&up, &routes) + &keys));
    let answer = ask(weir.addr, Some("sk-capped"), &chat("hi", 16)).await;
    assert_eq!(
        text(&answer),
        "embed-loop: 2 calls, then llm_calls_exceeded"
    );
    let stats = stats(&up).await;
    assert_eq!(stats["embeddings"], 2, "{stats}");
    assert_eq!(stats["chat_completions"], 0, "{stats}");
    // The stage asked for `embeddings`; the target's pin decides what is asked and billed.
    for request in sim_requests(&up, 2).await {
        assert_eq!(request["body"]["model"], "sim-embed", "{request}");
    }
    let billed = stats["billed"]["embedding_tokens"].as_u64().unwrap();
    assert!(billed > 0);
    let row = spend_row(&weir, "capped", "sim-embed").await.unwrap();
    assert_eq!(row["calls"], 2, "{row}");
    assert_eq!(row["prompt_tokens"].as_u64(), Some(billed), "{row}");
    assert_eq!(
        row["cost_pico_usd"].as_u64(),
        Some(billed * EMBED_IN),
        "{row}"
    );
    assert_eq!(cost_header(&answer), billed * EMBED_IN, "x-weir-cost-usd");
}

#[tokio::test]
async fn embed_inputs_are_bounded_before_anything_is_sent() {
    let up = sim(&[]);
    let routes = demo("", "", &chaos("embed-huge")) + EMBEDDINGS_ROUTE;
    let weir = serve(&config(&up, &routes));
    let answer = ask(weir.addr, None, &chat("hi", 16)).await;
    assert_eq!(
        text(&answer),
        "embed-huge: error: 413 embed_input_too_large"
    );
    assert_eq!(stats(&up).await["requests"], 0);
}

#[tokio::test]
async fn the_semantic_tiers_embedding_call_is_billed_to_the_request() {
    let up = sim(&[]);
    let cache = "cache = { ttl_ms = 60000, semantic_threshold_percent = 90, \
                 semantic_embeddings = \"emb\" }";
    let route = |extra: &str| {
        format!("[[routes]]\nmodel = \"demo\"\ntargets = [\"up\"]\n{cache}\n{extra}\n")
    };
    let weir = serve(&config(&up, &route("")));
    let mut body = chat("what is the capital of france", 16);
    body["temperature"] = json!(0);
    let answer = ask(weir.addr, None, &body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-weir-cache"], "miss");
    let seen = stats(&up).await;
    assert_eq!(
        (
            seen["embeddings"].as_u64(),
            seen["chat_completions"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let billed = seen["billed"]["embedding_tokens"].as_u64().unwrap();
    let row = spend_row(&weir, "-", "sim-embed").await.unwrap();
    assert_eq!(row["calls"], 1, "{row}");
    assert_eq!(row["prompt_tokens"].as_u64(), Some(billed), "{row}");
    let chat_row = spend_row(&weir, "-", "sim-a").await.unwrap();
    let total =
        row["cost_pico_usd"].as_u64().unwrap() + chat_row["cost_pico_usd"].as_u64().unwrap();
    assert_eq!(
        cost_header(&answer),
        total,
        "the probe is part of the request's cost"
    );
    drop(weir);

    // A limit of one call: the probe would take the request's own, so it is skipped.
    reset(&up).await;
    let weir = serve(&config(&up, &route("max_llm_calls_per_request = 1")));
    let answer = ask(weir.addr, None, &body).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let seen = stats(&up).await;
    assert_eq!(
        (
            seen["embeddings"].as_u64(),
            seen["chat_completions"].as_u64()
        ),
        (Some(0), Some(1))
    );
}

#[tokio::test]
async fn describe_calling_complete_is_refused_without_an_upstream_call() {
    let up = sim(&[]);
    let dir = crate::reload::workdir("describe-complete");
    let (first, second) = (dir.join("first.wasm"), dir.join("second.wasm"));
    std::fs::copy(weir_test_artifacts::CHAOS, &first).unwrap();
    std::fs::copy(weir_test_artifacts::CHAOS, &second).unwrap();
    // The chaos stage's describe() calls complete() on `chaos-describe`: a route with that
    // alias is what would let the call reach the sim.
    let route = |model: &str, plugin: &std::path::Path| {
        format!(
            "[[routes]]\nmodel = \"{model}\"\ntargets = [\"up\"]\n\n[[routes.stages]]\n\
             name = \"chaos\"\npath = \"{}\"\n\n",
            plugin.display()
        )
    };
    let probe = "[[routes]]\nmodel = \"chaos-describe\"\ntargets = [\"up\"]\n\n";
    let config_path = dir.join("weir.toml");
    let log = dir.join("weir.log");
    std::fs::write(&config_path, config(&up, &(route("demo", &first) + probe))).unwrap();
    let weir = serve_file_logged(&config_path, &log);
    // A reload loads a new stage file while the live step routes `chaos-describe` (at start
    // the step being built routes nothing yet).
    let grown = route("demo", &first) + probe + &route("other", &second);
    crate::reload::replace(&config_path, config(&up, &grown).as_bytes());
    let reload = call(
        weir.admin.unwrap(),
        Method::POST,
        "/admin/reload",
        &[],
        None,
    )
    .await;
    assert_eq!(reload.status, 200, "{:?}", reload.body);
    let mut other = chat("hi", 16);
    other["model"] = json!("other");
    wait::until("the new stage serving its route", || async {
        let answer = ask(weir.addr, None, &other).await;
        wait::check(answer.status == 200, answer.status)
    })
    .await;
    let stats = stats(&up).await;
    assert_eq!(stats["requests"], 1, "only the request itself: {stats}");
    // Both loads (at start and at the reload) were refused.
    let refused = "chaos describe: complete() refused: llm_unavailable_in_describe";
    wait::until("both refusals in the log", || async {
        let lines = std::fs::read_to_string(&log).unwrap_or_default();
        let count = lines.matches(refused).count();
        wait::check(count >= 2, format!("{count} in {lines}"))
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
