//! The deterministic answer to a chat prompt, and its token accounting.
//!
//! A reply echoes the last user message (so a test can see which prompt reached the upstream)
//! and adds a few words picked by the blake3 digest of the whole conversation, so identical
//! conversations get identical replies and any change anywhere in them changes the reply.
//! When the conversation ends with a tool result, the reply also quotes it (`tool said: ...`),
//! so a test can see the result went round the loop.
//!
//! A request that offers tools is answered with one tool call instead ([`Reply::tool_call`]):
//! its id comes from the digest and its arguments echo the last user message, so an agent
//! loop through a proxy is as deterministic as a plain chat. Nothing here knows about HTTP;
//! the only JSON is the tool call's argument string.

use crate::sim::faults::UsageFaults;
use crate::sim::tokens;

/// How many characters of the last user message the reply echoes.
pub const PROMPT_ECHO_CHARS: usize = 200;

/// Tokens billed per message on top of its text (role and separators), as OpenAI does.
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Tokens billed once per request for priming the reply, as OpenAI does.
pub const REPLY_PRIMING_TOKENS: u64 = 3;

/// Words the reply's tail is drawn from.
const WORDS: [&str; 32] = [
    "alpha", "bravo", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
    "kestrel", "lumen", "meadow", "nectar", "onyx", "prairie", "quartz", "raven", "sierra",
    "tundra", "umber", "velvet", "willow", "xenon", "yarrow", "zephyr", "basalt", "canyon", "dune",
    "estuary", "falcon", "glacier",
];

/// One message of a conversation, reduced to what the simulator reads.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The text of the message (text parts joined by newlines).
    pub text: String,
}

/// The one tool call of a reply to a request with tools.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// `call_<24 hex digits of the conversation's digest>`.
    pub id: String,
    /// The function called.
    pub name: String,
    /// `{"input":"<last user message, at most PROMPT_ECHO_CHARS characters>"}`, as JSON text.
    pub arguments: String,
}

/// The answer to a conversation, already cut to `max_tokens`.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// Content of the assistant message (empty for a tool call).
    pub text: String,
    /// A tool call answered instead of text.
    pub tool_call: Option<ToolCall>,
    /// `"stop"`, `"length"` when `max_tokens` cut the text, or `"tool_calls"`.
    pub finish_reason: &'static str,
    /// Tokens of the prompt (see `prompt_tokens`).
    pub prompt_tokens: u64,
    /// Tokens of `text`, at least 1.
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, those reported as read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Of `prompt_tokens`, those reported as written to it.
    pub cache_write_tokens: u64,
}

impl Reply {
    /// Answers `messages`, keeping at most `max_tokens` tokens of the reply.
    pub fn for_prompt(messages: &[PromptMessage], max_tokens: Option<u64>) -> Reply {
        let full = reply_text(messages);
        let (text, finish_reason) = match max_tokens {
            Some(max) => truncate(&full, max),
            None => (full.as_str(), "stop"),
        };
        Reply {
            text: text.to_owned(),
            tool_call: None,
            finish_reason,
            prompt_tokens: prompt_tokens(messages),
            completion_tokens: tokens::count(text).max(1),
            cached_tokens: 0,
            cache_write_tokens: 0,
        }
    }

    /// Answers `messages` with one call of the function `name`; its completion tokens are
    /// those of the arguments. `max_tokens` does not cut a tool call (its arguments must stay
    /// JSON).
    pub fn tool_call(messages: &[PromptMessage], name: &str) -> Reply {
        let hex = digest(messages).to_hex();
        let arguments = serde_json::json!({ "input": echo(last_user_text(messages)) }).to_string();
        Reply {
            text: String::new(),
            finish_reason: "tool_calls",
            prompt_tokens: prompt_tokens(messages),
            completion_tokens: tokens::count(&arguments).max(1),
            cached_tokens: 0,
            cache_write_tokens: 0,
            tool_call: Some(ToolCall {
                id: format!("call_{}", &hex.as_str()[..24]),
                name: name.to_owned(),
                arguments,
            }),
        }
    }

    /// Answers `messages` in JSON mode: `{"answer": "<the reply text>"}`, or (`invalid`) the
    /// reply text in prose around it, which no JSON parser takes. Never cut by `max_tokens`.
    pub fn json(messages: &[PromptMessage], invalid: bool) -> Reply {
        let object = serde_json::json!({ "answer": reply_text(messages) }).to_string();
        let text = match invalid {
            true => format!("Sure! Here is the JSON you asked for: {object}"),
            false => object,
        };
        Reply {
            finish_reason: "stop",
            prompt_tokens: prompt_tokens(messages),
            completion_tokens: tokens::count(&text).max(1),
            cached_tokens: 0,
            cache_write_tokens: 0,
            text,
            tool_call: None,
        }
    }

    /// The same reply reporting the usage faults' counts instead of the real ones, where
    /// given.
    pub fn with_usage(mut self, usage: UsageFaults) -> Reply {
        if let Some(n) = usage.prompt_tokens {
            self.prompt_tokens = n;
        }
        self.cached_tokens = usage.cached_tokens.unwrap_or(0);
        self.cache_write_tokens = usage.cache_write_tokens.unwrap_or(0);
        self
    }
}

/// Digest of the whole conversation, with a prefix-free encoding so that moving text between
/// messages or roles changes it.
pub fn digest(messages: &[PromptMessage]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(messages.len() as u64).to_le_bytes());
    for m in messages {
        for part in [&m.role, &m.text] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hasher.finalize()
}

/// The text of the last user message (of the last message when no user spoke).
fn last_user_text(messages: &[PromptMessage]) -> &str {
    messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .or(messages.last())
        .map(|m| m.text.as_str())
        .unwrap_or("")
}

/// The first `PROMPT_ECHO_CHARS` characters of `text`.
fn echo(text: &str) -> &str {
    match text.char_indices().nth(PROMPT_ECHO_CHARS) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

/// The untruncated reply: `sim reply to: <last user text, ≤ 200 chars>. <6 to 12 words>.`,
/// with `tool said: <tool result, ≤ 200 chars>. ` before the words when the conversation
/// ends with a `tool` message.
pub fn reply_text(messages: &[PromptMessage]) -> String {
    let hash = digest(messages);
    let bytes = hash.as_bytes();
    let n_words = 6 + usize::from(bytes[0] % 7);
    let words: Vec<&str> = bytes[1..=n_words]
        .iter()
        .map(|b| WORDS[usize::from(*b) % WORDS.len()])
        .collect();
    let user = echo(last_user_text(messages));
    let tool = match messages.last() {
        Some(m) if m.role == "tool" => format!("tool said: {}. ", echo(&m.text)),
        _ => String::new(),
    };
    format!("sim reply to: {user}. {tool}{}.", words.join(" "))
}

/// Tokens of a prompt: its text, plus `TOKENS_PER_MESSAGE` per message and
/// `REPLY_PRIMING_TOKENS` once.
pub fn prompt_tokens(messages: &[PromptMessage]) -> u64 {
    let text: u64 = messages
        .iter()
        .map(|m| tokens::count(&m.text) + TOKENS_PER_MESSAGE)
        .sum();
    text + REPLY_PRIMING_TOKENS
}

/// Keeps the first `max_tokens` tokens of `text`; the finish reason is `"length"` if anything
/// was cut.
pub fn truncate(text: &str, max_tokens: u64) -> (&str, &'static str) {
    let split = tokens::split(text);
    let keep = usize::try_from(max_tokens).unwrap_or(usize::MAX);
    if split.len() <= keep {
        return (text, "stop");
    }
    let end: usize = split[..keep].iter().map(|t| t.len()).sum();
    (&text[..end], "length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(pairs: &[(&str, &str)]) -> Vec<PromptMessage> {
        pairs
            .iter()
            .map(|(role, text)| PromptMessage {
                role: role.to_string(),
                text: text.to_string(),
            })
            .collect()
    }

    #[test]
    fn same_prompt_same_reply() {
        let a = msgs(&[("system", "be brief"), ("user", "hello")]);
        assert_eq!(
            Reply::for_prompt(&a, None),
            Reply::for_prompt(&a.clone(), None)
        );
    }

    #[test]
    fn reply_echoes_last_user_message() {
        let a = msgs(&[("user", "first"), ("assistant", "ok"), ("user", "second")]);
        assert!(reply_text(&a).starts_with("sim reply to: second. "));
    }

    #[test]
    fn different_prompts_differ_even_in_earlier_messages() {
        let a = msgs(&[("system", "one"), ("user", "hello")]);
        let b = msgs(&[("system", "two"), ("user", "hello")]);
        assert_ne!(reply_text(&a), reply_text(&b));
        let moved = msgs(&[("system", "onehello"), ("user", "")]);
        let split = msgs(&[("system", "one"), ("user", "hello")]);
        assert_ne!(digest(&moved), digest(&split));
    }

    #[test]
    fn echo_is_truncated_on_a_char_boundary() {
        let long = "é".repeat(500);
        let text = reply_text(&msgs(&[("user", &long)]));
        let echoed = text.trim_start_matches("sim reply to: ");
        assert!(echoed.starts_with(&"é".repeat(PROMPT_ECHO_CHARS)));
        assert!(!echoed.starts_with(&"é".repeat(PROMPT_ECHO_CHARS + 1)));
    }

    #[test]
    fn empty_conversation_still_answers() {
        let r = Reply::for_prompt(&[], None);
        assert!(r.text.starts_with("sim reply to: . "));
        assert_eq!(r.prompt_tokens, REPLY_PRIMING_TOKENS);
    }

    #[test]
    fn usage_is_about_a_quarter_of_the_chars() {
        let text = "a".repeat(400);
        let r = Reply::for_prompt(&msgs(&[("user", &text)]), None);
        assert_eq!(
            r.prompt_tokens,
            100 + TOKENS_PER_MESSAGE + REPLY_PRIMING_TOKENS
        );
        assert_eq!(r.completion_tokens, tokens::count(&r.text));
        let chars = r.text.chars().count() as u64;
        assert!(r.completion_tokens >= chars / 4 && r.completion_tokens <= chars / 2);
    }

    #[test]
    fn max_tokens_cuts_with_length() {
        let m = msgs(&[("user", "tell me a long story about rivers")]);
        let r = Reply::for_prompt(&m, Some(4));
        assert_eq!(r.finish_reason, "length");
        assert_eq!(r.completion_tokens, 4);
        assert_eq!(r.text, "sim reply to:");
        let whole = Reply::for_prompt(&m, Some(10_000));
        assert_eq!(whole.finish_reason, "stop");
        assert_eq!(whole.text, reply_text(&m));
    }

    #[test]
    fn tool_call_is_deterministic_and_echoes_the_user_as_json() {
        let m = msgs(&[("user", "weather in \"Paris\"?")]);
        let call = Reply::tool_call(&m, "get_weather");
        assert_eq!(call, Reply::tool_call(&m, "get_weather"));
        assert_eq!((call.text.as_str(), call.finish_reason), ("", "tool_calls"));
        let tool = call.tool_call.expect("a tool call");
        assert_eq!(tool.name, "get_weather");
        assert!(
            tool.id.starts_with("call_") && tool.id.len() == 29,
            "{}",
            tool.id
        );
        let args: serde_json::Value = serde_json::from_str(&tool.arguments).expect("JSON");
        assert_eq!(args, serde_json::json!({"input": "weather in \"Paris\"?"}));
        assert_eq!(call.completion_tokens, tokens::count(&tool.arguments));
        let other = Reply::tool_call(&msgs(&[("user", "other")]), "get_weather");
        assert_ne!(other.tool_call.map(|t| t.id), Some(tool.id));
        let long = "é".repeat(500);
        let long_call = Reply::tool_call(&msgs(&[("user", &long)]), "f");
        let args: serde_json::Value =
            serde_json::from_str(&long_call.tool_call.expect("call").arguments).expect("JSON");
        assert_eq!(
            args["input"].as_str().map(|s| s.chars().count()),
            Some(PROMPT_ECHO_CHARS)
        );
    }

    #[test]
    fn a_tool_result_is_quoted_in_the_reply() {
        let m = msgs(&[
            ("user", "weather?"),
            ("assistant", ""),
            ("tool", "sunny, 21C"),
        ]);
        let text = reply_text(&m);
        assert!(
            text.starts_with("sim reply to: weather?. tool said: sunny, 21C. "),
            "{text}"
        );
        assert!(!reply_text(&m[..1]).contains("tool said"));
    }

    #[test]
    fn zero_max_tokens_gives_empty_text_but_one_billed_token() {
        let r = Reply::for_prompt(&msgs(&[("user", "x")]), Some(0));
        assert_eq!(
            (r.text.as_str(), r.finish_reason, r.completion_tokens),
            ("", "length", 1)
        );
    }
}
