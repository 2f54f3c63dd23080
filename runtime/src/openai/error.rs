//! The OpenAI error body: `{"error":{"message","type","code","param"}}` with an HTTP status.

use serde_json::json;

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
