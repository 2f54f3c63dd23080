//! [`ServiceError`]: why a service call produced no answer, and how `wasi:http`'s error codes
//! map onto it.
//!
//! A service that answers, even with an error status, is not an error here: it is a
//! [`ServiceResponse`](super::ServiceResponse) to check. These are the calls that got no
//! answer at all, plus an answer that could not be read or parsed.

use wasip2::http::types::ErrorCode;

use crate::StageError;

/// Why a service call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The host refused the request (`HTTP-request-denied`): the authority names no service
    /// granted to this stage, or the call was made from `describe`. Nothing was sent.
    #[error("service `{service}` is not granted to this stage (HTTP-request-denied)")]
    Denied {
        /// The authority the stage asked for.
        service: String,
    },
    /// The call ran out of time (connecting, sending, or waiting for the answer).
    #[error("service `{service}` timed out ({detail})")]
    Timeout {
        /// The service called.
        service: String,
        /// The `wasi:http` error code, as `connection-timeout`.
        detail: String,
    },
    /// Any other failure of the exchange (the `wasi:http` error code, or a stream error).
    #[error("service `{service}`: {detail}")]
    Transport {
        /// The service called.
        service: String,
        /// What failed.
        detail: String,
    },
    /// The answer's body is longer than the call's limit; it was not read further.
    #[error("service `{service}` answered more than {limit} bytes")]
    BodyTooLarge {
        /// The service called.
        service: String,
        /// The limit, bytes.
        limit: usize,
    },
    /// The request could not be built (a path that is not absolute, a header that is not
    /// valid, an authority that is not one); nothing was sent.
    #[error("invalid service request: {0}")]
    InvalidRequest(String),
    /// A JSON body could not be written, or an answer is not the JSON expected.
    #[error("invalid JSON: {0}")]
    Json(String),
}

impl ServiceError {
    /// A short, stable name of the variant, for logs and tests: `denied`, `timeout`,
    /// `transport`, `body_too_large`, `invalid_request` or `json`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServiceError::Denied { .. } => "denied",
            ServiceError::Timeout { .. } => "timeout",
            ServiceError::Transport { .. } => "transport",
            ServiceError::BodyTooLarge { .. } => "body_too_large",
            ServiceError::InvalidRequest(_) => "invalid_request",
            ServiceError::Json(_) => "json",
        }
    }

    /// The error for `wasi:http` error `code` in a call to `service`.
    pub(crate) fn from_code(service: &str, code: &ErrorCode) -> ServiceError {
        let service = service.to_string();
        match code {
            ErrorCode::HttpRequestDenied => ServiceError::Denied { service },
            ErrorCode::DnsTimeout
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout => ServiceError::Timeout {
                service,
                detail: code_name(code),
            },
            _ => ServiceError::Transport {
                service,
                detail: code_name(code),
            },
        }
    }
}

/// A service error fails the stage (the host then applies its `on_error` policy), so `?`
/// works inside a phase.
impl From<ServiceError> for StageError {
    fn from(err: ServiceError) -> Self {
        StageError::Fail(err.to_string())
    }
}

/// The WIT name of `code` (`connection-refused`), with its payload when it says something
/// (`internal-error: upstream closed`, `HTTP-response-body-size: 1024`).
fn code_name(code: &ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(message)) => format!("internal-error: {message}"),
        ErrorCode::HttpRequestBodySize(Some(size)) => format!("HTTP-request-body-size: {size}"),
        ErrorCode::HttpResponseBodySize(Some(size)) => {
            format!("HTTP-response-body-size: {size}")
        }
        other => {
            // `ErrorCode::ConnectionRefused` / `ErrorCode::DnsError(..)` -> `connection-refused`
            let debug = format!("{other:?}");
            let name = debug.trim_start_matches("ErrorCode::");
            let name = name.split('(').next().unwrap_or(name);
            kebab(name)
        }
    }
}

/// `ConnectionRefused` -> `connection-refused`, `HttpRequestDenied` -> `HTTP-request-denied`
/// (the WIT spells the `HTTP` prefix in capitals).
fn kebab(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(ch.to_ascii_lowercase());
    }
    match out.strip_prefix("http-") {
        Some(rest) => format!("HTTP-{rest}"),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_timeouts_and_the_rest() {
        assert_eq!(
            ServiceError::from_code("search", &ErrorCode::HttpRequestDenied),
            ServiceError::Denied {
                service: "search".to_string()
            }
        );
        for (code, name) in [
            (ErrorCode::ConnectionTimeout, "connection-timeout"),
            (ErrorCode::ConnectionReadTimeout, "connection-read-timeout"),
            (
                ErrorCode::ConnectionWriteTimeout,
                "connection-write-timeout",
            ),
            (ErrorCode::HttpResponseTimeout, "HTTP-response-timeout"),
            (ErrorCode::DnsTimeout, "dns-timeout"),
        ] {
            let err = ServiceError::from_code("search", &code);
            assert_eq!(err.kind(), "timeout");
            assert_eq!(
                err.to_string(),
                format!("service `search` timed out ({name})")
            );
        }
        for (code, detail) in [
            (ErrorCode::ConnectionRefused, "connection-refused"),
            (ErrorCode::HttpProtocolError, "HTTP-protocol-error"),
            (
                ErrorCode::InternalError(Some("boom".to_string())),
                "internal-error: boom",
            ),
            (ErrorCode::InternalError(None), "internal-error"),
            (
                ErrorCode::HttpRequestBodySize(Some(1024)),
                "HTTP-request-body-size: 1024",
            ),
            (
                ErrorCode::HttpRequestBodySize(None),
                "HTTP-request-body-size",
            ),
            (
                ErrorCode::HttpResponseTransferCoding(None),
                "HTTP-response-transfer-coding",
            ),
        ] {
            let err = ServiceError::from_code("search", &code);
            assert_eq!(
                err,
                ServiceError::Transport {
                    service: "search".to_string(),
                    detail: detail.to_string()
                }
            );
        }
    }

    #[test]
    fn kinds_and_messages() {
        let denied = ServiceError::Denied {
            service: "127.0.0.1:9".to_string(),
        };
        assert_eq!(denied.kind(), "denied");
        assert_eq!(
            denied.to_string(),
            "service `127.0.0.1:9` is not granted to this stage (HTTP-request-denied)"
        );
        let large = ServiceError::BodyTooLarge {
            service: "search".to_string(),
            limit: 10,
        };
        assert_eq!(large.kind(), "body_too_large");
        assert_eq!(
            large.to_string(),
            "service `search` answered more than 10 bytes"
        );
        assert_eq!(ServiceError::Json("x".to_string()).kind(), "json");
        assert_eq!(
            ServiceError::InvalidRequest("x".to_string()).kind(),
            "invalid_request"
        );
        assert_eq!(
            crate::testing::fail_message::<()>(Err(large.into())),
            "service `search` answered more than 10 bytes"
        );
    }
}
