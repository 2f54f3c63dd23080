//! `POST /v1/chat/completions` over HTTP: authenticate, read the body, take the headers that
//! change how the request runs → [`App::chat`] → render the answer as JSON or as server-sent
//! events, or the error as OpenAI-shaped JSON.
//!
//! The other client APIs that run a chat (`/v1/messages`, `/v1/responses`: see `fronts`) go
//! the same way, with their body translated to a chat completion before [`App::chat`] and
//! the answer, stream and error translated back; [`Front`] is what differs.

use std::sync::Arc;

use bytes::Bytes;

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

/// The key a request presents (`Authorization: Bearer`, or `x-api-key` as Anthropic's
/// clients send it): its account, `None` when auth is off, or the 401.
pub(super) fn authenticate(
    snap: &Snapshot,
    headers: &http::HeaderMap,
) -> Result<Option<Arc<crate::cost::Account>>, ApiError> {
    if !snap.accounts.auth_required() {
        return Ok(None);
    }
    let authorization = headers.get(http::header::AUTHORIZATION);
    let bearer = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let Some(bearer) = bearer else {
        return Err(ApiError::from_facing(&CostError::Unauthorized(
            if authorization.is_some() {
                "the `Authorization` header is not `Bearer <key>`"
            } else {
                "no API key: send `Authorization: Bearer <key>`"
            },
        )));
    };
    snap.accounts
        .authenticate(bearer)
        .map(Some)
        .ok_or_else(|| ApiError::from_facing(&CostError::Unauthorized("the API key is not valid")))
}

/// The token of an `Authorization: Bearer <token>` value: the scheme in any case (RFC 9110
/// 11.1), one or more spaces or tabs, then the token.
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_matches([' ', '\t']))
}

/// A client API that runs a chat completion: how its body becomes one, and how the answer,
/// a stream and an error go back in its shape.
pub(super) trait Front {
    /// The chat-completions body for `body` (the client's), or the 400 naming the field.
    fn request(&mut self, body: Bytes) -> Result<Bytes, ApiError>;
    /// An error in the API's shape.
    fn error(&self, err: &ApiError) -> Response<Body>;
    /// A whole answer's `chat.completion` JSON (with `usage.cost`) in the API's shape.
    fn answer(&self, completion: &Value) -> Value;
    /// A stream's translator: OpenAI `data:` payloads in, the API's SSE frames out; `None`
    /// for chat completions, relayed as they are.
    fn stream(&self) -> Option<Box<dyn FrontStream>>;
}

/// Turns a chat-completions stream into a client API's events.
pub(super) trait FrontStream: Send {
    /// Frames sent before the first chunk.
    fn start(&mut self) -> Vec<Bytes>;
    /// One chunk (a parsed `data:` payload that is neither `[DONE]` nor an error).
    fn chunk(&mut self, chunk: &Value) -> Vec<Bytes>;
    /// The stream ended with `[DONE]`.
    fn done(&mut self) -> Vec<Bytes>;
    /// The stream ended with weir's error event (`{"error":{...}}`).
    fn error(&mut self, error: &Value) -> Vec<Bytes>;
}

/// `POST /v1/chat/completions`: the body is one already.
pub(super) struct Chat;

impl Front for Chat {
    fn request(&mut self, body: Bytes) -> Result<Bytes, ApiError> {
        Ok(body)
    }
    fn error(&self, err: &ApiError) -> Response<Body> {
        http_util::error(err)
    }
    fn answer(&self, completion: &Value) -> Value {
        completion.clone()
    }
    fn stream(&self) -> Option<Box<dyn FrontStream>> {
        None
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
    handle_as(app, request, request_id, report, Chat).await
}

/// The call a request makes: its key (checked before the body is read, so a client without
/// a valid key gets its 401 without weir buffering a byte of its body), its body (bounded),
/// the headers that change how it runs, on the snapshot the whole request runs on, whatever
/// reloads happen meanwhile.
pub(super) async fn read_call(
    app: &App,
    request: Request<Incoming>,
    request_id: &Arc<str>,
    report: &Report,
) -> Result<ChatCall, ApiError> {
    let (parts, body) = request.into_parts();
    let snap = app.snapshot();
    let account = authenticate(&snap, &parts.headers)?;
    let body = http_util::read_body(body, &parts.headers, &snap.config.server).await?;
    let headers = &parts.headers;
    Ok(ChatCall {
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
    })
}

/// [`handle`] for the client API `front`.
pub(super) async fn handle_as(
    app: &Arc<App>,
    request: Request<Incoming>,
    request_id: &Arc<str>,
    report: &mut Report,
    mut front: impl Front,
) -> Response<Body> {
    let mut call = match read_call(app, request, request_id, report).await {
        Ok(call) => call,
        Err(err) => return front.error(&err),
    };
    call.body = match front.request(call.body) {
        Ok(body) => body,
        Err(err) => return front.error(&err),
    };
    let outcome = app.chat(call).await;
    *report = outcome.report;
    let reply = match outcome.reply {
        Err(err) => {
            let err = ApiError::from_facing(&err);
            let mut response = front.error(&err);
            // The request record reads the failure from here, whatever the body's shape.
            response.extensions_mut().insert(http_util::Failure {
                code: err.code.clone(),
                message: err.message.clone(),
            });
            return response;
        }
        Ok(reply) => reply,
    };
    let Some(mut translator) = front.stream() else {
        return match reply {
            ChatReply::Whole(answer) => whole(&answer),
            ChatReply::Stream(events) => relay(events, None),
        };
    };
    match reply {
        ChatReply::Whole(answer) if answer.as_sse => {
            // A stream request answered whole (the cache, a stage): its events, translated.
            let cost = crate::config::pico_to_usd(answer.cost_pico);
            let text = with_cost_in_sse(response_to_sse(&answer.response, true), cost);
            let mut out = translator.start();
            out.extend(translate_events(translator.as_mut(), text.as_bytes()));
            sse(http_util::full(out.concat()))
        }
        ChatReply::Whole(answer) => http_util::json(200, &front.answer(&answer.to_json())),
        ChatReply::Stream(events) => relay(events, Some(translator)),
    }
}

/// A relayed stream, its events translated by `translator` when given.
fn relay(
    events: tokio::sync::mpsc::Receiver<Bytes>,
    translator: Option<Box<dyn FrontStream>>,
) -> Response<Body> {
    let Some(mut translator) = translator else {
        let frames = futures_util::stream::unfold(events, |mut rx| async move {
            rx.recv()
                .await
                .map(|bytes| (Ok::<_, std::convert::Infallible>(Frame::data(bytes)), rx))
        });
        return sse(BodyExt::boxed_unsync(StreamBody::new(frames)));
    };
    let first = Bytes::from(translator.start().concat());
    let state = (events, translator, Some(first));
    let frames =
        futures_util::stream::unfold(state, |(mut rx, mut translator, first)| async move {
            if let Some(first) = first.filter(|b| !b.is_empty()) {
                return Some((Ok(Frame::data(first)), (rx, translator, None)));
            }
            loop {
                let bytes = rx.recv().await?;
                let out = translate_events(translator.as_mut(), &bytes);
                if !out.is_empty() {
                    let frame = Frame::data(Bytes::from(out.concat()));
                    return Some((
                        Ok::<_, std::convert::Infallible>(frame),
                        (rx, translator, None),
                    ));
                }
            }
        });
    sse(BodyExt::boxed_unsync(StreamBody::new(frames)))
}

/// weir's own SSE frames (`data: ...\n\n`, whole events: the relay sends one per frame) in
/// the client API's shape.
fn translate_events(translator: &mut dyn FrontStream, bytes: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let text = String::from_utf8_lossy(bytes);
    for event in text.split("\n\n") {
        let Some(data) = event.trim_start().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            out.extend(translator.done());
            continue;
        }
        match serde_json::from_str::<Value>(data) {
            Ok(value) if value.get("error").is_some() => out.extend(translator.error(&value)),
            Ok(value) => out.extend(translator.chunk(&value)),
            Err(_) => {}
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_with_spaces_or_tabs() {
        for value in [
            "Bearer sk-1",
            "bearer sk-1",
            "BEARER sk-1",
            "Bearer\tsk-1",
            "Bearer   sk-1 ",
        ] {
            assert_eq!(bearer_token(value), Some("sk-1"), "{value:?}");
        }
        for value in ["Basic c2stMQ==", "Bearersk-1", "sk-1", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}
