//! The public listener's routes: `/v1/chat/completions`, `/v1/jobs` (background jobs),
//! `/v1/models`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::HeaderValue;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde_json::json;

use super::App;
use super::chat;
use super::http_util::{self, Body};
use crate::openai::ApiError;

/// Longest client-supplied `x-request-id` kept; longer or non-visible-ASCII ids are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Dispatches one public request.
pub async fn handle(app: Arc<App>, request: Request<Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let request_id: Arc<str> = request_id(&request).into();
    let mut report = chat::Report::default();
    let path = request.uri().path().to_string();
    let mut response = match (request.method(), path.as_str()) {
        (&Method::POST, "/v1/chat/completions") => {
            chat::handle(&app, request, &request_id, &mut report).await
        }
        (_, p) if p == "/v1/jobs" || p.starts_with("/v1/jobs/") => {
            super::jobs::handle(&app, request).await
        }
        (&Method::GET, "/v1/models") => http_util::json(200, &chat::models(&app.snapshot())),
        (&Method::GET, "/healthz") => http_util::json(200, &json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            if app.draining.load(Ordering::Relaxed) {
                http_util::error(&ApiError::new(
                    503,
                    "server_error",
                    "draining",
                    "shutting down",
                ))
            } else {
                http_util::json(200, &json!({"status": "ready"}))
            }
        }
        (_, "/v1/chat/completions" | "/v1/models" | "/healthz" | "/readyz") => {
            http_util::error(&ApiError::new(
                405,
                "invalid_request_error",
                "method_not_allowed",
                format!("{} is not allowed on {path}", request.method()),
            ))
        }
        _ => http_util::error(&ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("no such endpoint: {path}"),
        )),
    };
    let status = response.status().as_u16();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", value);
    }
    if let Some((status, similarity)) = report.cache {
        headers.insert("x-weir-cache", HeaderValue::from_static(status.as_str()));
        if let Some(similarity) = similarity
            && let Ok(value) = HeaderValue::from_str(&format!("{similarity:.3}"))
        {
            headers.insert("x-weir-semantic-similarity", value);
        }
    }
    if let Some(key) = report.cache_key
        && let Ok(value) = HeaderValue::from_str(&key.to_hex())
    {
        headers.insert("x-weir-cache-key", value);
    }
    let stages = report
        .labels
        .iter()
        .map(|l| &**l)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&stages) {
        headers.insert("x-weir-stages", value);
    }
    // A stream's cost is not known when its headers go out; it is in its usage chunk.
    let streamed = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if let Some(cost) = report.cost
        && !streamed
        && let Ok(value) = HeaderValue::from_str(&crate::cost::format_usd(cost))
    {
        headers.insert("x-weir-cost-usd", value);
    }
    if let Some(cost) = report.cost {
        tracing::debug!(
            target: "weir::request",
            request_id = &*request_id,
            route = report.route.as_deref().unwrap_or("-"),
            status,
            cache = report.cache.map_or("-", |(status, _)| status.as_str()),
            cost_usd = crate::config::pico_to_usd(cost),
            "request done"
        );
    }
    if report.route.is_some()
        && let Ok(value) = HeaderValue::from_str(&server_timing(&report, started.elapsed()))
    {
        headers.insert("server-timing", value);
    }
    if !report.fuel.is_empty() {
        let fuel = report
            .fuel
            .iter()
            .map(|(label, fuel)| format!("{label}={fuel}"))
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(value) = HeaderValue::from_str(&fuel) {
            headers.insert("x-weir-stage-fuel", value);
        }
    }
    response
}

/// `Server-Timing`: each stage phase (`stage1;desc="pii-redact@bd3bec7e request";dur=0.12`),
/// the LLM step with how the cache was involved (`llm;desc="miss";dur=41.7`), and `total`,
/// in milliseconds. The parts never add up to more than the total.
fn server_timing(report: &chat::Report, total: std::time::Duration) -> String {
    use std::fmt::Write;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let mut out = String::new();
    for (i, (label, phase, elapsed)) in report.runs.iter().enumerate() {
        let phase = match phase {
            crate::pipeline::Phase::Request => "request",
            crate::pipeline::Phase::Response => "response",
        };
        let _ = write!(
            out,
            "stage{};desc=\"{} {phase}\";dur={:.3}, ",
            i + 1,
            label,
            ms(*elapsed)
        );
    }
    if let Some(llm) = report.llm {
        let cache = report.cache.map_or("bypass", |(status, _)| status.as_str());
        let _ = write!(out, "llm;desc=\"{cache}\";dur={:.3}, ", ms(llm));
    }
    let _ = write!(out, "total;dur={:.3}", ms(total));
    out
}

/// The client's `x-request-id` when it is sane, else a fresh random id.
fn request_id<B>(request: &Request<B>) -> String {
    if let Some(id) = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_LEN
                && id.bytes().all(|b| b.is_ascii_graphic())
        })
    {
        return id.to_string();
    }
    format!(
        "req-{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}
