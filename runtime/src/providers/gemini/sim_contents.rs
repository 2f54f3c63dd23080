//! Simulator: Gemini `contents` → OpenAI messages, with the ledger that pairs function calls
//! and responses by id or name.

use serde_json::{Value, json};

use crate::providers::translate::Untranslatable;

use super::sim_request::{GeminiPart, classify_part};
use super::{Object, expect_array, expect_object, expect_str, gemini_field, gemini_str};

/// The function calls of a Gemini conversation, to give responses their call ids.
#[derive(Default)]
pub(super) struct Ledger {
    /// Every call so far: id, name, answered.
    calls: Vec<(String, String, bool)>,
}

impl Ledger {
    /// `contents` → OpenAI messages.
    pub(super) fn messages(
        &mut self,
        contents: &Value,
        key: &str,
    ) -> Result<Vec<Value>, Untranslatable> {
        let contents = expect_array(contents, key)?;
        let mut messages = Vec::new();
        for (i, content) in contents.iter().enumerate() {
            let path = format!("{key}[{i}]");
            let content = expect_object(content, &path)?;
            let role = match gemini_field(content, "role") {
                None => "user",
                Some((role_key, role)) => expect_str(role, &format!("{path}.{role_key}"))?,
            };
            let (parts_key, parts) = gemini_field(content, "parts")
                .ok_or_else(|| Untranslatable::new(format!("{path}.parts"), "is required"))?;
            let parts_path = format!("{path}.{parts_key}");
            let parts = expect_array(parts, &parts_path)?;
            match role {
                "user" | "function" => messages.extend(self.user_messages(parts, &parts_path)?),
                "model" => messages.push(self.assistant_message(parts, &parts_path)?),
                _ => {
                    return Err(Untranslatable::new(
                        format!("{path}.role"),
                        "must be user or model",
                    ));
                }
            }
        }
        Ok(messages)
    }

    /// A user turn → user messages and tool messages, in the order of its parts.
    fn user_messages(&mut self, parts: &[Value], path: &str) -> Result<Vec<Value>, Untranslatable> {
        let mut messages = Vec::new();
        let mut pending = Vec::new();
        for (j, part) in parts.iter().enumerate() {
            let part_path = format!("{path}[{j}]");
            match classify_part(part, &part_path)? {
                GeminiPart::Text(text) => pending.push(json!({ "type": "text", "text": text })),
                GeminiPart::Thought => {}
                GeminiPart::InlineData(path, data) => pending.push(image_from_inline(data, &path)?),
                GeminiPart::FileData(path, data) => pending.push(image_from_file(data, &path)?),
                GeminiPart::FunctionResponse(path, response) => {
                    flush_user_message(&mut pending, &mut messages);
                    messages.push(self.tool_message(response, &path)?);
                }
                GeminiPart::FunctionCall(..) => {
                    return Err(Untranslatable::new(
                        part_path,
                        "a functionCall belongs in a model turn",
                    ));
                }
            }
        }
        flush_user_message(&mut pending, &mut messages);
        Ok(messages)
    }

    /// A model turn → one assistant message.
    fn assistant_message(&mut self, parts: &[Value], path: &str) -> Result<Value, Untranslatable> {
        let mut text: Option<String> = None;
        let mut tool_calls = Vec::new();
        for (j, part) in parts.iter().enumerate() {
            let part_path = format!("{path}[{j}]");
            match classify_part(part, &part_path)? {
                GeminiPart::Text(piece) => text.get_or_insert_with(String::new).push_str(piece),
                GeminiPart::Thought => {}
                GeminiPart::FunctionCall(path, call) => {
                    tool_calls.push(self.tool_call(call, &path)?)
                }
                _ => {
                    return Err(Untranslatable::new(
                        part_path,
                        "an OpenAI assistant message carries text and tool calls only",
                    ));
                }
            }
        }
        let mut message = Object::new();
        message.insert("role".into(), "assistant".into());
        message.insert("content".into(), text.map_or(Value::Null, Value::from));
        if !tool_calls.is_empty() {
            message.insert("tool_calls".into(), tool_calls.into());
        }
        Ok(Value::Object(message))
    }

    /// A `functionCall` → an OpenAI tool call, recorded as awaiting its response.
    fn tool_call(&mut self, call: &Object, path: &str) -> Result<Value, Untranslatable> {
        let name = gemini_str(call, "name", path)?;
        let id = match gemini_field(call, "id") {
            Some((key, id)) => expect_str(id, &format!("{path}.{key}"))?.to_string(),
            None => format!("call_{}", self.calls.len()),
        };
        let args = match gemini_field(call, "args") {
            None => Value::Object(Object::new()),
            Some((key, args)) => {
                Value::Object(expect_object(args, &format!("{path}.{key}"))?.clone())
            }
        };
        self.calls.push((id.clone(), name.to_string(), false));
        Ok(json!({
            "id": id,
            "type": "function",
            "function": { "name": name, "arguments": args.to_string() },
        }))
    }

    /// A `functionResponse` → an OpenAI tool message answering its call.
    fn tool_message(&mut self, response: &Object, path: &str) -> Result<Value, Untranslatable> {
        let name = gemini_str(response, "name", path)?;
        let id = match gemini_field(response, "id") {
            Some((key, id)) => {
                let id = expect_str(id, &format!("{path}.{key}"))?;
                self.answer(|(call_id, _, _)| call_id == id)
                    .ok_or_else(|| {
                        Untranslatable::new(
                            format!("{path}.{key}"),
                            "no earlier functionCall has this id",
                        )
                    })?
            }
            None => self
                .answer(|(_, call_name, answered)| call_name == name && !answered)
                .ok_or_else(|| {
                    Untranslatable::new(
                        path,
                        format!("no earlier functionCall named `{name}` awaits this response"),
                    )
                })?,
        };
        let (key, result) = gemini_field(response, "response")
            .ok_or_else(|| Untranslatable::new(format!("{path}.response"), "is required"))?;
        let result = expect_object(result, &format!("{path}.{key}"))?;
        let content = match result.get("content") {
            Some(Value::String(text)) if result.len() == 1 => text.clone(),
            _ => Value::Object(result.clone()).to_string(),
        };
        Ok(json!({ "role": "tool", "tool_call_id": id, "content": content }))
    }

    /// Marks the first call matching `wanted` as answered and returns its id.
    fn answer(&mut self, wanted: impl Fn(&(String, String, bool)) -> bool) -> Option<String> {
        let call = self.calls.iter_mut().find(|call| wanted(call))?;
        call.2 = true;
        Some(call.0.clone())
    }
}

/// Pending user parts → one user message (a plain string when it is one text).
fn flush_user_message(pending: &mut Vec<Value>, messages: &mut Vec<Value>) {
    if pending.is_empty() {
        return;
    }
    let parts = std::mem::take(pending);
    let content = match parts.as_slice() {
        [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
            only.get("text").cloned().unwrap_or_default()
        }
        _ => Value::Array(parts),
    };
    messages.push(json!({ "role": "user", "content": content }));
}

/// `inlineData` → an `image_url` part with a data URL.
fn image_from_inline(data: &Object, path: &str) -> Result<Value, Untranslatable> {
    let mime = image_mime(data, path)?
        .ok_or_else(|| Untranslatable::new(format!("{path}.mimeType"), "is required"))?;
    let bytes = gemini_str(data, "data", path)?;
    Ok(
        json!({ "type": "image_url", "image_url": { "url": format!("data:{mime};base64,{bytes}") } }),
    )
}

/// `fileData` → an `image_url` part with the file's URL.
fn image_from_file(data: &Object, path: &str) -> Result<Value, Untranslatable> {
    image_mime(data, path)?;
    let uri = gemini_str(data, "fileUri", path)?;
    Ok(json!({ "type": "image_url", "image_url": { "url": uri } }))
}

/// A part's `mimeType`, which must be an image type: OpenAI chat messages take only images.
fn image_mime<'a>(data: &'a Object, path: &str) -> Result<Option<&'a str>, Untranslatable> {
    let Some((key, mime)) = gemini_field(data, "mimeType") else {
        return Ok(None);
    };
    let mime_path = format!("{path}.{key}");
    let mime = expect_str(mime, &mime_path)?;
    if !mime.starts_with("image/") {
        return Err(Untranslatable::new(
            mime_path,
            "OpenAI chat messages take images only",
        ));
    }
    Ok(Some(mime))
}
