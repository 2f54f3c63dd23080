//! Front: Anthropic messages and their content blocks → OpenAI messages (tool results as
//! `tool` messages, `tool_use` blocks as tool calls).

use serde_json::{Map, Value, json};

use crate::providers::translate::Untranslatable;

use super::{carry_cache_control, present, str_at};

/// One Anthropic message → OpenAI messages appended to `out` (a user turn's tool results
/// become `tool` messages ahead of the rest of its content).
pub(super) fn message_to_openai(
    message: &Value,
    path: &str,
    out: &mut Vec<Value>,
) -> Result<(), Untranslatable> {
    let object = message
        .as_object()
        .ok_or_else(|| Untranslatable::new(path, "must be a message object"))?;
    if let Some(key) = object
        .iter()
        .find(|(k, v)| !matches!(k.as_str(), "role" | "content") && !v.is_null())
        .map(|(k, _)| k)
    {
        return Err(Untranslatable::new(
            format!("{path}.{key}"),
            "Anthropic messages carry only role and content",
        ));
    }
    let role = match object.get("role").and_then(Value::as_str) {
        Some(role @ ("user" | "assistant")) => role,
        _ => {
            return Err(Untranslatable::new(
                format!("{path}.role"),
                "must be user or assistant",
            ));
        }
    };
    let content_path = format!("{path}.content");
    match object.get("content") {
        Some(content @ Value::String(_)) => {
            out.push(json!({"role": role, "content": content}));
            Ok(())
        }
        Some(Value::Array(blocks)) if role == "user" => {
            user_blocks_to_openai(blocks, &content_path, out)
        }
        Some(Value::Array(blocks)) => {
            out.push(assistant_blocks_to_openai(blocks, &content_path)?);
            Ok(())
        }
        _ => Err(Untranslatable::new(
            content_path,
            "must be a string or an array of content blocks",
        )),
    }
}

/// A user turn's blocks → its `tool` messages, then a user message with the other blocks.
fn user_blocks_to_openai(
    blocks: &[Value],
    path: &str,
    out: &mut Vec<Value>,
) -> Result<(), Untranslatable> {
    let mut parts = Vec::new();
    let mut tool_messages = 0usize;
    for (j, block) in blocks.iter().enumerate() {
        let block_path = format!("{path}[{j}]");
        match block.get("type").and_then(Value::as_str) {
            Some("tool_result") => {
                out.push(tool_message(block, &block_path)?);
                tool_messages = tool_messages.saturating_add(1);
            }
            _ => parts.push(block_to_part(block, &block_path)?),
        }
    }
    if !parts.is_empty() || tool_messages == 0 {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

/// A `tool_result` block → an OpenAI `tool` message (`is_error` kept as an extra field).
fn tool_message(block: &Value, path: &str) -> Result<Value, Untranslatable> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{path}.tool_use_id"), "must be a string"))?;
    let content_path = format!("{path}.content");
    let content = match present(block.get("content")) {
        None => Value::String(String::new()),
        Some(text @ Value::String(_)) => text.clone(),
        Some(Value::Array(inner)) => Value::Array(
            inner
                .iter()
                .enumerate()
                .map(|(k, b)| block_to_part(b, &format!("{content_path}[{k}]")))
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => {
            return Err(Untranslatable::new(
                content_path,
                "must be a string or an array of content blocks",
            ));
        }
    };
    let mut message = json!({"role": "tool", "tool_call_id": id, "content": content});
    if let Some(is_error) = present(block.get("is_error")) {
        let is_error = is_error
            .as_bool()
            .ok_or_else(|| Untranslatable::new(format!("{path}.is_error"), "must be a boolean"))?;
        if let Some(m) = message.as_object_mut() {
            m.insert("is_error".into(), is_error.into());
        }
    }
    Ok(message)
}

/// A text or image block → an OpenAI content part.
fn block_to_part(block: &Value, path: &str) -> Result<Value, Untranslatable> {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => text_part(block, path),
        Some("image") => image_part(block, path),
        Some(kind) => Err(Untranslatable::new(
            path,
            format!("a `{kind}` block has no OpenAI chat equivalent here"),
        )),
        None => Err(Untranslatable::new(
            format!("{path}.type"),
            "must be a string",
        )),
    }
}

/// A text block → a text part (`cache_control` carried).
pub(super) fn text_part(block: &Value, path: &str) -> Result<Value, Untranslatable> {
    let text = block
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{path}.text"), "must be a string"))?;
    let mut part = Map::new();
    part.insert("type".into(), "text".into());
    part.insert("text".into(), text.into());
    carry_cache_control(block, &mut part);
    Ok(Value::Object(part))
}

/// An image block → an `image_url` part (base64 becomes a data URL).
fn image_part(block: &Value, path: &str) -> Result<Value, Untranslatable> {
    let source = block.get("source");
    let url = match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
        Some("base64") => {
            let source = source.unwrap_or(&Value::Null);
            let media_type = source.get("media_type").and_then(Value::as_str);
            let data = source.get("data").and_then(Value::as_str);
            match (media_type, data) {
                (Some(media_type), Some(data)) => format!("data:{media_type};base64,{data}"),
                _ => {
                    return Err(Untranslatable::new(
                        format!("{path}.source"),
                        "a base64 source needs media_type and data strings",
                    ));
                }
            }
        }
        Some("url") => source
            .and_then(|s| s.get("url"))
            .and_then(Value::as_str)
            .ok_or_else(|| Untranslatable::new(format!("{path}.source.url"), "must be a string"))?
            .to_string(),
        _ => {
            return Err(Untranslatable::new(
                format!("{path}.source.type"),
                "only base64 and url image sources have an OpenAI equivalent",
            ));
        }
    };
    let mut part = Map::new();
    part.insert("type".into(), "image_url".into());
    part.insert("image_url".into(), json!({ "url": url }));
    carry_cache_control(block, &mut part);
    Ok(Value::Object(part))
}

/// An assistant turn's blocks → one OpenAI assistant message. With tool calls the text is a
/// string (null when none) unless a block carries `cache_control`; without, text parts.
fn assistant_blocks_to_openai(blocks: &[Value], path: &str) -> Result<Value, Untranslatable> {
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let block_path = format!("{path}[{j}]");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(text_part(block, &block_path)?),
            Some("tool_use") => calls.push(tool_use_to_call(block, &block_path)?),
            Some(kind) => {
                return Err(Untranslatable::new(
                    block_path,
                    format!("a `{kind}` block has no OpenAI chat equivalent in an assistant turn"),
                ));
            }
            None => {
                return Err(Untranslatable::new(
                    format!("{block_path}.type"),
                    "must be a string",
                ));
            }
        }
    }
    if calls.is_empty() {
        return Ok(json!({"role": "assistant", "content": parts}));
    }
    let content = if parts.is_empty() {
        Value::Null
    } else if parts.iter().any(|p| p.get("cache_control").is_some()) {
        Value::Array(parts)
    } else {
        Value::String(parts.iter().map(|p| str_at(p, "text")).collect())
    };
    Ok(json!({"role": "assistant", "content": content, "tool_calls": calls}))
}

/// A `tool_use` block → an OpenAI tool call.
fn tool_use_to_call(block: &Value, path: &str) -> Result<Value, Untranslatable> {
    let id = block
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{path}.id"), "must be a string"))?;
    let name = block
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{path}.name"), "must be a string"))?;
    let input = block
        .get("input")
        .filter(|i| i.is_object())
        .ok_or_else(|| Untranslatable::new(format!("{path}.input"), "must be an object"))?;
    Ok(json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": input.to_string()},
    }))
}
