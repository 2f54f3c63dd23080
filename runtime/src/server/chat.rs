//! `POST /v1/chat/completions` over HTTP: authenticate, read the body, take the headers that
//! change how the request runs → [`App::chat`] → render the answer as JSON or as server-sent
//! events, or the error as OpenAI-shaped JSON.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};

use super::App;
use super::http_util::{self, Body};
use crate::app::{Answer, ChatCall, ChatReply, Report, Snapshot};
use crate::cache::CacheControl;
use crate::cost::CostError;
use crate::openai::{ApiError, response_to_sse};

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
        return Err(ApiError::from_facing(&CostError::Unauthorized(
            "no API key: send `Authorization: Bearer <key>`",
        )));
    };
    snap.accounts
        .authenticate(bearer)
        .map(Some)
        .ok_or_else(|| ApiError::from_facing(&CostError::Unauthorized("the API key is not valid")))
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
    let headers = &parts.headers;
    let call = ChatCall {
        snapshot: snap,
        account,
        request_id: request_id.clone(),
        trace: report.trace,
        parent: report.parent,
        cache_control: headers
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(CacheControl::parse)
            .unwrap_or_default(),
        deadline: headers.get("x-weir-deadline-ms").cloned(),
        tracestate: headers.get("tracestate").cloned(),
        body,
    };
    let outcome = app.chat(call).await;
    *report = outcome.report;
    match outcome.reply {
        Err(err) => http_util::error(&ApiError::from_facing(&err)),
        Ok(ChatReply::Whole(answer)) => whole(&answer),
        Ok(ChatReply::Stream(events)) => {
            let frames = futures_util::stream::unfold(events, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|bytes| (Ok::<_, std::convert::Infallible>(Frame::data(bytes)), rx))
            });
            sse(BodyExt::boxed_unsync(StreamBody::new(frames)))
        }
    }
}

/// A whole answer as JSON or as SSE, with the request's cost in `usage.cost`.
fn whole(answer: &Answer) -> Response<Body> {
    if answer.as_sse {
        let cost = crate::config::pico_to_usd(answer.cost_pico);
        let sse_text = response_to_sse(&answer.response, answer.include_usage);
        sse(http_util::full(with_cost_in_sse(sse_text, cost)))
    } else {
        http_util::json(200, &answer.to_json())
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
