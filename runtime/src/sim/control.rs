//! The `/sim/*` control plane: read and replace faults, read and zero counters, and read the
//! ring of received requests. These requests are not themselves counted, recorded or faulted,
//! so a test can inspect the simulator without disturbing what it inspects.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::sim::body::{self, SimBody};
use crate::sim::error::ApiError;
use crate::sim::faults::Faults;
use crate::sim::ring::RING_CAPACITY;
use crate::sim::state::SimState;

/// `GET /sim/faults`.
pub fn get_faults(state: &SimState) -> Response<SimBody> {
    body::json(StatusCode::OK, &*state.faults())
}

/// `POST /sim/faults`: the body replaces every fault (omitted fields mean no fault); unknown
/// fields or out-of-range values are a 400 and change nothing.
pub async fn set_faults(request: Request<Incoming>, state: &SimState) -> Response<SimBody> {
    let (parts, incoming) = request.into_parts();
    let bytes = match body::read_limited(&parts.headers, incoming).await {
        Ok(bytes) => bytes,
        Err(err) => return body::error(&err),
    };
    match Faults::from_json(&bytes) {
        Ok(faults) => {
            let response = body::json(StatusCode::OK, &faults);
            tracing::info!(?faults, "sim: faults replaced");
            state.set_faults(faults);
            response
        }
        Err(message) => body::error(&ApiError::InvalidRequest(format!(
            "invalid faults: {message}"
        ))),
    }
}

/// `GET /sim/stats`.
pub fn stats(state: &SimState) -> Response<SimBody> {
    let mut snapshot = state.stats.snapshot();
    snapshot.rpm = state.minute.stats();
    body::json(StatusCode::OK, &snapshot)
}

/// `POST /sim/reset`: zeroes the counters and empties the request ring (faults stay).
pub fn reset(state: &SimState) -> Response<SimBody> {
    state.stats.reset();
    state.ring.clear();
    state.minute.reset();
    body::json(StatusCode::OK, &json!({"reset": true}))
}

/// `GET /sim/requests?last=N`: the last N recorded requests (all kept, at most
/// `RING_CAPACITY`, without `last`), oldest first.
pub fn requests(request: &Request<Incoming>, state: &SimState) -> Response<SimBody> {
    let last = match parse_last(request.uri().query()) {
        Ok(last) => last,
        Err(err) => return body::error(&err),
    };
    let entries: Vec<_> = state.ring.last(last).iter().map(|r| r.to_json()).collect();
    body::json(StatusCode::OK, &entries)
}

/// The `last` query parameter; absent means the whole ring.
fn parse_last(query: Option<&str>) -> Result<usize, ApiError> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("last="));
    match value {
        None => Ok(RING_CAPACITY),
        Some(v) => v.parse().map_err(|_| {
            ApiError::InvalidRequest(format!("'last' must be a non-negative integer, got {v:?}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_defaults_to_the_whole_ring() {
        assert_eq!(parse_last(None), Ok(RING_CAPACITY));
        assert_eq!(parse_last(Some("x=1")), Ok(RING_CAPACITY));
        assert_eq!(parse_last(Some("x=1&last=3")), Ok(3));
        assert!(parse_last(Some("last=-1")).is_err());
    }
}
