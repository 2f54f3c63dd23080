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

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::translate::{ToOpenAiStream, Untranslatable};

/// A JSON object.
type Object = Map<String, Value>;

/// The MIME type Gemini answers JSON under.
const JSON_MIME: &str = "application/json";

/// The Gemini function-declaration field OpenAI's JSON-Schema tool parameters go in.
const PARAMETERS_FIELD: &str = "parametersJsonSchema";

/// The `json_schema.name` given to a Gemini response schema, which has no name.
const DEFAULT_SCHEMA_NAME: &str = "response";

/// Image types Gemini reads, by file extension, for `https` image URLs (Gemini needs the type).
const IMAGE_EXTENSIONS: [(&str, &str); 6] = [
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("webp", "image/webp"),
    ("heic", "image/heic"),
    ("heif", "image/heif"),
];

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

/// Gemini `finishReason`s that mean the answer was filtered.
const FILTER_REASONS: [&str; 6] = [
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
];

// ---------------------------------------------------------------------------------------------
// behind: OpenAI request → Gemini request
// ---------------------------------------------------------------------------------------------

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

/// Rejects message fields Gemini cannot carry.
fn check_message_fields(message: &Object, role: &str, path: &str) -> Result<(), Untranslatable> {
    let allowed: &[&str] = match role {
        "assistant" => &["role", "content", "tool_calls"],
        "tool" => &["role", "content", "tool_call_id", "name"],
        _ => &["role", "content"],
    };
    match message
        .iter()
        .find(|(key, value)| !value.is_null() && !allowed.contains(&key.as_str()))
    {
        Some((key, _)) if key == "name" => Err(Untranslatable::new(
            format!("{path}.name"),
            "Gemini turns carry no participant name",
        )),
        Some((key, _)) => Err(Untranslatable::new(
            format!("{path}.{key}"),
            "Gemini has no equivalent of this message field",
        )),
        None => Ok(()),
    }
}

/// A message's `content` (string, parts or absent) → Gemini parts. Images only where allowed.
fn content_parts(
    content: Option<&Value>,
    path: &str,
    images: bool,
) -> Result<Vec<Value>, Untranslatable> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({ "text": text })]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| content_part(part, &format!("{path}[{j}]"), images))
            .collect(),
        Some(_) => Err(Untranslatable::new(
            path,
            "must be a string, an array of content parts or null",
        )),
    }
}

/// One OpenAI content part → one Gemini part.
fn content_part(part: &Value, path: &str, images: bool) -> Result<Value, Untranslatable> {
    let part = expect_object(part, path)?;
    match part.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({ "text": required_str(part, "text", path)? })),
        Some("image_url") if images => image_part(part, path),
        Some("image_url") => Err(Untranslatable::new(
            path,
            "Gemini takes images in user messages only",
        )),
        _ => Err(Untranslatable::new(
            path,
            "Gemini takes text and image_url content parts only",
        )),
    }
}

/// An `image_url` part → `inlineData` (data URL) or `fileData` (https URL).
fn image_part(part: &Object, path: &str) -> Result<Value, Untranslatable> {
    let image_path = format!("{path}.image_url");
    let image = expect_object(part.get("image_url").unwrap_or(&Value::Null), &image_path)?;
    let url_path = format!("{image_path}.url");
    let url = required_str(image, "url", &image_path)?;
    if let Some(rest) = url.strip_prefix("data:") {
        return inline_data(rest, &url_path);
    }
    if url.starts_with("https://") {
        let mime = mime_from_extension(url).ok_or_else(|| {
            Untranslatable::new(
                &url_path,
                "Gemini needs the image's type, and the URL does not end in .png, .jpg, .jpeg, \
                 .webp, .heic or .heif",
            )
        })?;
        return Ok(json!({ "fileData": { "mimeType": mime, "fileUri": url } }));
    }
    Err(Untranslatable::new(
        url_path,
        "must be an https URL or a base64 data URL",
    ))
}

/// The part of a data URL after `data:` → `inlineData`.
fn inline_data(rest: &str, path: &str) -> Result<Value, Untranslatable> {
    let bad = || Untranslatable::new(path, "a data URL must be `data:<MIME type>;base64,<data>`");
    let (header, data) = rest.split_once(',').ok_or_else(bad)?;
    let mime = header.strip_suffix(";base64").ok_or_else(bad)?;
    let mime = mime.split(';').next().unwrap_or(mime);
    if !mime.starts_with("image/") {
        return Err(Untranslatable::new(
            path,
            "an image_url data URL must hold an image (data:image/...)",
        ));
    }
    Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }))
}

/// The image MIME type a URL's file extension names, if Gemini reads it.
fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    let (_, extension) = name.rsplit_once('.')?;
    IMAGE_EXTENSIONS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(extension))
        .map(|(_, mime)| *mime)
}

/// One OpenAI tool call → (id, name, `functionCall` part).
fn function_call_part(call: &Value, path: &str) -> Result<(String, String, Value), Untranslatable> {
    let call = expect_object(call, path)?;
    if let Some(kind) = present(call, "type")
        && kind.as_str() != Some("function")
    {
        return Err(Untranslatable::new(
            format!("{path}.type"),
            "Gemini takes function calls only",
        ));
    }
    let id = required_str(call, "id", path)?;
    let function_path = format!("{path}.function");
    let function = expect_object(call.get("function").unwrap_or(&Value::Null), &function_path)?;
    let name = required_str(function, "name", &function_path)?;
    let arguments = required_str(function, "arguments", &function_path)?;
    let Ok(Value::Object(args)) = serde_json::from_str::<Value>(arguments) else {
        return Err(Untranslatable::new(
            format!("{function_path}.arguments"),
            "must be a JSON object: Gemini takes function arguments as an object",
        ));
    };
    let part = json!({ "functionCall": { "id": id, "name": name, "args": args } });
    Ok((id.to_string(), name.to_string(), part))
}

/// A tool message's content as one text.
fn content_text(content: Option<&Value>, path: &str) -> Result<String, Untranslatable> {
    let parts = content_parts(content, path, false)?;
    Ok(parts
        .iter()
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect())
}

/// A tool result → `functionResponse.response`: a JSON object as is, anything else wrapped as
/// `{"content": text}`. An object that itself is exactly `{"content": "<string>"}` is wrapped
/// too (as its text), so that the way back can tell the two apart.
fn response_object(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) if !is_content_wrapper(&object) => Value::Object(object),
        _ => json!({ "content": text }),
    }
}

/// `{"content": "<string>"}` and nothing else.
fn is_content_wrapper(object: &Object) -> bool {
    object.len() == 1 && object.get("content").is_some_and(Value::is_string)
}

/// `tools` → Gemini `functionDeclarations`.
fn function_declarations(tools: &Value) -> Result<Vec<Value>, Untranslatable> {
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
fn tool_config(choice: &Value) -> Result<Value, Untranslatable> {
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
fn generation_config(request: &Object) -> Result<Object, Untranslatable> {
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

// ---------------------------------------------------------------------------------------------
// behind: Gemini response → OpenAI response
// ---------------------------------------------------------------------------------------------

/// Gemini `GenerateContentResponse` → OpenAI `chat.completion`. `model` names the answer when
/// Gemini gives no `modelVersion`. `Err` for an error body or a body that is no response.
pub fn response_to_openai(gemini: &Value, model: &str) -> Result<Value, String> {
    response_to_openai_at(gemini, model, unix_now())
}

/// [`response_to_openai`] with the `created` time given.
fn response_to_openai_at(gemini: &Value, model: &str, created: u64) -> Result<Value, String> {
    let response = gemini
        .as_object()
        .ok_or("the Gemini response is not a JSON object")?;
    if let Some(error) = present(response, "error") {
        return Err(error_message(error));
    }
    let candidates = candidates(response)?;
    let choices = if candidates.is_empty() {
        let reason = block_reason(response)
            .ok_or("the Gemini response has no candidates and no block reason")?;
        vec![blocked_choice(reason)]
    } else {
        let mut calls = 0;
        candidates
            .iter()
            .enumerate()
            .map(|(position, candidate)| choice_from_candidate(candidate, position, &mut calls))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut out = Object::new();
    out.insert(
        "id".into(),
        response_id(response, &gemini.to_string()).into(),
    );
    out.insert("object".into(), "chat.completion".into());
    out.insert("created".into(), created.into());
    out.insert("model".into(), model_name(response, model).into());
    out.insert("choices".into(), choices.into());
    if let Some(usage) = response.get("usageMetadata").and_then(usage_to_openai) {
        out.insert("usage".into(), usage);
    }
    Ok(Value::Object(out))
}

/// The `candidates` array (absent counts as empty).
fn candidates(response: &Object) -> Result<&[Value], String> {
    match present(response, "candidates") {
        None => Ok(&[]),
        Some(Value::Array(candidates)) => Ok(candidates),
        Some(_) => Err("the Gemini response's `candidates` is not an array".into()),
    }
}

/// `promptFeedback.blockReason`, when Gemini refused the prompt.
fn block_reason(response: &Object) -> Option<&str> {
    response
        .get("promptFeedback")
        .and_then(|feedback| feedback.get("blockReason"))
        .and_then(Value::as_str)
}

/// The single choice for a blocked prompt.
fn blocked_choice(_reason: &str) -> Value {
    json!({
        "index": 0,
        "message": { "role": "assistant", "content": null },
        "logprobs": null,
        "finish_reason": "content_filter",
    })
}

/// One candidate → one OpenAI choice. `calls` numbers generated tool call ids.
fn choice_from_candidate(
    candidate: &Value,
    position: usize,
    calls: &mut usize,
) -> Result<Value, String> {
    let candidate = candidate
        .as_object()
        .ok_or("a Gemini candidate is not a JSON object")?;
    let reply = Reply::read(candidate, calls);
    let reason = candidate
        .get("finishReason")
        .and_then(Value::as_str)
        .unwrap_or("STOP");
    let mut message = Object::new();
    message.insert("role".into(), "assistant".into());
    message.insert(
        "content".into(),
        reply.text.map_or(Value::Null, Value::from),
    );
    let had_calls = !reply.tool_calls.is_empty();
    if had_calls {
        message.insert("tool_calls".into(), reply.tool_calls.into());
    }
    let logprobs = candidate.get("logprobsResult").and_then(logprobs_to_openai);
    Ok(json!({
        "index": candidate_index(candidate, position),
        "message": message,
        "logprobs": logprobs,
        "finish_reason": finish_reason_to_openai(reason, had_calls),
    }))
}

/// `candidate.index`, or its position.
fn candidate_index(candidate: &Object, position: usize) -> u64 {
    candidate
        .get("index")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| u64::try_from(position).unwrap_or(u64::MAX))
}

/// What a candidate's parts say, in OpenAI's terms.
struct Reply {
    /// Joined text of the non-thought text parts; `None` when there are none.
    text: Option<String>,
    /// OpenAI tool calls, one per `functionCall` part.
    tool_calls: Vec<Value>,
}

impl Reply {
    /// Reads a candidate's `content.parts`; `calls` numbers generated tool call ids.
    fn read(candidate: &Object, calls: &mut usize) -> Reply {
        let mut reply = Reply {
            text: None,
            tool_calls: Vec::new(),
        };
        for part in candidate_parts(candidate) {
            if is_thought(part) {
                continue;
            }
            if let Some(text) = part.get("text").and_then(Value::as_str) {
                reply.text.get_or_insert_with(String::new).push_str(text);
            } else if let Some(call) = part.get("functionCall") {
                reply.tool_calls.push(openai_tool_call(call, calls));
            }
        }
        reply
    }
}

/// A candidate's `content.parts` (empty when absent or malformed).
fn candidate_parts(candidate: &Object) -> &[Value] {
    candidate
        .get("content")
        .and_then(|content| content.get("parts"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A part holding Gemini's reasoning rather than the answer.
fn is_thought(part: &Value) -> bool {
    part.get("thought").and_then(Value::as_bool) == Some(true)
}

/// A Gemini `functionCall` → an OpenAI tool call; the id is Gemini's or `call_<calls>`.
fn openai_tool_call(call: &Value, calls: &mut usize) -> Value {
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("call_{calls}"), str::to_string);
    *calls = calls.saturating_add(1);
    let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
    let arguments = call
        .get("args")
        .filter(|args| args.is_object())
        .map_or_else(|| "{}".to_string(), Value::to_string);
    json!({
        "id": id,
        "type": "function",
        "function": { "name": name, "arguments": arguments },
    })
}

/// Gemini `finishReason` → OpenAI `finish_reason`.
fn finish_reason_to_openai(reason: &str, had_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        _ if FILTER_REASONS.contains(&reason) => "content_filter",
        "STOP" if had_calls => "tool_calls",
        _ => "stop",
    }
}

/// Gemini `usageMetadata` → OpenAI `usage` (see the module doc for the sums).
fn usage_to_openai(metadata: &Value) -> Option<Value> {
    let metadata = metadata.as_object()?;
    let count = |key: &str| metadata.get(key).and_then(Value::as_u64);
    let prompt = count("promptTokenCount")
        .unwrap_or(0)
        .saturating_add(count("toolUsePromptTokenCount").unwrap_or(0));
    let thoughts = count("thoughtsTokenCount");
    let completion = count("candidatesTokenCount")
        .unwrap_or(0)
        .saturating_add(thoughts.unwrap_or(0));
    let total = count("totalTokenCount").unwrap_or_else(|| prompt.saturating_add(completion));
    let mut usage = Object::new();
    usage.insert("prompt_tokens".into(), prompt.into());
    usage.insert("completion_tokens".into(), completion.into());
    usage.insert("total_tokens".into(), total.into());
    if let Some(cached) = count("cachedContentTokenCount") {
        usage.insert(
            "prompt_tokens_details".into(),
            json!({ "cached_tokens": cached }),
        );
    }
    if let Some(thoughts) = thoughts {
        usage.insert(
            "completion_tokens_details".into(),
            json!({ "reasoning_tokens": thoughts }),
        );
    }
    Some(Value::Object(usage))
}

/// Gemini `logprobsResult` → OpenAI `logprobs`.
fn logprobs_to_openai(result: &Value) -> Option<Value> {
    let chosen = result.get("chosenCandidates")?.as_array()?;
    let top = result.get("topCandidates");
    let content: Vec<Value> = chosen
        .iter()
        .enumerate()
        .map(|(k, token)| {
            let alternatives: Vec<Value> = top
                .and_then(|top| top.get(k))
                .and_then(|step| step.get("candidates"))
                .and_then(Value::as_array)
                .map(|candidates| candidates.iter().map(token_logprob).collect())
                .unwrap_or_default();
            let mut entry = token_logprob(token);
            if let Value::Object(entry) = &mut entry {
                entry.insert("top_logprobs".into(), alternatives.into());
            }
            entry
        })
        .collect();
    Some(json!({ "content": content, "refusal": null }))
}

/// A Gemini logprob candidate → OpenAI `{token, logprob, bytes}`.
fn token_logprob(candidate: &Value) -> Value {
    let token = candidate
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let logprob = candidate
        .get("logProbability")
        .filter(|value| value.is_number())
        .cloned()
        .unwrap_or_else(|| 0.into());
    let bytes: Vec<Value> = token.bytes().map(Value::from).collect();
    json!({ "token": token, "logprob": logprob, "bytes": bytes })
}

/// `responseId`, or `gemini-<hash of the body>` so that the same body gets the same id.
fn response_id(response: &Object, body: &str) -> String {
    response
        .get("responseId")
        .and_then(Value::as_str)
        .map_or_else(|| format!("gemini-{:016x}", fnv1a(body)), str::to_string)
}

/// `modelVersion`, or the model weir asked for.
fn model_name(response: &Object, model: &str) -> String {
    response
        .get("modelVersion")
        .and_then(Value::as_str)
        .unwrap_or(model)
        .to_string()
}

/// The message of a Gemini error object.
fn error_message(error: &Value) -> String {
    error
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| error.to_string(), str::to_string)
}

// ---------------------------------------------------------------------------------------------
// behind: Gemini stream → OpenAI chunks
// ---------------------------------------------------------------------------------------------

/// Turns a Gemini `streamGenerateContent?alt=sse` stream into OpenAI chunks. Each Gemini
/// payload is a whole `GenerateContentResponse` with the next piece of text; there is no end
/// event, so the usage chunk and `[DONE]` come from [`ToOpenAiStream::finish`].
pub struct StreamToOpenAi {
    /// Model named in the chunks: Gemini's `modelVersion` from the first payload, else weir's.
    model: String,
    /// Chunk id: the first payload's `responseId` or a hash of it; `None` before it.
    id: Option<String>,
    /// Unix seconds, the same on every chunk.
    created: u64,
    /// Per candidate index, what its chunks have said so far.
    candidates: BTreeMap<u64, CandidateStream>,
    /// The latest `usageMetadata`, translated (Gemini repeats it, growing, on payloads).
    usage: Option<Value>,
    /// Tool calls seen so far in the stream, for generated `call_<n>` ids.
    calls: usize,
    /// `finish` has sent `[DONE]`.
    done: bool,
}

/// One candidate's progress in a stream.
#[derive(Default)]
struct CandidateStream {
    /// Tool calls sent for it so far: the next tool call delta's `index`.
    tool_calls: u64,
    /// Its finish chunk was sent.
    finished: bool,
}

impl StreamToOpenAi {
    /// A translator for one stream; `model` names the chunks unless Gemini names its version.
    pub fn new(model: &str) -> Self {
        StreamToOpenAi {
            model: model.to_string(),
            id: None,
            created: unix_now(),
            candidates: BTreeMap::new(),
            usage: None,
            calls: 0,
            done: false,
        }
    }

    /// Takes id and model from the first payload.
    fn start(&mut self, response: &Object, data: &str) {
        if self.id.is_none() {
            self.id = Some(response_id(response, data));
            self.model = model_name(response, &self.model);
        }
    }

    /// The choices one candidate's payload adds, each to become its own chunk.
    fn candidate_choices(
        &mut self,
        candidate: &Value,
        position: usize,
    ) -> Result<Vec<Value>, String> {
        let candidate = candidate
            .as_object()
            .ok_or("a Gemini candidate is not a JSON object")?;
        let index = candidate_index(candidate, position);
        let mut choices = Vec::new();
        let state = self.candidates.entry(index).or_insert_with(|| {
            choices.push(role_choice(index));
            CandidateStream::default()
        });
        let mut text = String::new();
        let mut first_text = None;
        for part in candidate_parts(candidate) {
            if is_thought(part) {
                continue;
            }
            if let Some(piece) = part.get("text").and_then(Value::as_str) {
                text.push_str(piece);
            } else if let Some(call) = part.get("functionCall") {
                flush_text(&mut text, index, &mut choices, &mut first_text);
                let mut delta = openai_tool_call(call, &mut self.calls);
                if let Value::Object(delta) = &mut delta {
                    delta.insert("index".into(), state.tool_calls.into());
                }
                state.tool_calls = state.tool_calls.saturating_add(1);
                choices.push(delta_choice(index, json!({ "tool_calls": [delta] })));
            }
        }
        flush_text(&mut text, index, &mut choices, &mut first_text);
        if let (Some(k), Some(logprobs)) = (
            first_text,
            candidate.get("logprobsResult").and_then(logprobs_to_openai),
        ) && let Some(Value::Object(choice)) = choices.get_mut(k)
        {
            choice.insert("logprobs".into(), logprobs);
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str)
            && !state.finished
        {
            state.finished = true;
            let reason = finish_reason_to_openai(reason, state.tool_calls > 0);
            choices.push(finish_choice(index, reason));
        }
        Ok(choices)
    }

    /// The choices for a blocked prompt: a role and a `content_filter` finish for choice 0.
    fn blocked_choices(&mut self) -> Vec<Value> {
        let mut choices = Vec::new();
        let state = self.candidates.entry(0).or_insert_with(|| {
            choices.push(role_choice(0));
            CandidateStream::default()
        });
        if !state.finished {
            state.finished = true;
            choices.push(finish_choice(0, "content_filter"));
        }
        choices
    }

    /// A chunk payload around `choices`.
    fn chunk(&self, choices: Vec<Value>) -> Object {
        let mut chunk = Object::new();
        chunk.insert("id".into(), self.id.clone().unwrap_or_default().into());
        chunk.insert("object".into(), "chat.completion.chunk".into());
        chunk.insert("created".into(), self.created.into());
        chunk.insert("model".into(), self.model.clone().into());
        chunk.insert("choices".into(), choices.into());
        chunk
    }
}

impl ToOpenAiStream for StreamToOpenAi {
    fn push(&mut self, data: &str) -> Result<Vec<String>, String> {
        if self.done {
            return Err("a Gemini payload arrived after the stream was complete".into());
        }
        let data = data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let payload: Value = serde_json::from_str(data)
            .map_err(|e| format!("a Gemini stream payload is not JSON: {e}"))?;
        let response = payload
            .as_object()
            .ok_or("a Gemini stream payload is not a JSON object")?;
        if let Some(error) = present(response, "error") {
            return Err(error_message(error));
        }
        let candidates = candidates(response)?;
        self.start(response, data);
        if let Some(usage) = response.get("usageMetadata").and_then(usage_to_openai) {
            self.usage = Some(usage);
        }
        let mut choices = Vec::new();
        if candidates.is_empty() && block_reason(response).is_some() {
            choices.extend(self.blocked_choices());
        }
        for (position, candidate) in candidates.iter().enumerate() {
            choices.extend(self.candidate_choices(candidate, position)?);
        }
        Ok(choices
            .into_iter()
            .map(|choice| Value::Object(self.chunk(vec![choice])).to_string())
            .collect())
    }

    fn finish(&mut self) -> Result<Vec<String>, String> {
        if self.done {
            return Ok(Vec::new());
        }
        if self.candidates.is_empty() || self.candidates.values().any(|c| !c.finished) {
            return Err("the stream ended before a finish reason".into());
        }
        self.done = true;
        let mut out = Vec::new();
        if let Some(usage) = self.usage.take() {
            let mut chunk = self.chunk(Vec::new());
            chunk.insert("usage".into(), usage);
            out.push(Value::Object(chunk).to_string());
        }
        out.push("[DONE]".to_string());
        Ok(out)
    }
}

/// Pending text → a content choice (noting the first one, which carries the logprobs).
fn flush_text(
    text: &mut String,
    index: u64,
    choices: &mut Vec<Value>,
    first_text: &mut Option<usize>,
) {
    if text.is_empty() {
        return;
    }
    first_text.get_or_insert(choices.len());
    choices.push(delta_choice(
        index,
        json!({ "content": std::mem::take(text) }),
    ));
}

/// The first chunk choice of a candidate.
fn role_choice(index: u64) -> Value {
    delta_choice(index, json!({ "role": "assistant", "content": "" }))
}

/// A chunk choice adding `delta`.
fn delta_choice(index: u64, delta: Value) -> Value {
    json!({ "index": index, "delta": delta, "finish_reason": null })
}

/// A chunk choice that ends a candidate.
fn finish_choice(index: u64, reason: &str) -> Value {
    json!({ "index": index, "delta": {}, "finish_reason": reason })
}

// ---------------------------------------------------------------------------------------------
// simulator: Gemini request → OpenAI request
// ---------------------------------------------------------------------------------------------

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
enum GeminiPart<'a> {
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
fn classify_part<'a>(part: &'a Value, path: &str) -> Result<GeminiPart<'a>, Untranslatable> {
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

/// The function calls of a Gemini conversation, to give responses their call ids.
#[derive(Default)]
struct Ledger {
    /// Every call so far: id, name, answered.
    calls: Vec<(String, String, bool)>,
}

impl Ledger {
    /// `contents` → OpenAI messages.
    fn messages(&mut self, contents: &Value, key: &str) -> Result<Vec<Value>, Untranslatable> {
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

/// Gemini `tools` → OpenAI function tools.
fn openai_tools(tools: &Value, key: &str) -> Result<Vec<Value>, Untranslatable> {
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
fn openai_tool_choice(config: &Value, key: &str) -> Result<Value, Untranslatable> {
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
fn openai_generation_fields(
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

// ---------------------------------------------------------------------------------------------
// simulator: OpenAI answers → Gemini answers
// ---------------------------------------------------------------------------------------------

/// OpenAI `chat.completion` → Gemini `GenerateContentResponse`. A tool call whose arguments
/// are not a JSON object gets empty `args` (Gemini cannot carry anything else there).
pub fn response_from_openai(openai: &Value) -> Value {
    let candidates: Vec<Value> = openai
        .get("choices")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .enumerate()
        .filter_map(|(position, choice)| {
            let message = choice.get("message")?;
            let parts = message_parts(message.get("content"), message.get("tool_calls"));
            Some(candidate(choice, position, parts))
        })
        .collect();
    let mut response = Object::new();
    response.insert("candidates".into(), candidates.into());
    insert_envelope(openai, &mut response);
    Value::Object(response)
}

/// One OpenAI chunk → one streamed Gemini `GenerateContentResponse`, or `None` when it carries
/// nothing Gemini shows (a role-only chunk, `[DONE]`, anything that is no chunk).
pub fn chunk_from_openai(chunk: &Value) -> Option<Value> {
    let candidates: Vec<Value> = chunk
        .get("choices")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .enumerate()
        .filter_map(|(position, choice)| {
            let delta = choice.get("delta");
            let content = delta
                .and_then(|d| d.get("content"))
                .filter(|c| c.as_str() != Some(""));
            let parts = message_parts(content, delta.and_then(|d| d.get("tool_calls")));
            let finish = choice.get("finish_reason").and_then(Value::as_str);
            let logprobs = choice.get("logprobs").filter(|l| !l.is_null());
            (!parts.is_empty() || finish.is_some() || logprobs.is_some())
                .then(|| candidate(choice, position, parts))
        })
        .collect();
    let usage = chunk.get("usage").filter(|usage| usage.is_object());
    if candidates.is_empty() && usage.is_none() {
        return None;
    }
    let mut response = Object::new();
    if !candidates.is_empty() {
        response.insert("candidates".into(), candidates.into());
    }
    insert_envelope(chunk, &mut response);
    Some(Value::Object(response))
}

/// `usageMetadata`, `modelVersion` and `responseId` from an OpenAI answer or chunk.
fn insert_envelope(openai: &Value, response: &mut Object) {
    if let Some(usage) = openai.get("usage").and_then(usage_from_openai) {
        response.insert("usageMetadata".into(), usage);
    }
    if let Some(model) = openai.get("model").and_then(Value::as_str) {
        response.insert("modelVersion".into(), model.into());
    }
    if let Some(id) = openai.get("id").and_then(Value::as_str) {
        response.insert("responseId".into(), id.into());
    }
}

/// An OpenAI choice with its parts → a Gemini candidate.
fn candidate(choice: &Value, position: usize, parts: Vec<Value>) -> Value {
    let mut candidate = Object::new();
    if !parts.is_empty() {
        candidate.insert("content".into(), json!({ "role": "model", "parts": parts }));
    }
    if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
        candidate.insert(
            "finishReason".into(),
            finish_reason_from_openai(reason).into(),
        );
    }
    if let Some(logprobs) = choice.get("logprobs").and_then(logprobs_from_openai) {
        candidate.insert("logprobsResult".into(), logprobs);
    }
    let index = choice
        .get("index")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| u64::try_from(position).unwrap_or(u64::MAX));
    candidate.insert("index".into(), index.into());
    Value::Object(candidate)
}

/// An OpenAI message's (or delta's) content and tool calls → Gemini parts.
fn message_parts(content: Option<&Value>, tool_calls: Option<&Value>) -> Vec<Value> {
    let mut parts: Vec<Value> = match content {
        Some(Value::String(text)) => vec![json!({ "text": text })],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.get("text").and_then(Value::as_str))
            .map(|text| json!({ "text": text }))
            .collect(),
        _ => Vec::new(),
    };
    let calls = tool_calls
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    parts.extend(calls.iter().filter_map(function_call_from_openai));
    parts
}

/// An OpenAI tool call → a `functionCall` part; `None` for a fragment without a name.
fn function_call_from_openai(call: &Value) -> Option<Value> {
    let function = call.get("function")?;
    let name = function.get("name").and_then(Value::as_str)?;
    let args = function
        .get("arguments")
        .and_then(Value::as_str)
        .and_then(|arguments| serde_json::from_str::<Value>(arguments).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Object::new()));
    let mut function_call = Object::new();
    if let Some(id) = call.get("id").and_then(Value::as_str) {
        function_call.insert("id".into(), id.into());
    }
    function_call.insert("name".into(), name.into());
    function_call.insert("args".into(), args);
    Some(json!({ "functionCall": function_call }))
}

/// OpenAI `finish_reason` → Gemini `finishReason`.
fn finish_reason_from_openai(reason: &str) -> &'static str {
    match reason {
        "stop" | "tool_calls" | "function_call" => "STOP",
        "length" => "MAX_TOKENS",
        "content_filter" => "SAFETY",
        _ => "OTHER",
    }
}

/// OpenAI `usage` → Gemini `usageMetadata`; reasoning tokens become `thoughtsTokenCount`.
fn usage_from_openai(usage: &Value) -> Option<Value> {
    let usage = usage.as_object()?;
    let count = |key: &str| usage.get(key).and_then(Value::as_u64);
    let prompt = count("prompt_tokens").unwrap_or(0);
    let completion = count("completion_tokens").unwrap_or(0);
    let reasoning = usage
        .get("completion_tokens_details")
        .and_then(|details| details.get("reasoning_tokens"))
        .and_then(Value::as_u64);
    let cached = usage
        .get("prompt_tokens_details")
        .and_then(|details| details.get("cached_tokens"))
        .and_then(Value::as_u64);
    let mut metadata = Object::new();
    metadata.insert("promptTokenCount".into(), prompt.into());
    metadata.insert(
        "candidatesTokenCount".into(),
        completion.saturating_sub(reasoning.unwrap_or(0)).into(),
    );
    let total = count("total_tokens").unwrap_or_else(|| prompt.saturating_add(completion));
    metadata.insert("totalTokenCount".into(), total.into());
    if let Some(reasoning) = reasoning {
        metadata.insert("thoughtsTokenCount".into(), reasoning.into());
    }
    if let Some(cached) = cached {
        metadata.insert("cachedContentTokenCount".into(), cached.into());
    }
    Some(Value::Object(metadata))
}

/// OpenAI `logprobs` → Gemini `logprobsResult`.
fn logprobs_from_openai(logprobs: &Value) -> Option<Value> {
    let content = logprobs.get("content")?.as_array()?;
    let gemini_token = |entry: &Value| {
        json!({
            "token": entry.get("token").and_then(Value::as_str).unwrap_or_default(),
            "logProbability": entry.get("logprob").filter(|l| l.is_number()).cloned().unwrap_or_else(|| 0.into()),
        })
    };
    let chosen: Vec<Value> = content.iter().map(gemini_token).collect();
    let top: Vec<Value> = content
        .iter()
        .map(|entry| {
            let alternatives: Vec<Value> = entry
                .get("top_logprobs")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(gemini_token)
                .collect();
            json!({ "candidates": alternatives })
        })
        .collect();
    Some(json!({ "topCandidates": top, "chosenCandidates": chosen }))
}

/// A Gemini-shaped error body: `{"error": {"code", "message", "status"}}`, the status named as
/// Google's APIs name it.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({
        "error": { "code": status, "message": message, "status": status_name(status) }
    })
}

/// Google's canonical status name for an HTTP status.
fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

// ---------------------------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------------------------

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
#[path = "gemini_tests.rs"]
mod tests;
