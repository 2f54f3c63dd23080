//! # weir
//!
//! An edge runtime for production AI pipelines: user-written stages compiled to WebAssembly
//! components run sandboxed around a host-side LLM step. See `ARCHITECTURE.md` in the shared
//! design docs for the request path.
//!
//! # Layout
//!
//! - [`config`]: the TOML schema, validation with file:line errors, validated settings.
//! - [`wit`]: host bindings generated from `wit/stage.wit` (the contract).
//! - [`sandbox`]: the wasmtime `Engine` (pooling allocator, fuel, epochs, ticker), the
//!   per-call `Store` and its limits, the on-disk cache of precompiled stages.
//! - [`stages`]: loading a component, checking it against the world, `StagePre` per stage
//!   version, per-request instances and failure classification.
//! - [`host_api`]: the imports granted to guests (log, config, llm, embed, cache).
//! - [`pipeline`]: one request through the stages in onion order, short-circuits and the
//!   stage error policy.
//! - [`openai`]: the OpenAI wire format (JSON and SSE ↔ the WIT types, error bodies).
//! - [`llm`]: the LLM step between the phases, and stages' `complete()` / `embed()`.
//! - [`cache`]: the exact response cache (blake3 keys, bounded memory tier, single-flight).
//! - [`router`]: a route's target chain: fallback and the record of every attempt.
//! - [`providers`]: the pooled OpenAI-compatible upstream client.
//! - [`queue`]: background jobs: the durable store, workers, retries with backoff, dead
//!   jobs, backpressure and signed callbacks.
//! - [`server`]: the public and admin HTTP listeners, graceful shutdown.
//! - [`sim`]: `weir sim`, an OpenAI-compatible provider simulator with fault injection.
//! - [`cli`]: the `weir` command line.

// `deny`, not `forbid`: the one exception is `sandbox::artifacts::deserialize`, wasmtime's
// unsafe precompiled-artifact API in a small function that documents why it is sound.
#![deny(unsafe_code)]

pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cost;
pub mod error;
pub mod fsutil;
pub mod host_api;
pub mod llm;
pub mod openai;
pub mod pipeline;
pub mod providers;
pub mod queue;
pub mod rate;
pub mod router;
pub mod sandbox;
pub mod server;
pub mod sim;
pub mod stages;
pub mod sync;
pub mod telemetry;
pub mod wit;
