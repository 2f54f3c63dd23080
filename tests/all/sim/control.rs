//! The `/sim/*` control plane: stats, the request ring and runtime faults.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use weir::sim::Faults;

use crate::sim::client::{TestSim, chat};

#[tokio::test]
async fn stats_count_requests_by_kind_and_reset_zeroes_them() {
    let sim = TestSim::plain().await;
    let mut answers = Vec::new();
    for text in ["a", "b"] {
        answers.push(sim.post("/v1/chat/completions", &chat(text)).await.json());
    }
    let mut stream = chat("c");
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let streamed = sim.post("/v1/chat/completions", &stream).await;
    sim.post("/v1/embeddings", &json!({"input": "d"})).await;
    sim.get("/v1/models").await;
    sim.get("/sim/faults").await;
    let stats = sim.get("/sim/stats").await.json();
    // Billed: what each answer's usage reported (the stream's in its usage chunk).
    let usage = streamed
        .events()
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find(|c| c["usage"].is_object())
        .expect("a usage chunk")["usage"]
        .clone();
    let (mut prompt, mut completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    for answer in &answers {
        prompt += answer["usage"]["prompt_tokens"].as_u64().unwrap();
        completion += answer["usage"]["completion_tokens"].as_u64().unwrap();
    }
    let expected = json!({
        "requests": 4, "chat_completions": 3, "embeddings": 1, "searches": 0, "streams": 1,
        "faults": {"errors": 0, "rate_limited": 0, "hangs": 0, "resets": 0, "stream_cuts": 0},
        "billed": {"requests": 4, "prompt_tokens": prompt, "completion_tokens": completion,
                   "embedding_tokens": 1}
    });
    assert_eq!(stats, expected);

    assert_eq!(
        sim.post("/sim/reset", &json!({})).await.status,
        StatusCode::OK
    );
    let stats = sim.get("/sim/stats").await.json();
    assert_eq!(stats["requests"], 0);
    assert_eq!(stats["chat_completions"], 0);
    assert_eq!(stats["billed"]["embedding_tokens"], 0);
    assert_eq!(sim.get("/sim/requests").await.json(), json!([]));
    sim.stop().await;
}

#[tokio::test]
async fn requests_ring_shows_what_reached_the_upstream() {
    let sim = TestSim::plain().await;
    let headers = [
        ("authorization", "Bearer sk-test"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("x-request-id", "req-42"),
    ];
    for text in ["first", "second", "third"] {
        let body = chat(text);
        let a = sim
            .send(Method::POST, "/v1/chat/completions", &headers, Some(&body))
            .await
            .expect("answer");
        assert_eq!(a.status, StatusCode::OK);
    }
    let last_two = sim.get("/sim/requests?last=2").await.json();
    let entries = last_two.as_array().expect("array");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["body"], chat("second"));
    assert_eq!(entries[1]["body"], chat("third"), "newest last");
    let newest = &entries[1];
    assert_eq!(newest["path"], "/v1/chat/completions");
    assert_eq!(newest["headers"]["authorization"], "Bearer sk-test");
    assert_eq!(newest["headers"]["traceparent"], headers[1].1);
    assert_eq!(newest["headers"]["x-request-id"], "req-42");
    assert_eq!(newest["headers"]["content-type"], "application/json");

    let all = sim.get("/sim/requests").await.json();
    assert_eq!(
        all.as_array().map(Vec::len),
        Some(3),
        "control requests are not recorded"
    );
    let bad = sim.get("/sim/requests?last=x").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    sim.stop().await;
}

#[tokio::test]
async fn faults_are_replaced_whole_at_runtime() {
    let sim = TestSim::plain().await;
    assert_eq!(
        sim.get("/sim/faults").await.json(),
        serde_json::to_value(Faults::default()).expect("json")
    );

    let full = json!({
        "error_rate": 0.5, "error_status": 502, "error_billed_tokens": 9, "latency_ms": 1, "jitter_ms": 2,
        "hang_rate": 0.0, "reset_rate": 0.0, "rate_limit_rate": 0.25, "retry_after_s": 3,
        "stream_cut_after": 4
    });
    let set = sim.post("/sim/faults", &full).await;
    assert_eq!(set.status, StatusCode::OK);
    assert_eq!(set.json(), full);
    assert_eq!(sim.get("/sim/faults").await.json(), full);

    // Omitted fields go back to "no fault".
    let partial = sim
        .post("/sim/faults", &json!({"error_rate": 1.0}))
        .await
        .json();
    let expected = Faults {
        error_rate: 1.0,
        ..Faults::default()
    };
    let expected: Value = serde_json::to_value(expected).expect("json");
    assert_eq!(partial, expected);
    assert_eq!(sim.get("/sim/faults").await.json(), expected);
    let failing = sim.post("/v1/chat/completions", &chat("x")).await;
    assert_eq!(failing.status, StatusCode::INTERNAL_SERVER_ERROR);

    // Unknown or out-of-range fields are rejected and change nothing.
    for bad in [
        json!({"eror_rate": 0.1}),
        json!({"hang_rate": 2.0}),
        json!({"error_status": 204}),
    ] {
        let answer = sim.post("/sim/faults", &bad).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
    }
    assert_eq!(sim.get("/sim/faults").await.json(), expected);

    sim.post("/sim/faults", &json!({})).await;
    assert_eq!(
        sim.post("/v1/chat/completions", &chat("x")).await.status,
        StatusCode::OK
    );
    sim.stop().await;
}

/// What `/sim/stats` says was billed.
async fn billed(sim: &TestSim) -> Value {
    sim.get("/sim/stats").await.json()["billed"].clone()
}

#[tokio::test]
async fn the_sim_bills_like_a_provider() {
    // A non-streamed request is billed in full once accepted, even if its client leaves
    // during the latency.
    let sim = TestSim::start(weir::sim::SimConfig {
        faults: Faults {
            latency_ms: 2000,
            ..Faults::default()
        },
        ..weir::sim::SimConfig::default()
    })
    .await;
    let mut body = chat("who pays for this");
    body["n"] = json!(2);
    let left = sim.send(Method::POST, "/v1/chat/completions", &[], Some(&body));
    let left = tokio::time::timeout(std::time::Duration::from_millis(300), left).await;
    assert!(left.is_err(), "the client left before the answer");
    let seen = crate::wait::until("the request to be billed", || async {
        let billed = billed(&sim).await;
        crate::wait::check(billed["requests"] == 1, &billed).map(|_| billed)
    })
    .await;
    // The same request answered: its usage is what was billed, both choices included.
    sim.post("/sim/faults", &json!({})).await;
    let answer = sim.post("/v1/chat/completions", &body).await.json();
    assert_eq!(answer["choices"].as_array().map(Vec::len), Some(2));
    let usage = &answer["usage"];
    assert_eq!(seen["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(seen["completion_tokens"], usage["completion_tokens"]);
    sim.stop().await;

    // A stream is billed its prompt and the content chunks it sent; a refused request and an
    // error bill nothing, unless the error says it billed (`error_billed_tokens`).
    let sim = TestSim::start(weir::sim::SimConfig {
        faults: Faults {
            stream_cut_after: Some(3),
            ..Faults::default()
        },
        ..weir::sim::SimConfig::default()
    })
    .await;
    let mut stream = chat("a long story about rivers and the sea");
    stream["stream"] = json!(true);
    sim.send(Method::POST, "/v1/chat/completions", &[], Some(&stream))
        .await
        .expect("a cut stream still has its head");
    sim.post("/sim/faults", &json!({})).await;
    let whole = sim
        .post(
            "/v1/chat/completions",
            &chat("a long story about rivers and the sea"),
        )
        .await
        .json();
    let (prompt, completion) = (
        whole["usage"]["prompt_tokens"].as_u64().unwrap(),
        whole["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    assert!(completion > 3, "the cut stream had more to say");
    let expected = json!({"requests": 2, "prompt_tokens": 2 * prompt, "completion_tokens": 3 + completion,
              "embedding_tokens": 0});
    assert_eq!(billed(&sim).await, expected);
    sim.post("/sim/reset", &json!({})).await;
    sim.post("/v1/chat/completions", &json!({"messages": []}))
        .await;
    sim.post("/sim/faults", &json!({"error_rate": 1.0})).await;
    sim.post("/v1/chat/completions", &chat("x")).await;
    assert_eq!(
        billed(&sim).await,
        json!({"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "embedding_tokens": 0})
    );
    sim.post(
        "/sim/faults",
        &json!({"error_rate": 1.0, "error_billed_tokens": 7}),
    )
    .await;
    sim.post("/v1/chat/completions", &chat("x")).await;
    assert_eq!(
        billed(&sim).await,
        json!({"requests": 1, "prompt_tokens": 7, "completion_tokens": 0, "embedding_tokens": 0})
    );
    sim.stop().await;
}
