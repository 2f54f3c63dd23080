//! Front: Anthropic `tools`, `tool_choice` and `output_format` → OpenAI tools, tool choice and
//! `response_format`.

use serde_json::{Map, Value, json};

use crate::providers::translate::Untranslatable;

use super::{carry_cache_control, present};

/// The name the front gives an Anthropic `output_format` schema (OpenAI requires one).
const OUTPUT_SCHEMA_NAME: &str = "output";

/// Anthropic `tools` → OpenAI function tools.
pub(super) fn tools_to_openai(tools: &Value) -> Result<Value, Untranslatable> {
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
pub(super) fn tool_choice_to_openai(
    choice: &Value,
) -> Result<(Value, Option<Value>), Untranslatable> {
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
pub(super) fn output_format_of(
    request: &Map<String, Value>,
) -> Result<Option<&Value>, Untranslatable> {
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
pub(super) fn response_format_to_openai(format: &Value) -> Result<Value, Untranslatable> {
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
