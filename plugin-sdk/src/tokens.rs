//! Token counting with the model's real tokenizer, done by the host.
//!
//! ```no_run
//! let n = weir_sdk::tokens::count("gpt-4o", "How many tokens is this?");
//! # let _ = n;
//! ```

/// Tokens `text` takes for `model` (tiktoken; an unknown or empty model counts as `gpt-4o`).
pub fn count(model: &str, text: &str) -> u32 {
    crate::bindings::weir::stage::host::count_tokens(model, text)
}
