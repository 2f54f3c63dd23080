//! Behind: OpenAI `tools`, `tool_choice` and `response_format` → Anthropic tools, tool choice
//! and `output_format`.

use serde_json::{Map, Value, json};

use crate::providers::translate::Untranslatable;

use super::{carry_cache_control, present};

/// OpenAI `tools` → Anthropic tools.
pub(super) fn tools_from_openai(tools: &Value) -> Result<Value, Untranslatable> {
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
pub(super) fn tool_choice_from_openai(
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
pub(super) fn output_format_from_openai(format: &Value) -> Result<Option<Value>, Untranslatable> {
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
