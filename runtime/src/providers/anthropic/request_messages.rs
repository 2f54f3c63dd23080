//! Behind: OpenAI messages → Anthropic turns (system lifted out, same-role turns merged, tool
//! messages as `tool_result` blocks) and their content blocks.

use serde_json::{Map, Value, json};

use crate::providers::translate::Untranslatable;

use super::{carry_cache_control, present};

/// One Anthropic turn being built: string content stays a string until it is merged.
struct Turn {
    /// `"user"` or `"assistant"`.
    role: &'static str,
    /// The turn's content.
    content: TurnContent,
}

/// An Anthropic message's content: a plain string or content blocks.
enum TurnContent {
    /// `"content": "..."`, kept as sent so a round trip returns a string.
    Text(String),
    /// `"content": [blocks]`.
    Blocks(Vec<Value>),
}

impl TurnContent {
    /// The content as blocks (a string becomes one text block).
    fn into_blocks(self) -> Vec<Value> {
        match self {
            TurnContent::Text(text) => vec![json!({"type": "text", "text": text})],
            TurnContent::Blocks(blocks) => blocks,
        }
    }

    /// The content as Anthropic JSON.
    fn into_value(self) -> Value {
        match self {
            TurnContent::Text(text) => Value::String(text),
            TurnContent::Blocks(blocks) => Value::Array(blocks),
        }
    }
}

/// Appends a turn, merging it into the last one when the role repeats (Anthropic wants
/// alternating turns).
fn push_turn(turns: &mut Vec<Turn>, role: &'static str, content: TurnContent) {
    match turns.pop() {
        Some(last) if last.role == role => {
            let mut blocks = last.content.into_blocks();
            blocks.extend(content.into_blocks());
            turns.push(Turn {
                role,
                content: TurnContent::Blocks(blocks),
            });
        }
        Some(last) => {
            turns.push(last);
            turns.push(Turn { role, content });
        }
        None => turns.push(Turn { role, content }),
    }
}

/// OpenAI `messages` → Anthropic (`system`, `messages`).
pub(super) fn messages_to_anthropic(
    messages: Option<&Value>,
) -> Result<(Option<Value>, Value), Untranslatable> {
    let messages = present(messages)
        .and_then(Value::as_array)
        .ok_or_else(|| Untranslatable::new("messages", "must be an array of messages"))?;
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| Untranslatable::new(format!("{path}.role"), "must be a string"))?;
        match role {
            "system" | "developer" => {
                check_message_fields(message, &path, &["role", "content"])?;
                system.extend(system_blocks(
                    message.get("content"),
                    &format!("{path}.content"),
                )?);
            }
            "user" => {
                check_message_fields(message, &path, &["role", "content"])?;
                let content = user_content(message.get("content"), &format!("{path}.content"))?;
                push_turn(&mut turns, "user", content);
            }
            "assistant" => {
                check_message_fields(
                    message,
                    &path,
                    &["role", "content", "tool_calls", "annotations"],
                )?;
                push_turn(&mut turns, "assistant", assistant_content(message, &path)?);
            }
            "tool" => {
                check_message_fields(
                    message,
                    &path,
                    &["role", "content", "tool_call_id", "is_error"],
                )?;
                let block = tool_result_block(message, &path)?;
                push_turn(&mut turns, "user", TurnContent::Blocks(vec![block]));
            }
            _ => {
                return Err(Untranslatable::new(
                    format!("{path}.role"),
                    format!("Anthropic has no `{role}` role"),
                ));
            }
        }
    }
    let messages = turns
        .into_iter()
        .map(|t| json!({"role": t.role, "content": t.content.into_value()}))
        .collect();
    Ok((system_value(system), Value::Array(messages)))
}

/// A message carries only `allowed` fields (or nulls); anything else has no Anthropic
/// equivalent.
fn check_message_fields(
    message: &Value,
    path: &str,
    allowed: &[&str],
) -> Result<(), Untranslatable> {
    let object = message
        .as_object()
        .ok_or_else(|| Untranslatable::new(path, "must be a message object"))?;
    for (key, value) in object {
        if !allowed.contains(&key.as_str()) && !value.is_null() {
            let message = match key.as_str() {
                "name" => "Anthropic's messages have no participant names".to_string(),
                _ => format!("Anthropic's messages have no `{key}`"),
            };
            return Err(Untranslatable::new(format!("{path}.{key}"), message));
        }
    }
    Ok(())
}

/// The collected system text blocks → `system`: a string when there is one plain block.
fn system_value(blocks: Vec<Value>) -> Option<Value> {
    match blocks.as_slice() {
        [] => None,
        [only] if only.get("cache_control").is_none() => {
            only.get("text").cloned().or(Some(Value::Array(blocks)))
        }
        _ => Some(Value::Array(blocks)),
    }
}

/// A system/developer message's content → text blocks.
fn system_blocks(content: Option<&Value>, path: &str) -> Result<Vec<Value>, Untranslatable> {
    match content {
        Some(Value::String(text)) => Ok(vec![json!({"type": "text", "text": text})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| part_to_block(part, &format!("{path}[{j}]"), PartsAllowed::Text))
            .collect(),
        _ => Err(Untranslatable::new(
            path,
            "must be a string or an array of text parts",
        )),
    }
}

/// Which OpenAI content parts a message may carry to Anthropic.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PartsAllowed {
    /// Text only (system and assistant messages).
    Text,
    /// Text and images (user and tool messages).
    TextAndImages,
}

/// A user message's content → Anthropic content.
fn user_content(content: Option<&Value>, path: &str) -> Result<TurnContent, Untranslatable> {
    match content {
        Some(Value::String(text)) => Ok(TurnContent::Text(text.clone())),
        Some(Value::Array(parts)) => Ok(TurnContent::Blocks(parts_to_blocks(
            parts,
            path,
            PartsAllowed::TextAndImages,
        )?)),
        _ => Err(Untranslatable::new(
            path,
            "must be a string or an array of content parts",
        )),
    }
}

/// OpenAI content parts → Anthropic blocks.
fn parts_to_blocks(
    parts: &[Value],
    path: &str,
    allowed: PartsAllowed,
) -> Result<Vec<Value>, Untranslatable> {
    parts
        .iter()
        .enumerate()
        .map(|(j, part)| part_to_block(part, &format!("{path}[{j}]"), allowed))
        .collect()
}

/// One OpenAI content part → one Anthropic block (`cache_control` carried).
fn part_to_block(part: &Value, path: &str, allowed: PartsAllowed) -> Result<Value, Untranslatable> {
    let kind = part
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{path}.type"), "must be a string"))?;
    let mut block = Map::new();
    match kind {
        "text" => {
            let text = part
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| Untranslatable::new(format!("{path}.text"), "must be a string"))?;
            block.insert("type".into(), "text".into());
            block.insert("text".into(), text.into());
        }
        "image_url" if allowed == PartsAllowed::TextAndImages => {
            let url_path = format!("{path}.image_url.url");
            let url = part
                .get("image_url")
                .and_then(|i| i.get("url"))
                .and_then(Value::as_str)
                .ok_or_else(|| Untranslatable::new(url_path.as_str(), "must be a string"))?;
            block.insert("type".into(), "image".into());
            block.insert("source".into(), image_source(url, &url_path)?);
        }
        _ => {
            return Err(Untranslatable::new(
                path,
                format!("a `{kind}` content part has no Anthropic equivalent here"),
            ));
        }
    }
    carry_cache_control(part, &mut block);
    Ok(Value::Object(block))
}

/// An image URL → an Anthropic image `source`: base64 for a data URL, `url` for http(s).
fn image_source(url: &str, path: &str) -> Result<Value, Untranslatable> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
        return match meta.strip_suffix(";base64") {
            Some(media_type) if !media_type.is_empty() => Ok(json!({
                "type": "base64", "media_type": media_type, "data": data
            })),
            _ => Err(Untranslatable::new(
                path,
                "Anthropic takes data URLs only as `data:<media type>;base64,<data>`",
            )),
        };
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "url", "url": url}));
    }
    Err(Untranslatable::new(
        path,
        "must be an http(s) URL or a base64 data URL",
    ))
}

/// An assistant message → Anthropic content: its text, then one `tool_use` per tool call.
fn assistant_content(message: &Value, path: &str) -> Result<TurnContent, Untranslatable> {
    let content_path = format!("{path}.content");
    let calls = match present(message.get("tool_calls")) {
        None => &[][..],
        Some(Value::Array(calls)) => calls.as_slice(),
        Some(_) => {
            return Err(Untranslatable::new(
                format!("{path}.tool_calls"),
                "must be an array of tool calls",
            ));
        }
    };
    let content = present(message.get("content"));
    if calls.is_empty()
        && let Some(Value::String(text)) = content
    {
        return Ok(TurnContent::Text(text.clone()));
    }
    let mut blocks = match content {
        None => Vec::new(),
        Some(Value::String(text)) if text.is_empty() => Vec::new(),
        Some(Value::String(text)) => vec![json!({"type": "text", "text": text})],
        Some(Value::Array(parts)) => parts_to_blocks(parts, &content_path, PartsAllowed::Text)?,
        Some(_) => {
            return Err(Untranslatable::new(
                content_path,
                "must be a string, null or an array of text parts",
            ));
        }
    };
    for (j, call) in calls.iter().enumerate() {
        blocks.push(tool_use_block(call, &format!("{path}.tool_calls[{j}]"))?);
    }
    Ok(TurnContent::Blocks(blocks))
}

/// An OpenAI tool call → a `tool_use` block whose `input` is the parsed arguments.
fn tool_use_block(call: &Value, path: &str) -> Result<Value, Untranslatable> {
    if let Some(kind) = present(call.get("type"))
        && kind.as_str() != Some("function")
    {
        return Err(Untranslatable::new(
            format!("{path}.type"),
            "only function tool calls have an Anthropic equivalent",
        ));
    }
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{path}.id"), "must be a string"))?;
    let function = call.get("function");
    let name = function
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{path}.function.name"), "must be a string"))?;
    let arguments_path = format!("{path}.function.arguments");
    let arguments = function
        .and_then(|f| f.get("arguments"))
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(arguments_path.as_str(), "must be a string"))?;
    let input = parse_arguments(arguments)
        .ok_or_else(|| Untranslatable::new(arguments_path, "must be a JSON object"))?;
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// Tool-call arguments → a JSON object (empty arguments are the empty object).
pub(super) fn parse_arguments(arguments: &str) -> Option<Value> {
    if arguments.trim().is_empty() {
        return Some(json!({}));
    }
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
}

/// An OpenAI `tool` message → a `tool_result` block.
fn tool_result_block(message: &Value, path: &str) -> Result<Value, Untranslatable> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{path}.tool_call_id"), "must be a string"))?;
    let content_path = format!("{path}.content");
    let content = match message.get("content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) => Value::Array(parts_to_blocks(
            parts,
            &content_path,
            PartsAllowed::TextAndImages,
        )?),
        _ => {
            return Err(Untranslatable::new(
                content_path,
                "must be a string or an array of content parts",
            ));
        }
    };
    let mut block = json!({"type": "tool_result", "tool_use_id": id, "content": content});
    if let Some(is_error) = present(message.get("is_error")) {
        let is_error = is_error
            .as_bool()
            .ok_or_else(|| Untranslatable::new(format!("{path}.is_error"), "must be a boolean"))?;
        if let Some(b) = block.as_object_mut() {
            b.insert("is_error".into(), is_error.into());
        }
    }
    Ok(block)
}
