//! Token counts with the model's real tokenizer (tiktoken-rs), for reservations, for answers
//! whose provider reported no usage, and for stages (`count-tokens`, bounded and off the
//! async threads: [`count_for_stage`]).
//!
//! An encoding's table loads once per process, on first need: o200k takes about 40 MB of
//! memory and a few hundred ms to load, cl100k about 17 MB, so a node whose config counts no
//! tokens on its request path (no key with a budget or TPM, no target with a TPM limit)
//! loads none at start. The config's routine counts are warmed before it serves
//! ([`warm_up`]); a count on a path that cannot wait (an estimate for an answer without
//! usage, settled in a `Drop`) whose table is not loaded yet starts loading it on its own
//! thread and [`estimate`]s meanwhile. A model tiktoken does not know counts as `gpt-4o`
//! (o200k_base): an estimate, but a far better one than characters / 4.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};
use tokio::sync::Semaphore;
use weir_tokens::{PromptMessage, Tokens};

use crate::wit::{ChatRequest, Content, Message};

/// The encodings weir counts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    O200k,
    Cl100k,
    P50k,
    R50k,
}

/// Each encoding's table, once loaded.
static TABLES: [OnceLock<&'static CoreBPE>; 4] = [const { OnceLock::new() }; 4];
/// Each encoding's table is being loaded on a thread of its own.
static LOADING: [AtomicBool; 4] = [const { AtomicBool::new(false) }; 4];

impl Encoding {
    /// The encoding of `model` (o200k for a model tiktoken does not know).
    fn of(model: &str) -> Encoding {
        match get_tokenizer(model).unwrap_or(Tokenizer::O200kBase) {
            Tokenizer::Cl100kBase => Encoding::Cl100k,
            Tokenizer::P50kBase | Tokenizer::P50kEdit => Encoding::P50k,
            Tokenizer::R50kBase | Tokenizer::Gpt2 => Encoding::R50k,
            _ => Encoding::O200k,
        }
    }

    /// The table, loaded on this thread if it is not yet.
    fn load(self) -> &'static CoreBPE {
        TABLES[self as usize].get_or_init(|| match self {
            Encoding::O200k => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100k => tiktoken_rs::cl100k_base_singleton(),
            Encoding::P50k => tiktoken_rs::p50k_base_singleton(),
            Encoding::R50k => tiktoken_rs::r50k_base_singleton(),
        })
    }

    /// The table if it is loaded; otherwise starts loading it on a thread of its own (once)
    /// and answers `None`.
    fn loaded(self) -> Option<&'static CoreBPE> {
        if let Some(table) = TABLES[self as usize].get() {
            return Some(table);
        }
        if !LOADING[self as usize].swap(true, Ordering::AcqRel) {
            let spawned = std::thread::Builder::new()
                .name("weir-tokenizer".to_string())
                .spawn(move || {
                    self.load();
                });
            if spawned.is_err() {
                LOADING[self as usize].store(false, Ordering::Release);
            }
        }
        None
    }
}

/// Loads the tables `models` count with, on this (blocking) thread: before a config whose
/// request path counts tokens serves, so no request waits for a load.
pub fn warm_up<'a>(models: impl IntoIterator<Item = &'a str>) {
    for model in models {
        Encoding::of(model).load();
    }
}

/// Waits until `model`'s table is loaded, loading it on a blocking thread (not this async
/// one) when it is not.
pub async fn ready(model: &str) {
    let encoding = Encoding::of(model);
    if TABLES[encoding as usize].get().is_none() {
        let _ = tokio::task::spawn_blocking(move || encoding.load()).await;
    }
}

/// Tokens `text` takes with `bpe`; [`estimate`] when tiktoken cannot split it. Its regex
/// gives up on some long inputs (a run of 1 MiB of spaces exhausts fancy-regex's backtracking
/// stack), and `encode_ordinary` would panic there; `encode` with no special tokens allowed
/// splits the same way and reports the error instead.
fn count_with(bpe: &CoreBPE, text: &str) -> u32 {
    if text.is_empty() {
        return 0;
    }
    match bpe.encode(text, &HashSet::new()) {
        Ok((tokens, _)) => u32::try_from(tokens.len()).unwrap_or(u32::MAX),
        Err(_) => estimate(text.len()),
    }
}

/// Tokens `text` takes for `model`; [`estimate`]d while its table is still loading.
pub fn count_text(model: &str, text: &str) -> u32 {
    match Encoding::of(model).loaded() {
        Some(bpe) => count_with(bpe, text),
        None => estimate(text.len()),
    }
}

/// Longest text a stage's `count-tokens` counts exactly, in bytes. Longer text is not
/// tokenized at all: the answer is [`estimate`] (bytes / 4, rounded up). Tokenizing is not
/// linear in the worst case: one 256 KiB word, or run of spaces, took 0.15-0.35 s of one core
/// (measured, debug build; 1 MiB of one word took 0.8-1.5 s), while 256 KiB of prose takes
/// about 10 ms. A guest may pass up to its whole memory cap.
pub const STAGE_COUNT_MAX_BYTES: usize = 256 << 10;

/// Text up to this many bytes is counted on the calling (async) thread: at most a few tenths
/// of a millisecond (measured: 0.2-0.3 ms for 1 KiB of one word or of spaces), about the cost
/// of handing it to a blocking thread and back.
const INLINE_COUNT_MAX_BYTES: usize = 1 << 10;

/// The token estimate for text of `bytes` bytes that is not tokenized: a quarter of its bytes,
/// rounded up (English text averages about four bytes a token; text in other scripts takes
/// more tokens a byte).
pub fn estimate(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(4)).unwrap_or(u32::MAX)
}

/// Blocking threads tokenizing for stages at once: half the cores, at least one, so stages
/// counting long texts never take every core from the async workers.
fn stage_counters() -> &'static Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Arc::new(Semaphore::new((cores / 2).max(1)))
    })
}

/// Tokens `text` takes for `model`, for a stage's `count-tokens`: exact up to
/// [`STAGE_COUNT_MAX_BYTES`] (beyond it, [`estimate`]), counted on a blocking thread (one of a
/// few, see [`stage_counters`]) unless it is short, so the async workers stay free. The caller's
/// deadline still applies: dropping the future abandons the wait (a count already started
/// finishes on its thread, bounded by the input cap).
pub async fn count_for_stage(model: String, text: String) -> u32 {
    if text.len() > STAGE_COUNT_MAX_BYTES {
        return estimate(text.len());
    }
    ready(&model).await;
    if text.len() <= INLINE_COUNT_MAX_BYTES {
        return count_text(&model, &text);
    }
    let Ok(permit) = stage_counters().clone().acquire_owned().await else {
        return estimate(text.len());
    };
    let bytes = text.len();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        count_text(&model, &text)
    })
    .await
    .unwrap_or_else(|_| estimate(bytes))
}

/// Prompt tokens of `request` for `model` ([`estimate`]d while its table is still loading):
/// every message's role, name and text, plus the
/// per-message and reply-priming overheads. Tools and other `extra` fields count as their
/// JSON text. The formula is `weir_tokens`', the one stages count with too (`context-trim`
/// trims to this count).
///
/// Only the first [`STAGE_COUNT_MAX_BYTES`] of the prompt's text are tokenized; the rest is
/// [`estimate`]d. The count runs on the calling thread (a reservation, a cut attempt's
/// estimate), and a client chooses the text: tokenizing megabytes of one word would
/// hold that thread for seconds.
pub fn count_prompt(model: &str, request: &ChatRequest) -> u32 {
    let bpe = Encoding::of(model).loaded();
    let exact_left = std::cell::Cell::new(if bpe.is_some() {
        STAGE_COUNT_MAX_BYTES
    } else {
        0
    });
    let total = Tokens::new(
        |text: &str| match exact_left.get().checked_sub(text.len()) {
            Some(left) => {
                exact_left.set(left);
                bpe.map_or_else(|| estimate(text.len()), |bpe| count_with(bpe, text))
            }
            None => {
                exact_left.set(0);
                estimate(text.len())
            }
        },
    )
    .prompt(&request.messages, &request.extra);
    u32::try_from(total).unwrap_or(u32::MAX)
}

impl PromptMessage for Message {
    fn role(&self) -> &str {
        &self.role
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn texts(&self) -> impl Iterator<Item = &str> {
        self.content.iter().flat_map(Content::texts)
    }

    fn extra(&self) -> &str {
        &self.extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::ContentPart;

    #[test]
    fn a_prompt_beyond_the_exact_budget_is_estimated_not_tokenized() {
        loaded();
        let word = "x".repeat(STAGE_COUNT_MAX_BYTES);
        let request = ChatRequest {
            messages: vec![message("user", "hello world"), message("user", &word)],
            ..ChatRequest::hi("gpt-4o")
        };
        let small = ChatRequest {
            messages: vec![message("user", "hello world")],
            ..ChatRequest::hi("gpt-4o")
        };
        // The second message no longer fits the budget: it counts as bytes / 4.
        let extra = count_prompt("gpt-4o", &request) - count_prompt("gpt-4o", &small);
        let per_message = extra - estimate(word.len());
        assert!(per_message <= 8, "{extra} for {} bytes", word.len());
    }

    fn message(role: &str, text: &str) -> Message {
        Message::text(role, text)
    }

    /// The tables these tests count exactly with.
    fn loaded() {
        warm_up(["gpt-4o", "gpt-4"]);
    }

    #[test]
    fn a_table_not_loaded_is_loaded_off_the_counting_thread_and_estimated_meanwhile() {
        // p50k (text-davinci-003) is the one table no other test loads.
        let text = "hello world hello world hello world";
        let first = count_text("text-davinci-003", text);
        // Up to a minute on a loaded machine.
        let mut waits = 0;
        while count_text("text-davinci-003", text) == estimate(text.len()) {
            waits += 1;
            assert!(waits < 6_000, "never loaded");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(first == estimate(text.len()) || first == 6, "{first}");
        assert_eq!(count_text("text-davinci-003", text), 6);
    }

    #[test]
    fn counts_with_the_models_tokenizer() {
        loaded();
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
    fn text_tiktoken_cannot_split_is_estimated_not_a_panic() {
        loaded();
        // fancy-regex gives up on this run of spaces; `encode_ordinary` panics on it.
        let spaces = " ".repeat(1 << 20);
        assert_eq!(count_text("gpt-4o", &spaces), estimate(1 << 20));
        assert_eq!(estimate(5), 2);
        assert_eq!(estimate(usize::MAX), u32::MAX);
    }

    #[tokio::test]
    async fn a_stage_counts_exactly_up_to_the_cap_and_estimates_beyond() {
        loaded();
        let short = "hello world".to_string();
        assert_eq!(count_for_stage("gpt-4o".into(), short).await, 2);
        // Off the async thread, still exact.
        let words = "lorem ipsum dolor sit amet, ".repeat(STAGE_COUNT_MAX_BYTES / 28);
        assert!(words.len() > INLINE_COUNT_MAX_BYTES && words.len() <= STAGE_COUNT_MAX_BYTES);
        let exact = count_text("gpt-4o", &words);
        assert_eq!(count_for_stage("gpt-4o".into(), words).await, exact);
        // Over the cap: bytes / 4, and at once (48 MiB of one word would take minutes).
        let huge = "x".repeat(48 << 20);
        let started = tokio::time::Instant::now();
        assert_eq!(count_for_stage("gpt-4o".into(), huge).await, 12 << 20);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_prompt_counts_messages_and_overheads() {
        loaded();
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

    #[test]
    fn names_text_parts_and_extras_count() {
        loaded();
        let part = |kind: &str, text: Option<&str>| ContentPart {
            kind: kind.into(),
            text: text.map(Into::into),
            extra: "{}".into(),
        };
        let mut named = message("user", "");
        named.name = Some("ada".into());
        named.content = Some(Content::Parts(vec![
            part("text", Some("look at")),
            part("image_url", None),
            part("text", Some("this picture")),
        ]));
        let mut call = message("assistant", "");
        call.content = None;
        call.extra = r#"{"tool_calls":[{"id":"c1"}]}"#.into();
        let request = ChatRequest {
            model: "gpt-4o".into(),
            messages: vec![named, call],
            temperature: None,
            top_p: None,
            max_tokens: None,
            stream: false,
            user: None,
            metadata: Vec::new(),
            extra: r#"{"tools":[]}"#.into(),
        };
        let c = |text: &str| count_text("gpt-4o", text);
        // Each text part counts on its own; the image part has no text.
        let expected = (3 + c(r#"{"tools":[]}"#))
            + (3 + c("user") + (1 + c("ada")) + c("look at") + c("this picture"))
            + (3 + c("assistant") + c(r#"{"tool_calls":[{"id":"c1"}]}"#));
        assert_eq!(count_prompt("gpt-4o", &request), expected);
    }
}
