//! The two kinds of failure of the simulator, kept apart on purpose.
//!
//! `SimError` is for the program running the simulator (it could not bind, its config is
//! invalid). `ApiError` is data for the HTTP client: each variant knows its status and its
//! OpenAI-style `type` and `code`, and renders as `{"error": {...}}`. Injected faults are
//! `ApiError`s too, so a client sees exactly what a real provider would send.

use std::net::SocketAddr;

use http::StatusCode;

use crate::sim::faults::FaultsError;

/// Why the simulator could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configured faults are out of range.
    #[error("invalid sim faults: {0}")]
    InvalidFaults(#[from] FaultsError),
    /// The listener could not be bound.
    #[error("sim: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// An error answered to an HTTP client, in the OpenAI error shape.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum ApiError {
    /// The body is not JSON, or not the JSON this endpoint expects. 400.
    #[error("{0}")]
    InvalidRequest(String),
    /// The body is larger than `limit` bytes. 413.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The bound that was exceeded, in bytes.
        limit: usize,
    },
    /// The body could not be read from the connection. 400.
    #[error("cannot read request body: {0}")]
    BodyRead(String),
    /// No such endpoint. 404.
    #[error("unknown request URL: {method} {path}")]
    NotFound {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The endpoint exists but not with this method. 405.
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// Injected error fault (or a `sim-error-NNN` model), with its status.
    #[error("simulated upstream error (status {status})")]
    Injected {
        /// The status to answer, 400..=599.
        status: u16,
        /// Prompt tokens reported as billed in the body's `usage` (0: no usage).
        billed_tokens: u32,
    },
    /// Injected 401, as OpenAI answers a wrong key: the message quotes the key received
    /// (masked but for its ends), which is what a proxy must never relay to its own clients.
    #[error(
        "Incorrect API key provided: {quoted}. You can find your API key in your account settings."
    )]
    InvalidApiKey {
        /// The bearer key received, masked by [`mask_key`], or `(none)`.
        quoted: String,
    },
    /// Injected rate limit. 429 with `Retry-After`.
    #[error("Rate limit reached (simulated); retry after {retry_after_s} s")]
    RateLimited {
        /// Seconds sent in the `Retry-After` header.
        retry_after_s: u64,
    },
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Injected { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::InvalidApiKey { .. } => StatusCode::UNAUTHORIZED,
        }
    }

    /// The OpenAI error `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::RateLimited { .. } => "requests",
            ApiError::Injected { status, .. } if *status >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The OpenAI error `code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::BodyTooLarge { .. } => "request_too_large",
            ApiError::BodyRead(_) => "invalid_body",
            ApiError::NotFound { .. } => "unknown_url",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Injected { .. } => "sim_injected_error",
            ApiError::RateLimited { .. } => "rate_limit_exceeded",
            ApiError::InvalidApiKey { .. } => "invalid_api_key",
        }
    }

    /// The injected error for `status`: a 401 quotes the request's bearer key (see
    /// [`ApiError::InvalidApiKey`]), any other status is [`ApiError::Injected`].
    pub fn injected(status: u16, billed_tokens: u32, bearer: Option<&str>) -> ApiError {
        if status == 401 {
            return ApiError::InvalidApiKey {
                quoted: bearer.map_or_else(|| "(none)".to_owned(), mask_key),
            };
        }
        ApiError::Injected {
            status,
            billed_tokens,
        }
    }

    /// The JSON body: `{"error": {"message", "type", "param": null, "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": self.kind(),
                "param": null,
                "code": self.code(),
            }
        });
        if let ApiError::Injected { billed_tokens, .. } = self
            && *billed_tokens > 0
        {
            body["usage"] = serde_json::json!({
                "prompt_tokens": billed_tokens,
                "completion_tokens": 0,
                "total_tokens": billed_tokens,
            });
        }
        body
    }
}

/// A key as OpenAI quotes it in a 401: its first 3 and last 4 characters, the rest as `*`
/// (a key of 8 characters or fewer is all `*`).
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_401_quotes_the_key_like_openai() {
        let e = ApiError::injected(401, 0, Some("sk-upstream-secret-7q2x"));
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        let body = e.body();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("Incorrect API key provided: sk-****"),
            "{message}"
        );
        assert!(
            message.contains("7q2x") && !message.contains("secret"),
            "{message}"
        );
        assert_eq!(mask_key("short"), "*****");
        assert!(matches!(
            ApiError::injected(403, 0, Some("k")),
            ApiError::Injected { status: 403, .. }
        ));
    }

    #[test]
    fn injected_errors_keep_their_status_and_type() {
        let e = ApiError::Injected {
            status: 503,
            billed_tokens: 0,
        };
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.body()["error"]["type"], "server_error");
        let e = ApiError::Injected {
            status: 400,
            billed_tokens: 0,
        };
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn rate_limit_has_openai_code() {
        let e = ApiError::RateLimited { retry_after_s: 3 };
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.body()["error"]["code"], "rate_limit_exceeded");
    }
}
