//! Simulator: OpenAI answers → Gemini answers ([`response_from_openai`],
//! [`chunk_from_openai`], [`error_body`]).

use serde_json::{Value, json};

use super::Object;

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
