//! A call to a stage's service (`[services.NAME]`) as the attempt loop sees it: the guest's
//! method, path, headers and body sent to each URL in turn, the answer read whole within the
//! service's byte limit. A status the service's `retry_on` does not hold (a 404, a 400) is the
//! service's answer, handed to the stage as it is; a status it holds, a timeout, a refused
//! connection or an oversized answer is a failed attempt, retried elsewhere like a model's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::exchange::{Exchange, Left};
use super::{Attempt, TargetState};
use super::{RouteError, RoutePlan, Router, Walk};
use crate::config::StatusSet;
use crate::providers::{AttemptError, Upstream};
use crate::wit::Usage;

/// One service call, as the stage asked for it.
pub struct ServiceCall {
    /// The method.
    pub method: Method,
    /// The path and query, starting with `/`, appended to each URL.
    pub path: String,
    /// The stage's headers (hop-by-hop and `host` already removed).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body (bounded by the service's `max_request_bytes` before it got here).
    pub body: Bytes,
    /// The largest answer body read, bytes.
    pub max_response_bytes: usize,
    /// The statuses worth another attempt; every other status is the answer.
    pub retry_on: StatusSet,
}

/// A service's answer.
#[derive(Clone, Debug)]
pub struct ServiceReply {
    /// Its status.
    pub status: u16,
    /// Its headers, hop-by-hop ones removed (none for an answer read from a failure status).
    pub headers: HeaderMap,
    /// Its body, whole.
    pub body: Bytes,
}

/// Headers that describe one hop, not the message: never passed between the stage and the
/// service.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

/// What `call` asks, for records: `POST /query` (the path without its query, cut at 120
/// bytes).
pub fn asked(call: &ServiceCall) -> String {
    let path = call.path.split('?').next().unwrap_or("");
    let mut end = path.len().min(120);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} {}", call.method, &path[..end])
}

impl Exchange for ServiceCall {
    type Output = ServiceReply;
    const OPERATION: &'static str = "service";

    fn forward(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    fn tokens(&self, _targets: &[Arc<TargetState>], _chain: &[usize]) -> u32 {
        0
    }

    /// The record's "model" of a service attempt is what was asked: `POST /query`.
    fn model(&self, _target: &Upstream) -> String {
        asked(self)
    }

    fn request(&self, target: &Upstream) -> Result<(String, Bytes), AttemptError> {
        Ok((
            format!("{}{}", target.base_url, self.path),
            self.body.clone(),
        ))
    }

    fn timeout(&self, target: &Upstream) -> Duration {
        target.timeout
    }

    fn method(&self) -> Method {
        self.method.clone()
    }

    fn answer_status(&self, status: u16, body: &Bytes) -> Option<ServiceReply> {
        (!self.retry_on.contains(status)).then(|| ServiceReply {
            status,
            headers: HeaderMap::new(),
            body: body.slice(..body.len().min(self.max_response_bytes)),
        })
    }

    async fn read(
        &self,
        _state: &TargetState,
        response: Response<Incoming>,
        left: Left,
    ) -> Result<ServiceReply, AttemptError> {
        let (parts, body) = response.into_parts();
        let limit = self.max_response_bytes;
        let collected = tokio::time::timeout(left.whole, Limited::new(body, limit).collect())
            .await
            .map_err(|_| AttemptError::Timeout(left.whole))?
            .map_err(|err| {
                AttemptError::Protocol(format!("reading the answer (at most {limit} bytes): {err}"))
            })?;
        let mut headers = parts.headers;
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        Ok(ServiceReply {
            status: parts.status.as_u16(),
            headers,
            body: collected.to_bytes(),
        })
    }

    fn usage(_output: &ServiceReply) -> Option<Usage> {
        None
    }
}

impl Router {
    /// Sends `call` along `plan` (a service's URLs and policy): the same loop as
    /// [`Router::chat`], with `deadline` (what is left of the stage's call and the request)
    /// shortening the service's own.
    pub async fn service(
        &self,
        plan: &RoutePlan,
        call: &ServiceCall,
        deadline: Option<Duration>,
        attempts: &mut Vec<Attempt>,
    ) -> Result<ServiceReply, RouteError> {
        let walk = Walk {
            chain: &plan.chain,
            first: plan.first(&self.targets),
            policy: &plan.policy,
            ahead: None,
        };
        self.run(walk, call, deadline, attempts).await
    }
}
