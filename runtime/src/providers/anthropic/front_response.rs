//! Front: an OpenAI `chat.completion` → an Anthropic message ([`response_from_openai`]).

use serde_json::{Value, json};

use super::request_messages::parse_arguments;
use super::{stop_reason, str_at, usage_from_openai};

/// Prefix of Anthropic message ids.
const MESSAGE_ID_PREFIX: &str = "msg_";

/// An Anthropic message id for an OpenAI id (`msg_` prefixed unless it already is).
pub(super) fn message_id(id: &str) -> String {
    if id.starts_with(MESSAGE_ID_PREFIX) {
        id.to_string()
    } else {
        format!("{MESSAGE_ID_PREFIX}{id}")
    }
}

/// An OpenAI `chat.completion` → an Anthropic message (first choice; best effort on odd
/// input).
pub fn response_from_openai(openai: &Value) -> Value {
    let choice = openai
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let message = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    if let Some(message) = message {
        content.extend(text_blocks_of(message.get("content")));
        if let Some(Value::String(refusal)) = message.get("refusal")
            && !refusal.is_empty()
        {
            content.push(json!({"type": "text", "text": refusal}));
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            content.extend(calls.iter().map(tool_call_to_block));
        }
    }
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .unwrap_or("stop");
    json!({
        "id": message_id(str_at(openai, "id")),
        "type": "message",
        "role": "assistant",
        "model": str_at(openai, "model"),
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": usage_from_openai(openai.get("usage")),
    })
}

/// OpenAI message content (a string or parts) → Anthropic text blocks (empty text skipped).
fn text_blocks_of(content: Option<&Value>) -> Vec<Value> {
    let texts: Vec<&str> = match content {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    };
    texts
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|t| json!({"type": "text", "text": t}))
        .collect()
}

/// An OpenAI tool call → a `tool_use` block (arguments that are not a JSON object become
/// `{}`).
fn tool_call_to_block(call: &Value) -> Value {
    let function = call.get("function").unwrap_or(&Value::Null);
    let input = parse_arguments(str_at(function, "arguments")).unwrap_or_else(|| json!({}));
    json!({
        "type": "tool_use",
        "id": str_at(call, "id"),
        "name": str_at(function, "name"),
        "input": input,
    })
}
