//! The bounded ring of recent requests behind `GET /admin/requests` and
//! `GET /admin/requests/{id}`: each request's outcome, step timings, cost and the stage
//! versions that served it.
//!
//! Bounded in bytes as well as in records: what a client, a stage or an upstream chose (an
//! error message quoting a 1 MiB model name, a stage's rejection, a stage-chosen model) is
//! cut when the record is kept, and so are the step lists, so a record costs a few KiB at
//! most whatever the request carried.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::sync::lock;

/// One stage phase of a request.
#[derive(Clone, Debug)]
pub struct StageStep {
    /// `name@version`.
    pub label: Arc<str>,
    /// `request` or `response`.
    pub phase: &'static str,
    /// When it started, after the request's start.
    pub at: Duration,
    /// Wall time.
    pub elapsed: Duration,
    /// Fuel burned, when metered.
    pub fuel: Option<u64>,
    /// `next`, `respond`, `ok`, `rejected`, a failure kind or `skipped:<kind>`.
    pub outcome: std::borrow::Cow<'static, str>,
}

/// One call a stage made to a service (`[services.NAME]`) during a request.
#[derive(Clone, Debug)]
pub struct ServiceStep {
    /// The service.
    pub service: Arc<str>,
    /// The stage that called it (`name@version`).
    pub stage: Arc<str>,
    /// What was asked: `POST /query` (path without its query, cut at 120 bytes).
    pub asked: String,
    /// The answer's status; `None` when no URL answered.
    pub status: Option<u16>,
    /// `hit` when the service's cache answered, else `miss` or `bypass`.
    pub cache: &'static str,
    /// Attempts made (0 for a cache hit).
    pub attempts: u32,
    /// `ok`, or why the call failed (the router's error code).
    pub outcome: &'static str,
    /// When it started.
    pub started: tokio::time::Instant,
    /// When it started, after the request's start (set when the request's record is made).
    pub at: Duration,
    /// Wall time.
    pub elapsed: Duration,
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
    /// The outcome's class (`ok`, `timeout`, `status_5xx`, `hedge_cancelled`, ...).
    pub kind: &'static str,
    /// When it was sent, after the request's start.
    pub at: Duration,
    /// How long it took.
    pub elapsed: Duration,
    /// The span id its `traceparent` named.
    pub span: [u8; 8],
    /// The upstream's own error message, for the exported span only (not shown by
    /// `/admin/requests`: it may speak of the operator's credentials).
    pub upstream_message: Option<String>,
}

/// The LLM step of a request.
#[derive(Clone, Debug)]
pub struct LlmStep {
    /// The model asked of it (after the request phase's stages).
    pub model: String,
    /// When it started, after the request's start.
    pub at: Duration,
    /// Time in it: cache, routing, upstream.
    pub elapsed: Duration,
    /// Input and output tokens of the answer, as its upstream reported them.
    pub usage: Option<(u32, u32)>,
}

/// What one request did, as kept in the ring.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// `x-request-id`.
    pub id: Arc<str>,
    /// The W3C trace the request joined (its span id: the request's span).
    pub trace: Option<super::TraceParent>,
    /// The client's span (from its `traceparent`), the request span's parent.
    pub parent: Option<[u8; 8]>,
    /// When it arrived.
    pub started: SystemTime,
    /// The request method.
    pub method: http::Method,
    /// What it asked for: `/v1/chat/completions`, or `/v1/jobs` for a background job's run.
    pub endpoint: &'static str,
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
    /// For a relayed stream, the time to its end (its record is made then).
    pub stream: Option<Duration>,
    /// Time spent waiting on upstreams.
    pub upstream: Duration,
    /// How the cache was involved.
    pub cache: Option<&'static str>,
    /// What the request cost, pico-dollars (`None` before admission).
    pub cost: Option<u64>,
    /// Each stage phase, in order.
    pub stages: Vec<StageStep>,
    /// The LLM step, when it ran.
    pub llm: Option<LlmStep>,
    /// Each upstream attempt, in order.
    pub attempts: Vec<AttemptStep>,
    /// Each call a stage made to a service, in the order they ended.
    pub services: Vec<ServiceStep>,
}

/// Bytes of an error message kept (longer ones are cut, marked with how much was cut).
pub const MESSAGE_MAX_BYTES: usize = 1024;
/// Bytes of a code, a model name or an outcome kept.
pub const NAME_MAX_BYTES: usize = 256;
/// Stage phases and upstream attempts kept per record (the first ones).
pub const STEPS_MAX: usize = 64;

/// Cuts `text` to at most `max` bytes on a character boundary, saying how much was cut, in
/// a new allocation (a truncated `String` would keep its whole buffer).
fn cut(text: &mut String, max: usize) {
    if let std::borrow::Cow::Owned(short) = crate::host_api::truncate_for_log(text, max) {
        *text = short;
    }
}

/// Keeps the first `max` items of `steps`, releasing the rest of its buffer.
fn keep_first<T>(steps: &mut Vec<T>, max: usize) {
    if steps.len() > max {
        steps.truncate(max);
        steps.shrink_to_fit();
    }
}

/// [`cut`] for a text that is usually static.
fn cut_cow(text: &mut std::borrow::Cow<'static, str>, max: usize) {
    if text.len() > max {
        cut(text.to_mut(), max);
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl RequestRecord {
    /// The record cut to the ring's bounds: messages to [`MESSAGE_MAX_BYTES`], codes, models
    /// and outcomes to [`NAME_MAX_BYTES`], steps to [`STEPS_MAX`] of each kind.
    pub fn bounded(mut self) -> RequestRecord {
        if let Some((code, message)) = &mut self.error {
            cut(code, NAME_MAX_BYTES);
            cut(message, MESSAGE_MAX_BYTES);
        }
        if let Some(key) = &mut self.key {
            cut(key, NAME_MAX_BYTES);
        }
        if let Some(llm) = &mut self.llm {
            cut(&mut llm.model, NAME_MAX_BYTES);
        }
        keep_first(&mut self.stages, STEPS_MAX);
        for step in &mut self.stages {
            cut_cow(&mut step.outcome, NAME_MAX_BYTES);
        }
        keep_first(&mut self.services, STEPS_MAX);
        keep_first(&mut self.attempts, STEPS_MAX);
        for attempt in &mut self.attempts {
            cut(&mut attempt.model, NAME_MAX_BYTES);
            cut_cow(&mut attempt.outcome, NAME_MAX_BYTES);
            if let Some(message) = &mut attempt.upstream_message {
                cut(message, MESSAGE_MAX_BYTES);
            }
        }
        self
    }

    /// The one-line summary `GET /admin/requests` lists.
    pub fn summary(&self) -> Value {
        json!({
            "id": &*self.id,
            "trace_id": self.trace.map(|t| t.trace_id_hex()),
            "started_ms": self
                .started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            "endpoint": format!("{} {}", self.method, self.endpoint),
            "route": self.route.as_deref(),
            "key": self.key,
            "status": self.status,
            "error_code": self.error.as_ref().map(|(code, _)| code),
            "duration_ms": ms(self.elapsed),
            "stream_ms": self.stream.map(ms),
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
        out["llm_ms"] = json!(self.llm.as_ref().map(|llm| ms(llm.elapsed)));
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
        out["services"] = self
            .services
            .iter()
            .map(|call| {
                json!({
                    "service": &*call.service,
                    "stage": &*call.stage,
                    "asked": call.asked,
                    "status": call.status,
                    "cache": call.cache,
                    "attempts": call.attempts,
                    "outcome": call.outcome,
                    "duration_ms": ms(call.elapsed),
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

    /// Keeps `record`, cut to the ring's bounds, dropping the oldest when full; returns it
    /// as cut (also when the ring keeps nothing), for export.
    pub fn push(&self, record: RequestRecord) -> Arc<RequestRecord> {
        let record = Arc::new(record.bounded());
        if self.capacity == 0 {
            return record;
        }
        let mut ring = lock(&self.ring);
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(record.clone());
        record
    }

    /// The newest records first, at most `limit`, optionally only failed ones (status ≥ 400,
    /// or a stream that ended with an error after its 200) or one route's.
    pub fn list(
        &self,
        limit: usize,
        failed_only: bool,
        route: Option<&str>,
    ) -> Vec<Arc<RequestRecord>> {
        let ring = lock(&self.ring);
        ring.iter()
            .rev()
            .filter(|r| !failed_only || r.status >= 400 || r.error.is_some())
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
            parent: None,
            started: SystemTime::UNIX_EPOCH,
            method: http::Method::POST,
            endpoint: "/v1/chat/completions",
            route: Some("demo".into()),
            key: None,
            status,
            error: None,
            elapsed: Duration::from_millis(3),
            stream: None,
            upstream: Duration::from_millis(2),
            cache: Some("miss"),
            cost: Some(0),
            stages: vec![StageStep {
                label: "a@1".into(),
                phase: "request",
                at: Duration::ZERO,
                elapsed: Duration::from_micros(50),
                fuel: Some(10),
                outcome: "next".into(),
            }],
            llm: Some(LlmStep {
                model: "demo".into(),
                at: Duration::from_micros(50),
                elapsed: Duration::from_millis(2),
                usage: None,
            }),
            attempts: Vec::new(),
            services: Vec::new(),
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

    #[test]
    fn client_chosen_strings_and_step_lists_are_cut_when_kept() {
        let recent = Recent::new(4);
        let huge = "é".repeat(1 << 19); // 1 MiB, two bytes a character
        let long = "é".repeat(2048);
        let mut big = record("big", 404);
        big.error = Some((long.clone(), format!("the model `{huge}` does not exist")));
        big.key = Some(long.clone());
        big.stages = vec![big.stages[0].clone(); 100];
        big.stages[0].outcome = long.clone().into();
        let attempt = AttemptStep {
            target: "t".into(),
            model: long.clone(),
            status: Some(500),
            outcome: long.clone().into(),
            kind: "status_5xx",
            at: Duration::ZERO,
            elapsed: Duration::from_millis(1),
            span: [1; 8],
            upstream_message: Some(huge.clone()),
        };
        big.attempts = vec![attempt; 100];
        recent.push(big);
        let kept = recent.get("big").expect("kept");
        let (code, message) = kept.error.clone().expect("an error");
        let slack = "… [1048576 bytes cut]".len();
        assert!(
            message.len() <= MESSAGE_MAX_BYTES + slack,
            "{}",
            message.len()
        );
        assert!(message.capacity() <= 2 * (MESSAGE_MAX_BYTES + slack));
        assert!(message.starts_with("the model `éé"));
        assert!(
            message.ends_with(" bytes cut]"),
            "{}",
            &message[message.len() - 40..]
        );
        assert!(code.len() <= NAME_MAX_BYTES + slack);
        assert!(kept.key.as_ref().expect("a key").len() <= NAME_MAX_BYTES + slack);
        assert_eq!(kept.stages.len(), STEPS_MAX);
        assert!(kept.stages[0].outcome.len() <= NAME_MAX_BYTES + slack);
        assert_eq!(kept.attempts.len(), STEPS_MAX);
        assert!(kept.attempts.capacity() <= 2 * STEPS_MAX);
        assert!(kept.attempts.iter().all(|a| {
            a.model.len() <= NAME_MAX_BYTES + slack
                && a.outcome.len() <= NAME_MAX_BYTES + slack
                && a.upstream_message
                    .as_ref()
                    .is_some_and(|m| m.len() <= MESSAGE_MAX_BYTES + slack)
        }));
        // Short strings are kept as they are.
        recent.push(record("small", 200));
        assert_eq!(recent.get("small").expect("kept").stages[0].outcome, "next");
        let mut text = "abc".to_string();
        cut(&mut text, 3);
        assert_eq!(text, "abc");
        cut(&mut text, 2);
        assert_eq!(text, "ab… [1 bytes cut]");
    }
}
