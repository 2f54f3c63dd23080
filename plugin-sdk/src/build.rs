//! Builders and accessors on the WIT types: messages, requests, responses and errors.
//!
//! ```no_run
//! use weir_sdk::{ChatResponse, Message, StageError};
//!
//! let greeting = Message::system("You are terse.");
//! let canned = ChatResponse::from_text("canned", "We are closed today.");
//! let refusal = StageError::reject(422, "too_long", "the prompt is over 8000 characters");
//! # let _ = (greeting, canned, refusal);
//! ```

use crate::{
    ChatRequest, ChatResponse, Choice, Content, Message, Phases, Rejection, StageError, StageInfo,
    Usage,
};

impl StageInfo {
    /// A stage called `name` at `version` that implements no phase yet and is not
    /// deterministic. Chain [`on_request`](Self::on_request),
    /// [`on_response`](Self::on_response), ... to say what it does.
    pub fn new(name: &str, version: &str) -> Self {
        StageInfo {
            name: name.to_string(),
            version: version.to_string(),
            phases: Phases::empty(),
            deterministic: false,
        }
    }

    /// The stage implements `on-request`.
    pub fn on_request(mut self) -> Self {
        self.phases |= Phases::REQUEST;
        self
    }

    /// The stage implements `on-response`: it sees every answer whole (a stream is buffered
    /// for it unless it lists [`on_response_chunk`](Self::on_response_chunk) too).
    pub fn on_response(mut self) -> Self {
        self.phases |= Phases::RESPONSE;
        self
    }

    /// The stage implements `on-response-chunk`: a streamed answer reaches it chunk by chunk
    /// (and the client with no buffering), a whole one through `on-response`.
    pub fn on_response_chunk(mut self) -> Self {
        self.phases |= Phases::RESPONSE_CHUNK;
        self
    }

    /// `on-request` depends only on its input and the stage config; the host may cache its
    /// outcome and the state it hands the response phase, and skip the call for the same
    /// input.
    pub fn deterministic(mut self) -> Self {
        self.deterministic = true;
        self
    }
}

impl Message {
    /// A message with `role` and plain-text `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.to_string(),
            content: Some(Content::Text(content.into())),
            name: None,
            extra: "{}".to_string(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// All the text of the message: the content string, or the text parts joined by `\n`.
    /// Empty when there is no text.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(text)) => text.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|part| part.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Replaces the content with plain text (dropping non-text parts).
    pub fn set_text(&mut self, text: impl Into<String>) {
        self.content = Some(Content::Text(text.into()));
    }

    /// Calls `f` on every piece of text in the message (the content string, or each text
    /// part), in place; non-text parts are left as they are. The way to rewrite text without
    /// losing images or other parts.
    pub fn for_each_text_mut(&mut self, mut f: impl FnMut(&mut String)) {
        match &mut self.content {
            None => {}
            Some(Content::Text(text)) => f(text),
            Some(Content::Parts(parts)) => {
                for part in parts.iter_mut() {
                    if let Some(text) = part.text.as_mut() {
                        f(text);
                    }
                }
            }
        }
    }
}

impl ChatRequest {
    /// A request for `model` with `messages` and nothing else set.
    pub fn new(model: &str, messages: Vec<Message>) -> Self {
        ChatRequest {
            model: model.to_string(),
            messages,
            temperature: None,
            top_p: None,
            max_tokens: None,
            stream: false,
            user: None,
            metadata: Vec::new(),
            extra: "{}".to_string(),
        }
    }

    /// The value of metadata `key`, if the client sent it.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl ChatResponse {
    /// A one-choice assistant response with `text`, as a stage answering on its own would
    /// return it (`finish_reason: stop`, zero usage).
    pub fn from_text(model: &str, text: impl Into<String>) -> Self {
        ChatResponse {
            id: "chatcmpl-weir-stage".to_string(),
            model: model.to_string(),
            created: 0,
            choices: vec![Choice {
                index: 0,
                message: Message::assistant(text),
                finish_reason: Some("stop".to_string()),
                extra: "{}".to_string(),
            }],
            usage: Some(Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
                total_tokens: 0,
                cached_tokens: 0,
            }),
            extra: "{}".to_string(),
        }
    }

    /// The text of the first choice; empty when there is none.
    pub fn text(&self) -> String {
        self.choices
            .first()
            .map(|choice| choice.message.text())
            .unwrap_or_default()
    }
}

impl StageError {
    /// Refuse the request: the client gets `status` with `code` and `message`.
    pub fn reject(status: u16, code: &str, message: impl Into<String>) -> Self {
        StageError::Reject(Rejection {
            status,
            code: code.to_string(),
            message: message.into(),
        })
    }

    /// The stage failed; the host applies the stage's `on_error` policy.
    pub fn fail(message: impl Into<String>) -> Self {
        StageError::Fail(message.into())
    }
}
