//! Test helpers shared by the router's unit tests: upstreams that never answer or that are an
//! in-process `weir sim`, targets over them, a request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::TargetState;
use crate::config::TargetLimits;
use crate::providers::Upstream;
use crate::sim::{Faults, Sim, SimConfig};
use crate::wit::ChatRequest;

/// A loopback listener that accepts connections and never answers.
pub async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

/// A loopback address whose connects hang: a listener with an accept queue of 0 that one
/// connection fills, so the kernel drops every later SYN (as an address that black-holes
/// them). Keep the returned listener and connection alive for as long as it must hang.
pub async fn hung_connect() -> (SocketAddr, (tokio::net::TcpListener, tokio::net::TcpStream)) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let filler = tokio::net::TcpStream::connect(addr).await.unwrap();
    (addr, (listener, filler))
}

/// An in-process simulator with `faults`, served until the test ends.
pub async fn sim(faults: Faults) -> SocketAddr {
    let sim = Sim::bind(SimConfig {
        faults,
        ..SimConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
    })
    .await
    .unwrap();
    let addr = sim.local_addr();
    tokio::spawn(sim.serve(std::future::pending()));
    addr
}

/// A target at `addr` with default limits.
pub fn target(name: &str, addr: SocketAddr, timeout: Duration) -> Arc<TargetState> {
    target_with(name, addr, timeout, TargetLimits::default())
}

/// A target at `addr` with `limits`.
pub fn target_with(
    name: &str,
    addr: SocketAddr,
    timeout: Duration,
    limits: TargetLimits,
) -> Arc<TargetState> {
    target_ttft(name, addr, timeout, timeout, limits)
}

/// A target at `addr` with `timeout` for JSON and `ttft` for a stream's first event (and, when
/// shorter than `timeout`, for a JSON request's first event too: `stream_json`).
pub fn target_ttft(
    name: &str,
    addr: SocketAddr,
    timeout: Duration,
    ttft: Duration,
    limits: TargetLimits,
) -> Arc<TargetState> {
    Arc::new(TargetState::new(
        Arc::new(Upstream {
            name: name.into(),
            base_url: format!("http://{addr}/v1"),
            dialect: crate::providers::Dialect::OpenAi,
            signing: Vec::new(),
            model: None,
            timeout,
            ttft_timeout: ttft,
            // As the config's default.
            stream_json: ttft < timeout,
            headers: Vec::new(),
        }),
        limits,
    ))
}

/// The shared one-message request (see `ChatRequest::hi`).
pub fn request() -> ChatRequest {
    ChatRequest::hi("m")
}
