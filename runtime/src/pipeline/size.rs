//! The size of what a stage returns, for `sandbox.stage_output_max_bytes`.
//!
//! Measured as the byte-bounded caches weigh a value ([`weigh`]): the lengths of its strings
//! plus [`weigh::RECORD`] per record (so a million empty messages are not free).
//! The guest's value has already been copied into the host when it is measured, but that
//! copy is bounded by the instance's memory cap; the cap here bounds what travels on, to the
//! next stage, the upstream, the output cache and the client.

use crate::cache::weigh;
use crate::stages::{FailureKind, RequestPhase, StageFailure};
use crate::wit::v2::ChunkDone;
use crate::wit::{ChatRequest, ChatResponse, Rejection, RequestOutcome, StageError};

/// What a stage returns, measured: a [`weigh`] of it.
pub(super) trait Size {
    /// Its weight, bytes.
    fn size(&self) -> usize;
}

impl Size for str {
    fn size(&self) -> usize {
        self.len()
    }
}

impl Size for String {
    fn size(&self) -> usize {
        self.len()
    }
}

impl Size for ChatRequest {
    fn size(&self) -> usize {
        weigh::request(self)
    }
}

impl Size for ChatResponse {
    fn size(&self) -> usize {
        weigh::response(self)
    }
}

impl Size for Rejection {
    fn size(&self) -> usize {
        weigh::rejection(self)
    }
}

impl Size for RequestOutcome {
    fn size(&self) -> usize {
        match self {
            RequestOutcome::Next(request) => request.size(),
            RequestOutcome::Respond(response) => response.size(),
        }
    }
}

impl Size for RequestPhase {
    fn size(&self) -> usize {
        self.outcome.size() + self.state.as_ref().map_or(0, Vec::len)
    }
}

impl Size for ChunkDone {
    fn size(&self) -> usize {
        self.state.len()
            + self
                .deltas
                .iter()
                .map(|d| d.text.len() + weigh::RECORD)
                .sum::<usize>()
    }
}

impl Size for StageError {
    fn size(&self) -> usize {
        match self {
            StageError::Reject(rejection) => rejection.size(),
            StageError::Fail(message) => message.size(),
        }
    }
}

/// The result of a phase call of `stage`, with an output (its value or its error) over the
/// call's limit turned into a `stage_output_too_large` failure; see [`check`].
pub(super) fn bound<T: Size>(
    stage: &str,
    cap: usize,
    input: usize,
    result: Result<Result<T, StageError>, StageFailure>,
) -> Result<Result<T, StageError>, StageFailure> {
    match &result {
        Ok(Ok(output)) => check(stage, cap, input, output)?,
        Ok(Err(error)) => check(stage, cap, input, error)?,
        Err(_) => {}
    }
    result
}

/// `Err` (a `stage_output_too_large` failure of `stage`) when `output` is over the call's
/// limit: `input` (the size of what the stage was given) plus `cap`. A stage may always pass on
/// what it was given and add up to `cap` to it: a system prompt added to a prompt at the body
/// limit, or a response phase on a large upstream answer, is not a failure, and what leaves a
/// pipeline of N stages is at most its input plus N times the cap.
pub(super) fn check(
    stage: &str,
    cap: usize,
    input: usize,
    output: &(impl Size + ?Sized),
) -> Result<(), StageFailure> {
    let limit = input.saturating_add(cap);
    let size = output.size();
    if size <= limit {
        return Ok(());
    }
    Err(StageFailure::new(
        stage,
        FailureKind::OutputTooLarge,
        format!(
            "the stage returned {size} bytes, over its limit of {limit} (the {input} bytes it \
             was given plus sandbox.stage_output_max_bytes, {cap})"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::{Choice, Message};

    fn request(text: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![Message::text("user", text)],
            ..ChatRequest::hi("m")
        }
    }

    fn response(text: &str) -> ChatResponse {
        ChatResponse {
            id: "chatcmpl-1".into(),
            model: "m".into(),
            created: 0,
            choices: vec![Choice {
                index: 0,
                message: Message::text("assistant", text),
                finish_reason: Some("stop".into()),
                extra: "{}".into(),
            }],
            usage: None,
            extra: "{}".into(),
        }
    }

    // That every string of a request counts is `cache::weigh`'s test (`every_string_counts`).

    #[test]
    fn every_string_of_a_response_counts_the_id_too() {
        let mut response = response("");
        let base = response.size();
        assert_eq!(self::response("hello").size(), base + 5);
        let old_id = response.id.len();
        response.id = "x".repeat(1 << 20);
        assert_eq!(response.size(), base - old_id + (1 << 20));
        response.choices.push(Choice {
            index: 1,
            message: Message::text("assistant", ""),
            finish_reason: None,
            extra: String::new(),
        });
        assert!(response.size() >= base - old_id + (1 << 20) + 2 * weigh::RECORD);
    }

    #[test]
    fn empty_items_are_not_free() {
        let mut request = request("");
        let one = request.size();
        request.messages = vec![Message::text("", ""); 1000];
        assert!(request.size() >= one + 999 * weigh::RECORD);
    }

    #[test]
    fn an_error_over_the_limit_is_a_failure_too() {
        let fail: Result<Result<String, StageError>, StageFailure> =
            Ok(Err(StageError::Fail("m".repeat(200))));
        let failure = bound("s@1", 100, 0, fail).unwrap_err();
        assert_eq!(failure.kind, FailureKind::OutputTooLarge);
        let reject = Ok(Err(StageError::Reject(Rejection {
            status: 400,
            code: "c".into(),
            message: "m".repeat(10),
        })));
        assert!(matches!(
            bound::<String>("s@1", 100, 0, reject),
            Ok(Err(StageError::Reject(_)))
        ));
        let answer: Result<Result<String, StageError>, StageFailure> = Ok(Ok("x".repeat(101)));
        assert!(bound("s@1", 100, 0, answer).is_err());
    }

    #[test]
    fn the_limit_is_the_input_plus_the_cap() {
        let output = "x".repeat(100);
        assert!(check("s@1", 100, 0, output.as_str()).is_ok());
        let failure = check("s@1", 99, 0, output.as_str()).unwrap_err();
        assert_eq!(failure.kind, FailureKind::OutputTooLarge);
        assert_eq!(failure.kind.code(), "stage_output_too_large");
        assert!(failure.detail.contains("returned 100 bytes"), "{failure}");
        // Passing on a large input, with a little added, is never a failure.
        assert!(check("s@1", 10, 90, output.as_str()).is_ok());
        assert!(check("s@1", 10, 89, output.as_str()).is_err());
        assert!(check("s@1", usize::MAX, usize::MAX, output.as_str()).is_ok());
    }
}
