//! `/v1/jobs`: background jobs over HTTP, and what the queue needs from the server (running
//! an attempt through the pipeline; delivering a callback, which `callback` does).
//!
//! - `POST /v1/jobs`: the body of `/v1/chat/completions` plus optional `callback_url`,
//!   `priority` (0 to 9, higher first, default 5) and `idempotency_key`; 202 with the job and
//!   a `Location` once it is durable (200 with the existing job for a repeated key), 429 with
//!   `Retry-After` when the queue is full.
//! - `GET /v1/jobs/{id}`, `GET /v1/jobs?status=&limit=` (with the queue's counters),
//!   `DELETE /v1/jobs/{id}` (a queued job), `POST /v1/jobs/{id}/retry` (a dead job).
//!
//! With `[[keys]]`, every call needs a key, and a key sees only its own jobs; a job runs as
//! the key that submitted it (by name: the key itself is never stored).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::App;
use super::callback::CallbackClient;
use super::chat::{self, Report};
use super::http_util::{self, Body};
use crate::openai::{ApiError, parse_request};
use crate::queue::{
    CallbackUrlError, ChangeError, Delivery, DeliveryError, Failure, JobSpec, Outcome, Queue,
    ResolveError, Run, Status, SubmitError, Verdict, job_json,
};

/// Priority of a job that names none.
const DEFAULT_PRIORITY: u8 = 5;
/// Highest priority.
const MAX_PRIORITY: u64 = 9;
/// Longest idempotency key, bytes.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;
/// Jobs listed when the query sets no `limit`, and the most it may ask for.
const DEFAULT_LIST_LIMIT: usize = 100;
const MAX_LIST_LIMIT: usize = 1000;
/// Request headers kept with a job: they change how it runs. `Authorization` is not kept;
/// the job runs as the key's name.
const KEPT_HEADERS: [&str; 2] = ["cache-control", "x-weir-deadline-ms"];

/// Dispatches `/v1/jobs` and `/v1/jobs/...`.
pub async fn handle(app: &Arc<App>, request: Request<Incoming>) -> Response<Body> {
    match route(app, request).await {
        Ok(response) => response,
        Err(err) => http_util::error(&err),
    }
}

async fn route(app: &Arc<App>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let Some(queue) = &app.jobs else {
        return Err(ApiError::new(
            404,
            "invalid_request_error",
            "jobs_not_enabled",
            "background jobs are not enabled: no route has a `jobs` table",
        ));
    };
    let snap = app.snapshot();
    let owner = match chat::authenticate(&snap, request.headers())? {
        Some(account) => account.name().to_string(),
        None => "-".to_string(),
    };
    let path = request.uri().path().to_string();
    let rest = path
        .strip_prefix("/v1/jobs")
        .unwrap_or("")
        .trim_start_matches('/');
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = request.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::POST, []) => submit(app, queue, request, owner).await,
        (&Method::GET, []) => list(queue, request.uri().query().unwrap_or(""), &owner).await,
        (&Method::GET, [id]) => {
            let job = found(queue.get(id, Some(&owner)).map_err(store_error)?, id)?;
            Ok(http_util::json(200, &job_json(&job)))
        }
        (&Method::DELETE, [id]) => {
            let job = queue.cancel(id, Some(&owner)).await.map_err(change_error)?;
            Ok(http_util::json(200, &job_json(&job)))
        }
        (&Method::POST, [id, "retry"]) => {
            let job = queue.retry(id, Some(&owner)).await.map_err(change_error)?;
            Ok(located(http_util::json(202, &job_json(&job)), &job.id))
        }
        (_, [] | [_] | [_, "retry"]) => Err(ApiError::new(
            405,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("no such endpoint: {path}"),
        )),
    }
}

/// `POST /v1/jobs`.
async fn submit(
    app: &Arc<App>,
    queue: &Queue,
    request: Request<Incoming>,
    owner: String,
) -> Result<Response<Body>, ApiError> {
    let snap = app.snapshot();
    let (parts, body) = request.into_parts();
    let body = http_util::read_body(body, &parts.headers, &snap.config.server).await?;
    let mut value: Value = serde_json::from_slice(&body).map_err(|err| {
        ApiError::invalid(
            "invalid_json",
            None,
            format!("the body is not valid JSON: {err}"),
        )
    })?;
    let Some(fields) = value.as_object_mut() else {
        return Err(ApiError::invalid(
            "invalid_request",
            None,
            "the body must be a JSON object",
        ));
    };
    let callback_url = take_string(fields, "callback_url", 2048)?;
    let idempotency_key = take_string(fields, "idempotency_key", MAX_IDEMPOTENCY_KEY_LEN)?;
    let priority = match fields.remove("priority") {
        None | Some(Value::Null) => DEFAULT_PRIORITY,
        Some(v) => match v.as_u64() {
            Some(p) if p <= MAX_PRIORITY => p as u8,
            _ => {
                return Err(ApiError::invalid(
                    "invalid_priority",
                    Some("priority"),
                    format!("`priority` must be a whole number from 0 to {MAX_PRIORITY}, got {v}"),
                ));
            }
        },
    };
    // A job's answer is collected whole: it is never streamed.
    fields.insert("stream".into(), Value::Bool(false));
    fields.remove("stream_options");
    let bytes = serde_json::to_vec(&value)
        .map_err(|err| ApiError::new(500, "server_error", "internal_error", err.to_string()))?;
    // The same checks the synchronous endpoint makes, now rather than at the first attempt.
    let chat = parse_request(&bytes)?;
    if !snap.routes.contains_key(&chat.model) {
        return Err(super::chat::model_not_found(&snap, &chat.model));
    }
    if !queue.takes(&chat.model) {
        return Err(ApiError {
            param: Some("model".into()),
            ..ApiError::invalid(
                "jobs_not_enabled_for_model",
                None,
                format!(
                    "the model `{}` does not take background jobs (its route has no `jobs` \
                     table)",
                    chat.model
                ),
            )
        });
    }
    if let Some(url) = &callback_url {
        if queue.settings().callback_secret.is_none() {
            return Err(ApiError::invalid(
                "callbacks_not_configured",
                Some("callback_url"),
                "callbacks need a signing key: set jobs.callback_secret_env in the config",
            ));
        }
        check_callback_url(queue, url).await?;
    }
    let headers = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(*name)?.to_str().ok()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    let spec = JobSpec {
        route: chat.model,
        owner,
        priority,
        request: value,
        headers,
        callback_url,
        idempotency_key,
    };
    match queue.submit(spec).await {
        Ok(submitted) => {
            let status = if submitted.existing { 200 } else { 202 };
            Ok(located(
                http_util::json(status, &job_json(&submitted.job)),
                &submitted.job.id,
            ))
        }
        Err(SubmitError::Full {
            depth,
            max,
            retry_after_s,
        }) => Err(ApiError {
            retry_after_s: Some(retry_after_s),
            ..ApiError::new(
                429,
                "rate_limit_error",
                "queue_full",
                format!(
                    "the job queue is full ({depth} of {max} jobs queued or running); retry \
                     after {retry_after_s} s"
                ),
            )
        }),
        Err(SubmitError::Store(err)) => Err(store_error(err)),
    }
}

/// Refuses (400) a `callback_url` that can never be delivered: the form and host gates, the
/// address gates for an IP literal, and for a name the address gates on what it resolves to
/// now (a name that does not resolve now is left to the delivery, which checks again).
async fn check_callback_url(queue: &Queue, url: &str) -> Result<(), ApiError> {
    let invalid = |err: CallbackUrlError| {
        ApiError::invalid(
            "invalid_callback_url",
            Some("callback_url"),
            err.to_string(),
        )
    };
    let destinations = queue.destinations();
    let target = destinations.check_url(url).map_err(invalid)?;
    if target.literal.is_none() {
        let bound = queue.settings().callback_connect_timeout;
        match tokio::time::timeout(bound, destinations.resolve(&target)).await {
            Ok(Err(ResolveError::Refused(err))) => return Err(invalid(err)),
            Ok(Err(err)) => tracing::debug!(error = %err, "callback host does not resolve now"),
            Err(_) => tracing::debug!(host = %target.host, "callback host: no answer from DNS"),
            Ok(Ok(_)) => {}
        }
    }
    Ok(())
}

/// Removes the optional string field `name` (at most `max` bytes) from the body.
fn take_string(
    fields: &mut Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(
            &format!("invalid_{name}"),
            Some(name),
            format!("`{name}` must be a non-empty string of at most {max} bytes"),
        )),
    }
}

/// `GET /v1/jobs?status=&limit=`.
async fn list(queue: &Queue, query: &str, owner: &str) -> Result<Response<Body>, ApiError> {
    let mut status = None;
    let mut limit = DEFAULT_LIST_LIMIT;
    for (name, value) in query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
    {
        match name {
            "status" => {
                status = Some(Status::parse(value).ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_status",
                        Some("status"),
                        format!(
                            "`status` must be one of queued, running, succeeded, failed, dead, \
                             cancelled; got {value:?}"
                        ),
                    )
                })?);
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_LIST_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "invalid_limit",
                            Some("limit"),
                            format!("`limit` must be from 1 to {MAX_LIST_LIMIT}"),
                        )
                    })?;
            }
            other => {
                return Err(ApiError::invalid(
                    "unknown_parameter",
                    Some(other),
                    format!("unknown parameter {other:?}; use status and limit"),
                ));
            }
        }
    }
    let queue_for_list = queue.clone();
    let owner_for_list = owner.to_string();
    let jobs = tokio::task::spawn_blocking(move || {
        queue_for_list.list(status, Some(&owner_for_list), limit)
    })
    .await
    .map_err(|err| {
        ApiError::new(
            500,
            "server_error",
            "job_store_unavailable",
            err.to_string(),
        )
    })?
    .map_err(store_error)?;
    let stats = queue.stats();
    Ok(http_util::json(
        200,
        &json!({
            "object": "list",
            "data": jobs.iter().map(job_json).collect::<Vec<_>>(),
            "stats": {
                "queued": stats.queued,
                "waiting": stats.waiting,
                "running": stats.running,
                "max_queued": stats.max_queued,
                "duplicate_executions": stats.duplicate_executions,
                "drained_last_minute": stats.drained_last_minute,
                "oldest_queued_age_s": stats.oldest_queued_age_s,
            },
        }),
    ))
}

/// `Location: /v1/jobs/{id}`.
fn located(mut response: Response<Body>, id: &str) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

fn found(job: Option<crate::queue::Job>, id: &str) -> Result<crate::queue::Job, ApiError> {
    job.ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        404,
        "invalid_request_error",
        "job_not_found",
        format!("no job `{id}`"),
    )
}

fn store_error(err: crate::queue::StoreError) -> ApiError {
    tracing::error!(error = %err, "job store");
    ApiError::new(
        500,
        "server_error",
        "job_store_unavailable",
        "the job store could not be read or written; nothing was changed",
    )
}

fn change_error(err: ChangeError) -> ApiError {
    match err {
        ChangeError::NotFound(id) => not_found(&id),
        ChangeError::Conflict { id, status } => ApiError::new(
            409,
            "invalid_request_error",
            "job_conflict",
            format!(
                "job `{id}` is {}: only a queued job can be cancelled and only a dead job \
                 retried",
                status.as_str()
            ),
        ),
        ChangeError::Submit(SubmitError::Full {
            depth,
            max,
            retry_after_s,
        }) => ApiError {
            retry_after_s: Some(retry_after_s),
            ..ApiError::new(
                429,
                "rate_limit_error",
                "queue_full",
                format!("the job queue is full ({depth} of {max} jobs queued or running)"),
            )
        },
        ChangeError::Submit(SubmitError::Store(err)) | ChangeError::Store(err) => store_error(err),
    }
}

impl App {
    /// Starts the job workers and the callback sender, when some route takes jobs. They hold
    /// the app weakly, so they never keep it alive. `listeners` are weir's own addresses as
    /// bound: callbacks never go there.
    pub fn start_jobs(self: &Arc<Self>, listeners: &[SocketAddr]) {
        let Some(queue) = &self.jobs else {
            return;
        };
        let destinations = queue.destinations();
        destinations.set_listeners(listeners);
        let sender = CallbackClient::new(destinations, queue.settings()).map_err(|err| {
            tracing::error!(error = %err, "cannot build the callback client; callbacks fail");
            err.to_string()
        });
        let deliver = move |delivery: Delivery| {
            let sender = sender.clone();
            async move {
                match sender {
                    Ok(sender) => sender.deliver(delivery).await,
                    Err(err) => Err(DeliveryError::new(Failure::Unreachable, err)),
                }
            }
        };
        let app = Arc::downgrade(self);
        let executor = move |run: Run| execute(app.clone(), run);
        queue.start(Arc::new(executor), Arc::new(deliver));
    }
}

/// Runs one attempt of a job through the pipeline, as the synchronous endpoint would, and
/// classifies the answer: 2xx succeeded; 408, 429 and 5xx worth another attempt; any other
/// status final.
async fn execute(app: Weak<App>, run: Run) -> Outcome {
    let outcome = |verdict, status, body: Option<Value>, cost_pico, retry_after| {
        let error = (verdict != Verdict::Succeeded).then(|| {
            let error = body.as_ref().map(|b| &b["error"]);
            format!(
                "{status} {}: {}",
                error.and_then(|e| e["code"].as_str()).unwrap_or("error"),
                error
                    .and_then(|e| e["message"].as_str())
                    .unwrap_or("no message")
            )
        });
        Outcome {
            verdict,
            status,
            body,
            error,
            cost_pico,
            retry_after,
        }
    };
    let Some(app) = app.upgrade() else {
        return outcome(Verdict::Retry, 503, None, 0, None);
    };
    let snap = app.snapshot();
    let account = if snap.accounts.auth_required() {
        match snap.accounts.all().find(|a| a.name() == run.spec.owner) {
            Some(account) => Some(account.clone()),
            None => {
                let err = ApiError::new(
                    401,
                    "authentication_error",
                    "invalid_api_key",
                    format!(
                        "the key `{}` that submitted this job is no longer configured",
                        run.spec.owner
                    ),
                );
                return outcome(Verdict::Fail, 401, Some(err.to_json()), 0, None);
            }
        }
    } else {
        None
    };
    let mut headers = http::HeaderMap::new();
    for (name, value) in &run.spec.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    let body = run.spec.request.to_string();
    let request_id: Arc<str> = format!("{}-{}", run.id, run.attempt).into();
    let mut report = Report::default();
    let response = chat::complete_as(
        &app,
        &snap,
        account,
        &headers,
        body.as_bytes(),
        &request_id,
        &mut report,
    )
    .await;
    let status = response.status().as_u16();
    let retry_after = crate::providers::retry_after(response.headers());
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let body = serde_json::from_slice::<Value>(&bytes).ok();
    let verdict = match status {
        200..=299 => Verdict::Succeeded,
        408 | 429 | 500.. => Verdict::Retry,
        _ => Verdict::Fail,
    };
    outcome(verdict, status, body, report.cost.unwrap_or(0), retry_after)
}
