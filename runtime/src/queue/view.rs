//! A job as clients see it (`GET /v1/jobs/{id}`, the listing and the callback body).

use serde_json::{Value, json};

use super::job::Job;

/// The job resource.
pub fn job_json(job: &Job) -> Value {
    let usd = |pico: u64| pico as f64 / 1e12;
    let attempts: Vec<Value> = job
        .attempts
        .iter()
        .map(|a| {
            json!({
                "started_at_ms": a.started_ms,
                "finished_at_ms": a.finished_ms,
                "status": a.status,
                "error": a.error,
                "cost_usd": usd(a.cost_pico),
            })
        })
        .collect();
    json!({
        "id": job.id,
        "object": "job",
        "status": job.status.as_str(),
        "model": job.spec.route,
        "priority": job.spec.priority,
        "idempotency_key": job.spec.idempotency_key,
        "created_at": job.created_ms / 1000,
        "created_at_ms": job.created_ms,
        "started_at_ms": job.attempts.first().map(|a| a.started_ms),
        "finished_at_ms": job.finished_ms,
        "next_attempt_at_ms": job.next_attempt_ms,
        "attempts": job.attempts.len(),
        "attempt_log": attempts,
        "duplicate_executions": job.duplicate_executions,
        "cost_usd": usd(job.cost_pico()),
        "superseded_cost_usd": usd(job.superseded_cost_pico),
        "cost_pico_usd": job.cost_pico(),
        "response_status": job.response_status,
        "response": job.response,
        "callback": job.spec.callback_url.as_ref().map(|url| {
            let delivery = job.callback.as_ref();
            json!({
                "url": url,
                "state": delivery.map_or("waiting", |c| match c.state {
                    super::job::CallbackState::Pending => "pending",
                    super::job::CallbackState::Delivered => "delivered",
                    super::job::CallbackState::Failed => "failed",
                }),
                "attempts": delivery.map_or(0, |c| c.attempts),
                "last_error": delivery.and_then(|c| c.last_error.clone()),
                "delivered_at_ms": delivery.and_then(|c| c.delivered_ms),
            })
        }),
    })
}
