//! Upstream clients, one module per wire format: OpenAI-compatible (any provider that speaks
//! `/v1/chat/completions`: OpenAI, vLLM, Ollama, llama.cpp server, Groq, Together,
//! OpenRouter, `weir sim`), Azure OpenAI (the same bodies at its own URLs), Anthropic's
//! Messages API and Google's Gemini API (translated to and from OpenAI's shape).
//!
//! Owns: the pooled keep-alive HTTP client (HTTP and HTTPS), one upstream target's identity
//! ([`Upstream`]: base URL, dialect, signing headers, model override, timeout), one attempt
//! against it classified into an [`AttemptError`], and the translations between OpenAI's
//! chat-completions JSON and each other provider's (requests, answers, streams, errors).
//! Must not decide about retries or fallbacks: that is the router's job.

pub mod anthropic;
mod client;
#[cfg(test)]
mod client_tests;
mod dialect;
pub mod gemini;
pub mod translate;

pub(crate) use client::error_chain;
pub use client::{AttemptError, ProviderClient, Sent, Upstream, read_body, retry_after};
pub use dialect::Dialect;
