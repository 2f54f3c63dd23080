//! Front: OpenAI chunks → Anthropic SSE events ([`StreamFromOpenAi`]).

use serde_json::{Value, json};

use super::front_response::message_id;
use super::{present, stop_reason, str_at, usage_from_openai};

/// The Anthropic content block a front stream has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    /// No block is open.
    None,
    /// A text block at this Anthropic index.
    Text(u64),
    /// A tool_use block at this Anthropic index, for this OpenAI tool-call index.
    Tool(u64, u64),
}

/// Turns weir's OpenAI chunks, one by one, into Anthropic SSE events (name, data).
#[derive(Debug)]
pub struct StreamFromOpenAi {
    /// The model named in `message_start`.
    model: String,
    /// `message_start` has been sent.
    started: bool,
    /// The block currently open.
    open: OpenBlock,
    /// The next Anthropic content-block index.
    next_index: u64,
    /// OpenAI tool-call indexes whose block has been opened.
    tools_seen: Vec<u64>,
    /// The Anthropic stop reason, from the last `finish_reason`.
    stop_reason: Option<&'static str>,
    /// The usage chunk's usage, when it came.
    usage: Option<Value>,
    /// `message_stop` (or an `error`) has been sent.
    finished: bool,
}

impl StreamFromOpenAi {
    /// A translator for one stream answering with `model`.
    pub fn new(model: &str) -> Self {
        StreamFromOpenAi {
            model: model.to_string(),
            started: false,
            open: OpenBlock::None,
            next_index: 0,
            tools_seen: Vec::new(),
            stop_reason: None,
            usage: None,
            finished: false,
        }
    }

    /// One OpenAI chunk → Anthropic (event name, data) pairs.
    pub fn push(&mut self, chunk: &Value) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        if self.finished {
            return events;
        }
        self.start(str_at(chunk, "id"), &mut events);
        if let Some(usage) = present(chunk.get("usage")) {
            self.usage = Some(usage.clone());
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        let Some(choice) = choice else {
            return events;
        };
        if let Some(delta) = choice.get("delta") {
            for key in ["content", "refusal"] {
                if let Some(Value::String(text)) = delta.get(key)
                    && !text.is_empty()
                {
                    self.text(text, &mut events);
                }
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for call in calls {
                    self.tool_call(call, &mut events);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(stop_reason(reason));
            self.close(&mut events);
        }
        events
    }

    /// After `[DONE]`: closes any open block, then `message_delta` (stop reason, usage) and
    /// `message_stop`.
    pub fn finish(&mut self) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        if self.finished {
            return events;
        }
        self.start("", &mut events);
        self.close(&mut events);
        let usage = usage_from_openai(self.usage.as_ref());
        events.push((
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": usage,
            }),
        ));
        events.push(("message_stop", json!({"type": "message_stop"})));
        self.finished = true;
        events
    }

    /// An `error` event mid-stream (the stream ends with it).
    pub fn error(&mut self, error_type: &str, message: &str) -> (&'static str, Value) {
        self.finished = true;
        (
            "error",
            json!({"type": "error", "error": {"type": error_type, "message": message}}),
        )
    }

    /// Sends `message_start` once, with empty content and the usage known so far.
    fn start(&mut self, id: &str, events: &mut Vec<(&'static str, Value)>) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = usage_from_openai(self.usage.as_ref());
        events.push((
            "message_start",
            json!({
                "type": "message_start",
                "message": {
                    "id": message_id(id),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": usage,
                },
            }),
        ));
    }

    /// Opens a block of `content_block` at the next index.
    fn open(&mut self, content_block: Value, events: &mut Vec<(&'static str, Value)>) -> u64 {
        let index = self.next_index;
        self.next_index = self.next_index.saturating_add(1);
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        ));
        index
    }

    /// Closes the open block, if any.
    fn close(&mut self, events: &mut Vec<(&'static str, Value)>) {
        let index = match self.open {
            OpenBlock::None => return,
            OpenBlock::Text(index) | OpenBlock::Tool(index, _) => index,
        };
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        self.open = OpenBlock::None;
    }

    /// A text fragment: into the open text block, or a new one.
    fn text(&mut self, text: &str, events: &mut Vec<(&'static str, Value)>) {
        let index = match self.open {
            OpenBlock::Text(index) => index,
            _ => {
                self.close(events);
                let index = self.open(json!({"type": "text", "text": ""}), events);
                self.open = OpenBlock::Text(index);
                index
            }
        };
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
        ));
    }

    /// A tool-call fragment: opens its tool_use block the first time the call is seen, then
    /// its argument fragments become `input_json_delta`s. (Fragments of a call whose block
    /// has already been closed cannot be placed and are dropped; OpenAI streams calls in
    /// order.)
    fn tool_call(&mut self, call: &Value, events: &mut Vec<(&'static str, Value)>) {
        let k = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let index = match self.open {
            OpenBlock::Tool(index, open_k) if open_k == k => index,
            _ if self.tools_seen.contains(&k) => return,
            _ => {
                self.close(events);
                let function = call.get("function").unwrap_or(&Value::Null);
                let block = json!({
                    "type": "tool_use",
                    "id": str_at(call, "id"),
                    "name": str_at(function, "name"),
                    "input": {},
                });
                let index = self.open(block, events);
                self.open = OpenBlock::Tool(index, k);
                self.tools_seen.push(k);
                index
            }
        };
        let arguments = call
            .get("function")
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !arguments.is_empty() {
            events.push((
                "content_block_delta",
                json!({
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": arguments},
                }),
            ));
        }
    }
}
