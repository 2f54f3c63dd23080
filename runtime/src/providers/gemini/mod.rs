//! Translation between OpenAI chat-completions JSON and Google's Gemini API
//! (`POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`).
//!
//! Owns both directions: weir in front of a Gemini upstream ("behind": [`request_from_openai`],
//! [`response_to_openai`], [`StreamToOpenAi`]) and weir's simulator serving a Gemini-shaped
//! endpoint from OpenAI-shaped logic ([`request_to_openai`], [`response_from_openai`],
//! [`chunk_from_openai`], [`error_body`]). Must not do I/O, pick URLs or decide about retries.
//!
//! # Requests (OpenAI → Gemini)
//! - `system`/`developer` messages become `systemInstruction.parts`, all of them, in order
//!   (Gemini has one instruction, not instruction turns). `user` → role `user`, `assistant` →
//!   role `model`, `tool` → a `user` turn with a `functionResponse` part; consecutive turns of
//!   one role are merged, because Gemini wants user and model to alternate.
//! - A `functionResponse` needs the function's name, which OpenAI's tool message does not
//!   carry: it is looked up from the earlier assistant tool call with that `tool_call_id`. The
//!   call id itself travels in `functionCall.id` / `functionResponse.id` (Gemini 2.5+).
//!   Gemini wants the response as an object: a tool result that is a JSON object goes as is,
//!   anything else as `{"content": <text>}`.
//! - Tool parameters go in `parametersJsonSchema`, not `parameters`: OpenAI sends JSON Schema
//!   (`additionalProperties`, `$ref`, …), which Gemini's OpenAPI-subset `parameters` rejects.
//!   Likewise `json_schema` response formats go in `responseJsonSchema`.
//! - Ignored, with the reason: `model` (it goes in the URL), `user` (a tag for abuse tracking,
//!   no effect on the answer), `stream` and `stream_options` (streaming is chosen by the URL,
//!   and Gemini streams always carry usage), `metadata` (weir's tags), `parallel_tool_calls`
//!   (Gemini has no switch for it), a tool's `function.strict` and a `json_schema`'s `name` and
//!   `strict` (Gemini has no per-schema switch; it follows the schema it is given), an image's
//!   `detail` (a resolution hint), a tool message's `name` (the call's name is taken from the
//!   call). Fields that are `null` count as absent.
//! - Everything else without a Gemini equivalent (`logit_bias`, `audio`, `modalities`,
//!   `prediction`, a message `name`, any unknown field, part type or URL scheme) is
//!   [`Untranslatable`], naming the field.
//!
//! # Responses (Gemini → OpenAI)
//! Candidates become choices; text parts are joined (parts with `thought: true` are Gemini's
//! reasoning summaries, not the answer, and are skipped); `functionCall` parts become tool
//! calls, with Gemini's id or a generated `call_<n>` (n counts calls in the response or stream
//! from 0). Usage: `prompt_tokens` = `promptTokenCount` (which, like OpenAI's, includes cached
//! tokens) + `toolUsePromptTokenCount`; `completion_tokens` = `candidatesTokenCount` +
//! `thoughtsTokenCount` (thinking is billed as output), the latter also reported as
//! `completion_tokens_details.reasoning_tokens`.
//!
//! # Simulator direction (Gemini → OpenAI requests, OpenAI → Gemini answers)
//! Field names are read in lowerCamelCase or snake_case, as Gemini's JSON parser accepts both.
//! `functionCall`s without an id get `call_<n>` (n counts calls in the request), and a
//! `functionResponse` without an id answers the earliest unanswered call of that name.
//! Thought parts and `thoughtSignature`s in the history are skipped: they are Gemini's own
//! reasoning replay, which an OpenAI model has no use for. A streamed OpenAI tool call is
//! expected whole in one chunk (as weir's simulator sends it): a continuation fragment without
//! a function name cannot become a Gemini `functionCall` on its own and is left out.

mod request;
mod request_config;
mod request_parts;
mod response;
mod sim_config;
mod sim_contents;
mod sim_request;
mod sim_response;
mod stream;

pub use request::request_from_openai;
pub use response::response_to_openai;
pub use sim_request::request_to_openai;
pub use sim_response::{chunk_from_openai, error_body, response_from_openai};
pub use stream::StreamToOpenAi;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::translate::Untranslatable;

/// A JSON object.
type Object = Map<String, Value>;

/// The MIME type Gemini answers JSON under.
const JSON_MIME: &str = "application/json";

/// A field that is present and not null.
fn present<'a>(object: &'a Object, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|value| !value.is_null())
}

/// A Gemini field by its lowerCamelCase name, or its snake_case spelling; with the key as
/// written, for error paths. Null counts as absent.
fn gemini_field<'a>(object: &'a Object, camel: &str) -> Option<(&'a str, &'a Value)> {
    object
        .get_key_value(camel)
        .or_else(|| object.get_key_value(snake_case(camel).as_str()))
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| (key.as_str(), value))
}

/// A required string Gemini field.
fn gemini_str<'a>(object: &'a Object, camel: &str, path: &str) -> Result<&'a str, Untranslatable> {
    let (key, value) = gemini_field(object, camel)
        .ok_or_else(|| Untranslatable::new(format!("{path}.{camel}"), "is required"))?;
    expect_str(value, &format!("{path}.{key}"))
}

/// `lowerCamelCase` → `snake_case`.
fn snake_case(camel: &str) -> String {
    let mut snake = String::with_capacity(camel.len().saturating_add(4));
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

/// `snake_case` → `lowerCamelCase` (a camelCase key stays as it is).
fn camel_case(key: &str) -> String {
    let mut camel = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            camel.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            camel.push(c);
        }
    }
    camel
}

/// `value` as an object, or untranslatable at `path`.
fn expect_object<'a>(value: &'a Value, path: &str) -> Result<&'a Object, Untranslatable> {
    value
        .as_object()
        .ok_or_else(|| Untranslatable::new(path, "must be a JSON object"))
}

/// `value` as an array, or untranslatable at `path`.
fn expect_array<'a>(value: &'a Value, path: &str) -> Result<&'a Vec<Value>, Untranslatable> {
    value
        .as_array()
        .ok_or_else(|| Untranslatable::new(path, "must be an array"))
}

/// `value` as a string, or untranslatable at `path`.
fn expect_str<'a>(value: &'a Value, path: &str) -> Result<&'a str, Untranslatable> {
    value
        .as_str()
        .ok_or_else(|| Untranslatable::new(path, "must be a string"))
}

/// `value` if it is a number, or untranslatable at `path`.
fn expect_number(value: &Value, path: &str) -> Result<Value, Untranslatable> {
    if value.is_number() {
        Ok(value.clone())
    } else {
        Err(Untranslatable::new(path, "must be a number"))
    }
}

/// `value` as a non-negative integer, or untranslatable at `path`.
fn expect_u64(value: &Value, path: &str) -> Result<u64, Untranslatable> {
    value
        .as_u64()
        .ok_or_else(|| Untranslatable::new(path, "must be a non-negative integer"))
}

/// `object[key]` as a string, or untranslatable at `path.key`.
fn required_str<'a>(object: &'a Object, key: &str, path: &str) -> Result<&'a str, Untranslatable> {
    object
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{path}.{key}"), "must be a string"))
}

/// Unix seconds now (0 if the clock is set before 1970).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// FNV-1a (64 bits): a hash that stays the same across Rust releases, for ids Gemini did not
/// give.
fn fnv1a(text: &str) -> u64 {
    /// FNV-1a's 64-bit offset basis.
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    /// FNV-1a's 64-bit prime.
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests;
