//! Behind: OpenAI tools, tool choice, sampling and response format → Gemini
//! `functionDeclarations`, `toolConfig` and `generationConfig`.

use serde_json::{Value, json};

use crate::providers::translate::Untranslatable;

use super::{
    JSON_MIME, Object, expect_array, expect_number, expect_object, expect_str, expect_u64, present,
    required_str,
};

/// The Gemini function-declaration field OpenAI's JSON-Schema tool parameters go in.
const PARAMETERS_FIELD: &str = "parametersJsonSchema";

/// `tools` → Gemini `functionDeclarations`.
pub(super) fn function_declarations(tools: &Value) -> Result<Vec<Value>, Untranslatable> {
    let tools = expect_array(tools, "tools")?;
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| function_declaration(tool, &format!("tools[{i}]")))
        .collect()
}

/// One OpenAI function tool → one Gemini function declaration.
fn function_declaration(tool: &Value, path: &str) -> Result<Value, Untranslatable> {
    let tool = expect_object(tool, path)?;
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(Untranslatable::new(
            format!("{path}.type"),
            "Gemini takes function tools only",
        ));
    }
    let function_path = format!("{path}.function");
    let function = expect_object(tool.get("function").unwrap_or(&Value::Null), &function_path)?;
    let mut declaration = Object::new();
    let name = required_str(function, "name", &function_path)?;
    declaration.insert("name".into(), name.into());
    if let Some(description) = present(function, "description") {
        let description = expect_str(description, &format!("{function_path}.description"))?;
        declaration.insert("description".into(), description.into());
    }
    if let Some(parameters) = present(function, "parameters") {
        expect_object(parameters, &format!("{function_path}.parameters"))?;
        declaration.insert(PARAMETERS_FIELD.into(), parameters.clone());
    }
    Ok(Value::Object(declaration))
}

/// `tool_choice` → Gemini `toolConfig`.
pub(super) fn tool_config(choice: &Value) -> Result<Value, Untranslatable> {
    let bad = || {
        Untranslatable::new(
            "tool_choice",
            "must be auto, none, required or {\"type\":\"function\",\"function\":{\"name\"}}",
        )
    };
    let config = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => json!({ "mode": "AUTO" }),
            "none" => json!({ "mode": "NONE" }),
            "required" => json!({ "mode": "ANY" }),
            _ => return Err(bad()),
        },
        Value::Object(choice) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            let function = expect_object(
                choice.get("function").unwrap_or(&Value::Null),
                "tool_choice.function",
            )?;
            let name = required_str(function, "name", "tool_choice.function")?;
            json!({ "mode": "ANY", "allowedFunctionNames": [name] })
        }
        _ => return Err(bad()),
    };
    Ok(json!({ "functionCallingConfig": config }))
}

/// Sampling and output fields → Gemini `generationConfig`.
pub(super) fn generation_config(request: &Object) -> Result<Object, Untranslatable> {
    let mut config = Object::new();
    let numbers = [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ];
    for (from, to) in numbers {
        if let Some(value) = present(request, from) {
            config.insert(to.into(), expect_number(value, from)?);
        }
    }
    // `max_completion_tokens` is the current name and wins over `max_tokens`, as at OpenAI.
    let counts = [
        ("max_tokens", "maxOutputTokens"),
        ("max_completion_tokens", "maxOutputTokens"),
        ("n", "candidateCount"),
        ("top_logprobs", "logprobs"),
    ];
    for (from, to) in counts {
        if let Some(value) = present(request, from) {
            config.insert(to.into(), expect_u64(value, from)?.into());
        }
    }
    if let Some(seed) = present(request, "seed") {
        config.insert("seed".into(), seed_value(seed)?);
    }
    if let Some(logprobs) = present(request, "logprobs") {
        let logprobs = logprobs
            .as_bool()
            .ok_or_else(|| Untranslatable::new("logprobs", "must be a boolean"))?;
        config.insert("responseLogprobs".into(), logprobs.into());
    }
    if let Some(stop) = present(request, "stop") {
        let sequences = stop_sequences(stop)?;
        if !sequences.is_empty() {
            config.insert("stopSequences".into(), sequences.into());
        }
    }
    if let Some(format) = present(request, "response_format") {
        response_format(format, &mut config)?;
    }
    Ok(config)
}

/// `seed` → Gemini's seed, a 32-bit integer.
fn seed_value(seed: &Value) -> Result<Value, Untranslatable> {
    seed.as_i64()
        .and_then(|seed| i32::try_from(seed).ok())
        .map(Value::from)
        .ok_or_else(|| Untranslatable::new("seed", "Gemini takes a 32-bit integer seed"))
}

/// `stop` (a string or an array of strings) → `stopSequences`.
fn stop_sequences(stop: &Value) -> Result<Vec<Value>, Untranslatable> {
    match stop {
        Value::String(text) => Ok(vec![text.as_str().into()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(k, item)| Ok(expect_str(item, &format!("stop[{k}]"))?.into()))
            .collect(),
        _ => Err(Untranslatable::new(
            "stop",
            "must be a string or an array of strings",
        )),
    }
}

/// `response_format` → `responseMimeType` (and `responseJsonSchema`).
fn response_format(format: &Value, config: &mut Object) -> Result<(), Untranslatable> {
    let format = expect_object(format, "response_format")?;
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            config.insert("responseMimeType".into(), JSON_MIME.into());
        }
        Some("json_schema") => {
            let spec = expect_object(
                format.get("json_schema").unwrap_or(&Value::Null),
                "response_format.json_schema",
            )?;
            config.insert("responseMimeType".into(), JSON_MIME.into());
            if let Some(schema) = present(spec, "schema") {
                config.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        _ => {
            return Err(Untranslatable::new(
                "response_format.type",
                "must be text, json_object or json_schema",
            ));
        }
    }
    Ok(())
}
