//! Behind: Anthropic SSE events → OpenAI chunks ([`StreamToOpenAi`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::providers::translate::ToOpenAiStream;

use super::response::anthropic_error_message;
use super::{finish_reason, now, str_at, usage_to_openai};

/// Error for a stream cut before Anthropic said the answer was complete.
pub(super) const CUT_SHORT: &str = "the stream ended before message_stop";

/// Turns an Anthropic Messages SSE stream, event by event, into OpenAI chunks.
#[derive(Debug, Default)]
pub struct StreamToOpenAi {
    /// The message id from `message_start`.
    id: String,
    /// The model from `message_start`.
    model: String,
    /// When the stream started (OpenAI's `created`).
    created: u64,
    /// Input-side usage (`input_tokens`, cache reads and writes), from `message_start` and
    /// updated by any cumulative usage in `message_delta`.
    input_usage: Map<String, Value>,
    /// `output_tokens`, from the latest `message_delta` (or `message_start`).
    output_tokens: u64,
    /// Anthropic content-block index → OpenAI tool-call index, for tool_use blocks.
    tool_index: BTreeMap<u64, u64>,
    /// `message_stop` has been seen and `[DONE]` sent.
    done: bool,
}

impl StreamToOpenAi {
    /// A translator for one stream.
    pub fn new() -> Self {
        StreamToOpenAi {
            created: now(),
            ..StreamToOpenAi::default()
        }
    }

    /// One OpenAI chunk with a single choice carrying `delta` and `finish_reason`.
    fn chunk(&self, delta: Value, finish_reason: Value) -> String {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
        .to_string()
    }

    /// The final usage chunk (`choices: []`).
    fn usage_chunk(&self) -> String {
        let input = Value::Object(self.input_usage.clone());
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_to_openai(&input, self.output_tokens),
        })
        .to_string()
    }

    /// Records the input-side counts of an Anthropic usage object.
    fn record_usage(&mut self, usage: Option<&Value>) {
        for key in [
            "input_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ] {
            if let Some(n) = usage.and_then(|u| u.get(key)).filter(|n| n.is_u64()) {
                self.input_usage.insert(key.into(), n.clone());
            }
        }
        if let Some(n) = usage
            .and_then(|u| u.get("output_tokens"))
            .and_then(Value::as_u64)
        {
            self.output_tokens = n;
        }
    }

    /// `message_start`: the role chunk; remembers id, model and input usage.
    fn message_start(&mut self, event: &Value) -> Result<Vec<String>, String> {
        let message = event
            .get("message")
            .filter(|m| m.is_object())
            .ok_or("message_start without a message")?;
        self.id = str_at(message, "id").to_string();
        self.model = str_at(message, "model").to_string();
        self.record_usage(message.get("usage"));
        Ok(vec![self.chunk(json!({"role": "assistant"}), Value::Null)])
    }

    /// `content_block_start`: a tool call's opening chunk, or text already in the block.
    fn block_start(&mut self, event: &Value) -> Result<Vec<String>, String> {
        let index = event
            .get("index")
            .and_then(Value::as_u64)
            .ok_or("content_block_start without an index")?;
        let block = event
            .get("content_block")
            .filter(|b| b.is_object())
            .ok_or("content_block_start without a content_block")?;
        match block.get("type").and_then(Value::as_str) {
            Some("text") => Ok(self.text_chunk(str_at(block, "text"))),
            Some("tool_use") => {
                let k = u64::try_from(self.tool_index.len()).unwrap_or(u64::MAX);
                self.tool_index.insert(index, k);
                let call = json!({
                    "index": k,
                    "id": str_at(block, "id"),
                    "type": "function",
                    "function": {"name": str_at(block, "name"), "arguments": ""},
                });
                Ok(vec![self.chunk(json!({"tool_calls": [call]}), Value::Null)])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// A content chunk for `text`, none for empty text.
    fn text_chunk(&self, text: &str) -> Vec<String> {
        if text.is_empty() {
            return Vec::new();
        }
        vec![self.chunk(json!({"content": text}), Value::Null)]
    }

    /// `content_block_delta`: text or tool-argument fragments; thinking is skipped.
    fn block_delta(&mut self, event: &Value) -> Result<Vec<String>, String> {
        let delta = event
            .get("delta")
            .filter(|d| d.is_object())
            .ok_or("content_block_delta without a delta")?;
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => Ok(self.text_chunk(str_at(delta, "text"))),
            Some("input_json_delta") => {
                // Input of a block that is not a client tool_use (a server tool) is skipped
                // like the block itself.
                let index = event.get("index").and_then(Value::as_u64);
                let Some(k) = index.and_then(|i| self.tool_index.get(&i)).copied() else {
                    return Ok(Vec::new());
                };
                let partial = str_at(delta, "partial_json");
                if partial.is_empty() {
                    return Ok(Vec::new());
                }
                let call = json!({"index": k, "function": {"arguments": partial}});
                Ok(vec![self.chunk(json!({"tool_calls": [call]}), Value::Null)])
            }
            // thinking_delta, signature_delta, citations_delta and anything new.
            _ => Ok(Vec::new()),
        }
    }

    /// `message_delta`: the finish chunk; remembers the output usage.
    fn message_delta(&mut self, event: &Value) -> Result<Vec<String>, String> {
        self.record_usage(event.get("usage"));
        let reason = event
            .get("delta")
            .and_then(|d| d.get("stop_reason"))
            .and_then(Value::as_str);
        match reason {
            Some(reason) => Ok(vec![self.chunk(json!({}), finish_reason(reason).into())]),
            None => Ok(Vec::new()),
        }
    }
}

impl ToOpenAiStream for StreamToOpenAi {
    fn push(&mut self, data: &str) -> Result<Vec<String>, String> {
        if self.done {
            return Ok(Vec::new());
        }
        let event: Value = serde_json::from_str(data)
            .map_err(|e| format!("an Anthropic stream event is not JSON: {e}"))?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or("an Anthropic stream event has no type")?;
        match kind {
            "message_start" => self.message_start(&event),
            "content_block_start" => self.block_start(&event),
            "content_block_delta" => self.block_delta(&event),
            "message_delta" => self.message_delta(&event),
            "message_stop" => {
                self.done = true;
                Ok(vec![self.usage_chunk(), "[DONE]".to_string()])
            }
            "error" => Err(anthropic_error_message(&event)),
            // content_block_stop, ping and event types added later.
            _ => Ok(Vec::new()),
        }
    }

    fn finish(&mut self) -> Result<Vec<String>, String> {
        if self.done {
            Ok(Vec::new())
        } else {
            Err(CUT_SHORT.to_string())
        }
    }
}
