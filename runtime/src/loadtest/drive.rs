//! The client: sends each planned request at its time (open loop) and records what came back.
//!
//! A request's latency runs from its *scheduled* send time, not from when a connection or a
//! concurrency slot became free: when the server stalls, the requests that should have been
//! sent meanwhile count their wait, as a user's would (no coordinated omission). The
//! concurrency cap (`max_in_flight`) is the number of users; a request due while all are busy
//! waits, and at most [`backlog_limit`] may wait before further ones are counted as not sent.
//! The closed-loop mode exists only to show the difference.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::schedule::Planned;

/// Most bytes of an answer read (a longer one is cut and counted as an error `too_large`).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Most bytes of an error body kept to read its `error.code`.
const MAX_ERROR_BODY: usize = 64 << 10;

/// What happened to one request.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Its scheduled send time, from the start of the load.
    pub at: Duration,
    /// From the scheduled send time to the last byte of the answer (or the failure).
    pub latency: Duration,
    /// For a stream: from the scheduled send time to the first body byte.
    pub ttft: Option<Duration>,
    /// The HTTP status; 0 when no answer came (connect failure, reset, client timeout), or
    /// when the request was not sent at all.
    pub status: u16,
    /// The error's code: the answer's `error.code` (or `error.type`), the error event of a
    /// stream, or the client's own (`timeout`, `connect`, `not_sent`, `too_large`).
    pub code: Option<Box<str>>,
    /// `x-weir-cache` said `hit` or `semantic-hit`.
    pub cache_hit: bool,
    /// The request asked for a stream.
    pub stream: bool,
}

impl Sample {
    /// A 2xx whose body (or stream) carried no error.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status) && self.code.is_none()
    }
}

/// Counters the progress line reads while the load runs.
#[derive(Default)]
pub struct Live {
    /// Requests handed to the client (or counted as not sent).
    pub sent: AtomicU64,
    /// Requests finished.
    pub done: AtomicU64,
    /// Finished requests that failed.
    pub errors: AtomicU64,
    /// Every finished request's sample.
    pub samples: Mutex<Vec<Sample>>,
}

impl Live {
    fn record(&self, sample: Sample) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if !sample.ok() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.samples().push(sample);
    }

    /// The samples (a poisoned lock still holds whole samples).
    pub fn samples(&self) -> MutexGuard<'_, Vec<Sample>> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The p99 latency of the requests finished so far, ms.
    pub fn p99_ms(&self) -> f64 {
        let mut latencies: Vec<Duration> = self.samples().iter().map(|s| s.latency).collect();
        if latencies.is_empty() {
            return 0.0;
        }
        let k = (latencies.len() * 99 / 100).min(latencies.len() - 1);
        let (_, p99, _) = latencies.select_nth_unstable(k);
        p99.as_secs_f64() * 1000.0
    }
}

/// How many due requests may wait for a free user before more are counted as not sent.
pub fn backlog_limit(max_in_flight: usize) -> usize {
    (max_in_flight * 4).max(1_000)
}

/// Where and how requests go.
#[derive(Clone)]
pub struct Target {
    /// The full URLs requests are POSTed to: one per node, taken round-robin; a node that
    /// refuses the connection is skipped for the next, as a load balancer would.
    pub uris: Vec<http::Uri>,
    /// The round-robin position.
    pub next: Arc<std::sync::atomic::AtomicUsize>,
    /// `Authorization: Bearer ...`, when the scenario names a key.
    pub authorization: Option<http::HeaderValue>,
    /// Extra headers sent with every request (a peer gateway's routing headers).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The client's timeout per request.
    pub timeout: Duration,
}

/// The HTTP client (keep-alive pool sized to the users).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client pooling up to `max_in_flight` connections.
pub fn client(max_in_flight: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_in_flight)
        .build(connector)
}

/// Sends `plan` open-loop from `start`; returns when every request has finished.
pub async fn open_loop(
    plan: impl Iterator<Item = Planned>,
    target: Target,
    max_in_flight: usize,
    start: Instant,
    live: Arc<Live>,
) {
    let client = client(max_in_flight);
    let users = Arc::new(Semaphore::new(max_in_flight));
    let waiting = Arc::new(AtomicU64::new(0));
    let backlog = backlog_limit(max_in_flight) as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for planned in plan {
        tokio::time::sleep_until(start + planned.at).await;
        live.sent.fetch_add(1, Ordering::Relaxed);
        // Reap finished tasks so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
        if users.available_permits() == 0 && waiting.load(Ordering::Relaxed) >= backlog {
            live.record(Sample {
                at: planned.at,
                latency: Duration::ZERO,
                ttft: None,
                status: 0,
                code: Some("not_sent".into()),
                cache_hit: false,
                stream: planned.stream,
            });
            continue;
        }
        let (client, target, users, waiting, live) = (
            client.clone(),
            target.clone(),
            users.clone(),
            waiting.clone(),
            live.clone(),
        );
        tasks.spawn(async move {
            waiting.fetch_add(1, Ordering::Relaxed);
            let permit = users.acquire_owned().await;
            waiting.fetch_sub(1, Ordering::Relaxed);
            let Ok(_permit) = permit else { return };
            let scheduled = start + planned.at;
            let sample = send(&client, &target, planned, scheduled).await;
            live.record(sample);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// `users` users each send the next body as soon as their last answer is in, until `until`
/// (closed loop; latency from the actual send).
pub async fn closed_loop(
    mut bodies: impl FnMut() -> (Bytes, bool) + Send,
    target: Target,
    users: usize,
    start: Instant,
    until: Duration,
    live: Arc<Live>,
) {
    let client = client(users);
    let (tx, rx) = async_channel(users);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..users {
        let (client, target, live, rx) = (client.clone(), target.clone(), live.clone(), rx.clone());
        tasks.spawn(async move {
            while let Ok(Some((body, stream))) = rx.recv().await {
                let now = Instant::now();
                if now >= start + until
                    || live.sent.load(Ordering::Relaxed) >= super::scenario::MAX_REQUESTS
                {
                    break;
                }
                live.sent.fetch_add(1, Ordering::Relaxed);
                let planned = Planned {
                    at: now - start,
                    body,
                    stream,
                };
                live.record(send(&client, &target, planned, now).await);
            }
        });
    }
    // Feed bodies until the run ends (each user takes one when it is free).
    loop {
        let next = bodies();
        tokio::select! {
            sent = tx.send(Some(next)) => if sent.is_err() { break },
            _ = tokio::time::sleep_until(start + until) => break,
        }
    }
    drop(tx);
    while tasks.join_next().await.is_some() {}
}

/// A bounded multi-consumer channel over tokio's mpsc (one receiver behind a lock).
fn async_channel<T: Send + 'static>(
    capacity: usize,
) -> (tokio::sync::mpsc::Sender<T>, SharedReceiver<T>) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    (tx, SharedReceiver(Arc::new(tokio::sync::Mutex::new(rx))))
}

/// The receiving end shared by the users.
struct SharedReceiver<T>(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<T>>>);

impl<T> Clone for SharedReceiver<T> {
    fn clone(&self) -> Self {
        SharedReceiver(self.0.clone())
    }
}

impl<T> SharedReceiver<T> {
    async fn recv(&self) -> Result<T, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}

/// Sends one request and reads its whole answer, within the target's timeout.
async fn send(
    client: &HttpClient,
    target: &Target,
    planned: Planned,
    scheduled: Instant,
) -> Sample {
    let mut sample = Sample {
        at: planned.at,
        latency: Duration::ZERO,
        ttft: None,
        status: 0,
        code: None,
        cache_hit: false,
        stream: planned.stream,
    };
    let exchange = exchange(
        client,
        target,
        planned.body,
        planned.stream,
        scheduled,
        &mut sample,
    );
    match tokio::time::timeout(target.timeout, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(code)) => sample.code = Some(code.into()),
        Err(_) => sample.code = Some("timeout".into()),
    }
    sample.latency = scheduled.elapsed();
    sample
}

async fn exchange(
    client: &HttpClient,
    target: &Target,
    body: Bytes,
    stream: bool,
    scheduled: Instant,
    sample: &mut Sample,
) -> Result<(), &'static str> {
    let first = target.next.fetch_add(1, Ordering::Relaxed);
    let mut response = Err("connect");
    for k in 0..target.uris.len() {
        let uri = target.uris[(first + k) % target.uris.len()].clone();
        let mut request = request_to(target, uri);
        request = request.header("content-type", "application/json");
        let request = request
            .body(Full::new(body.clone()))
            .map_err(|_| "bad_request")?;
        match client.request(request).await {
            Ok(answer) => {
                response = Ok(answer);
                break;
            }
            // Refused: nothing reached the node, the next may take it.
            Err(err) if err.is_connect() => continue,
            Err(_) => {
                response = Err("connection_error");
                break;
            }
        }
    }
    let response = response?;
    sample.status = response.status().as_u16();
    sample.cache_hit = matches!(
        response.headers().get("x-weir-cache").map(|v| v.as_bytes()),
        Some(b"hit" | b"semantic-hit")
    );
    let success = response.status().is_success();
    let mut body = response.into_body();
    let mut kept: Vec<u8> = Vec::new();
    let mut read = 0usize;
    let mut events = SseErrors::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "body_error")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if stream && sample.ttft.is_none() && !data.is_empty() {
            sample.ttft = Some(scheduled.elapsed());
        }
        read += data.len();
        if read > MAX_ANSWER_BYTES {
            return Err("too_large");
        }
        if !success {
            let room = MAX_ERROR_BODY.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        } else if stream {
            events.feed(&data);
        }
    }
    if !success {
        sample.code = Some(error_code(&kept).into());
    } else if let Some(code) = events.code {
        sample.code = Some(code.into());
    } else if stream && !events.done {
        sample.code = Some("stream_cut".into());
    }
    Ok(())
}

/// A POST to `uri` with the target's headers.
fn request_to(target: &Target, uri: http::Uri) -> http::request::Builder {
    let mut request = Request::post(uri);
    if let Some(auth) = &target.authorization {
        request = request.header(http::header::AUTHORIZATION, auth.clone());
    }
    for (name, value) in &target.headers {
        request = request.header(name, value.clone());
    }
    request
}

/// `error.code` of an OpenAI-shaped error body, else `error.type`, else `http_error`.
fn error_code(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let error = &value["error"];
    error["code"]
        .as_str()
        .or(error["type"].as_str())
        .filter(|code| !code.is_empty() && code.len() <= 64)
        .unwrap_or("http_error")
        .to_owned()
}

/// Finds an error event (`data: {"error": ...}`) and `data: [DONE]` in a stream fed in
/// pieces; keeps at most one line.
#[derive(Default)]
struct SseErrors {
    line: Vec<u8>,
    code: Option<String>,
    done: bool,
}

impl SseErrors {
    fn feed(&mut self, data: &[u8]) {
        for &byte in data {
            if byte == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.line_done(&line);
            } else if self.line.len() < MAX_ERROR_BODY {
                self.line.push(byte);
            }
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let Some(payload) = line.strip_prefix(b"data:") else {
            return;
        };
        let payload = payload.trim_ascii();
        if payload == b"[DONE]" {
            self.done = true;
        } else if self.code.is_none() && payload.starts_with(b"{\"error\"") {
            self.code = Some(error_code(payload));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_come_from_the_body_or_a_stream_event() {
        assert_eq!(
            error_code(br#"{"error":{"message":"m","type":"t","code":"budget_exceeded"}}"#),
            "budget_exceeded"
        );
        assert_eq!(
            error_code(br#"{"error":{"type":"server_error","code":null}}"#),
            "server_error"
        );
        assert_eq!(error_code(b"<html>"), "http_error");
        let mut sse = SseErrors::default();
        sse.feed(b"data: {\"choices\":[]}\n\ndata: {\"err");
        sse.feed(b"or\":{\"code\":\"upstream_failed\"}}\n\n");
        assert_eq!(sse.code.as_deref(), Some("upstream_failed"));
        assert!(!sse.done);
        sse.feed(b"data: [DONE]\n\n");
        assert!(sse.done);
    }

    #[test]
    fn p99_so_far_reads_the_finished_samples() {
        let live = Live::default();
        assert_eq!(live.p99_ms(), 0.0);
        for ms in 1..=100 {
            live.record(Sample {
                at: Duration::ZERO,
                latency: Duration::from_millis(ms),
                ttft: None,
                status: 200,
                code: None,
                cache_hit: false,
                stream: false,
            });
        }
        assert_eq!(live.p99_ms(), 100.0);
        assert_eq!(live.done.load(Ordering::Relaxed), 100);
    }
}
