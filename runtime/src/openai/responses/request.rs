//! A Responses request → a chat-completions request ([`request_to_openai`]): the top level, the
//! fields refused (store-backed, built-in tools, reasoning) or ignored, sampling and the end user.

use serde_json::{Map, Value};

use crate::providers::translate::Untranslatable;

use super::NO_STORE;
use super::request_messages::messages;
use super::request_tools::{response_format, tool_choice, tools};

/// Every top-level request field this module knows; anything else is refused.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "user",
    "safety_identifier",
    "stream",
    "stream_options",
    "parallel_tool_calls",
    "metadata",
    "tools",
    "tool_choice",
    "text",
    "previous_response_id",
    "store",
    "conversation",
    "background",
    "prompt",
    "include",
    "reasoning",
    "truncation",
    "prompt_cache_key",
    "max_tool_calls",
    "service_tier",
    "top_logprobs",
];

/// A Responses create body → an OpenAI chat-completions request, or the first field that
/// cannot be carried.
pub fn request_to_openai(responses: &Value) -> Result<Value, Untranslatable> {
    let body = responses
        .as_object()
        .ok_or_else(|| Untranslatable::new("body", "the request body must be a JSON object"))?;
    check_known_fields(body)?;
    check_stateless(body)?;
    check_unsupported_controls(body)?;

    let mut chat = Map::new();
    chat.insert("model".into(), Value::String(model(body)?));
    chat.insert("messages".into(), Value::Array(messages(body)?));
    copy_sampling(body, &mut chat)?;
    if let Some(user) = end_user(body)? {
        chat.insert("user".into(), Value::String(user));
    }
    if let Some(tools) = tools(body)? {
        chat.insert("tools".into(), tools);
    }
    if let Some(choice) = tool_choice(body)? {
        chat.insert("tool_choice".into(), choice);
    }
    if let Some(format) = response_format(body)? {
        chat.insert("response_format".into(), format);
    }
    check_ignored(body)?;
    Ok(Value::Object(chat))
}

/// The field's value, with an explicit `null` read as absent (SDKs send `null` for unset).
pub(super) fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|value| !value.is_null())
}

/// Refuses any field the Responses API does not define (or this module does not know).
fn check_known_fields(body: &Map<String, Value>) -> Result<(), Untranslatable> {
    match body
        .keys()
        .find(|key| !KNOWN_FIELDS.contains(&key.as_str()))
    {
        Some(key) => Err(Untranslatable::new(
            key.as_str(),
            "unknown field for the Responses API; weir cannot carry it",
        )),
        None => Ok(()),
    }
}

/// Refuses every feature that needs a response store.
fn check_stateless(body: &Map<String, Value>) -> Result<(), Untranslatable> {
    for name in ["previous_response_id", "conversation", "prompt"] {
        if field(body, name).is_some() {
            return Err(Untranslatable::new(name, NO_STORE));
        }
    }
    if field(body, "store").is_some_and(|store| store != &Value::Bool(false)) {
        return Err(Untranslatable::new("store", NO_STORE));
    }
    if field(body, "background").is_some_and(|background| background != &Value::Bool(false)) {
        return Err(Untranslatable::new(
            "background",
            "background responses need a response store, which weir does not have yet",
        ));
    }
    match field(body, "include") {
        None => Ok(()),
        Some(Value::Array(items)) if items.is_empty() => Ok(()),
        Some(_) => Err(Untranslatable::new(
            "include",
            "extra output data (`include`) is not supported; send an empty list or omit it",
        )),
    }
}

/// Refuses controls the chat pipeline has no way to honour.
fn check_unsupported_controls(body: &Map<String, Value>) -> Result<(), Untranslatable> {
    check_reasoning(body)?;
    if field(body, "truncation").is_some_and(|mode| mode.as_str() != Some("disabled")) {
        return Err(Untranslatable::new(
            "truncation",
            "weir does not truncate the conversation; only \"disabled\" is supported",
        ));
    }
    if field(body, "top_logprobs").is_some_and(|count| count.as_u64() != Some(0)) {
        return Err(Untranslatable::new(
            "top_logprobs",
            "log probabilities are not supported on /v1/responses",
        ));
    }
    match field(body, "service_tier").map(Value::as_str) {
        None | Some(Some("auto" | "default")) => Ok(()),
        Some(_) => Err(Untranslatable::new(
            "service_tier",
            "only the \"auto\" and \"default\" service tiers are supported",
        )),
    }
}

/// `reasoning` is accepted only when it asks for nothing (`null`, `{}` or all-`null` fields).
fn check_reasoning(body: &Map<String, Value>) -> Result<(), Untranslatable> {
    let Some(reasoning) = field(body, "reasoning") else {
        return Ok(());
    };
    let Some(settings) = reasoning.as_object() else {
        return Err(Untranslatable::new("reasoning", "must be an object"));
    };
    match settings.iter().find(|(_, value)| !value.is_null()) {
        Some((key, _)) => Err(Untranslatable::new(
            format!("reasoning.{key}"),
            "reasoning controls are not supported on /v1/responses",
        )),
        None => Ok(()),
    }
}

/// Type-checks the ignored fields, so a malformed one is still a 400 rather than unnoticed.
fn check_ignored(body: &Map<String, Value>) -> Result<(), Untranslatable> {
    for (name, ok) in [
        (
            "metadata",
            field(body, "metadata").is_none_or(Value::is_object),
        ),
        (
            "stream_options",
            field(body, "stream_options").is_none_or(Value::is_object),
        ),
        (
            "prompt_cache_key",
            field(body, "prompt_cache_key").is_none_or(Value::is_string),
        ),
        (
            "max_tool_calls",
            field(body, "max_tool_calls").is_none_or(|count| count.as_u64().is_some()),
        ),
    ] {
        if !ok {
            return Err(Untranslatable::new(name, "has the wrong type"));
        }
    }
    Ok(())
}

/// `model`: required, a string.
fn model(body: &Map<String, Value>) -> Result<String, Untranslatable> {
    match field(body, "model") {
        Some(Value::String(model)) => Ok(model.clone()),
        Some(_) => Err(Untranslatable::new("model", "must be a string")),
        None => Err(Untranslatable::new("model", "is required")),
    }
}

/// Copies the sampling and transport scalars, type-checked, under their chat names.
fn copy_sampling(
    body: &Map<String, Value>,
    chat: &mut Map<String, Value>,
) -> Result<(), Untranslatable> {
    for (from, to) in [("temperature", "temperature"), ("top_p", "top_p")] {
        if let Some(value) = field(body, from) {
            if !value.is_number() {
                return Err(Untranslatable::new(from, "must be a number"));
            }
            chat.insert(to.into(), value.clone());
        }
    }
    if let Some(value) = field(body, "max_output_tokens") {
        if value.as_u64().is_none() {
            return Err(Untranslatable::new(
                "max_output_tokens",
                "must be a non-negative integer",
            ));
        }
        chat.insert("max_tokens".into(), value.clone());
    }
    for name in ["stream", "parallel_tool_calls"] {
        if let Some(value) = field(body, name) {
            if !value.is_boolean() {
                return Err(Untranslatable::new(name, "must be a boolean"));
            }
            chat.insert(name.into(), value.clone());
        }
    }
    Ok(())
}

/// The end-user id: `safety_identifier` or `user` (one of them; refused when they disagree).
fn end_user(body: &Map<String, Value>) -> Result<Option<String>, Untranslatable> {
    let read = |name: &str| match field(body, name) {
        None => Ok(None),
        Some(Value::String(id)) => Ok(Some(id.clone())),
        Some(_) => Err(Untranslatable::new(name, "must be a string")),
    };
    let user = read("user")?;
    let safety = read("safety_identifier")?;
    match (user, safety) {
        (Some(user), Some(safety)) if user != safety => Err(Untranslatable::new(
            "safety_identifier",
            "differs from `user`; weir carries one end-user id, set only one of them",
        )),
        (user, safety) => Ok(safety.or(user)),
    }
}
