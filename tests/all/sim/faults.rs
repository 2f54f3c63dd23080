//! Each fault, seen from the client.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use weir::sim::{Faults, SimConfig};

use crate::sim::client::{Failure, TestSim, chat};

/// A simulator started with `faults`.
async fn with_faults(faults: Faults) -> TestSim {
    TestSim::start(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .await
}

#[tokio::test]
async fn error_rate_one_fails_every_model_request_with_the_status() {
    let sim = with_faults(Faults {
        error_rate: 1.0,
        error_status: 503,
        ..Faults::default()
    })
    .await;
    for _ in 0..5 {
        let a = sim.post("/v1/chat/completions", &chat("x")).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        let error = &a.json()["error"];
        assert_eq!(error["type"], "server_error");
        assert_eq!(error["code"], "sim_injected_error");
    }
    let e = sim.post("/v1/embeddings", &json!({"input": "x"})).await;
    assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    // The control plane is never faulted.
    assert_eq!(sim.get("/sim/stats").await.json()["faults"]["errors"], 6);
    sim.stop().await;
}

#[tokio::test]
async fn error_status_defaults_to_500() {
    let sim = with_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let a = sim.post("/v1/chat/completions", &chat("x")).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    sim.stop().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let sim = with_faults(Faults {
        rate_limit_rate: 1.0,
        retry_after_s: 7,
        ..Faults::default()
    })
    .await;
    let a = sim.post("/v1/chat/completions", &chat("x")).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "7");
    assert_eq!(a.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        sim.get("/sim/stats").await.json()["faults"]["rate_limited"],
        1
    );
    sim.stop().await;
}

#[tokio::test]
async fn error_model_fails_while_others_succeed() {
    let sim = TestSim::plain().await;
    let mut body = chat("x");
    body["model"] = json!("sim-error-502");
    assert_eq!(
        sim.post("/v1/chat/completions", &body).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        sim.post("/v1/chat/completions", &chat("x")).await.status,
        StatusCode::OK
    );
    sim.stop().await;
}

#[tokio::test]
async fn hang_holds_the_request_until_the_client_gives_up_and_shutdown_still_completes() {
    let sim = with_faults(Faults {
        hang_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let request = http::Request::post("/v1/chat/completions")
        .header("host", "sim")
        .body(crate::sim::client::full(chat("x").to_string().into()))
        .expect("request");
    let started = tokio::time::Instant::now();
    let outcome = crate::sim::client::exchange(sim.addr, request, Duration::from_millis(300)).await;
    assert!(matches!(outcome, Err(Failure::Timeout)), "{outcome:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let stats = sim.get("/sim/stats").await.json();
    assert_eq!(stats["faults"]["hangs"], 1);
    assert_eq!(stats["requests"], 1);

    // A hang still in progress must not block shutdown.
    let hanging = crate::sim::client::connect(sim.addr)
        .await
        .expect("connects");
    let pending = tokio::spawn(async move {
        let mut hanging = hanging;
        let request = http::Request::post("/v1/chat/completions")
            .header("host", "sim")
            .body(crate::sim::client::full(chat("y").to_string().into()))
            .expect("request");
        crate::sim::client::send_on(&mut hanging, request).await
    });
    // Wait (bounded) until the simulator has seen the second hang.
    crate::wait::until("the second hang to arrive", || async {
        let stats = sim.get("/sim/stats").await.json();
        crate::wait::check(stats["faults"]["hangs"] == 2, stats)
    })
    .await;
    sim.stop().await;
    let outcome = tokio::time::timeout(crate::sim::client::TIMEOUT, pending)
        .await
        .expect("the hanging client is released by shutdown")
        .expect("task completes");
    assert!(
        outcome.is_err(),
        "a hung request gets no response: {outcome:?}"
    );
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let sim = with_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let outcome = sim
        .send(Method::POST, "/v1/chat/completions", &[], Some(&chat("x")))
        .await;
    let Err(Failure::Http(error)) = outcome else {
        panic!("expected a connection error, got {outcome:?}");
    };
    let reset = std::error::Error::source(&error)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    assert_eq!(
        reset,
        Some(std::io::ErrorKind::ConnectionReset),
        "{error:?}"
    );
    assert_eq!(sim.get("/sim/stats").await.json()["faults"]["resets"], 1);
    sim.stop().await;
}

#[tokio::test]
async fn stream_cut_sends_n_content_chunks_and_no_done() {
    let sim = with_faults(Faults {
        stream_cut_after: Some(2),
        ..Faults::default()
    })
    .await;
    let mut body = chat("cut me please, this reply is long");
    body["stream"] = json!(true);
    let a = sim.post("/v1/chat/completions", &body).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body_error.is_some(), "the body must end in an error");
    let events = a.events();
    assert!(!events.iter().any(|e| e == "[DONE]"));
    assert_eq!(events.len(), 3, "role chunk + 2 content chunks: {events:?}");
    for e in &events[1..] {
        let chunk: serde_json::Value = serde_json::from_str(e).expect("chunk");
        assert!(chunk["choices"][0]["delta"]["content"].is_string());
        assert!(chunk["choices"][0]["finish_reason"].is_null());
    }
    // Non-streamed answers are not cut.
    let whole = sim.post("/v1/chat/completions", &chat("cut me")).await;
    assert_eq!(whole.status, StatusCode::OK);
    let stats = sim.get("/sim/stats").await.json();
    assert_eq!(stats["faults"]["stream_cuts"], 1);
    assert_eq!(stats["streams"], 1);
    sim.stop().await;
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let sim = with_faults(Faults {
        latency_ms: 200,
        jitter_ms: 20,
        ..Faults::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let a = sim.post("/v1/embeddings", &json!({"input": "x"})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    sim.stop().await;
}

/// A streamed chat request body.
fn stream_chat(text: &str) -> serde_json::Value {
    let mut body = chat(text);
    body["stream"] = json!(true);
    body
}

fn post_request(
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> http::Request<crate::sim::client::ReqBody> {
    let mut builder = http::Request::post("/v1/chat/completions").header("host", "sim");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(crate::sim::client::full(body.to_string().into()))
        .expect("request")
}

#[tokio::test]
async fn stream_stall_sends_n_content_chunks_then_holds_the_connection_until_shutdown() {
    let sim = with_faults(Faults {
        stream_stall_after: Some(2),
        ..Faults::default()
    })
    .await;
    let body = stream_chat("stall me please, this reply is long");
    let outcome = crate::sim::client::exchange(
        sim.addr,
        post_request(&body, &[]),
        Duration::from_millis(300),
    )
    .await;
    assert!(matches!(outcome, Err(Failure::Timeout)), "{outcome:?}");

    // Held open until the simulator stops, then dropped: the role chunk and 2 content chunks.
    let mut sender = crate::sim::client::connect(sim.addr)
        .await
        .expect("connects");
    let pending = tokio::spawn(async move {
        crate::sim::client::send_on(&mut sender, post_request(&body, &[])).await
    });
    crate::wait::until("the second stream to arrive", || async {
        let stats = sim.get("/sim/stats").await.json();
        crate::wait::check(stats["streams"] == 2, stats)
    })
    .await;
    // A window to see it end if it did not stall (a loaded machine can only hide a failure
    // here, never invent one).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "the stream must stall");
    sim.stop().await;
    let answer = tokio::time::timeout(crate::sim::client::TIMEOUT, pending)
        .await
        .expect("released by shutdown")
        .expect("task completes")
        .expect("a response head");
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body_error.is_some(), "the body ends in an error");
    let events = answer.events();
    assert_eq!(events.len(), 3, "role chunk + 2 content chunks: {events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test]
async fn usage_prompt_tokens_replaces_the_reported_prompt_tokens() {
    let sim = with_faults(Faults {
        usage_prompt_tokens: Some(u64::from(u32::MAX)),
        ..Faults::default()
    })
    .await;
    let whole = sim.post("/v1/chat/completions", &chat("x")).await.json();
    let usage = &whole["usage"];
    assert_eq!(usage["prompt_tokens"], u64::from(u32::MAX));
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(u64::from(u32::MAX) + usage["completion_tokens"].as_u64().unwrap())
    );
    let mut body = stream_chat("x");
    body["stream_options"] = json!({"include_usage": true});
    let events = sim.post("/v1/chat/completions", &body).await.events();
    let usage: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).expect("chunk");
    assert_eq!(usage["usage"]["prompt_tokens"], u64::from(u32::MAX));

    // Any u64: the total saturates instead of overflowing.
    sim.post("/sim/faults", &json!({"usage_prompt_tokens": u64::MAX}))
        .await;
    let whole = sim.post("/v1/chat/completions", &chat("x")).await.json();
    assert_eq!(whole["usage"]["total_tokens"], u64::MAX);
    sim.stop().await;
}

#[tokio::test]
async fn an_injected_401_quotes_the_bearer_key_like_openai() {
    let sim = with_faults(Faults {
        error_rate: 1.0,
        error_status: 401,
        ..Faults::default()
    })
    .await;
    let answer = sim
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-proj-secretpart-7q2x")],
            Some(&chat("x")),
        )
        .await
        .expect("an answer");
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "invalid_api_key");
    let message = error["message"].as_str().expect("a message");
    assert!(
        message.starts_with("Incorrect API key provided: sk-*") && message.contains("7q2x"),
        "{message}"
    );
    assert!(!message.contains("secretpart"), "{message}");
    sim.stop().await;
}

#[tokio::test]
async fn error_body_stall_sends_the_head_and_half_the_body_then_stalls() {
    use http_body_util::BodyExt;
    let sim = with_faults(Faults {
        error_rate: 1.0,
        error_status: 503,
        error_body_stall: true,
        ..Faults::default()
    })
    .await;
    let mut sender = crate::sim::client::connect(sim.addr)
        .await
        .expect("connects");
    let response = tokio::time::timeout(
        crate::sim::client::TIMEOUT,
        sender.send_request(post_request(&chat("x"), &[])),
    )
    .await
    .expect("a head in time")
    .expect("a response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let mut body = response.into_body();
    let first = tokio::time::timeout(crate::sim::client::TIMEOUT, body.frame())
        .await
        .expect("the first half in time")
        .expect("a frame")
        .expect("data")
        .into_data()
        .expect("data");
    assert!(first.starts_with(b"{\"error\""), "{first:?}");
    assert!(
        serde_json::from_slice::<serde_json::Value>(&first).is_err(),
        "only half"
    );
    let rest = tokio::time::timeout(Duration::from_millis(300), body.frame()).await;
    assert!(rest.is_err(), "the rest of the body must stall");
    sim.stop().await;
    let end = tokio::time::timeout(crate::sim::client::TIMEOUT, body.frame())
        .await
        .expect("released by shutdown");
    assert!(matches!(end, Some(Err(_)) | None), "{end:?}");
}

#[tokio::test]
async fn rpm_limit_refuses_beyond_n_in_a_minute_like_a_provider_account() {
    let sim = with_faults(Faults {
        rpm_limit: Some(3),
        ..Faults::default()
    })
    .await;
    for _ in 0..3 {
        let a = sim.post("/v1/chat/completions", &chat("x")).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    for _ in 0..2 {
        let a = sim.post("/v1/embeddings", &json!({"input": "x"})).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(a.json()["error"]["code"], "rate_limit_exceeded");
        let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(
            (59..=60).contains(&retry),
            "the minute's first request leaves in {retry} s"
        );
    }
    let stats = sim.get("/sim/stats").await.json();
    assert_eq!(
        stats["rpm"],
        json!({"max_received_in_60s": 5, "limited": 2})
    );
    assert_eq!(stats["faults"]["rate_limited"], 2);
    assert_eq!(
        stats["billed"]["requests"], 3,
        "a refused request is not billed"
    );
    // Settable at run time, and a limit of 0 is refused.
    let bad = sim.post("/sim/faults", &json!({"rpm_limit": 0})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    sim.stop().await;
}
