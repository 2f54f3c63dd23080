//! The simulator's stand-in for a tokenizer: one rule used for usage counts, stream chunks and
//! `max_tokens`, so the three always agree.
//!
//! A token is a run of at most `MAX_TOKEN_CHARS` characters that never crosses the start of a
//! word (leading whitespace belongs to the word after it, as in GPT tokenizers). This gives
//! about one token per four characters of English, which is what providers bill, and it makes
//! "number of streamed content chunks == `usage.completion_tokens`" an exact invariant.

/// Longest token, in characters. Real BPE tokens average about four characters of English.
pub const MAX_TOKEN_CHARS: usize = 4;

/// Splits `text` into tokens; concatenating them gives back `text`.
pub fn split(text: &str) -> Vec<&str> {
    let mut tokens = Vec::with_capacity(text.len() / MAX_TOKEN_CHARS + 1);
    let mut start = 0;
    let mut chars_in_token = 0;
    let mut prev_is_space = false;
    for (i, c) in text.char_indices() {
        let space_after_word = c.is_whitespace() && !prev_is_space;
        if chars_in_token > 0 && (chars_in_token == MAX_TOKEN_CHARS || space_after_word) {
            tokens.push(&text[start..i]);
            start = i;
            chars_in_token = 0;
        }
        chars_in_token += 1;
        prev_is_space = c.is_whitespace();
    }
    if start < text.len() {
        tokens.push(&text[start..]);
    }
    tokens
}

/// Number of tokens in `text` (0 for the empty string).
pub fn count(text: &str) -> u64 {
    split(text).len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_words_and_four_chars() {
        assert_eq!(
            split("sim reply to: hello"),
            ["sim", " rep", "ly", " to:", " hel", "lo"]
        );
    }

    #[test]
    fn concatenation_gives_back_the_text() {
        for text in [
            "",
            " a",
            "  leading",
            "multi\n\nline  text ",
            "héllo wörld ünïcode",
            "x",
        ] {
            assert_eq!(split(text).concat(), text);
        }
    }

    #[test]
    fn no_token_is_longer_than_the_bound() {
        let text = "supercalifragilistic expialidocious and    spaced";
        assert!(
            split(text)
                .iter()
                .all(|t| t.chars().count() <= MAX_TOKEN_CHARS)
        );
    }

    #[test]
    fn about_four_chars_per_token() {
        let text = "The quick brown fox jumps over the lazy dog again and again.";
        let n = count(text) as usize;
        let chars = text.chars().count();
        assert!(
            n >= chars / 4 && n <= chars / 2,
            "{n} tokens for {chars} chars"
        );
    }

    #[test]
    fn empty_has_no_tokens() {
        assert_eq!(count(""), 0);
    }
}
