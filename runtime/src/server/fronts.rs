//! The client APIs besides chat completions that run a chat: Anthropic's Messages API
//! (`POST /v1/messages`, and `/v1/messages/count_tokens`) and OpenAI's Responses API
//! (`POST /v1/responses`, its stateless subset). Each is a [`Front`]: its body is translated
//! to a chat completion, runs the same route pipeline (stages see the same WIT request), and
//! the answer, the stream and the errors go back in its own shape, so Anthropic SDK clients
//! and tools that only set a base URL work unchanged.

use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};

use super::chat::{Front, FrontStream};
use super::http_util::{self, Body};
use crate::openai::{ApiError, responses};
use crate::providers::anthropic;
use crate::providers::translate::Untranslatable;

/// A request field the chat pipeline cannot take: a 400 naming it.
fn invalid(err: Untranslatable) -> ApiError {
    ApiError::invalid("invalid_request", Some(&err.param), err.to_string())
}

/// The client's body as JSON, or the 400.
fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|err| ApiError::invalid_json(&err))
}

/// A translated chat request as the body `App::chat` parses; a stream asks for the usage
/// chunk, which both APIs' last events carry.
fn chat_body(mut chat: Value) -> Bytes {
    if chat.get("stream").and_then(Value::as_bool) == Some(true)
        && let Some(obj) = chat.as_object_mut()
    {
        obj.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    Bytes::from(crate::openai::to_bytes(&chat))
}

/// An SSE frame with an event name, as both APIs send them.
fn frame(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Named events as SSE frames.
fn frames(events: Vec<(&'static str, Value)>) -> Vec<Bytes> {
    events
        .iter()
        .map(|(name, data)| frame(name, data))
        .collect()
}

/// weir's error event's `error.message` and `error.type`.
fn error_parts(error: &Value) -> (&str, &str) {
    let error = &error["error"];
    (
        error["type"].as_str().unwrap_or("api_error"),
        error["message"].as_str().unwrap_or("the stream failed"),
    )
}

/// `POST /v1/messages`.
#[derive(Default)]
pub(super) struct Messages {
    /// The model the client asked for, named in the stream's `message_start`.
    model: String,
}

impl Front for Messages {
    fn request(&mut self, body: Bytes) -> Result<Bytes, ApiError> {
        let value = parse(&body)?;
        self.model = value["model"].as_str().unwrap_or_default().to_owned();
        anthropic::request_to_openai(&value)
            .map(chat_body)
            .map_err(invalid)
    }

    fn error(&self, err: &ApiError) -> Response<Body> {
        anthropic_error(err)
    }

    fn answer(&self, completion: &Value) -> Value {
        anthropic::response_from_openai(completion)
    }

    fn stream(&self) -> Option<Box<dyn FrontStream>> {
        Some(Box::new(MessagesStream(anthropic::StreamFromOpenAi::new(
            &self.model,
        ))))
    }
}

/// An error in Anthropic's shape (`{"type":"error","error":{"type","message"}}`), with the
/// same status and `Retry-After` as the OpenAI one.
fn anthropic_error(err: &ApiError) -> Response<Body> {
    let mut response = http_util::error(err);
    let body = anthropic::error_body(err.status, &err.message);
    *response.body_mut() = http_util::full(crate::openai::to_bytes(&body));
    response
}

/// Anthropic's stream events from chat-completion chunks.
struct MessagesStream(anthropic::StreamFromOpenAi);

impl FrontStream for MessagesStream {
    fn start(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
    fn chunk(&mut self, chunk: &Value) -> Vec<Bytes> {
        frames(self.0.push(chunk))
    }
    fn done(&mut self) -> Vec<Bytes> {
        frames(self.0.finish())
    }
    fn error(&mut self, error: &Value) -> Vec<Bytes> {
        let (_, message) = error_parts(error);
        let (name, data) = self.0.error("api_error", message);
        vec![frame(name, &data)]
    }
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as weir counts them for budgets
/// (the tokenizer of the model asked for, or the estimate when weir has none for it); a
/// model no route of `snap` serves is a 404, as on every other endpoint.
pub(super) fn count_tokens(snap: &crate::app::Snapshot, body: &[u8]) -> Result<Value, ApiError> {
    let value = parse(body)?;
    let chat = anthropic::count_tokens_request(&value).map_err(invalid)?;
    let request = crate::openai::parse_request(chat.to_string().as_bytes())?;
    if !snap.routes.contains_key(&request.model) {
        let unknown = crate::app::UnknownModel::new(snap, &request.model);
        return Err(ApiError::from_facing(&unknown));
    }
    let tokens = crate::cost::tokens::count_prompt(&request.model, &request);
    Ok(json!({ "input_tokens": tokens }))
}

/// An error for `/v1/messages/*` in Anthropic's shape.
pub(super) fn messages_error(err: &ApiError) -> Response<Body> {
    anthropic_error(err)
}

/// `POST /v1/responses`.
#[derive(Default)]
pub(super) struct Responses {
    /// The client's request, echoed in the response object as OpenAI does.
    request: Value,
}

impl Front for Responses {
    fn request(&mut self, body: Bytes) -> Result<Bytes, ApiError> {
        self.request = parse(&body)?;
        responses::request_to_openai(&self.request)
            .map(chat_body)
            .map_err(invalid)
    }

    fn error(&self, err: &ApiError) -> Response<Body> {
        http_util::error(err)
    }

    fn answer(&self, completion: &Value) -> Value {
        responses::response_from_openai(completion, &self.request)
    }

    fn stream(&self) -> Option<Box<dyn FrontStream>> {
        let id = format!("resp_{:032x}", rand::random::<u128>());
        let created = crate::clock::unix_secs();
        Some(Box::new(ResponsesStream(responses::StreamFromOpenAi::new(
            &self.request,
            &id,
            created,
        ))))
    }
}

/// The Responses API's stream events from chat-completion chunks.
struct ResponsesStream(responses::StreamFromOpenAi);

impl FrontStream for ResponsesStream {
    fn start(&mut self) -> Vec<Bytes> {
        frames(self.0.start())
    }
    fn chunk(&mut self, chunk: &Value) -> Vec<Bytes> {
        frames(self.0.push(chunk))
    }
    fn done(&mut self) -> Vec<Bytes> {
        frames(self.0.finish())
    }
    fn error(&mut self, error: &Value) -> Vec<Bytes> {
        let (code, message) = error_parts(error);
        let code = error["error"]["code"].as_str().unwrap_or(code);
        frames(self.0.error(code, message))
    }
}
