//! `POST /v1/chat/completions`: parse → request phase → LLM step → response phase → reply,
//! as JSON or as server-sent events.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::App;
use super::app::Snapshot;
use super::http_util::{self, Body};
use crate::cache::{CacheControl, CacheStatus};
use crate::cost::{CostError, Meter};
use crate::llm::{Fill, StreamCharge};
use crate::openai::{
    ApiError, StreamAccumulator, parse_request, response_to_json, response_to_sse,
};
use crate::pipeline::{Forwarded, PipelineError};
use crate::router::{Reply, RouteError, UpstreamStream};
use crate::wit::ChatResponse;

/// Chunks buffered between the upstream reader and a slow client.
const STREAM_CHANNEL_CHUNKS: usize = 64;

/// What a chat completion reports in its response headers.
#[derive(Default)]
pub struct Report {
    /// The stages that ran (`x-weir-stages`).
    pub labels: Vec<Arc<str>>,
    /// How the cache was involved (`x-weir-cache`, `x-weir-semantic-similarity`).
    pub cache: Option<(CacheStatus, Option<f32>)>,
    /// The cache entry of the answer (`x-weir-cache-key`, for `DELETE /admin/cache?key=`).
    pub cache_key: Option<crate::cache::CacheKey>,
    /// What the request cost so far, pico-dollars (`x-weir-cost-usd`); `None` before the
    /// request was admitted.
    pub cost: Option<u64>,
    /// Fuel each stage burned (`x-weir-stage-fuel`).
    pub fuel: Vec<(Arc<str>, u64)>,
    /// The route the request ran on, once known.
    pub route: Option<Arc<str>>,
    /// Each stage phase that ran (`Server-Timing`, the request record).
    pub runs: Vec<crate::pipeline::StageRun>,
    /// Time spent in the LLM step: cache, routing and upstream (`Server-Timing`).
    pub llm: Option<std::time::Duration>,
    /// Each upstream attempt of the LLM step.
    pub attempts: Vec<crate::router::Attempt>,
    /// The key's name, once authenticated.
    pub key: Option<String>,
    /// The W3C trace the request joined (the client's, or a new one).
    pub trace: Option<crate::telemetry::TraceParent>,
}

impl Report {
    /// Notes what the stages did so far: labels, fuel, each phase.
    fn note_stages(&mut self, fwd: &Forwarded) {
        self.labels = fwd.stage_labels();
        self.fuel = fwd.fuel_by_stage();
        self.runs = fwd.runs().to_vec();
    }

    /// Time spent waiting on upstreams: the LLM step's attempts.
    pub fn upstream_time(&self) -> std::time::Duration {
        self.attempts.iter().map(|a| a.elapsed).sum()
    }
}

/// The key a request presents (`Authorization: Bearer`): its account, `None` when auth is
/// off, or the 401.
pub(super) fn authenticate(
    snap: &Snapshot,
    headers: &http::HeaderMap,
) -> Result<Option<Arc<crate::cost::Account>>, ApiError> {
    if !snap.accounts.auth_required() {
        return Ok(None);
    }
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let Some(bearer) = bearer else {
        return Err(cost_error(&CostError::Unauthorized(
            "no API key: send `Authorization: Bearer <key>`",
        )));
    };
    snap.accounts
        .authenticate(bearer)
        .map(Some)
        .ok_or_else(|| cost_error(&CostError::Unauthorized("the API key is not valid")))
}

/// The client-facing error for a cost refusal.
fn cost_error(err: &CostError) -> ApiError {
    let error_type = match err {
        CostError::Unauthorized(_) => "authentication_error",
        CostError::BudgetExceeded { .. } => "insufficient_quota",
        CostError::RateLimited { .. } => "rate_limit_error",
        _ => "invalid_request_error",
    };
    ApiError {
        retry_after_s: err.retry_after_s(),
        ..ApiError::new(err.status(), error_type, err.code(), err.to_string())
    }
}

/// Handles one chat completion, filling `report` for the response headers. The key is
/// checked before the body is read: a client without a valid key gets its 401 without weir
/// buffering a byte of its body.
pub async fn handle(
    app: &Arc<App>,
    request: Request<Incoming>,
    request_id: &Arc<str>,
    report: &mut Report,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    // The whole request runs on this snapshot, whatever reloads happen meanwhile.
    let snap = app.snapshot();
    let account = match authenticate(&snap, &parts.headers) {
        Ok(account) => account,
        Err(err) => return http_util::error(&err),
    };
    let body = match http_util::read_body(body, &parts.headers, &snap.config.server).await {
        Ok(body) => body,
        Err(err) => return http_util::error(&err),
    };
    complete_as(
        app,
        &snap,
        account,
        &parts.headers,
        &body,
        request_id,
        report,
    )
    .await
}

/// Runs one chat completion whose body has been read, for a caller already authenticated
/// as `account` (`None` when auth is off): admission, the request phase, the LLM step and
/// the response phase. `headers` are the request's (`Cache-Control`, `x-weir-deadline-ms`,
/// `traceparent`). A background job runs as the key that submitted it, without keeping the
/// key itself.
pub(super) async fn complete_as(
    app: &Arc<App>,
    snap: &Snapshot,
    account: Option<Arc<crate::cost::Account>>,
    headers: &http::HeaderMap,
    body: &[u8],
    request_id: &Arc<str>,
    report: &mut Report,
) -> Response<Body> {
    if report.trace.is_none() {
        // Not from the public listener (a background job): a trace of its own.
        report.trace = Some(crate::telemetry::join_trace(
            &tracing::Span::current(),
            None,
        ));
    }
    if let Some(account) = &account {
        report.key = Some(account.name().to_string());
        tracing::Span::current().record("weir.key", account.name());
    }
    if let Some(account) = &account
        && let Err(err) = account.admit_request()
    {
        return http_util::error(&cost_error(&err));
    }
    let meter = Meter::new(account);
    let response = serve(app, snap, headers, body, request_id, &meter, report).await;
    let fuel: u64 = report.fuel.iter().map(|(_, fuel)| fuel).sum();
    if let Some(route) = &report.route {
        snap.llm.costing().charge_fuel(&meter, route, fuel);
    }
    report.cost = Some(meter.total());
    response
}

async fn serve(
    app: &Arc<App>,
    snap: &Snapshot,
    headers: &http::HeaderMap,
    body: &[u8],
    request_id: &Arc<str>,
    meter: &Arc<Meter>,
    report: &mut Report,
) -> Response<Body> {
    let control = headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(CacheControl::parse)
        .unwrap_or_default();
    let deadline = match client_deadline(headers) {
        Ok(deadline) => deadline,
        Err(err) => return http_util::error(&err),
    };
    let chat = match parse_request(body) {
        Ok(chat) => chat,
        Err(err) => return http_util::error(&err),
    };
    let Some(pipeline) = snap.routes.get(&chat.model) else {
        return http_util::error(&model_not_found(snap, &chat.model));
    };
    report.route = Some(pipeline.route.clone());
    let span = tracing::Span::current();
    span.record("weir.route", &*pipeline.route);
    span.record("gen_ai.request.model", chat.model.as_str());
    if snap.config.telemetry.log_inputs {
        tracing::info!(
            target: "weir::input",
            messages = %crate::openai::request_to_json(&chat, None)["messages"],
            "request messages"
        );
    }
    let wants_stream = chat.stream;
    let include_usage = client_wants_usage(&chat.extra);
    let mut fwd = pipeline
        .start(&app.env, request_id.clone(), chat)
        .with_meter(meter.clone());

    let result = fwd.on_request().await;
    report.note_stages(&fwd);
    if let Err(err) = result {
        return http_util::error(&pipeline_error(&err));
    }
    let finish = Finish {
        as_stream: wants_stream,
        include_usage,
        meter,
        log_answer: snap.config.telemetry.log_inputs,
    };
    if let Some(answer) = fwd.take_answer() {
        return finish.whole(&mut fwd, answer, report).await;
    }

    let forward = forward_headers(request_id, report.trace, headers);
    let llm_started = tokio::time::Instant::now();
    let llm_span = tracing::debug_span!(
        target: "weir::llm",
        "weir.llm",
        otel.name = %format_args!("chat {}", fwd.request().model),
        gen_ai.operation.name = "chat",
        gen_ai.request.model = fwd.request().model.as_str(),
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.response.id = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        weir.cache = tracing::field::Empty,
        weir.attempts = tracing::field::Empty,
    );
    let step = snap
        .llm
        .complete(
            &pipeline.route,
            fwd.request(),
            &forward,
            deadline,
            control,
            meter,
            &mut report.attempts,
        )
        .instrument(llm_span.clone())
        .await;
    report.llm = Some(llm_started.elapsed());
    llm_span.record("weir.cache", step.cache.as_str());
    llm_span.record("weir.attempts", report.attempts.len());
    if let Ok(Reply::Json(response)) = &step.result {
        llm_span.record("gen_ai.response.model", response.model.as_str());
        llm_span.record("gen_ai.response.id", response.id.as_str());
        if let Some(usage) = response.usage {
            llm_span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
            llm_span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
        }
    }
    drop(llm_span);
    report.cache = Some((step.cache, step.similarity));
    report.cache_key = step.key;
    let fill = step.fill;
    let charge = step.charge;
    match step.result {
        Err(err) => http_util::error(&route_error_to_api(&err)),
        Ok(Reply::Json(response)) => finish.whole(&mut fwd, response, report).await,
        Ok(Reply::Stream(stream)) => {
            if fwd.needs_full_response() {
                match collect(stream).await {
                    Ok(response) => {
                        if let Some(charge) = charge {
                            charge.finish(response.usage, &response.text());
                        }
                        if let Some(fill) = fill {
                            fill.store(response.clone());
                        }
                        finish.whole(&mut fwd, response, report).await
                    }
                    Err(err) => http_util::error(&err),
                }
            } else {
                relay(fwd, stream, include_usage, fill, charge)
            }
        }
    }
}

/// How to answer with a whole response.
struct Finish<'a> {
    /// As SSE rather than JSON.
    as_stream: bool,
    /// Whether the client asked for the usage chunk.
    include_usage: bool,
    /// The request's meter, for `usage.cost`.
    meter: &'a Arc<Meter>,
    /// Log the answer's text (`telemetry.log_inputs`).
    log_answer: bool,
}

impl Finish<'_> {
    /// Runs the response phase on a whole response and answers as JSON or as SSE, with the
    /// request's cost in `usage.cost`.
    async fn whole(
        &self,
        fwd: &mut Forwarded,
        response: ChatResponse,
        report: &mut Report,
    ) -> Response<Body> {
        let as_stream = self.as_stream;
        let result = fwd.on_response(response).await;
        report.note_stages(fwd);
        let cost = crate::config::pico_to_usd(self.meter.total());
        if self.log_answer
            && let Ok(response) = &result
        {
            tracing::info!(target: "weir::input", answer = %response.text(), "answer");
        }
        match result {
            Err(err) => http_util::error(&pipeline_error(&err)),
            Ok(response) if as_stream => {
                let sse_text = response_to_sse(&response, self.include_usage);
                sse(http_util::full(with_cost_in_sse(sse_text, cost)))
            }
            Ok(response) => {
                let mut body = response_to_json(&response);
                if let Some(usage) = body.get_mut("usage").and_then(Value::as_object_mut) {
                    usage.insert("cost".into(), json!(cost));
                }
                http_util::json(200, &body)
            }
        }
    }
}

/// Adds `cost` to the usage chunk of an SSE body, if it has one.
fn with_cost_in_sse(text: String, cost: f64) -> String {
    if !text.contains("\"usage\"") {
        return text;
    }
    text.split("\n\n")
        .map(|event| match event.strip_prefix("data: ") {
            Some(data) if data != "[DONE]" => match serde_json::from_str::<Value>(data) {
                Ok(mut chunk) if chunk.get("usage").is_some_and(Value::is_object) => {
                    chunk["usage"]["cost"] = json!(cost);
                    format!("data: {chunk}")
                }
                _ => event.to_string(),
            },
            _ => event.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Reads a whole upstream stream into one response (for stages that rewrite the response).
async fn collect(mut stream: UpstreamStream) -> Result<ChatResponse, ApiError> {
    let mut acc = StreamAccumulator::default();
    let mut done = false;
    while let Some(event) = stream.next().await {
        let data = event.map_err(|err| stream_error(&stream.target, &err))?;
        if data == "[DONE]" {
            done = true;
            break;
        }
        if let Ok(chunk) = serde_json::from_str::<Value>(&data) {
            acc.push(&chunk);
        }
    }
    if !done {
        return Err(stream_error(
            &stream.target,
            "the stream ended without [DONE]",
        ));
    }
    Ok(acc.finish())
}

fn stream_error(target: &str, detail: &str) -> ApiError {
    ApiError::new(
        502,
        "upstream_error",
        "stream_interrupted",
        format!("upstream {target} broke off the stream: {detail}"),
    )
}

/// Relays a live upstream stream to the client chunk by chunk. A failure after the first
/// byte ends the stream with an explicit error event, never a silent truncation. When the
/// stream ends, stages with a response phase see the assembled response (observe only: the
/// client already has the bytes).
///
/// The stream's cost is settled when its usage chunk arrives (and added to that chunk as
/// `usage.cost`), or at its end from a local count of what was streamed when the upstream
/// sent no usage; a stream cut short is charged for its prompt and what did arrive.
///
/// The relay task ends as soon as the client is gone, even while it waits for the upstream:
/// a client that disconnects, or stops reading until `server.write_timeout_ms` closes its
/// connection (see `conn.rs`), drops the response body, which closes the channel; the task
/// then settles the charge and drops the upstream stream and the stage instances it holds.
fn relay(
    mut fwd: Forwarded,
    mut stream: UpstreamStream,
    include_usage: bool,
    fill: Option<Fill>,
    mut charge: Option<StreamCharge>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_CHANNEL_CHUNKS);
    tokio::spawn(async move {
        let mut acc = StreamAccumulator::default();
        let mut done = false;
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = tx.closed() => {
                    // The client went away while the upstream was quiet.
                    if let Some(charge) = charge.take() {
                        charge.finish(None, &acc.text());
                    }
                    return;
                }
            };
            let Some(event) = event else {
                break;
            };
            let data = match event {
                Ok(data) => data,
                Err(err) => {
                    if let Some(charge) = charge.take() {
                        charge.finish(None, &acc.text());
                    }
                    let _ = tx
                        .send(error_event(&stream_error(&stream.target, &err)))
                        .await;
                    return;
                }
            };
            if data == "[DONE]" {
                done = true;
                break;
            }
            let out = match serde_json::from_str::<Value>(&data) {
                Ok(mut chunk) => {
                    acc.push(&chunk);
                    if let Some(usage) = chunk.get("usage").and_then(crate::openai::parse_usage)
                        && let Some(pending) = charge.take()
                    {
                        let total = pending.finish(Some(usage), &acc.text());
                        chunk["usage"]["cost"] = json!(crate::config::pico_to_usd(total));
                    }
                    if !include_usage && strip_usage(&mut chunk) {
                        continue;
                    }
                    format!("data: {chunk}\n\n")
                }
                Err(_) => format!("data: {data}\n\n"),
            };
            if tx.send(Bytes::from(out)).await.is_err() {
                if let Some(charge) = charge.take() {
                    charge.finish(None, &acc.text());
                }
                return; // the client went away
            }
        }
        if let Some(charge) = charge.take() {
            charge.finish(None, &acc.text());
        }
        if !done {
            let err = stream_error(&stream.target, "the stream ended without [DONE]");
            let _ = tx.send(error_event(&err)).await;
            return;
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        drop(tx);
        let assembled = acc.finish();
        if let Some(fill) = fill {
            fill.store(assembled.clone());
        }
        if fwd.has_response_phase()
            && let Err(err) = fwd.on_response(assembled).await
        {
            tracing::warn!(error = %err, "response phase after a relayed stream failed");
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(Frame::data(bytes)), rx))
    });
    sse(BodyExt::boxed_unsync(StreamBody::new(frames)))
}

/// Removes usage the client did not ask for; true when the whole chunk should be dropped
/// (the usage-only chunk weir requested for itself).
fn strip_usage(chunk: &mut Value) -> bool {
    let Some(obj) = chunk.as_object_mut() else {
        return false;
    };
    let usage_only = obj
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.is_empty())
        && obj.get("usage").is_some_and(|u| !u.is_null());
    obj.remove("usage");
    usage_only
}

fn error_event(err: &ApiError) -> Bytes {
    Bytes::from(format!("data: {}\n\n", err.to_json()))
}

fn sse(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

/// A client's `x-weir-deadline-ms`: it may shorten the route's deadline, never lengthen it.
fn client_deadline(headers: &http::HeaderMap) -> Result<Option<std::time::Duration>, ApiError> {
    let Some(value) = headers.get("x-weir-deadline-ms") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(|ms| Some(std::time::Duration::from_millis(ms)))
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_deadline",
                None,
                "`x-weir-deadline-ms` must be a positive whole number of milliseconds",
            )
        })
}

/// Whether the client itself asked for the usage chunk (`stream_options.include_usage`).
fn client_wants_usage(extra: &str) -> bool {
    serde_json::from_str::<Value>(extra)
        .ok()
        .and_then(|v| v["stream_options"]["include_usage"].as_bool())
        .unwrap_or(false)
}

/// Headers every upstream call carries: `x-request-id`, and the W3C trace context
/// (`traceparent` naming weir's span, the client's `tracestate` passed on).
fn forward_headers(
    request_id: &str,
    trace: Option<crate::telemetry::TraceParent>,
    incoming: &http::HeaderMap,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(3);
    if let Ok(value) = HeaderValue::from_str(request_id) {
        out.push((HeaderName::from_static("x-request-id"), value));
    }
    if let Some(trace) = trace
        && let Ok(value) = HeaderValue::from_str(&trace.header())
    {
        out.push((HeaderName::from_static("traceparent"), value));
        if let Some(state) = incoming.get("tracestate") {
            out.push((HeaderName::from_static("tracestate"), state.clone()));
        }
    }
    out
}

/// The client-facing error for a routing failure: 502 listing every attempt, or the
/// upstream's own refusal with its status.
fn route_error_to_api(err: &RouteError) -> ApiError {
    let status = err.status();
    let error_type = if status < 500 {
        "invalid_request_error"
    } else {
        "upstream_error"
    };
    let retry_after_s = match err {
        RouteError::Overloaded { retry_after_s } => Some(*retry_after_s),
        RouteError::Cost(cost) => cost.retry_after_s(),
        _ => None,
    };
    ApiError {
        retry_after_s,
        ..ApiError::new(status, error_type, err.code(), err.to_string())
    }
}

/// The client-facing error for a pipeline failure.
fn pipeline_error(err: &PipelineError) -> ApiError {
    ApiError::new(
        err.status(),
        err.error_type(),
        err.code(),
        err.client_message(),
    )
}

/// 404 `model_not_found` for a model no route serves, listing those that exist.
pub(super) fn model_not_found(snap: &Snapshot, model: &str) -> ApiError {
    let mut known: Vec<&str> = snap.routes.keys().map(String::as_str).collect();
    known.sort_unstable();
    ApiError {
        param: Some("model".to_string()),
        ..ApiError::new(
            404,
            "invalid_request_error",
            "model_not_found",
            format!(
                "the model `{model}` does not exist; available: {}",
                known.join(", ")
            ),
        )
    }
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
