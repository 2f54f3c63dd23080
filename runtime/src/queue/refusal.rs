//! How the queue's errors reach a client (see [`ClientFacing`]): a full queue, or a key at
//! its own bound, is a 429 with the `Retry-After` the drain rate gives, a store failure a generic 500 (its detail is for
//! the log), an unknown job a 404 and a change the job's status forbids a 409.

use super::{ChangeError, StoreError, SubmitError};
use crate::error::ClientFacing;

/// The message of a store failure: the path and the database's error stay in the log.
const STORE_MESSAGE: &str = "the job store could not be read or written; nothing was changed";

impl ClientFacing for StoreError {
    fn status(&self) -> u16 {
        match self.unavailable {
            true => 503,
            false => 500,
        }
    }

    fn error_type(&self) -> &str {
        "server_error"
    }

    fn code(&self) -> &str {
        match self.unavailable {
            true => "state_unavailable",
            false => "job_store_unavailable",
        }
    }

    fn client_message(&self) -> String {
        match self.unavailable {
            true => "the shared job store (Redis) is unavailable; retry later".to_string(),
            false => STORE_MESSAGE.to_string(),
        }
    }

    fn retry_after_s(&self) -> Option<u64> {
        self.unavailable.then_some(STATE_RETRY_AFTER_S)
    }
}

/// The message of a submission refused while the fleet's Redis is unavailable (the detail
/// stays in the log): not sent (the breaker is open), so not accepted.
const STATE_MESSAGE: &str =
    "the shared job queue (Redis) is unavailable: the job was not accepted; retry later";

/// What a client may do when its submission was sent and no clear answer came back: Redis may
/// still store it, and it would then run.
const STATE_UNKNOWN_ADVICE: &str = "the job may have been accepted and may run; retry with the \
     same idempotency_key, or list your jobs (GET /v1/jobs) before submitting it again";

/// The `Retry-After` of such a refusal, seconds (the breaker's first open period is ~1 s).
const STATE_RETRY_AFTER_S: u64 = 2;

/// A refused submission (`POST /v1/jobs`).
impl ClientFacing for SubmitError {
    fn status(&self) -> u16 {
        match self {
            SubmitError::Full { .. } | SubmitError::KeyFull { .. } => 429,
            SubmitError::Store(err) => err.status(),
            SubmitError::State(_) => 503,
        }
    }

    fn error_type(&self) -> &str {
        match self {
            SubmitError::Full { .. } | SubmitError::KeyFull { .. } => "rate_limit_error",
            SubmitError::Store(err) => err.error_type(),
            SubmitError::State(_) => "server_error",
        }
    }

    fn code(&self) -> &str {
        match self {
            SubmitError::Full { .. } => "queue_full",
            SubmitError::KeyFull { .. } => "key_queue_full",
            SubmitError::Store(err) => err.code(),
            SubmitError::State(_) => "state_unavailable",
        }
    }

    fn client_message(&self) -> String {
        match self {
            SubmitError::Full { retry_after_s, .. }
            | SubmitError::KeyFull { retry_after_s, .. } => {
                format!("{self}; retry after {retry_after_s} s")
            }
            SubmitError::Store(err) => err.client_message(),
            SubmitError::State(crate::state::StateError::Unavailable) => STATE_MESSAGE.to_string(),
            SubmitError::State(crate::state::StateError::Timeout(_)) => format!(
                "the shared job queue (Redis) did not answer in time: {STATE_UNKNOWN_ADVICE}"
            ),
            // An error Redis answered, or a broken connection (the detail is in the log).
            SubmitError::State(_) => format!(
                "the shared job queue (Redis) failed (the error is in weir's log): \
                 {STATE_UNKNOWN_ADVICE}"
            ),
        }
    }

    fn retry_after_s(&self) -> Option<u64> {
        match self {
            SubmitError::Full { retry_after_s, .. }
            | SubmitError::KeyFull { retry_after_s, .. } => Some(*retry_after_s),
            SubmitError::Store(err) => err.retry_after_s(),
            SubmitError::State(_) => Some(STATE_RETRY_AFTER_S),
        }
    }
}

/// A refused cancel or retry (`DELETE /v1/jobs/{id}`, `POST /v1/jobs/{id}/retry`). A full
/// queue reads as at submission, without the "retry after" sentence (the header has it).
impl ClientFacing for ChangeError {
    fn status(&self) -> u16 {
        match self {
            ChangeError::NotFound(_) => 404,
            ChangeError::Conflict { .. } => 409,
            ChangeError::Submit(err) => err.status(),
            ChangeError::Store(err) => err.status(),
        }
    }

    fn error_type(&self) -> &str {
        match self {
            ChangeError::NotFound(_) | ChangeError::Conflict { .. } => "invalid_request_error",
            ChangeError::Submit(err) => err.error_type(),
            ChangeError::Store(err) => err.error_type(),
        }
    }

    fn code(&self) -> &str {
        match self {
            ChangeError::NotFound(_) => "job_not_found",
            ChangeError::Conflict { .. } => "job_conflict",
            ChangeError::Submit(err) => err.code(),
            ChangeError::Store(err) => err.code(),
        }
    }

    fn client_message(&self) -> String {
        match self {
            ChangeError::NotFound(_) => self.to_string(),
            ChangeError::Conflict { .. } => {
                format!("{self}: only a queued job can be cancelled and only a dead job retried")
            }
            ChangeError::Submit(SubmitError::Full { .. } | SubmitError::KeyFull { .. }) => {
                self.to_string()
            }
            ChangeError::Submit(err) => err.client_message(),
            ChangeError::Store(err) => err.client_message(),
        }
    }

    fn retry_after_s(&self) -> Option<u64> {
        match self {
            ChangeError::Submit(err) => err.retry_after_s(),
            ChangeError::Store(err) => err.retry_after_s(),
            _ => None,
        }
    }
}

impl ChangeError {
    /// The store failure behind this refusal, if it is one (logged where it is answered).
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            ChangeError::Store(err) | ChangeError::Submit(SubmitError::Store(err)) => Some(err),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Status;

    #[test]
    fn a_submission_redis_may_have_stored_says_so_and_one_never_sent_says_not_accepted() {
        let never_sent = SubmitError::State(crate::state::StateError::Unavailable);
        assert!(never_sent.client_message().contains("not accepted"));
        let unknown = SubmitError::State(crate::state::StateError::Timeout(
            std::time::Duration::from_secs(2),
        ));
        assert_eq!(unknown.status(), 503);
        assert!(unknown.client_message().contains("may have been accepted"));
    }

    #[test]
    fn a_full_queue_says_when_to_come_back_at_submission_and_on_a_retry() {
        let full = || SubmitError::Full {
            depth: 3,
            max: 3,
            retry_after_s: 7,
        };
        let submit = full();
        assert_eq!(
            (submit.status(), submit.error_type(), submit.code()),
            (429, "rate_limit_error", "queue_full")
        );
        assert_eq!(submit.retry_after_s(), Some(7));
        assert_eq!(
            submit.client_message(),
            "the job queue is full (3 of 3 jobs queued or running); retry after 7 s"
        );
        let retry = ChangeError::Submit(full());
        assert_eq!((retry.status(), retry.retry_after_s()), (429, Some(7)));
        assert_eq!(
            retry.client_message(),
            "the job queue is full (3 of 3 jobs queued or running)"
        );
    }

    #[test]
    fn a_key_at_its_own_bound_is_refused_like_a_full_queue_and_the_message_names_the_bound() {
        let full = SubmitError::KeyFull {
            depth: 4,
            max: 4,
            retry_after_s: 9,
        };
        assert_eq!(
            (full.status(), full.error_type(), full.code()),
            (429, "rate_limit_error", "key_queue_full")
        );
        assert_eq!(full.retry_after_s(), Some(9));
        assert_eq!(
            full.client_message(),
            "this API key has 4 jobs queued or running, its per-key limit is 4 \
             (jobs.max_queued_per_key); retry after 9 s"
        );
        let retry = ChangeError::Submit(full);
        assert_eq!((retry.status(), retry.retry_after_s()), (429, Some(9)));
        assert_eq!(retry.code(), "key_queue_full");
    }

    #[test]
    fn unknown_and_conflicting_jobs_and_store_failures() {
        let missing = ChangeError::NotFound("j1".into());
        assert_eq!((missing.status(), missing.code()), (404, "job_not_found"));
        assert_eq!(missing.client_message(), "no job `j1`");
        let conflict = ChangeError::Conflict {
            id: "j2".into(),
            status: Status::Running,
        };
        assert_eq!((conflict.status(), conflict.code()), (409, "job_conflict"));
        assert_eq!(
            conflict.client_message(),
            "job `j2` is running: only a queued job can be cancelled and only a dead job retried"
        );
        let store = ChangeError::Store(StoreError {
            path: "/secret/jobs.redb".into(),
            message: "disk on fire".into(),
            unavailable: false,
        });
        assert_eq!(
            (store.status(), store.code()),
            (500, "job_store_unavailable")
        );
        assert!(!store.client_message().contains("secret"));
        assert!(store.store_error().is_some());
    }
}
