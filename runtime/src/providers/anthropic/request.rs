//! Behind: an OpenAI chat request → an Anthropic Messages request ([`request_from_openai`]):
//! the top level, the OpenAI fields Anthropic has no equivalent for, `max_tokens` and `stop`.

use serde_json::{Map, Value, json};

use crate::providers::translate::Untranslatable;

use super::request_messages::messages_to_anthropic;
use super::request_tools::{output_format_from_openai, tool_choice_from_openai, tools_from_openai};
use super::{DEFAULT_MAX_TOKENS, positive_integer, present, string_array, temperature, top_p};

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
