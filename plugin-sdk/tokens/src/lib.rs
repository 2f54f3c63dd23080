//! # weir-tokens: how weir counts a chat prompt's tokens
//!
//! One formula shared by the host (`weir::cost::tokens::count_prompt`: reservations, and usage
//! a provider did not report) and by stages (`weir_sdk::tokens::Tokens`: `context-trim` trims
//! a prompt to a token budget, which only works if its count is the host's count).
//!
//! OpenAI's accounting for chat models: a message costs [`PER_MESSAGE`] + its role + its text
//! (each text part on its own) + its `extra` JSON when there is any (`tool_calls`,
//! `tool_call_id`, ...), and [`PER_NAME`] + the name when it has one. The prompt costs
//! [`REPLY_PRIMING`] + the request's `extra` JSON (`tools`, `response_format`, ...) on top of
//! its messages. Every part is additive, so dropping a message takes exactly its own cost off
//! the total.
//!
//! The tokenizer is a parameter (the host's tiktoken in the host, the `count-tokens` import in
//! a guest, a stand-in in tests), and so is the message type: the host's and the guests' WIT
//! bindings are different Rust types generated from the same contract, so each side describes
//! its message through [`PromptMessage`]. No dependencies: this crate adds nothing to either
//! build.

/// Tokens every message costs besides its content.
pub const PER_MESSAGE: u64 = 3;
/// Tokens of a `name` field besides its text.
pub const PER_NAME: u64 = 1;
/// Tokens that prime the assistant's reply, once per prompt.
pub const REPLY_PRIMING: u64 = 3;
/// The `extra` of a message or request that carries nothing; it costs no tokens (nor does an
/// empty one).
const NO_EXTRA: &str = "{}";

/// The parts of a chat message that cost prompt tokens.
pub trait PromptMessage {
    /// The role (`system`, `user`, ...).
    fn role(&self) -> &str;
    /// The participant name, when the message has one.
    fn name(&self) -> Option<&str>;
    /// Each piece of text of the content: the content string, or each text part in order
    /// (non-text parts have none).
    fn texts(&self) -> impl Iterator<Item = &str>;
    /// The message's other fields as a JSON object (`"{}"` when there are none).
    fn extra(&self) -> &str;
}

/// A token counter for one prompt: the tokenizer, and the counts of the roles seen so far (a
/// conversation uses a handful of roles, so this saves one tokenizer call per message).
pub struct Tokens<F> {
    /// Tokens of a piece of text, for the model being counted for.
    count: F,
    /// (role, tokens) of each role counted so far.
    roles: Vec<(String, u64)>,
}

impl<F: Fn(&str) -> u32> Tokens<F> {
    /// A counter that tokenizes with `count`.
    pub fn new(count: F) -> Tokens<F> {
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
    pub fn message(&mut self, message: &impl PromptMessage) -> u64 {
        let mut total = PER_MESSAGE.saturating_add(self.role(message.role()));
        if let Some(name) = message.name() {
            total = total.saturating_add(PER_NAME.saturating_add(self.text(name)));
        }
        for text in message.texts() {
            total = total.saturating_add(self.text(text));
        }
        total.saturating_add(self.extra(message.extra()))
    }

    /// Tokens a prompt costs besides its messages: the reply priming and the request's
    /// `extra` JSON (`request_extra`).
    pub fn overhead(&self, request_extra: &str) -> u64 {
        REPLY_PRIMING.saturating_add(self.extra(request_extra))
    }

    /// Tokens of a whole prompt: its `messages` plus the [`overhead`](Self::overhead).
    pub fn prompt<'m, M: PromptMessage + 'm>(
        &mut self,
        messages: impl IntoIterator<Item = &'m M>,
        request_extra: &str,
    ) -> u64 {
        messages
            .into_iter()
            .fold(self.overhead(request_extra), |total, message| {
                total.saturating_add(self.message(message))
            })
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

    use super::*;

    /// One token per whitespace-separated word.
    fn words(text: &str) -> u32 {
        text.split_whitespace().count() as u32
    }

    /// A message as plain data: role, name, text pieces (`None` for a non-text part), extra.
    struct Msg {
        role: &'static str,
        name: Option<&'static str>,
        parts: Vec<Option<&'static str>>,
        extra: &'static str,
    }

    impl Msg {
        fn new(role: &'static str, text: &'static str) -> Msg {
            Msg {
                role,
                name: None,
                parts: vec![Some(text)],
                extra: "{}",
            }
        }
    }

    impl PromptMessage for Msg {
        fn role(&self) -> &str {
            self.role
        }
        fn name(&self) -> Option<&str> {
            self.name
        }
        fn texts(&self) -> impl Iterator<Item = &str> {
            self.parts.iter().flatten().copied()
        }
        fn extra(&self) -> &str {
            self.extra
        }
    }

    #[test]
    fn a_plain_message_is_overhead_role_and_text() {
        let mut tokens = Tokens::new(words);
        assert_eq!(
            tokens.message(&Msg::new("user", "three little words")),
            3 + 1 + 3
        );
        assert_eq!(tokens.message(&Msg::new("user", "")), 3 + 1);
    }

    #[test]
    fn name_parts_and_extra_count() {
        let mut tokens = Tokens::new(words);
        let mut named = Msg::new("user", "hi there");
        named.name = Some("ada lovelace");
        assert_eq!(tokens.message(&named), 3 + 1 + 2 + (1 + 2));

        let mut parts = Msg::new("user", "");
        parts.parts = vec![Some("look at"), None, Some("this picture please")];
        assert_eq!(tokens.message(&parts), 3 + 1 + 2 + 3);

        let mut call = Msg::new("assistant", "");
        call.parts = Vec::new();
        call.extra = r#"{"tool_calls": [{"id": "c1"}]}"#;
        assert_eq!(tokens.message(&call), 3 + 1 + 3);

        // An empty extra costs nothing, like "{}".
        let mut empty = Msg::new("user", "hi");
        empty.extra = "";
        assert_eq!(tokens.message(&empty), 3 + 1 + 1);
    }

    #[test]
    fn overhead_is_priming_plus_request_extra() {
        let tokens = Tokens::new(words);
        assert_eq!(tokens.overhead("{}"), REPLY_PRIMING);
        assert_eq!(tokens.overhead(""), REPLY_PRIMING);
        assert_eq!(tokens.overhead(r#"{"tools": []}"#), REPLY_PRIMING + 2);
    }

    #[test]
    fn a_prompt_is_its_messages_plus_the_overhead() {
        let messages = [
            Msg::new("system", "be brief"),
            Msg::new("user", "hello world"),
        ];
        let mut tokens = Tokens::new(words);
        assert_eq!(
            tokens.prompt(&messages, r#"{"tools": []}"#),
            (REPLY_PRIMING + 2) + (3 + 1 + 2) + (3 + 1 + 2)
        );
    }

    #[test]
    fn roles_are_counted_once_and_empty_text_never() {
        let calls = RefCell::new(Vec::new());
        let count = |text: &str| {
            calls.borrow_mut().push(text.to_string());
            words(text)
        };
        let mut tokens = Tokens::new(count);
        for message in [
            Msg::new("user", "a"),
            Msg::new("assistant", ""),
            Msg::new("user", "b"),
            Msg::new("assistant", "c"),
        ] {
            tokens.message(&message);
        }
        drop(tokens);
        assert_eq!(
            calls.into_inner(),
            ["user", "a", "assistant", "b", "c"].map(str::to_string)
        );
    }
}
