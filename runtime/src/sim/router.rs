//! Which handler answers which method and path. Paths are matched exactly (no prefix
//! stripping), so a proxy that rewrites paths wrongly gets a 404 it can see.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::sim::body::{self, SimBody};
use crate::sim::conn::ConnControl;
use crate::sim::error::ApiError;
use crate::sim::ring::RecordedRequest;
use crate::sim::state::SimState;
use crate::sim::{api, control, models};

/// The endpoints, named once so method checks and 405s stay consistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `GET /v1/models`.
    Models,
    /// `GET /healthz`.
    Healthz,
    /// `GET|POST /sim/faults`.
    SimFaults,
    /// `GET /sim/stats`.
    SimStats,
    /// `POST /sim/reset`.
    SimReset,
    /// `GET /sim/requests`.
    SimRequests,
    /// Anything else.
    Unknown,
}

impl Endpoint {
    /// The endpoint of a path.
    fn of(path: &str) -> Endpoint {
        match path {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/models" => Endpoint::Models,
            "/healthz" => Endpoint::Healthz,
            "/sim/faults" => Endpoint::SimFaults,
            "/sim/stats" => Endpoint::SimStats,
            "/sim/reset" => Endpoint::SimReset,
            "/sim/requests" => Endpoint::SimRequests,
            _ => Endpoint::Unknown,
        }
    }
}

/// Answers one request.
pub async fn route(
    request: Request<Incoming>,
    state: Arc<SimState>,
    conn: Arc<ConnControl>,
) -> Response<SimBody> {
    let endpoint = Endpoint::of(request.uri().path());
    match (endpoint, request.method()) {
        (Endpoint::ChatCompletions, &Method::POST) => api::chat(request, state, &conn).await,
        (Endpoint::Embeddings, &Method::POST) => api::embeddings(request, state, &conn).await,
        (Endpoint::Models, &Method::GET) => {
            record_without_body(request, &state);
            models::list(&state)
        }
        (Endpoint::Healthz, &Method::GET) => body::json(StatusCode::OK, &"ok"),
        (Endpoint::SimFaults, &Method::GET) => control::get_faults(&state),
        (Endpoint::SimFaults, &Method::POST) => control::set_faults(request, &state).await,
        (Endpoint::SimStats, &Method::GET) => control::stats(&state),
        (Endpoint::SimReset, &Method::POST) => control::reset(&state),
        (Endpoint::SimRequests, &Method::GET) => control::requests(&request, &state),
        (Endpoint::Unknown, _) => {
            let err = ApiError::NotFound {
                method: request.method().to_string(),
                path: request.uri().path().to_owned(),
            };
            record_without_body(request, &state);
            body::error(&err)
        }
        (_, method) => body::error(&ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: request.uri().path().to_owned(),
        }),
    }
}

/// Records a request whose body the simulator does not read (so the ring also shows requests
/// that went to the wrong place).
fn record_without_body(request: Request<Incoming>, state: &SimState) {
    let (parts, _) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let record = RecordedRequest::new(parts.method, path, parts.headers, &Bytes::new());
    state.ring.push(record);
}
