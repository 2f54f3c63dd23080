//! The question to search with, the passages that fit the token budget, and the one system
//! message that carries them.
//!
//! The message sits right before the last user message, so the model reads the passages
//! next to the question they answer, after any system prompt. Its text is
//!
//! ```text
//! Use the following retrieved passages to answer.
//!
//! [1] <first passage>
//!
//! [2] <second passage>
//! ```
//!
//! ([`HEADING`], then each passage trimmed, numbered from 1 nearest first, separated by blank
//! lines). Passages are taken in order while the sum of their token counts stays within the
//! budget; the first that does not fit ends the list (a nearer passage is never dropped for
//! a farther, shorter one). The heading and the numbering (about 10 tokens, plus 3 per
//! passage) are not counted against the budget.

use weir_sdk::Message;

use crate::chroma::Passage;

/// The first line of the context message.
pub const HEADING: &str = "Use the following retrieved passages to answer.";

/// The index of the last user message in `messages`.
fn last_user(messages: &[Message]) -> Option<usize> {
    messages.iter().rposition(|message| message.role == "user")
}

/// The text to search with: the last user message's text, trimmed; `None` when there is no
/// user message or it has no text (an image alone, say).
pub fn question(messages: &[Message]) -> Option<String> {
    let text = messages[last_user(messages)?].text();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The passages to add: in order, while their tokens (by `count`) add up to at most `budget`.
pub fn select(passages: &[Passage], budget: u32, mut count: impl FnMut(&str) -> u32) -> Vec<&str> {
    let mut used: u32 = 0;
    let mut chosen = Vec::new();
    for passage in passages {
        let text = passage.text.trim();
        let total = used.saturating_add(count(text));
        if total > budget {
            break;
        }
        used = total;
        chosen.push(text);
    }
    chosen
}

/// The context message's text for `passages` (see the module docs).
pub fn render(passages: &[&str]) -> String {
    let mut text = HEADING.to_string();
    for (i, passage) in passages.iter().enumerate() {
        text.push_str(&format!("\n\n[{}] {passage}", i + 1));
    }
    text
}

/// Inserts a system message with `text` right before the last user message; false (and
/// nothing inserted) when there is none.
pub fn insert(messages: &mut Vec<Message>, text: String) -> bool {
    match last_user(messages) {
        Some(at) => {
            messages.insert(at, Message::system(text));
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use weir_sdk::{Content, ContentPart};

    use super::*;

    fn passage(text: &str) -> Passage {
        Passage {
            id: None,
            text: text.to_string(),
            distance: None,
        }
    }

    /// One token per word.
    fn words(text: &str) -> u32 {
        text.split_whitespace().count() as u32
    }

    fn roles(messages: &[Message]) -> Vec<&str> {
        messages.iter().map(|m| m.role.as_str()).collect()
    }

    #[test]
    fn the_question_is_the_last_user_text() {
        let messages = vec![
            Message::system("Be nice."),
            Message::user("first question"),
            Message::assistant("an answer"),
            Message::user("  refund policy?  "),
            Message::assistant("thinking"),
        ];
        assert_eq!(question(&messages).as_deref(), Some("refund policy?"));
        assert_eq!(question(&[Message::system("only rules")]), None);
        assert_eq!(question(&[Message::user("   ")]), None);
        let mut image = Message::user("");
        image.content = Some(Content::Parts(vec![ContentPart {
            kind: "image_url".to_string(),
            text: None,
            extra: r#"{"image_url":{"url":"https://x.example/a.png"}}"#.to_string(),
        }]));
        assert_eq!(question(&[image]), None);
    }

    #[test]
    fn passages_are_taken_in_order_while_they_fit() {
        let passages = [
            passage("one two three"),
            passage(" four five "),
            passage("six seven eight nine"),
            passage("ten"),
        ];
        assert_eq!(select(&passages, 5, words), ["one two three", "four five"]);
        // "ten" would fit after the third is refused, but a farther passage never jumps ahead.
        assert_eq!(select(&passages, 6, words), ["one two three", "four five"]);
        assert_eq!(select(&passages, 9, words).len(), 3);
        assert_eq!(select(&passages, 100, words).len(), 4);
        assert!(select(&passages, 2, words).is_empty());
        assert!(select(&[], 100, words).is_empty());
        assert!(select(&passages, 10, |_| u32::MAX).is_empty());
    }

    #[test]
    fn the_context_message_format() {
        assert_eq!(
            render(&["Refunds take 5 days.", "Shipping is free."]),
            "Use the following retrieved passages to answer.\n\n\
             [1] Refunds take 5 days.\n\n\
             [2] Shipping is free."
        );
    }

    #[test]
    fn inserted_right_before_the_last_user_message() {
        let mut messages = vec![
            Message::system("Be nice."),
            Message::user("first"),
            Message::assistant("reply"),
            Message::user("second"),
        ];
        assert!(insert(&mut messages, render(&["p"])));
        assert_eq!(
            roles(&messages),
            ["system", "user", "assistant", "system", "user"]
        );
        assert_eq!(messages[3].text(), render(&["p"]));
        assert_eq!(messages[4].text(), "second");

        let mut tool_turn = vec![
            Message::user("q"),
            Message::assistant("calling"),
            Message::new("tool", "result"),
        ];
        assert!(insert(&mut tool_turn, "ctx".to_string()));
        assert_eq!(roles(&tool_turn), ["system", "user", "assistant", "tool"]);

        let mut no_user = vec![Message::system("rules")];
        assert!(!insert(&mut no_user, "ctx".to_string()));
        assert_eq!(no_user.len(), 1);
    }
}
