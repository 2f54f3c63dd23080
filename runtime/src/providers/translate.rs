//! What every wire-format translation shares: the error for a request one side cannot carry,
//! and the shape of a stream translator.
//!
//! Translations work on JSON values (`serde_json::Value`) in OpenAI's chat-completions shape on
//! one side and a provider's (or a client API's) shape on the other. They never panic on any
//! input: arbitrary JSON yields a translation or a typed error.

use std::fmt;

/// A request a translation cannot carry without changing its meaning: the field, named as the
/// sender wrote it (`"messages[2].content[0].image_url"`, `"n"`), and why. It reaches the
/// client as a 400 naming the field; nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable {
    /// The field, as a path into the sender's JSON.
    pub param: String,
    /// Why, in a sentence a client can act on.
    pub message: String,
}

impl Untranslatable {
    /// `param` cannot be carried, because `message`.
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Untranslatable {
        Untranslatable {
            param: param.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Untranslatable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.param, self.message)
    }
}

impl std::error::Error for Untranslatable {}

/// Turns one provider's stream, event by event, into OpenAI `chat.completion.chunk` payloads.
pub trait ToOpenAiStream: Send {
    /// One SSE event's `data:` payload → zero or more OpenAI chunk payloads (JSON text), and
    /// the literal `"[DONE]"` once the provider has said the answer is complete. `Err` for a
    /// payload that is not what the provider sends (the stream is then broken).
    fn push(&mut self, data: &str) -> Result<Vec<String>, String>;
    /// The body ended: payloads still owed (`"[DONE]"` for a provider with no end event that
    /// has sent its finish), or `Err` when the answer was cut short.
    fn finish(&mut self) -> Result<Vec<String>, String>;
}
