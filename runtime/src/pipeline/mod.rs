//! One request through the stages: `on-request` in pipeline order, then (after the LLM step,
//! which the caller runs) `on-response` in reverse order on the same instances — the onion.
//!
//! Owns: [`Pipeline`] (a route's stages, fixed for a request by the caller's `Arc` snapshot),
//! the request/response phase drivers, short-circuits, the stage error policy, the bound on
//! what a stage may return (`sandbox.stage_output_max_bytes`, `size`) and the per-stage trace
//! of what ran. Must not know about HTTP or the LLM step itself: the caller
//! runs [`Pipeline::start`] and [`Forwarded::on_request`], calls the LLM step with
//! [`Forwarded::request`] unless a stage answered, then finishes with
//! [`Forwarded::on_response`].

mod error;
mod run;
mod size;

use std::sync::Arc;

pub use error::PipelineError;
pub use run::{Forwarded, Phase, Responded, StageRun};

use crate::cache::StageOutputCache;
use crate::config::CallLimits;
use crate::host_api::{HostServices, StageIdentity};
use crate::sandbox::{Reaper, Sandbox};
use crate::stages::LoadedStage;

/// What a stage failure (its `fail` or a trap) does to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Answer 500 with the failure kind. The default: a guard that crashed must not let
    /// everything through.
    #[default]
    Fail,
    /// Continue as if the stage were not there (its response phase is skipped too).
    Skip,
    /// As `Skip`, and the response says so (`x-weir-degraded`, [`Forwarded::degraded`]).
    Degrade,
}

/// One stage in a pipeline.
pub struct PipelineStage {
    /// The loaded component version.
    pub stage: Arc<LoadedStage>,
    /// Name, label and config as the guest sees them.
    pub identity: Arc<StageIdentity>,
    /// The failure policy.
    pub on_error: OnError,
    /// Fuel, deadline and memory cap per call.
    pub limits: CallLimits,
}

/// A route's stages in order.
pub struct Pipeline {
    /// The route (model alias) the pipeline serves.
    pub route: Arc<str>,
    /// The stages, in request order.
    pub stages: Vec<PipelineStage>,
    /// How many times a response-phase stage may send the answer back to the model (the
    /// route's `max_output_retries`).
    pub max_output_retries: u32,
}

/// What the pipeline needs from the process: the sandbox, the host services, the reaper.
#[derive(Clone)]
pub struct StageEnv {
    /// The engine and linker.
    pub sandbox: Arc<Sandbox>,
    /// The services behind the host API.
    pub services: Arc<HostServices>,
    /// Drops finished instances: in a task of their own in production
    /// ([`Reaper::deferred`]), inline, or on the reaper thread.
    pub reaper: Reaper,
    /// Deterministic stages' `on-request` outcomes by input.
    pub outputs: StageOutputCache,
}
