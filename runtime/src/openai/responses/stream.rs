//! Chat chunks → Responses stream events ([`StreamFromOpenAi`]).

use serde_json::{Map, Value, json};

use super::output::{Ending, ItemIds, OutputItem, Part, PartKind};
use super::response::{first_choice, request_model, response_object, set, usage_from_openai};

/// Turns a chat-completions stream into Responses stream events: `start`, one `push` per
/// chunk, then `finish` after `[DONE]` (or `error` when the stream broke). Each event is its
/// name and its `data` (which repeats the name as `type`, with an increasing `sequence_number`).
#[derive(Debug, Clone)]
pub struct StreamFromOpenAi {
    /// The Response object echoing the request, as sent in `response.created`.
    base: Value,
    /// Ids of the response and its items.
    ids: ItemIds,
    /// The next event's `sequence_number`.
    sequence: u64,
    /// Output items in order of first appearance.
    items: Vec<OutputItem>,
    /// Which item is the message, once text has arrived.
    message: Option<usize>,
    /// Chat tool-call index → output item index.
    tool_calls: Vec<(u64, usize)>,
    /// The model the chunks name (the request's until one does).
    model: String,
    /// The last `finish_reason` seen.
    finish_reason: Option<String>,
    /// Responses usage, from the chat usage chunk.
    usage: Value,
    /// Set once `finish` or `error` ran: later calls emit nothing.
    ended: bool,
}

impl StreamFromOpenAi {
    /// A stream answering `request`, whose Response is `id` (given `resp_` if it lacks it),
    /// created at `created_at` (Unix seconds).
    pub fn new(request: &Value, id: &str, created_at: u64) -> Self {
        let ids = ItemIds::new(id);
        let model = request_model(request).to_owned();
        let base = response_object(request, &ids.response, created_at, &model);
        StreamFromOpenAi {
            base,
            ids,
            sequence: 0,
            items: Vec::new(),
            message: None,
            tool_calls: Vec::new(),
            model,
            finish_reason: None,
            usage: Value::Null,
            ended: false,
        }
    }

    /// `response.created` and `response.in_progress`, both with the empty in-progress Response.
    pub fn start(&mut self) -> Vec<(&'static str, Value)> {
        let response = self.snapshot("in_progress", Vec::new());
        vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
        ]
    }

    /// One `chat.completion.chunk` → the events it makes: new items and parts, text and
    /// argument deltas. Anything that is not a chunk makes none.
    pub fn push(&mut self, chunk: &Value) -> Vec<(&'static str, Value)> {
        if self.ended {
            return Vec::new();
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str) {
            self.model = model.to_owned();
        }
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            self.usage = usage_from_openai(usage);
        }
        let Some(choice) = first_choice(chunk) else {
            return Vec::new();
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        let Some(delta) = choice.get("delta") else {
            return Vec::new();
        };
        let mut events = Vec::new();
        for (key, kind) in [("content", PartKind::Text), ("refusal", PartKind::Refusal)] {
            // Empty text (OpenAI's first chunk has `content: ""`) announces nothing: a
            // tool-call answer must not grow an empty message item.
            if let Some(text) = delta
                .get(key)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                events.extend(self.part_delta(kind, text));
            }
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                events.extend(self.tool_call_delta(call, position));
            }
        }
        events
    }

    /// After `[DONE]`: each item's `.done` events in output order, then `response.completed`
    /// (or `response.incomplete` when the answer was cut short) with the whole Response.
    pub fn finish(&mut self) -> Vec<(&'static str, Value)> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        let mut events = Vec::new();
        if self.items.is_empty() {
            events.extend(self.part_delta(PartKind::Text, ""));
        }
        let ending = Ending::from_finish_reason(self.finish_reason.as_deref());
        let status = ending.item_status();
        for index in 0..self.items.len() {
            events.extend(self.item_done(index, status));
        }
        let mut response = self.snapshot(status, self.output(status));
        ending.apply(&mut response);
        set(&mut response, "usage", self.usage.clone());
        let name = match ending {
            Ending::Completed => "response.completed",
            Ending::Incomplete(_) => "response.incomplete",
        };
        events.push(self.event(name, json!({"response": response})));
        events
    }

    /// The stream broke: an `error` event with `code` and `message`, then `response.failed`
    /// with the output so far (marked incomplete).
    pub fn error(&mut self, code: &str, message: &str) -> Vec<(&'static str, Value)> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        let error = self.event(
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
        let mut response = self.snapshot("failed", self.output("incomplete"));
        set(
            &mut response,
            "error",
            json!({"code": code, "message": message}),
        );
        set(&mut response, "usage", self.usage.clone());
        let failed = self.event("response.failed", json!({"response": response}));
        vec![error, failed]
    }

    /// One event: its name and data, with `type` and the next `sequence_number` added.
    fn event(&mut self, name: &'static str, data: Value) -> (&'static str, Value) {
        let mut object = Map::new();
        object.insert("type".into(), json!(name));
        object.insert("sequence_number".into(), json!(self.sequence));
        if let Value::Object(fields) = data {
            object.extend(fields);
        }
        self.sequence = self.sequence.saturating_add(1);
        (name, Value::Object(object))
    }

    /// The Response so far, with `status` and `output`.
    fn snapshot(&self, status: &str, output: Vec<Value>) -> Value {
        let mut response = self.base.clone();
        set(&mut response, "model", json!(self.model));
        set(&mut response, "status", json!(status));
        set(&mut response, "output", Value::Array(output));
        response
    }

    /// Every item so far, with `status`.
    fn output(&self, status: &str) -> Vec<Value> {
        self.items
            .iter()
            .map(|item| item.to_value(&self.ids, status))
            .collect()
    }

    /// Text (or refusal text) for the message: announces the item and the part on first
    /// sight, then the delta (none for empty text, which `finish` uses to make an empty
    /// message for an answer with no output).
    fn part_delta(&mut self, kind: PartKind, text: &str) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        let output_index = match self.message {
            Some(index) => index,
            None => {
                let item = OutputItem::Message { parts: Vec::new() };
                events.push(self.item_added(item));
                let index = self.items.len().saturating_sub(1);
                self.message = Some(index);
                index
            }
        };
        let Some(OutputItem::Message { parts }) = self.items.get_mut(output_index) else {
            return events;
        };
        let content_index = match parts.iter().position(|part| part.kind == kind) {
            Some(position) => position,
            None => {
                parts.push(Part {
                    kind,
                    text: String::new(),
                });
                let position = parts.len().saturating_sub(1);
                let part = Part {
                    kind,
                    text: String::new(),
                }
                .to_value();
                events.push(self.event(
                    "response.content_part.added",
                    json!({
                        "item_id": self.ids.message,
                        "output_index": output_index,
                        "content_index": position,
                        "part": part,
                    }),
                ));
                position
            }
        };
        if text.is_empty() {
            return events;
        }
        if let Some(OutputItem::Message { parts }) = self.items.get_mut(output_index)
            && let Some(part) = parts.get_mut(content_index)
        {
            part.text.push_str(text);
        }
        let data = match kind {
            PartKind::Text => json!({
                "item_id": self.ids.message,
                "output_index": output_index,
                "content_index": content_index,
                "delta": text,
                "logprobs": [],
            }),
            PartKind::Refusal => json!({
                "item_id": self.ids.message,
                "output_index": output_index,
                "content_index": content_index,
                "delta": text,
            }),
        };
        let name = match kind {
            PartKind::Text => "response.output_text.delta",
            PartKind::Refusal => "response.refusal.delta",
        };
        events.push(self.event(name, data));
        events
    }

    /// One tool-call delta: announces the function-call item on first sight of its index,
    /// then the arguments delta (none for empty arguments).
    fn tool_call_delta(&mut self, call: &Value, position: usize) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        let chat_index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| u64::try_from(position).unwrap_or(u64::MAX));
        let function = call.get("function");
        let name = function
            .and_then(|function| function.get("name"))
            .and_then(Value::as_str);
        let arguments = function
            .and_then(|function| function.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let known = self
            .tool_calls
            .iter()
            .find(|(index, _)| *index == chat_index)
            .map(|(_, item)| *item);
        let output_index = match known {
            Some(item) => item,
            None => {
                let call_id = call.get("id").and_then(Value::as_str).map_or_else(
                    || self.ids.fallback_call_id(self.tool_calls.len()),
                    str::to_owned,
                );
                let item = OutputItem::FunctionCall {
                    call_id,
                    name: name.unwrap_or_default().to_owned(),
                    arguments: String::new(),
                };
                events.push(self.item_added(item));
                let index = self.items.len().saturating_sub(1);
                self.tool_calls.push((chat_index, index));
                index
            }
        };
        let Some(OutputItem::FunctionCall {
            name: known_name,
            arguments: known_arguments,
            call_id,
        }) = self.items.get_mut(output_index)
        else {
            return events;
        };
        // A name arriving after the first delta fills an empty one; a repeated name is
        // not appended (some upstreams resend it on every delta).
        if let Some(name) = name.filter(|_| known_name.is_empty()) {
            name.clone_into(known_name);
        }
        if arguments.is_empty() {
            return events;
        }
        known_arguments.push_str(arguments);
        let item_id = ItemIds::function_call(call_id);
        events.push(self.event(
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": output_index, "delta": arguments}),
        ));
        events
    }

    /// Appends an item and announces it with `response.output_item.added`.
    fn item_added(&mut self, item: OutputItem) -> (&'static str, Value) {
        let announced = item.announced(&self.ids);
        let output_index = self.items.len();
        self.items.push(item);
        self.event(
            "response.output_item.added",
            json!({"output_index": output_index, "item": announced}),
        )
    }

    /// The `.done` events closing item `index`, with the item's final `status`.
    fn item_done(&mut self, index: usize, status: &str) -> Vec<(&'static str, Value)> {
        let Some(item) = self.items.get(index).cloned() else {
            return Vec::new();
        };
        let item_id = item.id(&self.ids);
        let mut events = Vec::new();
        match &item {
            OutputItem::Message { parts } => {
                for (content_index, part) in parts.iter().enumerate() {
                    events.push(self.part_done(&item_id, index, content_index, part));
                    events.push(self.event(
                        "response.content_part.done",
                        json!({
                            "item_id": item_id,
                            "output_index": index,
                            "content_index": content_index,
                            "part": part.to_value(),
                        }),
                    ));
                }
            }
            OutputItem::FunctionCall {
                name, arguments, ..
            } => events.push(self.event(
                "response.function_call_arguments.done",
                json!({
                    "item_id": item_id,
                    "output_index": index,
                    "name": name,
                    "arguments": arguments,
                }),
            )),
        }
        events.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item.to_value(&self.ids, status)}),
        ));
        events
    }

    /// `response.output_text.done` or `response.refusal.done` for one content part.
    fn part_done(
        &mut self,
        item_id: &str,
        output_index: usize,
        content_index: usize,
        part: &Part,
    ) -> (&'static str, Value) {
        match part.kind {
            PartKind::Text => self.event(
                "response.output_text.done",
                json!({
                    "item_id": item_id,
                    "output_index": output_index,
                    "content_index": content_index,
                    "text": part.text,
                    "logprobs": [],
                }),
            ),
            PartKind::Refusal => self.event(
                "response.refusal.done",
                json!({
                    "item_id": item_id,
                    "output_index": output_index,
                    "content_index": content_index,
                    "refusal": part.text,
                }),
            ),
        }
    }
}
