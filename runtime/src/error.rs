//! How any layer's error reaches the client: one trait, one mapping.
//!
//! Each layer keeps its own error type (the router's `RouteError`, the LLM step's
//! `StepError`, the pipeline's `PipelineError`, cost refusals, job errors). Each implements
//! [`ClientFacing`], and the HTTP layer turns any of them into the OpenAI-shaped body with one
//! function (`openai::ApiError::from_facing`), so no layer below `server` knows about HTTP and
//! nothing downstream re-reads a code string to decide what happened (whether a request was
//! shed, whether a job may retry).

/// What the client is told about an error, and what weir itself must know of it.
pub trait ClientFacing {
    /// The HTTP status.
    fn status(&self) -> u16;
    /// The OpenAI `error.type` (`invalid_request_error`, `upstream_error`, ...).
    fn error_type(&self) -> &'static str;
    /// The machine-readable `error.code`.
    fn code(&self) -> &str;
    /// The human-readable `error.message`: what the client may see.
    fn client_message(&self) -> String;
    /// Seconds for `Retry-After`, when the error says when to come back.
    fn retry_after_s(&self) -> Option<u64> {
        None
    }
    /// The request field at fault, if any (`error.param`).
    fn param(&self) -> Option<&str> {
        None
    }
    /// Whether weir shed the request for lack of room (counted in the shed metric), as
    /// opposed to a refusal about the request or a failure upstream.
    fn shed(&self) -> bool {
        false
    }
}
