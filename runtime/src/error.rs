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
    fn error_type(&self) -> &str;
    /// The machine-readable `error.code`.
    fn code(&self) -> &str;
    /// The human-readable `error.message`: what the client may see.
    fn client_message(&self) -> String;
    /// Seconds for `Retry-After`, when the error says when to come back (the HTTP layer
    /// still sends 1 for a 429 or 503 that names none).
    fn retry_after_s(&self) -> Option<u64> {
        None
    }
    /// The request field at fault, if any (`error.param`).
    fn param(&self) -> Option<&str> {
        None
    }
    /// Why weir shed the request, when it did (counted in the shed metric): for lack of room,
    /// or to protect a key's spend; `None` for a refusal about the request itself or a
    /// failure upstream.
    fn shed(&self) -> Option<ShedReason> {
        None
    }
    /// Whether the same request may succeed if sent again later (a background job then gets
    /// another attempt): a timeout (408), a limit (429) or a failure on weir's or an
    /// upstream's side (5xx). Any other 4xx is about the request itself and will not change.
    fn retryable(&self) -> bool {
        matches!(self.status(), 408 | 429 | 500..)
    }
}

/// Why weir shed a request: the `reason` label of `weir_shed_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    /// Every target of the route was at its concurrency limit and the wait queue was full or
    /// timed out.
    Overloaded,
    /// The stage instance pool had no free slot.
    PoolExhausted,
    /// The key is over its requests- or tokens-per-minute limit.
    RateLimited,
    /// A budget window of the key is spent.
    BudgetExceeded,
}

impl ShedReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Overloaded => "overloaded",
            ShedReason::PoolExhausted => "pool_exhausted",
            ShedReason::RateLimited => "rate_limited",
            ShedReason::BudgetExceeded => "budget_exceeded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that only has a status.
    struct Status(u16);

    impl ClientFacing for Status {
        fn status(&self) -> u16 {
            self.0
        }
        fn error_type(&self) -> &str {
            "test_error"
        }
        fn code(&self) -> &str {
            "test"
        }
        fn client_message(&self) -> String {
            String::new()
        }
    }

    #[test]
    fn timeouts_limits_and_server_side_failures_are_retryable_other_4xx_are_not() {
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert!(Status(status).retryable(), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 413, 422] {
            assert!(!Status(status).retryable(), "{status}");
        }
    }
}
