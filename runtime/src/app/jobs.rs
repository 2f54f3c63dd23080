//! Running one attempt of a background job: [`App::chat`] as the key that submitted it, the
//! answer kept as the synchronous endpoint would have sent it, and whether another attempt
//! may do better decided by the error itself ([`ClientFacing::retryable`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;

use super::App;
use super::chat::{ChatCall, ChatReply, Ended};
use crate::cache::CacheControl;
use crate::error::ClientFacing;
use crate::openai::ApiError;
use crate::queue::{Executor, Outcome, Run, Verdict};

impl App {
    /// The queue's executor: runs each attempt through [`App::chat`]. It holds the app
    /// weakly, so the workers never keep it alive.
    pub fn job_executor(self: &Arc<Self>) -> Arc<dyn Executor> {
        let app = Arc::downgrade(self);
        Arc::new(move |run: Run| execute(app.clone(), run))
    }
}

/// Runs one attempt of a job through the pipeline, as the synchronous endpoint would, and
/// classifies the answer: an answer succeeded; an error another attempt may fix
/// ([`ClientFacing::retryable`]) is retried; any other is final.
async fn execute(app: Weak<App>, run: Run) -> Outcome {
    let Some(app) = app.upgrade() else {
        return outcome(Verdict::Retry, 503, None, None, 0, None);
    };
    let snap = app.snapshot();
    let account = if snap.accounts.auth_required() {
        match snap.accounts.all().find(|a| a.name() == run.spec.owner) {
            Some(account) => Some(account.clone()),
            None => {
                let err = ApiError::new(
                    401,
                    "authentication_error",
                    "invalid_api_key",
                    format!(
                        "the key `{}` that submitted this job is no longer configured",
                        run.spec.owner
                    ),
                );
                return failed(&err, Verdict::Fail, 0);
            }
        }
    } else {
        None
    };
    let header = |name: &str| {
        run.spec
            .headers
            .iter()
            .rev()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .find_map(|(_, value)| HeaderValue::from_str(value).ok())
    };
    let cache_control = header("cache-control")
        .and_then(|v| v.to_str().ok().map(CacheControl::parse))
        .unwrap_or_default();
    let request_id: Arc<str> = format!("{}-{}", run.id, run.attempt).into();
    let call = ChatCall {
        snapshot: snap,
        account,
        request_id: request_id.clone(),
        trace: None,
        parent: None,
        cache_control,
        deadline: header("x-weir-deadline-ms"),
        tracestate: None,
        body: Bytes::from(crate::openai::to_bytes(&run.spec.request)),
    };
    let started = tokio::time::Instant::now();
    let mut chat = app.chat(call).await;
    let stream_end = chat.report.stream_end.take();
    let cost_pico = chat.report.cost.unwrap_or(0);
    // The run's spans, when its trace is sampled (a job run is in no recent-requests ring).
    if crate::telemetry::exported(chat.report.trace) {
        let (status, error) = match &chat.reply {
            Err(err) => {
                let err = ApiError::from_facing(err);
                (err.status, Some((err.code, err.message)))
            }
            Ok(_) => (200, None),
        };
        let record = chat.report.into_record(Ended {
            id: request_id,
            method: http::Method::POST,
            endpoint: "/v1/jobs",
            status,
            error,
            started,
            elapsed: started.elapsed(),
            stream: None,
        });
        crate::telemetry::export(Arc::new(record.bounded()));
    }
    match chat.reply {
        Ok(ChatReply::Whole(answer)) => {
            // A job's request is never streamed, unless a stage asked for SSE: its result
            // then has no JSON body, as the synchronous endpoint's would not.
            let body = (!answer.as_sse).then(|| answer.to_json());
            outcome(Verdict::Succeeded, 200, body, None, cost_pico, None)
        }
        Ok(ChatReply::Stream(mut events)) => {
            // Read to the end (the stream is settled there, its cost final); SSE is no JSON
            // body.
            while events.recv().await.is_some() {}
            let end = match stream_end {
                Some(end) => end.await.ok(),
                None => None,
            };
            let cost_pico = end.as_ref().map_or(cost_pico, |end| end.cost);
            match end.and_then(|end| end.error) {
                Some((code, message)) => {
                    let err = ApiError::new(502, "upstream_error", &code, message);
                    failed(&err, Verdict::Retry, cost_pico)
                }
                None => outcome(Verdict::Succeeded, 200, None, None, cost_pico, None),
            }
        }
        Err(err) => {
            let verdict = if err.retryable() {
                Verdict::Retry
            } else {
                Verdict::Fail
            };
            failed(&ApiError::from_facing(&err), verdict, cost_pico)
        }
    }
}

/// A failed attempt: the error body the synchronous endpoint would have sent, and its
/// `Retry-After`.
fn failed(err: &ApiError, verdict: Verdict, cost_pico: u64) -> Outcome {
    let retry_after = err.retry_after().map(Duration::from_secs);
    let error = format!("{} {}: {}", err.status, err.code, err.message);
    outcome(
        verdict,
        err.status,
        Some(err.to_json()),
        Some(error),
        cost_pico,
        retry_after,
    )
}

/// An attempt's outcome; a failure without an error body reads `{status} error: no message`.
fn outcome(
    verdict: Verdict,
    status: u16,
    body: Option<serde_json::Value>,
    error: Option<String>,
    cost_pico: u64,
    retry_after: Option<Duration>,
) -> Outcome {
    let error = match error {
        Some(error) => Some(error),
        None if verdict != Verdict::Succeeded => Some(format!("{status} error: no message")),
        None => None,
    };
    Outcome {
        verdict,
        status,
        body,
        error,
        cost_pico,
        retry_after,
    }
}
