//! Front: an Anthropic client's request → an OpenAI request ([`request_to_openai`],
//! [`count_tokens_request`]): the top level, the Anthropic fields with no OpenAI equivalent,
//! `metadata` and `system`.

use serde_json::{Map, Value, json};

use crate::providers::translate::Untranslatable;

use super::front_messages::{message_to_openai, text_part};
use super::front_tools::{
    output_format_of, response_format_to_openai, tool_choice_to_openai, tools_to_openai,
};
use super::{positive_integer, present, string_array, temperature, top_p};

/// Which Anthropic endpoint a request came to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `POST /v1/messages`: `max_tokens` is required.
    Messages,
    /// `POST /v1/messages/count_tokens`: no `max_tokens`.
    CountTokens,
}

/// Anthropic top-level request fields this module translates (or ignores, see module doc).
const ANTHROPIC_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
    "output_format",
    "output_config",
    "thinking",
    "service_tier",
];

/// An Anthropic Messages request from a client → an OpenAI request. Validates as Anthropic
/// does (`model`, `messages` and `max_tokens` required, types checked); a field OpenAI
/// cannot express is [`Untranslatable`].
pub fn request_to_openai(anthropic: &Value) -> Result<Value, Untranslatable> {
    anthropic_request(anthropic, Endpoint::Messages)
}

/// A `/v1/messages/count_tokens` body (no `max_tokens` needed) → an OpenAI request whose
/// tokens weir counts.
pub fn count_tokens_request(anthropic: &Value) -> Result<Value, Untranslatable> {
    anthropic_request(anthropic, Endpoint::CountTokens)
}

/// An Anthropic request → an OpenAI request, for `endpoint`.
fn anthropic_request(anthropic: &Value, endpoint: Endpoint) -> Result<Value, Untranslatable> {
    let request = anthropic
        .as_object()
        .ok_or_else(|| Untranslatable::new("body", "the request must be a JSON object"))?;
    for (key, value) in request {
        check_anthropic_field(key, value)?;
    }
    let model = present(request.get("model"))
        .ok_or_else(|| Untranslatable::new("model", "field required"))?
        .as_str()
        .ok_or_else(|| Untranslatable::new("model", "must be a string"))?;
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    out.insert("messages".into(), messages_to_openai(request)?);
    match present(request.get("max_tokens")) {
        Some(max) => {
            out.insert(
                "max_tokens".into(),
                positive_integer(max, "max_tokens")?.into(),
            );
        }
        None if endpoint == Endpoint::Messages => {
            return Err(Untranslatable::new("max_tokens", "field required"));
        }
        None => {}
    }
    if let Some(t) = present(request.get("temperature")) {
        out.insert("temperature".into(), temperature(t)?);
    }
    if let Some(p) = present(request.get("top_p")) {
        out.insert("top_p".into(), top_p(p)?);
    }
    if let Some(stop) = present(request.get("stop_sequences")) {
        out.insert(
            "stop".into(),
            Value::Array(string_array(stop, "stop_sequences")?),
        );
    }
    if let Some(stream) = present(request.get("stream")) {
        let stream = stream
            .as_bool()
            .ok_or_else(|| Untranslatable::new("stream", "must be a boolean"))?;
        out.insert("stream".into(), stream.into());
        if stream {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(user) = user_from_metadata(present(request.get("metadata")))? {
        out.insert("user".into(), user);
    }
    if let Some(tools) = present(request.get("tools")) {
        out.insert("tools".into(), tools_to_openai(tools)?);
    }
    if let Some(choice) = present(request.get("tool_choice")) {
        let (choice, parallel) = tool_choice_to_openai(choice)?;
        out.insert("tool_choice".into(), choice);
        if let Some(parallel) = parallel {
            out.insert("parallel_tool_calls".into(), parallel);
        }
    }
    if let Some(format) = output_format_of(request)? {
        out.insert("response_format".into(), response_format_to_openai(format)?);
    }
    Ok(Value::Object(out))
}

/// A top-level Anthropic field is known (and, for `top_k` and `thinking`, expressible), or
/// [`Untranslatable`].
fn check_anthropic_field(key: &str, value: &Value) -> Result<(), Untranslatable> {
    if value.is_null() {
        return Ok(());
    }
    match key {
        "top_k" => Err(Untranslatable::new(
            "top_k",
            "OpenAI chat completions have no top_k",
        )),
        "thinking" => match value.get("type").and_then(Value::as_str) {
            Some("disabled") => Ok(()),
            _ => Err(Untranslatable::new(
                "thinking",
                "extended thinking has no OpenAI chat-completions equivalent; only {\"type\": \"disabled\"} is accepted",
            )),
        },
        _ if ANTHROPIC_FIELDS.contains(&key) => Ok(()),
        _ => Err(Untranslatable::new(
            key,
            format!("weir cannot translate `{key}` to an OpenAI chat request"),
        )),
    }
}

/// `metadata.user_id` → OpenAI `user`.
fn user_from_metadata(metadata: Option<&Value>) -> Result<Option<Value>, Untranslatable> {
    let Some(metadata) = metadata else {
        return Ok(None);
    };
    let object = metadata
        .as_object()
        .ok_or_else(|| Untranslatable::new("metadata", "must be an object"))?;
    let mut user = None;
    for (key, value) in object {
        match (key.as_str(), value) {
            (_, Value::Null) => {}
            ("user_id", Value::String(_)) => user = Some(value.clone()),
            ("user_id", _) => {
                return Err(Untranslatable::new("metadata.user_id", "must be a string"));
            }
            _ => {
                return Err(Untranslatable::new(
                    format!("metadata.{key}"),
                    "Anthropic metadata carries only user_id",
                ));
            }
        }
    }
    Ok(user)
}

/// `system` and `messages` → OpenAI messages (the system prompt first).
fn messages_to_openai(request: &Map<String, Value>) -> Result<Value, Untranslatable> {
    let mut out = Vec::new();
    if let Some(system) = present(request.get("system")) {
        out.push(system_to_openai(system)?);
    }
    let messages = present(request.get("messages"))
        .ok_or_else(|| Untranslatable::new("messages", "field required"))?
        .as_array()
        .ok_or_else(|| Untranslatable::new("messages", "must be an array of messages"))?;
    for (i, message) in messages.iter().enumerate() {
        message_to_openai(message, &format!("messages[{i}]"), &mut out)?;
    }
    Ok(Value::Array(out))
}

/// Anthropic `system` (a string or text blocks) → one OpenAI system message.
fn system_to_openai(system: &Value) -> Result<Value, Untranslatable> {
    let content = match system {
        Value::String(_) => system.clone(),
        Value::Array(blocks) => Value::Array(
            blocks
                .iter()
                .enumerate()
                .map(
                    |(j, block)| match block.get("type").and_then(Value::as_str) {
                        Some("text") => text_part(block, &format!("system[{j}]")),
                        _ => Err(Untranslatable::new(
                            format!("system[{j}]"),
                            "system blocks must be text blocks",
                        )),
                    },
                )
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(Untranslatable::new(
                "system",
                "must be a string or an array of text blocks",
            ));
        }
    };
    Ok(json!({"role": "system", "content": content}))
}
