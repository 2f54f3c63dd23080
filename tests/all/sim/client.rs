//! A minimal HTTP/1.1 client and server harness for the simulator tests: one TCP connection per
//! request (unless a test keeps one), every wait bounded by a timeout, and failures reported
//! as data so fault tests can assert on them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weir::sim::{Sim, SimConfig, SimError};

/// Bound on any single exchange in the tests.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Request body type of the harness.
pub type ReqBody = BoxBody<Bytes, Infallible>;

/// A simulator running on a loopback port.
pub struct TestSim {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Resolves `serve`'s shutdown future.
    stop: oneshot::Sender<()>,
    /// The `serve` task.
    task: JoinHandle<Result<(), SimError>>,
}

impl TestSim {
    /// Binds 127.0.0.1:0 with `config` (its `listen` is ignored) and serves in the background.
    pub async fn start(mut config: SimConfig) -> TestSim {
        config.listen = ([127, 0, 0, 1], 0).into();
        let sim = Sim::bind(config).await.expect("sim binds");
        let addr = sim.local_addr();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(sim.serve(async move {
            let _ = stopped.await;
        }));
        TestSim { addr, stop, task }
    }

    /// A simulator with no faults.
    pub async fn plain() -> TestSim {
        TestSim::start(SimConfig::default()).await
    }

    /// Signals shutdown and waits (bounded) for `serve` to return.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let served = tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("serve returns within the timeout after shutdown")
            .expect("serve task does not panic");
        served.expect("serve ends without error");
    }

    /// POSTs JSON and expects a complete answer.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::POST, path, &[], Some(body))
            .await
            .expect("exchange succeeds")
    }

    /// GETs and expects a complete answer.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], None)
            .await
            .expect("exchange succeeds")
    }

    /// One request on a fresh connection, bounded by `TIMEOUT`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, Failure> {
        let body = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "sim");
        if !body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(full(body)).expect("valid request");
        exchange(self.addr, request, TIMEOUT).await
    }
}

/// A whole response, with the error that ended its body early, if any.
#[derive(Debug)]
pub struct Answer {
    /// Response status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body bytes received.
    pub body: Bytes,
    /// Why the body ended before its end, if it did.
    pub body_error: Option<String>,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn events(&self) -> Vec<String> {
        let text = std::str::from_utf8(&self.body).expect("utf-8 body");
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").expect("data: event").to_owned())
            .collect()
    }
}

/// Why an exchange produced no response.
#[derive(Debug)]
pub enum Failure {
    /// Could not connect.
    Connect(std::io::Error),
    /// No complete answer within the bound.
    Timeout,
    /// The connection failed before a response head arrived.
    Http(hyper::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Timeout => write!(f, "timed out"),
            Failure::Http(e) => write!(f, "http: {e}"),
        }
    }
}

/// A complete request body.
pub fn full(bytes: Bytes) -> ReqBody {
    Full::new(bytes).boxed()
}

/// Opens a connection and returns its sender (the connection is driven in the background).
pub async fn connect(addr: SocketAddr) -> Result<SendRequest<ReqBody>, Failure> {
    let stream = TcpStream::connect(addr).await.map_err(Failure::Connect)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Failure::Http)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends `request` on a fresh connection and reads the whole response within `timeout`.
pub async fn exchange(
    addr: SocketAddr,
    request: Request<ReqBody>,
    timeout: Duration,
) -> Result<Answer, Failure> {
    let work = async {
        let mut sender = connect(addr).await?;
        send_on(&mut sender, request).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Failure::Timeout)?
}

/// Sends `request` on an open connection and reads the whole response.
pub async fn send_on(
    sender: &mut SendRequest<ReqBody>,
    request: Request<ReqBody>,
) -> Result<Answer, Failure> {
    let response = sender.send_request(request).await.map_err(Failure::Http)?;
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    let mut body_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(bytes),
        body_error,
    })
}

/// A one-message chat request body.
pub fn chat(text: &str) -> Value {
    serde_json::json!({"model": "test-model", "messages": [{"role": "user", "content": text}]})
}
