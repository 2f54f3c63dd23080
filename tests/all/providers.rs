//! Other providers behind weir and other client APIs in front of it, black-box against real
//! `weir sim` processes speaking each provider's wire format: fallback from an OpenAI target
//! to an Anthropic one (answers, streams and cost), Gemini and Azure targets, tools through
//! every translation, a request a target cannot carry, and `/v1/messages`, `/v1/responses`,
//! `/v1/embeddings` and `/v1/models/{id}` in front.

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

// `sim-a` costs $1 / $2 per million tokens in / out, `sim-b` $0.50 / $1.
use crate::cost::PRICES;
use crate::procs::{Proc, call, get, post, serve, sim, sim_requests};
use crate::sim::client::Answer;

/// A target `name` of `kind` on `sim` for upstream model `model`, with `extra` keys.
fn target(name: &str, sim: &Proc, kind: &str, model: &str, extra: &str) -> String {
    let base = match kind {
        "gemini" => format!("http://{}/v1beta", sim.addr),
        "azure-openai" => format!("http://{}", sim.addr),
        _ => format!("http://{}/v1", sim.addr),
    };
    format!(
        "[targets.{name}]\nbase_url = \"{base}\"\nkind = \"{kind}\"\nmodel = \"{model}\"\n{extra}\n"
    )
}

fn route(model: &str, targets: &[&str], extra: &str) -> String {
    let names: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[[routes]]\nmodel = \"{model}\"\ntargets = [{}]\n{extra}\n",
        names.join(", ")
    )
}

fn chat(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": text}
    ]})
}

/// The text of an OpenAI SSE answer, its finish reason and whether it ended with `[DONE]`.
fn streamed(answer: &Answer) -> (String, Option<String>, bool) {
    let mut text = String::new();
    let mut finish = None;
    let mut done = false;
    for event in answer.events() {
        if event == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(&event).expect("a JSON chunk");
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
        if let Some(reason) = chunk["choices"][0]["finish_reason"].as_str() {
            finish = Some(reason.to_owned());
        }
    }
    (text, finish, done)
}

/// The `(event, data)` pairs of an SSE body that names its events.
fn named_events(answer: &Answer) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(&answer.body).expect("utf-8");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).expect("JSON data");
                }
            }
            (name, data)
        })
        .collect()
}

#[tokio::test]
async fn a_route_falls_back_from_a_failing_openai_target_to_an_anthropic_one() {
    let primary = sim(&["--error-rate", "1.0", "--error-status", "503"]);
    let secondary = sim(&[]);
    let config = format!(
        "{}{}{}{PRICES}",
        target("openai", &primary, "openai", "sim-a", ""),
        target("claude", &secondary, "anthropic", "sim-b", ""),
        route(
            "demo",
            &["openai", "claude"],
            "max_attempts = 2\nretry_budget_percent = 100"
        ),
    );
    let weir = serve(&config);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let addr = weir.addr;
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..25 {
                let stream = i % 2 == 1;
                let text = format!("question {worker}-{i}");
                let answer = post(addr, "/v1/chat/completions", &chat("demo", &text, stream)).await;
                if answer.status != 200 {
                    failures.push(format!("{}: {:?}", answer.status, answer.body));
                    continue;
                }
                if stream {
                    let (content, finish, done) = streamed(&answer);
                    assert!(content.contains(&text), "{content}");
                    assert_eq!(finish.as_deref(), Some("stop"));
                    assert!(done, "the stream ends with [DONE]");
                } else {
                    let body = answer.json();
                    assert_eq!(body["object"], "chat.completion");
                    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
                    assert!(content.contains(&text), "{content}");
                    // The secondary's prices: $0.50 / $1 per million.
                    let usage = &body["usage"];
                    let prompt = usage["prompt_tokens"].as_f64().unwrap();
                    let completion = usage["completion_tokens"].as_f64().unwrap();
                    let expected = (prompt * 0.5 + completion * 1.0) / 1e6;
                    let cost = usage["cost"].as_f64().unwrap();
                    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} client errors: {failures:?}",
        failures.len()
    );
    // Spend is exact: the ledger holds what the Anthropic-shaped secondary billed, token for
    // token, at the secondary's prices, and nothing for the primary's unbilled failures.
    let spend = crate::cost::spend(&weir, "?group_by=model").await;
    let rows = spend["rows"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["model"] == "sim-b")
        .unwrap_or_else(|| panic!("{spend}"));
    let billed = get(secondary.addr, "/sim/stats").await.json()["billed"].clone();
    assert_eq!(row["calls"], 200, "{spend}");
    assert_eq!(
        row["prompt_tokens"], billed["prompt_tokens"],
        "{spend} vs {billed}"
    );
    assert_eq!(
        row["completion_tokens"], billed["completion_tokens"],
        "{spend} vs {billed}"
    );
    let prompt = billed["prompt_tokens"].as_u64().unwrap();
    let completion = billed["completion_tokens"].as_u64().unwrap();
    let expected = prompt * 500_000 + completion * 1_000_000;
    assert_eq!(crate::cost::total_pico(&spend), expected, "{spend}");
    // What the secondary received was Anthropic's Messages API, signed its way.
    let received = sim_requests(&secondary, 1).await;
    let last = &received[0];
    assert_eq!(last["path"], "/v1/messages", "{last}");
    assert_eq!(last["headers"]["anthropic-version"], "2023-06-01", "{last}");
    assert_eq!(last["body"]["system"], "be brief", "{last}");
    assert!(last["body"]["max_tokens"].as_u64().is_some(), "{last}");
}

#[tokio::test]
async fn gemini_and_azure_targets_answer_json_and_streams_in_openai_shape() {
    let upstream = sim(&[]);
    let config = format!(
        "{}{}{}{}{PRICES}",
        target("gemini", &upstream, "gemini", "sim-a", ""),
        target(
            "azure",
            &upstream,
            "azure-openai",
            "sim-b",
            "deployment = \"prod-b\"\napi_key_env = \"AZURE_KEY\""
        ),
        route("g", &["gemini"], ""),
        route("z", &["azure"], ""),
    );
    let path = crate::procs::scratch_config(&config);
    let weir = crate::procs::serve_file_with_env(&path, &[("AZURE_KEY", "az-secret")]);
    for (model, path) in [
        ("g", "/v1beta/models/sim-a:generateContent"),
        ("z", "/openai/deployments/prod-b/chat/completions"),
    ] {
        let answer = post(
            weir.addr,
            "/v1/chat/completions",
            &chat(model, "hello there", false),
        )
        .await;
        assert_eq!(answer.status, 200, "{model}: {:?}", answer.body);
        let body = answer.json();
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.contains("hello there"), "{model}: {content}");
        assert!(
            body["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
            "{body}"
        );
        let received = sim_requests(&upstream, 1).await;
        assert_eq!(received[0]["path"], path, "{model}");

        let answer = post(
            weir.addr,
            "/v1/chat/completions",
            &chat(model, "stream me", true),
        )
        .await;
        assert_eq!(answer.status, 200, "{model}: {:?}", answer.body);
        let (content, finish, done) = streamed(&answer);
        assert!(content.contains("stream me"), "{model}: {content}");
        assert_eq!(finish.as_deref(), Some("stop"), "{model}");
        assert!(done, "{model}: the stream ends with [DONE]");
    }
    let received = sim_requests(&upstream, 4).await;
    let azure = received
        .iter()
        .find(|r| r["path"].as_str().unwrap_or("").starts_with("/openai/"))
        .unwrap();
    assert_eq!(azure["headers"]["api-key"], "az-secret");
    assert!(azure["headers"].get("authorization").is_none(), "{azure}");
    assert_eq!(azure["query"], "api-version=2024-10-21");
    let gemini = received
        .iter()
        .find(|r| r["path"].as_str().unwrap_or("").starts_with("/v1beta/"))
        .unwrap();
    assert!(gemini["body"]["contents"].is_array(), "{gemini}");
    assert_eq!(
        gemini["body"]["systemInstruction"]["parts"][0]["text"],
        "be brief"
    );
}

/// A weather tool, as OpenAI clients declare it.
fn tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}}
    }}])
}

#[tokio::test]
async fn a_tool_round_trip_survives_every_translation() {
    let upstream = sim(&[]);
    let mut config = String::new();
    for kind in ["openai", "anthropic", "gemini", "azure-openai"] {
        let name = kind.replace('-', "_");
        let extra = if kind == "azure-openai" {
            "deployment = \"d\""
        } else {
            ""
        };
        config.push_str(&target(&name, &upstream, kind, "sim-a", extra));
        config.push_str(&route(&name, &[&name], ""));
    }
    let weir = serve(&format!("{config}{PRICES}"));
    for model in ["openai", "anthropic", "gemini", "azure_openai"] {
        for stream in [false, true] {
            let mut request = chat(model, "weather in Paris?", stream);
            request["tools"] = tools();
            let answer = post(weir.addr, "/v1/chat/completions", &request).await;
            assert_eq!(answer.status, 200, "{model}: {:?}", answer.body);
            let (call, finish) = if stream {
                let mut call = json!({"id": "", "name": "", "arguments": ""});
                let mut finish = None;
                for event in answer.events() {
                    if event == "[DONE]" {
                        continue;
                    }
                    let chunk: Value = serde_json::from_str(&event).unwrap();
                    let choice = &chunk["choices"][0];
                    for delta in choice["delta"]["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        if let Some(id) = delta["id"].as_str() {
                            call["id"] = id.into();
                        }
                        if let Some(name) = delta["function"]["name"].as_str() {
                            call["name"] = name.into();
                        }
                        if let Some(piece) = delta["function"]["arguments"].as_str() {
                            let so_far = call["arguments"].as_str().unwrap().to_owned();
                            call["arguments"] = format!("{so_far}{piece}").into();
                        }
                    }
                    if let Some(reason) = choice["finish_reason"].as_str() {
                        finish = Some(reason.to_owned());
                    }
                }
                (call, finish)
            } else {
                let body = answer.json();
                let message = &body["choices"][0]["message"];
                let call = &message["tool_calls"][0];
                let call = json!({
                    "id": call["id"], "name": call["function"]["name"],
                    "arguments": call["function"]["arguments"],
                });
                (
                    call,
                    body["choices"][0]["finish_reason"]
                        .as_str()
                        .map(str::to_owned),
                )
            };
            assert_eq!(
                finish.as_deref(),
                Some("tool_calls"),
                "{model} stream={stream}"
            );
            assert_eq!(call["name"], "get_weather", "{model} stream={stream}");
            let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap())
                .unwrap_or_else(|e| panic!("{model} stream={stream}: {e}: {call}"));
            assert!(args["input"].as_str().unwrap().contains("Paris"), "{args}");
            let id = call["id"].as_str().unwrap().to_owned();
            assert!(!id.is_empty(), "{model} stream={stream}");

            // The tool's result goes back; the model answers with text that used it.
            let follow = json!({"model": model, "tools": tools(), "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{
                    "id": id, "type": "function",
                    "function": {"name": "get_weather", "arguments": call["arguments"]}
                }]},
                {"role": "tool", "tool_call_id": id, "content": "sunny, 21C"}
            ]});
            let answer = post(weir.addr, "/v1/chat/completions", &follow).await;
            assert_eq!(answer.status, 200, "{model}: {:?}", answer.body);
            let body = answer.json();
            let text = body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("");
            assert!(text.contains("sunny, 21C"), "{model}: {body}");
        }
    }
}

#[tokio::test]
async fn a_request_a_target_cannot_carry_is_a_400_naming_the_field_and_nothing_is_sent() {
    let upstream = sim(&[]);
    let config = format!(
        "{}{}{PRICES}",
        target("claude", &upstream, "anthropic", "sim-a", ""),
        route("demo", &["claude"], ""),
    );
    let weir = serve(&config);
    let mut request = chat("demo", "two answers please", false);
    request["n"] = json!(2);
    let answer = post(weir.addr, "/v1/chat/completions", &request).await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("`n`"), "{message}");
    let stats = get(upstream.addr, "/sim/stats").await.json();
    assert_eq!(
        stats["requests"], 0,
        "nothing reached the upstream: {stats}"
    );
}

/// Completion requests a simulator received.
async fn received(sim: &Proc) -> u64 {
    get(sim.addr, "/sim/stats").await.json()["requests"]
        .as_u64()
        .unwrap_or_default()
}

/// A target that cannot carry a request is skipped, not the call's answer: with another
/// target in the chain the request goes there (at once, and without spending one of the
/// route's attempts: nothing was sent), and when that one is down the client gets the
/// retryable 502 listing both, not a 400 blaming its request.
#[tokio::test]
async fn a_target_that_cannot_carry_the_request_is_skipped_for_one_that_can() {
    let claude = sim(&[]);
    let healthy = sim(&[]);
    let down = sim(&["--error-rate", "1.0", "--error-status", "503"]);
    let config = format!(
        "{}{}{}{}{}{PRICES}",
        target("claude", &claude, "anthropic", "sim-a", ""),
        target("healthy", &healthy, "openai", "sim-a", ""),
        target("down", &down, "openai", "sim-a", ""),
        route("skip", &["claude", "healthy"], "max_attempts = 1"),
        route("outage", &["down", "claude"], "max_attempts = 2"),
    );
    let weir = serve(&config);
    let mut request = chat("skip", "two answers please", false);
    request["n"] = json!(2);
    let answer = post(weir.addr, "/v1/chat/completions", &request).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["choices"].as_array().map(Vec::len), Some(2));
    assert_eq!(received(&healthy).await, 1);

    request["model"] = json!("outage");
    let answer = post(weir.addr, "/v1/chat/completions", &request).await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    let error = answer.json()["error"].clone();
    assert_eq!(error["code"], "all_targets_failed", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("down (upstream status 503)"), "{message}");
    assert!(message.contains("`n`"), "{message}");
    assert_eq!(
        received(&claude).await,
        0,
        "nothing reached the Anthropic target"
    );
}

/// One OpenAI-compatible route `demo` on `upstream` (and `embed`, for embeddings, falling
/// back from `broken` to `upstream`).
fn front_config(upstream: &Proc, broken: &Proc) -> String {
    format!(
        "{}{}{}{}{}{}{}[prices.\"sim-embed\"]\ninput_per_mtok = 0.1\noutput_per_mtok = 0\n{PRICES}",
        target("sim", upstream, "openai", "sim-a", ""),
        target("claude", upstream, "anthropic", "sim-a", ""),
        route("mixed", &["claude", "embedder"], ""),
        target("broken", broken, "openai", "sim-embed", ""),
        target("embedder", upstream, "openai", "sim-embed", ""),
        route("demo", &["sim"], ""),
        route(
            "embed",
            &["broken", "embedder"],
            "max_attempts = 2\nretry_budget_percent = 100\ncache = { ttl_ms = 60000 }"
        ),
    )
}

async fn post_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Answer {
    call(
        addr,
        Method::POST,
        path,
        headers,
        Some(Bytes::from(body.to_string())),
    )
    .await
}

#[tokio::test]
async fn the_messages_api_answers_in_anthropics_shape() {
    let upstream = sim(&[]);
    let broken = sim(&["--error-rate", "1.0"]);
    let weir = serve(&front_config(&upstream, &broken));
    let anthropic = [("anthropic-version", "2023-06-01"), ("x-api-key", "unused")];
    let request = json!({
        "model": "demo", "max_tokens": 256, "system": "be brief",
        "messages": [{"role": "user", "content": "hello from claude code"}]
    });
    let answer = post_with(weir.addr, "/v1/messages", &anthropic, &request).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let body = answer.json();
    assert_eq!(body["type"], "message", "{body}");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["id"].as_str().unwrap().starts_with("msg_"), "{body}");
    let text = body["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("hello from claude code"), "{text}");
    assert!(
        body["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );
    assert!(
        body["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );
    // The stages and the upstream saw a chat completion with the system prompt first.
    let sent = &sim_requests(&upstream, 1).await[0]["body"];
    assert_eq!(sent["messages"][0]["role"], "system", "{sent}");

    // Claude Code marks its prompt for Anthropic's cache on every turn: an OpenAI-shaped
    // target never sees the marks (OpenAI may refuse them).
    let marked = json!({
        "model": "demo", "max_tokens": 64,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "cached prompt", "cache_control": {"type": "ephemeral"}}
        ]}]
    });
    let answer = post_with(weir.addr, "/v1/messages", &anthropic, &marked).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let sent = &sim_requests(&upstream, 1).await[0]["body"];
    assert!(!sent.to_string().contains("cache_control"), "{sent}");
    assert_eq!(sent["messages"][0]["role"], "system", "{sent}");

    // The stream: Anthropic's event types, in order, text deltas adding up to the answer.
    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let answer = post_with(weir.addr, "/v1/messages", &anthropic, &streaming).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let events = named_events(&answer);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert!(
        names.contains(&"content_block_start") && names.contains(&"message_delta"),
        "{names:?}"
    );
    let streamed: String = events
        .iter()
        .filter(|(n, d)| n == "content_block_delta" && d["delta"]["type"] == "text_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, text, "the stream says what the JSON answer said");
    let delta = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(
        delta["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{delta}"
    );

    // The request record names the API the client used.
    let admin = weir.admin.unwrap();
    let list = get(admin, "/admin/requests?limit=1").await.json();
    let last = &list["requests"][0];
    assert_eq!(last["endpoint"], "POST /v1/messages", "{last}");

    // count_tokens counts what budgets count.
    let counted = post_with(
        weir.addr,
        "/v1/messages/count_tokens",
        &anthropic,
        &json!({
            "model": "demo", "messages": [{"role": "user", "content": "hello from claude code"}]
        }),
    )
    .await;
    assert_eq!(counted.status, 200, "{:?}", counted.body);
    assert!(counted.json()["input_tokens"].as_u64().unwrap() > 0);
    let counted = post_with(
        weir.addr,
        "/v1/messages/count_tokens",
        &anthropic,
        &json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(counted.status, 404, "{:?}", counted.body);
    assert_eq!(counted.json()["error"]["type"], "not_found_error");

    // Errors in Anthropic's shape: an unknown model, a missing max_tokens.
    let mut unknown = request.clone();
    unknown["model"] = json!("nope");
    let answer = post_with(weir.addr, "/v1/messages", &anthropic, &unknown).await;
    assert_eq!(answer.status, 404, "{:?}", answer.body);
    let body = answer.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error", "{body}");
    let mut invalid = request.clone();
    invalid.as_object_mut().unwrap().remove("max_tokens");
    let answer = post_with(weir.addr, "/v1/messages", &anthropic, &invalid).await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
}

#[tokio::test]
async fn the_responses_api_answers_plain_and_streamed_and_refuses_stored_state() {
    let upstream = sim(&[]);
    let broken = sim(&["--error-rate", "1.0"]);
    let weir = serve(&front_config(&upstream, &broken));
    let request = json!({"model": "demo", "instructions": "be brief", "input": "hello responses"});
    let answer = post(weir.addr, "/v1/responses", &request).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let body = answer.json();
    assert_eq!(body["object"], "response", "{body}");
    assert_eq!(body["status"], "completed");
    let text = body["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("hello responses"), "{text}");
    assert!(
        body["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let answer = post(weir.addr, "/v1/responses", &streaming).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let events = named_events(&answer);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"), "{names:?}");
    assert_eq!(names.last(), Some(&"response.completed"), "{names:?}");
    let streamed: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, text);
    let sequence: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(
        sequence.windows(2).all(|w| w[1] == w[0] + 1),
        "{sequence:?}"
    );
    let completed = &events.last().unwrap().1;
    assert!(
        completed["response"]["usage"]["output_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    let mut stored = request.clone();
    stored["previous_response_id"] = json!("resp_123");
    let answer = post(weir.addr, "/v1/responses", &stored).await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.json()["error"]["param"], "previous_response_id");
}

/// `/v1/embeddings` honours the client's `x-weir-deadline-ms` as chat does: a bad value is a
/// 400, and a deadline shorter than the upstream's answer ends the call with a 504.
#[tokio::test]
async fn embeddings_keep_the_clients_deadline() {
    let slow = sim(&["--latency-ms", "3000"]);
    let weir = serve(&front_config(&slow, &slow));
    let request = json!({"model": "embed", "input": "a tree"});
    let answer = post_with(
        weir.addr,
        "/v1/embeddings",
        &[("x-weir-deadline-ms", "soon")],
        &request,
    )
    .await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "invalid_deadline");
    let started = tokio::time::Instant::now();
    let answer = post_with(
        weir.addr,
        "/v1/embeddings",
        &[("x-weir-deadline-ms", "300")],
        &request,
    )
    .await;
    assert_eq!(answer.status, 504, "{:?}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "deadline_exceeded");
    // The sim answers after 3 s; the client's 300 ms ended it well before (a loaded machine's
    // bound, not a timing test).
    assert!(started.elapsed() < std::time::Duration::from_millis(2500));
}

#[tokio::test]
async fn embeddings_fall_back_hit_the_cache_and_cost_and_models_are_retrievable() {
    let upstream = sim(&[]);
    let broken = sim(&["--error-rate", "1.0"]);
    let weir = serve(&front_config(&upstream, &broken));
    let request = json!({"model": "embed", "input": ["a tree", "a river"]});
    let answer = post(weir.addr, "/v1/embeddings", &request).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.headers["x-weir-cache"], "miss");
    let body = answer.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 2, "{body}");
    assert!(body["data"][0]["embedding"].as_array().unwrap().len() > 8);
    let tokens = body["usage"]["prompt_tokens"].as_f64().unwrap();
    let cost = body["usage"]["cost"].as_f64().unwrap();
    assert!(
        (cost - tokens * 0.1 / 1e6).abs() < 1e-12,
        "{cost} for {tokens} tokens"
    );
    let broken_stats = get(broken.addr, "/sim/stats").await.json();
    assert_eq!(
        broken_stats["requests"], 1,
        "the first target was tried: {broken_stats}"
    );

    let again = post(weir.addr, "/v1/embeddings", &request).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.headers["x-weir-cache"], "hit");
    assert_eq!(
        again.json()["data"],
        body["data"],
        "the hit is the same vectors"
    );
    let stats = get(upstream.addr, "/sim/stats").await.json();
    assert_eq!(
        stats["embeddings"], 1,
        "the hit never reached the upstream: {stats}"
    );

    let model = get(weir.addr, "/v1/models/demo").await;
    assert_eq!(model.status, 200);
    assert_eq!(model.json()["id"], "demo");
    assert_eq!(model.json()["object"], "model");
    let missing = get(weir.addr, "/v1/models/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn an_anthropic_overload_529_falls_back_and_its_message_stays_with_the_operator() {
    let overloaded = sim(&["--error-rate", "1.0", "--error-status", "529"]);
    let healthy = sim(&[]);
    let config = format!(
        "{}{}{}{}{PRICES}",
        target("claude", &overloaded, "anthropic", "sim-a", ""),
        target("backup", &healthy, "openai", "sim-b", ""),
        route(
            "demo",
            &["claude", "backup"],
            "max_attempts = 2\nretry_budget_percent = 100"
        ),
        route("alone", &["claude"], "max_attempts = 1"),
    );
    let weir = serve(&config);
    let answer = post(
        weir.addr,
        "/v1/chat/completions",
        &chat("demo", "busy?", false),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // The overloaded target was tried first and answered 529 in Anthropic's shape.
    let tried = sim_requests(&overloaded, 1).await;
    assert_eq!(tried[0]["path"], "/v1/messages");
    // Alone, the 529 is retryable but nothing else serves: the client gets a 5xx of weir's,
    // never Anthropic's error body.
    let answer = post(
        weir.addr,
        "/v1/chat/completions",
        &chat("alone", "busy?", false),
    )
    .await;
    assert!(answer.status.is_server_error(), "{}", answer.status);
    let body = answer.json();
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(
        body.get("type").is_none(),
        "an OpenAI error, not Anthropic's: {body}"
    );
}

#[tokio::test]
async fn anthropic_prompt_cache_reads_and_writes_are_billed_at_their_own_prices() {
    // Every answer reports 1,000 prompt tokens: 600 read from Anthropic's prompt cache, 300
    // written to it, 100 fresh (Anthropic's `input_tokens` excludes both).
    let upstream = sim(&[
        "--usage-prompt-tokens",
        "1000",
        "--usage-cached-tokens",
        "600",
        "--usage-cache-write-tokens",
        "300",
    ]);
    // Cache reads at $0.05/M; cache writes left to their default, 1.25 × the $0.50/M input.
    let prices = "[prices.\"sim-c\"]\ninput_per_mtok = 0.5\ncached_input_per_mtok = 0.05\n\
                  output_per_mtok = 1.0\n";
    let config = format!(
        "{}{}{prices}",
        target("claude", &upstream, "anthropic", "sim-c", ""),
        route("demo", &["claude"], ""),
    );
    let weir = serve(&config);
    let mut completions = 0;
    for stream in [false, true] {
        let answer = post(
            weir.addr,
            "/v1/chat/completions",
            &chat("demo", "a long, cached prompt", stream),
        )
        .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        if !stream {
            let body = answer.json();
            let usage = &body["usage"];
            assert_eq!(usage["prompt_tokens"], 1000, "{body}");
            assert_eq!(
                usage["prompt_tokens_details"]["cached_tokens"], 600,
                "{body}"
            );
            let completion = usage["completion_tokens"].as_u64().unwrap();
            completions += completion;
            // 100 × $0.50/M + 600 × $0.05/M + 300 × $0.625/M + completion × $1/M.
            let expected = (100.0 * 0.5 + 600.0 * 0.05 + 300.0 * 0.625 + completion as f64) / 1e6;
            let cost = usage["cost"].as_f64().unwrap();
            assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
        }
    }
    // The ledger holds both calls at the same split; the stream's completion tokens are what
    // the upstream billed beyond the JSON answer's.
    let spend = crate::cost::spend(&weir, "?group_by=model").await;
    let billed = get(upstream.addr, "/sim/stats").await.json()["billed"].clone();
    let streamed = billed["completion_tokens"].as_u64().unwrap() - completions;
    let prompt_pico = 100 * 500_000 + 600 * 50_000 + 300 * 625_000;
    let expected = 2 * prompt_pico + (completions + streamed) * 1_000_000;
    assert_eq!(crate::cost::total_pico(&spend), expected, "{spend}");
    // What Anthropic's answer said reached weir as Anthropic's fields.
    let received = sim_requests(&upstream, 1).await;
    assert_eq!(received[0]["path"], "/v1/messages", "{}", received[0]);
}
