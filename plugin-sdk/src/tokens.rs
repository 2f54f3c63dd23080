//! Token counting with the model's real tokenizer, done by the host, and the host's prompt
//! accounting ([`Tokens`]) for stages that must agree with it.
//!
//! ```no_run
//! let n = weir_sdk::tokens::count("gpt-4o", "How many tokens is this?");
//! # let _ = n;
//! ```
//!
//! A prompt counted the way the host counts it for reservations and cost:
//!
//! ```no_run
//! use weir_sdk::{ChatRequest, Message};
//! use weir_sdk::tokens::Tokens;
//!
//! let request = ChatRequest::new("gpt-4o", vec![Message::user("Hello!")]);
//! let mut tokens = Tokens::new(|text: &str| weir_sdk::tokens::count("gpt-4o", text));
//! let prompt = tokens.prompt(&request.messages, &request.extra);
//! # let _ = prompt;
//! ```

pub use weir_tokens::{PER_MESSAGE, PER_NAME, PromptMessage, REPLY_PRIMING, Tokens};

use crate::{Content, Message};

/// Tokens `text` takes for `model` (tiktoken; an unknown or empty model counts as `gpt-4o`).
/// Text over 256 KiB is not tokenized: the host answers an estimate, its bytes / 4 rounded up.
pub fn count(model: &str, text: &str) -> u32 {
    crate::bindings::weir::stage0_1_0::host::count_tokens(model, text)
}

impl PromptMessage for Message {
    fn role(&self) -> &str {
        &self.role
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn texts(&self) -> impl Iterator<Item = &str> {
        let (text, parts) = match &self.content {
            Some(Content::Text(text)) => (Some(text.as_str()), &[][..]),
            Some(Content::Parts(parts)) => (None, parts.as_slice()),
            None => (None, &[][..]),
        };
        text.into_iter()
            .chain(parts.iter().filter_map(|part| part.text.as_deref()))
    }

    fn extra(&self) -> &str {
        &self.extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContentPart;

    /// One token per whitespace-separated word.
    fn words(text: &str) -> u32 {
        text.split_whitespace().count() as u32
    }

    fn part(kind: &str, text: Option<&str>) -> ContentPart {
        ContentPart {
            kind: kind.to_string(),
            text: text.map(str::to_string),
            extra: "{}".to_string(),
        }
    }

    #[test]
    fn a_message_gives_its_role_name_texts_and_extra() {
        let mut message = Message::user("");
        message.name = Some("ada".to_string());
        message.content = Some(Content::Parts(vec![
            part("text", Some("look at")),
            part("image_url", None),
            part("text", Some("this")),
        ]));
        message.extra = r#"{"x": 1}"#.to_string();
        assert_eq!(PromptMessage::role(&message), "user");
        assert_eq!(PromptMessage::name(&message), Some("ada"));
        assert_eq!(message.texts().collect::<Vec<_>>(), ["look at", "this"]);
        assert_eq!(PromptMessage::extra(&message), r#"{"x": 1}"#);

        assert_eq!(
            Message::user("plain").texts().collect::<Vec<_>>(),
            ["plain"]
        );
        let mut none = Message::assistant("");
        none.content = None;
        assert_eq!(none.texts().count(), 0);
    }

    #[test]
    fn messages_count_with_the_shared_formula() {
        let mut tokens = Tokens::new(words);
        assert_eq!(
            tokens.message(&Message::user("three little words")),
            3 + 1 + 3
        );
        let mut parts = Message::user("");
        parts.name = Some("ada lovelace".to_string());
        parts.content = Some(Content::Parts(vec![
            part("text", Some("look at")),
            part("image_url", None),
            part("text", Some("this picture please")),
        ]));
        assert_eq!(tokens.message(&parts), 3 + 1 + (1 + 2) + 2 + 3);

        let mut call = Message::assistant("");
        call.content = None;
        call.extra = r#"{"tool_calls": [{"id": "c1"}]}"#.to_string();
        assert_eq!(tokens.message(&call), 3 + 1 + 3);
    }
}
