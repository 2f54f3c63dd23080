//! The wire dialects (Anthropic, Gemini, Azure OpenAI) seen from a client: each answers in its
//! provider's shape from the one OpenAI path, with its faults, and the ring shows the request
//! as it was sent.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use weir::sim::{Faults, SimConfig};

use crate::sim::client::{Answer, TestSim};

/// A simulator started with `faults`.
async fn with_faults(faults: Faults) -> TestSim {
    TestSim::start(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .await
}

/// POSTs `body` to `path` with one extra header and expects a response head.
async fn post(sim: &TestSim, path: &str, header: (&str, &str), body: &Value) -> Answer {
    sim.send(Method::POST, path, &[header], Some(body))
        .await
        .expect("exchange succeeds")
}

/// An Anthropic Messages request saying `text`.
fn anthropic(text: &str) -> Value {
    json!({"model": "claude-test", "max_tokens": 100, "system": "be brief",
        "messages": [{"role": "user", "content": text}]})
}

/// A Gemini request saying `text`.
fn gemini(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

/// The (event name, data) pairs of an Anthropic SSE body.
fn anthropic_events(answer: &Answer) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(&answer.body).expect("utf-8 body");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| {
            let (name, data) = event.split_once('\n').expect("two lines");
            let name = name.strip_prefix("event: ").expect("event: line");
            let data = data.strip_prefix("data: ").expect("data: line");
            (
                name.to_owned(),
                serde_json::from_str(data).expect("JSON data"),
            )
        })
        .collect()
}

/// The JSON events of a Gemini SSE body.
fn gemini_events(answer: &Answer) -> Vec<Value> {
    answer
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).expect("JSON event"))
        .collect()
}

/// The last request the simulator recorded.
async fn last_request(sim: &TestSim) -> Value {
    sim.get("/sim/requests?last=1").await.json()[0].clone()
}

#[tokio::test]
async fn anthropic_json_answer_and_the_request_as_received() {
    let sim = TestSim::plain().await;
    let a = post(
        &sim,
        "/v1/messages",
        ("x-api-key", "sk-ant-key"),
        &anthropic("hello there"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let message = a.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-test");
    assert_eq!(message["stop_reason"], "end_turn");
    assert!(
        message["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msg_"))
    );
    let text = message["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("sim reply to: hello there. "), "{text}");
    let output = message["usage"]["output_tokens"].as_u64();
    assert!(output.is_some_and(|n| n >= 1), "{message}");
    let seen = last_request(&sim).await;
    assert_eq!(seen["path"], "/v1/messages");
    assert_eq!(seen["headers"]["x-api-key"], "sk-ant-key");
    assert_eq!(seen["body"], anthropic("hello there"), "recorded as sent");
    let stats = sim.get("/sim/stats").await.json();
    assert_eq!(stats["chat_completions"], 1);
    assert_eq!(stats["billed"]["completion_tokens"], output.unwrap_or(0));
    sim.stop().await;
}

#[tokio::test]
async fn anthropic_stream_event_by_event_ends_in_message_stop() {
    let sim = TestSim::plain().await;
    let mut body = anthropic("stream this");
    body["stream"] = json!(true);
    let a = post(&sim, "/v1/messages", ("x-api-key", "k"), &body).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "text/event-stream");
    assert!(a.body_error.is_none());
    let events = anthropic_events(&a);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let n = names.len();
    assert!(n > 6, "{names:?}");
    assert_eq!(names[..2], ["message_start", "content_block_start"]);
    assert!(names[2..n - 3].iter().all(|e| *e == "content_block_delta"));
    assert_eq!(
        names[n - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], *name, "the data names its event");
    }
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert!(text.starts_with("sim reply to: stream this. "), "{text}");
    let delta = &events[n - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    let output = delta["usage"]["output_tokens"].as_u64();
    assert_eq!(output, Some(n as u64 - 5), "one token per text delta");
    let stats = sim.get("/sim/stats").await.json();
    assert_eq!(stats["streams"], 1);
    assert_eq!(stats["billed"]["completion_tokens"], n - 5);
    sim.stop().await;
}

#[tokio::test]
async fn anthropic_overload_is_a_529_overloaded_error() {
    let sim = with_faults(Faults {
        error_rate: 1.0,
        error_status: 529,
        ..Faults::default()
    })
    .await;
    let a = post(&sim, "/v1/messages", ("x-api-key", "k"), &anthropic("x")).await;
    assert_eq!(a.status.as_u16(), 529);
    let body = a.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert!(body["error"]["message"].is_string());
    assert_eq!(sim.get("/sim/stats").await.json()["faults"]["errors"], 1);
    sim.stop().await;
}

#[tokio::test]
async fn anthropic_rate_limits_keep_retry_after_and_401s_quote_the_x_api_key() {
    let sim = with_faults(Faults {
        rate_limit_rate: 1.0,
        retry_after_s: 3,
        ..Faults::default()
    })
    .await;
    let a = post(&sim, "/v1/messages", ("x-api-key", "k"), &anthropic("x")).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "3");
    assert_eq!(a.json()["error"]["type"], "rate_limit_error");
    let faults = json!({"error_rate": 1.0, "error_status": 401});
    assert_eq!(
        sim.post("/sim/faults", &faults).await.status,
        StatusCode::OK
    );
    let key = ("x-api-key", "sk-ant-upstream-secret-9z8y");
    let a = post(&sim, "/v1/messages", key, &anthropic("x")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let error = &a.json()["error"];
    assert_eq!(error["type"], "authentication_error");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("sk-****") && message.contains("9z8y"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    sim.stop().await;
}

#[tokio::test]
async fn anthropic_cut_stream_has_no_message_stop() {
    let sim = with_faults(Faults {
        stream_cut_after: Some(2),
        ..Faults::default()
    })
    .await;
    let mut body = anthropic("cut me please, this reply is long");
    body["stream"] = json!(true);
    let a = post(&sim, "/v1/messages", ("x-api-key", "k"), &body).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body_error.is_some(), "the body must end in an error");
    let names: Vec<String> = anthropic_events(&a).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta"
        ]
    );
    assert_eq!(
        sim.get("/sim/stats").await.json()["faults"]["stream_cuts"],
        1
    );
    sim.stop().await;
}

#[tokio::test]
async fn anthropic_untranslatable_request_is_a_400_and_count_tokens_counts() {
    let sim = TestSim::plain().await;
    let mut body = anthropic("x");
    body["top_k"] = json!(5);
    let a = post(&sim, "/v1/messages", ("x-api-key", "k"), &body).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let error = a.json();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("top_k"))
    );
    let count = json!({"model": "claude-test", "system": "be brief",
        "messages": [{"role": "user", "content": "hello there"}]});
    let counted = post(
        &sim,
        "/v1/messages/count_tokens",
        ("x-api-key", "k"),
        &count,
    )
    .await;
    assert_eq!(counted.status, StatusCode::OK);
    let input_tokens = counted.json()["input_tokens"].as_u64();
    let answered = post(
        &sim,
        "/v1/messages",
        ("x-api-key", "k"),
        &anthropic("hello there"),
    )
    .await;
    assert_eq!(
        answered.json()["usage"]["input_tokens"].as_u64(),
        input_tokens
    );
    assert!(input_tokens.is_some_and(|n| n > 0));
    sim.stop().await;
}

#[tokio::test]
async fn anthropic_tools_answer_a_tool_use_block_then_quote_the_result() {
    let sim = TestSim::plain().await;
    let tools = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
    let mut body = anthropic("find \"it\"");
    body["tools"] = tools.clone();
    let a = post(&sim, "/v1/messages", ("x-api-key", "k"), &body)
        .await
        .json();
    assert_eq!(a["stop_reason"], "tool_use");
    let block = &a["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "lookup");
    assert_eq!(block["input"], json!({"input": "find \"it\""}));
    let id = block["id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("call_"), "{id}");

    body["stream"] = json!(true);
    let streamed = post(&sim, "/v1/messages", ("x-api-key", "k"), &body).await;
    let events = anthropic_events(&streamed);
    let start = events
        .iter()
        .find(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d["content_block"].clone());
    assert_eq!(
        start,
        Some(json!({"type": "tool_use", "id": id, "name": "lookup", "input": {}}))
    );
    let json: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json).ok(),
        Some(block["input"].clone())
    );
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("message_stop"));

    let follow_up = json!({"model": "claude-test", "max_tokens": 100, "tools": tools,
        "messages": [
            {"role": "user", "content": "find \"it\""},
            {"role": "assistant", "content": [block]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": id, "content": "found it at 42"}]}]});
    let a = post(&sim, "/v1/messages", ("x-api-key", "k"), &follow_up)
        .await
        .json();
    assert_eq!(a["stop_reason"], "end_turn");
    let text = a["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("tool said: found it at 42. "), "{text}");
    sim.stop().await;
}

#[tokio::test]
async fn gemini_json_and_stream_from_the_model_in_the_path() {
    let sim = TestSim::plain().await;
    let key = ("x-goog-api-key", "g-key");
    let path = "/v1beta/models/gemini-test:generateContent";
    let a = post(&sim, path, key, &gemini("hello gemini")).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = a.json();
    assert_eq!(a["modelVersion"], "gemini-test");
    let candidate = &a["candidates"][0];
    assert_eq!(candidate["finishReason"], "STOP");
    let text = candidate["content"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.starts_with("sim reply to: hello gemini. "), "{text}");
    let seen = last_request(&sim).await;
    assert_eq!(seen["path"], path);
    assert_eq!(seen["headers"]["x-goog-api-key"], "g-key");

    let stream_path = "/v1beta/models/gemini-test:streamGenerateContent?alt=sse";
    let s = post(&sim, stream_path, key, &gemini("hello gemini")).await;
    assert_eq!(s.status, StatusCode::OK);
    assert!(s.body_error.is_none());
    let events = gemini_events(&s);
    assert!(!s.events().iter().any(|e| e == "[DONE]"));
    let streamed: String = events
        .iter()
        .filter_map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(streamed, text, "the stream says what the JSON answer says");
    let finishes = events
        .iter()
        .filter(|e| e["candidates"][0]["finishReason"] == "STOP")
        .count();
    assert_eq!(finishes, 1);
    let usage = &events.last().expect("events")["usageMetadata"];
    assert_eq!(usage, &a["usageMetadata"]);
    assert_eq!(last_request(&sim).await["query"], "alt=sse");

    let no_sse = "/v1beta/models/gemini-test:streamGenerateContent";
    let bad = post(&sim, no_sse, key, &gemini("x")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["status"], "INVALID_ARGUMENT");
    sim.stop().await;
}

#[tokio::test]
async fn gemini_errors_are_google_shaped() {
    let sim = with_faults(Faults {
        error_rate: 1.0,
        error_status: 503,
        ..Faults::default()
    })
    .await;
    let path = "/v1beta/models/gemini-test:generateContent";
    let a = post(&sim, path, ("x-goog-api-key", "k"), &gemini("x")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    let error = &a.json()["error"];
    assert_eq!(error["code"], 503);
    assert_eq!(error["status"], "UNAVAILABLE");
    sim.stop().await;
}

#[tokio::test]
async fn gemini_tools_answer_a_function_call_in_json_and_stream() {
    let sim = TestSim::plain().await;
    let key = ("x-goog-api-key", "k");
    let mut body = gemini("weather in Oslo");
    body["tools"] = json!([{"functionDeclarations": [{"name": "get_weather"}]}]);
    let path = "/v1beta/models/gemini-test:generateContent";
    let a = post(&sim, path, key, &body).await.json();
    let call = &a["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["args"], json!({"input": "weather in Oslo"}));

    let stream_path = "/v1beta/models/gemini-test:streamGenerateContent?alt=sse";
    let s = post(&sim, stream_path, key, &body).await;
    let calls: Vec<Value> = gemini_events(&s)
        .iter()
        .filter_map(|e| {
            let part = &e["candidates"][0]["content"]["parts"][0];
            part.get("functionCall").cloned()
        })
        .collect();
    assert_eq!(calls, std::slice::from_ref(call), "one whole call");
    sim.stop().await;
}

#[tokio::test]
async fn azure_needs_api_version_and_defaults_the_model_to_the_deployment() {
    let sim = TestSim::plain().await;
    let key = ("api-key", "az-key");
    let body = json!({"messages": [{"role": "user", "content": "hello azure"}]});
    let path = "/openai/deployments/prod-4o/chat/completions";
    let a = post(&sim, &format!("{path}?api-version=2024-10-21"), key, &body).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = a.json();
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["model"], "prod-4o");
    let content = a["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(
        content.starts_with("sim reply to: hello azure. "),
        "{content}"
    );
    let seen = last_request(&sim).await;
    assert_eq!(seen["path"], path);
    assert_eq!(seen["query"], "api-version=2024-10-21");
    assert_eq!(seen["headers"]["api-key"], "az-key");
    assert_eq!(
        seen["body"], body,
        "recorded as sent, without the default model"
    );

    let missing = post(&sim, path, key, &body).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json(),
        json!({"error": {"code": "404", "message": "Resource not found"}})
    );
    let embeddings = "/openai/deployments/embed/embeddings?api-version=2024-10-21";
    let e = post(&sim, embeddings, key, &json!({"input": "x"})).await;
    assert_eq!(e.status, StatusCode::OK);
    assert!(e.json()["data"][0]["embedding"].is_array());
    let stats = sim.get("/sim/stats").await.json();
    assert_eq!(
        (&stats["chat_completions"], &stats["embeddings"]),
        (&json!(1), &json!(1))
    );
    sim.stop().await;
}

#[tokio::test]
async fn azure_tools_and_its_injected_401_quotes_the_api_key() {
    let sim = TestSim::plain().await;
    let key = ("api-key", "az-upstream-secret-4k3j");
    let body = json!({"messages": [{"role": "user", "content": "call it"}],
        "tools": [{"type": "function", "function": {"name": "do_it"}}]});
    let path = "/openai/deployments/d/chat/completions?api-version=2024-10-21";
    let a = post(&sim, path, key, &body).await.json();
    let choice = &a["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "do_it");
    assert_eq!(call["function"]["arguments"], r#"{"input":"call it"}"#);
    let faults = json!({"error_rate": 1.0, "error_status": 401});
    assert_eq!(
        sim.post("/sim/faults", &faults).await.status,
        StatusCode::OK
    );
    let denied = post(&sim, path, key, &body).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    let message = denied.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("4k3j") && !message.contains("secret"),
        "{message}"
    );
    sim.stop().await;
}
