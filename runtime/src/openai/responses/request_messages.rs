//! Responses `input` items → chat messages (assistant items merged into one turn, function-call
//! outputs as `tool` messages).

use serde_json::{Map, Value, json};

use crate::providers::translate::Untranslatable;

use super::NO_STORE;
use super::request::field;

/// `instructions` then `input`, as chat messages.
pub(super) fn messages(body: &Map<String, Value>) -> Result<Vec<Value>, Untranslatable> {
    let mut messages = Vec::new();
    match field(body, "instructions") {
        None => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(_) => return Err(Untranslatable::new("instructions", "must be a string")),
    }
    match field(body, "input") {
        None => {}
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                push_item(&mut messages, item, &format!("input[{index}]"))?;
            }
        }
        Some(_) => {
            return Err(Untranslatable::new(
                "input",
                "must be a string or an array of input items",
            ));
        }
    }
    if messages.is_empty() {
        return Err(Untranslatable::new("input", "is required"));
    }
    Ok(messages)
}

/// One input item, appended to `messages` (a `function_call` may join the previous message).
fn push_item(messages: &mut Vec<Value>, item: &Value, path: &str) -> Result<(), Untranslatable> {
    let Some(item) = item.as_object() else {
        return Err(Untranslatable::new(path, "an input item must be an object"));
    };
    match field(item, "type") {
        None if item.contains_key("role") => messages.push(message_item(item, path)?),
        None => {
            return Err(Untranslatable::new(
                format!("{path}.type"),
                "an input item needs a `type` or a `role`",
            ));
        }
        Some(kind) => match kind.as_str() {
            Some("message") => messages.push(message_item(item, path)?),
            Some("function_call") => push_function_call(messages, item, path)?,
            Some("function_call_output") => messages.push(function_call_output(item, path)?),
            Some("item_reference") => return Err(Untranslatable::new(path, NO_STORE)),
            Some(other) => {
                return Err(Untranslatable::new(
                    format!("{path}.type"),
                    format!("`{other}` input items are not supported on /v1/responses"),
                ));
            }
            None => {
                return Err(Untranslatable::new(
                    format!("{path}.type"),
                    "must be a string",
                ));
            }
        },
    }
    Ok(())
}

/// A required string field of an item.
pub(super) fn required_string<'a>(
    item: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<&'a str, Untranslatable> {
    match field(item, name) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(Untranslatable::new(
            format!("{path}.{name}"),
            "must be a string",
        )),
        None => Err(Untranslatable::new(format!("{path}.{name}"), "is required")),
    }
}

/// Refuses any key of an item outside `allowed`.
pub(super) fn check_item_keys(
    item: &Map<String, Value>,
    allowed: &[&str],
    path: &str,
) -> Result<(), Untranslatable> {
    match item.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(Untranslatable::new(
            format!("{path}.{key}"),
            "unknown field for this input item; weir cannot carry it",
        )),
        None => Ok(()),
    }
}

/// A `{role, content}` message item → a chat message.
fn message_item(item: &Map<String, Value>, path: &str) -> Result<Value, Untranslatable> {
    check_item_keys(item, &["type", "role", "content", "id", "status"], path)?;
    let role = required_string(item, "role", path)?;
    if !matches!(role, "user" | "assistant" | "system" | "developer") {
        return Err(Untranslatable::new(
            format!("{path}.role"),
            format!("`{role}` is not a message role; use user, assistant, system or developer"),
        ));
    }
    let content = match field(item, "content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) => Value::Array(content_parts(parts, role, path)?),
        Some(_) => {
            return Err(Untranslatable::new(
                format!("{path}.content"),
                "must be a string or an array of content parts",
            ));
        }
        None => {
            return Err(Untranslatable::new(
                format!("{path}.content"),
                "is required",
            ));
        }
    };
    Ok(json!({"role": role, "content": content}))
}

/// Message content parts → chat parts (text everywhere, images in user messages only).
fn content_parts(parts: &[Value], role: &str, path: &str) -> Result<Vec<Value>, Untranslatable> {
    parts
        .iter()
        .enumerate()
        .map(|(index, part)| content_part(part, role, &format!("{path}.content[{index}]")))
        .collect()
}

/// One content part → a chat part.
fn content_part(part: &Value, role: &str, path: &str) -> Result<Value, Untranslatable> {
    let Some(part) = part.as_object() else {
        return Err(Untranslatable::new(
            path,
            "a content part must be an object",
        ));
    };
    match field(part, "type").and_then(Value::as_str) {
        Some("input_text" | "output_text") => {
            let text = required_string(part, "text", path)?;
            Ok(json!({"type": "text", "text": text}))
        }
        Some("input_image") if role == "user" => image_part(part, path),
        Some("input_image") => Err(Untranslatable::new(
            path,
            format!("images are only supported in user messages, not `{role}` ones"),
        )),
        Some("input_file") => Err(Untranslatable::new(
            path,
            "`input_file` parts are not supported (weir has no file store); send the text instead",
        )),
        Some(other) => Err(Untranslatable::new(
            path,
            format!("`{other}` content parts are not supported on /v1/responses"),
        )),
        None => Err(Untranslatable::new(
            format!("{path}.type"),
            "a content part needs a string `type`",
        )),
    }
}

/// An `input_image` part → a chat `image_url` part (a URL or a data URL; no file ids).
fn image_part(part: &Map<String, Value>, path: &str) -> Result<Value, Untranslatable> {
    if field(part, "file_id").is_some() {
        return Err(Untranslatable::new(
            format!("{path}.file_id"),
            "file ids are not supported (weir has no file store); send `image_url`",
        ));
    }
    let url = required_string(part, "image_url", path)?;
    let mut image = Map::new();
    image.insert("url".into(), Value::String(url.to_owned()));
    match field(part, "detail") {
        None => {}
        Some(Value::String(detail)) => {
            image.insert("detail".into(), Value::String(detail.clone()));
        }
        Some(_) => {
            return Err(Untranslatable::new(
                format!("{path}.detail"),
                "must be a string",
            ));
        }
    }
    Ok(json!({"type": "image_url", "image_url": image}))
}

/// A `function_call` item → a tool call on the previous assistant message, or a new one.
fn push_function_call(
    messages: &mut Vec<Value>,
    item: &Map<String, Value>,
    path: &str,
) -> Result<(), Untranslatable> {
    check_item_keys(
        item,
        &["type", "call_id", "name", "arguments", "id", "status"],
        path,
    )?;
    let call = json!({
        "id": required_string(item, "call_id", path)?,
        "type": "function",
        "function": {
            "name": required_string(item, "name", path)?,
            "arguments": required_string(item, "arguments", path)?,
        },
    });
    if let Some(calls) = last_assistant_tool_calls(messages) {
        calls.push(call);
        return Ok(());
    }
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    Ok(())
}

/// The `tool_calls` list of the last message when it is an assistant message (created if absent).
fn last_assistant_tool_calls(messages: &mut [Value]) -> Option<&mut Vec<Value>> {
    let last = messages.last_mut()?.as_object_mut()?;
    if last.get("role").and_then(Value::as_str) != Some("assistant") {
        return None;
    }
    last.entry("tool_calls")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
}

/// A `function_call_output` item → a chat `tool` message.
fn function_call_output(item: &Map<String, Value>, path: &str) -> Result<Value, Untranslatable> {
    check_item_keys(item, &["type", "call_id", "output", "id", "status"], path)?;
    let call_id = required_string(item, "call_id", path)?;
    let output_path = format!("{path}.output");
    let content = match field(item, "output") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) => Value::Array(tool_output_parts(parts, &output_path)?),
        Some(_) => {
            return Err(Untranslatable::new(
                output_path,
                "must be a string or an array of text parts",
            ));
        }
        None => return Err(Untranslatable::new(output_path, "is required")),
    };
    Ok(json!({"role": "tool", "tool_call_id": call_id, "content": content}))
}

/// A function output given as parts: text only (a chat tool message cannot carry images).
fn tool_output_parts(parts: &[Value], path: &str) -> Result<Vec<Value>, Untranslatable> {
    parts
        .iter()
        .enumerate()
        .map(|(index, part)| {
            let path = format!("{path}[{index}]");
            let object = part
                .as_object()
                .filter(|part| field(part, "type").and_then(Value::as_str) == Some("input_text"));
            match object {
                Some(part) => {
                    Ok(json!({"type": "text", "text": required_string(part, "text", &path)?}))
                }
                None => Err(Untranslatable::new(
                    path,
                    "only `input_text` parts are supported in a function call output",
                )),
            }
        })
        .collect()
}
