//! Token counts with the model's real tokenizer (tiktoken-rs), for reservations, for answers
//! whose provider reported no usage, and for stages (`count-tokens`).
//!
//! Encodings load once per process (a few hundred ms for o200k); [`warm_up`] does it off the
//! request path at start-up. A model tiktoken does not know counts as `gpt-4o` (o200k_base):
//! an estimate, but a far better one than characters / 4.

use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

use crate::wit::{ChatRequest, Content};

/// Tokens every message costs besides its content (OpenAI's accounting for chat models).
const PER_MESSAGE: u32 = 3;
/// Tokens of a `name` field besides its text.
const PER_NAME: u32 = 1;
/// Tokens that prime the assistant's reply.
const REPLY_PRIMING: u32 = 3;

/// The encoder for `model`.
fn encoder(model: &str) -> &'static CoreBPE {
    let tokenizer = get_tokenizer(model).unwrap_or(Tokenizer::O200kBase);
    match tokenizer {
        Tokenizer::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        Tokenizer::P50kBase | Tokenizer::P50kEdit => tiktoken_rs::p50k_base_singleton(),
        Tokenizer::R50kBase | Tokenizer::Gpt2 => tiktoken_rs::r50k_base_singleton(),
        _ => tiktoken_rs::o200k_base_singleton(),
    }
}

/// Loads the common encodings, so the first request does not pay for it.
pub fn warm_up() {
    let _ = tiktoken_rs::o200k_base_singleton().encode_ordinary("warm up");
    let _ = tiktoken_rs::cl100k_base_singleton().encode_ordinary("warm up");
}

/// Tokens `text` takes for `model`.
pub fn count_text(model: &str, text: &str) -> u32 {
    if text.is_empty() {
        return 0;
    }
    u32::try_from(encoder(model).encode_ordinary(text).len()).unwrap_or(u32::MAX)
}

/// Prompt tokens of `request` for `model`: every message's role, name and text, plus the
/// per-message and reply-priming overheads. Tools and other `extra` fields count as their
/// JSON text.
pub fn count_prompt(model: &str, request: &ChatRequest) -> u32 {
    let bpe = encoder(model);
    let count = |text: &str| -> u32 {
        if text.is_empty() {
            0
        } else {
            u32::try_from(bpe.encode_ordinary(text).len()).unwrap_or(u32::MAX)
        }
    };
    let mut total = REPLY_PRIMING;
    for message in &request.messages {
        total = total.saturating_add(PER_MESSAGE + count(&message.role));
        if let Some(name) = &message.name {
            total = total.saturating_add(PER_NAME + count(name));
        }
        match &message.content {
            Some(Content::Text(text)) => total = total.saturating_add(count(text)),
            Some(Content::Parts(parts)) => {
                for part in parts {
                    if let Some(text) = &part.text {
                        total = total.saturating_add(count(text));
                    }
                }
            }
            None => {}
        }
        if message.extra != "{}" && !message.extra.is_empty() {
            total = total.saturating_add(count(&message.extra));
        }
    }
    if request.extra != "{}" && !request.extra.is_empty() {
        total = total.saturating_add(count(&request.extra));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::Message;

    fn message(role: &str, text: &str) -> Message {
        Message::text(role, text)
    }

    #[test]
    fn counts_with_the_models_tokenizer() {
        assert_eq!(count_text("gpt-4o", "hello world"), 2);
        assert_eq!(count_text("gpt-4", "hello world"), 2);
        assert_eq!(count_text("gpt-4o", ""), 0);
        // An unknown model counts as gpt-4o.
        assert_eq!(
            count_text("sim-1", "The quick brown fox"),
            count_text("gpt-4o", "The quick brown fox")
        );
    }

    #[test]
    fn a_prompt_counts_messages_and_overheads() {
        let request = ChatRequest {
            model: "gpt-4o".into(),
            messages: vec![
                message("system", "Be brief."),
                message("user", "hello world"),
            ],
            temperature: None,
            top_p: None,
            max_tokens: None,
            stream: false,
            user: None,
            metadata: Vec::new(),
            extra: "{}".into(),
        };
        // "Be brief." is 4 tokens, "hello world" 2, each role 1, 3 per message, 3 priming.
        let expected = 3 + (3 + 1 + count_text("gpt-4o", "Be brief.")) + (3 + 1 + 2);
        assert_eq!(count_prompt("gpt-4o", &request), expected);
    }
}
