//! `GET /v1/models`: a short, fixed list, so clients that probe the model list at start-up
//! find one.

use http::{Response, StatusCode};
use serde_json::json;

use crate::sim::body::{self, SimBody};
use crate::sim::state::{DEFAULT_MODEL, SimState};

/// Models always listed (after the configured `model_name`, if any).
const LISTED: [&str; 3] = [DEFAULT_MODEL, "gpt-4o-mini", "text-embedding-3-small"];

/// The OpenAI model list.
pub fn list(state: &SimState) -> Response<SimBody> {
    let data: Vec<_> = state
        .model_name
        .as_deref()
        .into_iter()
        .chain(LISTED)
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "weir-sim"}))
        .collect();
    body::json(StatusCode::OK, &json!({"object": "list", "data": data}))
}
