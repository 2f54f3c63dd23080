//! Output items shared by the whole answer and the stream: how an answer ends, item ids, content
//! parts and output items.

use serde_json::{Value, json};

use super::response::set;

/// Prefix of a Response id.
const RESPONSE_ID_PREFIX: &str = "resp_";

/// Prefix of a chat-completion id, stripped when deriving item ids.
const CHAT_ID_PREFIX: &str = "chatcmpl-";

/// Prefix of a message output item's id.
const MESSAGE_ID_PREFIX: &str = "msg_";

/// Prefix of a function-call output item's id.
const FUNCTION_CALL_ID_PREFIX: &str = "fc_";

/// How an answer ended, in Responses terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// The model finished (stop, tool calls, or no reason given).
    Completed,
    /// Cut short; the reason as Responses names it (`max_output_tokens`, `content_filter`).
    Incomplete(&'static str),
}

impl Ending {
    /// Chat's `finish_reason` → the Response's ending.
    pub(super) fn from_finish_reason(reason: Option<&str>) -> Ending {
        match reason {
            Some("length") => Ending::Incomplete("max_output_tokens"),
            Some("content_filter") => Ending::Incomplete("content_filter"),
            _ => Ending::Completed,
        }
    }

    /// The status of the Response and of each output item.
    pub(super) fn item_status(self) -> &'static str {
        match self {
            Ending::Completed => "completed",
            Ending::Incomplete(_) => "incomplete",
        }
    }

    /// Sets `status` and `incomplete_details` on a Response object.
    pub(super) fn apply(self, response: &mut Value) {
        set(response, "status", json!(self.item_status()));
        if let Ending::Incomplete(reason) = self {
            set(response, "incomplete_details", json!({"reason": reason}));
        }
    }
}

/// Deterministic ids derived from one chat-completion (or stream) id.
#[derive(Debug, Clone)]
pub(super) struct ItemIds {
    /// The Response id, `resp_...`.
    pub(super) response: String,
    /// The message item's id, `msg_...`.
    pub(super) message: String,
}

impl ItemIds {
    /// The ids for the answer with chat id `id`.
    pub(super) fn new(id: &str) -> ItemIds {
        let response = if id.starts_with(RESPONSE_ID_PREFIX) {
            id.to_owned()
        } else {
            format!("{RESPONSE_ID_PREFIX}{id}")
        };
        let suffix = id
            .strip_prefix(RESPONSE_ID_PREFIX)
            .or_else(|| id.strip_prefix(CHAT_ID_PREFIX))
            .unwrap_or(id);
        ItemIds {
            response,
            message: format!("{MESSAGE_ID_PREFIX}{suffix}"),
        }
    }

    /// A function-call item's id, from its call id.
    pub(super) fn function_call(call_id: &str) -> String {
        format!("{FUNCTION_CALL_ID_PREFIX}{call_id}")
    }

    /// A call id for a tool call the upstream sent without one (the `index`th of the answer).
    pub(super) fn fallback_call_id(&self, index: usize) -> String {
        format!("call_{}_{index}", self.message)
    }
}

/// Which kind of content part a message part is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PartKind {
    /// `output_text`.
    Text,
    /// `refusal`.
    Refusal,
}

/// One content part of the message item.
#[derive(Debug, Clone)]
pub(super) struct Part {
    /// Text or refusal.
    pub(super) kind: PartKind,
    /// The text so far.
    pub(super) text: String,
}

impl Part {
    /// The part as Responses JSON.
    pub(super) fn to_value(&self) -> Value {
        match self.kind {
            PartKind::Text => json!({"type": "output_text", "text": self.text, "annotations": []}),
            PartKind::Refusal => json!({"type": "refusal", "refusal": self.text}),
        }
    }
}

/// One output item, as built from a whole answer or accumulated from a stream.
#[derive(Debug, Clone)]
pub(super) enum OutputItem {
    /// The assistant's message: its content parts in order of first appearance.
    Message {
        /// Text and refusal parts.
        parts: Vec<Part>,
    },
    /// One tool call.
    FunctionCall {
        /// The chat tool-call id.
        call_id: String,
        /// The function's name.
        name: String,
        /// The arguments (JSON text) so far.
        arguments: String,
    },
}

impl OutputItem {
    /// The item's id.
    pub(super) fn id(&self, ids: &ItemIds) -> String {
        match self {
            OutputItem::Message { .. } => ids.message.clone(),
            OutputItem::FunctionCall { call_id, .. } => ItemIds::function_call(call_id),
        }
    }

    /// The item as Responses JSON, with `status`.
    pub(super) fn to_value(&self, ids: &ItemIds, status: &str) -> Value {
        match self {
            OutputItem::Message { parts } => json!({
                "type": "message",
                "id": self.id(ids),
                "status": status,
                "role": "assistant",
                "content": parts.iter().map(Part::to_value).collect::<Vec<_>>(),
            }),
            OutputItem::FunctionCall {
                call_id,
                name,
                arguments,
            } => json!({
                "type": "function_call",
                "id": self.id(ids),
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
                "status": status,
            }),
        }
    }

    /// The item as first announced in a stream: no content, no arguments, `in_progress`.
    pub(super) fn announced(&self, ids: &ItemIds) -> Value {
        match self {
            OutputItem::Message { .. } => json!({
                "type": "message",
                "id": self.id(ids),
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }),
            OutputItem::FunctionCall { call_id, name, .. } => json!({
                "type": "function_call",
                "id": self.id(ids),
                "call_id": call_id,
                "name": name,
                "arguments": "",
                "status": "in_progress",
            }),
        }
    }
}
