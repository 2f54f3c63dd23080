//! `weir bench`: an open-loop load generator for weir (or any OpenAI-compatible endpoint).
//!
//! Requests are sent at fixed intervals (`--rate` per second) whether or not earlier ones
//! have finished — each on its own task, so a slow answer never delays the next send and the
//! offered load stays what was asked (no coordinated omission). Latency runs from the moment a
//! request is handed to the client to its last body byte. Closed-loop tools that fire all
//! workers on one ticker measure their own bursts instead; this one spreads the load evenly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};

/// Arguments of `weir bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The URL to POST to (`http://127.0.0.1:8080/v1/chat/completions`).
    #[arg(long)]
    pub url: String,
    /// A file with the JSON body; default: a one-message chat for `--model`.
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// The model of the default body.
    #[arg(long, default_value = "demo")]
    pub model: String,
    /// Requests per second, evenly spaced.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Seconds to run (at most 300).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Requests in flight at most (keep-alive connections are pooled up to this).
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// A header sent with every request (`name: value`; repeatable), e.g. an
    /// `authorization: Bearer …` key.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Make every request's body distinct (the default body's message ends with the request's
    /// number; in a `--body` file, each `{n}` is replaced by it), so none is a cache hit.
    #[arg(long)]
    pub unique: bool,
}

/// Runs the load and prints one summary line.
pub fn run(args: BenchArgs) -> ExitCode {
    let body = match &args.body {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => Bytes::from(bytes),
            Err(err) => {
                eprintln!("error: {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => default_body(&args.model, None),
    };
    if args.unique && args.body.is_some() && !body.windows(3).any(|w| w == b"{n}") {
        eprintln!(
            "error: --unique with --body needs `{{n}}` in the body (replaced by each request's number)"
        );
        return ExitCode::FAILURE;
    }
    let mut headers = Vec::new();
    for header in &args.headers {
        match super::parse_header(header) {
            Some(header) => headers.push(header),
            None => {
                eprintln!("error: --header {header:?}: expected `name: value`");
                return ExitCode::FAILURE;
            }
        }
    }
    if args.rate == 0 || args.duration == 0 || args.duration > 300 {
        eprintln!("error: --rate must be > 0 and --duration within 1..=300 seconds");
        return ExitCode::FAILURE;
    }
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(load(args, body, headers))
}

/// The default body: one chat message for `model`, ending with `n` when given.
fn default_body(model: &str, n: Option<u64>) -> Bytes {
    let mut text = "Hello, my email is jane@example.com. What is a weir?".to_owned();
    if let Some(n) = n {
        text.push_str(&format!(" #{n}"));
    }
    Bytes::from(
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]})
            .to_string(),
    )
}

/// `body` with each `{n}` replaced by `n`.
fn numbered(body: &Bytes, n: u64) -> Bytes {
    let text = String::from_utf8_lossy(body);
    Bytes::from(text.replace("{n}", &n.to_string()))
}

async fn load(
    args: BenchArgs,
    body: Bytes,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
) -> ExitCode {
    let headers = Arc::new(headers);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.max_in_flight)
        .build(connector);
    let uri: http::Uri = match args.url.parse() {
        Ok(uri) => uri,
        Err(err) => {
            eprintln!("error: --url: {err}");
            return ExitCode::FAILURE;
        }
    };
    let total = u64::from(args.rate) * args.duration;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let slots = Arc::new(Semaphore::new(args.max_in_flight));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Duration, u16)>();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut dropped = 0u64;
    for n in 0..total {
        ticker.tick().await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let client = client.clone();
        let uri = uri.clone();
        let body = match (args.unique, args.body.is_some()) {
            (true, false) => default_body(&args.model, Some(n)),
            (true, true) => numbered(&body, n),
            (false, _) => body.clone(),
        };
        let headers = headers.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let mut request = Request::post(uri).header("content-type", "application/json");
            for (name, value) in headers.iter() {
                request = request.header(name, value);
            }
            let request = request.body(Full::new(body));
            let status = match request {
                Ok(request) => match client.request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.into_body().collect().await {
                            Ok(_) => status,
                            Err(_) => 0,
                        }
                    }
                    Err(_) => 0,
                },
                Err(_) => 0,
            };
            let _ = tx.send((sent.elapsed(), status));
            drop(permit);
        });
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(total as usize);
    let mut ok = 0u64;
    let mut failed = 0u64;
    // Failures by status (0: no response).
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    while let Some((latency, status)) = rx.recv().await {
        latencies.push(latency);
        if (200..300).contains(&status) {
            ok += 1;
        } else {
            failed += 1;
            *statuses.entry(status).or_default() += 1;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let statuses = statuses
        .iter()
        .map(|(status, n)| format!(" {status}x{n}"))
        .collect::<String>();
    let statuses = if statuses.is_empty() {
        String::new()
    } else {
        format!(" (status{statuses})")
    };
    println!(
        "rate {}/s for {}s: {} ok, {} failed{}, {} not sent (over --max-in-flight); \
         achieved {:.0} req/s; latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
        args.rate,
        args.duration,
        ok,
        failed,
        statuses,
        dropped,
        (ok + failed) as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    );
    if failed == 0 && dropped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
