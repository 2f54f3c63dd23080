//! The public listener's routes: `/v1/chat/completions`, `/v1/messages` (Anthropic's
//! Messages API) and `/v1/messages/count_tokens`, `/v1/responses` (OpenAI's Responses API),
//! `/v1/embeddings`, `/v1/jobs` (background jobs), `/v1/models` and `/v1/models/{id}`,
//! `/healthz`, `/readyz`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::HeaderValue;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tracing::Instrument;

use super::App;
use super::http_util::{self, Body};
use super::{chat, fronts};
use crate::app::{Ended, Report, Snapshot};
use crate::openai::ApiError;

/// Longest client-supplied `x-request-id` kept; longer or non-visible-ASCII ids are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Dispatches one public request, inside its `weir.request` span.
pub async fn handle(app: Arc<App>, request: Request<Incoming>) -> Response<Body> {
    let request_id: Arc<str> = request_id(&request).into();
    let incoming = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::telemetry::TraceParent::parse);
    let span = crate::telemetry::request_span(&request_id);
    let report = Report {
        trace: Some(crate::telemetry::join_trace(incoming)),
        parent: incoming.map(|parent| parent.span_id),
        ..Report::default()
    };
    dispatch(app, request, request_id, report)
        .instrument(span)
        .await
}

async fn dispatch(
    app: Arc<App>,
    request: Request<Incoming>,
    request_id: Arc<str>,
    mut report: Report,
) -> Response<Body> {
    let started = tokio::time::Instant::now();
    let _in_flight = crate::telemetry::InFlight::enter();
    let path = request.uri().path().to_string();
    // The endpoints that run a route, recorded as requests.
    let endpoint = match path.as_str() {
        "/v1/chat/completions" => Some("/v1/chat/completions"),
        "/v1/messages" => Some("/v1/messages"),
        "/v1/responses" => Some("/v1/responses"),
        "/v1/embeddings" => Some("/v1/embeddings"),
        _ => None,
    }
    .filter(|_| request.method() == Method::POST);
    let is_chat = endpoint.is_some();
    let method = request.method().clone();
    let mut response = match (request.method(), path.as_str()) {
        (&Method::POST, "/v1/chat/completions") => {
            chat::handle(&app, request, &request_id, &mut report).await
        }
        (&Method::POST, "/v1/messages") => {
            let front = fronts::Messages::default();
            chat::handle_as(&app, request, &request_id, &mut report, front).await
        }
        (&Method::POST, "/v1/responses") => {
            let front = fronts::Responses::default();
            chat::handle_as(&app, request, &request_id, &mut report, front).await
        }
        (&Method::POST, "/v1/messages/count_tokens") => count_tokens(&app, request).await,
        (&Method::POST, "/v1/embeddings") => {
            super::embeddings::handle(&app, request, &request_id, &mut report).await
        }
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            let snap = app.snapshot();
            match chat::authenticate(&snap, request.headers()) {
                Ok(_) => model(&snap, &p["/v1/models/".len()..]),
                Err(err) => http_util::error(&err),
            }
        }
        (_, p) if p == "/v1/jobs" || p.starts_with("/v1/jobs/") => {
            super::jobs::handle(&app, request).await
        }
        (&Method::GET, "/v1/models") => {
            // Like OpenAI's: with `[[keys]]`, listing the routes needs a key too.
            let snap = app.snapshot();
            match chat::authenticate(&snap, request.headers()) {
                Ok(_) => http_util::json(200, &models(&snap)),
                Err(err) => http_util::error(&err),
            }
        }
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
        (
            _,
            "/v1/chat/completions"
            | "/v1/messages"
            | "/v1/messages/count_tokens"
            | "/v1/responses"
            | "/v1/embeddings"
            | "/v1/models"
            | "/healthz"
            | "/readyz",
        ) => http_util::error(&ApiError::new(
            405,
            "invalid_request_error",
            "method_not_allowed",
            format!("{} is not allowed on {path}", request.method()),
        )),
        _ => http_util::error(&ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("no such endpoint: {path}"),
        )),
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let failure = response.extensions().get::<http_util::Failure>().cloned();
    if is_chat {
        tracing::debug!(
            target: "weir::request",
            status,
            route = report.route.as_deref().unwrap_or("-"),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "request done"
        );
    }
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
    if !report.degraded.is_empty() {
        let degraded = report.degraded.iter().map(|s| &**s).collect::<Vec<_>>();
        if let Ok(value) = HeaderValue::from_str(&degraded.join(", ")) {
            headers.insert("x-weir-degraded", value);
        }
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
    if report.route.is_some()
        && let Ok(value) = HeaderValue::from_str(&server_timing(&report, elapsed))
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
    if is_chat {
        let outcome = Outcome {
            status,
            failure,
            started,
            elapsed,
            method,
        };
        let endpoint = endpoint.unwrap_or("-");
        count(&report, &outcome);
        match report.stream_end.take() {
            // A relayed stream is recorded at its end, with its final cost and how it ended.
            Some(end) if streamed && keeps(&app, &report) => {
                let app = app.clone();
                tokio::spawn(async move {
                    let end = end.await.ok();
                    keep(&app, report, outcome, request_id, endpoint, end);
                });
            }
            _ => keep(&app, report, outcome, request_id, endpoint, None),
        }
    }
    response
}

/// `POST /v1/messages/count_tokens`, with the key checked before the body is read.
async fn count_tokens(app: &App, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let snap = app.snapshot();
    if let Err(err) = chat::authenticate(&snap, &parts.headers) {
        return fronts::messages_error(&err);
    }
    let body = match http_util::read_body(body, &parts.headers, &snap.config.server).await {
        Ok(body) => body,
        Err(err) => return fronts::messages_error(&err),
    };
    match fronts::count_tokens(&snap, &body) {
        Ok(value) => http_util::json(200, &value),
        Err(err) => fronts::messages_error(&err),
    }
}

/// `GET /v1/models/{id}`: a route's model object, or a 404 naming it.
fn model(snap: &Snapshot, id: &str) -> Response<Body> {
    if snap.routes.contains_key(id) {
        return http_util::json(
            200,
            &json!({ "id": id, "object": "model", "created": 0, "owned_by": "weir" }),
        );
    }
    let mut err = ApiError::new(
        404,
        "invalid_request_error",
        "model_not_found",
        format!("The model `{id}` does not exist"),
    );
    err.param = Some("model".to_owned());
    http_util::error(&err)
}

/// How a chat completion ended, for [`record`].
struct Outcome {
    status: u16,
    failure: Option<http_util::Failure>,
    started: tokio::time::Instant,
    elapsed: std::time::Duration,
    method: Method,
}

/// Counts a chat completion once its headers are set: the request metrics (a stream's time
/// is to its headers), the cache and shed counters.
fn count(report: &Report, outcome: &Outcome) {
    let route = report.route.as_deref().unwrap_or("-");
    if let Some((cache, _)) = report.cache {
        crate::telemetry::cache(route, cache.as_str());
    }
    let overhead = report
        .route
        .as_ref()
        .map(|_| outcome.elapsed.saturating_sub(report.upstream_time()));
    crate::telemetry::request(route, outcome.status, outcome.elapsed, overhead);
    if let Some(reason) = report.shed {
        crate::telemetry::shed(route, reason.as_str());
    }
}

/// Whether the request's record is kept in the ring or exported.
fn keeps(app: &App, report: &Report) -> bool {
    app.recent.enabled() || crate::telemetry::exported(report.trace)
}

/// Keeps a finished chat completion's record in the recent-requests ring and exports its
/// spans when its trace is sampled; a relayed stream's once it `ended`, with its final cost
/// and, when it broke off or its client left, why (its status stays the 200 it sent).
fn keep(
    app: &App,
    mut report: Report,
    outcome: Outcome,
    request_id: Arc<str>,
    endpoint: &'static str,
    ended: Option<crate::app::StreamEnd>,
) {
    if !keeps(app, &report) {
        return;
    }
    let Outcome {
        status,
        failure,
        started,
        elapsed,
        method,
    } = outcome;
    let mut error = failure.map(|f| (f.code, f.message));
    let mut stream = None;
    if let Some(ended) = ended {
        report.cost = Some(ended.cost);
        error = error.or(ended.error);
        stream = Some(started.elapsed());
    }
    let exported = crate::telemetry::exported(report.trace);
    let record = report.into_record(Ended {
        id: request_id,
        method,
        endpoint,
        status,
        error,
        started,
        elapsed,
        stream,
    });
    let kept = app.recent.push(record);
    if exported {
        crate::telemetry::export(kept);
    }
}

/// `Server-Timing`: each stage phase (`stage1;desc="pii-redact@bd3bec7e request";dur=0.12`),
/// the LLM step's own work with how the cache was involved (`llm;desc="miss";dur=0.3`: cache,
/// routing, queueing), the time spent waiting on upstream attempts
/// (`upstream;desc="primary";dur=41.4`, naming the target that answered or was tried last),
/// each service call a stage made (`svc1;desc="search 200";dur=3.1`, inside its stage's
/// time), and `total`, in milliseconds. The parts never add up to more than the total.
fn server_timing(report: &Report, total: std::time::Duration) -> String {
    use std::fmt::Write;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let mut out = String::new();
    for (i, run) in report.runs.iter().enumerate() {
        let _ = write!(
            out,
            "stage{};desc=\"{} {}\";dur={:.3}, ",
            i + 1,
            run.label,
            run.phase.as_str(),
            ms(run.elapsed)
        );
    }
    for (i, call) in report.services.iter().enumerate() {
        let status = call
            .status
            .map_or_else(|| call.outcome.to_string(), |s| s.to_string());
        let _ = write!(
            out,
            "svc{};desc=\"{} {status}\";dur={:.3}, ",
            i + 1,
            call.service,
            ms(call.elapsed)
        );
    }
    if let Some(llm) = report.llm {
        let cache = report.cache.map_or("bypass", |(status, _)| status.as_str());
        let upstream = report.upstream_time().min(llm);
        let _ = write!(
            out,
            "llm;desc=\"{cache}\";dur={:.3}, ",
            ms(llm.saturating_sub(upstream))
        );
        if let Some(last) = report
            .attempts
            .iter()
            .rev()
            .find(|a| a.outcome.is_attempt())
        {
            let _ = write!(
                out,
                "upstream;desc=\"{}\";dur={:.3}, ",
                last.target,
                ms(upstream)
            );
        }
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

/// The body of `GET /v1/models`.
pub fn models(snap: &Snapshot) -> Value {
    let mut ids: Vec<&String> = snap.routes.keys().collect();
    ids.sort();
    json!({
        "object": "list",
        "data": ids.iter().map(|id| json!({
            "id": id, "object": "model", "created": 0, "owned_by": "weir"
        })).collect::<Vec<_>>(),
    })
}
