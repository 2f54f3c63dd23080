//! Binding, keep-alive and graceful shutdown.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use weir::sim::{Faults, Sim, SimConfig, SimError};

use crate::sim::client::{TestSim, chat, connect, full, send_on};

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let sim = TestSim::plain().await;
    let mut conn = connect(sim.addr).await.expect("connects");
    for i in 0..20 {
        let request = http::Request::post("/v1/chat/completions")
            .header("host", "sim")
            .body(full(chat(&format!("n{i}")).to_string().into()))
            .expect("request");
        let a = send_on(&mut conn, request).await.expect("answer");
        assert_eq!(a.status, StatusCode::OK);
    }
    sim.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish_and_stops_accepting() {
    let sim = TestSim::start(SimConfig {
        ttft_ms: 200,
        ..SimConfig::default()
    })
    .await;
    let addr = sim.addr;
    let mut body = chat("finish me");
    body["stream"] = json!(true);
    let mut conn = connect(addr).await.expect("connects");
    let request = http::Request::post("/v1/chat/completions")
        .header("host", "sim")
        .body(full(body.to_string().into()))
        .expect("request");
    let in_flight = tokio::spawn(async move { send_on(&mut conn, request).await });
    // Let the request reach the simulator (its first byte waits 200 ms for the TTFT).
    crate::wait::until("the stream to arrive", || async {
        let stats = sim.get("/sim/stats").await.json();
        crate::wait::check(stats["streams"] == 1, stats)
    })
    .await;
    sim.stop().await;
    let answer = tokio::time::timeout(crate::sim::client::TIMEOUT, in_flight)
        .await
        .expect("bounded")
        .expect("task")
        .expect("the stream completes");
    assert_eq!(answer.body_error, None);
    assert_eq!(answer.events().last().map(String::as_str), Some("[DONE]"));
    let refused =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
            .expect("bounded");
    assert!(refused.is_err(), "no longer accepting");
}

#[tokio::test]
async fn bind_reports_invalid_faults_and_busy_ports() {
    let mut config = SimConfig::new(([127, 0, 0, 1], 0).into());
    config.faults = Faults {
        error_rate: 1.5,
        ..Faults::default()
    };
    assert!(matches!(
        Sim::bind(config).await,
        Err(SimError::InvalidFaults(_))
    ));

    let taken = Sim::bind(SimConfig::new(([127, 0, 0, 1], 0).into()))
        .await
        .expect("binds");
    let busy = Sim::bind(SimConfig::new(taken.local_addr())).await;
    assert!(matches!(busy, Err(SimError::Bind { .. })), "{busy:?}");
}
