//! Which handler answers which method and path. Paths are matched exactly (no prefix
//! stripping), so a proxy that rewrites paths wrongly gets a 404 it can see; the Gemini model
//! and the Azure deployment are the only path parts read (percent-decoded).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::sim::body::{self, SimBody};
use crate::sim::conn::ConnControl;
use crate::sim::dialects::{self, AzureOperation};
use crate::sim::error::ApiError;
use crate::sim::ring::RecordedRequest;
use crate::sim::state::SimState;
use crate::sim::{api, control, models};

/// The endpoints, named once so method checks and 405s stay consistent.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/messages` (Anthropic).
    AnthropicMessages,
    /// `POST /v1/messages/count_tokens` (Anthropic).
    AnthropicCountTokens,
    /// `POST /v1beta/models/{model}:generateContent` or `:streamGenerateContent` (Gemini).
    Gemini {
        /// The model named in the path.
        model: String,
        /// Whether the method is `streamGenerateContent`.
        stream: bool,
    },
    /// `POST /openai/deployments/{deployment}/chat/completions|embeddings` (Azure OpenAI).
    Azure {
        /// The deployment named in the path.
        deployment: String,
        /// Chat completions or embeddings.
        operation: AzureOperation,
    },
    /// `POST /api/v2/.../query` (a Chroma-shaped vector search).
    Search,
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
            "/v1/messages" => Endpoint::AnthropicMessages,
            "/v1/messages/count_tokens" => Endpoint::AnthropicCountTokens,
            _ if crate::sim::search::is_query_path(path) => Endpoint::Search,
            _ => Endpoint::gemini(path)
                .or_else(|| Endpoint::azure(path))
                .unwrap_or(Endpoint::Unknown),
        }
    }

    /// `/v1beta/models/{model}:{method}`, for a non-empty model without `/`.
    fn gemini(path: &str) -> Option<Endpoint> {
        let (model, method) = path.strip_prefix("/v1beta/models/")?.rsplit_once(':')?;
        let stream = match method {
            "generateContent" => false,
            "streamGenerateContent" => true,
            _ => return None,
        };
        let model =
            dialects::percent_decode(model).filter(|m| !m.is_empty() && !m.contains('/'))?;
        Some(Endpoint::Gemini { model, stream })
    }

    /// `/openai/deployments/{deployment}/{operation}`, for a non-empty deployment.
    fn azure(path: &str) -> Option<Endpoint> {
        let (deployment, operation) = path.strip_prefix("/openai/deployments/")?.split_once('/')?;
        let operation = match operation {
            "chat/completions" => AzureOperation::ChatCompletions,
            "embeddings" => AzureOperation::Embeddings,
            _ => return None,
        };
        let deployment = dialects::percent_decode(deployment).filter(|d| !d.is_empty())?;
        Some(Endpoint::Azure {
            deployment,
            operation,
        })
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
        (Endpoint::AnthropicMessages, &Method::POST) => {
            dialects::anthropic_messages(request, state, &conn).await
        }
        (Endpoint::AnthropicCountTokens, &Method::POST) => {
            dialects::anthropic_count_tokens(request, state).await
        }
        (Endpoint::Gemini { model, stream }, &Method::POST) => {
            dialects::gemini(request, state, &conn, model, stream).await
        }
        (
            Endpoint::Azure {
                deployment,
                operation,
            },
            &Method::POST,
        ) => dialects::azure(request, state, &conn, deployment, operation).await,
        (Endpoint::Search, &Method::POST) => api::search(request, state, &conn).await,
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
    let record = RecordedRequest::new(parts.method, &parts.uri, parts.headers, &Bytes::new());
    state.ring.push(record);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_paths_name_their_endpoints() {
        assert_eq!(Endpoint::of("/v1/messages"), Endpoint::AnthropicMessages);
        assert_eq!(
            Endpoint::of("/v1/messages/count_tokens"),
            Endpoint::AnthropicCountTokens
        );
        assert_eq!(
            Endpoint::of("/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
            Endpoint::Gemini {
                model: "gemini-2.0-flash".into(),
                stream: true
            }
        );
        assert_eq!(
            Endpoint::of("/v1beta/models/my%20model:generateContent"),
            Endpoint::Gemini {
                model: "my model".into(),
                stream: false
            }
        );
        assert_eq!(
            Endpoint::of("/openai/deployments/prod-4o/embeddings"),
            Endpoint::Azure {
                deployment: "prod-4o".into(),
                operation: AzureOperation::Embeddings
            }
        );
        for unknown in [
            "/v1beta/models/:generateContent",
            "/v1beta/models/a/b:generateContent",
            "/v1beta/models/m:countTokens",
            "/openai/deployments//chat/completions",
            "/openai/deployments/d/completions",
            "/v1/messages/",
        ] {
            assert_eq!(Endpoint::of(unknown), Endpoint::Unknown, "{unknown}");
        }
    }
}
