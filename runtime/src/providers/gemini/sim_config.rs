//! Simulator: Gemini tools, tool config and `generationConfig` → OpenAI tools, tool choice,
//! sampling fields and `response_format`.

use serde_json::{Value, json};

use crate::providers::translate::Untranslatable;

use super::{
    JSON_MIME, Object, camel_case, expect_array, expect_number, expect_object, expect_str,
    expect_u64, gemini_field,
};

/// The `json_schema.name` given to a Gemini response schema, which has no name.
const DEFAULT_SCHEMA_NAME: &str = "response";

/// Gemini `tools` → OpenAI function tools.
pub(super) fn openai_tools(tools: &Value, key: &str) -> Result<Vec<Value>, Untranslatable> {
    let tools = expect_array(tools, key)?;
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("{key}[{i}]");
        for (kind, value) in expect_object(tool, &path)? {
            let kind_path = format!("{path}.{kind}");
            if value.is_null() {
                continue;
            }
            if camel_case(kind) != "functionDeclarations" {
                return Err(Untranslatable::new(
                    kind_path,
                    "OpenAI chat completions has function tools only",
                ));
            }
            for (k, declaration) in expect_array(value, &kind_path)?.iter().enumerate() {
                out.push(openai_function(declaration, &format!("{kind_path}[{k}]"))?);
            }
        }
    }
    Ok(out)
}

/// One function declaration → one OpenAI function tool.
fn openai_function(declaration: &Value, path: &str) -> Result<Value, Untranslatable> {
    let declaration = expect_object(declaration, path)?;
    let mut function = Object::new();
    for (key, value) in declaration {
        if value.is_null() {
            continue;
        }
        let field_path = format!("{path}.{key}");
        match camel_case(key).as_str() {
            "name" => function.insert("name".into(), expect_str(value, &field_path)?.into()),
            "description" => {
                function.insert("description".into(), expect_str(value, &field_path)?.into())
            }
            "parameters" | "parametersJsonSchema" => function.insert(
                "parameters".into(),
                expect_object(value, &field_path)?.clone().into(),
            ),
            _ => {
                return Err(Untranslatable::new(
                    field_path,
                    "OpenAI function tools have no equivalent of this field",
                ));
            }
        };
    }
    if !function.contains_key("name") {
        return Err(Untranslatable::new(format!("{path}.name"), "is required"));
    }
    Ok(json!({ "type": "function", "function": function }))
}

/// Gemini `toolConfig` → OpenAI `tool_choice`.
pub(super) fn openai_tool_choice(config: &Value, key: &str) -> Result<Value, Untranslatable> {
    let config = expect_object(config, key)?;
    if let Some((other, _)) = config
        .iter()
        .find(|(k, v)| !v.is_null() && camel_case(k) != "functionCallingConfig")
    {
        return Err(Untranslatable::new(
            format!("{key}.{other}"),
            "OpenAI chat completions has no equivalent of this field",
        ));
    }
    let Some((fc_key, calling)) = gemini_field(config, "functionCallingConfig") else {
        return Ok("auto".into());
    };
    let path = format!("{key}.{fc_key}");
    let calling = expect_object(calling, &path)?;
    let mode = match gemini_field(calling, "mode") {
        None => "AUTO",
        Some((mode_key, mode)) => expect_str(mode, &format!("{path}.{mode_key}"))?,
    };
    let names = match gemini_field(calling, "allowedFunctionNames") {
        None => Vec::new(),
        Some((names_key, names)) => {
            let names_path = format!("{path}.{names_key}");
            let names = expect_array(names, &names_path)?;
            names
                .iter()
                .enumerate()
                .map(|(k, name)| expect_str(name, &format!("{names_path}[{k}]")))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    match (mode, names.as_slice()) {
        ("AUTO" | "MODE_UNSPECIFIED", []) => Ok("auto".into()),
        ("NONE", []) => Ok("none".into()),
        ("ANY", []) => Ok("required".into()),
        ("ANY", [name]) => Ok(json!({ "type": "function", "function": { "name": name } })),
        ("AUTO" | "MODE_UNSPECIFIED" | "NONE" | "ANY", _) => Err(Untranslatable::new(
            format!("{path}.allowedFunctionNames"),
            "OpenAI's tool_choice can force one function, not choose among several",
        )),
        _ => Err(Untranslatable::new(
            format!("{path}.mode"),
            "must be AUTO, NONE or ANY",
        )),
    }
}

/// Gemini `generationConfig` → OpenAI sampling and output fields, into `out`.
pub(super) fn openai_generation_fields(
    config: &Object,
    key: &str,
    out: &mut Object,
) -> Result<(), Untranslatable> {
    for (field, value) in config {
        if value.is_null() {
            continue;
        }
        let path = format!("{key}.{field}");
        let (name, translated) = match camel_case(field).as_str() {
            "temperature" => ("temperature", expect_number(value, &path)?),
            "topP" => ("top_p", expect_number(value, &path)?),
            "presencePenalty" => ("presence_penalty", expect_number(value, &path)?),
            "frequencyPenalty" => ("frequency_penalty", expect_number(value, &path)?),
            "maxOutputTokens" => ("max_completion_tokens", expect_u64(value, &path)?.into()),
            "candidateCount" => ("n", expect_u64(value, &path)?.into()),
            "logprobs" => ("top_logprobs", expect_u64(value, &path)?.into()),
            "seed" => (
                "seed",
                value
                    .as_i64()
                    .ok_or_else(|| Untranslatable::new(&path, "must be an integer"))?
                    .into(),
            ),
            "responseLogprobs" => (
                "logprobs",
                value
                    .as_bool()
                    .ok_or_else(|| Untranslatable::new(&path, "must be a boolean"))?
                    .into(),
            ),
            "stopSequences" => ("stop", string_array(value, &path)?),
            "responseModalities" => {
                text_modalities(value, &path)?;
                continue;
            }
            "responseMimeType" | "responseJsonSchema" | "responseSchema" => continue,
            _ => {
                return Err(Untranslatable::new(
                    path,
                    "OpenAI chat completions has no equivalent of this field",
                ));
            }
        };
        out.insert(name.into(), translated);
    }
    if let Some(format) = openai_response_format(config, key)? {
        out.insert("response_format".into(), format);
    }
    Ok(())
}

/// `responseModalities` must ask for text only.
fn text_modalities(value: &Value, path: &str) -> Result<(), Untranslatable> {
    let modalities = string_array(value, path)?;
    let text_only = modalities.as_array().is_some_and(|m| {
        m.iter()
            .all(|m| m.as_str().is_some_and(|m| m.eq_ignore_ascii_case("text")))
    });
    if text_only {
        Ok(())
    } else {
        Err(Untranslatable::new(
            path,
            "OpenAI chat completions answers in text only",
        ))
    }
}

/// `responseMimeType` and a response schema → OpenAI `response_format`.
fn openai_response_format(config: &Object, key: &str) -> Result<Option<Value>, Untranslatable> {
    let mime = match gemini_field(config, "responseMimeType") {
        None => None,
        Some((mime_key, mime)) => Some(expect_str(mime, &format!("{key}.{mime_key}"))?),
    };
    let schema = gemini_field(config, "responseJsonSchema")
        .or_else(|| gemini_field(config, "responseSchema"));
    match (mime, schema) {
        (None | Some("text/plain"), None) => Ok(None),
        (Some(JSON_MIME), None) => Ok(Some(json!({ "type": "json_object" }))),
        (Some(JSON_MIME), Some((_, schema))) => Ok(Some(json!({
            "type": "json_schema",
            "json_schema": { "name": DEFAULT_SCHEMA_NAME, "schema": schema },
        }))),
        (_, Some((schema_key, _))) => Err(Untranslatable::new(
            format!("{key}.{schema_key}"),
            "a response schema needs responseMimeType application/json",
        )),
        (Some(_), None) => Err(Untranslatable::new(
            format!("{key}.responseMimeType"),
            "must be text/plain or application/json",
        )),
    }
}

/// An array of strings, as a JSON array.
fn string_array(value: &Value, path: &str) -> Result<Value, Untranslatable> {
    let items = expect_array(value, path)?;
    items
        .iter()
        .enumerate()
        .map(|(k, item)| Ok(expect_str(item, &format!("{path}[{k}]"))?.into()))
        .collect::<Result<Vec<Value>, _>>()
        .map(Value::Array)
}
