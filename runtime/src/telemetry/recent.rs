//! The bounded ring of recent requests behind `GET /admin/requests` and
//! `GET /admin/requests/{id}`: each request's outcome, step timings, cost and the stage
//! versions that served it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::sync::lock;

/// One stage phase of a request.
#[derive(Clone, Debug)]
pub struct StageStep {
    /// `name@version`.
    pub label: Arc<str>,
    /// `request` or `response`.
    pub phase: &'static str,
    /// Wall time.
    pub elapsed: Duration,
    /// Fuel burned, when metered.
    pub fuel: Option<u64>,
    /// `next`, `respond`, `ok`, `rejected`, a failure kind or `skipped:<kind>`.
    pub outcome: std::borrow::Cow<'static, str>,
}

/// One upstream attempt of a request.
#[derive(Clone, Debug)]
pub struct AttemptStep {
    /// The target.
    pub target: Arc<str>,
    /// The upstream model asked for.
    pub model: String,
    /// The upstream status, when there was one.
    pub status: Option<u16>,
    /// `ok` or what went wrong.
    pub outcome: std::borrow::Cow<'static, str>,
    /// How long it took.
    pub elapsed: Duration,
}

/// What one request did, as kept in the ring.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// `x-request-id`.
    pub id: Arc<str>,
    /// The W3C trace the request joined.
    pub trace: Option<super::TraceParent>,
    /// When it arrived, milliseconds since the epoch.
    pub started_ms: u64,
    /// The request method (the path is `/v1/chat/completions`).
    pub method: http::Method,
    /// The route, once known.
    pub route: Option<Arc<str>>,
    /// The key's name, when auth is on and the key was valid.
    pub key: Option<String>,
    /// The response status.
    pub status: u16,
    /// The error code and message when the request failed.
    pub error: Option<(String, String)>,
    /// Time to the response headers.
    pub elapsed: Duration,
    /// Time spent waiting on upstreams.
    pub upstream: Duration,
    /// How the cache was involved.
    pub cache: Option<&'static str>,
    /// What the request cost, pico-dollars (`None` before admission).
    pub cost: Option<u64>,
    /// Each stage phase, in order.
    pub stages: Vec<StageStep>,
    /// Time in the LLM step (cache, routing, upstream).
    pub llm: Option<Duration>,
    /// Each upstream attempt, in order.
    pub attempts: Vec<AttemptStep>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl RequestRecord {
    /// The one-line summary `GET /admin/requests` lists.
    pub fn summary(&self) -> Value {
        json!({
            "id": &*self.id,
            "trace_id": self.trace.map(|t| t.trace_id_hex()),
            "started_ms": self.started_ms,
            "endpoint": format!("{} /v1/chat/completions", self.method),
            "route": self.route.as_deref(),
            "key": self.key,
            "status": self.status,
            "error_code": self.error.as_ref().map(|(code, _)| code),
            "duration_ms": ms(self.elapsed),
            "cache": self.cache,
            "cost_usd": self.cost.map(crate::config::pico_to_usd),
            "stages": self.versions(),
        })
    }

    /// Everything kept about the request (`GET /admin/requests/{id}`).
    pub fn detail(&self) -> Value {
        let mut out = self.summary();
        let overhead = self.elapsed.saturating_sub(self.upstream);
        out["error"] = match &self.error {
            Some((code, message)) => json!({"code": code, "message": message}),
            None => Value::Null,
        };
        out["overhead_ms"] = json!(ms(overhead));
        out["upstream_ms"] = json!(ms(self.upstream));
        out["llm_ms"] = json!(self.llm.map(ms));
        out["steps"] = self
            .stages
            .iter()
            .map(|step| {
                json!({
                    "stage": &*step.label,
                    "phase": step.phase,
                    "duration_ms": ms(step.elapsed),
                    "fuel": step.fuel,
                    "outcome": step.outcome,
                })
            })
            .collect();
        out["attempts"] = self
            .attempts
            .iter()
            .enumerate()
            .map(|(retry, attempt)| {
                json!({
                    "target": &*attempt.target,
                    "model": attempt.model,
                    "retry": retry,
                    "status": attempt.status,
                    "outcome": attempt.outcome,
                    "duration_ms": ms(attempt.elapsed),
                })
            })
            .collect();
        out
    }

    /// The stage versions that served the request, each once, in order.
    fn versions(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for step in &self.stages {
            if !out.contains(&&*step.label) {
                out.push(&step.label);
            }
        }
        out
    }
}

/// The ring: the newest `capacity` records.
pub struct Recent {
    capacity: usize,
    ring: Mutex<VecDeque<Arc<RequestRecord>>>,
}

impl Recent {
    /// A ring of `capacity` records (0 keeps none).
    pub fn new(capacity: usize) -> Recent {
        Recent {
            capacity,
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
        }
    }

    /// Whether records are kept at all.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Keeps `record`, dropping the oldest when full.
    pub fn push(&self, record: RequestRecord) {
        if self.capacity == 0 {
            return;
        }
        let record = Arc::new(record);
        let mut ring = lock(&self.ring);
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// The newest records first, at most `limit`, optionally only failed ones (status ≥ 400)
    /// or one route's.
    pub fn list(
        &self,
        limit: usize,
        failed_only: bool,
        route: Option<&str>,
    ) -> Vec<Arc<RequestRecord>> {
        let ring = lock(&self.ring);
        ring.iter()
            .rev()
            .filter(|r| !failed_only || r.status >= 400)
            .filter(|r| route.is_none_or(|route| r.route.as_deref() == Some(route)))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The newest record with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<RequestRecord>> {
        let ring = lock(&self.ring);
        ring.iter().rev().find(|r| &*r.id == id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, status: u16) -> RequestRecord {
        RequestRecord {
            id: id.into(),
            trace: Some(crate::telemetry::TraceParent::random()),
            started_ms: 0,
            method: http::Method::POST,
            route: Some("demo".into()),
            key: None,
            status,
            error: None,
            elapsed: Duration::from_millis(3),
            upstream: Duration::from_millis(2),
            cache: Some("miss"),
            cost: Some(0),
            stages: vec![StageStep {
                label: "a@1".into(),
                phase: "request",
                elapsed: Duration::from_micros(50),
                fuel: Some(10),
                outcome: "next".into(),
            }],
            llm: Some(Duration::from_millis(2)),
            attempts: Vec::new(),
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_finds_by_id() {
        let recent = Recent::new(2);
        recent.push(record("a", 200));
        recent.push(record("b", 502));
        recent.push(record("c", 200));
        let ids: Vec<String> = recent
            .list(10, false, None)
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(ids, ["c", "b"]);
        assert!(recent.get("a").is_none());
        assert_eq!(recent.list(10, true, None).len(), 1);
        let detail = recent.get("b").expect("kept").detail();
        assert_eq!(detail["overhead_ms"], json!(1.0));
        assert_eq!(detail["steps"][0]["stage"], "a@1");
        let off = Recent::new(0);
        off.push(record("a", 200));
        assert!(off.list(10, false, None).is_empty());
    }
}
