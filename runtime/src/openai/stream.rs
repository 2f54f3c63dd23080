//! Server-sent events: parsing an upstream stream, assembling it into one response (for
//! stages that need the whole response, and for usage), and rendering a response as SSE.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::extra_string;
use super::response::{parse_usage, usage_to_json};
use crate::wit::{ChatResponse, Choice, Content, Message, Usage};

/// Longest SSE line accepted from an upstream (a guard against a stream without newlines).
const MAX_LINE_BYTES: usize = 4 << 20;
/// Largest event (its `data:` lines together) accepted from an upstream: a stream of `data:`
/// lines that never ends its event with a blank line is cut here.
const MAX_EVENT_BYTES: usize = 4 << 20;

/// An incremental SSE parser: feed bytes, take complete `data:` payloads.
///
/// Linear in the bytes fed, however they are split: a partial line is never rescanned (the
/// scan resumes at `scanned`), and only completed lines are drained.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of an incomplete line.
    pending: Vec<u8>,
    /// How many bytes at the start of `pending` are known to hold no `\n`.
    scanned: usize,
    /// `data:` lines of the event being built.
    data: Vec<String>,
    /// Their bytes together, for [`MAX_EVENT_BYTES`].
    data_bytes: usize,
}

impl SseParser {
    /// Feeds `bytes`; returns the data payloads of the events completed by them. `Err` when a
    /// line or an event grows past its limit.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        let mut events = Vec::new();
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = self.pending[self.scanned..]
            .iter()
            .position(|&b| b == b'\n')
        {
            let end = self.scanned + pos;
            let mut line = &self.pending[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                    self.data_bytes = 0;
                }
            } else if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                self.data_bytes = self.data_bytes.saturating_add(rest.len());
                if self.data_bytes > MAX_EVENT_BYTES {
                    return Err(format!(
                        "an SSE event is longer than {MAX_EVENT_BYTES} bytes"
                    ));
                }
                // Valid UTF-8 (every well-behaved upstream's) is copied as it is: checking it is
                // far cheaper than the lossy decoder's walk.
                self.data.push(match std::str::from_utf8(rest) {
                    Ok(text) => text.to_owned(),
                    Err(_) => String::from_utf8_lossy(rest).into_owned(),
                });
            }
            start = end + 1;
            self.scanned = start;
        }
        self.pending.drain(..start);
        self.scanned = self.pending.len();
        if self.pending.len() > MAX_LINE_BYTES {
            return Err(format!("an SSE line is longer than {MAX_LINE_BYTES} bytes"));
        }
        Ok(events)
    }
}

/// Builds one [`ChatResponse`] from the chunks of a stream: what a JSON answer to the same
/// request holds (text, tool calls, a refusal, logprobs, finish reason, usage), so a stream
/// asked of the upstream for a JSON request (a target's `stream_json`) or stored in the
/// cache answers like the JSON would have.
///
/// What it holds is bounded by the stream it reads: an upstream stream is cut at its target's
/// `max_stream_bytes` (see `router::UpstreamStream`), and text decoded from a JSON string is
/// never longer than the bytes it arrived in, so the accumulated text needs no cap of its own.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    /// `id` of the first chunk.
    id: String,
    /// `model` of the first chunk.
    model: String,
    /// `created` of the first chunk.
    created: u64,
    /// Per choice index, what its deltas carried so far.
    choices: Vec<ChoiceParts>,
    /// The usage chunk, when it came.
    usage: Option<Usage>,
    /// Of its prompt tokens, those written to the provider's prompt cache.
    cache_writes: u32,
    /// Extra top-level fields of the first chunk (`system_fingerprint`, ...).
    extra: Map<String, Value>,
}

/// One choice as its deltas built it.
#[derive(Debug)]
struct ChoiceParts {
    role: String,
    text: String,
    finish_reason: Option<String>,
    /// `tool_calls`, by their `index`: `id`, `type`, and the function's name and arguments
    /// concatenated from their pieces.
    tool_calls: Vec<Value>,
    /// `refusal` pieces, concatenated.
    refusal: Option<String>,
    /// `logprobs.content` entries, in order.
    logprobs: Vec<Value>,
}

/// Most choices and tool calls per choice assembled; more are ignored.
const MAX_INDEX: usize = 64;

impl Default for ChoiceParts {
    fn default() -> ChoiceParts {
        ChoiceParts {
            role: "assistant".to_string(),
            text: String::new(),
            finish_reason: None,
            tool_calls: Vec::new(),
            refusal: None,
            logprobs: Vec::new(),
        }
    }
}

/// One chunk of a stream, as the accumulator reads it: borrowed from the event's text where
/// it can be, every other field skipped without being built.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    usage: Option<Value>,
    /// An error event in place of a chunk.
    #[serde(default)]
    error: Option<Value>,
}

/// One choice of a [`Chunk`].
#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    logprobs: Option<Value>,
}

/// The delta of a [`ChunkChoice`].
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
}

impl ChoiceParts {
    /// Adds one choice of a chunk.
    fn push(&mut self, choice: ChunkChoice<'_>) {
        if let Some(delta) = choice.delta {
            if let Some(role) = delta.role {
                self.role = role.into_owned();
            }
            if let Some(text) = delta.content {
                self.text.push_str(&text);
            }
            if let Some(text) = delta.refusal {
                self.refusal.get_or_insert_default().push_str(&text);
            }
            for call in delta.tool_calls.iter().flatten() {
                self.push_tool_call(call);
            }
        }
        if let Some(Value::Array(entries)) = choice
            .logprobs
            .and_then(|mut l| l.get_mut("content").map(Value::take))
        {
            self.logprobs.extend(entries);
        }
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason.into_owned());
        }
    }

    /// Adds one piece of a tool call: the first piece of an `index` names it, the next ones
    /// add to its arguments.
    fn push_tool_call(&mut self, piece: &Value) {
        let index = piece.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        if index >= MAX_INDEX {
            return;
        }
        while self.tool_calls.len() <= index {
            self.tool_calls.push(json!({
                "id": "", "type": "function", "function": {"name": "", "arguments": ""}
            }));
        }
        let call = &mut self.tool_calls[index];
        for key in ["id", "type"] {
            if let Some(value) = piece.get(key).and_then(Value::as_str) {
                call[key] = json!(value);
            }
        }
        for key in ["name", "arguments"] {
            if let Some(more) = piece
                .get("function")
                .and_then(|f| f.get(key))
                .and_then(Value::as_str)
                && let Some(Value::String(so_far)) = call["function"].get_mut(key)
            {
                so_far.push_str(more);
            }
        }
    }

    /// The choice as a JSON answer holds it, at `index`.
    fn finish(self, index: u32) -> Choice {
        let mut message = Map::new();
        if !self.tool_calls.is_empty() {
            message.insert("tool_calls".to_string(), Value::Array(self.tool_calls));
        }
        let content = match (&self.refusal, message.is_empty(), self.text.is_empty()) {
            // A refusal or a tool call with no text: `content` is null, as in JSON.
            (Some(_), _, true) | (None, false, true) => None,
            _ => Some(Content::Text(self.text)),
        };
        if let Some(refusal) = self.refusal {
            message.insert("refusal".to_string(), Value::String(refusal));
        }
        let mut extra = Map::new();
        if !self.logprobs.is_empty() {
            extra.insert("logprobs".to_string(), json!({"content": self.logprobs}));
        }
        Choice {
            index,
            message: Message {
                role: self.role,
                content,
                name: None,
                extra: extra_string(message),
            },
            finish_reason: self.finish_reason,
            extra: extra_string(extra),
        }
    }
}

impl StreamAccumulator {
    /// Adds one chunk (the parsed JSON of a `data:` payload).
    pub fn push(&mut self, chunk: &Value) {
        let Some(obj) = chunk.as_object() else { return };
        if self.id.is_empty() {
            self.id = obj
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            self.model = obj
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            self.created = obj.get("created").and_then(Value::as_u64).unwrap_or(0);
            for (k, v) in obj {
                if !matches!(
                    k.as_str(),
                    "id" | "model" | "created" | "object" | "choices" | "usage"
                ) && !v.is_null()
                {
                    self.extra.insert(k.clone(), v.clone());
                }
            }
        }
        if let Ok(chunk) = Chunk::deserialize(chunk) {
            self.apply(chunk);
        }
    }

    /// Adds one chunk from the text of its `data:` payload, without building a JSON value
    /// for it (after the first, whose top-level fields are kept); `Err` when the payload is
    /// not a chunk or is an error event.
    pub fn push_data(&mut self, data: &str) -> Result<(), String> {
        if self.id.is_empty() {
            let chunk: Value = serde_json::from_str(data)
                .map_err(|_| "the stream carried an event that is not JSON".to_string())?;
            if let Some(error) = chunk.get("error") {
                return Err(format!("the stream carried an error: {error}"));
            }
            self.push(&chunk);
            return Ok(());
        }
        let chunk: Chunk<'_> = serde_json::from_str(data)
            .map_err(|_| "the stream carried an event that is not a chunk".to_string())?;
        if let Some(error) = &chunk.error {
            return Err(format!("the stream carried an error: {error}"));
        }
        self.apply(chunk);
        Ok(())
    }

    /// Adds a chunk's usage and choices.
    fn apply(&mut self, chunk: Chunk<'_>) {
        if let Some(value) = &chunk.usage
            && let Some(usage) = parse_usage(value)
        {
            self.usage = Some(usage);
            self.cache_writes = super::response::parse_cache_writes(value);
        }
        for choice in chunk.choices {
            let index = choice.index.unwrap_or(0) as usize;
            if index >= MAX_INDEX {
                continue;
            }
            while self.choices.len() <= index {
                self.choices.push(ChoiceParts::default());
            }
            self.choices[index].push(choice);
        }
    }

    /// The length of [`Self::text`] in bytes, without building it.
    pub fn text_len(&self) -> usize {
        self.choices.iter().map(|c| c.text.len()).sum()
    }

    /// The text received so far, every choice's concatenated in order: what completion tokens
    /// are counted on when the stream carries no usage (as [`ChatResponse::text`] for a whole
    /// answer).
    pub fn text(&self) -> Cow<'_, str> {
        match self.choices.as_slice() {
            [] => Cow::Borrowed(""),
            [only] => Cow::Borrowed(only.text.as_str()),
            all => Cow::Owned(all.iter().map(|c| c.text.as_str()).collect()),
        }
    }

    /// The usage, if the stream carried it.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Of the usage's prompt tokens, those written to the provider's prompt cache.
    pub fn cache_writes(&self) -> u32 {
        self.cache_writes
    }

    /// The assembled response.
    pub fn finish(self) -> ChatResponse {
        ChatResponse {
            id: self.id,
            model: self.model,
            created: self.created,
            choices: self
                .choices
                .into_iter()
                .zip(0u32..)
                .map(|(choice, index)| choice.finish(index))
                .collect(),
            usage: self.usage,
            extra: extra_string(self.extra),
        }
    }
}

/// Renders a whole response as an SSE body: a role chunk and a content chunk per choice, a
/// finish chunk, the usage chunk when `include_usage`, then `[DONE]`.
pub fn response_to_sse(response: &ChatResponse, include_usage: bool) -> String {
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut obj = json!({
            "id": response.id,
            "object": "chat.completion.chunk",
            "created": response.created,
            "model": response.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            obj["usage"] = usage;
        }
        format!("data: {obj}\n\n")
    };
    let mut out = String::new();
    for choice in &response.choices {
        let text = choice
            .message
            .content
            .as_ref()
            .map(Content::text)
            .unwrap_or_default();
        out.push_str(&chunk(
            json!([{"index": choice.index, "delta": {"role": choice.message.role, "content": ""}, "finish_reason": null}]),
            None,
        ));
        out.push_str(&chunk(
            json!([{"index": choice.index, "delta": {"content": text}, "finish_reason": null}]),
            None,
        ));
        out.push_str(&chunk(
            json!([{"index": choice.index, "delta": {}, "finish_reason": choice.finish_reason}]),
            None,
        ));
    }
    if include_usage && let Some(usage) = &response.usage {
        out.push_str(&chunk(json!([]), Some(usage_to_json(usage))));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_reads() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: {\"a\"").unwrap().is_empty());
        assert_eq!(
            parser.feed(b":1}\n\ndata: [DONE]\r\n\r\n").unwrap(),
            ["{\"a\":1}", "[DONE]"]
        );
    }

    #[test]
    // The bound is on real CPU time, with no runtime: std's clock is the one to read.
    #[allow(clippy::disallowed_types)]
    fn a_long_line_fed_one_byte_at_a_time_is_parsed_in_linear_time() {
        // Rescanning the pending line from its start on every feed (quadratic) takes minutes
        // for this; a linear parser takes well under a second even unoptimised.
        let payload = vec![b'x'; MAX_LINE_BYTES - 16];
        let mut input = b"data: ".to_vec();
        input.extend_from_slice(&payload);
        input.extend_from_slice(b"\n\n");
        let mut parser = SseParser::default();
        let started = std::time::Instant::now();
        let mut events = Vec::new();
        for byte in input.chunks(1) {
            events.extend(parser.feed(byte).unwrap());
        }
        let elapsed = started.elapsed();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].len(), payload.len());
        assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
    }

    #[test]
    fn lines_and_events_past_their_caps_are_errors() {
        let mut parser = SseParser::default();
        let long = vec![b'x'; MAX_LINE_BYTES + 1];
        assert!(parser.feed(&long).unwrap_err().contains("line is longer"));

        // Data lines that never end their event: each line is short, the event is not.
        let mut parser = SseParser::default();
        let line = format!("data: {}\n", "y".repeat(64 << 10));
        let mut result = Ok(Vec::new());
        for _ in 0..(MAX_EVENT_BYTES / (64 << 10) + 1) {
            result = parser.feed(line.as_bytes());
            if result.is_err() {
                break;
            }
        }
        assert!(result.unwrap_err().contains("event is longer"));
    }

    #[test]
    fn accumulates_content_and_usage() {
        let mut acc = StreamAccumulator::default();
        acc.push(&json!({"id":"c","model":"m","created":1,"choices":[{"index":0,"delta":{"role":"assistant","content":"he"}}]}));
        acc.push(&json!({"id":"c","choices":[{"index":0,"delta":{"content":"llo"},"finish_reason":"stop"}]}));
        acc.push(&json!({"id":"c","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}));
        let response = acc.finish();
        assert_eq!(response.choices[0].finish_reason.as_deref(), Some("stop"));
        assert!(
            matches!(&response.choices[0].message.content, Some(Content::Text(t)) if t == "hello")
        );
        assert_eq!(response.usage.map(|u| u.total_tokens), Some(3));
    }

    #[test]
    fn tool_calls_refusals_and_logprobs_assemble_as_a_json_answer_holds_them() {
        let mut acc = StreamAccumulator::default();
        let call =
            |piece: Value| json!({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[piece]}}]});
        acc.push(&json!({"id":"c","model":"m","created":1,"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}));
        acc.push(&call(json!({"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}})));
        acc.push(&call(
            json!({"index":0,"function":{"arguments":"{\"city\":"}}),
        ));
        acc.push(&call(json!({"index":1,"id":"call_2","type":"function","function":{"name":"now","arguments":"{}"}})));
        acc.push(&call(
            json!({"index":0,"function":{"arguments":"\"Oslo\"}"}}),
        ));
        acc.push(
            &json!({"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
        );
        let choice = &acc.finish().choices[0];
        assert!(
            choice.message.content.is_none(),
            "null content beside tool calls"
        );
        assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
        let extra: Value = serde_json::from_str(&choice.message.extra).unwrap();
        assert_eq!(
            extra["tool_calls"],
            json!([
                {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}},
                {"id":"call_2","type":"function","function":{"name":"now","arguments":"{}"}}
            ])
        );

        let mut acc = StreamAccumulator::default();
        let lp = |token: &str| json!({"token": token, "logprob": -0.1, "bytes": null, "top_logprobs": []});
        acc.push(&json!({"id":"c","choices":[{"index":0,"delta":{"refusal":"I can't "},"logprobs":{"content":[lp("I")]}}]}));
        acc.push(&json!({"id":"c","choices":[{"index":0,"delta":{"refusal":"help."},"logprobs":{"content":[lp(" can't")]},"finish_reason":"stop"}]}));
        let choice = &acc.finish().choices[0];
        assert!(choice.message.content.is_none());
        let message: Value = serde_json::from_str(&choice.message.extra).unwrap();
        assert_eq!(message["refusal"], "I can't help.");
        let extra: Value = serde_json::from_str(&choice.extra).unwrap();
        assert_eq!(extra["logprobs"]["content"], json!([lp("I"), lp(" can't")]));
    }

    #[test]
    fn the_text_is_every_choice_concatenated() {
        let mut acc = StreamAccumulator::default();
        assert_eq!(acc.text(), "");
        acc.push(&json!({"id":"c","choices":[{"index":0,"delta":{"content":"he"}}]}));
        acc.push(&json!({"id":"c","choices":[{"index":0,"delta":{"content":"llo"}}]}));
        assert_eq!(acc.text(), "hello");
        acc.push(&json!({"id":"c","choices":[{"index":1,"delta":{"content":" world"}}]}));
        assert_eq!(acc.text(), "hello world");
        // The same as the assembled response's text.
        let text = acc.text().into_owned();
        assert_eq!(text, acc.finish().text());
    }

    #[test]
    fn text_parts_stream_as_their_concatenation() {
        let part = |text: Option<&str>| crate::wit::ContentPart {
            kind: if text.is_some() { "text" } else { "image_url" }.into(),
            text: text.map(Into::into),
            extra: "{}".into(),
        };
        let mut response = ChatResponse {
            id: "c".into(),
            model: "m".into(),
            created: 1,
            choices: vec![Choice {
                index: 0,
                message: Message::text("assistant", ""),
                finish_reason: Some("stop".into()),
                extra: "{}".into(),
            }],
            usage: None,
            extra: "{}".into(),
        };
        response.choices[0].message.content = Some(Content::Parts(vec![
            part(Some("one ")),
            part(None),
            part(Some("two")),
        ]));
        let sse = response_to_sse(&response, false);
        let mut acc = StreamAccumulator::default();
        let mut parser = SseParser::default();
        for event in parser.feed(sse.as_bytes()).unwrap() {
            if event != "[DONE]" {
                acc.push(&serde_json::from_str(&event).unwrap());
            }
        }
        assert_eq!(acc.text(), "one two");
        assert_eq!(acc.text(), response.text());
    }
}
