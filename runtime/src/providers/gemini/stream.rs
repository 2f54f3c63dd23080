//! Behind: Gemini stream responses → OpenAI chunks ([`StreamToOpenAi`]).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::providers::translate::ToOpenAiStream;

use super::response::{
    block_reason, candidate_index, candidate_parts, candidates, error_message,
    finish_reason_to_openai, is_thought, logprobs_to_openai, model_name, openai_tool_call,
    response_id, usage_to_openai,
};
use super::{Object, present, unix_now};

/// Turns a Gemini `streamGenerateContent?alt=sse` stream into OpenAI chunks. Each Gemini
/// payload is a whole `GenerateContentResponse` with the next piece of text; there is no end
/// event, so the usage chunk and `[DONE]` come from [`ToOpenAiStream::finish`].
pub struct StreamToOpenAi {
    /// Model named in the chunks: Gemini's `modelVersion` from the first payload, else weir's.
    model: String,
    /// Chunk id: the first payload's `responseId` or a hash of it; `None` before it.
    id: Option<String>,
    /// Unix seconds, the same on every chunk.
    pub(super) created: u64,
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
