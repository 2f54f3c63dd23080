//! One service call: the cache, the attempt loop, and the bill.
//!
//! Every attempt that reached the service (it answered, or it timed out or was dropped after
//! the request was handed over) costs `price_per_call_usd`; one that never connected costs
//! nothing. The bill is settled exactly once, by the [`Tab`] that owns the attempt record, in
//! its `Drop`: a call the stage's deadline cuts midway (its future dropped) is billed for what
//! had reached the service by then.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http::header::{HeaderName, HeaderValue};
use tokio::time::Instant;

use super::Service;
use crate::cost::{Entry, Meter};
use crate::router::{Attempt, RouteError, ServiceCall, ServiceReply};
use crate::telemetry::ServiceStep;
use crate::wit::Usage;

/// What a stage asked of a service.
#[derive(Debug)]
pub struct ServiceRequest {
    /// The method.
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// The stage's headers (hop-by-hop ones and `host` removed).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body, whole and bounded.
    pub body: Bytes,
}

/// Who calls, for whom, and by when.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The request's meter: the price is added to it, the call noted on it.
    pub meter: Arc<Meter>,
    /// The calling stage's label.
    pub stage: Arc<str>,
    /// The request's route (for the ledger).
    pub route: Arc<str>,
    /// What is left of the stage's call deadline; it shortens the service's own deadline.
    pub deadline: Option<Duration>,
}

impl Service {
    /// Calls the service: from its cache when it has the answer, else along its URLs under
    /// its policy. A success status fills the cache.
    pub async fn call(
        &self,
        request: ServiceRequest,
        ctx: &CallContext,
    ) -> Result<ServiceReply, RouteError> {
        let started = Instant::now();
        let ServiceRequest {
            method,
            path,
            mut headers,
            body,
        } = request;
        // The service's own key wins over a header of that name the stage set.
        if self.settings.api_key.is_some() {
            headers.retain(|(name, _)| *name != *self.settings.api_key_header);
        }
        let key = (self.cache.as_ref())
            .filter(|_| matches!(method, Method::GET | Method::HEAD | Method::POST))
            .map(|_| cache_key(&method, &path, &body));
        let call = ServiceCall {
            method,
            path,
            headers,
            body,
            max_response_bytes: usize::try_from(self.settings.max_response_bytes)
                .unwrap_or(usize::MAX),
            retry_on: self.settings.policy.retry_on,
        };
        let asked = crate::router::asked(&call);
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && let Some(hit) = cache.get(key)
        {
            let elapsed = started.elapsed();
            crate::telemetry::service(&self.name, "hit", elapsed);
            ctx.meter.note_service(ServiceStep {
                service: self.name.clone(),
                stage: ctx.stage.clone(),
                asked,
                status: Some(hit.status),
                cache: "hit",
                attempts: 0,
                outcome: "ok",
                started,
                at: Duration::ZERO,
                elapsed,
            });
            return Ok((*hit).clone());
        }
        // Nothing is sent for a request its key did not admit (the request is refused).
        if let Err(err) = ctx.meter.admitted().await {
            return Err(match err {
                crate::cost::CostError::RateLimited { retry_after_s, .. } => {
                    RouteError::RateLimited { retry_after_s }
                }
                _ => RouteError::StateUnavailable,
            });
        }
        let mut tab = Tab {
            service: self,
            ctx,
            attempts: Vec::new(),
            step: ServiceStep {
                service: self.name.clone(),
                stage: ctx.stage.clone(),
                asked,
                status: None,
                cache: if key.is_some() { "miss" } else { "bypass" },
                attempts: 0,
                outcome: "cancelled",
                started,
                at: Duration::ZERO,
                elapsed: Duration::ZERO,
            },
        };
        let result = (self.router)
            .service(&self.plan, &call, ctx.deadline, &mut tab.attempts)
            .await;
        match &result {
            Ok(reply) => {
                tab.step.status = Some(reply.status);
                tab.step.outcome = "ok";
                if let (Some(cache), Some(key)) = (&self.cache, key)
                    && (200..300).contains(&reply.status)
                {
                    cache.insert(key, Arc::new(reply.clone()));
                }
            }
            Err(err) => tab.step.outcome = err.code(),
        }
        result
    }
}

/// The cache key of a call: blake3 over the method, the path and the body, each
/// length-prefixed so no two calls share an encoding.
fn cache_key(method: &Method, path: &str, body: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for part in [method.as_str().as_bytes(), path.as_bytes(), body] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}

/// A call's attempt record, which bills and notes the call when it is dropped: at its end, or
/// midway when the stage's deadline drops the call.
struct Tab<'a> {
    /// The service.
    service: &'a Service,
    /// The caller.
    ctx: &'a CallContext,
    /// Every attempt, the one in flight included.
    attempts: Vec<Attempt>,
    /// The call's record, completed as it goes.
    step: ServiceStep,
}

impl Drop for Tab<'_> {
    fn drop(&mut self) {
        let reached = self
            .attempts
            .iter()
            .filter(|a| {
                a.outcome.is_attempt() && (a.status.is_some() || a.outcome.billed_without_usage())
            })
            .count() as u64;
        let made = self
            .attempts
            .iter()
            .filter(|a| a.outcome.is_attempt())
            .count();
        self.step.attempts = u32::try_from(made).unwrap_or(u32::MAX);
        self.step.elapsed = self.step.started.elapsed();
        crate::telemetry::service(&self.service.name, self.step.outcome, self.step.elapsed);
        if let Some(price) = self.service.settings.price_per_call
            && reached > 0
        {
            let cost = price.saturating_mul(reached);
            self.ctx.meter.add_compute(cost);
            self.service.ledger.record(Entry {
                ts: crate::clock::unix_secs(),
                key: self.ctx.meter.key_name().to_string(),
                route: self.ctx.route.to_string(),
                model: format!("service:{}", self.service.name),
                usage: Usage {
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    total_tokens: 0,
                    cached_tokens: 0,
                },
                cache_writes: 0,
                cost,
                cache: self.step.cache,
                estimated: false,
            });
        }
        let step = self.step.clone();
        self.ctx.meter.note_service(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_are_prefix_free() {
        let a = cache_key(&Method::POST, "/q", b"ab");
        assert_eq!(a, cache_key(&Method::POST, "/q", b"ab"));
        assert_ne!(a, cache_key(&Method::POST, "/qa", b"b"));
        assert_ne!(a, cache_key(&Method::GET, "/q", b"ab"));
    }
}
