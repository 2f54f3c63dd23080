//! How a stage call failed, kept precise: the kind decides the client's error code and the
//! metrics label, so a fuel exhaustion is never reported as a generic trap.

use std::fmt;

use wasmtime::Trap;

use crate::sandbox::StageState;

/// How wasmtime's error begins when a store's count of instances, memories or tables would
/// pass the limiter's (`wasmtime::StoreOpaque::bump_resource_counts`); pinned by the
/// black-box test of a component with 16 one-page memories
/// (`guest_bounds::many_memories_are_capped_as_one_instance_under_on_demand`).
const RESOURCE_LIMIT_EXCEEDED: &str = "resource limit exceeded";

/// The kind of a stage failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The call used up its fuel budget.
    FuelExhausted,
    /// The call ran past its wall-clock deadline.
    DeadlineExceeded,
    /// The guest asked for more memory than its cap.
    MemoryLimit,
    /// Any other trap: panic, stack overflow, `unreachable`, a bad host call.
    Trap,
    /// The stage returned `fail(message)`.
    Failed,
    /// The stage returned `reject(...)` (kept here so policies and metrics see one type).
    Rejected,
    /// No instance slot was free (the pool is exhausted): shed, not a stage fault.
    PoolExhausted,
    /// The stage returned more than `sandbox.stage_output_max_bytes` (a rewritten request, an
    /// answer, a response, a rejection or a failure message).
    OutputTooLarge,
}

impl FailureKind {
    /// The machine-readable code (`error.code`, metric label).
    pub fn code(self) -> &'static str {
        match self {
            FailureKind::FuelExhausted => "fuel_exhausted",
            FailureKind::DeadlineExceeded => "deadline_exceeded",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::Trap => "trap",
            FailureKind::Failed => "stage_failed",
            FailureKind::Rejected => "rejected",
            FailureKind::PoolExhausted => "pool_exhausted",
            FailureKind::OutputTooLarge => "stage_output_too_large",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A stage call that did not produce a result.
#[derive(Clone, Debug, thiserror::Error)]
#[error("stage {stage}: {kind}: {detail}")]
pub struct StageFailure {
    /// The stage label (`name@abcd1234`).
    pub stage: String,
    /// What went wrong.
    pub kind: FailureKind,
    /// Details for logs (the trap or the stage's message).
    pub detail: String,
}

impl StageFailure {
    /// Classifies an error from a call into the guest. The limiter's record wins over the
    /// trap code: a guest refused memory usually aborts with `unreachable`. A component with
    /// more core instances, memories or tables than the limiter allows fails to instantiate
    /// with wasmtime's `resource limit exceeded`: a memory limit too.
    pub fn from_call(stage: &str, state: &StageState, err: &wasmtime::Error) -> StageFailure {
        let over_count = err
            .chain()
            .any(|cause| cause.to_string().starts_with(RESOURCE_LIMIT_EXCEEDED));
        let kind = if state.limiter.refused() || over_count {
            FailureKind::MemoryLimit
        } else {
            match err.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => FailureKind::FuelExhausted,
                Some(Trap::Interrupt) => FailureKind::DeadlineExceeded,
                _ if err
                    .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some() =>
                {
                    FailureKind::PoolExhausted
                }
                _ => FailureKind::Trap,
            }
        };
        StageFailure {
            stage: stage.to_string(),
            kind,
            // The Display text of a trap hides its reason; the debug form keeps it.
            detail: format!("{err:?}")
                .lines()
                .take(6)
                .collect::<Vec<_>>()
                .join(" | "),
        }
    }

    /// A failure of `kind` with `detail`.
    pub fn new(stage: &str, kind: FailureKind, detail: impl Into<String>) -> StageFailure {
        StageFailure {
            stage: stage.to_string(),
            kind,
            detail: detail.into(),
        }
    }
}
