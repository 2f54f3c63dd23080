//! Routing one LLM call across a route's upstream targets.
//!
//! Owns: the targets, the fallback chain and each attempt's record. This first version tries
//! the route's targets in order, moving on after a retryable failure (connect error, timeout,
//! 408/429/5xx, a broken reply) and stopping at a non-retryable one (another 4xx: the request
//! itself is wrong, and every target would say so). For streams, the first event is read
//! before the caller commits anything to its client, so a target that fails before its first
//! byte falls back invisibly.

mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use tokio::time::Instant;

pub use stream::UpstreamStream;

use crate::openai::{parse_response, request_to_json};
use crate::providers::{AttemptError, ProviderClient, Upstream, read_body};
use crate::wit::{ChatRequest, ChatResponse};

/// One attempt against one target.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The target's name.
    pub target: Arc<str>,
    /// `ok`, or what went wrong.
    pub outcome: String,
    /// The upstream status, when there was one.
    pub status: Option<u16>,
    /// How long the attempt took.
    pub elapsed: Duration,
}

/// A successful reply.
pub enum Reply {
    /// A whole `chat.completion`.
    Json(ChatResponse),
    /// A stream whose first event has already arrived.
    Stream(UpstreamStream),
}

/// Why no target produced a reply.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Every target was tried and failed.
    #[error("all {} upstream attempts failed: {}", attempts.len(), describe(attempts))]
    AllFailed {
        /// Each attempt, in order.
        attempts: Vec<Attempt>,
    },
    /// A target refused the request itself (a non-retryable 4xx); its message is passed on.
    #[error("upstream {target} refused the request: {message}")]
    Refused {
        /// The target.
        target: Arc<str>,
        /// Its status.
        status: u16,
        /// Its message.
        message: String,
    },
}

impl RouteError {
    /// The HTTP status for the client: 502 when every target failed, the upstream's own
    /// status when it refused the request.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::AllFailed { .. } => 502,
            RouteError::Refused { status, .. } => *status,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::AllFailed { .. } => "all_targets_failed",
            RouteError::Refused { .. } => "upstream_refused",
        }
    }
}

fn describe(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{} ({})", a.target, a.outcome))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The targets and the client that reaches them.
pub struct Router {
    /// The pooled client.
    client: ProviderClient,
    /// Every configured target, indexed by the routes' chains.
    targets: Vec<Arc<Upstream>>,
}

impl Router {
    /// A router over `targets`.
    pub fn new(client: ProviderClient, targets: Vec<Arc<Upstream>>) -> Router {
        Router { client, targets }
    }

    /// The targets.
    pub fn targets(&self) -> &[Arc<Upstream>] {
        &self.targets
    }

    /// Sends a chat completion along `chain` (indexes into the targets), first success wins.
    pub async fn chat(
        &self,
        chain: &[usize],
        request: &ChatRequest,
        forward: &[(HeaderName, HeaderValue)],
        attempts: &mut Vec<Attempt>,
    ) -> Result<Reply, RouteError> {
        for &index in chain {
            let Some(target) = self.targets.get(index) else {
                continue;
            };
            let started = Instant::now();
            let body = Bytes::from(request_to_json(request, target.model.as_deref()).to_string());
            let result = self.attempt(target, body, request.stream, forward).await;
            let elapsed = started.elapsed();
            match result {
                Ok(reply) => {
                    attempts.push(Attempt {
                        target: target.name.clone(),
                        outcome: "ok".to_string(),
                        status: Some(200),
                        elapsed,
                    });
                    return Ok(reply);
                }
                Err(err) => {
                    tracing::warn!(target = &*target.name, error = %err, "upstream attempt failed");
                    attempts.push(Attempt {
                        target: target.name.clone(),
                        outcome: err.to_string(),
                        status: err.status(),
                        elapsed,
                    });
                    if !err.is_retryable() {
                        let status = err.status().unwrap_or(400);
                        return Err(RouteError::Refused {
                            target: target.name.clone(),
                            status,
                            message: err.upstream_message().unwrap_or_else(|| err.to_string()),
                        });
                    }
                }
            }
        }
        Err(RouteError::AllFailed {
            attempts: attempts.clone(),
        })
    }

    async fn attempt(
        &self,
        target: &Upstream,
        body: Bytes,
        stream: bool,
        forward: &[(HeaderName, HeaderValue)],
    ) -> Result<Reply, AttemptError> {
        let deadline = Instant::now() + target.timeout;
        let response = self
            .client
            .post(target, "/chat/completions", body, forward)
            .await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if stream {
            let stream =
                UpstreamStream::open(target.name.clone(), response.into_body(), left).await?;
            return Ok(Reply::Stream(stream));
        }
        let bytes = read_body(response.into_body(), left).await?;
        parse_response(&bytes)
            .map(Reply::Json)
            .ok_or_else(|| AttemptError::Protocol("the reply is not a chat completion".to_string()))
    }

    /// Computes embeddings along `chain`; first success wins. Returns the raw OpenAI body.
    pub async fn embeddings(
        &self,
        chain: &[usize],
        body: serde_json::Value,
        attempts: &mut Vec<Attempt>,
    ) -> Result<serde_json::Value, RouteError> {
        for &index in chain {
            let Some(target) = self.targets.get(index) else {
                continue;
            };
            let started = Instant::now();
            let mut body = body.clone();
            if let Some(model) = &target.model
                && body.get("model").is_none()
            {
                body["model"] = serde_json::Value::String(model.clone());
            }
            let result = async {
                let response = self
                    .client
                    .post(target, "/embeddings", Bytes::from(body.to_string()), &[])
                    .await?;
                let bytes = read_body(response.into_body(), target.timeout).await?;
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map_err(|err| AttemptError::Protocol(err.to_string()))
            }
            .await;
            let elapsed = started.elapsed();
            match result {
                Ok(value) => {
                    attempts.push(Attempt {
                        target: target.name.clone(),
                        outcome: "ok".into(),
                        status: Some(200),
                        elapsed,
                    });
                    return Ok(value);
                }
                Err(err) => {
                    attempts.push(Attempt {
                        target: target.name.clone(),
                        outcome: err.to_string(),
                        status: err.status(),
                        elapsed,
                    });
                    if !err.is_retryable() {
                        return Err(RouteError::Refused {
                            target: target.name.clone(),
                            status: err.status().unwrap_or(400),
                            message: err.upstream_message().unwrap_or_else(|| err.to_string()),
                        });
                    }
                }
            }
        }
        Err(RouteError::AllFailed {
            attempts: attempts.clone(),
        })
    }
}
