//! What a client, a stage or an upstream sends never grows weir's memory without bound, and
//! stage caches stay private: same-named stages of two routes, the deterministic stages'
//! output cache under distinct 1 MiB requests, the recent-requests ring under a 1 MiB model
//! name, and `/metrics` series under stage-chosen model names.

use serde_json::{Value, json};

use crate::procs::{Proc, post, serve, sim};

/// A stage-less target on `upstream` and `routes` (TOML) after it.
fn config(upstream: &Proc, routes: &str) -> String {
    format!(
        r#"
[targets.up]
base_url = "http://{}/v1"
timeout_ms = 5000
{routes}
"#,
        upstream.addr
    )
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The text of the first choice of a 200 answer.
fn answer_text(answer: &crate::sim::client::Answer) -> String {
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn same_named_stages_of_two_routes_have_separate_caches() {
    let up = sim(&[]);
    // chaos("cache") in both routes under the one name `x`: each call reads the counter its
    // stage stored, answers with it and stores it + 1.
    let stage = |route: &str| {
        format!(
            r#"
[[routes]]
model = "{route}"
targets = ["up"]
[[routes.stages]]
name = "x"
path = "{chaos}"
config = {{ mode = "cache" }}
"#,
            chaos = weir_test_artifacts::CHAOS
        )
    };
    let weir = serve(&config(&up, &format!("{}{}", stage("a"), stage("b"))));
    let ask = |route: &'static str| {
        let addr = weir.addr;
        async move { answer_text(&post(addr, "/v1/chat/completions", &chat(route, "hi")).await) }
    };
    assert_eq!(ask("a").await, "cache: before=0");
    assert_eq!(ask("a").await, "cache: before=1");
    // Route B's `x` has never stored anything: A's counter (now 2) is not its to read.
    assert_eq!(ask("b").await, "cache: before=0");
    assert_eq!(ask("b").await, "cache: before=1");
    assert_eq!(ask("a").await, "cache: before=2");
}
