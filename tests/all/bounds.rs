//! What a client, a stage or an upstream sends never grows weir's memory without bound, and
//! stage caches stay private: same-named stages of two routes, the deterministic stages'
//! output cache under distinct 1 MiB requests, the recent-requests ring under a 1 MiB model
//! name, and `/metrics` series under stage-chosen model names.

use serde_json::{Value, json};

use crate::procs::{Proc, post, serve, sim};
use crate::support::chaos;

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

/// A route `det` whose only stage is system-prompt (deterministic, request phase only: its
/// outcomes go to the stage output cache), with request bodies up to 2 MiB.
fn deterministic_route(upstream: &Proc, cache: &str) -> String {
    let routes = format!(
        r#"
[server]
max_body_bytes = 2097152

[cache]
{cache}

[[routes]]
model = "det"
targets = ["up"]
[[routes.stages]]
name = "system-prompt"
path = "{system}"
config = {{ prompt = "Be brief." }}
"#,
        system = weir_test_artifacts::SYSTEM_PROMPT
    );
    config(upstream, &routes)
}

/// `n` requests to `det` of about 1 MiB each, every one different (so every one is a new
/// entry of the stage output cache), two at a time.
async fn megabyte_requests(weir: &Proc, from: usize, n: usize) {
    let pad = "x".repeat(1 << 20);
    let addr = weir.addr;
    let one = |i: usize| {
        let body = chat("det", &format!("{i} {pad}"));
        async move {
            let answer = post(addr, "/v1/chat/completions", &body).await;
            assert_eq!(answer.status, 200, "request {i}: {:?}", answer.body);
        }
    };
    for i in (from..from + n).step_by(2) {
        tokio::join!(one(i), one(i + 1));
    }
}

/// Growth of weir's resident memory over 300 distinct 1 MiB requests through a deterministic
/// stage, MiB, after a warm-up of 20 (which sizes the allocator's arenas and buffers for 1 MiB
/// bodies).
async fn growth_over_300_megabyte_requests(weir: &Proc) -> u64 {
    let pid = weir.child.id();
    megabyte_requests(weir, 0, 20).await;
    let before = crate::listener::settled_rss_kib(pid).await;
    megabyte_requests(weir, 20, 300).await;
    let after = crate::listener::settled_rss_kib(pid).await;
    after.saturating_sub(before) / 1024
}

/// The bound the stage output cache keeps by default (`cache.stage_outputs_max_mib` = 32)
/// plus room for what the allocator keeps of freed 1 MiB bodies on a loaded 2-core machine
/// (arenas per thread): 128 MiB. Without a byte bound each outcome, a whole copy of its
/// request, costs about a megabyte, and 300 of them grow RSS by some 300 MiB.
const GROWTH_BOUND_MIB: u64 = 128;

#[tokio::test]
async fn distinct_megabyte_requests_through_a_deterministic_stage_keep_rss_bounded() {
    let up = sim(&[]);
    let weir = serve(&deterministic_route(&up, ""));
    let growth = growth_over_300_megabyte_requests(&weir).await;
    eprintln!("RSS growth over 300 distinct 1 MiB requests: {growth} MiB");
    assert!(
        growth < GROWTH_BOUND_MIB,
        "RSS grew by {growth} MiB over 300 distinct 1 MiB requests (bound {GROWTH_BOUND_MIB} MiB)"
    );
}

/// A hostile embeddings target on loopback: answers its n-th `/v1/embeddings` request with
/// `replies[n]` (the last one again after that), whatever was asked.
async fn embedder(replies: Vec<Vec<f32>>) -> std::net::SocketAddr {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let replies = Arc::new(replies);
    let served = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (replies, served) = (replies.clone(), served.clone());
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let (replies, served) = (replies.clone(), served.clone());
                async move {
                    let _ = request.into_body().collect().await;
                    let n = served
                        .fetch_add(1, Ordering::Relaxed)
                        .min(replies.len() - 1);
                    let body = json!({
                        "object": "list",
                        "data": [{"object": "embedding", "index": 0, "embedding": replies[n]}],
                        "model": "hostile-embed",
                        "usage": {"prompt_tokens": 1, "total_tokens": 1},
                    });
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body.to_string())))
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    addr
}

#[tokio::test]
async fn embeddings_over_the_dimension_cap_or_of_another_dimension_are_misses_with_a_warning() {
    let up = sim(&[]);
    let first: Vec<f32> = (0..64).map(|i| ((i % 7) as f32) - 3.0).collect();
    // Longer vectors whose first 64 numbers are `first`'s: compared over the shorter one's
    // length, any two of them look identical (similarity 1), so another question would be
    // answered with a cached answer.
    let padded = |len: usize| {
        let mut v = first.clone();
        v.resize(len, 0.0);
        v
    };
    let embeddings = embedder(vec![padded(9000), padded(9000), first.clone(), padded(128)]).await;
    let routes = format!(
        r#"
[targets.embedder]
base_url = "http://{embeddings}/v1"
model = "hostile-embed"

[[routes]]
model = "semantic"
targets = ["up"]
cache = {{ ttl_ms = 60000, semantic_threshold_percent = 95, semantic_embeddings = "embedder" }}
"#
    );
    let log = std::env::temp_dir().join(format!("weir-bounds-embed-{}.log", std::process::id()));
    let weir = crate::procs::serve_logged(&config(&up, &routes), &[], &log);
    let ask = |text: &str| {
        let body = json!({"model": "semantic", "temperature": 0,
            "messages": [{"role": "user", "content": text}]});
        let addr = weir.addr;
        async move {
            let answer = post(addr, "/v1/chat/completions", &body).await;
            let cache = answer.headers["x-weir-cache"].to_str().unwrap().to_string();
            (answer_text(&answer), cache)
        }
    };
    // 9,000 dimensions: neither looked up nor stored, so the second is no hit either.
    let (france, cache) = ask("What is the capital of France?").await;
    assert_eq!(cache, "miss");
    let (spain, cache) = ask("What is the capital of Spain?").await;
    assert_eq!(cache, "miss");
    assert_ne!(spain, france);
    // 64 dimensions are stored; then 128 in the same namespace are refused, not compared.
    let (italy, cache) = ask("What is the capital of Italy?").await;
    assert_eq!(cache, "miss");
    let (germany, cache) = ask("What is the capital of Germany?").await;
    assert_eq!(cache, "miss");
    assert_ne!(germany, italy);
    crate::wait::until("the refused embeddings' warnings in the log", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move {
            crate::wait::check(
                text.contains("embedding refused")
                    && text.contains("9000 dimensions (at most 8192)")
                    && text.contains("128 dimensions where this namespace has 64"),
                format!(
                    "log: {}",
                    text.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                ),
            )
        }
    })
    .await;
}

/// Bytes of the stored error message at most: the ring's 1 KiB plus the note of how much
/// was cut.
const STORED_MESSAGE_MAX: usize = 1024 + 64;

/// What 256 records (the ring's default size) can cost once cut to a few KiB each, plus
/// room for what the allocator keeps of freed 1 MiB bodies on a loaded 2-core machine:
/// 48 MiB. Records keeping the whole message, which quotes the model, cost 256 MiB.
const RING_GROWTH_BOUND_MIB: u64 = 48;

#[tokio::test]
async fn a_megabyte_model_name_is_cut_in_the_recent_requests_ring() {
    let up = sim(&[]);
    let routes =
        "[server]\nmax_body_bytes = 2097152\n\n[[routes]]\nmodel = \"plain\"\ntargets = [\"up\"]\n";
    let weir = serve(&config(&up, routes));
    let admin = weir.admin.unwrap();
    let pid = weir.child.id();
    let unknown = |i: usize| {
        // 1 MiB of model name, different each time; 404 model_not_found quotes it.
        let body = chat(&format!("{i}-{}", "m".repeat(1 << 20)), "hi");
        let addr = weir.addr;
        async move {
            let answer = post(addr, "/v1/chat/completions", &body).await;
            assert_eq!(answer.status, 404, "request {i}");
        }
    };
    for i in 0..16 {
        unknown(i).await;
    }
    let before = crate::listener::settled_rss_kib(pid).await;
    for i in 16..16 + 256 {
        unknown(i).await;
    }
    let after = crate::listener::settled_rss_kib(pid).await;
    let growth = after.saturating_sub(before) / 1024;
    eprintln!("RSS growth over 256 requests with a 1 MiB model: {growth} MiB");

    let list = crate::procs::get(admin, "/admin/requests?limit=1")
        .await
        .json();
    let id = list["requests"][0]["id"].as_str().unwrap().to_string();
    let detail = crate::procs::get(admin, &format!("/admin/requests/{id}"))
        .await
        .json();
    assert_eq!(detail["error"]["code"], "model_not_found", "{detail}");
    let message = detail["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the model `271-mmm"),
        "{}",
        &message[..40]
    );
    assert!(
        message.len() <= STORED_MESSAGE_MAX,
        "{} bytes of message kept",
        message.len()
    );
    assert!(
        growth < RING_GROWTH_BOUND_MIB,
        "RSS grew by {growth} MiB over 256 requests with a 1 MiB model (bound {RING_GROWTH_BOUND_MIB} MiB)"
    );
}

#[tokio::test]
async fn the_model_from_user_stage_lets_the_client_choose_the_upstream_model() {
    let host = crate::support::TestHost::shared().await;
    let outcome = host
        .run(
            &[chaos("model-from-user")],
            crate::support::user("any-model-at-all"),
        )
        .await;
    let upstream = outcome.upstream.expect("the request reached the LLM step");
    assert_eq!(upstream.model, "any-model-at-all");
}

/// The `weir_tokens_total` series in a `/metrics` text.
fn token_series(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|line| line.starts_with("weir_tokens_total{"))
        .collect()
}

#[tokio::test]
async fn stage_chosen_model_names_do_not_grow_the_token_series() {
    let up = sim(&[]);
    // The upstream model is whatever the client wrote (the sim answers with the model it was
    // asked for); the config names two models: the route's alias and a priced one.
    let routes = format!(
        r#"
[prices.priced]
input_per_mtok = 1
output_per_mtok = 2

[[routes]]
model = "free"
targets = ["up"]
[[routes.stages]]
name = "chooser"
path = "{chaos}"
config = {{ mode = "model-from-user" }}
"#,
        chaos = weir_test_artifacts::CHAOS
    );
    let weir = serve(&config(&up, &routes));
    let addr = weir.addr;
    let one = |i: usize| async move {
        let answer = post(
            addr,
            "/v1/chat/completions",
            &chat("free", &format!("m-{i}")),
        )
        .await;
        assert_eq!(answer.status, 200, "request {i}: {:?}", answer.body);
        assert_eq!(answer.json()["model"], format!("m-{i}"));
    };
    for batch in (0..1000).collect::<Vec<usize>>().chunks(8) {
        futures_util::future::join_all(batch.iter().map(|i| one(*i))).await;
    }
    let admin = weir.admin.unwrap();
    // The ledger writer records each call after its answer: wait for the last of them.
    let metrics = crate::wait::until("1000 answers' output tokens in /metrics", || async move {
        let text =
            String::from_utf8(crate::procs::get(admin, "/metrics").await.body.to_vec()).unwrap();
        let counted: f64 = token_series(&text)
            .iter()
            .filter(|line| line.contains(r#"kind="output""#))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        // Every sim answer has at least one completion token.
        crate::wait::check(counted >= 1000.0, format!("{counted} output tokens")).map(|()| text)
    })
    .await;
    let series = token_series(&metrics);
    // One key (`-`) × one label (`other`) × three kinds: the 1000 names are not labels.
    assert_eq!(series.len(), 3, "{series:#?}");
    assert!(
        series.iter().all(|s| s.contains(r#"model="other""#)),
        "{series:#?}"
    );
    let cost_series = metrics
        .lines()
        .filter(|line| line.starts_with("weir_cost_picodollars_total{"))
        .count();
    assert_eq!(cost_series, 1);
}
