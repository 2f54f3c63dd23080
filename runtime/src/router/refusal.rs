//! Which upstream failures reach the client, and how much of them.
//!
//! A provider's error message is written for whoever holds the API key: the operator, not
//! weir's client. A 401 from OpenAI quotes part of the key ("Incorrect API key provided:
//! sk-...abcd"), a 429 names the operator's organisation and limits, a 3xx or 1xx is not an
//! answer at all. So only the statuses that are about the client's own request are relayed
//! with their message; everything else is the operator's business and reaches the client as
//! a generic error, with the detail in the log and the attempt's span.

use super::RouteError;
use crate::providers::{AttemptError, Upstream};

/// Upstream statuses that say the client's request itself is wrong, relayed to the client
/// with the upstream's message: 400 (invalid request, context too long), 413 (too large),
/// 422 (unprocessable) and 404 (no such model) when the client chose the model.
const RELAYED_CLIENT_ERRORS: [u16; 4] = [400, 404, 413, 422];

/// Upstream statuses that indict the target rather than the request: its credentials (401),
/// its account (402: out of credit; 403: suspended, or a region it may not serve) and its
/// proxy (407). A 404 for the model a target pins is the same (the operator's
/// configuration). Another target may well serve the request.
const TARGET_FAULTS: [u16; 4] = [401, 402, 403, 407];

/// Whether `err` says `target` cannot serve any request (a revoked key, a suspended account,
/// a pinned model that does not exist): the call fails over to the next target whatever
/// `retry_on` says, and the failure counts against the target's breaker, so a dead key
/// stops taking requests instead of failing every one of them.
pub(super) fn indicts_target(target: &Upstream, err: &AttemptError) -> bool {
    let AttemptError::Status { status, .. } = err else {
        return false;
    };
    TARGET_FAULTS.contains(status) || (*status == 404 && target.model.is_some())
}

/// How a failure the router does not retry reaches the client.
///
/// Only an error about the client's own request is relayed with the upstream's message
/// ([`RELAYED_CLIENT_ERRORS`]; a 404 only when the client chose the model, since with a
/// target's `model` override it names the operator's configuration). A 5xx keeps its status
/// with a generic message (`retry_on` decides which 5xx are retried; the rest are the
/// upstream's failure, and its text is not the client's business). Everything else — 401,
/// 402, 403 and 407 (the operator's credentials, account or proxy: a provider's message may
/// quote part of the API key; the router fails them over ([`indicts_target`]), so they end
/// here only if that changes), 408 and 429 when not retried (the operator's limits and
/// organisation), other 4xx, 3xx and 1xx — becomes a generic 502 [`RouteError::Failed`]. The
/// upstream's detail always goes to the log and the attempt's span, never to the client.
pub(super) fn refusal(target: &Upstream, err: &AttemptError) -> RouteError {
    let name = target.name.clone();
    match err.status() {
        Some(404) if target.model.is_some() => RouteError::Failed {
            target: name,
            status: 404,
        },
        Some(status) if RELAYED_CLIENT_ERRORS.contains(&status) => RouteError::Refused {
            target: name,
            status,
            message: err.upstream_message().unwrap_or_else(|| err.to_string()),
        },
        Some(status @ 500..=599) => RouteError::Refused {
            target: name,
            status,
            message: format!("upstream status {status}"),
        },
        status => RouteError::Failed {
            target: name,
            status: status.unwrap_or(0),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn upstream(model: Option<&str>) -> Upstream {
        Upstream {
            name: "up".into(),
            base_url: "http://h/v1".to_string(),
            dialect: crate::providers::Dialect::OpenAi,
            signing: Vec::new(),
            model: model.map(str::to_string),
            timeout: Duration::from_secs(1),
            ttft_timeout: Duration::from_secs(1),
            stream_json: false,
            headers: Vec::new(),
        }
    }

    #[test]
    fn only_errors_about_the_request_reach_the_client_with_the_upstream_message() {
        let secret = "Incorrect API key provided: sk-****************7q2x";
        let status = |status: u16| AttemptError::Status {
            status,
            body: Bytes::from(serde_json::json!({"error": {"message": secret}}).to_string()),
            retry_after: None,
        };
        let plain = upstream(None);
        let pinned = upstream(Some("ft:org-x"));
        for code in [101, 301, 302, 401, 402, 403, 407, 408, 418, 429] {
            let err = refusal(&plain, &status(code));
            assert_eq!(
                (err.status(), err.code()),
                (502, "upstream_error"),
                "{code}"
            );
            assert!(!err.to_string().contains("7q2x"), "{code}: {err}");
        }
        for code in [400, 404, 413, 422] {
            let err = refusal(&plain, &status(code));
            assert_eq!((err.status(), err.code()), (code, "upstream_refused"));
            assert!(err.to_string().contains(secret), "{code}: {err}");
        }
        // A 404 about the operator's model override is the operator's business.
        assert_eq!(refusal(&pinned, &status(404)).status(), 502);
        // A 5xx keeps its status, not its text.
        let err = refusal(&plain, &status(500));
        assert_eq!(err.status(), 500);
        assert!(!err.to_string().contains("7q2x"), "{err}");
    }

    #[test]
    fn the_targets_credentials_account_and_pinned_model_indict_the_target() {
        let status = |status: u16| AttemptError::Status {
            status,
            body: Bytes::new(),
            retry_after: None,
        };
        let plain = upstream(None);
        let pinned = upstream(Some("ft:org-x"));
        for code in [401, 402, 403, 407] {
            assert!(indicts_target(&plain, &status(code)), "{code}");
        }
        assert!(indicts_target(&pinned, &status(404)));
        // About the request (the client chose the model), or not a status at all.
        for code in [400, 404, 413, 422, 429, 500] {
            assert!(!indicts_target(&plain, &status(code)), "{code}");
        }
        assert!(!indicts_target(
            &plain,
            &AttemptError::Connect("refused".into())
        ));
    }
}
