//! Behind: an Anthropic message → an OpenAI `chat.completion` ([`response_to_openai`]).

use serde_json::{Map, Value, json};

use super::{count, finish_reason, now, str_at, usage_to_openai};

/// An Anthropic message (non-streamed response) → an OpenAI `chat.completion`. `Err` for a
/// body that is not an Anthropic message (an Anthropic `error` body gives its message).
pub fn response_to_openai(message: &Value) -> Result<Value, String> {
    if !message.is_object() {
        return Err("the Anthropic response is not a JSON object".into());
    }
    if message.get("type").and_then(Value::as_str) == Some("error") {
        return Err(anthropic_error_message(message));
    }
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or("the Anthropic response has no content array")?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(str_at(block, "text")),
            Some("tool_use") => calls.push(tool_call_from_block(block)),
            _ => {}
        }
    }
    let has_text = blocks
        .iter()
        .any(|b| b.get("type").and_then(Value::as_str) == Some("text"));
    let mut reply = Map::new();
    reply.insert("role".into(), "assistant".into());
    let content = if has_text || calls.is_empty() {
        Value::String(text)
    } else {
        Value::Null
    };
    reply.insert("content".into(), content);
    if !calls.is_empty() {
        reply.insert("tool_calls".into(), Value::Array(calls));
    }
    let finish = finish_reason(str_at(message, "stop_reason"));
    let usage = message.get("usage").cloned().unwrap_or(Value::Null);
    Ok(json!({
        "id": str_at(message, "id"),
        "object": "chat.completion",
        "created": now(),
        "model": str_at(message, "model"),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish}],
        "usage": usage_to_openai(&usage, count(Some(&usage), "output_tokens")),
    }))
}

/// The message of an Anthropic error body or `error` event.
pub(super) fn anthropic_error_message(error: &Value) -> String {
    let inner = error.get("error");
    let kind = inner.and_then(|e| e.get("type")).and_then(Value::as_str);
    let message = inner.and_then(|e| e.get("message")).and_then(Value::as_str);
    match (kind, message) {
        (Some(kind), Some(message)) => format!("{kind}: {message}"),
        (None, Some(message)) => message.to_string(),
        (Some(kind), None) => kind.to_string(),
        (None, None) => "Anthropic reported an error".to_string(),
    }
}

/// A `tool_use` block → an OpenAI tool call (its `input` serialized to `arguments`).
fn tool_call_from_block(block: &Value) -> Value {
    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
    json!({
        "id": str_at(block, "id"),
        "type": "function",
        "function": {"name": str_at(block, "name"), "arguments": input.to_string()},
    })
}
