//! The LLM step: what happens to a request between the request phase and the response
//! phase.
//!
//! Owns, for one [`Call`] on a route: the exact-cache lookup → the semantic lookup →
//! single-flight for identical misses → the budget reservation → the router → the
//! settlement of the call's real cost → the cache fill. A streamed answer
//! ([`AnswerStream`]) carries its reservation and its fill and settles both itself, on its
//! usage chunk, at `[DONE]`, on a failure or when dropped, so whoever reads it only reads.
//! Stages' `complete()` / `embed()` go through the same step ([`StageLlm`]), and every call
//! (the semantic tier's embedding call too) counts against the request's limit on LLM calls. Failures are
//! one type, [`StepError`], which says how a client is told (`ClientFacing`).
//!
//! Must not touch: HTTP (no status is chosen here except through [`StepError`]), the
//! targets' live state (the router's), how the cache stores (the cache's), budgets' rules
//! (the cost module's).
//!
//! # Layout
//!
//! - `call`: [`Call`], the one value the step is asked to run.
//! - `step`: [`LlmStep`] and its routes, [`LlmStep::complete`] with its `weir.llm` span, and
//!   the metered router call every path ends in.
//! - `cached`: exact and semantic lookups, single-flight, the cache fill.
//! - `semantic`: the semantic probe (embedding of the last user message).
//! - `stream`: [`AnswerStream`], the self-settling streamed answer.
//! - `costing`: reserving, pricing and settling calls ([`Costing`]).
//! - `charge`: the charge of one call in flight, settled exactly once, also when the call is
//!   dropped midway.
//! - `embedding`: embeddings calls (a stage's `embed()`, the semantic probe), metered like
//!   completions.
//! - `stage`: [`StageLlm`], stages' `complete()` / `embed()`.
//! - `error`: [`StepError`].

mod cached;
mod call;
mod charge;
#[cfg(test)]
mod charge_tests;
mod costing;
mod embedding;
mod error;
mod semantic;
mod stage;
mod step;
mod stream;

pub use call::Call;
pub use costing::{CallSite, Costing, estimate_usage};
pub use embedding::{ClientEmbeddings, EmbeddingsReply};
pub use error::StepError;
pub use stage::{MAX_EMBED_INPUT_BYTES, MAX_EMBED_INPUTS, StageLlm};
pub use step::{Answer, LlmStep, RouteStep, StepReply};
pub use stream::{AnswerStream, StreamEvent};

use cached::Fill;
