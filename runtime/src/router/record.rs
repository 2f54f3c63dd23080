//! The record of one call's attempts: for each, its target, outcome, status, time, model and
//! usage, and, when the loop stopped before its last allowed attempt, why.
//!
//! Outcomes are typed ([`Outcome`]); their text ([`Outcome::as_str`]) is what metrics labels,
//! span fields, `/admin/requests` and error messages have always shown, so readers decide on
//! the variant and print the text.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::providers::{AttemptError, Sent};

/// One entry of the attempt record: an attempt against one target, or the loop stopping.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The target's name (`-` when the loop stopped: no target was tried).
    pub target: Arc<str>,
    /// What came of it.
    pub outcome: Outcome,
    /// The upstream status, when there was one.
    pub status: Option<u16>,
    /// How long the attempt took.
    pub elapsed: Duration,
    /// The upstream model the attempt asked for (empty when the loop stopped, or when an
    /// embeddings call named none).
    pub model: String,
    /// Usage the upstream reported: a JSON answer's, or a failed attempt's error body's
    /// (some providers bill a request that failed after generating). For a stream, filled
    /// in by whoever reads it to the end.
    pub usage: Option<crate::wit::Usage>,
    /// Of the usage's prompt tokens, those written to the provider's prompt cache (billed at
    /// the cache-write price; the WIT usage has no field for them).
    pub cache_writes: u32,
    /// When the upstream call was sent, and the span id its `traceparent` named (for the
    /// exported trace); `None` for the loop stopping.
    pub span: Option<(Instant, [u8; 8])>,
    /// The upstream's own error message (`error.message` of its error body), when it failed
    /// with one: kept for the log and the exported attempt span only, since it may speak of
    /// the operator's credentials.
    pub upstream_message: Option<String>,
    /// The text a failed attempt received before it broke off (a stream asked for a JSON
    /// request, cut midway): counted in its estimate with its prompt. Empty otherwise.
    pub received: String,
}

impl Attempt {
    /// Whether the attempt found its target's wire format cannot carry the request (nothing
    /// was sent).
    pub fn untranslatable(&self) -> bool {
        matches!(self.outcome, Outcome::Untranslatable { .. })
    }

    /// The entry of an attempt just sent to `target` for `model`: it stands in the record
    /// while the attempt is in flight and is replaced by its outcome, so a call dropped
    /// midway still shows the attempt the upstream received (and bills).
    pub(super) fn in_flight(target: Arc<str>, model: String) -> Attempt {
        Attempt {
            target,
            outcome: Outcome::InFlight(Sent::watch()),
            status: None,
            elapsed: Duration::ZERO,
            model,
            usage: None,
            cache_writes: 0,
            span: Some((Instant::now(), crate::telemetry::span_id())),
            upstream_message: None,
            received: String::new(),
        }
    }

    /// This in-flight entry of a hedged attempt, cancelled now (its time runs from when it
    /// was sent).
    pub(super) fn cancelled(&self) -> Attempt {
        // A hedge cancelled while still connecting never reached its upstream.
        let billed = match &self.outcome {
            Outcome::InFlight(sent) => sent.went_out(),
            _ => true,
        };
        Attempt {
            outcome: Outcome::Cancelled { billed },
            elapsed: self.span.map_or(Duration::ZERO, |(sent, _)| sent.elapsed()),
            ..self.clone()
        }
    }

    /// The entry saying the loop stopped for `stop` (no upstream call).
    pub(super) fn stopped(stop: Stop) -> Attempt {
        Attempt {
            target: "-".into(),
            outcome: Outcome::Stopped(stop),
            status: None,
            elapsed: Duration::ZERO,
            model: String::new(),
            usage: None,
            cache_writes: 0,
            span: None,
            upstream_message: None,
            received: String::new(),
        }
    }
}

/// What came of one entry of the attempt record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered.
    Ok,
    /// The attempt failed.
    Failed {
        /// The class of the failure (`timeout`, `connect`, `status_5xx`, ...: see
        /// [`AttemptError::kind`]), for metrics and traces.
        kind: &'static str,
        /// The error.
        message: String,
        /// Whether the upstream (likely) billed the attempt though it reported no usage: it
        /// had the request and was cut off or sent an unusable reply (see
        /// [`AttemptError::billed`]).
        billed: bool,
    },
    /// The attempt timed out only because the client's deadline cut its timeout short: it
    /// says nothing about the target and counted against nothing.
    Cut {
        /// `cut by the client's deadline: ` and the error.
        message: String,
        /// Whether the request had gone out (it was cut while connecting when not).
        billed: bool,
    },
    /// The target's wire format cannot carry the request: nothing was sent, and the router
    /// went on to the next target. It says nothing about the target.
    Untranslatable {
        /// The field the format lacks.
        message: String,
    },
    /// No attempt: the loop stopped here.
    Stopped(Stop),
    /// The attempt was sent and has not ended: seen only in the record of a call dropped
    /// midway (a client that went away, a stage's `complete()` cut by its hard timeout).
    /// Billed when its request had a connection; one still connecting never reached the
    /// upstream.
    InFlight(Sent),
    /// A hedged attempt cancelled because the other one answered first; it says nothing
    /// about the target. Billed from a local count of its prompt when the upstream had the
    /// request (`billed`: it had a connection; not one still connecting).
    Cancelled {
        /// Whether the request had gone out.
        billed: bool,
    },
}

/// Why the loop stopped before its last allowed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Too little time was left before the deadline for another attempt.
    Deadline,
    /// The route's retry budget was spent.
    Budget,
}

impl Stop {
    /// The text of the record entry.
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::Deadline => "deadline reached; no further attempt",
            Stop::Budget => "retry budget exhausted; no further attempt",
        }
    }
}

impl Outcome {
    /// The outcome of an attempt that failed with `err`; `cut` when only the client's
    /// deadline made it time out.
    pub(super) fn of(err: &AttemptError, cut: bool) -> Outcome {
        if let AttemptError::Untranslatable(_) = err {
            Outcome::Untranslatable {
                message: err.to_string(),
            }
        } else if cut {
            Outcome::Cut {
                message: format!("cut by the client's deadline: {err}"),
                billed: err.billed(),
            }
        } else {
            Outcome::Failed {
                kind: err.kind(),
                message: err.to_string(),
                billed: err.billed(),
            }
        }
    }

    /// Whether the target answered.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// Whether an upstream call was made (false when the loop stopped).
    pub fn is_attempt(&self) -> bool {
        !matches!(self, Outcome::Stopped(_))
    }

    /// Whether the upstream (likely) billed the attempt although it reported no usage: it
    /// received the request and then timed out (the client's deadline included, unless it
    /// cut the attempt while connecting), sent a broken or oversized reply, or was still
    /// working when the call was dropped. A connect error never reached it, and an error
    /// status is billed only when its body says so (its usage).
    pub fn billed_without_usage(&self) -> bool {
        match self {
            Outcome::Failed { billed, .. }
            | Outcome::Cut { billed, .. }
            | Outcome::Cancelled { billed } => *billed,
            Outcome::InFlight(sent) => sent.went_out(),
            Outcome::Ok | Outcome::Untranslatable { .. } | Outcome::Stopped(_) => false,
        }
    }

    /// The text shown in `/admin/requests` and error messages: `ok`, the error, or why the
    /// loop stopped.
    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed { message, .. }
            | Outcome::Cut { message, .. }
            | Outcome::Untranslatable { message } => message,
            Outcome::Stopped(stop) => stop.as_str(),
            Outcome::InFlight(sent) if !sent.went_out() => CONNECTING,
            Outcome::InFlight(_) => IN_FLIGHT,
            Outcome::Cancelled { billed: false } => CANCELLED_CONNECTING,
            Outcome::Cancelled { billed: true } => CANCELLED,
        }
    }

    /// The label of an attempt for the `weir_upstream_attempts_total` metric and the
    /// attempt's span: `ok`, `deadline` (cut by the client's deadline) or the failure's
    /// class. `None` when the loop stopped (no attempt, nothing to count).
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Outcome::Ok => Some("ok"),
            Outcome::Failed { kind, .. } => Some(kind),
            Outcome::Cut { .. } => Some("deadline"),
            Outcome::Untranslatable { .. } => Some("untranslatable"),
            Outcome::InFlight(_) => Some("in_flight"),
            Outcome::Cancelled { .. } => Some("hedge_cancelled"),
            Outcome::Stopped(_) => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Outcome> for Cow<'static, str> {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Ok => Cow::Borrowed("ok"),
            Outcome::Failed { message, .. }
            | Outcome::Cut { message, .. }
            | Outcome::Untranslatable { message } => Cow::Owned(message),
            Outcome::Stopped(stop) => Cow::Borrowed(stop.as_str()),
            Outcome::InFlight(sent) if !sent.went_out() => Cow::Borrowed(CONNECTING),
            Outcome::InFlight(_) => Cow::Borrowed(IN_FLIGHT),
            Outcome::Cancelled { billed: false } => Cow::Borrowed(CANCELLED_CONNECTING),
            Outcome::Cancelled { billed: true } => Cow::Borrowed(CANCELLED),
        }
    }
}

/// The text of [`Outcome::InFlight`] for a request still connecting.
const CONNECTING: &str = "connecting when the call was dropped (not sent)";
/// The text of [`Outcome::InFlight`].
const IN_FLIGHT: &str = "in flight when the call was dropped";
/// The text of [`Outcome::Cancelled`].
const CANCELLED: &str = "cancelled: the hedged attempt beside it answered first";
/// The text of [`Outcome::Cancelled`] for a request still connecting.
const CANCELLED_CONNECTING: &str =
    "cancelled while connecting (not sent): the hedged attempt beside it answered first";

/// `target (outcome)` for each entry, joined with `; ` (the text of
/// [`super::RouteError::AllFailed`]).
pub(super) fn describe(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{} ({})", a.target, a.outcome))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_of_each_outcome_is_the_one_readers_have_always_seen() {
        let timeout = AttemptError::Timeout(Duration::from_millis(20));
        let failed = Outcome::of(&timeout, false);
        let cut = Outcome::of(&timeout, true);
        assert_eq!(Outcome::Ok.as_str(), "ok");
        assert_eq!(failed.as_str(), "timed out after 20ms");
        assert_eq!(
            cut.as_str(),
            "cut by the client's deadline: timed out after 20ms"
        );
        assert_eq!(
            (Outcome::Ok.label(), failed.label(), cut.label()),
            (Some("ok"), Some("timeout"), Some("deadline"))
        );
        let record = vec![
            Attempt {
                target: "a".into(),
                outcome: failed,
                status: None,
                elapsed: Duration::from_millis(20),
                model: "m".into(),
                usage: None,
                cache_writes: 0,
                span: None,
                upstream_message: None,
                received: String::new(),
            },
            Attempt::stopped(Stop::Deadline),
            Attempt::stopped(Stop::Budget),
        ];
        assert_eq!(
            describe(&record),
            "a (timed out after 20ms); - (deadline reached; no further attempt); \
             - (retry budget exhausted; no further attempt)"
        );
        assert!(!record[1].outcome.is_attempt() && record[1].outcome.label().is_none());
        let text: Cow<'static, str> = record[0].outcome.clone().into();
        assert_eq!(text, "timed out after 20ms");
    }
}
