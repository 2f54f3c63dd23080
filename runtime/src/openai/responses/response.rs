//! A chat completion → a Response object ([`response_from_openai`]).

use serde_json::{Value, json};

use super::output::{Ending, ItemIds, OutputItem, Part, PartKind};

/// A `chat.completion` (and the Responses request it answers, for the echoed fields) → a
/// Response object.
pub fn response_from_openai(openai: &Value, request: &Value) -> Value {
    let chat_id = openai.get("id").and_then(Value::as_str).unwrap_or_default();
    let ids = ItemIds::new(chat_id);
    let choice = first_choice(openai);
    let message = choice.and_then(|choice| choice.get("message"));
    let finish = choice
        .and_then(|choice| choice.get("finish_reason"))
        .and_then(Value::as_str);
    let ending = Ending::from_finish_reason(finish);

    let mut items: Vec<OutputItem> = message_content(message).into_iter().collect();
    items.extend(message_tool_calls(message, &ids));
    let output = if items.is_empty() {
        vec![empty_message()]
    } else {
        items
    };
    let output = output
        .iter()
        .map(|item| item.to_value(&ids, ending.item_status()))
        .collect();

    let model = openai
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_else(|| request_model(request));
    let usage = openai.get("usage").map_or(Value::Null, usage_from_openai);
    let mut response = response_object(
        request,
        &ids.response,
        openai.get("created").and_then(Value::as_u64).unwrap_or(0),
        model,
    );
    ending.apply(&mut response);
    set(&mut response, "output", Value::Array(output));
    set(&mut response, "usage", usage);
    response
}

/// The first choice of a chat completion, if any.
pub(super) fn first_choice(openai: &Value) -> Option<&Value> {
    openai.get("choices")?.as_array()?.first()
}

/// The request's model, for when the chat answer names none.
pub(super) fn request_model(request: &Value) -> &str {
    request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The assistant message's text (and refusal) as a message item, when it has any.
fn message_content(message: Option<&Value>) -> Option<OutputItem> {
    let message = message?;
    let mut parts = Vec::new();
    let text = text_of(message.get("content"));
    if !text.is_empty() {
        parts.push(Part {
            kind: PartKind::Text,
            text,
        });
    }
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str)
        && !refusal.is_empty()
    {
        parts.push(Part {
            kind: PartKind::Refusal,
            text: refusal.to_owned(),
        });
    }
    (!parts.is_empty()).then_some(OutputItem::Message { parts })
}

/// Message content as text: a string, or the concatenated text of text parts.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// The assistant message's tool calls as function-call items.
fn message_tool_calls(message: Option<&Value>, ids: &ItemIds) -> Vec<OutputItem> {
    let Some(calls) = message
        .and_then(|message| message.get("tool_calls"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let function = call.get("function");
            let read = |key: &str| {
                function
                    .and_then(|function| function.get(key))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let call_id = call.get("id").and_then(Value::as_str);
            OutputItem::FunctionCall {
                call_id: call_id.map_or_else(|| ids.fallback_call_id(index), str::to_owned),
                name: read("name"),
                arguments: read("arguments"),
            }
        })
        .collect()
}

/// A message item with one empty text part: what an answer with no output at all becomes.
fn empty_message() -> OutputItem {
    OutputItem::Message {
        parts: vec![Part {
            kind: PartKind::Text,
            text: String::new(),
        }],
    }
}

/// Chat `usage` → Responses `usage` (`input_tokens` includes cached tokens, as on both sides).
pub(super) fn usage_from_openai(usage: &Value) -> Value {
    let count = |value: Option<&Value>| value.and_then(Value::as_u64).unwrap_or(0);
    let input = count(usage.get("prompt_tokens"));
    let output = count(usage.get("completion_tokens"));
    let cached = count(
        usage
            .get("prompt_tokens_details")
            .and_then(|details| details.get("cached_tokens")),
    );
    let reasoning = count(
        usage
            .get("completion_tokens_details")
            .and_then(|details| details.get("reasoning_tokens")),
    );
    let total = usage
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| input.saturating_add(output));
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total,
    })
}

/// Sets `key` on a JSON object (no-op on anything else).
pub(super) fn set(object: &mut Value, key: &str, value: Value) {
    if let Some(object) = object.as_object_mut() {
        object.insert(key.into(), value);
    }
}

/// The Response object around an answer: ids, times and the request's echoed fields, with
/// `status: "completed"`, empty `output` and no usage (callers fill those in).
pub(super) fn response_object(request: &Value, id: &str, created_at: u64, model: &str) -> Value {
    let echo = |name: &str, default: Value| {
        request
            .get(name)
            .filter(|value| !value.is_null())
            .cloned()
            .unwrap_or(default)
    };
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": "completed",
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": echo("instructions", Value::Null),
        "max_output_tokens": echo("max_output_tokens", Value::Null),
        "max_tool_calls": echo("max_tool_calls", Value::Null),
        "model": model,
        "output": [],
        "parallel_tool_calls": echo("parallel_tool_calls", Value::Bool(true)),
        "previous_response_id": null,
        "prompt_cache_key": echo("prompt_cache_key", Value::Null),
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": echo("temperature", Value::Null),
        "text": echo_text(request),
        "tool_choice": echo("tool_choice", json!("auto")),
        "tools": echo("tools", json!([])),
        "top_p": echo("top_p", Value::Null),
        "truncation": "disabled",
        "usage": null,
        "user": echo("user", Value::Null),
        "safety_identifier": echo("safety_identifier", Value::Null),
        "metadata": echo("metadata", json!({})),
    })
}

/// The request's `text` settings, with the default `{format: {type: "text"}}` filled in.
fn echo_text(request: &Value) -> Value {
    let mut text = request
        .get("text")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if text.get("format").is_none_or(Value::is_null) {
        text.insert("format".into(), json!({"type": "text"}));
    }
    Value::Object(text)
}
