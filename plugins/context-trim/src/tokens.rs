//! Prompt token accounting, the same as the host's (`weir::cost::tokens::count_prompt`), so
//! that a prompt this stage trims to `max_tokens` is at most `max_tokens` when the host counts
//! it for reservations and cost.
//!
//! A message costs [`PER_MESSAGE`] + its role + its text (each text part on its own) + its
//! `extra` JSON when there is any (`tool_calls`, `tool_call_id`, ...), and
//! [`PER_NAME`] + the name when it has one. The prompt costs [`REPLY_PRIMING`] + the
//! request's `extra` JSON (`tools`, `response_format`, ...) on top of its messages. Every
//! part is additive, so dropping a message takes exactly its own cost off the total.
//!
//! The tokenizer is a parameter: the host's `count-tokens` in the component (bound to a
//! model), a stand-in in native tests (host imports cannot run natively).

use weir_sdk::{Content, Message};

/// Tokens every message costs besides its content (OpenAI's accounting for chat models).
pub const PER_MESSAGE: u64 = 3;
/// Tokens of a `name` field besides its text.
pub const PER_NAME: u64 = 1;
/// Tokens that prime the assistant's reply, once per prompt.
pub const REPLY_PRIMING: u64 = 3;
/// The `extra` of a message or request that carries nothing; it costs no tokens.
const NO_EXTRA: &str = "{}";

/// A token counter for one prompt: the tokenizer, and the counts of the roles seen so far (a
/// conversation uses a handful of roles, so this saves one tokenizer call per message).
pub struct Tokens<'a> {
    /// Tokens of a piece of text, for the model the stage counts with.
    count: &'a dyn Fn(&str) -> u32,
    /// (role, tokens) of each role counted so far.
    roles: Vec<(String, u64)>,
}

impl<'a> Tokens<'a> {
    /// A counter that tokenizes with `count`.
    pub fn new(count: &'a dyn Fn(&str) -> u32) -> Tokens<'a> {
        Tokens {
            count,
            roles: Vec::new(),
        }
    }

    /// Tokens of `text`; empty text is 0 without asking the tokenizer.
    pub fn text(&self, text: &str) -> u64 {
        if text.is_empty() {
            0
        } else {
            u64::from((self.count)(text))
        }
    }

    /// Tokens `message` adds to a prompt.
    pub fn message(&mut self, message: &Message) -> u64 {
        let mut total = PER_MESSAGE + self.role(&message.role);
        if let Some(name) = &message.name {
            total += PER_NAME + self.text(name);
        }
        match &message.content {
            Some(Content::Text(text)) => total += self.text(text),
            Some(Content::Parts(parts)) => {
                for text in parts.iter().filter_map(|part| part.text.as_deref()) {
                    total += self.text(text);
                }
            }
            None => {}
        }
        total + self.extra(&message.extra)
    }

    /// Tokens a prompt costs besides its messages: the reply priming and the request's
    /// `extra` JSON (`request_extra`).
    pub fn overhead(&self, request_extra: &str) -> u64 {
        REPLY_PRIMING + self.extra(request_extra)
    }

    /// Tokens of an `extra` JSON object; nothing when it carries nothing.
    fn extra(&self, extra: &str) -> u64 {
        if extra == NO_EXTRA {
            0
        } else {
            self.text(extra)
        }
    }

    /// Tokens of `role`, counted once per prompt.
    fn role(&mut self, role: &str) -> u64 {
        if let Some((_, tokens)) = self.roles.iter().find(|(known, _)| known == role) {
            return *tokens;
        }
        let tokens = self.text(role);
        self.roles.push((role.to_string(), tokens));
        tokens
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use weir_sdk::ContentPart;

    use super::*;

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
    fn a_plain_message_is_overhead_role_and_text() {
        let mut tokens = Tokens::new(&words);
        assert_eq!(
            tokens.message(&Message::user("three little words")),
            3 + 1 + 3
        );
        assert_eq!(tokens.message(&Message::user("")), 3 + 1);
    }

    #[test]
    fn name_parts_and_extra_count() {
        let mut tokens = Tokens::new(&words);
        let mut named = Message::user("hi there");
        named.name = Some("ada lovelace".to_string());
        assert_eq!(tokens.message(&named), 3 + 1 + 2 + (1 + 2));

        let mut parts = Message::user("");
        parts.content = Some(Content::Parts(vec![
            part("text", Some("look at")),
            part("image_url", None),
            part("text", Some("this picture please")),
        ]));
        assert_eq!(tokens.message(&parts), 3 + 1 + 2 + 3);

        let mut call = Message::assistant("");
        call.content = None;
        call.extra = r#"{"tool_calls": [{"id": "c1"}]}"#.to_string();
        assert_eq!(tokens.message(&call), 3 + 1 + 3);
    }

    #[test]
    fn overhead_is_priming_plus_request_extra() {
        let tokens = Tokens::new(&words);
        assert_eq!(tokens.overhead("{}"), REPLY_PRIMING);
        assert_eq!(tokens.overhead(r#"{"tools": []}"#), REPLY_PRIMING + 2);
    }

    #[test]
    fn roles_are_counted_once_and_empty_text_never() {
        let calls = RefCell::new(Vec::new());
        let count = |text: &str| {
            calls.borrow_mut().push(text.to_string());
            words(text)
        };
        let mut tokens = Tokens::new(&count);
        for message in [
            Message::user("a"),
            Message::assistant(""),
            Message::user("b"),
            Message::assistant("c"),
        ] {
            tokens.message(&message);
        }
        assert_eq!(
            calls.into_inner(),
            ["user", "a", "assistant", "b", "c"].map(str::to_string)
        );
    }
}
