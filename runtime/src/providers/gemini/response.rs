//! Behind: a Gemini response → an OpenAI `chat.completion` ([`response_to_openai`]).

use serde_json::{Value, json};

use super::{Object, fnv1a, present, unix_now};

/// Gemini `finishReason`s that mean the answer was filtered.
const FILTER_REASONS: [&str; 6] = [
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
];

/// Gemini `GenerateContentResponse` → OpenAI `chat.completion`. `model` names the answer when
/// Gemini gives no `modelVersion`. `Err` for an error body or a body that is no response.
pub fn response_to_openai(gemini: &Value, model: &str) -> Result<Value, String> {
    response_to_openai_at(gemini, model, unix_now())
}

/// [`response_to_openai`] with the `created` time given.
pub(super) fn response_to_openai_at(
    gemini: &Value,
    model: &str,
    created: u64,
) -> Result<Value, String> {
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
pub(super) fn candidates(response: &Object) -> Result<&[Value], String> {
    match present(response, "candidates") {
        None => Ok(&[]),
        Some(Value::Array(candidates)) => Ok(candidates),
        Some(_) => Err("the Gemini response's `candidates` is not an array".into()),
    }
}

/// `promptFeedback.blockReason`, when Gemini refused the prompt.
pub(super) fn block_reason(response: &Object) -> Option<&str> {
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
pub(super) fn candidate_index(candidate: &Object, position: usize) -> u64 {
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
pub(super) fn candidate_parts(candidate: &Object) -> &[Value] {
    candidate
        .get("content")
        .and_then(|content| content.get("parts"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A part holding Gemini's reasoning rather than the answer.
pub(super) fn is_thought(part: &Value) -> bool {
    part.get("thought").and_then(Value::as_bool) == Some(true)
}

/// A Gemini `functionCall` → an OpenAI tool call; the id is Gemini's or `call_<calls>`.
pub(super) fn openai_tool_call(call: &Value, calls: &mut usize) -> Value {
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
pub(super) fn finish_reason_to_openai(reason: &str, had_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        _ if FILTER_REASONS.contains(&reason) => "content_filter",
        "STOP" if had_calls => "tool_calls",
        _ => "stop",
    }
}

/// Gemini `usageMetadata` → OpenAI `usage` (see the module doc for the sums).
pub(super) fn usage_to_openai(metadata: &Value) -> Option<Value> {
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
pub(super) fn logprobs_to_openai(result: &Value) -> Option<Value> {
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
pub(super) fn response_id(response: &Object, body: &str) -> String {
    response
        .get("responseId")
        .and_then(Value::as_str)
        .map_or_else(|| format!("gemini-{:016x}", fnv1a(body)), str::to_string)
}

/// `modelVersion`, or the model weir asked for.
pub(super) fn model_name(response: &Object, model: &str) -> String {
    response
        .get("modelVersion")
        .and_then(Value::as_str)
        .unwrap_or(model)
        .to_string()
}

/// The message of a Gemini error object.
pub(super) fn error_message(error: &Value) -> String {
    error
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| error.to_string(), str::to_string)
}
