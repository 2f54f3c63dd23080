//! The OpenAI error body: `{"error":{"message","type","code","param"}}` with an HTTP status.

use serde_json::json;

use crate::error::ClientFacing;

/// An error as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// OpenAI `error.type` (`invalid_request_error`, `server_error`, ...).
    pub error_type: String,
    /// Machine-readable `error.code`.
    pub code: String,
    /// Human-readable `error.message`.
    pub message: String,
    /// The request field at fault, if any (`error.param`).
    pub param: Option<String>,
    /// Seconds for `Retry-After` (429 and 503 get 1 when `None`).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `type`, `code` and `message`.
    pub fn new(status: u16, error_type: &str, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error_type: error_type.to_string(),
            code: code.to_string(),
            message: message.into(),
            param: None,
            retry_after_s: None,
        }
    }

    /// A 400 `invalid_request_error` about `param`.
    pub fn invalid(code: &str, param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            param: param.map(str::to_string),
            ..ApiError::new(400, "invalid_request_error", code, message)
        }
    }

    /// The 400 for a request body that is not JSON.
    pub fn invalid_json(err: &serde_json::Error) -> Self {
        ApiError::invalid(
            "invalid_json",
            None,
            format!("the request body is not valid JSON: {err}"),
        )
    }

    /// How the client sees any layer's error: the one mapping from a typed error to the
    /// OpenAI error body, its status and `Retry-After`.
    pub fn from_facing(err: &dyn ClientFacing) -> ApiError {
        ApiError {
            status: err.status(),
            error_type: err.error_type().to_string(),
            code: err.code().to_string(),
            message: err.client_message(),
            param: err.param().map(str::to_string),
            retry_after_s: err.retry_after_s(),
        }
    }

    /// The seconds `Retry-After` says: the error's own, else 1 for a 429 or a 503.
    pub fn retry_after(&self) -> Option<u64> {
        match self.retry_after_s {
            Some(seconds) => Some(seconds),
            None if self.status == 503 || self.status == 429 => Some(1),
            None => None,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.error_type,
                "code": self.code,
                "param": self.param,
            }
        })
    }
}

/// An error already in the client's terms (an invalid body or header, found by the wire
/// format's parser) maps to itself.
impl ClientFacing for ApiError {
    fn status(&self) -> u16 {
        self.status
    }

    fn error_type(&self) -> &str {
        &self.error_type
    }

    fn code(&self) -> &str {
        &self.code
    }

    fn client_message(&self) -> String {
        self.message.clone()
    }

    fn retry_after_s(&self) -> Option<u64> {
        self.retry_after_s
    }

    fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }
}
