//! Responses `tools`, `tool_choice` and `text.format` → chat tools, tool choice and
//! `response_format`.

use serde_json::{Map, Value, json};

use crate::providers::translate::Untranslatable;

use super::request::field;
use super::request_messages::{check_item_keys, required_string};

/// `tools`: function tools only.
pub(super) fn tools(body: &Map<String, Value>) -> Result<Option<Value>, Untranslatable> {
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
pub(super) fn tool_choice(body: &Map<String, Value>) -> Result<Option<Value>, Untranslatable> {
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
pub(super) fn response_format(body: &Map<String, Value>) -> Result<Option<Value>, Untranslatable> {
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
