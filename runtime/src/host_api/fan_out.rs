//! `complete-all`: several `complete` calls at once under one deadline, every result in order.
//!
//! Each call is an ordinary stage `complete` (counted against the stage's and the request's
//! call limits, budgeted, billed, with its route's fallbacks) given the fan-out's deadline as
//! its client deadline, so its route stops trying when the deadline passes. A call still
//! running then is dropped, billed for what its upstream had received (the LLM step settles a
//! dropped call), and reported as 504 `deadline_exceeded`; so is a call whose route gave up
//! because the deadline came.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::HostContext;
use crate::wit::{ChatRequest, ChatResponse, LlmError};

/// Most requests one `complete-all` may carry; more fail, each with `too_many_calls`.
pub const MAX_FAN_OUT: usize = 16;

/// Runs `requests` concurrently for the stage of `host`, within `deadline`.
pub async fn complete_all(
    host: &HostContext,
    requests: Vec<ChatRequest>,
    deadline: Duration,
) -> Vec<Result<ChatResponse, LlmError>> {
    let n = requests.len();
    if n > MAX_FAN_OUT {
        return too_many(n);
    }
    let caller = match host.caller() {
        Ok(caller) => caller,
        Err(refusal) => return vec![Err(refusal); n],
    };
    let started = Instant::now();
    let calls = requests.into_iter().map(|request| {
        let call = host
            .services
            .llm
            .complete(caller.clone(), request, Some(deadline));
        async move {
            match tokio::time::timeout(deadline, call).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(err)) if started.elapsed() < deadline => Err(err),
                Ok(Err(err)) => Err(exceeded(deadline, Some(&err.message))),
                Err(_) => Err(exceeded(deadline, None)),
            }
        }
    });
    join_all(calls).await
}

/// The answer to a batch of `n` requests, over [`MAX_FAN_OUT`]: each refused, none sent.
pub fn too_many(n: usize) -> Vec<Result<ChatResponse, LlmError>> {
    let refusal = LlmError {
        status: 400,
        code: "too_many_calls".to_string(),
        message: format!("complete-all takes at most {MAX_FAN_OUT} requests; got {n}"),
    };
    vec![Err(refusal); n]
}

/// The error of a call the deadline ended.
fn exceeded(deadline: Duration, detail: Option<&str>) -> LlmError {
    let mut message = format!(
        "the call did not finish within the fan-out's deadline ({} ms)",
        deadline.as_millis()
    );
    if let Some(detail) = detail {
        message.push_str(": ");
        message.push_str(detail);
    }
    LlmError {
        status: 504,
        code: "deadline_exceeded".to_string(),
        message,
    }
}
