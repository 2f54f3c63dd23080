//! `/v1/jobs`: background jobs over HTTP, and starting the queue's workers with what they
//! need: the app's executor (each attempt runs through `App::chat`) and the callback sender
//! (`callback`, an HTTP client).
//!
//! - `POST /v1/jobs`: the body of `/v1/chat/completions` plus optional `callback_url`,
//!   `priority` (0 to 9, higher first, default 5) and `idempotency_key`; 202 with the job and
//!   a `Location` once it is durable (200 with the existing job for a repeated key), 429 with
//!   `Retry-After` when the queue, or the key's share of it, is full.
//! - `GET /v1/jobs/{id}`, `GET /v1/jobs?status=&limit=&after=` (newest first from an index,
//!   `after` a job id to page on, with `has_more` and the queue's counters),
//!   `DELETE /v1/jobs/{id}` (a queued job), `POST /v1/jobs/{id}/retry` (a dead job).
//!
//! With `[[keys]]`, every call needs a key, and a key sees only its own jobs; a job runs as
//! the key that submitted it (by name: the key itself is never stored).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderValue, LOCATION};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::App;
use super::callback::CallbackClient;
use super::chat;
use super::http_util::{self, Body};
use crate::app::UnknownModel;
use crate::openai::{ApiError, parse_request};
use crate::queue::{
    ANONYMOUS, CallbackUrlError, ChangeError, Delivery, DeliveryError, Failure, JobSpec, Queue,
    ResolveError, Status, SubmitError, job_json,
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
        None => ANONYMOUS.to_string(),
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
            let job = found(queue.find(id, Some(&owner)).await.map_err(store_error)?, id)?;
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
        return Err(ApiError::from_facing(&UnknownModel::new(
            &snap,
            &chat.model,
        )));
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
    // Checked now, as the chat endpoint checks it: a job accepted with a deadline it cannot
    // run under would only fail later.
    crate::app::client_deadline(parts.headers.get("x-weir-deadline-ms"))?;
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
        Err(SubmitError::Store(err)) => Err(store_error(err)),
        Err(SubmitError::State(err)) => {
            tracing::warn!(error = %err, "job refused: the shared job queue is unavailable");
            Err(ApiError::from_facing(&SubmitError::State(err)))
        }
        Err(err) => Err(ApiError::from_facing(&err)),
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

/// The operator's view of jobs on the admin listener (any key's, no API key needed: the admin
/// listener's own checks have passed):
///
/// - `GET /admin/jobs?key=NAME[&status=S&limit=N&after=ID]`: one key's jobs (`-` for those
///   submitted without auth), newest first, with the queue's counters;
/// - `GET /admin/jobs/ID`: a job with its attempt log;
/// - `POST /admin/jobs/ID/retry`: a dead job queued again;
/// - `DELETE /admin/jobs/ID`: a queued job cancelled.
pub async fn admin(app: &Arc<App>, request: Request<Incoming>) -> Response<Body> {
    match admin_route(app, request).await {
        Ok(response) => response,
        Err(err) => http_util::error(&err),
    }
}

async fn admin_route(
    app: &Arc<App>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(queue) = &app.jobs else {
        return Err(ApiError::new(
            404,
            "invalid_request_error",
            "jobs_not_enabled",
            "background jobs are not enabled: no route has a `jobs` table",
        ));
    };
    let path = request.uri().path().to_string();
    let rest = path
        .strip_prefix("/admin/jobs")
        .unwrap_or("")
        .trim_start_matches('/');
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (request.method(), segments.as_slice()) {
        (&Method::GET, []) => {
            let query = request.uri().query().unwrap_or("");
            let mut key = None;
            let rest: Vec<&str> = (query.split('&'))
                .filter(|p| !p.is_empty())
                .filter(|p| match p.strip_prefix("key=") {
                    Some(value) => {
                        key = Some(value.to_owned());
                        false
                    }
                    None => true,
                })
                .collect();
            let Some(key) = key.filter(|k| !k.is_empty()) else {
                return Err(ApiError::invalid(
                    "missing_key",
                    Some("key"),
                    "`key` names whose jobs to list (`-` for jobs submitted without auth)",
                ));
            };
            list(queue, &rest.join("&"), &key).await
        }
        (&Method::GET, [id]) => {
            let job = found(queue.find(id, None).await.map_err(store_error)?, id)?;
            Ok(http_util::json(200, &job_json(&job)))
        }
        (&Method::DELETE, [id]) => {
            let job = queue.cancel(id, None).await.map_err(change_error)?;
            Ok(http_util::json(200, &job_json(&job)))
        }
        (&Method::POST, [id, "retry"]) => {
            let job = queue.retry(id, None).await.map_err(change_error)?;
            Ok(http_util::json(202, &job_json(&job)))
        }
        _ => Err(ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("no such endpoint: {} {path}", request.method()),
        )),
    }
}

/// `GET /v1/jobs?status=&limit=&after=` (and the admin listing): `owner`'s jobs.
async fn list(queue: &Queue, query: &str, owner: &str) -> Result<Response<Body>, ApiError> {
    let mut status = None;
    let mut limit = DEFAULT_LIST_LIMIT;
    let mut after = None;
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
            "after" => after = Some(value.to_string()),
            other => {
                return Err(ApiError::invalid(
                    "unknown_parameter",
                    Some(other),
                    format!("unknown parameter {other:?}; use status, limit and after"),
                ));
            }
        }
    }
    let page = queue
        .page(owner, status, after.as_deref(), limit)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_after",
                Some("after"),
                format!(
                    "`after` must be the id of one of your jobs, got {:?}",
                    after.unwrap_or_default()
                ),
            )
        })?;
    let stats = queue.stats();
    Ok(http_util::json(
        200,
        &json!({
            "object": "list",
            "data": page.jobs.iter().map(job_json).collect::<Vec<_>>(),
            "first_id": page.jobs.first().map(|j| j.id.as_str()),
            "last_id": page.jobs.last().map(|j| j.id.as_str()),
            "has_more": page.has_more,
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
    job.ok_or_else(|| ApiError::from_facing(&ChangeError::NotFound(id.to_string())))
}

/// A store failure: its detail goes to the log, the client gets a generic 500.
fn store_error(err: crate::queue::StoreError) -> ApiError {
    tracing::error!(error = %err, "job store");
    ApiError::from_facing(&err)
}

/// A refused cancel or retry.
fn change_error(err: ChangeError) -> ApiError {
    if let Some(store) = err.store_error() {
        tracing::error!(error = %store, "job store");
    }
    ApiError::from_facing(&err)
}

/// Starts the job workers and the callback sender, when some route takes jobs. The workers
/// run each attempt through [`App::chat`] and hold the app weakly, so they never keep it
/// alive. `listeners` are weir's own addresses as bound: callbacks never go there.
pub fn start(app: &Arc<App>, listeners: &[SocketAddr]) {
    let Some(queue) = &app.jobs else {
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
    queue.start(app.job_executor(), Arc::new(deliver));
}
