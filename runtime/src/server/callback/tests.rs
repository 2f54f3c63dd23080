//! The callback sender against local receivers: the address checks happen where the
//! connection is made (after DNS, with the addresses connected to being the ones checked),
//! failures come out as classes, and every edge is bounded.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::queue::{Lookup, LookupFuture};

/// What a receiver saw: each request's `Host`, signature and body.
type Seen = Arc<Mutex<Vec<(String, String, Bytes)>>>;

/// A receiver answering `status`, counting the connections it accepted.
struct Receiver {
    addr: SocketAddr,
    seen: Seen,
    connections: Arc<AtomicUsize>,
}

async fn receiver(status: u16) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let (log, count) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let log = log.clone();
                async move {
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let (host, signature) = (header("host"), header(SIGNATURE_HEADER));
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    log.lock().unwrap().push((host, signature, body));
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Receiver {
        addr,
        seen,
        connections,
    }
}

impl Receiver {
    /// Connections accepted so far, counted after one of our own (accepted in order, so any
    /// connection the sender made before is counted by then); ours is not included.
    async fn connections_made(&self) -> usize {
        let before = self.connections.load(Ordering::SeqCst);
        let _probe = TcpStream::connect(self.addr).await.unwrap();
        while self.connections.load(Ordering::SeqCst) == before {
            tokio::task::yield_now().await;
        }
        self.connections.load(Ordering::SeqCst) - 1
    }
}

/// `hooks.test` and `rebind.test` both resolve to `127.0.0.1`.
fn fake_dns() -> Lookup {
    Arc::new(|host: String, port: u16| -> LookupFuture {
        Box::pin(async move {
            match host.as_str() {
                "hooks.test" | "rebind.test" => Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]),
                _ => Err(io::Error::new(io::ErrorKind::NotFound, "nxdomain")),
            }
        })
    })
}

fn settings(allow_private: bool, hosts: &[&str]) -> JobsSettings {
    JobsSettings {
        callback_allow_private: allow_private,
        callback_allow_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..JobsSettings::default()
    }
}

fn sender(settings: &JobsSettings, listeners: &[SocketAddr]) -> CallbackClient {
    let destinations = Arc::new(Destinations::with_lookup(settings, fake_dns()));
    destinations.set_listeners(listeners);
    CallbackClient::new(destinations, settings).unwrap()
}

fn delivery(url: String) -> Delivery {
    Delivery {
        url,
        body: Bytes::from_static(b"{\"id\":\"job_1\"}"),
        signature: "t=1700000000,v1=00".into(),
        timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn with_the_opt_in_a_loopback_receiver_gets_the_signed_body() {
    let hook = receiver(200).await;
    let client = sender(&settings(true, &[]), &[]);
    let url = format!("http://{}/hook", hook.addr);
    client.deliver(delivery(url)).await.unwrap();
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, "t=1700000000,v1=00");
    assert_eq!(seen[0].2, Bytes::from_static(b"{\"id\":\"job_1\"}"));
}

#[tokio::test]
async fn without_the_opt_in_a_loopback_literal_is_refused_before_any_connection() {
    let hook = receiver(200).await;
    let client = sender(&settings(false, &["127.0.0.1"]), &[]);
    let err = client
        .deliver(delivery(format!("http://{}/hook", hook.addr)))
        .await
        .unwrap_err();
    assert_eq!(err.class, Failure::RefusedAddress, "{err}");
    assert_eq!(hook.connections_made().await, 0);
}

#[tokio::test]
async fn a_name_is_checked_after_dns_and_the_connection_goes_to_the_checked_address() {
    let hook = receiver(200).await;
    let port = hook.addr.port();
    // Listed, but it resolves to loopback: refused at delivery, nothing connected.
    let listed = sender(&settings(false, &["rebind.test"]), &[]);
    let err = listed
        .deliver(delivery(format!("http://rebind.test:{port}/hook")))
        .await
        .unwrap_err();
    assert_eq!(err.class, Failure::RefusedAddress, "{err}");
    assert!(err.detail.contains("127.0.0.1"), "{}", err.detail);
    assert_eq!(hook.connections_made().await, 0);
    // With the opt-in the same name is delivered to the address it resolved to, under its
    // own name.
    let opted = sender(&settings(true, &["hooks.test"]), &[]);
    opted
        .deliver(delivery(format!("http://hooks.test:{port}/hook")))
        .await
        .unwrap();
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, format!("hooks.test:{port}"));
}

#[tokio::test]
async fn weir_s_own_listener_is_refused_at_delivery_even_with_the_opt_in() {
    let hook = receiver(200).await;
    let client = sender(&settings(true, &["hooks.test"]), &[hook.addr]);
    for url in [
        format!("http://{}/admin/reload", hook.addr),
        format!("http://hooks.test:{}/admin/reload", hook.addr.port()),
        format!(
            "http://[::ffff:127.0.0.1]:{}/admin/reload",
            hook.addr.port()
        ),
    ] {
        let err = client.deliver(delivery(url.clone())).await.unwrap_err();
        assert_eq!(err.class, Failure::RefusedAddress, "{url}: {err}");
    }
    assert_eq!(hook.connections_made().await, 0);
}

#[tokio::test]
async fn failures_are_classes_and_the_detail_stays_in_the_detail() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let client = sender(&settings(true, &[]), &[]);
    let err = client
        .deliver(delivery(format!("http://{closed}/hook")))
        .await
        .unwrap_err();
    assert_eq!(err.class, Failure::Unreachable, "{err}");
    assert_eq!(err.class.as_str(), "unreachable");
    assert!(
        err.detail.to_lowercase().contains("refused"),
        "{}",
        err.detail
    );

    let failing = receiver(503).await;
    let err = client
        .deliver(delivery(format!("http://{}/hook", failing.addr)))
        .await
        .unwrap_err();
    assert_eq!(err.class, Failure::Status(503));
    assert_eq!(err.class.as_str(), "status 5xx");
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and reads, never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let client = sender(&settings(true, &[]), &[]);
    let err = client
        .deliver(Delivery {
            timeout: Duration::from_millis(300),
            ..delivery(format!("http://{addr}/hook"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.class, Failure::Timeout, "{err}");
}

#[tokio::test]
async fn an_endless_answer_is_read_only_up_to_the_byte_bound() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // 200, then chunks for as long as the client reads.
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).await;
        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
        while stream.write_all(chunk.as_bytes()).await.is_ok() {}
    });
    let settings = JobsSettings {
        callback_max_response_bytes: 64 << 10,
        ..settings(true, &[])
    };
    let client = sender(&settings, &[]);
    let started = tokio::time::Instant::now();
    client
        .deliver(delivery(format!("http://{addr}/hook")))
        .await
        .unwrap();
    // Well before the 30 s delivery bound: the read stopped at the byte bound.
    assert!(started.elapsed() < Duration::from_secs(20));
}
