//! Front: weir's errors as Anthropic error bodies ([`error_body`]).

use serde_json::{Value, json};

/// Anthropic's error `type` for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        // 400 and any other client error.
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An Anthropic error body for `status`:
/// `{"type":"error","error":{"type": <by status>, "message"}}`.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}
