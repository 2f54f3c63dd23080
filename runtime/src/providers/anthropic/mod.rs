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

mod error;
mod front_messages;
mod front_request;
mod front_response;
mod front_stream;
mod front_tools;
mod request;
mod request_messages;
mod request_tools;
mod response;
mod stream;

pub use error::error_body;
pub use front_request::{count_tokens_request, request_to_openai};
pub use front_response::response_from_openai;
pub use front_stream::StreamFromOpenAi;
pub use request::request_from_openai;
pub use response::response_to_openai;
pub use stream::StreamToOpenAi;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::translate::Untranslatable;

/// Default `max_tokens` when the OpenAI request sets none (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Highest `temperature` Anthropic accepts (OpenAI allows up to 2).
const MAX_TEMPERATURE: f64 = 1.0;

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

#[cfg(test)]
mod tests;
