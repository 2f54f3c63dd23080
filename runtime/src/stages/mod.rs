//! Stage components: loading a file, checking it against the `weir:stage` world, the
//! pre-instantiated `StagePre` per stage version, and per-request instances.
//!
//! Owns: [`LoadedStage`] (one compiled, checked, described stage version), [`StageInstance`]
//! (one instance serving one request) and [`StageFailure`] classification. Must not know about
//! routes or HTTP; the pipeline decides what a failure means for the request.

#[cfg(test)]
mod deadline_tests;
mod failure;
mod instance;
mod loaded;

pub use failure::{FailureKind, StageFailure};
pub use instance::{RequestPhase, StageInstance};
pub use loaded::{Contract, LoadError, LoadedStage, describe_line};
