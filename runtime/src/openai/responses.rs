//! OpenAI's Responses API (`POST /v1/responses`), front direction: a client's Responses request
//! becomes a chat-completions request for weir's pipeline, and the chat answer (whole or
//! streamed) becomes a Response object or Responses stream events.
//!
//! Owns: the stateless subset of the Responses API. weir has no response store yet, so
//! everything that needs one (`previous_response_id`, `store: true`, `conversation`,
//! `background: true`, `prompt`, `item_reference` input items, `include`) is refused with an
//! [`Untranslatable`] naming the field; the client is told to send the whole conversation in
//! `input`. Built-in tools (web search, file search, computer use, ...) and reasoning controls are
//! refused too: the chat pipeline cannot run or express them.
//!
//! Mapping decisions worth knowing:
//! - `instructions` becomes a leading `system` message; `developer` input messages stay
//!   `developer`.
//! - Consecutive assistant items (an assistant message followed by `function_call` items, or
//!   several `function_call`s) merge into one chat assistant message: chat carries one assistant
//!   turn as text plus `tool_calls`, while Responses lists them as separate items.
//! - `safety_identifier` (the newer name for the end-user id) becomes chat's `user`; both set
//!   to different values is refused, since chat carries one id.
//! - Function tools keep `strict` only when the client set it. (Responses documents `strict` as
//!   defaulting to true, chat to false; forcing `true` would reject every schema that is not
//!   strict-compatible, so weir leaves the upstream's default.)
//! - Item ids are deterministic: `msg_<chat id suffix>` for the message, `fc_<call id>` for a
//!   function call; the response id is `resp_<chat id>` unless the chat id already starts with
//!   `resp_`.
//! - Echoed fields the client did not set take OpenAI's defaults (`tool_choice: "auto"`,
//!   `tools: []`, `parallel_tool_calls: true`, `text.format: {type: "text"}`), except
//!   `temperature` and `top_p`, which are `null`: the upstream's default is not known here and
//!   the Response object allows `null`.
//! - A truncated answer (`finish_reason: "length"` or `"content_filter"`) is `status:
//!   "incomplete"`; its stream ends with `response.incomplete` (as OpenAI's does) instead of
//!   `response.completed`.
//!
//! Ignored request fields (hints with no effect on the answer):
//! - `metadata`: tags OpenAI stores with a response; weir stores nothing. Echoed back unchanged.
//! - `stream_options`: only `include_obfuscation`, padding on stream events weir does not add.
//! - `prompt_cache_key`: a cache-routing hint for OpenAI's prompt cache.
//! - `max_tool_calls`: limits built-in tool calls, and built-in tools are refused anyway.
//! - `service_tier` `"auto"` / `"default"`: the normal tier (other tiers are refused).
//! - On input items, `id` and `status`, and on output-text parts, `annotations` and `logprobs`:
//!   echoes of an earlier Response's output sent back as history.

use serde_json::{Map, Value, json};

use crate::providers::translate::Untranslatable;

/// The reason every store-backed feature is refused with.
const NO_STORE: &str =
    "stored responses are not supported yet; send the whole conversation in `input`";

/// Prefix of a Response id.
const RESPONSE_ID_PREFIX: &str = "resp_";

/// Prefix of a chat-completion id, stripped when deriving item ids.
const CHAT_ID_PREFIX: &str = "chatcmpl-";

/// Prefix of a message output item's id.
const MESSAGE_ID_PREFIX: &str = "msg_";

/// Prefix of a function-call output item's id.
const FUNCTION_CALL_ID_PREFIX: &str = "fc_";

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

// ---------------------------------------------------------------------------------------------
// Request: Responses -> chat completions
// ---------------------------------------------------------------------------------------------

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
fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
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

// --- messages ---------------------------------------------------------------------------------

/// `instructions` then `input`, as chat messages.
fn messages(body: &Map<String, Value>) -> Result<Vec<Value>, Untranslatable> {
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
fn required_string<'a>(
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
fn check_item_keys(
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

// --- tools, tool choice, format ---------------------------------------------------------------

/// `tools`: function tools only.
fn tools(body: &Map<String, Value>) -> Result<Option<Value>, Untranslatable> {
    let Some(tools) = field(body, "tools") else {
        return Ok(None);
    };
    let Some(tools) = tools.as_array() else {
        return Err(Untranslatable::new("tools", "must be an array"));
    };
    let tools = tools
        .iter()
        .enumerate()
        .map(|(index, tool)| function_tool(tool, &format!("tools[{index}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Value::Array(tools)))
}

/// One `{type: "function", name, description, parameters, strict}` tool → a chat tool.
fn function_tool(tool: &Value, path: &str) -> Result<Value, Untranslatable> {
    let Some(tool) = tool.as_object() else {
        return Err(Untranslatable::new(path, "a tool must be an object"));
    };
    match field(tool, "type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(Untranslatable::new(
                format!("{path}.type"),
                format!("`{other}` tools are not supported; weir runs function tools only"),
            ));
        }
        None => return Err(Untranslatable::new(format!("{path}.type"), "is required")),
    }
    check_item_keys(
        tool,
        &["type", "name", "description", "parameters", "strict"],
        path,
    )?;
    let mut function = Map::new();
    function.insert(
        "name".into(),
        Value::String(required_string(tool, "name", path)?.to_owned()),
    );
    for (name, ok) in [
        ("description", Value::is_string as fn(&Value) -> bool),
        ("parameters", Value::is_object),
        ("strict", Value::is_boolean),
    ] {
        if let Some(value) = field(tool, name) {
            if !ok(value) {
                return Err(Untranslatable::new(
                    format!("{path}.{name}"),
                    "has the wrong type",
                ));
            }
            function.insert(name.into(), value.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

/// `tool_choice`: the three modes or one named function.
fn tool_choice(body: &Map<String, Value>) -> Result<Option<Value>, Untranslatable> {
    let Some(choice) = field(body, "tool_choice") else {
        return Ok(None);
    };
    if let Some(mode @ ("auto" | "none" | "required")) = choice.as_str() {
        return Ok(Some(Value::String(mode.to_owned())));
    }
    let named = choice
        .as_object()
        .filter(|choice| field(choice, "type").and_then(Value::as_str) == Some("function"))
        .and_then(|choice| field(choice, "name"))
        .and_then(Value::as_str);
    match named {
        Some(name) => Ok(Some(
            json!({"type": "function", "function": {"name": name}}),
        )),
        None => Err(Untranslatable::new(
            "tool_choice",
            "only \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\"} are supported",
        )),
    }
}

/// `text.format` → `response_format` (`None` for plain text).
fn response_format(body: &Map<String, Value>) -> Result<Option<Value>, Untranslatable> {
    let Some(text) = field(body, "text") else {
        return Ok(None);
    };
    let Some(text) = text.as_object() else {
        return Err(Untranslatable::new("text", "must be an object"));
    };
    check_item_keys(text, &["format", "verbosity"], "text")?;
    if field(text, "verbosity").is_some_and(|verbosity| verbosity.as_str() != Some("medium")) {
        return Err(Untranslatable::new(
            "text.verbosity",
            "verbosity control is not supported; omit it or send \"medium\"",
        ));
    }
    let Some(format) = field(text, "format") else {
        return Ok(None);
    };
    let Some(format) = format.as_object() else {
        return Err(Untranslatable::new("text.format", "must be an object"));
    };
    match field(format, "type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => json_schema_format(format).map(Some),
        _ => Err(Untranslatable::new(
            "text.format.type",
            "must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

/// `{type: "json_schema", name, schema, strict, description}` → chat's nested `json_schema`.
fn json_schema_format(format: &Map<String, Value>) -> Result<Value, Untranslatable> {
    let path = "text.format";
    check_item_keys(
        format,
        &["type", "name", "schema", "strict", "description"],
        path,
    )?;
    let mut schema = Map::new();
    schema.insert(
        "name".into(),
        Value::String(required_string(format, "name", path)?.to_owned()),
    );
    match field(format, "schema") {
        Some(value @ Value::Object(_)) => {
            schema.insert("schema".into(), value.clone());
        }
        Some(_) => {
            return Err(Untranslatable::new(
                "text.format.schema",
                "must be an object",
            ));
        }
        None => return Err(Untranslatable::new("text.format.schema", "is required")),
    }
    for (name, ok) in [
        ("strict", Value::is_boolean as fn(&Value) -> bool),
        ("description", Value::is_string),
    ] {
        if let Some(value) = field(format, name) {
            if !ok(value) {
                return Err(Untranslatable::new(
                    format!("{path}.{name}"),
                    "has the wrong type",
                ));
            }
            schema.insert(name.into(), value.clone());
        }
    }
    Ok(json!({"type": "json_schema", "json_schema": schema}))
}

// ---------------------------------------------------------------------------------------------
// Response: chat completion -> Response object
// ---------------------------------------------------------------------------------------------

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
fn first_choice(openai: &Value) -> Option<&Value> {
    openai.get("choices")?.as_array()?.first()
}

/// The request's model, for when the chat answer names none.
fn request_model(request: &Value) -> &str {
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
fn usage_from_openai(usage: &Value) -> Value {
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
fn set(object: &mut Value, key: &str, value: Value) {
    if let Some(object) = object.as_object_mut() {
        object.insert(key.into(), value);
    }
}

/// The Response object around an answer: ids, times and the request's echoed fields, with
/// `status: "completed"`, empty `output` and no usage (callers fill those in).
fn response_object(request: &Value, id: &str, created_at: u64, model: &str) -> Value {
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

/// How an answer ended, in Responses terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The model finished (stop, tool calls, or no reason given).
    Completed,
    /// Cut short; the reason as Responses names it (`max_output_tokens`, `content_filter`).
    Incomplete(&'static str),
}

impl Ending {
    /// Chat's `finish_reason` → the Response's ending.
    fn from_finish_reason(reason: Option<&str>) -> Ending {
        match reason {
            Some("length") => Ending::Incomplete("max_output_tokens"),
            Some("content_filter") => Ending::Incomplete("content_filter"),
            _ => Ending::Completed,
        }
    }

    /// The status of the Response and of each output item.
    fn item_status(self) -> &'static str {
        match self {
            Ending::Completed => "completed",
            Ending::Incomplete(_) => "incomplete",
        }
    }

    /// Sets `status` and `incomplete_details` on a Response object.
    fn apply(self, response: &mut Value) {
        set(response, "status", json!(self.item_status()));
        if let Ending::Incomplete(reason) = self {
            set(response, "incomplete_details", json!({"reason": reason}));
        }
    }
}

/// Deterministic ids derived from one chat-completion (or stream) id.
#[derive(Debug, Clone)]
struct ItemIds {
    /// The Response id, `resp_...`.
    response: String,
    /// The message item's id, `msg_...`.
    message: String,
}

impl ItemIds {
    /// The ids for the answer with chat id `id`.
    fn new(id: &str) -> ItemIds {
        let response = if id.starts_with(RESPONSE_ID_PREFIX) {
            id.to_owned()
        } else {
            format!("{RESPONSE_ID_PREFIX}{id}")
        };
        let suffix = id
            .strip_prefix(RESPONSE_ID_PREFIX)
            .or_else(|| id.strip_prefix(CHAT_ID_PREFIX))
            .unwrap_or(id);
        ItemIds {
            response,
            message: format!("{MESSAGE_ID_PREFIX}{suffix}"),
        }
    }

    /// A function-call item's id, from its call id.
    fn function_call(call_id: &str) -> String {
        format!("{FUNCTION_CALL_ID_PREFIX}{call_id}")
    }

    /// A call id for a tool call the upstream sent without one (the `index`th of the answer).
    fn fallback_call_id(&self, index: usize) -> String {
        format!("call_{}_{index}", self.message)
    }
}

/// Which kind of content part a message part is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartKind {
    /// `output_text`.
    Text,
    /// `refusal`.
    Refusal,
}

/// One content part of the message item.
#[derive(Debug, Clone)]
struct Part {
    /// Text or refusal.
    kind: PartKind,
    /// The text so far.
    text: String,
}

impl Part {
    /// The part as Responses JSON.
    fn to_value(&self) -> Value {
        match self.kind {
            PartKind::Text => json!({"type": "output_text", "text": self.text, "annotations": []}),
            PartKind::Refusal => json!({"type": "refusal", "refusal": self.text}),
        }
    }
}

/// One output item, as built from a whole answer or accumulated from a stream.
#[derive(Debug, Clone)]
enum OutputItem {
    /// The assistant's message: its content parts in order of first appearance.
    Message {
        /// Text and refusal parts.
        parts: Vec<Part>,
    },
    /// One tool call.
    FunctionCall {
        /// The chat tool-call id.
        call_id: String,
        /// The function's name.
        name: String,
        /// The arguments (JSON text) so far.
        arguments: String,
    },
}

impl OutputItem {
    /// The item's id.
    fn id(&self, ids: &ItemIds) -> String {
        match self {
            OutputItem::Message { .. } => ids.message.clone(),
            OutputItem::FunctionCall { call_id, .. } => ItemIds::function_call(call_id),
        }
    }

    /// The item as Responses JSON, with `status`.
    fn to_value(&self, ids: &ItemIds, status: &str) -> Value {
        match self {
            OutputItem::Message { parts } => json!({
                "type": "message",
                "id": self.id(ids),
                "status": status,
                "role": "assistant",
                "content": parts.iter().map(Part::to_value).collect::<Vec<_>>(),
            }),
            OutputItem::FunctionCall {
                call_id,
                name,
                arguments,
            } => json!({
                "type": "function_call",
                "id": self.id(ids),
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
                "status": status,
            }),
        }
    }

    /// The item as first announced in a stream: no content, no arguments, `in_progress`.
    fn announced(&self, ids: &ItemIds) -> Value {
        match self {
            OutputItem::Message { .. } => json!({
                "type": "message",
                "id": self.id(ids),
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }),
            OutputItem::FunctionCall { call_id, name, .. } => json!({
                "type": "function_call",
                "id": self.id(ids),
                "call_id": call_id,
                "name": name,
                "arguments": "",
                "status": "in_progress",
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream: chat chunks -> Responses events
// ---------------------------------------------------------------------------------------------

/// Turns a chat-completions stream into Responses stream events: `start`, one `push` per
/// chunk, then `finish` after `[DONE]` (or `error` when the stream broke). Each event is its
/// name and its `data` (which repeats the name as `type`, with an increasing `sequence_number`).
#[derive(Debug, Clone)]
pub struct StreamFromOpenAi {
    /// The Response object echoing the request, as sent in `response.created`.
    base: Value,
    /// Ids of the response and its items.
    ids: ItemIds,
    /// The next event's `sequence_number`.
    sequence: u64,
    /// Output items in order of first appearance.
    items: Vec<OutputItem>,
    /// Which item is the message, once text has arrived.
    message: Option<usize>,
    /// Chat tool-call index → output item index.
    tool_calls: Vec<(u64, usize)>,
    /// The model the chunks name (the request's until one does).
    model: String,
    /// The last `finish_reason` seen.
    finish_reason: Option<String>,
    /// Responses usage, from the chat usage chunk.
    usage: Value,
    /// Set once `finish` or `error` ran: later calls emit nothing.
    ended: bool,
}

impl StreamFromOpenAi {
    /// A stream answering `request`, whose Response is `id` (given `resp_` if it lacks it),
    /// created at `created_at` (Unix seconds).
    pub fn new(request: &Value, id: &str, created_at: u64) -> Self {
        let ids = ItemIds::new(id);
        let model = request_model(request).to_owned();
        let base = response_object(request, &ids.response, created_at, &model);
        StreamFromOpenAi {
            base,
            ids,
            sequence: 0,
            items: Vec::new(),
            message: None,
            tool_calls: Vec::new(),
            model,
            finish_reason: None,
            usage: Value::Null,
            ended: false,
        }
    }

    /// `response.created` and `response.in_progress`, both with the empty in-progress Response.
    pub fn start(&mut self) -> Vec<(&'static str, Value)> {
        let response = self.snapshot("in_progress", Vec::new());
        vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
        ]
    }

    /// One `chat.completion.chunk` → the events it makes: new items and parts, text and
    /// argument deltas. Anything that is not a chunk makes none.
    pub fn push(&mut self, chunk: &Value) -> Vec<(&'static str, Value)> {
        if self.ended {
            return Vec::new();
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str) {
            self.model = model.to_owned();
        }
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            self.usage = usage_from_openai(usage);
        }
        let Some(choice) = first_choice(chunk) else {
            return Vec::new();
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        let Some(delta) = choice.get("delta") else {
            return Vec::new();
        };
        let mut events = Vec::new();
        for (key, kind) in [("content", PartKind::Text), ("refusal", PartKind::Refusal)] {
            // Empty text (OpenAI's first chunk has `content: ""`) announces nothing: a
            // tool-call answer must not grow an empty message item.
            if let Some(text) = delta
                .get(key)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                events.extend(self.part_delta(kind, text));
            }
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                events.extend(self.tool_call_delta(call, position));
            }
        }
        events
    }

    /// After `[DONE]`: each item's `.done` events in output order, then `response.completed`
    /// (or `response.incomplete` when the answer was cut short) with the whole Response.
    pub fn finish(&mut self) -> Vec<(&'static str, Value)> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        let mut events = Vec::new();
        if self.items.is_empty() {
            events.extend(self.part_delta(PartKind::Text, ""));
        }
        let ending = Ending::from_finish_reason(self.finish_reason.as_deref());
        let status = ending.item_status();
        for index in 0..self.items.len() {
            events.extend(self.item_done(index, status));
        }
        let mut response = self.snapshot(status, self.output(status));
        ending.apply(&mut response);
        set(&mut response, "usage", self.usage.clone());
        let name = match ending {
            Ending::Completed => "response.completed",
            Ending::Incomplete(_) => "response.incomplete",
        };
        events.push(self.event(name, json!({"response": response})));
        events
    }

    /// The stream broke: an `error` event with `code` and `message`, then `response.failed`
    /// with the output so far (marked incomplete).
    pub fn error(&mut self, code: &str, message: &str) -> Vec<(&'static str, Value)> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        let error = self.event(
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
        let mut response = self.snapshot("failed", self.output("incomplete"));
        set(
            &mut response,
            "error",
            json!({"code": code, "message": message}),
        );
        set(&mut response, "usage", self.usage.clone());
        let failed = self.event("response.failed", json!({"response": response}));
        vec![error, failed]
    }

    /// One event: its name and data, with `type` and the next `sequence_number` added.
    fn event(&mut self, name: &'static str, data: Value) -> (&'static str, Value) {
        let mut object = Map::new();
        object.insert("type".into(), json!(name));
        object.insert("sequence_number".into(), json!(self.sequence));
        if let Value::Object(fields) = data {
            object.extend(fields);
        }
        self.sequence = self.sequence.saturating_add(1);
        (name, Value::Object(object))
    }

    /// The Response so far, with `status` and `output`.
    fn snapshot(&self, status: &str, output: Vec<Value>) -> Value {
        let mut response = self.base.clone();
        set(&mut response, "model", json!(self.model));
        set(&mut response, "status", json!(status));
        set(&mut response, "output", Value::Array(output));
        response
    }

    /// Every item so far, with `status`.
    fn output(&self, status: &str) -> Vec<Value> {
        self.items
            .iter()
            .map(|item| item.to_value(&self.ids, status))
            .collect()
    }

    /// Text (or refusal text) for the message: announces the item and the part on first
    /// sight, then the delta (none for empty text, which `finish` uses to make an empty
    /// message for an answer with no output).
    fn part_delta(&mut self, kind: PartKind, text: &str) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        let output_index = match self.message {
            Some(index) => index,
            None => {
                let item = OutputItem::Message { parts: Vec::new() };
                events.push(self.item_added(item));
                let index = self.items.len().saturating_sub(1);
                self.message = Some(index);
                index
            }
        };
        let Some(OutputItem::Message { parts }) = self.items.get_mut(output_index) else {
            return events;
        };
        let content_index = match parts.iter().position(|part| part.kind == kind) {
            Some(position) => position,
            None => {
                parts.push(Part {
                    kind,
                    text: String::new(),
                });
                let position = parts.len().saturating_sub(1);
                let part = Part {
                    kind,
                    text: String::new(),
                }
                .to_value();
                events.push(self.event(
                    "response.content_part.added",
                    json!({
                        "item_id": self.ids.message,
                        "output_index": output_index,
                        "content_index": position,
                        "part": part,
                    }),
                ));
                position
            }
        };
        if text.is_empty() {
            return events;
        }
        if let Some(OutputItem::Message { parts }) = self.items.get_mut(output_index)
            && let Some(part) = parts.get_mut(content_index)
        {
            part.text.push_str(text);
        }
        let data = match kind {
            PartKind::Text => json!({
                "item_id": self.ids.message,
                "output_index": output_index,
                "content_index": content_index,
                "delta": text,
                "logprobs": [],
            }),
            PartKind::Refusal => json!({
                "item_id": self.ids.message,
                "output_index": output_index,
                "content_index": content_index,
                "delta": text,
            }),
        };
        let name = match kind {
            PartKind::Text => "response.output_text.delta",
            PartKind::Refusal => "response.refusal.delta",
        };
        events.push(self.event(name, data));
        events
    }

    /// One tool-call delta: announces the function-call item on first sight of its index,
    /// then the arguments delta (none for empty arguments).
    fn tool_call_delta(&mut self, call: &Value, position: usize) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        let chat_index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| u64::try_from(position).unwrap_or(u64::MAX));
        let function = call.get("function");
        let name = function
            .and_then(|function| function.get("name"))
            .and_then(Value::as_str);
        let arguments = function
            .and_then(|function| function.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let known = self
            .tool_calls
            .iter()
            .find(|(index, _)| *index == chat_index)
            .map(|(_, item)| *item);
        let output_index = match known {
            Some(item) => item,
            None => {
                let call_id = call.get("id").and_then(Value::as_str).map_or_else(
                    || self.ids.fallback_call_id(self.tool_calls.len()),
                    str::to_owned,
                );
                let item = OutputItem::FunctionCall {
                    call_id,
                    name: name.unwrap_or_default().to_owned(),
                    arguments: String::new(),
                };
                events.push(self.item_added(item));
                let index = self.items.len().saturating_sub(1);
                self.tool_calls.push((chat_index, index));
                index
            }
        };
        let Some(OutputItem::FunctionCall {
            name: known_name,
            arguments: known_arguments,
            call_id,
        }) = self.items.get_mut(output_index)
        else {
            return events;
        };
        // A name arriving after the first delta fills an empty one; a repeated name is
        // not appended (some upstreams resend it on every delta).
        if let Some(name) = name.filter(|_| known_name.is_empty()) {
            name.clone_into(known_name);
        }
        if arguments.is_empty() {
            return events;
        }
        known_arguments.push_str(arguments);
        let item_id = ItemIds::function_call(call_id);
        events.push(self.event(
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": output_index, "delta": arguments}),
        ));
        events
    }

    /// Appends an item and announces it with `response.output_item.added`.
    fn item_added(&mut self, item: OutputItem) -> (&'static str, Value) {
        let announced = item.announced(&self.ids);
        let output_index = self.items.len();
        self.items.push(item);
        self.event(
            "response.output_item.added",
            json!({"output_index": output_index, "item": announced}),
        )
    }

    /// The `.done` events closing item `index`, with the item's final `status`.
    fn item_done(&mut self, index: usize, status: &str) -> Vec<(&'static str, Value)> {
        let Some(item) = self.items.get(index).cloned() else {
            return Vec::new();
        };
        let item_id = item.id(&self.ids);
        let mut events = Vec::new();
        match &item {
            OutputItem::Message { parts } => {
                for (content_index, part) in parts.iter().enumerate() {
                    events.push(self.part_done(&item_id, index, content_index, part));
                    events.push(self.event(
                        "response.content_part.done",
                        json!({
                            "item_id": item_id,
                            "output_index": index,
                            "content_index": content_index,
                            "part": part.to_value(),
                        }),
                    ));
                }
            }
            OutputItem::FunctionCall {
                name, arguments, ..
            } => events.push(self.event(
                "response.function_call_arguments.done",
                json!({
                    "item_id": item_id,
                    "output_index": index,
                    "name": name,
                    "arguments": arguments,
                }),
            )),
        }
        events.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item.to_value(&self.ids, status)}),
        ));
        events
    }

    /// `response.output_text.done` or `response.refusal.done` for one content part.
    fn part_done(
        &mut self,
        item_id: &str,
        output_index: usize,
        content_index: usize,
        part: &Part,
    ) -> (&'static str, Value) {
        match part.kind {
            PartKind::Text => self.event(
                "response.output_text.done",
                json!({
                    "item_id": item_id,
                    "output_index": output_index,
                    "content_index": content_index,
                    "text": part.text,
                    "logprobs": [],
                }),
            ),
            PartKind::Refusal => self.event(
                "response.refusal.done",
                json!({
                    "item_id": item_id,
                    "output_index": output_index,
                    "content_index": content_index,
                    "refusal": part.text,
                }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A golden file, parsed.
    fn golden(text: &str) -> Value {
        serde_json::from_str(text).expect("golden files are JSON")
    }

    /// Checks a request golden: `request` translates to exactly `openai`.
    fn check_request(text: &str) {
        let case = golden(text);
        assert_eq!(request_to_openai(&case["request"]).unwrap(), case["openai"]);
    }

    /// Checks a response golden: `openai` (answering `request`) becomes exactly `response`.
    fn check_response(text: &str) {
        let case = golden(text);
        let response = response_from_openai(&case["openai"], &case["request"]);
        assert_eq!(response, case["response"]);
    }

    /// Runs a whole stream: `start`, one `push` per chunk, then `finish`.
    fn run_stream(request: &Value, id: &str, created_at: u64, chunks: &[Value]) -> Vec<Value> {
        let mut stream = StreamFromOpenAi::new(request, id, created_at);
        let mut events = stream.start();
        for chunk in chunks {
            events.extend(stream.push(chunk));
        }
        events.extend(stream.finish());
        events
            .into_iter()
            .map(|(event, data)| json!({"event": event, "data": data}))
            .collect()
    }

    /// Checks a stream golden: `chunks` make exactly `events`, chunk by chunk.
    fn check_stream(text: &str) {
        let case = golden(text);
        let chunks = case["chunks"].as_array().unwrap();
        let id = case["id"].as_str().unwrap();
        let created_at = case["created_at"].as_u64().unwrap();
        let events = run_stream(&case["request"], id, created_at, chunks);
        assert_eq!(Value::Array(events), case["events"]);
    }

    /// The request of a simple text conversation.
    fn hello() -> Value {
        json!({"model": "gpt-4.1", "input": "Hi"})
    }

    /// `hello()` with `key` set to `value`.
    fn hello_with(key: &str, value: Value) -> Value {
        let mut request = hello();
        set(&mut request, key, value);
        request
    }

    /// The error translating `request`.
    fn refusal(request: &Value) -> Untranslatable {
        request_to_openai(request).unwrap_err()
    }

    // --- goldens ---

    #[test]
    fn a_plain_string_input_becomes_one_user_message() {
        check_request(include_str!("golden/responses/request_plain_string.json"));
    }

    #[test]
    fn a_multi_turn_input_keeps_its_roles_after_the_instructions() {
        check_request(include_str!("golden/responses/request_multi_turn.json"));
    }

    #[test]
    fn function_calls_and_outputs_become_tool_calls_and_tool_messages() {
        check_request(include_str!("golden/responses/request_function_tools.json"));
    }

    #[test]
    fn an_input_image_with_a_data_url_becomes_an_image_url_part() {
        check_request(include_str!("golden/responses/request_input_image.json"));
    }

    #[test]
    fn a_json_schema_text_format_becomes_a_json_schema_response_format() {
        check_request(include_str!("golden/responses/request_json_schema.json"));
    }

    #[test]
    fn a_text_answer_becomes_a_completed_response_echoing_the_request() {
        check_response(include_str!("golden/responses/response_text.json"));
    }

    #[test]
    fn a_tool_call_answer_becomes_function_call_items() {
        check_response(include_str!("golden/responses/response_tool_calls.json"));
    }

    #[test]
    fn cached_tokens_are_reported_and_a_length_stop_is_incomplete() {
        check_response(include_str!("golden/responses/response_cached_usage.json"));
    }

    #[test]
    fn a_text_stream_becomes_the_exact_text_events() {
        check_stream(include_str!("golden/responses/stream_text.json"));
    }

    #[test]
    fn a_tool_call_stream_becomes_the_exact_function_call_events() {
        check_stream(include_str!("golden/responses/stream_tool_calls.json"));
    }

    #[test]
    fn store_backed_and_unsupported_features_are_refused_naming_the_field() {
        let cases = golden(include_str!("golden/responses/refusals.json"));
        for case in cases.as_array().unwrap() {
            let error = refusal(&case["request"]);
            assert_eq!(json!(error.param), case["param"], "{case}");
            assert_eq!(json!(error.message), case["message"], "{case}");
        }
    }

    // --- request behaviour ---

    #[test]
    fn store_false_and_null_optional_fields_are_accepted() {
        let request = json!({
            "model": "gpt-4.1", "input": "Hi", "store": false, "background": false,
            "previous_response_id": null, "include": null, "reasoning": {"effort": null, "summary": null},
            "temperature": null, "metadata": {"a": "b"}, "prompt_cache_key": "k",
            "stream_options": {"include_obfuscation": false}, "service_tier": "auto",
        });
        assert_eq!(
            request_to_openai(&request).unwrap(),
            json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}]})
        );
    }

    #[test]
    fn the_store_refusal_tells_the_client_to_send_the_whole_conversation() {
        let error = refusal(&hello_with("store", json!(true)));
        assert_eq!(error.param, "store");
        assert!(
            error
                .message
                .contains("send the whole conversation in `input`")
        );
    }

    #[test]
    fn a_function_call_after_an_assistant_message_joins_that_message() {
        let request = hello_with(
            "input",
            json!([
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Let me check."},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
            ]),
        );
        let messages = &request_to_openai(&request).unwrap()["messages"];
        assert_eq!(messages.as_array().unwrap().len(), 2);
        assert_eq!(messages[1]["content"], json!("Let me check."));
        assert_eq!(messages[1]["tool_calls"][0]["id"], json!("c1"));
    }

    #[test]
    fn a_function_call_after_a_tool_output_starts_a_new_assistant_message() {
        let call =
            json!({"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"});
        let output = json!({"type": "function_call_output", "call_id": "c1", "output": "ok"});
        let request = hello_with("input", json!([call, output, call]));
        let messages = &request_to_openai(&request).unwrap()["messages"];
        let roles: Vec<_> = messages
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].clone())
            .collect();
        assert_eq!(
            roles,
            vec![json!("assistant"), json!("tool"), json!("assistant")]
        );
    }

    #[test]
    fn json_object_mode_becomes_a_json_object_response_format() {
        let request = hello_with("text", json!({"format": {"type": "json_object"}}));
        let chat = request_to_openai(&request).unwrap();
        assert_eq!(chat["response_format"], json!({"type": "json_object"}));
    }

    #[test]
    fn plain_text_format_adds_no_response_format() {
        let request = hello_with("text", json!({"format": {"type": "text"}}));
        assert!(
            request_to_openai(&request)
                .unwrap()
                .get("response_format")
                .is_none()
        );
    }

    #[test]
    fn user_becomes_chat_user_and_a_conflicting_safety_identifier_is_refused() {
        let chat = request_to_openai(&hello_with("user", json!("u1"))).unwrap();
        assert_eq!(chat["user"], json!("u1"));
        let mut both = hello_with("user", json!("u1"));
        set(&mut both, "safety_identifier", json!("u2"));
        assert_eq!(refusal(&both).param, "safety_identifier");
    }

    #[test]
    fn tool_choice_modes_pass_through_and_other_choices_are_refused() {
        for mode in ["auto", "none", "required"] {
            let chat = request_to_openai(&hello_with("tool_choice", json!(mode))).unwrap();
            assert_eq!(chat["tool_choice"], json!(mode));
        }
        let hosted = hello_with("tool_choice", json!({"type": "web_search_preview"}));
        assert_eq!(refusal(&hosted).param, "tool_choice");
    }

    #[test]
    fn an_image_file_id_is_refused_naming_its_path() {
        let request = hello_with(
            "input",
            json!([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]),
        );
        assert_eq!(refusal(&request).param, "input[0].content[0].file_id");
    }

    #[test]
    fn reasoning_items_and_item_references_are_refused() {
        let reasoning = hello_with("input", json!([{"type": "reasoning", "summary": []}]));
        assert_eq!(refusal(&reasoning).param, "input[0].type");
        let reference = hello_with("input", json!([{"type": "item_reference", "id": "msg_1"}]));
        assert_eq!(refusal(&reference).param, "input[0]");
    }

    #[test]
    fn wrong_typed_scalars_are_refused_naming_the_field() {
        for (key, value) in [
            ("temperature", json!("hot")),
            ("max_output_tokens", json!(-1)),
            ("stream", json!("yes")),
            ("instructions", json!(3)),
            ("metadata", json!("tags")),
        ] {
            assert_eq!(refusal(&hello_with(key, value)).param, key);
        }
    }

    // --- response behaviour ---

    #[test]
    fn a_content_filter_stop_is_incomplete_with_that_reason() {
        let chat = json!({"id": "chatcmpl-1", "choices": [{"message": {"content": "x"}, "finish_reason": "content_filter"}]});
        let response = response_from_openai(&chat, &hello());
        assert_eq!(response["status"], json!("incomplete"));
        assert_eq!(
            response["incomplete_details"],
            json!({"reason": "content_filter"})
        );
    }

    #[test]
    fn a_response_id_that_already_has_the_prefix_is_kept() {
        let chat = json!({"id": "resp_abc", "choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]});
        let response = response_from_openai(&chat, &hello());
        assert_eq!(response["id"], json!("resp_abc"));
        assert_eq!(response["output"][0]["id"], json!("msg_abc"));
    }

    #[test]
    fn a_refusal_becomes_a_refusal_content_part() {
        let chat = json!({"id": "chatcmpl-1", "choices": [{"message": {"content": null, "refusal": "No."}, "finish_reason": "stop"}]});
        let response = response_from_openai(&chat, &hello());
        assert_eq!(
            response["output"][0]["content"],
            json!([{"type": "refusal", "refusal": "No."}])
        );
    }

    #[test]
    fn the_response_has_every_field_the_sdk_requires() {
        let response = response_from_openai(&json!({}), &hello());
        for key in [
            "id",
            "created_at",
            "model",
            "object",
            "output",
            "parallel_tool_calls",
            "tool_choice",
            "tools",
            "error",
            "incomplete_details",
            "instructions",
            "metadata",
            "temperature",
            "top_p",
        ] {
            assert!(response.get(key).is_some(), "{key}");
        }
        assert!(response.get("output_text").is_none());
        assert_eq!(response["store"], json!(false));
    }

    // --- stream behaviour ---

    #[test]
    fn a_stream_cut_by_length_ends_with_response_incomplete() {
        let chunk = json!({"choices": [{"delta": {"content": "abc"}, "finish_reason": "length"}]});
        let events = run_stream(&hello(), "chatcmpl-x", 1, &[chunk]);
        let last = events.last().unwrap();
        assert_eq!(last["event"], json!("response.incomplete"));
        assert_eq!(
            last["data"]["response"]["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
    }

    #[test]
    fn an_error_emits_error_then_response_failed_and_ends_the_stream() {
        let mut stream = StreamFromOpenAi::new(&hello(), "chatcmpl-x", 1);
        let started = stream.start();
        assert_eq!(started.len(), 2);
        let events = stream.error("upstream_error", "the upstream closed the connection");
        let names: Vec<_> = events.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, vec!["error", "response.failed"]);
        assert_eq!(
            events[0].1,
            json!({"type": "error", "sequence_number": 2, "code": "upstream_error",
                   "message": "the upstream closed the connection", "param": null})
        );
        let failed = &events[1].1["response"];
        assert_eq!(failed["status"], json!("failed"));
        assert_eq!(
            failed["error"],
            json!({"code": "upstream_error", "message": "the upstream closed the connection"})
        );
        assert!(
            stream
                .push(&json!({"choices": [{"delta": {"content": "late"}}]}))
                .is_empty()
        );
        assert!(stream.finish().is_empty());
    }

    #[test]
    fn an_empty_stream_still_completes_with_an_empty_message() {
        let events = run_stream(&hello(), "chatcmpl-x", 1, &[]);
        let last = events.last().unwrap();
        assert_eq!(last["event"], json!("response.completed"));
        assert_eq!(
            last["data"]["response"]["output"][0]["content"][0]["text"],
            json!("")
        );
    }

    #[test]
    fn text_then_a_tool_call_get_output_indexes_in_order_of_appearance() {
        let chunks = [
            json!({"choices": [{"delta": {"content": "Checking."}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "w", "arguments": "{}"}}]}}]}),
        ];
        let events = run_stream(&hello(), "chatcmpl-x", 1, &chunks);
        let output = &events.last().unwrap()["data"]["response"]["output"];
        assert_eq!(output[0]["type"], json!("message"));
        assert_eq!(output[1]["type"], json!("function_call"));
        let sequence: Vec<_> = events
            .iter()
            .map(|e| e["data"]["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(sequence, (0..sequence.len() as u64).collect::<Vec<_>>());
    }

    // --- fuzz ---

    /// Keys the translation looks for, so generated objects hit real code paths with wrong types.
    const KEYS: &[&str] = &[
        "model",
        "input",
        "instructions",
        "role",
        "content",
        "type",
        "text",
        "image_url",
        "detail",
        "call_id",
        "name",
        "arguments",
        "output",
        "tools",
        "tool_choice",
        "format",
        "schema",
        "strict",
        "parameters",
        "description",
        "user",
        "safety_identifier",
        "temperature",
        "top_p",
        "max_output_tokens",
        "stream",
        "store",
        "reasoning",
        "truncation",
        "include",
        "metadata",
        "id",
        "choices",
        "delta",
        "message",
        "tool_calls",
        "function",
        "index",
        "finish_reason",
        "usage",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "cached_tokens",
        "refusal",
        "created",
        "file_id",
    ];

    /// Strings that are also meaningful values (`type`s, roles, finish reasons).
    const WORDS: &[&str] = &[
        "message",
        "function_call",
        "function_call_output",
        "input_text",
        "output_text",
        "input_image",
        "input_file",
        "function",
        "json_schema",
        "json_object",
        "text",
        "user",
        "assistant",
        "system",
        "developer",
        "auto",
        "none",
        "required",
        "length",
        "stop",
        "content_filter",
        "disabled",
        "resp_",
        "chatcmpl-",
        "",
    ];

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            prop::sample::select(WORDS).prop_map(|w| json!(w)),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![prop::sample::select(KEYS).prop_map(str::to_owned), ".{0,6}"];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key, inner), 0..8)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// A value that is usually a short string (a plausible field) and sometimes anything.
    fn stringish() -> impl Strategy<Value = Value> {
        prop_oneof![
            3 => prop::sample::select(WORDS).prop_map(|w| json!(w)),
            2 => ".{0,6}".prop_map(Value::String),
            1 => arbitrary_json(),
        ]
    }

    /// An object with `fields`, each present or not, with plausible or arbitrary values.
    fn shaped<const N: usize>(
        fields: [(&'static str, BoxedStrategy<Value>); N],
    ) -> impl Strategy<Value = Value> {
        let fields: Vec<_> = fields
            .into_iter()
            .map(|(key, value)| prop::option::of(value).prop_map(move |value| (key, value)))
            .collect();
        fields.prop_map(|fields| {
            Value::Object(
                fields
                    .into_iter()
                    .filter_map(|(key, value)| Some((key.to_owned(), value?)))
                    .collect(),
            )
        })
    }

    /// A Responses request with the real structure and plausible-or-wrong values.
    fn shaped_request() -> impl Strategy<Value = Value> {
        let part = shaped([
            ("type", stringish().boxed()),
            ("text", stringish().boxed()),
            ("image_url", stringish().boxed()),
            ("detail", stringish().boxed()),
        ]);
        let item = shaped([
            ("type", stringish().boxed()),
            ("role", stringish().boxed()),
            (
                "content",
                prop_oneof![
                    stringish(),
                    prop::collection::vec(part, 0..3).prop_map(Value::Array)
                ]
                .boxed(),
            ),
            ("call_id", stringish().boxed()),
            ("name", stringish().boxed()),
            ("arguments", stringish().boxed()),
            ("output", stringish().boxed()),
        ]);
        let tool = shaped([
            ("type", stringish().boxed()),
            ("name", stringish().boxed()),
            ("parameters", arbitrary_json().boxed()),
            ("strict", arbitrary_json().boxed()),
        ]);
        let format = shaped([
            ("type", stringish().boxed()),
            ("name", stringish().boxed()),
            ("schema", arbitrary_json().boxed()),
        ]);
        shaped([
            ("model", stringish().boxed()),
            (
                "input",
                prop_oneof![
                    stringish(),
                    prop::collection::vec(item, 0..5).prop_map(Value::Array)
                ]
                .boxed(),
            ),
            ("instructions", stringish().boxed()),
            (
                "tools",
                prop::collection::vec(tool, 0..3)
                    .prop_map(Value::Array)
                    .boxed(),
            ),
            ("tool_choice", stringish().boxed()),
            (
                "text",
                format.prop_map(|format| json!({"format": format})).boxed(),
            ),
            ("temperature", arbitrary_json().boxed()),
            ("store", arbitrary_json().boxed()),
        ])
    }

    /// A chat chunk with the real structure and plausible-or-wrong values.
    fn shaped_chunk() -> impl Strategy<Value = Value> {
        let index = prop_oneof![3 => (0u64..3).prop_map(|n| json!(n)), 1 => arbitrary_json()];
        let function = shaped([
            ("name", stringish().boxed()),
            ("arguments", stringish().boxed()),
        ]);
        let call = shaped([
            ("index", index.boxed()),
            ("id", stringish().boxed()),
            ("function", function.boxed()),
        ]);
        let delta = shaped([
            ("content", stringish().boxed()),
            ("refusal", stringish().boxed()),
            (
                "tool_calls",
                prop::collection::vec(call, 0..3)
                    .prop_map(Value::Array)
                    .boxed(),
            ),
        ]);
        let choice = shaped([
            ("delta", delta.boxed()),
            ("finish_reason", stringish().boxed()),
        ]);
        shaped([
            ("model", stringish().boxed()),
            ("usage", arbitrary_json().boxed()),
            (
                "choices",
                prop::collection::vec(choice, 0..2)
                    .prop_map(Value::Array)
                    .boxed(),
            ),
        ])
    }

    proptest! {
        #[test]
        fn request_to_openai_never_panics(value in arbitrary_json()) {
            let _ = request_to_openai(&value);
        }

        #[test]
        fn a_shaped_request_never_panics(value in shaped_request()) {
            let _ = request_to_openai(&value);
        }

        #[test]
        fn a_shaped_stream_never_panics(
            request in shaped_request(),
            chunks in prop::collection::vec(shaped_chunk(), 0..8),
        ) {
            let mut stream = StreamFromOpenAi::new(&request, "chatcmpl-f", 0);
            let mut events = stream.start();
            for chunk in &chunks {
                events.extend(stream.push(chunk));
            }
            events.extend(stream.finish());
            let last = events.last().map(|(name, _)| *name);
            prop_assert!(matches!(last, Some("response.completed" | "response.incomplete")));
        }

        #[test]
        fn response_from_openai_never_panics(openai in arbitrary_json(), request in arbitrary_json()) {
            let response = response_from_openai(&openai, &request);
            prop_assert!(response.is_object());
        }

        #[test]
        fn the_stream_never_panics(
            request in arbitrary_json(),
            id in ".{0,12}",
            created_at in any::<u64>(),
            chunks in prop::collection::vec(arbitrary_json(), 0..6),
            raw in prop::collection::vec(".{0,24}", 0..4),
            fail in any::<bool>(),
        ) {
            let mut stream = StreamFromOpenAi::new(&request, &id, created_at);
            let mut events = stream.start();
            for chunk in &chunks {
                events.extend(stream.push(chunk));
            }
            for text in &raw {
                let chunk = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()));
                events.extend(stream.push(&chunk));
            }
            events.extend(if fail { stream.error("code", "message") } else { stream.finish() });
            for (position, (name, data)) in events.iter().enumerate() {
                prop_assert_eq!(&data["type"], &json!(name));
                prop_assert_eq!(&data["sequence_number"], &json!(position));
            }
        }
    }
}
