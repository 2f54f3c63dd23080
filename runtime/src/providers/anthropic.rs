//! Anthropic's Messages API (`POST /v1/messages`, `anthropic-version: 2023-06-01`) in both
//! directions against weir's OpenAI chat-completions shape.
//!
//! Owns: **behind** — an OpenAI request to an Anthropic upstream ([`request_from_openai`]), and
//! the upstream's message ([`response_to_openai`]) and SSE stream ([`StreamToOpenAi`]) back to
//! OpenAI shape; **front** — an Anthropic client's request to weir ([`request_to_openai`],
//! [`count_tokens_request`]) and weir's answer back in Anthropic shape
//! ([`response_from_openai`], [`StreamFromOpenAi`], [`error_body`]). Both directions agree, so
//! an OpenAI request sent behind and read back in front is the request it was.
//!
//! Why the mappings are what they are:
//! - Anthropic keeps the system prompt out of the turns (top-level `system`) and wants
//!   alternating user/assistant turns, so system/developer messages are lifted wherever they
//!   are, consecutive same-role messages are merged (blocks concatenated), and OpenAI `tool`
//!   messages become `tool_result` blocks of a user turn.
//! - `prompt_tokens` includes cached tokens in OpenAI's convention, while Anthropic's
//!   `input_tokens` excludes both cache reads and cache writes: the usage mappings add and
//!   subtract them (`prompt_tokens_details.cache_creation_tokens` carries the cache writes,
//!   which OpenAI has no field for).
//! - `is_error` on a `tool_result` has no OpenAI equivalent; it rides as an extra
//!   `"is_error"` field on the OpenAI `tool` message so a round trip keeps it.
//! - `cache_control` on a content part, a system part or a tool rides the same way (OpenAI
//!   has no field for it; weir carries it so an Anthropic client's prompt caching reaches an
//!   Anthropic upstream). On `tool_use`/`tool_result` blocks it is a hint and is dropped.
//! - Structured outputs go out as `output_format` (Anthropic's `structured-outputs-2025-11-13`
//!   shape); the front also reads the GA spelling `output_config.format`.
//! - Anthropic's `top_k`, enabled `thinking`, server tools and `document` blocks have no
//!   OpenAI equivalent and are [`Untranslatable`]; so are OpenAI's `n > 1`, `logprobs`,
//!   `seed`, penalties, `logit_bias`, `audio`, `modalities`, `prediction`, message `name`s and
//!   any field this module does not know (a value equal to OpenAI's default is accepted).
//!
//! Ignored, because they do not change the answer:
//! - OpenAI `stream_options`: Anthropic always reports usage in its stream; the front adds
//!   `{"include_usage": true}` to streams itself so the final usage can be reported.
//! - OpenAI `metadata`: string tags weir adds for its own bookkeeping.
//! - OpenAI `image_url.detail`: a resolution hint Anthropic has no knob for.
//! - OpenAI `annotations` on an assistant message sent back as history: citations of the
//!   model's own earlier answer (clients echo `[]`), not instructions.
//! - OpenAI `response_format.json_schema.name`/`strict`: Anthropic's structured outputs are
//!   always strict and unnamed (the front names its schema `"output"`).
//! - OpenAI `parallel_tool_calls: false` with `tool_choice: "none"`: no tool is called anyway.
//! - Anthropic `service_tier`: a capacity hint; `cache_control` on `tool_use`/`tool_result`
//!   blocks; `citations` on text blocks sent back as history.
//!
//! Responses are best effort and never lose text: thinking blocks and server-tool blocks in an
//! Anthropic message have no OpenAI field and are skipped; tool arguments an OpenAI model
//! emitted that are not a JSON object become an empty `input` object in Anthropic shape.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::translate::{ToOpenAiStream, Untranslatable};

/// Default `max_tokens` when the OpenAI request sets none (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Highest `temperature` Anthropic accepts (OpenAI allows up to 2).
const MAX_TEMPERATURE: f64 = 1.0;

/// The name the front gives an Anthropic `output_format` schema (OpenAI requires one).
const OUTPUT_SCHEMA_NAME: &str = "output";

/// Prefix of Anthropic message ids.
const MESSAGE_ID_PREFIX: &str = "msg_";

/// Error for a stream cut before Anthropic said the answer was complete.
const CUT_SHORT: &str = "the stream ended before message_stop";

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// The current unix time in seconds (OpenAI's `created`); 0 if the clock is before 1970.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `value` unless it is JSON `null` (OpenAI and Anthropic both read `null` as "not set").
fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

/// An unsigned count at `key` of a usage object, 0 when absent or not a count.
fn count(usage: Option<&Value>, key: &str) -> u64 {
    usage
        .and_then(|u| u.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// The string at `key`, or `""`.
fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Copies `cache_control` from `from` to `to` when set.
fn carry_cache_control(from: &Value, to: &mut Map<String, Value>) {
    if let Some(cc) = present(from.get("cache_control")) {
        to.insert("cache_control".into(), cc.clone());
    }
}

/// A positive integer field (`max_tokens`), or why not.
fn positive_integer(value: &Value, param: &str) -> Result<u64, Untranslatable> {
    match value.as_u64() {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(Untranslatable::new(param, "must be a positive integer")),
    }
}

/// A `temperature` within Anthropic's range, or why not.
fn temperature(value: &Value) -> Result<Value, Untranslatable> {
    match value.as_f64() {
        Some(t) if (0.0..=MAX_TEMPERATURE).contains(&t) => Ok(value.clone()),
        Some(_) => Err(Untranslatable::new(
            "temperature",
            "Anthropic accepts a temperature from 0 to 1",
        )),
        None => Err(Untranslatable::new("temperature", "must be a number")),
    }
}

/// A `top_p` number, or why not.
fn top_p(value: &Value) -> Result<Value, Untranslatable> {
    match value.as_f64() {
        Some(_) => Ok(value.clone()),
        None => Err(Untranslatable::new("top_p", "must be a number")),
    }
}

/// An array of strings (`stop_sequences`), or why not.
fn string_array(value: &Value, param: &str) -> Result<Vec<Value>, Untranslatable> {
    let items = value
        .as_array()
        .ok_or_else(|| Untranslatable::new(param, "must be an array of strings"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            Value::String(_) => Ok(s.clone()),
            _ => Err(Untranslatable::new(
                format!("{param}[{i}]"),
                "must be a string",
            )),
        })
        .collect()
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new.
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage (`input_tokens` excluding cache reads and writes) → OpenAI usage
/// (`prompt_tokens` including them).
fn usage_to_openai(input: &Value, output_tokens: u64) -> Value {
    let uncached = count(Some(input), "input_tokens");
    let read = count(Some(input), "cache_read_input_tokens");
    let created = count(Some(input), "cache_creation_input_tokens");
    let prompt = uncached.saturating_add(read).saturating_add(created);
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": output_tokens,
        "total_tokens": prompt.saturating_add(output_tokens),
    });
    let has_cache_fields = present(input.get("cache_read_input_tokens")).is_some()
        || present(input.get("cache_creation_input_tokens")).is_some();
    if has_cache_fields && let Some(u) = usage.as_object_mut() {
        u.insert(
            "prompt_tokens_details".into(),
            json!({"cached_tokens": read, "cache_creation_tokens": created}),
        );
    }
    usage
}

/// OpenAI usage → Anthropic usage: the reverse of [`usage_to_openai`].
fn usage_from_openai(usage: Option<&Value>) -> Value {
    let details = usage.and_then(|u| u.get("prompt_tokens_details"));
    let read = count(details, "cached_tokens");
    let created = count(details, "cache_creation_tokens");
    let input = count(usage, "prompt_tokens")
        .saturating_sub(read)
        .saturating_sub(created);
    json!({
        "input_tokens": input,
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": read,
        "output_tokens": count(usage, "completion_tokens"),
    })
}

// ---------------------------------------------------------------------------------------------
// Behind: OpenAI request → Anthropic request
// ---------------------------------------------------------------------------------------------

/// OpenAI top-level request fields this module translates (or ignores, see the module doc).
const OPENAI_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "user",
    "stream",
    "stream_options",
    "metadata",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
];

/// An OpenAI request → an Anthropic Messages request for the upstream `model`. A field
/// Anthropic cannot express is [`Untranslatable`], named as the sender wrote it.
pub fn request_from_openai(openai: &Value, model: &str) -> Result<Value, Untranslatable> {
    let request = openai
        .as_object()
        .ok_or_else(|| Untranslatable::new("body", "the request must be a JSON object"))?;
    for (key, value) in request {
        check_openai_field(key, value)?;
    }
    let (system, messages) = messages_to_anthropic(request.get("messages"))?;
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    if let Some(system) = system {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), messages);
    out.insert("max_tokens".into(), max_tokens_from_openai(request)?.into());
    if let Some(t) = present(request.get("temperature")) {
        out.insert("temperature".into(), temperature(t)?);
    }
    if let Some(p) = present(request.get("top_p")) {
        out.insert("top_p".into(), top_p(p)?);
    }
    if let Some(stop) = present(request.get("stop")) {
        out.insert("stop_sequences".into(), stop_from_openai(stop)?);
    }
    if let Some(user) = present(request.get("user")) {
        let user = user
            .as_str()
            .ok_or_else(|| Untranslatable::new("user", "must be a string"))?;
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if let Some(stream) = present(request.get("stream")) {
        let stream = stream
            .as_bool()
            .ok_or_else(|| Untranslatable::new("stream", "must be a boolean"))?;
        out.insert("stream".into(), stream.into());
    }
    if let Some(tools) = present(request.get("tools")) {
        out.insert("tools".into(), tools_from_openai(tools)?);
    }
    let choice = tool_choice_from_openai(
        present(request.get("tool_choice")),
        present(request.get("parallel_tool_calls")),
    )?;
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    if let Some(format) = present(request.get("response_format"))
        && let Some(format) = output_format_from_openai(format)?
    {
        out.insert("output_format".into(), format);
    }
    Ok(Value::Object(out))
}

/// Whether `value` is what OpenAI assumes when `key` is not sent, so nothing is lost by
/// not sending it on.
fn is_openai_default(key: &str, value: &Value) -> bool {
    match key {
        _ if value.is_null() => true,
        "n" => value.as_u64() == Some(1),
        "logprobs" => value.as_bool() == Some(false),
        "top_logprobs" => value.as_u64() == Some(0),
        "presence_penalty" | "frequency_penalty" => value.as_f64() == Some(0.0),
        "logit_bias" => value.as_object().is_some_and(Map::is_empty),
        _ => false,
    }
}

/// A top-level OpenAI field is known, or set to its default, or [`Untranslatable`].
fn check_openai_field(key: &str, value: &Value) -> Result<(), Untranslatable> {
    if OPENAI_FIELDS.contains(&key) || is_openai_default(key, value) {
        return Ok(());
    }
    let message = match key {
        "n" => "Anthropic returns one choice per request; n must be 1".to_string(),
        _ => format!("Anthropic's Messages API has no equivalent of `{key}`"),
    };
    Err(Untranslatable::new(key, message))
}

/// `max_completion_tokens`, else `max_tokens`, else [`DEFAULT_MAX_TOKENS`].
fn max_tokens_from_openai(request: &Map<String, Value>) -> Result<u64, Untranslatable> {
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(value) = present(request.get(key)) {
            return positive_integer(value, key);
        }
    }
    Ok(u64::from(DEFAULT_MAX_TOKENS))
}

/// OpenAI `stop` (a string or an array of strings) → `stop_sequences`.
fn stop_from_openai(stop: &Value) -> Result<Value, Untranslatable> {
    match stop {
        Value::String(_) => Ok(Value::Array(vec![stop.clone()])),
        _ => Ok(Value::Array(string_array(stop, "stop")?)),
    }
}

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
fn messages_to_anthropic(
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
fn parse_arguments(arguments: &str) -> Option<Value> {
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

/// OpenAI `tools` → Anthropic tools.
fn tools_from_openai(tools: &Value) -> Result<Value, Untranslatable> {
    let tools = tools
        .as_array()
        .ok_or_else(|| Untranslatable::new("tools", "must be an array of tools"))?;
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| tool_from_openai(tool, &format!("tools[{i}]")))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// One OpenAI function tool → `{name, description, input_schema, strict, cache_control}`.
fn tool_from_openai(tool: &Value, path: &str) -> Result<Value, Untranslatable> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(Untranslatable::new(
            format!("{path}.type"),
            "only `function` tools have an Anthropic equivalent",
        ));
    }
    let function = tool.get("function");
    let name = function
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{path}.function.name"), "must be a string"))?;
    let mut out = Map::new();
    out.insert("name".into(), name.into());
    if let Some(description) = present(function.and_then(|f| f.get("description"))) {
        let description = description.as_str().ok_or_else(|| {
            Untranslatable::new(format!("{path}.function.description"), "must be a string")
        })?;
        out.insert("description".into(), description.into());
    }
    let schema = match present(function.and_then(|f| f.get("parameters"))) {
        None => json!({"type": "object", "properties": {}}),
        Some(schema @ Value::Object(_)) => schema.clone(),
        Some(_) => {
            return Err(Untranslatable::new(
                format!("{path}.function.parameters"),
                "must be a JSON schema object",
            ));
        }
    };
    out.insert("input_schema".into(), schema);
    if let Some(strict) = present(function.and_then(|f| f.get("strict"))) {
        let strict = strict.as_bool().ok_or_else(|| {
            Untranslatable::new(format!("{path}.function.strict"), "must be a boolean")
        })?;
        out.insert("strict".into(), strict.into());
    }
    carry_cache_control(tool, &mut out);
    Ok(Value::Object(out))
}

/// OpenAI `tool_choice` and `parallel_tool_calls` → Anthropic `tool_choice`.
fn tool_choice_from_openai(
    choice: Option<&Value>,
    parallel: Option<&Value>,
) -> Result<Option<Value>, Untranslatable> {
    let disable_parallel = match parallel {
        None => false,
        Some(Value::Bool(parallel)) => !parallel,
        Some(_) => {
            return Err(Untranslatable::new(
                "parallel_tool_calls",
                "must be a boolean",
            ));
        }
    };
    let mut out = match choice {
        None if disable_parallel => json!({"type": "auto"}),
        None => return Ok(None),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => {
                return Err(Untranslatable::new(
                    "tool_choice",
                    format!("`{mode}` has no Anthropic equivalent"),
                ));
            }
        },
        Some(named) => {
            let name = named
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Untranslatable::new(
                        "tool_choice",
                        "must be auto, none, required or {type: function, function: {name}}",
                    )
                })?;
            json!({"type": "tool", "name": name})
        }
    };
    if disable_parallel
        && out.get("type").and_then(Value::as_str) != Some("none")
        && let Some(o) = out.as_object_mut()
    {
        o.insert("disable_parallel_tool_use".into(), true.into());
    }
    Ok(Some(out))
}

/// OpenAI `response_format` → Anthropic `output_format` (none for plain text).
fn output_format_from_openai(format: &Value) -> Result<Option<Value>, Untranslatable> {
    let schema = match format.get("type").and_then(Value::as_str) {
        Some("text") => return Ok(None),
        Some("json_object") => json!({"type": "object"}),
        Some("json_schema") => {
            match present(format.get("json_schema").and_then(|s| s.get("schema"))) {
                None => json!({"type": "object"}),
                Some(schema @ Value::Object(_)) => schema.clone(),
                Some(_) => {
                    return Err(Untranslatable::new(
                        "response_format.json_schema.schema",
                        "must be a JSON schema object",
                    ));
                }
            }
        }
        _ => {
            return Err(Untranslatable::new(
                "response_format.type",
                "must be text, json_object or json_schema",
            ));
        }
    };
    Ok(Some(json!({"type": "json_schema", "schema": schema})))
}

// ---------------------------------------------------------------------------------------------
// Behind: Anthropic message → OpenAI chat.completion
// ---------------------------------------------------------------------------------------------

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
fn anthropic_error_message(error: &Value) -> String {
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

// ---------------------------------------------------------------------------------------------
// Behind: Anthropic SSE → OpenAI chunks
// ---------------------------------------------------------------------------------------------

/// Turns an Anthropic Messages SSE stream, event by event, into OpenAI chunks.
#[derive(Debug, Default)]
pub struct StreamToOpenAi {
    /// The message id from `message_start`.
    id: String,
    /// The model from `message_start`.
    model: String,
    /// When the stream started (OpenAI's `created`).
    created: u64,
    /// Input-side usage (`input_tokens`, cache reads and writes), from `message_start` and
    /// updated by any cumulative usage in `message_delta`.
    input_usage: Map<String, Value>,
    /// `output_tokens`, from the latest `message_delta` (or `message_start`).
    output_tokens: u64,
    /// Anthropic content-block index → OpenAI tool-call index, for tool_use blocks.
    tool_index: BTreeMap<u64, u64>,
    /// `message_stop` has been seen and `[DONE]` sent.
    done: bool,
}

impl StreamToOpenAi {
    /// A translator for one stream.
    pub fn new() -> Self {
        StreamToOpenAi {
            created: now(),
            ..StreamToOpenAi::default()
        }
    }

    /// One OpenAI chunk with a single choice carrying `delta` and `finish_reason`.
    fn chunk(&self, delta: Value, finish_reason: Value) -> String {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
        .to_string()
    }

    /// The final usage chunk (`choices: []`).
    fn usage_chunk(&self) -> String {
        let input = Value::Object(self.input_usage.clone());
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_to_openai(&input, self.output_tokens),
        })
        .to_string()
    }

    /// Records the input-side counts of an Anthropic usage object.
    fn record_usage(&mut self, usage: Option<&Value>) {
        for key in [
            "input_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ] {
            if let Some(n) = usage.and_then(|u| u.get(key)).filter(|n| n.is_u64()) {
                self.input_usage.insert(key.into(), n.clone());
            }
        }
        if let Some(n) = usage
            .and_then(|u| u.get("output_tokens"))
            .and_then(Value::as_u64)
        {
            self.output_tokens = n;
        }
    }

    /// `message_start`: the role chunk; remembers id, model and input usage.
    fn message_start(&mut self, event: &Value) -> Result<Vec<String>, String> {
        let message = event
            .get("message")
            .filter(|m| m.is_object())
            .ok_or("message_start without a message")?;
        self.id = str_at(message, "id").to_string();
        self.model = str_at(message, "model").to_string();
        self.record_usage(message.get("usage"));
        Ok(vec![self.chunk(json!({"role": "assistant"}), Value::Null)])
    }

    /// `content_block_start`: a tool call's opening chunk, or text already in the block.
    fn block_start(&mut self, event: &Value) -> Result<Vec<String>, String> {
        let index = event
            .get("index")
            .and_then(Value::as_u64)
            .ok_or("content_block_start without an index")?;
        let block = event
            .get("content_block")
            .filter(|b| b.is_object())
            .ok_or("content_block_start without a content_block")?;
        match block.get("type").and_then(Value::as_str) {
            Some("text") => Ok(self.text_chunk(str_at(block, "text"))),
            Some("tool_use") => {
                let k = u64::try_from(self.tool_index.len()).unwrap_or(u64::MAX);
                self.tool_index.insert(index, k);
                let call = json!({
                    "index": k,
                    "id": str_at(block, "id"),
                    "type": "function",
                    "function": {"name": str_at(block, "name"), "arguments": ""},
                });
                Ok(vec![self.chunk(json!({"tool_calls": [call]}), Value::Null)])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// A content chunk for `text`, none for empty text.
    fn text_chunk(&self, text: &str) -> Vec<String> {
        if text.is_empty() {
            return Vec::new();
        }
        vec![self.chunk(json!({"content": text}), Value::Null)]
    }

    /// `content_block_delta`: text or tool-argument fragments; thinking is skipped.
    fn block_delta(&mut self, event: &Value) -> Result<Vec<String>, String> {
        let delta = event
            .get("delta")
            .filter(|d| d.is_object())
            .ok_or("content_block_delta without a delta")?;
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => Ok(self.text_chunk(str_at(delta, "text"))),
            Some("input_json_delta") => {
                // Input of a block that is not a client tool_use (a server tool) is skipped
                // like the block itself.
                let index = event.get("index").and_then(Value::as_u64);
                let Some(k) = index.and_then(|i| self.tool_index.get(&i)).copied() else {
                    return Ok(Vec::new());
                };
                let partial = str_at(delta, "partial_json");
                if partial.is_empty() {
                    return Ok(Vec::new());
                }
                let call = json!({"index": k, "function": {"arguments": partial}});
                Ok(vec![self.chunk(json!({"tool_calls": [call]}), Value::Null)])
            }
            // thinking_delta, signature_delta, citations_delta and anything new.
            _ => Ok(Vec::new()),
        }
    }

    /// `message_delta`: the finish chunk; remembers the output usage.
    fn message_delta(&mut self, event: &Value) -> Result<Vec<String>, String> {
        self.record_usage(event.get("usage"));
        let reason = event
            .get("delta")
            .and_then(|d| d.get("stop_reason"))
            .and_then(Value::as_str);
        match reason {
            Some(reason) => Ok(vec![self.chunk(json!({}), finish_reason(reason).into())]),
            None => Ok(Vec::new()),
        }
    }
}

impl ToOpenAiStream for StreamToOpenAi {
    fn push(&mut self, data: &str) -> Result<Vec<String>, String> {
        if self.done {
            return Ok(Vec::new());
        }
        let event: Value = serde_json::from_str(data)
            .map_err(|e| format!("an Anthropic stream event is not JSON: {e}"))?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or("an Anthropic stream event has no type")?;
        match kind {
            "message_start" => self.message_start(&event),
            "content_block_start" => self.block_start(&event),
            "content_block_delta" => self.block_delta(&event),
            "message_delta" => self.message_delta(&event),
            "message_stop" => {
                self.done = true;
                Ok(vec![self.usage_chunk(), "[DONE]".to_string()])
            }
            "error" => Err(anthropic_error_message(&event)),
            // content_block_stop, ping and event types added later.
            _ => Ok(Vec::new()),
        }
    }

    fn finish(&mut self) -> Result<Vec<String>, String> {
        if self.done {
            Ok(Vec::new())
        } else {
            Err(CUT_SHORT.to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Front: Anthropic request → OpenAI request
// ---------------------------------------------------------------------------------------------

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

/// One Anthropic message → OpenAI messages appended to `out` (a user turn's tool results
/// become `tool` messages ahead of the rest of its content).
fn message_to_openai(
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
fn text_part(block: &Value, path: &str) -> Result<Value, Untranslatable> {
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

/// Anthropic `tools` → OpenAI function tools.
fn tools_to_openai(tools: &Value) -> Result<Value, Untranslatable> {
    let tools = tools
        .as_array()
        .ok_or_else(|| Untranslatable::new("tools", "must be an array of tools"))?;
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| tool_to_openai(tool, &format!("tools[{i}]")))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// Fields of an Anthropic client tool this module translates.
const TOOL_FIELDS: &[&str] = &[
    "type",
    "name",
    "description",
    "input_schema",
    "strict",
    "cache_control",
];

/// One Anthropic client tool → an OpenAI function tool (server tools are untranslatable).
fn tool_to_openai(tool: &Value, path: &str) -> Result<Value, Untranslatable> {
    let object = tool
        .as_object()
        .ok_or_else(|| Untranslatable::new(path, "must be a tool object"))?;
    if let Some(kind) = present(object.get("type"))
        && kind.as_str() != Some("custom")
    {
        return Err(Untranslatable::new(
            format!("{path}.type"),
            format!("the server tool {kind} has no OpenAI chat equivalent"),
        ));
    }
    if let Some(key) = object
        .iter()
        .find(|(k, v)| !TOOL_FIELDS.contains(&k.as_str()) && !v.is_null())
        .map(|(k, _)| k)
    {
        return Err(Untranslatable::new(
            format!("{path}.{key}"),
            format!("OpenAI function tools have no `{key}`"),
        ));
    }
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{path}.name"), "must be a string"))?;
    let schema = object
        .get("input_schema")
        .filter(|s| s.is_object())
        .ok_or_else(|| Untranslatable::new(format!("{path}.input_schema"), "must be an object"))?;
    let mut function = Map::new();
    function.insert("name".into(), name.into());
    if let Some(description) = present(object.get("description")) {
        let description = description.as_str().ok_or_else(|| {
            Untranslatable::new(format!("{path}.description"), "must be a string")
        })?;
        function.insert("description".into(), description.into());
    }
    function.insert("parameters".into(), schema.clone());
    if let Some(strict) = present(object.get("strict")) {
        let strict = strict
            .as_bool()
            .ok_or_else(|| Untranslatable::new(format!("{path}.strict"), "must be a boolean"))?;
        function.insert("strict".into(), strict.into());
    }
    let mut out = Map::new();
    out.insert("type".into(), "function".into());
    out.insert("function".into(), Value::Object(function));
    carry_cache_control(tool, &mut out);
    Ok(Value::Object(out))
}

/// Anthropic `tool_choice` → OpenAI (`tool_choice`, `parallel_tool_calls` when disabled).
fn tool_choice_to_openai(choice: &Value) -> Result<(Value, Option<Value>), Untranslatable> {
    let openai = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("none") => json!("none"),
        Some("any") => json!("required"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| Untranslatable::new("tool_choice.name", "must be a string"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(Untranslatable::new(
                "tool_choice.type",
                "must be auto, any, tool or none",
            ));
        }
    };
    let parallel = match present(choice.get("disable_parallel_tool_use")) {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(Value::Bool(false)),
        Some(_) => {
            return Err(Untranslatable::new(
                "tool_choice.disable_parallel_tool_use",
                "must be a boolean",
            ));
        }
    };
    Ok((openai, parallel))
}

/// The requested output format: `output_format`, or GA `output_config.format` (whose other
/// settings, such as `effort`, have no OpenAI chat equivalent).
fn output_format_of(request: &Map<String, Value>) -> Result<Option<&Value>, Untranslatable> {
    if let Some(format) = present(request.get("output_format")) {
        return Ok(Some(format));
    }
    let Some(config) = present(request.get("output_config")) else {
        return Ok(None);
    };
    let config = config
        .as_object()
        .ok_or_else(|| Untranslatable::new("output_config", "must be an object"))?;
    for (key, value) in config {
        if key != "format" && !value.is_null() {
            return Err(Untranslatable::new(
                format!("output_config.{key}"),
                format!("`{key}` has no OpenAI chat equivalent"),
            ));
        }
    }
    Ok(present(config.get("format")))
}

/// An Anthropic output format → OpenAI `response_format` (a json_schema named `"output"`).
fn response_format_to_openai(format: &Value) -> Result<Value, Untranslatable> {
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Err(Untranslatable::new(
            "output_format.type",
            "only json_schema output formats have an OpenAI equivalent",
        ));
    }
    let schema = format
        .get("schema")
        .filter(|s| s.is_object())
        .ok_or_else(|| Untranslatable::new("output_format.schema", "must be an object"))?;
    Ok(json!({
        "type": "json_schema",
        "json_schema": {"name": OUTPUT_SCHEMA_NAME, "schema": schema},
    }))
}

// ---------------------------------------------------------------------------------------------
// Front: OpenAI chat.completion → Anthropic message
// ---------------------------------------------------------------------------------------------

/// An Anthropic message id for an OpenAI id (`msg_` prefixed unless it already is).
fn message_id(id: &str) -> String {
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

// ---------------------------------------------------------------------------------------------
// Front: OpenAI chunks → Anthropic SSE events
// ---------------------------------------------------------------------------------------------

/// The Anthropic content block a front stream has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    /// No block is open.
    None,
    /// A text block at this Anthropic index.
    Text(u64),
    /// A tool_use block at this Anthropic index, for this OpenAI tool-call index.
    Tool(u64, u64),
}

/// Turns weir's OpenAI chunks, one by one, into Anthropic SSE events (name, data).
#[derive(Debug)]
pub struct StreamFromOpenAi {
    /// The model named in `message_start`.
    model: String,
    /// `message_start` has been sent.
    started: bool,
    /// The block currently open.
    open: OpenBlock,
    /// The next Anthropic content-block index.
    next_index: u64,
    /// OpenAI tool-call indexes whose block has been opened.
    tools_seen: Vec<u64>,
    /// The Anthropic stop reason, from the last `finish_reason`.
    stop_reason: Option<&'static str>,
    /// The usage chunk's usage, when it came.
    usage: Option<Value>,
    /// `message_stop` (or an `error`) has been sent.
    finished: bool,
}

impl StreamFromOpenAi {
    /// A translator for one stream answering with `model`.
    pub fn new(model: &str) -> Self {
        StreamFromOpenAi {
            model: model.to_string(),
            started: false,
            open: OpenBlock::None,
            next_index: 0,
            tools_seen: Vec::new(),
            stop_reason: None,
            usage: None,
            finished: false,
        }
    }

    /// One OpenAI chunk → Anthropic (event name, data) pairs.
    pub fn push(&mut self, chunk: &Value) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        if self.finished {
            return events;
        }
        self.start(str_at(chunk, "id"), &mut events);
        if let Some(usage) = present(chunk.get("usage")) {
            self.usage = Some(usage.clone());
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        let Some(choice) = choice else {
            return events;
        };
        if let Some(delta) = choice.get("delta") {
            for key in ["content", "refusal"] {
                if let Some(Value::String(text)) = delta.get(key)
                    && !text.is_empty()
                {
                    self.text(text, &mut events);
                }
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for call in calls {
                    self.tool_call(call, &mut events);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(stop_reason(reason));
            self.close(&mut events);
        }
        events
    }

    /// After `[DONE]`: closes any open block, then `message_delta` (stop reason, usage) and
    /// `message_stop`.
    pub fn finish(&mut self) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        if self.finished {
            return events;
        }
        self.start("", &mut events);
        self.close(&mut events);
        let usage = usage_from_openai(self.usage.as_ref());
        events.push((
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": usage,
            }),
        ));
        events.push(("message_stop", json!({"type": "message_stop"})));
        self.finished = true;
        events
    }

    /// An `error` event mid-stream (the stream ends with it).
    pub fn error(&mut self, error_type: &str, message: &str) -> (&'static str, Value) {
        self.finished = true;
        (
            "error",
            json!({"type": "error", "error": {"type": error_type, "message": message}}),
        )
    }

    /// Sends `message_start` once, with empty content and the usage known so far.
    fn start(&mut self, id: &str, events: &mut Vec<(&'static str, Value)>) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = usage_from_openai(self.usage.as_ref());
        events.push((
            "message_start",
            json!({
                "type": "message_start",
                "message": {
                    "id": message_id(id),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": usage,
                },
            }),
        ));
    }

    /// Opens a block of `content_block` at the next index.
    fn open(&mut self, content_block: Value, events: &mut Vec<(&'static str, Value)>) -> u64 {
        let index = self.next_index;
        self.next_index = self.next_index.saturating_add(1);
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        ));
        index
    }

    /// Closes the open block, if any.
    fn close(&mut self, events: &mut Vec<(&'static str, Value)>) {
        let index = match self.open {
            OpenBlock::None => return,
            OpenBlock::Text(index) | OpenBlock::Tool(index, _) => index,
        };
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        self.open = OpenBlock::None;
    }

    /// A text fragment: into the open text block, or a new one.
    fn text(&mut self, text: &str, events: &mut Vec<(&'static str, Value)>) {
        let index = match self.open {
            OpenBlock::Text(index) => index,
            _ => {
                self.close(events);
                let index = self.open(json!({"type": "text", "text": ""}), events);
                self.open = OpenBlock::Text(index);
                index
            }
        };
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
        ));
    }

    /// A tool-call fragment: opens its tool_use block the first time the call is seen, then
    /// its argument fragments become `input_json_delta`s. (Fragments of a call whose block
    /// has already been closed cannot be placed and are dropped; OpenAI streams calls in
    /// order.)
    fn tool_call(&mut self, call: &Value, events: &mut Vec<(&'static str, Value)>) {
        let k = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let index = match self.open {
            OpenBlock::Tool(index, open_k) if open_k == k => index,
            _ if self.tools_seen.contains(&k) => return,
            _ => {
                self.close(events);
                let function = call.get("function").unwrap_or(&Value::Null);
                let block = json!({
                    "type": "tool_use",
                    "id": str_at(call, "id"),
                    "name": str_at(function, "name"),
                    "input": {},
                });
                let index = self.open(block, events);
                self.open = OpenBlock::Tool(index, k);
                self.tools_seen.push(k);
                index
            }
        };
        let arguments = call
            .get("function")
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !arguments.is_empty() {
            events.push((
                "content_block_delta",
                json!({
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": arguments},
                }),
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Anthropic's error `type` for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        // 400 and any other client error.
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An Anthropic error body for `status`:
/// `{"type":"error","error":{"type": <by status>, "message"}}`.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
