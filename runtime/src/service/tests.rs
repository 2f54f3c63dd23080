//! A service call against in-process `weir sim`s and loopback sockets: fallback, answers
//! that are not failures, the price of every attempt that reached a URL (a cancelled one
//! included), the cache, and the deadline.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Method;

use super::{CallContext, Service, ServiceRequest};
use crate::config::{Config, ServiceSettings};
use crate::cost::{Ledger, Meter};
use crate::router::testing::{black_hole, sim};
use crate::sim::Faults;

/// $0.001 in pico-dollars.
const PRICE: u64 = 1_000_000_000;

fn settings(urls: &[String], extra: &str) -> ServiceSettings {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let text = format!(
        "[targets.t]\nbase_url = \"http://127.0.0.1:1/v1\"\n\n[services.search]\nurls = [{}]\n\
         price_per_call_usd = 0.001\nbackoff_base_ms = 0\n{extra}\n\n[[routes]]\nmodel = \"m\"\n\
         targets = [\"t\"]\n",
        urls.join(", ")
    );
    let config = Config::parse(&text, Path::new("weir.toml"), &|_| None).unwrap();
    config.services[0].clone()
}

fn service(urls: &[String], extra: &str) -> Service {
    let ledger = Ledger::open(None, None).unwrap();
    Service::new(
        &settings(urls, extra),
        crate::providers::ProviderClient::new().unwrap(),
        ledger,
    )
}

fn ctx(deadline: Option<Duration>) -> CallContext {
    CallContext {
        meter: Meter::new(None),
        stage: "retrieve@1234".into(),
        route: "m".into(),
        deadline,
    }
}

fn query(path: &str) -> ServiceRequest {
    ServiceRequest {
        method: Method::POST,
        path: path.to_string(),
        headers: Vec::new(),
        body: Bytes::from_static(br#"{"query_embeddings":[[1.0,0.0]],"n_results":2}"#),
    }
}

const QUERY: &str = "/api/v2/tenants/t/databases/d/collections/c/query";

#[tokio::test]
async fn a_failing_url_falls_back_and_every_attempt_that_reached_one_is_billed() {
    let failing = sim(Faults {
        error_rate: 1.0,
        error_status: 503,
        ..Faults::default()
    })
    .await;
    let healthy = sim(Faults::default()).await;
    let service = service(
        &[format!("http://{failing}"), format!("http://{healthy}")],
        "",
    );
    let ctx = ctx(None);
    let reply = service.call(query(QUERY), &ctx).await.unwrap();
    assert_eq!(reply.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert!(
        body["documents"][0][0]
            .as_str()
            .unwrap()
            .starts_with("sim passage 1")
    );
    assert_eq!(ctx.meter.total(), 2 * PRICE, "the 503 reached its URL too");
    let steps = ctx.meter.take_services();
    assert_eq!(steps.len(), 1);
    assert_eq!(
        (
            steps[0].attempts,
            steps[0].status,
            steps[0].outcome,
            steps[0].cache
        ),
        (2, Some(200), "ok", "bypass")
    );
    assert_eq!(steps[0].asked, format!("POST {QUERY}"));
}

#[tokio::test]
async fn a_status_outside_retry_on_is_the_services_answer() {
    let healthy = sim(Faults::default()).await;
    let other = sim(Faults::default()).await;
    let service = service(
        &[format!("http://{healthy}"), format!("http://{other}")],
        "",
    );
    let ctx = ctx(None);
    let reply = service.call(query("/no/such/path"), &ctx).await.unwrap();
    assert_eq!(reply.status, 404, "answered, not retried");
    assert!(String::from_utf8_lossy(&reply.body).contains("error"));
    assert_eq!(ctx.meter.take_services()[0].attempts, 1);
    assert_eq!(ctx.meter.total(), PRICE);
}

#[tokio::test]
async fn a_refused_connection_is_free_and_the_cache_answers_a_repeat() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let healthy = sim(Faults::default()).await;
    let service = service(
        &[format!("http://{closed}"), format!("http://{healthy}")],
        "cache_ttl_s = 60",
    );
    let ctx = ctx(None);
    let first = service.call(query(QUERY), &ctx).await.unwrap();
    assert_eq!(
        ctx.meter.total(),
        PRICE,
        "the refused connection costs nothing"
    );
    let again = service.call(query(QUERY), &ctx).await.unwrap();
    assert_eq!(again.body, first.body);
    assert_eq!(ctx.meter.total(), PRICE, "a cache hit costs nothing");
    let steps = ctx.meter.take_services();
    let seen: Vec<_> = steps.iter().map(|s| (s.cache, s.attempts)).collect();
    assert_eq!(seen, [("miss", 2), ("hit", 0)]);
}

#[tokio::test(start_paused = true)]
async fn the_callers_deadline_cuts_a_stalled_url_and_a_dropped_call_is_still_billed() {
    let (hole, _server) = black_hole().await;
    let service = std::sync::Arc::new(service(&[format!("http://{hole}")], "timeout_ms = 1000"));
    let ctx = ctx(Some(Duration::from_millis(100)));
    let started = tokio::time::Instant::now();
    let err = service.call(query(QUERY), &ctx).await.unwrap_err();
    assert!(
        started.elapsed() <= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.status(), 504, "the caller's deadline ran out");
    assert_eq!(
        ctx.meter.total(),
        PRICE,
        "the stalled attempt had reached the URL"
    );

    // Dropped midway (the stage's deadline trapped): billed for the attempt in flight.
    let ctx = self::ctx(None);
    let call = {
        let (service, ctx) = (service.clone(), ctx.clone());
        tokio::spawn(async move { service.call(query(QUERY), &ctx).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    call.abort();
    let _ = call.await;
    assert_eq!(ctx.meter.total(), PRICE);
    assert_eq!(ctx.meter.take_services()[0].outcome, "cancelled");
}

/// A loopback upstream that answers every request `200 {}` and hands over what it received.
async fn recorder() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&seen).to_lowercase()).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn the_services_key_is_sent_and_a_stages_own_header_of_that_name_dropped() {
    let (addr, mut seen) = recorder().await;
    let text = format!(
        "[targets.t]\nbase_url = \"http://127.0.0.1:1/v1\"\n\n[services.search]\n\
         urls = [\"http://{addr}\"]\napi_key_env = \"SEARCH_KEY\"\n\n[[routes]]\nmodel = \"m\"\n\
         targets = [\"t\"]\n"
    );
    let env = |name: &str| (name == "SEARCH_KEY").then(|| "sk-search".to_string());
    let config = Config::parse(&text, Path::new("weir.toml"), &env).unwrap();
    let settings = &config.services[0];
    assert!(
        !format!("{settings:?}").contains("sk-search"),
        "masked in Debug"
    );
    let service = Service::new(
        settings,
        crate::providers::ProviderClient::new().unwrap(),
        Ledger::open(None, None).unwrap(),
    );
    let mut request = query(QUERY);
    request.headers = vec![(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Bearer from-the-guest"),
    )];
    let reply = service.call(request, &ctx(None)).await.unwrap();
    assert_eq!(reply.status, 200);
    let head = seen.recv().await.unwrap();
    assert_eq!(head.matches("authorization:").count(), 1, "{head}");
    assert!(head.contains("authorization: bearer sk-search"), "{head}");

    // A missing variable is a config error naming it.
    let err = Config::parse(&text, Path::new("weir.toml"), &|_| None).unwrap_err();
    assert!(err.to_string().contains("SEARCH_KEY"), "{err}");
}

/// What `weir:stage/services` is handed: `service`, POST `path`, `body`, `max_body`.
fn import_request(
    service: &str,
    path: &str,
    body: &[u8],
    max_body: u32,
) -> crate::wit::v2::weir::stage0_2_0::services::ServiceRequest {
    crate::wit::v2::weir::stage0_2_0::services::ServiceRequest {
        service: service.to_string(),
        method: "POST".to_string(),
        path: path.to_string(),
        headers: vec![("content-type".to_string(), b"application/json".to_vec())],
        body: Some(body.to_vec()),
        max_body,
    }
}

#[tokio::test]
async fn the_services_import_checks_every_call_of_a_batch_and_sends_only_the_valid_granted_ones() {
    use crate::wit::v2::weir::stage0_2_0::services::ErrorKind;

    let healthy = sim(Faults::default()).await;
    let service = std::sync::Arc::new(service(
        &[format!("http://{healthy}")],
        "max_request_bytes = 1024",
    ));
    let ctx = ctx(None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut hooks = super::ServiceHooks::granting(vec![service], ctx.clone(), deadline);
    let body = br#"{"query_embeddings":[[1.0,0.0]],"n_results":2}"#;
    let ok = import_request("search", QUERY, body, 1 << 20);
    let mut bad_method = ok.clone();
    bad_method.method = "GE T".to_string();
    let mut bad_header = ok.clone();
    bad_header.headers = vec![("bad name".to_string(), b"x".to_vec())];
    let mut big_headers = ok.clone();
    big_headers.headers = vec![("x-big".to_string(), vec![b'x'; 9000])];
    let batch = vec![
        ok.clone(),
        bad_method,
        import_request("search", "api/query", body, 1 << 20),
        bad_header,
        big_headers,
        import_request("vectors", QUERY, body, 1 << 20),
        import_request("search", QUERY, &[b'x'; 2000], 1 << 20),
        import_request("search", QUERY, body, 10),
    ];
    let results = super::call_all(&mut hooks, batch).await;
    let kinds: Vec<Option<ErrorKind>> = results
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            None,
            Some(ErrorKind::InvalidRequest),
            Some(ErrorKind::InvalidRequest),
            Some(ErrorKind::InvalidRequest),
            Some(ErrorKind::InvalidRequest),
            Some(ErrorKind::Denied),
            Some(ErrorKind::Transport),
            Some(ErrorKind::BodyTooLarge),
        ]
    );
    let answer = results[0].as_ref().unwrap();
    assert_eq!(answer.status, 200);
    assert!(String::from_utf8_lossy(&answer.body).contains("sim passage"));
    assert!(
        answer
            .headers
            .iter()
            .any(|(name, _)| name == "content-type")
    );
    assert_eq!(
        ctx.meter.take_services().len(),
        2,
        "only the valid call and the one whose answer was too long went out"
    );
}

#[tokio::test]
async fn the_services_import_answers_calls_past_the_instance_limit_with_a_429_and_sends_nothing() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let service = std::sync::Arc::new(service(&[format!("http://{closed}")], ""));
    let ctx = ctx(None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut hooks = super::ServiceHooks::granting(vec![service], ctx.clone(), deadline);
    let limit = super::hooks::MAX_CALLS_PER_INSTANCE as usize;
    // Spend the instance's calls, 16 at a time, with no reachable URL (each fails fast).
    for _ in 0..limit / 16 {
        let batch = vec![import_request("search", QUERY, b"{}", 1 << 20); 16];
        let spent = super::call_all(&mut hooks, batch).await;
        assert!(
            spent
                .iter()
                .all(|r| r.as_ref().is_ok_and(|a| a.status >= 500))
        );
    }
    assert!(!ctx.meter.take_services().is_empty());
    let past = super::call_all(
        &mut hooks,
        vec![import_request("search", QUERY, b"{}", 1 << 20)],
    )
    .await;
    let answer = past[0].as_ref().unwrap();
    assert_eq!(answer.status, 429);
    assert!(
        answer
            .headers
            .iter()
            .any(|(name, value)| name == "x-weir-service-error"
                && value == b"service_calls_exceeded"),
        "{:?}",
        answer.headers
    );
    assert!(ctx.meter.take_services().is_empty(), "nothing sent");
}
