//! Upstream clients. OpenAI-compatible first: any provider that speaks `/v1/chat/completions`
//! (OpenAI, vLLM, Ollama, llama.cpp server, Groq, Together, OpenRouter, `weir sim`).
//!
//! Owns: the pooled keep-alive HTTP client (HTTP and HTTPS), one upstream target's identity
//! ([`Upstream`]: base URL, API key, headers, model override, timeout) and one attempt against
//! it, classified into an [`AttemptError`]. Must not decide about retries or fallbacks: that is
//! the router's job.

mod client;
#[cfg(test)]
mod client_tests;

pub(crate) use client::error_chain;
pub use client::{AttemptError, ProviderClient, Upstream, read_body, retry_after};
