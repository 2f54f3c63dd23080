//! Why a chat completion has no answer: one error type for the whole request, each variant
//! the error of the layer that refused, reaching the client through [`ClientFacing`].

use crate::app::Snapshot;
use crate::cost::CostError;
use crate::error::{ClientFacing, ShedReason};
use crate::llm::StepError;
use crate::openai::ApiError;
use crate::pipeline::PipelineError;

/// Why [`App::chat`](crate::app::App::chat) has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The key may not make a request now (its requests-per-minute limit).
    #[error(transparent)]
    Admission(CostError),
    /// The body or a header is invalid (`invalid_json`, `invalid_deadline`, ...).
    #[error(transparent)]
    Invalid(ApiError),
    /// No route serves the requested model.
    #[error(transparent)]
    UnknownModel(UnknownModel),
    /// A stage rejected the request or the response, or failed under the `fail` policy, or
    /// no stage instance was free.
    #[error(transparent)]
    Pipeline(PipelineError),
    /// The LLM step failed: every target, a refusal, overload, a cost refusal, or a stream
    /// that broke off before the stages that need the whole response saw it.
    #[error(transparent)]
    Step(StepError),
}

impl ChatError {
    /// The layer's own error.
    fn facing(&self) -> &dyn ClientFacing {
        match self {
            ChatError::Admission(err) => err,
            ChatError::Invalid(err) => err,
            ChatError::UnknownModel(err) => err,
            ChatError::Pipeline(err) => err,
            ChatError::Step(err) => err,
        }
    }
}

/// Whatever layer refused says how the client sees it.
impl ClientFacing for ChatError {
    fn status(&self) -> u16 {
        self.facing().status()
    }

    fn error_type(&self) -> &str {
        self.facing().error_type()
    }

    fn code(&self) -> &str {
        self.facing().code()
    }

    fn client_message(&self) -> String {
        self.facing().client_message()
    }

    fn retry_after_s(&self) -> Option<u64> {
        self.facing().retry_after_s()
    }

    fn param(&self) -> Option<&str> {
        self.facing().param()
    }

    fn shed(&self) -> Option<ShedReason> {
        self.facing().shed()
    }

    fn retryable(&self) -> bool {
        self.facing().retryable()
    }
}

/// A model no route serves: 404 `model_not_found`, listing those that exist.
#[derive(Debug, thiserror::Error)]
#[error("the model `{model}` does not exist; available: {}", known.join(", "))]
pub struct UnknownModel {
    /// The model asked for.
    pub model: String,
    /// The routes of the snapshot, sorted.
    pub known: Vec<String>,
}

impl UnknownModel {
    /// `model`, which no route of `snap` serves.
    pub fn new(snap: &Snapshot, model: &str) -> UnknownModel {
        let mut known: Vec<String> = snap.routes.keys().cloned().collect();
        known.sort_unstable();
        UnknownModel {
            model: model.to_string(),
            known,
        }
    }
}

impl ClientFacing for UnknownModel {
    fn status(&self) -> u16 {
        404
    }

    fn error_type(&self) -> &str {
        "invalid_request_error"
    }

    fn code(&self) -> &str {
        "model_not_found"
    }

    fn client_message(&self) -> String {
        self.to_string()
    }

    fn param(&self) -> Option<&str> {
        Some("model")
    }
}
