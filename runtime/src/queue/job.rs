//! One job as it is stored: what was asked, where it stands, every attempt and what came of
//! it. Stored as JSON in the queue's redb table, so a field added later with
//! `#[serde(default)]` reads old records.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for a worker (or for its retry's backoff to pass).
    Queued,
    /// An attempt is under way.
    Running,
    /// An attempt succeeded; the response is kept.
    Succeeded,
    /// An attempt failed in a way another attempt cannot fix (the request itself is wrong).
    Failed,
    /// Every attempt allowed failed; each one's error is kept. `POST /v1/jobs/{id}/retry`
    /// queues it again.
    Dead,
    /// Cancelled while queued (`DELETE /v1/jobs/{id}`).
    Cancelled,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 6] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Dead,
        Status::Cancelled,
    ];

    /// The name used in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Dead => "dead",
            Status::Cancelled => "cancelled",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether nothing more will happen to the job (short of a retry of a dead one).
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }
}

/// What a client submitted: everything needed to run the job, and nothing secret (the API
/// key is not kept, only its name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The route (the request's `model`).
    pub route: String,
    /// The name of the API key that submitted it (`-` when auth is off); the job runs as
    /// that key.
    pub owner: String,
    /// 0 to 9; higher runs first. Equal priorities run in submission order.
    pub priority: u8,
    /// The chat completion body, without the job-only fields, never streamed.
    pub request: Value,
    /// Request headers that change how it runs (`cache-control`, `x-weir-deadline-ms`).
    pub headers: Vec<(String, String)>,
    /// Where the result is POSTed when the job ends.
    pub callback_url: Option<String>,
    /// The client's idempotency key: the same key (for the same owner) names the same job.
    pub idempotency_key: Option<String>,
}

/// One attempt at running a job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started (Unix ms).
    pub started_ms: u64,
    /// When it ended (Unix ms); `None` while running, or when the host stopped during it.
    pub finished_ms: Option<u64>,
    /// The HTTP status the synchronous endpoint would have answered.
    pub status: Option<u16>,
    /// Why it failed (`None` when it succeeded).
    pub error: Option<String>,
    /// What it cost, pico-dollars.
    pub cost_pico: u64,
}

/// Where a job's callback delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallbackState {
    /// Waiting to be delivered (or for a redelivery's backoff to pass).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every delivery allowed failed.
    Failed,
}

/// A job's callback delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    /// Where it stands.
    pub state: CallbackState,
    /// Deliveries tried.
    pub attempts: u32,
    /// The last delivery's error.
    pub last_error: Option<String>,
    /// When it was delivered (Unix ms).
    pub delivered_ms: Option<u64>,
    /// When the next delivery is due (Unix ms), while pending.
    pub next_ms: Option<u64>,
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `job_` and 24 hex digits.
    pub id: String,
    /// Submission order, for equal priorities.
    pub seq: u64,
    /// What was asked.
    pub spec: JobSpec,
    /// Where it stands.
    pub status: Status,
    /// When it was accepted (Unix ms).
    pub created_ms: u64,
    /// When it reached a terminal status (Unix ms).
    pub finished_ms: Option<u64>,
    /// When the next attempt may start (Unix ms), while a retry waits out its backoff.
    pub next_attempt_ms: Option<u64>,
    /// Every attempt, oldest first, with its error.
    pub attempts: Vec<Attempt>,
    /// Attempts before the current run of attempts: a retried dead job gets `max_attempts`
    /// more.
    #[serde(default)]
    pub attempts_before_retry: u32,
    /// Attempts that were under way when the host stopped and ran again after the restart
    /// (at-least-once: they may have reached the upstream twice).
    #[serde(default)]
    pub duplicate_executions: u32,
    /// What attempts whose claim another node took over cost, pico-dollars (fleet jobs: a
    /// node that lost its claim still paid for its run; its outcome gave way to the other
    /// run's). Kept by the store, not in the job's record.
    #[serde(default, skip_serializing)]
    pub superseded_cost_pico: u64,
    /// The response body of the last attempt that answered (the synchronous endpoint's body,
    /// success or error).
    pub response: Option<Value>,
    /// Its HTTP status.
    pub response_status: Option<u16>,
    /// The callback delivery, when the job has a `callback_url` and has ended.
    pub callback: Option<Callback>,
}

impl Job {
    /// What every attempt cost, pico-dollars.
    pub fn cost_pico(&self) -> u64 {
        let attempts: u64 = self.attempts.iter().map(|a| a.cost_pico).sum();
        attempts.saturating_add(self.superseded_cost_pico)
    }

    /// Attempts in the current run (since the last retry of a dead job).
    pub fn attempts_in_run(&self) -> u32 {
        (self.attempts.len() as u32).saturating_sub(self.attempts_before_retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_by_name() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("done"), None);
        assert!(!Status::Queued.is_terminal() && !Status::Running.is_terminal());
        assert!(Status::Dead.is_terminal() && Status::Cancelled.is_terminal());
    }
}
