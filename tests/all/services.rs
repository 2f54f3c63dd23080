//! Services for stages, black-box: a stage reaches its granted services through weir's
//! `services` import and through `wasi:http`, and nothing else, a fan-out of three completions with one target stalled, `json-guard`
//! sending invalid output back to the model, `retrieve` degrading when its search service is
//! down, and retrieval end to end against a real Chroma server the test starts. The chaos run
//! (1,000 requests through `retrieve` with a faulty replica) is in `stress::services`.

use std::time::Duration;

use tokio::time::Instant;

use serde_json::{Value, json};

use crate::cost::PRICES;
use crate::procs::{Proc, get, post, serve, sim, sim_requests};
use crate::wait::{check, until};

/// The path of a Chroma v2 query on collection `id` (the sim answers any such path).
pub(crate) fn query_path(id: &str) -> String {
    format!("/api/v2/tenants/default_tenant/databases/default_database/collections/{id}/query")
}

/// Searches a simulator received.
pub(crate) async fn searches(sim: &Proc) -> u64 {
    get(sim.addr, "/sim/stats").await.json()["searches"]
        .as_u64()
        .unwrap()
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The content of a chat answer's first choice.
fn content(answer: &crate::sim::client::Answer) -> String {
    answer.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A route `model` on target `llm` whose one stage is the outbound test program in `mode`,
/// granted `services`, with `config` lines.
fn probe_route(model: &str, services: &[&str], config: &str) -> String {
    let granted: Vec<String> = services.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[routes]]\nmodel = \"{model}\"\ntargets = [\"llm\"]\n\n[[routes.stages]]\nname = \"probe\"\n\
         path = \"{}\"\nservices = [{}]\ndeadline_ms = 5000\n\n[routes.stages.config]\n{config}\n\n",
        weir_test_artifacts::OUTBOUND,
        granted.join(", ")
    )
}

/// The two ways a stage reaches a service: `weir-sdk`'s default (weir's `services` import)
/// and standard `wasi:http` (what any `wasi:http` client uses).
const TRANSPORTS: [&str; 2] = ["import", "wasi-http"];

#[tokio::test]
async fn a_stage_reaches_its_granted_services_and_nothing_else() {
    let search = sim(&[]);
    let llm = sim(&[]);
    let body = r#"body = '{"query_embeddings": [[1.0, 0.0]], "n_results": 2}'"#;
    let path = query_path("c1");
    let mut routes = String::new();
    for t in TRANSPORTS {
        let post = format!(
            "mode = \"http\"\ntransport = \"{t}\"\nmethod = \"POST\"\nurl = \"http://search{path}\"\n{body}"
        );
        routes += &probe_route(&format!("granted-{t}"), &["search"], &post);
        routes += &probe_route(
            &format!("by-address-{t}"),
            &["search"],
            &format!(
                "mode = \"http\"\ntransport = \"{t}\"\nmethod = \"POST\"\n\
                 url = \"http://{}{path}\"\n{body}",
                search.addr
            ),
        );
        routes += &probe_route(
            &format!("other-name-{t}"),
            &["search"],
            &format!("mode = \"http\"\ntransport = \"{t}\"\nurl = \"http://vectors/anything\""),
        );
        routes += &probe_route(&format!("ungranted-{t}"), &[], &post);
        // The answer's body over the stage's limit; a request body over the service's.
        routes += &probe_route(
            &format!("small-limit-{t}"),
            &["search"],
            &format!("{post}\nmax_body = 10"),
        );
        routes += &probe_route(
            &format!("big-body-{t}"),
            &["search"],
            &format!(
                "mode = \"http\"\ntransport = \"{t}\"\nmethod = \"POST\"\n\
                 url = \"http://search{path}\"\nbody = \"{}\"",
                "x".repeat(2048)
            ),
        );
    }
    let config = format!(
        "[targets.llm]\nbase_url = \"http://{llm}/v1\"\n\n[services.search]\nurls = [\"http://{search}\"]\n\
         max_request_bytes = 1024\n\n{routes}",
        llm = llm.addr,
        search = search.addr,
    );
    let weir = serve(&config);

    for (n, t) in TRANSPORTS.into_iter().enumerate() {
        let answer = post(
            weir.addr,
            "/v1/chat/completions",
            &chat(&format!("granted-{t}"), "hi"),
        )
        .await;
        assert_eq!(answer.status, 200, "{t}: {:?}", answer.body);
        let seen: Value = serde_json::from_str(&content(&answer)).unwrap();
        assert_eq!(seen["status"], 200, "{t}: {seen}");
        let passages: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
        assert!(
            passages["documents"][0][1]
                .as_str()
                .unwrap()
                .starts_with("sim passage 2"),
            "{t}: {passages}"
        );
        assert_eq!(searches(&search).await, n as u64 + 1, "{t}");
        let timing = answer.headers["server-timing"].to_str().unwrap().to_owned();
        assert!(timing.contains("svc1;desc=\"search 200\""), "{t}: {timing}");
    }

    // By address, by another name, or with no grant at all: refused, nothing sent. Bodies over
    // either limit: refused by the host (the request's) or not copied into the stage (the
    // answer's, after the call).
    for t in TRANSPORTS {
        for (model, error) in [
            ("by-address", "denied"),
            ("other-name", "denied"),
            ("ungranted", "denied"),
            ("big-body", "transport"),
        ] {
            let model = format!("{model}-{t}");
            let answer = post(weir.addr, "/v1/chat/completions", &chat(&model, "hi")).await;
            assert_eq!(answer.status, 200, "{model}: {:?}", answer.body);
            let seen: Value = serde_json::from_str(&content(&answer)).unwrap();
            assert_eq!(seen["error"], error, "{model}: {seen}");
        }
    }
    assert_eq!(searches(&search).await, 2, "the upstream saw nothing more");
    assert_eq!(
        get(search.addr, "/sim/stats").await.json()["requests"],
        2,
        "not even a connection that reached the sim's counters"
    );
    for t in TRANSPORTS {
        let model = format!("small-limit-{t}");
        let answer = post(weir.addr, "/v1/chat/completions", &chat(&model, "hi")).await;
        let seen: Value = serde_json::from_str(&content(&answer)).unwrap();
        assert_eq!(seen["error"], "body_too_large", "{model}: {seen}");
    }

    // The call is in the request's record.
    for t in TRANSPORTS {
        let id = answer_id(&weir, &format!("granted-{t}")).await;
        let record = get(weir.admin.unwrap(), &format!("/admin/requests/{id}"))
            .await
            .json();
        let call = &record["services"][0];
        assert_eq!(
            (
                &call["service"],
                &call["status"],
                &call["attempts"],
                &call["outcome"]
            ),
            (&json!("search"), &json!(200), &json!(1), &json!("ok")),
            "{t}: {record}"
        );
    }
}

#[tokio::test]
async fn send_all_calls_two_services_at_once() {
    let (docs, tickets) = (sim(&["--latency-ms", "600"]), sim(&["--latency-ms", "600"]));
    let llm = sim(&[]);
    let path = query_path("c1");
    let routes: String = TRANSPORTS
        .iter()
        .map(|t| {
            probe_route(
                &format!("both-{t}"),
                &["docs", "tickets"],
                &format!(
                    "mode = \"http-all\"\ntransport = \"{t}\"\n\
                     urls = [\"http://docs{path}\", \"http://vectors{path}\", \"http://tickets{path}\"]\n\
                     body = '{{\"query_embeddings\": [[1.0]]}}'"
                ),
            )
        })
        .collect();
    // A batch over the per-instance call limit: the host refuses it before reading it.
    let many: Vec<String> = (0..257).map(|_| format!("\"http://docs{path}\"")).collect();
    let routes = routes
        + &probe_route(
            "too-many",
            &["docs"],
            &format!(
                "mode = \"http-all\"\nurls = [{}]\nbody = '{{}}'",
                many.join(", ")
            ),
        );
    let config = format!(
        "[targets.llm]\nbase_url = \"http://{}/v1\"\n\n[services.docs]\nurls = [\"http://{}\"]\n\n\
         [services.tickets]\nurls = [\"http://{}\"]\n\n{routes}",
        llm.addr, docs.addr, tickets.addr,
    );
    let weir = serve(&config);
    for (n, t) in TRANSPORTS.into_iter().enumerate() {
        let started = Instant::now();
        let answer = post(
            weir.addr,
            "/v1/chat/completions",
            &chat(&format!("both-{t}"), "hi"),
        )
        .await;
        let elapsed = started.elapsed();
        assert_eq!(answer.status, 200, "{t}: {:?}", answer.body);
        let seen: Value = serde_json::from_str(&content(&answer)).unwrap();
        // The one not granted fails alone.
        assert_eq!(
            (&seen[0]["status"], &seen[1]["error"], &seen[2]["status"]),
            (&json!(200), &json!("denied"), &json!(200)),
            "{t}: {seen}"
        );
        let calls = n as u64 + 1;
        assert_eq!(
            (searches(&docs).await, searches(&tickets).await),
            (calls, calls),
            "{t}"
        );
        // Together: about one 600 ms latency, not two.
        assert!(elapsed >= Duration::from_millis(600), "{t}: {elapsed:?}");
        assert!(
            elapsed < Duration::from_millis(1100),
            "{t}: the two calls ran one after the other: {elapsed:?}"
        );
    }
    let answer = post(weir.addr, "/v1/chat/completions", &chat("too-many", "hi")).await;
    assert_eq!(answer.status, 500, "{:?}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "trap", "{:?}", answer.body);
    assert_eq!(searches(&docs).await, 2, "nothing of the batch was sent");
}

/// Sends one more request to `model` with an id of its own; returns the id.
async fn answer_id(weir: &Proc, model: &str) -> String {
    let id = format!("req-{model}-{}", std::process::id());
    let body = bytes::Bytes::from(chat(model, "hi").to_string());
    let answer = crate::procs::call(
        weir.addr,
        http::Method::POST,
        "/v1/chat/completions",
        &[("x-request-id", &id)],
        Some(body),
    )
    .await;
    assert_eq!(answer.status, 200);
    id
}

#[tokio::test]
async fn a_fan_out_with_one_stalled_target_returns_two_answers_and_a_timeout_all_billed() {
    let a = sim(&[]);
    let b = sim(&[]);
    let stalled = sim(&["--hang-rate", "1.0"]);
    let target = |name: &str, sim: &Proc, model: &str| {
        format!(
            "[targets.{name}]\nbase_url = \"http://{}/v1\"\nmodel = \"{model}\"\n",
            sim.addr
        )
    };
    let route = |model: &str, target: &str| {
        format!("[[routes]]\nmodel = \"{model}\"\ntargets = [\"{target}\"]\nmax_attempts = 1\n\n")
    };
    let config = format!(
        "{}{}{}{}{}{}{}{}{PRICES}",
        target("llm", &a, "sim-a"),
        target("tb", &b, "sim-b"),
        target("tc", &stalled, "sim-a"),
        route("model-a", "llm"),
        route("model-b", "tb"),
        route("model-c", "tc"),
        probe_route(
            "vote",
            &[],
            "mode = \"fanout\"\nmodels = [\"model-a\", \"model-b\", \"model-c\"]\ndeadline_ms = 800"
        ),
        // The stage's own calls are limited per stage (default 4) and per request.
        "",
    );
    // Over 16 requests each is refused and none sent; over 256 the host traps the stage
    // before reading the batch.
    let models = |n: usize| {
        (0..n)
            .map(|i| format!("\"m{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let config = config
        + &probe_route(
            "fan-17",
            &[],
            &format!("mode = \"fanout\"\nmodels = [{}]", models(17)),
        )
        + &probe_route(
            "fan-257",
            &[],
            &format!("mode = \"fanout\"\nmodels = [{}]", models(257)),
        );
    let weir = serve(&config);
    let started = Instant::now();
    let answer = post(weir.addr, "/v1/chat/completions", &chat("vote", "which?")).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let results: Value = serde_json::from_str(&content(&answer)).unwrap();
    assert!(
        results[0]["ok"].as_str().unwrap().contains("which?"),
        "{results}"
    );
    assert!(
        results[1]["ok"].as_str().unwrap().contains("which?"),
        "{results}"
    );
    assert_eq!(results[2]["err"]["status"], 504, "{results}");
    assert_eq!(results[2]["err"]["code"], "deadline_exceeded", "{results}");
    // In parallel: about the 800 ms deadline, not the sum of the three.
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(elapsed >= Duration::from_millis(800), "{elapsed:?}");

    let answer = post(weir.addr, "/v1/chat/completions", &chat("fan-17", "hi")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let results: Value = serde_json::from_str(&content(&answer)).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 17);
    for result in results {
        assert_eq!(result["err"]["status"], 400, "{result}");
        assert_eq!(result["err"]["code"], "too_many_calls", "{result}");
    }
    let answer = post(weir.addr, "/v1/chat/completions", &chat("fan-257", "hi")).await;
    assert_eq!(answer.status, 500, "{:?}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "trap", "{:?}", answer.body);

    // All three calls are in the ledger, the stalled one at an estimate.
    let spend = until("three calls in the ledger", || async {
        let spend = crate::cost::spend(&weir, "?group_by=route").await;
        let calls = spend["total"]["calls"].as_u64().unwrap_or(0);
        check(calls == 3, &spend).map(|()| spend)
    })
    .await;
    let rows = spend["rows"].as_array().cloned().unwrap_or_default();
    for route in ["model-a", "model-b", "model-c"] {
        let row = rows
            .iter()
            .find(|r| r["route"] == route)
            .unwrap_or_else(|| panic!("no row for {route}: {spend}"));
        assert_eq!(row["calls"], 1, "{spend}");
        assert!(
            row["cost_pico_usd"].as_u64().unwrap() > 0,
            "{route}: {spend}"
        );
    }
}

/// A route `model` on target `llm` answering through `json-guard`.
fn guarded(model: &str, retries: u32) -> String {
    format!(
        "[[routes]]\nmodel = \"{model}\"\ntargets = [\"llm\"]\nmax_output_retries = {retries}\n\n\
         [[routes.stages]]\nname = \"json-guard\"\npath = \"{}\"\n\n",
        weir_test_artifacts::JSON_GUARD
    )
}

fn schema_request(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "give me JSON"}],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer",
            "schema": {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
                "additionalProperties": false
            }
        }}
    })
}

#[tokio::test]
async fn json_guard_sends_invalid_output_back_and_gives_up_with_a_502() {
    // The first JSON-mode answer is prose, the second valid JSON.
    let llm = sim(&["--invalid-json-first", "1"]);
    let config = format!(
        "[targets.llm]\nbase_url = \"http://{}/v1\"\nmodel = \"sim-a\"\n\n{}{}{PRICES}",
        llm.addr,
        guarded("guarded", 2),
        guarded("strict", 1),
    );
    let weir = serve(&config);
    let answer = post(
        weir.addr,
        "/v1/chat/completions",
        &schema_request("guarded"),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let body = answer.json();
    let said: Value = serde_json::from_str(&content(&answer)).unwrap();
    assert!(said["answer"].is_string(), "{said}");
    // Both attempts reached the model, and the client pays for both.
    let asked = sim_requests(&llm, 2).await;
    assert_eq!(asked.len(), 2);
    let second = &asked[1]["body"]["messages"];
    let feedback = second.as_array().unwrap().last().unwrap();
    assert_eq!(feedback["role"], "user", "{second}");
    assert!(
        feedback["content"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("json"),
        "{feedback}"
    );
    assert_eq!(
        second.as_array().unwrap().len(),
        3,
        "question, refused answer, feedback"
    );
    let billed = get(llm.addr, "/sim/stats").await.json()["billed"].clone();
    let cost = body["usage"]["cost"].as_f64().unwrap();
    let expected = (billed["prompt_tokens"].as_f64().unwrap() * 1.0
        + billed["completion_tokens"].as_f64().unwrap() * 2.0)
        / 1e6;
    assert!(
        (cost - expected).abs() < 1e-12,
        "cost {cost} vs both attempts {expected}"
    );

    // Always invalid: 502 with the validation errors after the route's one retry.
    let faults = json!({"invalid_json_first": 1000});
    assert_eq!(post(llm.addr, "/sim/faults", &faults).await.status, 200);
    let before = get(llm.addr, "/sim/stats").await.json()["chat_completions"]
        .as_u64()
        .unwrap();
    let answer = post(weir.addr, "/v1/chat/completions", &schema_request("strict")).await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "invalid_model_output", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("not JSON")
            || error["message"].as_str().unwrap().contains("JSON"),
        "{error}"
    );
    let after = get(llm.addr, "/sim/stats").await.json()["chat_completions"]
        .as_u64()
        .unwrap();
    assert_eq!(after - before, 2, "the first answer and one retry");
}

/// A route `model` whose `retrieve` stage queries `service` (granted) under `on_error`.
pub(crate) fn retrieval_route(model: &str, on_error: &str, path: &str) -> String {
    format!(
        "[[routes]]\nmodel = \"{model}\"\ntargets = [\"llm\"]\n\n[[routes.stages]]\nname = \"retrieve\"\n\
         path = \"{}\"\non_error = \"{on_error}\"\nservices = [\"search\"]\ndeadline_ms = 5000\n\n\
         [routes.stages.config]\nservice = \"search\"\npath = \"{path}\"\nembed_model = \"emb\"\ntop_k = 2\n\n",
        weir_test_artifacts::RETRIEVE
    )
}

#[tokio::test]
async fn retrieve_degrades_when_every_search_replica_is_down() {
    let llm = sim(&[]);
    let down = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let config = format!(
        "[targets.llm]\nbase_url = \"http://{}/v1\"\n\n[services.search]\nurls = [\"http://{}\", \"http://{}\"]\n\
         timeout_ms = 200\n\n{}{}",
        llm.addr,
        down(),
        down(),
        retrieval_route("rag", "degrade", &query_path("c1")),
        retrieval_route("rag-strict", "fail", &query_path("c1")),
    );
    let weir = serve(&config);
    for i in 0..5 {
        let answer = post(
            weir.addr,
            "/v1/chat/completions",
            &chat("rag", &format!("q{i}")),
        )
        .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(
            answer.headers["x-weir-degraded"].to_str().unwrap(),
            "retrieve"
        );
        assert!(content(&answer).contains(&format!("q{i}")));
    }
    let answer = post(weir.addr, "/v1/chat/completions", &chat("rag-strict", "q")).await;
    assert_eq!(answer.status, 500, "the fail policy: {:?}", answer.body);
    let metrics = get(weir.admin.unwrap(), "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains("weir_degraded_total{route=\"rag\",stage=\"retrieve\"} 5"),
        "{text}"
    );
}

/// A Chroma server started for one test (the `chroma` that `tests/install-chroma` installs).
struct Chroma {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: std::path::PathBuf,
}

impl Drop for Chroma {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// The `chroma` executable: `$WEIR_CHROMA`, or what `tests/install-chroma` installs (it is
/// idempotent, and fast once installed).
fn chroma_bin() -> String {
    if let Ok(path) = std::env::var("WEIR_CHROMA") {
        return path;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/install-chroma");
    let out = std::process::Command::new(script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("tests/install-chroma runs");
    assert!(out.status.success(), "tests/install-chroma failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("the chroma path")
        .to_string()
}

async fn start_chroma() -> Chroma {
    let bin = chroma_bin();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = std::env::temp_dir().join(format!("weir-chroma-{}-{port}", std::process::id()));
    let child = std::process::Command::new(bin)
        .args([
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--path",
        ])
        .arg(&dir)
        .env("ANONYMIZED_TELEMETRY", "False")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chroma starts");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut chroma = Chroma {
        child,
        addr,
        _dir: dir,
    };
    until("chroma's heartbeat", || {
        let exited = chroma.child.try_wait().ok().flatten();
        async move {
            assert!(exited.is_none(), "chroma exited: {exited:?}");
            let answer = crate::procs::try_get(addr, "/api/v2/heartbeat").await;
            check(answer == Some(200), format!("{answer:?}"))
        }
    })
    .await;
    chroma
}

#[tokio::test]
async fn retrieval_end_to_end_puts_chroma_passages_in_the_prompt() {
    let chroma = start_chroma().await;
    let llm = sim(&[]);
    // The documents get the sim's own embeddings, so the question finds its passage.
    let docs = [
        "weir runs pipeline stages as WebAssembly components",
        "the breaker opens after five failures in a row",
        "Chroma is the vector database of this test",
    ];
    let embedded = post(
        llm.addr,
        "/v1/embeddings",
        &json!({"model": "emb", "input": docs}),
    )
    .await
    .json();
    let vectors: Vec<Value> = (0..docs.len())
        .map(|i| embedded["data"][i]["embedding"].clone())
        .collect();
    let collections = "/api/v2/tenants/default_tenant/databases/default_database/collections";
    let created = post(
        chroma.addr,
        collections,
        &json!({"name": "docs", "get_or_create": true}),
    )
    .await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    let added = post(
        chroma.addr,
        &format!("{collections}/{id}/add"),
        &json!({"ids": ["d0", "d1", "d2"], "embeddings": vectors, "documents": docs}),
    )
    .await;
    assert_eq!(added.status, 201, "{:?}", added.body);

    let config = format!(
        "[targets.llm]\nbase_url = \"http://{}/v1\"\n\n[services.search]\nurls = [\"http://{}\"]\n\n{}",
        llm.addr,
        chroma.addr,
        retrieval_route("rag", "fail", &query_path(&id)),
    );
    let weir = serve(&config);
    // The question is the second document word for word: its vector is that document's.
    let answer = post(weir.addr, "/v1/chat/completions", &chat("rag", docs[1])).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert!(answer.headers.get("x-weir-degraded").is_none());
    let upstream = sim_requests(&llm, 1).await;
    let prompt = upstream[0]["body"]["messages"].to_string();
    assert!(prompt.contains(docs[1]), "{prompt}");
    let context = upstream[0]["body"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "system")
        .unwrap_or_else(|| panic!("no context message: {prompt}"))
        .to_string();
    assert!(context.contains(docs[1]), "the nearest passage: {context}");
}

#[tokio::test]
async fn a_stage_flooding_the_host_with_wasi_http_resources_is_stopped_and_the_host_serves_on() {
    let llm = sim(&[]);
    let config = format!(
        "[targets.llm]\nbase_url = \"http://{}/v1\"\n\n{}",
        llm.addr,
        probe_route("flood", &[], "mode = \"fields-flood\""),
    );
    let weir = serve(&config);
    for _ in 0..3 {
        let answer = post(weir.addr, "/v1/chat/completions", &chat("flood", "hi")).await;
        // Either the resource table's bound traps the stage (500 under `fail`), or the host
        // refuses the set and the stage stops early; never a million sets held.
        match answer.status.as_u16() {
            500 => assert_eq!(answer.json()["error"]["code"], "trap", "{:?}", answer.body),
            200 => {
                let held: String = content(&answer);
                let n: u64 = held
                    .trim_start_matches("held ")
                    .trim_end_matches(" header sets")
                    .parse()
                    .unwrap();
                assert!(n <= weir::sandbox::RESOURCES_MAX as u64, "{held}");
            }
            other => panic!("{other}: {:?}", answer.body),
        }
    }
    assert_eq!(get(weir.addr, "/healthz").await.status, 200);
}
