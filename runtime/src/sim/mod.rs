//! `weir sim`: an OpenAI-compatible LLM provider simulator, which also speaks Anthropic's,
//! Gemini's and Azure OpenAI's wire formats.
//!
//! It is the upstream of the demo and of the black-box tests, and a chaos tool for users: it
//! answers chat completions (JSON or SSE, text or — when the request offers tools — one tool
//! call) and embeddings deterministically from the prompt, and
//! injects latency, errors, rate limits (random, or a real per-minute limit), hangs, connection resets, cut or stalled streams,
//! stalled error bodies and absurd usage, with settings that can be changed while it runs
//! (`POST /sim/faults`). `/sim/stats` and `/sim/requests`
//! show what reached it. Of the rest of weir it uses only the wire translations
//! (`providers::anthropic`, `providers::gemini`, `openai::SseParser`) that its dialect
//! endpoints run the OpenAI path through.
//!
//! # Endpoints
//!
//! | endpoint | answer |
//! |---|---|
//! | `POST /v1/chat/completions` | `chat.completion`, or SSE chunks with `"stream": true` |
//! | `POST /v1/embeddings` | unit vectors from blake3 of the normalised text |
//! | `POST /v1/messages` | Anthropic Messages (key in `x-api-key`): message or Anthropic SSE |
//! | `POST /v1/messages/count_tokens` | Anthropic: `{"input_tokens": N}` |
//! | `POST /v1beta/models/{model}:generateContent` | Gemini (key in `x-goog-api-key`) |
//! | `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` | Gemini SSE |
//! | `POST /openai/deployments/{d}/chat/completions?api-version=V` | Azure OpenAI (key in `api-key`) |
//! | `POST /openai/deployments/{d}/embeddings?api-version=V` | Azure OpenAI embeddings |
//! | `GET /v1/models` | a short list |
//! | `GET /healthz` | 200 |
//! | `GET`/`POST /sim/faults` | the faults in force / replace them |
//! | `GET /sim/stats`, `POST /sim/reset` | counters / zero counters and ring |
//! | `GET /sim/requests?last=N` | the last N requests received, newest last |
//!
//! # Layout
//!
//! - `config`: `SimConfig`, how a simulator is started.
//! - `faults`: `Faults`, the chaos settings, and their validation.
//! - `minute`: the `rpm_limit` fault, a provider account's sliding 60-second window.
//! - `server`: `Sim`, binding, accepting and graceful shutdown.
//! - `conn`: one connection, and how a handler resets or closes it.
//! - `router`: method and path to handler.
//! - `api`: the shared path of model requests (count, read, record, faults, answer).
//! - `chaos`: rolling the fault dice and carrying out the outcome.
//! - `chat`, `stream`, `embeddings`, `models`: the OpenAI endpoints.
//! - `dialects`: the Anthropic, Gemini and Azure endpoints, translated to and from `api`.
//! - `reply`, `tokens`: the deterministic reply and the stand-in tokenizer.
//! - `control`: the `/sim/*` endpoints.
//! - `state`, `stats`, `ring`: shared state, counters and the request ring.
//! - `body`, `error`, `base64`: bodies and bounds, error shapes, base64.

mod api;
mod base64;
mod body;
mod chaos;
mod chat;
mod config;
mod conn;
mod control;
mod dialects;
mod embeddings;
mod error;
mod faults;
mod minute;
mod models;
mod reply;
mod ring;
mod router;
mod search;
mod server;
mod state;
mod stats;
mod stream;
mod tokens;

pub use body::MAX_BODY_BYTES;
pub use chaos::ERROR_MODEL_PREFIX;
pub use config::{DEFAULT_LISTEN, SimConfig};
pub use embeddings::{DEFAULT_DIMENSIONS, MAX_DIMENSIONS};
pub use error::SimError;
pub use faults::{DEFAULT_ERROR_STATUS, Faults, FaultsError, MAX_LATENCY_MS};
pub use minute::RpmStats;
pub use ring::RING_CAPACITY;
pub use server::{SHUTDOWN_GRACE, Sim};
pub use stats::{Billed, FaultCounts, StatsSnapshot};
