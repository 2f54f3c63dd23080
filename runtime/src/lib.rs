//! # weir
//!
//! An edge runtime for production AI pipelines: user-written stages compiled to WebAssembly
//! components run sandboxed around a host-side LLM step. See `ARCHITECTURE.md` in the shared
//! design docs for the request path.
//!
//! # Layout
//!
//! Dependencies point one way: `server` → [`app`] → [`pipeline`] → ([`stages`], [`llm`]) →
//! ([`router`], [`cache`], [`cost`]) → [`providers`]; the leaves at the end of the list may be
//! used by anyone.
//!
//! - [`server`]: HTTP only: the public and admin listeners, connection deadlines and caps, the
//!   client APIs (chat completions, Anthropic's Messages, OpenAI's Responses, embeddings),
//!   the `/v1/jobs` API, graceful shutdown.
//! - [`app`]: the composition root: `App`, the `Snapshot` swapped whole by a reload, assembly,
//!   reload triggers and the typed `app.chat` and `app.embeddings` entry points.
//! - [`openai`]: the OpenAI wire format (JSON and SSE ↔ the WIT types, error bodies), and the
//!   Responses API translated to and from a chat completion.
//! - [`pipeline`]: one request through the stages in onion order, short-circuits and the
//!   stage error policy.
//! - [`stages`]: loading a component, checking it against the world, `StagePre` per stage
//!   version, per-request instances and failure classification.
//! - [`host_api`]: the imports granted to guests (log, config, llm, fan-out, embed, cache,
//!   retry-response).
//! - [`service`]: the HTTP dependencies stages call through `wasi:http` or the `services`
//!   import (`[services.NAME]`): grants by name, the router's attempt loop, a response cache,
//!   a price per call.
//! - [`oci`]: stages as OCI artifacts: `oci://…@sha256:…` references, pulls verified against
//!   their digests into a blob store under `data_dir`, `weir push` in `wkg`'s layout.
//! - [`sandbox`]: the wasmtime `Engine` (pooling allocator, fuel, epochs, ticker), the
//!   per-call `Store` and its limits, where finished stores are dropped, the on-disk cache of
//!   precompiled stages.
//! - [`llm`]: the LLM step between the phases, and stages' `complete()` / `embed()`.
//! - [`router`]: a route's targets: fallback, retries with backoff and a retry budget,
//!   deadlines, breakers, concurrency and rate limits, and the record of every attempt.
//! - [`cache`]: the response cache (blake3 keys, memory and disk tiers, single-flight, the
//!   semantic index) and deterministic stages' output cache.
//! - [`cost`]: the price table, usage → money, per-key budgets with reservations and rate
//!   limits, the spend ledger, token counting, and the `weir cost project` maths.
//! - [`providers`]: the pooled upstream client, one attempt against a target, and each
//!   provider's wire format (OpenAI-compatible, Azure, Anthropic, Gemini) translated to and
//!   from OpenAI's.
//! - [`queue`]: background jobs: the durable store, workers, retries with backoff, dead
//!   jobs, backpressure and signed callbacks.
//! - [`state`]: state shared by a fleet of nodes on Redis (`[state] backend = "redis"`): the
//!   connection with its deadlines and breaker, and each shared feature's keys and scripts.
//! - [`sim`]: `weir sim`, an OpenAI-compatible provider simulator with fault injection.
//! - [`loadtest`]: `weir loadtest`, scenarios (traffic, fault timeline, SLO gates) run against
//!   weir and the sims, with an HTML and JSON report.
//! - [`cli`]: the `weir` command line.
//! - [`config`]: the TOML schema, validation with file:line errors, validated settings.
//! - [`wit`]: host bindings generated from `wit/stage.wit` (the contract), and the one way to
//!   read the text of content.
//! - [`telemetry`]: the tracing subscriber and OTLP export, W3C trace context, the metrics
//!   registry, the ring of recent requests.
//! - [`error`]: the `ClientFacing` trait through which any layer's error reaches the client.
//! - [`rate`]: per-minute request and token buckets (target limits and key limits).
//! - [`fsutil`]: file helpers for weir's state on disk: private modes, atomic writes, sweeping
//!   orphaned temporary files.
//! - [`clock`]: wall-clock readings: the Unix time now, in seconds and milliseconds.
//! - [`sync`]: poison-tolerant locking, the one way a `std::sync` lock is taken.
//! - [`tls`]: the process's rustls crypto provider (ring), which reqwest-based clients need.

// `deny`, not `forbid`: the one exception is `sandbox::artifacts::deserialize`, wasmtime's
// unsafe precompiled-artifact API in a small function that documents why it is sound.
#![deny(unsafe_code)]

pub mod app;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cost;
pub mod error;
pub mod fsutil;
pub mod host_api;
pub mod llm;
pub mod loadtest;
pub mod oci;
pub mod openai;
pub mod pipeline;
pub mod providers;
pub mod queue;
pub mod rate;
pub mod router;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod sim;
pub mod stages;
pub mod state;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod wit;
