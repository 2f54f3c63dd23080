//! Behind: an OpenAI chat request → a Gemini `generateContent` request
//! ([`request_from_openai`]): the top level, the fields refused or ignored, and the turns.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::providers::translate::Untranslatable;

use super::request_config::{function_declarations, generation_config, tool_config};
use super::request_parts::{
    check_message_fields, content_parts, content_text, function_call_part, response_object,
};
use super::{Object, expect_array, expect_object, present, required_str};

/// Top-level OpenAI request fields this module translates.
const TRANSLATED_OPENAI_FIELDS: [&str; 15] = [
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
];

/// Top-level OpenAI request fields left out on purpose (reasons in the module doc).
const IGNORED_OPENAI_FIELDS: [&str; 6] = [
    "model",
    "user",
    "stream",
    "stream_options",
    "metadata",
    "parallel_tool_calls",
];

/// OpenAI chat-completions request → Gemini `GenerateContentRequest`. The model is not in the
/// body: it goes in the URL (`/v1beta/models/{model}:generateContent`).
pub fn request_from_openai(openai: &Value) -> Result<Value, Untranslatable> {
    let request = expect_object(openai, "body")?;
    reject_unknown_openai_fields(request)?;
    let messages = present(request, "messages")
        .ok_or_else(|| Untranslatable::new("messages", "is required"))?;
    let turns = Turns::from_messages(messages)?;
    if turns.contents.is_empty() {
        return Err(Untranslatable::new(
            "messages",
            "Gemini needs at least one user, assistant or tool message",
        ));
    }
    let mut out = Object::new();
    out.insert("contents".into(), Value::Array(turns.contents));
    if !turns.system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": turns.system }));
    }
    if let Some(tools) = present(request, "tools") {
        let declarations = function_declarations(tools)?;
        if !declarations.is_empty() {
            out.insert(
                "tools".into(),
                json!([{ "functionDeclarations": declarations }]),
            );
        }
    }
    if let Some(choice) = present(request, "tool_choice") {
        out.insert("toolConfig".into(), tool_config(choice)?);
    }
    let config = generation_config(request)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(out))
}

/// Any top-level field that is neither translated nor knowingly ignored is untranslatable.
fn reject_unknown_openai_fields(request: &Object) -> Result<(), Untranslatable> {
    let known =
        |key: &str| TRANSLATED_OPENAI_FIELDS.contains(&key) || IGNORED_OPENAI_FIELDS.contains(&key);
    match request
        .iter()
        .find(|(key, value)| !value.is_null() && !known(key))
    {
        Some((key, _)) => Err(Untranslatable::new(key.as_str(), unknown_field_reason(key))),
        None => Ok(()),
    }
}

/// Why a top-level OpenAI field cannot go to Gemini.
fn unknown_field_reason(key: &str) -> String {
    match key {
        "logit_bias" => "Gemini cannot bias token logits".into(),
        "audio" | "modalities" => {
            "Gemini's generateContent translation here produces text only".into()
        }
        "prediction" => "Gemini has no predicted outputs".into(),
        _ => format!("Gemini has no equivalent of `{key}`"),
    }
}

/// Gemini `contents` and `systemInstruction` parts being built from OpenAI messages.
#[derive(Default)]
struct Turns {
    /// `systemInstruction.parts`, from every system and developer message in order.
    system: Vec<Value>,
    /// Alternating `{role, parts}` turns.
    contents: Vec<Value>,
    /// Function name of every assistant tool call so far, by call id.
    call_names: HashMap<String, String>,
}

impl Turns {
    /// Walks the OpenAI `messages`.
    fn from_messages(messages: &Value) -> Result<Turns, Untranslatable> {
        let messages = expect_array(messages, "messages")?;
        let mut turns = Turns::default();
        for (i, message) in messages.iter().enumerate() {
            turns.add_message(message, &format!("messages[{i}]"))?;
        }
        Ok(turns)
    }

    /// Adds one OpenAI message.
    fn add_message(&mut self, message: &Value, path: &str) -> Result<(), Untranslatable> {
        let message = expect_object(message, path)?;
        let role = required_str(message, "role", path)?;
        check_message_fields(message, role, path)?;
        let content = present(message, "content");
        let content_path = format!("{path}.content");
        match role {
            "system" | "developer" => {
                let parts = content_parts(content, &content_path, false)?;
                self.system.extend(parts);
            }
            "user" => self.push("user", content_parts(content, &content_path, true)?),
            "assistant" => {
                let mut parts = content_parts(content, &content_path, false)?;
                parts.extend(self.function_calls(message, path)?);
                self.push("model", parts);
            }
            "tool" => {
                let part = self.function_response(message, path)?;
                self.push("user", vec![part]);
            }
            _ => {
                return Err(Untranslatable::new(
                    format!("{path}.role"),
                    "must be system, developer, user, assistant or tool",
                ));
            }
        }
        Ok(())
    }

    /// Appends parts as a turn of `role`, merged into the last turn when it has the same role.
    fn push(&mut self, role: &str, parts: Vec<Value>) {
        if parts.is_empty() {
            return;
        }
        if let Some(last) = self.contents.last_mut()
            && last.get("role").and_then(Value::as_str) == Some(role)
            && let Some(Value::Array(existing)) = last.get_mut("parts")
        {
            existing.extend(parts);
            return;
        }
        self.contents.push(json!({ "role": role, "parts": parts }));
    }

    /// An assistant message's `tool_calls` → `functionCall` parts, remembering their names.
    fn function_calls(
        &mut self,
        message: &Object,
        path: &str,
    ) -> Result<Vec<Value>, Untranslatable> {
        let Some(calls) = present(message, "tool_calls") else {
            return Ok(Vec::new());
        };
        let path = format!("{path}.tool_calls");
        let calls = expect_array(calls, &path)?;
        let mut parts = Vec::with_capacity(calls.len());
        for (k, call) in calls.iter().enumerate() {
            let (id, name, part) = function_call_part(call, &format!("{path}[{k}]"))?;
            self.call_names.insert(id, name);
            parts.push(part);
        }
        Ok(parts)
    }

    /// A tool message → a `functionResponse` part named after the call it answers.
    fn function_response(&self, message: &Object, path: &str) -> Result<Value, Untranslatable> {
        let id = required_str(message, "tool_call_id", path)?;
        let name = self.call_names.get(id).ok_or_else(|| {
            Untranslatable::new(
                format!("{path}.tool_call_id"),
                "no earlier assistant message has a tool call with this id, and Gemini needs \
                 the function's name",
            )
        })?;
        let text = content_text(present(message, "content"), &format!("{path}.content"))?;
        Ok(json!({
            "functionResponse": { "id": id, "name": name, "response": response_object(&text) }
        }))
    }
}
