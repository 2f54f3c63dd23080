//! The OpenAI wire format: JSON ↔ the WIT request/response types, SSE chunks, error bodies.
//!
//! A leaf module (like `config`): the server parses client requests with it and the provider
//! client speaks it upstream, so there is exactly one mapping. Every field weir does not model
//! travels in an `extra` JSON object and comes back out verbatim, so nothing is lost.

mod error;
mod request;
mod response;
pub mod responses;
mod stream;

pub use error::ApiError;
pub use request::{parse_request, request_json, request_to_json};
pub use response::{
    parse_cache_writes, parse_response, parse_response_value, parse_usage, response_to_json,
};
pub use stream::{SseParser, StreamAccumulator, response_to_sse};

use serde_json::{Map, Value};

/// Parses an `extra` JSON object string; anything else is an empty object.
pub(crate) fn extra_map(extra: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(extra) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Renders the leftover fields of an object as an `extra` string (`{}` when empty).
pub(crate) fn extra_string(map: Map<String, Value>) -> String {
    if map.is_empty() {
        "{}".to_string()
    } else {
        // JSON is UTF-8.
        String::from_utf8(to_bytes(&Value::Object(map))).unwrap_or_default()
    }
}

/// `value` as compact JSON bytes. Straight into a buffer: `value.to_string()` goes through
/// `fmt::Display`, a formatter call per token (measured at about 2.5% of a bare request's CPU
/// for the answer alone).
pub fn to_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing a `Value` into a `Vec` cannot fail: its keys are strings and a `Vec` takes any
    // write.
    let _ = serde_json::to_writer(&mut out, value);
    out
}
