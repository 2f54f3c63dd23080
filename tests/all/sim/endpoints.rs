//! The OpenAI endpoints without faults: shapes, determinism, streaming, limits.

use http::StatusCode;
use serde_json::{Value, json};
use weir::sim::SimConfig;

use crate::sim::client::{TestSim, chat};

#[tokio::test]
async fn json_completion_is_openai_shaped_and_deterministic() {
    let sim = TestSim::plain().await;
    let a = sim.post("/v1/chat/completions", &chat("hello there")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "application/json");
    let a = a.json();
    assert!(
        a["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert_eq!(a["object"], "chat.completion");
    assert!(a["created"].as_u64().is_some_and(|t| t > 1_600_000_000));
    assert_eq!(a["model"], "test-model");
    let choice = &a["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let content = choice["message"]["content"].as_str().expect("content");
    assert!(
        content.starts_with("sim reply to: hello there. "),
        "{content}"
    );
    let usage = &a["usage"];
    let (p, c, t) = (
        &usage["prompt_tokens"],
        &usage["completion_tokens"],
        &usage["total_tokens"],
    );
    let (p, c, t) = (p.as_u64(), c.as_u64(), t.as_u64());
    assert!(p.is_some_and(|p| p >= 1) && c.is_some_and(|c| c >= 1));
    assert_eq!(t, p.zip(c).map(|(p, c)| p + c));

    let again = sim
        .post("/v1/chat/completions", &chat("hello there"))
        .await
        .json();
    assert_eq!(again["choices"][0]["message"]["content"], content);
    assert_ne!(again["id"], a["id"], "ids are unique per response");
    let other = sim
        .post("/v1/chat/completions", &chat("hello there!"))
        .await
        .json();
    assert_ne!(other["choices"][0]["message"]["content"], content);
    sim.stop().await;
}

#[tokio::test]
async fn content_parts_and_model_override() {
    let sim = TestSim::start(SimConfig {
        model_name: Some("forced-model".into()),
        ..SimConfig::default()
    })
    .await;
    let body = json!({"model": "asked", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "part one"}]}
    ]});
    let a = sim.post("/v1/chat/completions", &body).await.json();
    assert_eq!(a["model"], "forced-model");
    let content = a["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(content.starts_with("sim reply to: part one. "), "{content}");
    sim.stop().await;
}

#[tokio::test]
async fn max_tokens_truncates_with_length() {
    let sim = TestSim::plain().await;
    let mut body = chat("a long question about many things");
    body["max_tokens"] = json!(3);
    let a = sim.post("/v1/chat/completions", &body).await.json();
    assert_eq!(a["choices"][0]["finish_reason"], "length");
    assert_eq!(a["usage"]["completion_tokens"], 3);
    assert_eq!(a["choices"][0]["message"]["content"], "sim reply");
    sim.stop().await;
}

/// Parses the events of a stream into JSON chunks (all but the final `[DONE]`).
fn chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).expect("chunk is JSON"))
        .collect()
}

#[tokio::test]
async fn stream_matches_the_json_answer() {
    let sim = TestSim::plain().await;
    let whole = sim
        .post("/v1/chat/completions", &chat("stream me"))
        .await
        .json();
    let mut body = chat("stream me");
    body["stream"] = json!(true);
    let s = sim.post("/v1/chat/completions", &body).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.headers["content-type"], "text/event-stream");
    assert_eq!(s.body_error, None);
    let events = s.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = chunks(&events);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: Vec<&str> = chunks[1..chunks.len() - 1]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .expect("content chunk")
        })
        .collect();
    assert!(content.len() > 3, "content is split into several chunks");
    assert_eq!(
        content.concat(),
        whole["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("?")
    );
    assert_eq!(
        Some(content.len() as u64),
        whole["usage"]["completion_tokens"].as_u64()
    );
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    sim.stop().await;
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_a_usage_chunk() {
    let sim = TestSim::plain().await;
    let whole = sim
        .post("/v1/chat/completions", &chat("count me"))
        .await
        .json();
    let mut body = chat("count me");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = sim.post("/v1/chat/completions", &body).await.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = chunks(&events);
    let usage_chunk = &chunks[chunks.len() - 1];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], whole["usage"]);
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["usage"].is_null())
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    sim.stop().await;
}

#[tokio::test]
async fn stream_pacing_follows_ttft_and_inter_token() {
    let sim = TestSim::start(SimConfig {
        ttft_ms: 100,
        inter_token_ms: 10,
        ..SimConfig::default()
    })
    .await;
    let mut body = chat("pace");
    body["stream"] = json!(true);
    let started = tokio::time::Instant::now();
    let events = sim.post("/v1/chat/completions", &body).await.events();
    let content_chunks = events.len() as u64 - 3;
    let floor = 100 + 10 * (content_chunks - 1);
    let elapsed = started.elapsed().as_millis() as u64;
    assert!(
        elapsed >= floor,
        "stream took {elapsed} ms, expected at least {floor} ms"
    );
    sim.stop().await;
}

#[tokio::test]
async fn malformed_json_is_an_openai_400() {
    let sim = TestSim::plain().await;
    let request = http::Request::post("/v1/chat/completions")
        .header("host", "sim")
        .body(crate::sim::client::full(bytes::Bytes::from_static(
            b"{\"messages\": [",
        )))
        .expect("request");
    let a = crate::sim::client::exchange(sim.addr, request, crate::sim::client::TIMEOUT)
        .await
        .expect("answer");
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let error = &a.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["message"].is_string() && error["code"].is_string());
    sim.stop().await;
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors() {
    let sim = TestSim::plain().await;
    let body = json!({"model": "emb", "input": ["Hello  World", "hello world", "goodbye"]});
    let a = sim.post("/v1/embeddings", &body).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = a.json();
    assert_eq!(a["object"], "list");
    assert_eq!(a["model"], "emb");
    let vectors: Vec<Vec<f64>> = a["data"]
        .as_array()
        .expect("data")
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            let v = d["embedding"].as_array().expect("vector");
            v.iter().map(|x| x.as_f64().expect("number")).collect()
        })
        .collect();
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        assert_eq!(v.len(), 64);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }
    assert_eq!(vectors[0], vectors[1], "case and spacing do not matter");
    assert_ne!(vectors[0], vectors[2]);
    assert!(a["usage"]["prompt_tokens"].as_u64().is_some_and(|t| t >= 1));
    assert_eq!(a["usage"]["total_tokens"], a["usage"]["prompt_tokens"]);

    let again = sim
        .post("/v1/embeddings", &json!({"input": "goodbye"}))
        .await
        .json();
    let v: Vec<f64> = again["data"][0]["embedding"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    assert_eq!(v, vectors[2], "same text, same vector across requests");

    let sized = sim
        .post("/v1/embeddings", &json!({"input": "x", "dimensions": 16}))
        .await
        .json();
    assert_eq!(
        sized["data"][0]["embedding"].as_array().map(Vec::len),
        Some(16)
    );
    let too_big = sim
        .post("/v1/embeddings", &json!({"input": "x", "dimensions": 4097}))
        .await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);
    sim.stop().await;
}

#[tokio::test]
async fn models_healthz_and_unknown_paths() {
    let sim = TestSim::plain().await;
    let models = sim.get("/v1/models").await;
    assert_eq!(models.status, StatusCode::OK);
    let models = models.json();
    assert_eq!(models["object"], "list");
    assert!(models["data"].as_array().is_some_and(|d| !d.is_empty()));
    assert_eq!(sim.get("/healthz").await.status, StatusCode::OK);
    let missing = sim.get("/v1/nothing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["type"], "invalid_request_error");
    let wrong_method = sim.get("/v1/chat/completions").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    sim.stop().await;
}

#[tokio::test]
async fn oversized_body_is_413_before_it_is_read() {
    use http_body_util::BodyExt;
    let sim = TestSim::plain().await;
    // Declares one byte more than the bound and never sends it: the answer must not wait.
    let never = http_body_util::StreamBody::new(futures_util::stream::pending::<
        Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >());
    let request = http::Request::post("/v1/chat/completions")
        .header("host", "sim")
        .header("content-length", weir::sim::MAX_BODY_BYTES + 1)
        .body(never.boxed())
        .expect("request");
    let a = crate::sim::client::exchange(sim.addr, request, crate::sim::client::TIMEOUT)
        .await
        .expect("answer");
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.json()["error"]["code"], "request_too_large");
    sim.stop().await;
}
