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
        Value::Object(map).to_string()
    }
}
