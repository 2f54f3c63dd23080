//! Simulator: a Gemini request → an OpenAI request ([`request_to_openai`]): the top level, the
//! system instruction and the kinds of part.

use serde_json::{Value, json};

use crate::providers::translate::Untranslatable;

use super::sim_config::{openai_generation_fields, openai_tool_choice, openai_tools};
use super::sim_contents::Ledger;
use super::{Object, camel_case, expect_array, expect_object, expect_str, gemini_field};

/// Gemini request fields the simulator direction reads (in lowerCamelCase).
const KNOWN_GEMINI_FIELDS: [&str; 6] = [
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "model",
];

/// Gemini `GenerateContentRequest` → OpenAI chat-completions request for `model` (which
/// came in the URL). `stream` is not set: the caller knows it from the URL.
pub fn request_to_openai(gemini: &Value, model: &str) -> Result<Value, Untranslatable> {
    let request = expect_object(gemini, "body")?;
    if let Some((key, _)) = request.iter().find(|(key, value)| {
        !value.is_null() && !KNOWN_GEMINI_FIELDS.contains(&camel_case(key).as_str())
    }) {
        return Err(Untranslatable::new(
            key.as_str(),
            "OpenAI chat completions has no equivalent of this field",
        ));
    }
    let mut messages = system_messages(request)?;
    let (contents_key, contents) = gemini_field(request, "contents")
        .ok_or_else(|| Untranslatable::new("contents", "is required"))?;
    messages.extend(Ledger::default().messages(contents, contents_key)?);
    let mut out = Object::new();
    out.insert("model".into(), model.into());
    out.insert("messages".into(), messages.into());
    if let Some((key, tools)) = gemini_field(request, "tools") {
        let tools = openai_tools(tools, key)?;
        if !tools.is_empty() {
            out.insert("tools".into(), tools.into());
        }
    }
    if let Some((key, config)) = gemini_field(request, "toolConfig") {
        out.insert("tool_choice".into(), openai_tool_choice(config, key)?);
    }
    if let Some((key, config)) = gemini_field(request, "generationConfig") {
        let config = expect_object(config, key)?;
        openai_generation_fields(config, key, &mut out)?;
    }
    Ok(Value::Object(out))
}

/// `systemInstruction.parts` → one system message per text part.
fn system_messages(request: &Object) -> Result<Vec<Value>, Untranslatable> {
    let Some((key, instruction)) = gemini_field(request, "systemInstruction") else {
        return Ok(Vec::new());
    };
    let instruction = expect_object(instruction, key)?;
    let Some((parts_key, parts)) = gemini_field(instruction, "parts") else {
        return Ok(Vec::new());
    };
    let path = format!("{key}.{parts_key}");
    let parts = expect_array(parts, &path)?;
    parts
        .iter()
        .enumerate()
        .map(|(j, part)| {
            let part_path = format!("{path}[{j}]");
            let part = expect_object(part, &part_path)?;
            let text = gemini_field(part, "text")
                .and_then(|(_, text)| text.as_str())
                .ok_or_else(|| {
                    Untranslatable::new(part_path, "a system instruction must be text here")
                })?;
            Ok(json!({ "role": "system", "content": text }))
        })
        .collect()
}

/// One Gemini part, by kind.
pub(super) enum GeminiPart<'a> {
    /// `text` (not a thought).
    Text(&'a str),
    /// A thought part: Gemini's own reasoning, skipped.
    Thought,
    /// `inlineData`, with its path.
    InlineData(String, &'a Object),
    /// `fileData`, with its path.
    FileData(String, &'a Object),
    /// `functionCall`, with its path.
    FunctionCall(String, &'a Object),
    /// `functionResponse`, with its path.
    FunctionResponse(String, &'a Object),
}

/// Builds a [`GeminiPart`] of one kind from its path and object.
type MakePart<'a> = fn(String, &'a Object) -> GeminiPart<'a>;

/// Sorts a Gemini part by kind.
pub(super) fn classify_part<'a>(
    part: &'a Value,
    path: &str,
) -> Result<GeminiPart<'a>, Untranslatable> {
    let part = expect_object(part, path)?;
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return Ok(GeminiPart::Thought);
    }
    if let Some((key, text)) = gemini_field(part, "text") {
        return expect_str(text, &format!("{path}.{key}")).map(GeminiPart::Text);
    }
    let kinds: [(&str, MakePart<'a>); 4] = [
        ("inlineData", GeminiPart::InlineData),
        ("fileData", GeminiPart::FileData),
        ("functionCall", GeminiPart::FunctionCall),
        ("functionResponse", GeminiPart::FunctionResponse),
    ];
    for (kind, make) in kinds {
        if let Some((key, value)) = gemini_field(part, kind) {
            let kind_path = format!("{path}.{key}");
            return Ok(make(kind_path.clone(), expect_object(value, &kind_path)?));
        }
    }
    Err(Untranslatable::new(
        path,
        "only text, inlineData, fileData, functionCall and functionResponse parts translate",
    ))
}
