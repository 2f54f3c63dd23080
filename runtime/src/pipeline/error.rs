//! The pipeline's error: a rejection chosen by a stage, or a stage failure under the `fail`
//! policy. Each knows its HTTP status and OpenAI-style `type`/`code`.

use crate::stages::{FailureKind, StageFailure};

/// Why the pipeline did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A stage refused the request (or response) on purpose.
    #[error("rejected by stage {stage}: {message}")]
    Rejected {
        /// The stage label.
        stage: String,
        /// The status the stage chose (400..=599).
        status: u16,
        /// The stage's code.
        code: String,
        /// The stage's message.
        message: String,
    },
    /// A stage failed and its policy is `fail`, or no instance slot was free.
    #[error(transparent)]
    Stage(#[from] StageFailure),
    /// A response-phase stage still refused the model's answer (`retry-response`) when the
    /// route's `max_output_retries` were spent.
    #[error("stage {stage} refused the model's answer after {retries} retries: {reason}")]
    InvalidOutput {
        /// The stage label.
        stage: String,
        /// Retries made.
        retries: u32,
        /// The stage's reason (the validation errors).
        reason: String,
    },
}

impl PipelineError {
    /// The HTTP status for the client.
    pub fn status(&self) -> u16 {
        match self {
            PipelineError::Rejected { status, .. } => *status,
            PipelineError::Stage(f) if f.kind == FailureKind::PoolExhausted => 503,
            PipelineError::Stage(_) => 500,
            PipelineError::InvalidOutput { .. } => 502,
        }
    }

    /// The OpenAI-style error `type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            PipelineError::Rejected { status, .. } if *status < 500 => "invalid_request_error",
            PipelineError::Rejected { .. } => "server_error",
            PipelineError::Stage(f) if f.kind == FailureKind::PoolExhausted => "overloaded_error",
            PipelineError::Stage(_) => "stage_error",
            PipelineError::InvalidOutput { .. } => "upstream_error",
        }
    }

    /// The machine-readable `code`.
    pub fn code(&self) -> &str {
        match self {
            PipelineError::Rejected { code, .. } => code,
            PipelineError::Stage(f) => f.kind.code(),
            PipelineError::InvalidOutput { .. } => "invalid_model_output",
        }
    }

    /// The failure kind, `Rejected` for a rejection.
    pub fn kind(&self) -> FailureKind {
        match self {
            PipelineError::Rejected { .. } | PipelineError::InvalidOutput { .. } => {
                FailureKind::Rejected
            }
            PipelineError::Stage(f) => f.kind,
        }
    }

    /// The message for the client: what happened, never guest internals beyond the kind.
    pub fn client_message(&self) -> String {
        match self {
            PipelineError::Rejected { message, .. } => message.clone(),
            PipelineError::Stage(f) => match f.kind {
                FailureKind::PoolExhausted => {
                    "the server is at capacity; retry after the Retry-After delay".to_string()
                }
                FailureKind::Failed => format!("stage {} failed: {}", f.stage, f.detail),
                kind => format!("stage {} failed: {kind}", f.stage),
            },
            err @ PipelineError::InvalidOutput { .. } => err.to_string(),
        }
    }
}

/// A stage's refusal or failure as the client sees it; an exhausted instance pool is shed
/// (503, `Retry-After` 1 from the HTTP layer).
impl crate::error::ClientFacing for PipelineError {
    fn status(&self) -> u16 {
        PipelineError::status(self)
    }

    fn error_type(&self) -> &str {
        PipelineError::error_type(self)
    }

    fn code(&self) -> &str {
        PipelineError::code(self)
    }

    fn client_message(&self) -> String {
        PipelineError::client_message(self)
    }

    fn shed(&self) -> Option<crate::error::ShedReason> {
        (self.kind() == FailureKind::PoolExhausted)
            .then_some(crate::error::ShedReason::PoolExhausted)
    }
}
