//! The trimming itself: drop the oldest turns, whole, until the prompt fits `max_tokens`, or
//! refuse the request when the part that is never dropped is already over it. Pure: the
//! tokenizer is a parameter, so every decision is testable natively.

use weir_sdk::tokens::Tokens;
use weir_sdk::{ChatRequest, StageError};

use crate::settings::Settings;
use crate::turns::{self, Turns};

/// HTTP status of the refusal.
pub const STATUS: u16 = 400;
/// `error.code` of the refusal: OpenAI's code for a prompt over the context window.
pub const CODE: &str = "context_length_exceeded";

/// What trimming did to a request that fits (or now fits) the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trimmed {
    /// Turns dropped, oldest first; 0 when the request already fit.
    pub turns: usize,
    /// Messages in those turns.
    pub messages: usize,
    /// Prompt tokens of the request as it came in.
    pub tokens_before: u64,
    /// Prompt tokens of the request as it goes on (`tokens_before` when nothing was dropped).
    pub tokens_after: u64,
}

impl Trimmed {
    /// Whether the request was changed.
    pub fn dropped_anything(&self) -> bool {
        self.turns > 0
    }

    /// The log line for a request that was trimmed to `max_tokens`.
    pub fn summary(&self, max_tokens: u32) -> String {
        format!(
            "dropped the oldest {} ({} {}): {} -> {} prompt tokens (max_tokens {max_tokens})",
            plural(self.turns, "turn"),
            self.messages,
            if self.messages == 1 {
                "message"
            } else {
                "messages"
            },
            self.tokens_before,
            self.tokens_after
        )
    }
}

/// The part of the conversation that is never dropped is over the budget on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow {
    /// Prompt tokens of the leading system messages, the kept turns and the prompt overhead.
    pub protected_tokens: u64,
    /// How many latest turns that is (`keep_last_turns`, or fewer in a short conversation).
    pub kept_turns: usize,
    /// The budget (`max_tokens`).
    pub max_tokens: u32,
}

impl Overflow {
    /// The human-readable message returned as `error.message`; it gives the counts, never
    /// the user's text.
    pub fn message(&self) -> String {
        format!(
            "the part of the conversation that is always kept (the leading system messages \
             and the last {}) takes {} prompt tokens, over the budget of {} tokens",
            plural(self.kept_turns, "turn"),
            self.protected_tokens,
            self.max_tokens
        )
    }
}

impl From<Overflow> for StageError {
    fn from(overflow: Overflow) -> StageError {
        StageError::reject(STATUS, CODE, overflow.message())
    }
}

/// Fits `request` into `settings.max_tokens`, counting with `count` (the tokenizer of the
/// model `settings` says; the caller binds it). A request that fits is left untouched;
/// otherwise the oldest turns after the leading system messages are removed, whole, one by
/// one, never touching the last `keep_last_turns`, until it fits. When even those and the
/// leading system messages are over the budget, nothing is removed and the [`Overflow`] says
/// by how much.
pub fn trim(
    request: &mut ChatRequest,
    settings: &Settings,
    count: &dyn Fn(&str) -> u32,
) -> Result<Trimmed, Overflow> {
    let Turns { leading, turns } = turns::split(&request.messages);
    let mut tokens = Tokens::new(count);
    let costs: Vec<u64> = request
        .messages
        .iter()
        .map(|message| tokens.message(message))
        .collect();
    let always: u64 = tokens.overhead(&request.extra) + costs[..leading].iter().sum::<u64>();
    let turn_costs: Vec<u64> = turns
        .iter()
        .map(|turn| costs[turn.clone()].iter().sum())
        .collect();
    let before = always + turn_costs.iter().sum::<u64>();
    let budget = u64::from(settings.max_tokens);
    if before <= budget {
        return Ok(Trimmed {
            turns: 0,
            messages: 0,
            tokens_before: before,
            tokens_after: before,
        });
    }

    let droppable = turns.len().saturating_sub(settings.keep_last_turns);
    let protected = always + turn_costs[droppable..].iter().sum::<u64>();
    if protected > budget {
        return Err(Overflow {
            protected_tokens: protected,
            kept_turns: turns.len() - droppable,
            max_tokens: settings.max_tokens,
        });
    }

    // `protected` fits, so this stops at or before the first kept turn.
    let mut after = before;
    let mut dropped = 0;
    while after > budget {
        after -= turn_costs[dropped];
        dropped += 1;
    }
    let messages: usize = turns[..dropped].iter().map(|turn| turn.len()).sum();
    request.messages.drain(leading..leading + messages);
    Ok(Trimmed {
        turns: dropped,
        messages,
        tokens_before: before,
        tokens_after: after,
    })
}

/// `1 turn`, `3 turns`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use weir_sdk::{Content, ContentPart, Message};

    use super::*;

    /// One token per whitespace-separated word: a message `user: "a b c"` costs 3 + 1 + 3.
    fn words(text: &str) -> u32 {
        text.split_whitespace().count() as u32
    }

    fn settings(max_tokens: u32, keep_last_turns: usize) -> Settings {
        Settings {
            max_tokens,
            keep_last_turns,
            model: None,
        }
    }

    fn tool(call_id: &str, text: &str) -> Message {
        let mut message = Message::new("tool", text);
        message.extra = format!(r#"{{"tool_call_id":"{call_id}"}}"#);
        message
    }

    fn tool_call(call_id: &str) -> Message {
        let mut message = Message::assistant("");
        message.content = None;
        message.extra = format!(r#"{{"tool_calls":[{{"id":"{call_id}"}}]}}"#);
        message
    }

    /// A system prompt and `n` exchanges `user: "question i"`, `assistant: "answer i"`.
    /// Each exchange costs (3 + 1 + 2) * 2 = 12 words-tokens; the system prompt 3 + 1 + 3.
    fn chat(n: usize) -> ChatRequest {
        let mut messages = vec![Message::system("be very brief")];
        for i in 0..n {
            messages.push(Message::user(format!("question {i}")));
            messages.push(Message::assistant(format!("answer {i}")));
        }
        ChatRequest::new("gpt-x", messages)
    }

    /// Prompt tokens of `request` the way the host counts them, from scratch.
    fn prompt_tokens(request: &ChatRequest) -> u64 {
        Tokens::new(words).prompt(&request.messages, &request.extra)
    }

    /// Everything in `value`, for comparing WIT types (they do not implement `PartialEq`).
    fn snap<T: std::fmt::Debug + ?Sized>(value: &T) -> String {
        format!("{value:?}")
    }

    fn texts(request: &ChatRequest) -> Vec<String> {
        request.messages.iter().map(Message::text).collect()
    }

    fn run(request: &mut ChatRequest, max_tokens: u32, keep: usize) -> Result<Trimmed, Overflow> {
        trim(request, &settings(max_tokens, keep), &words)
    }

    #[test]
    fn a_request_that_fits_is_unchanged() {
        let original = chat(5);
        let total = prompt_tokens(&original);
        assert_eq!(total, 3 + 7 + 5 * 12);
        for budget in [total as u32, total as u32 + 1, u32::MAX] {
            let mut request = original.clone();
            let trimmed = run(&mut request, budget, 1);
            assert_eq!(
                trimmed,
                Ok(Trimmed {
                    turns: 0,
                    messages: 0,
                    tokens_before: total,
                    tokens_after: total,
                })
            );
            assert!(!trimmed.is_ok_and(|t| t.dropped_anything()));
            assert_eq!(snap(&request), snap(&original));
        }
    }

    #[test]
    fn drops_the_oldest_turns_first_and_only_as_many_as_needed() {
        let original = chat(5);
        let total = prompt_tokens(&original);
        // One token over: one turn goes.
        let mut request = original.clone();
        let trimmed = run(&mut request, total as u32 - 1, 2);
        assert_eq!(
            trimmed,
            Ok(Trimmed {
                turns: 1,
                messages: 2,
                tokens_before: total,
                tokens_after: total - 12,
            })
        );
        assert_eq!(snap(&request.messages[0]), snap(&original.messages[0]));
        assert_eq!(snap(&request.messages[1..]), snap(&original.messages[3..]));
        assert_eq!(prompt_tokens(&request), total - 12);

        // Thirteen over: two turns go.
        let mut request = original.clone();
        let trimmed = run(&mut request, total as u32 - 13, 2);
        assert_eq!(trimmed.map(|t| (t.turns, t.messages)), Ok((2, 4)));
        assert_eq!(
            texts(&request),
            [
                "be very brief",
                "question 2",
                "answer 2",
                "question 3",
                "answer 3",
                "question 4",
                "answer 4"
            ]
        );
    }

    #[test]
    fn the_result_is_the_longest_suffix_that_fits() {
        let original = chat(20);
        let total = prompt_tokens(&original) as u32;
        for budget in (3 + 7 + 12)..=total {
            let mut request = original.clone();
            let Ok(trimmed) = run(&mut request, budget, 1) else {
                panic!("budget {budget}: the system prompt and one turn fit");
            };
            let after = prompt_tokens(&request);
            assert!(after <= u64::from(budget), "budget {budget}: {after}");
            assert_eq!(trimmed.tokens_after, after);
            // One more turn back would not fit.
            if trimmed.dropped_anything() {
                assert!(after + 12 > u64::from(budget), "budget {budget}");
            }
            let kept = request.messages.len() - 1;
            assert_eq!(
                snap(&request.messages[1..]),
                snap(&original.messages[original.messages.len() - kept..])
            );
        }
    }

    #[test]
    fn keeps_every_leading_system_and_developer_message() {
        let mut request = chat(6);
        request
            .messages
            .insert(1, Message::new("developer", "use metric units"));
        request
            .messages
            .insert(2, Message::system("the user is Ada"));
        let mut trimmed = request.clone();
        // 3 priming + 7 + 7 + 8 always kept, 12 per turn: 61 leaves three turns of six.
        assert!(run(&mut trimmed, 61, 1).is_ok_and(|t| t.turns == 3));
        assert_eq!(snap(&trimmed.messages[..3]), snap(&request.messages[..3]));
        assert_eq!(trimmed.messages[3].text(), "question 3");
        assert_eq!(prompt_tokens(&trimmed), 61);
    }

    #[test]
    fn keeps_the_last_turns_intact_even_when_that_means_dropping_everything_else() {
        let original = chat(10);
        let mut request = original.clone();
        // System (10 with priming) + 4 turns (48) = 58: everything older has to go.
        let trimmed = run(&mut request, 58, 4);
        assert_eq!(
            trimmed,
            Ok(Trimmed {
                turns: 6,
                messages: 12,
                tokens_before: 130,
                tokens_after: 58,
            })
        );
        assert_eq!(request.messages.len(), 1 + 8);
        assert_eq!(snap(&request.messages[1..]), snap(&original.messages[13..]));
    }

    #[test]
    fn tool_calls_and_results_are_dropped_with_their_turn() {
        let messages = vec![
            Message::system("you can call tools"),
            Message::user("weather in paris"),
            tool_call("c1"),
            tool("c1", "sunny and warm today"),
            Message::assistant("it is sunny"),
            Message::user("and in rome"),
            tool_call("c2"),
            tool("c2", "rainy"),
            Message::assistant("it is rainy"),
            Message::user("thanks"),
        ];
        let original = ChatRequest::new("gpt-x", messages);
        let total = prompt_tokens(&original);
        let mut request = original.clone();
        let trimmed = run(&mut request, total as u32 - 1, 1);
        assert_eq!(trimmed.map(|t| (t.turns, t.messages)), Ok((1, 4)));
        assert_eq!(snap(&request.messages[0]), snap(&original.messages[0]));
        assert_eq!(snap(&request.messages[1..]), snap(&original.messages[5..]));
        // No tool message is left without the assistant message that called it.
        for (i, message) in request.messages.iter().enumerate() {
            if message.role == "tool" {
                assert!(
                    request.messages[..i]
                        .iter()
                        .any(|m| m.extra.contains("tool_calls")),
                    "orphaned tool result at {i}"
                );
            }
        }
    }

    #[test]
    fn messages_before_the_first_user_message_go_as_one_turn() {
        let original = ChatRequest::new(
            "gpt-x",
            vec![
                Message::system("rules"),
                Message::assistant("hello how can i help"),
                Message::user("question one"),
                Message::assistant("answer one"),
                Message::user("question two"),
            ],
        );
        let total = prompt_tokens(&original);
        let mut request = original.clone();
        assert_eq!(
            run(&mut request, total as u32 - 1, 1).map(|t| (t.turns, t.messages)),
            Ok((1, 1))
        );
        assert_eq!(
            texts(&request),
            ["rules", "question one", "answer one", "question two"]
        );
    }

    #[test]
    fn refuses_when_the_protected_part_is_over_the_budget() {
        let original = chat(10);
        let mut request = original.clone();
        let overflow = run(&mut request, 57, 4);
        assert_eq!(
            overflow,
            Err(Overflow {
                protected_tokens: 58,
                kept_turns: 4,
                max_tokens: 57,
            })
        );
        assert_eq!(
            snap(&request),
            snap(&original),
            "nothing is removed on refusal"
        );
        let Err(overflow) = overflow else {
            unreachable!()
        };
        assert_eq!(
            overflow.message(),
            "the part of the conversation that is always kept (the leading system messages \
             and the last 4 turns) takes 58 prompt tokens, over the budget of 57 tokens"
        );
        match StageError::from(overflow) {
            StageError::Reject(rejection) => {
                assert_eq!(rejection.status, 400);
                assert_eq!(rejection.code, "context_length_exceeded");
                assert_eq!(rejection.message, overflow.message());
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_short_conversation_protects_only_the_turns_it_has() {
        // Two turns, keep 4: both are protected, so an oversized request is refused.
        let mut request = chat(2);
        let overflow = run(&mut request, 20, 4);
        assert_eq!(
            overflow.map_err(|o| (o.kept_turns, o.protected_tokens)),
            Err((2, 34))
        );
        assert!(
            overflow
                .err()
                .is_some_and(|o| o.message().contains("the last 2 turns) takes 34"))
        );
        // A system prompt alone over the budget.
        let mut request = ChatRequest::new("gpt-x", vec![Message::system("one two three four")]);
        assert_eq!(
            run(&mut request, 5, 1),
            Err(Overflow {
                protected_tokens: 11,
                kept_turns: 0,
                max_tokens: 5,
            })
        );
    }

    #[test]
    fn request_extra_counts_towards_the_protected_part() {
        let mut request = chat(3);
        request.extra = r#"{"tools": [ "a", "b", "c" ]}"#.to_string();
        // 3 priming + 6 extra words + 7 system + 12 per turn.
        assert_eq!(prompt_tokens(&request), 3 + 6 + 7 + 36);
        let mut trimmed = request.clone();
        assert_eq!(
            run(&mut trimmed, 3 + 6 + 7 + 12, 1).map(|t| t.tokens_after),
            Ok(28)
        );
        assert_eq!(trimmed.messages.len(), 3);
        assert_eq!(trimmed.extra, request.extra);
        assert!(run(&mut request.clone(), 27, 1).is_err());
    }

    #[test]
    fn parts_and_names_are_counted_and_kept_as_they_are() {
        let mut picture = Message::user("");
        picture.content = Some(Content::Parts(vec![
            ContentPart {
                kind: "text".to_string(),
                text: Some("what is in this picture".to_string()),
                extra: "{}".to_string(),
            },
            ContentPart {
                kind: "image_url".to_string(),
                text: None,
                extra: r#"{"image_url":{"url":"https://x.example/a.png"}}"#.to_string(),
            },
        ]));
        picture.name = Some("ada".to_string());
        let mut request = ChatRequest::new(
            "gpt-x",
            vec![
                Message::system("s"),
                picture,
                Message::assistant("a cat"),
                Message::user("and now"),
            ],
        );
        // 3 + (3+1+1) + (3+1+5 + 1+1) + (3+1+2) + (3+1+2) = 31
        assert_eq!(prompt_tokens(&request), 31);
        let original = request.clone();
        assert_eq!(run(&mut request, 31, 1).map(|t| t.turns), Ok(0));
        assert_eq!(snap(&request), snap(&original));
        assert_eq!(
            run(&mut request, 30, 1).map(|t| (t.turns, t.tokens_after)),
            Ok((1, 31 - 17))
        );
        assert_eq!(texts(&request), ["s", "and now"]);
    }

    #[test]
    fn a_conversation_without_system_messages_or_user_messages() {
        let original = ChatRequest::new(
            "gpt-x",
            (0..6)
                .map(|i| Message::user(format!("message number {i}")))
                .collect(),
        );
        let mut request = original.clone();
        // Each message is 3 + 1 + 3 = 7; 3 priming; keep 2 → 17 protected.
        assert_eq!(run(&mut request, 30, 2).map(|t| t.turns), Ok(3));
        assert_eq!(snap(&request.messages[..]), snap(&original.messages[3..]));

        let mut empty = ChatRequest::new("gpt-x", Vec::new());
        assert_eq!(run(&mut empty, 3, 1).map(|t| t.tokens_after), Ok(3));
        assert!(run(&mut empty, 2, 1).is_err());
    }

    #[test]
    fn large_counts_do_not_overflow() {
        let huge = |_: &str| u32::MAX;
        let mut request = chat(3);
        let original = request.clone();
        let result = trim(&mut request, &settings(u32::MAX, 1), &huge);
        assert!(matches!(result, Err(Overflow { kept_turns: 1, .. })));
        assert_eq!(snap(&request), snap(&original));
    }

    #[test]
    fn the_log_line_says_what_went() {
        let trimmed = Trimmed {
            turns: 3,
            messages: 7,
            tokens_before: 5200,
            tokens_after: 3900,
        };
        assert_eq!(
            trimmed.summary(4000),
            "dropped the oldest 3 turns (7 messages): 5200 -> 3900 prompt tokens \
             (max_tokens 4000)"
        );
        let one = Trimmed {
            turns: 1,
            messages: 1,
            ..trimmed
        };
        assert_eq!(
            one.summary(4000),
            "dropped the oldest 1 turn (1 message): 5200 -> 3900 prompt tokens (max_tokens 4000)"
        );
    }
}
