//! The LLM step's own error: why one call along a route produced no answer, and how the
//! client and a calling stage are told.

use crate::cost::CostError;
use crate::error::{ClientFacing, ShedReason};
use crate::router::RouteError;
use crate::wit::LlmError;

/// Why the LLM step produced no answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StepError {
    /// The router found no answer along the route's chain (every target failed, all were at
    /// their limits, or one refused the request).
    #[error("{0}")]
    Route(RouteError),
    /// The key may not spend on this call (budget, per-request cost or call limit, TPM),
    /// checked before the router is asked.
    #[error("{0}")]
    Cost(CostError),
    /// The step has no plan for the route: a stage's call on a route that a reload removed
    /// while the stage's request was in flight.
    #[error("the route `{route}` is not served (removed by a reload?)")]
    UnknownRoute {
        /// The route (alias) asked for.
        route: String,
    },
    /// A streamed answer broke off after its first event (the client already has its
    /// headers): the upstream failed, passed a bound, or ended without `[DONE]`.
    #[error("upstream {target} broke off the stream: {detail}")]
    Interrupted {
        /// The target that was streaming.
        target: std::sync::Arc<str>,
        /// What went wrong.
        detail: String,
    },
}

impl ClientFacing for StepError {
    fn status(&self) -> u16 {
        match self {
            StepError::Route(err) => err.status(),
            StepError::Cost(err) => err.status(),
            StepError::UnknownRoute { .. } | StepError::Interrupted { .. } => 502,
        }
    }

    fn error_type(&self) -> &str {
        match self {
            StepError::UnknownRoute { .. } => "server_error",
            // A cost refusal reads as it does at admission: one type per code, whichever
            // layer refused (a budget `insufficient_quota`, a limit `rate_limit_error`, the
            // fleet's state `server_error`).
            StepError::Cost(err) => err.error_type(),
            StepError::Route(RouteError::RateLimited { .. }) => "rate_limit_error",
            StepError::Route(RouteError::StateUnavailable) => "server_error",
            // A refusal about the request (the upstream's own 4xx) is the client's to fix;
            // anything else is the upstreams'.
            StepError::Route(_) if self.status() < 500 => "invalid_request_error",
            StepError::Route(_) | StepError::Interrupted { .. } => "upstream_error",
        }
    }

    fn code(&self) -> &str {
        match self {
            StepError::Route(err) => err.code(),
            StepError::Cost(err) => err.code(),
            StepError::UnknownRoute { .. } => "unknown_route",
            StepError::Interrupted { .. } => "stream_interrupted",
        }
    }

    fn client_message(&self) -> String {
        self.to_string()
    }

    fn retry_after_s(&self) -> Option<u64> {
        match self {
            StepError::Route(err) => ClientFacing::retry_after_s(err),
            StepError::Cost(err) => err.retry_after_s(),
            _ => None,
        }
    }

    /// Weir's own load shedding (every target at its limit), and the key's spend
    /// protection (budget, rate limit), as at admission.
    fn shed(&self) -> Option<ShedReason> {
        match self {
            StepError::Route(err) => err.shed(),
            StepError::Cost(err) => err.shed(),
            StepError::UnknownRoute { .. } | StepError::Interrupted { .. } => None,
        }
    }
}

impl From<&StepError> for LlmError {
    /// What a stage's `complete()` is told: the status, code and message a client would get.
    fn from(err: &StepError) -> LlmError {
        LlmError {
            status: err.status(),
            code: err.code().to_string(),
            message: err.client_message(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> CostError {
        CostError::BudgetExceeded {
            key: "k".into(),
            window: "daily",
            spent: 1.0,
            reserved: 0.0,
            budget: 1.0,
            needed: 0.1,
            resets_at: "2030-01-01T00:00:00Z".into(),
            retry_after_s: 42,
        }
    }

    #[test]
    fn the_client_mapping_is_the_routers_status_rule() {
        let overloaded = StepError::Route(RouteError::Overloaded { retry_after_s: 1 });
        assert_eq!(overloaded.status(), 503);
        assert_eq!(overloaded.error_type(), "upstream_error");
        assert_eq!(overloaded.code(), "overloaded");
        assert_eq!(overloaded.retry_after_s(), Some(1));
        assert_eq!(overloaded.shed(), Some(ShedReason::Overloaded));

        let refused = StepError::Route(RouteError::Refused {
            target: "t".into(),
            status: 400,
            message: "bad".into(),
        });
        assert_eq!(refused.status(), 400);
        assert_eq!(refused.error_type(), "invalid_request_error");
        assert_eq!(refused.code(), "upstream_refused");
        assert_eq!(refused.retry_after_s(), None);
        assert_eq!(refused.shed(), None);

        let failed = StepError::Route(RouteError::AllFailed {
            attempts: Vec::new(),
        });
        assert_eq!(failed.status(), 502);
        assert_eq!(failed.error_type(), "upstream_error");
        assert_eq!(failed.code(), "all_targets_failed");
    }

    #[test]
    fn a_cost_refusal_keeps_its_status_code_and_retry_after_and_counts_as_spend_protection() {
        let err = StepError::Cost(budget());
        assert_eq!(err.status(), 429);
        // As at admission (OpenAI's quota error), not a second type for the same code.
        assert_eq!(err.error_type(), budget().error_type());
        assert_eq!(err.error_type(), "insufficient_quota");
        assert_eq!(err.code(), "budget_exceeded");
        assert_eq!(err.retry_after_s(), Some(42));
        assert_eq!(err.client_message(), budget().to_string());
        assert_eq!(err.shed(), Some(ShedReason::BudgetExceeded));
        let guest = LlmError::from(&err);
        assert_eq!(
            (guest.status, guest.code.as_str()),
            (429, "budget_exceeded")
        );
        assert_eq!(guest.message, budget().to_string());
    }

    #[test]
    fn an_unknown_route_says_so() {
        let err = StepError::UnknownRoute {
            route: "gone".into(),
        };
        assert_eq!(err.status(), 502);
        assert_eq!(err.code(), "unknown_route");
        assert!(err.client_message().contains("`gone`"), "{err}");
        assert_eq!(err.shed(), None);
    }

    #[test]
    fn a_broken_stream_is_a_502_stream_interrupted() {
        let err = StepError::Interrupted {
            target: "t".into(),
            detail: "the stream ended without [DONE]".into(),
        };
        assert_eq!(err.status(), 502);
        assert_eq!(err.error_type(), "upstream_error");
        assert_eq!(err.code(), "stream_interrupted");
        assert_eq!(
            err.client_message(),
            "upstream t broke off the stream: the stream ended without [DONE]"
        );
    }
}
