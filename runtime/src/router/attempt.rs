//! One attempt on one target: its body, its span, its timeout cut to the deadline, and its
//! outcome recorded twice — in the target's live state (breaker, latency, `Retry-After`
//! cool-down) and in the call's attempt record.
//!
//! While an attempt is in flight it stands in the attempt record as [`Outcome::InFlight`],
//! so a call whose future is dropped midway (its client gone) can still be billed for it.
//!
//! An attempt the client's `x-weir-deadline-ms` cut shorter than the target's own timeout
//! (and the route's deadline) allow, and that then timed out, says nothing about the target:
//! it gives its slot back without an outcome, or any client could eject a target for every
//! tenant. The route's deadline is the operator's, and a timeout it caused counts.

use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use tokio::time::Instant;
use tracing::Instrument;

use super::RouteError;
use super::exchange::{Exchange, Left};
use super::record::{Attempt, Outcome};
use super::refusal::{indicts_target, refusal};
use super::target::{Slot, TargetState};
use crate::config::PolicySettings;
use crate::providers::{AttemptError, ProviderClient, Sent};

/// The text of an attempt whose target could not serve any request ([`indicts_target`]).
const TARGET_FAULT: &str = "the target could not serve the request";

/// The deadlines one call runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Deadline {
    /// When the call must be done: the route's deadline, or the client's when sooner.
    pub at: Instant,
    /// The route's own deadline (the operator's).
    pub route: Instant,
}

impl Deadline {
    /// The deadlines of a call started at `started` on a route whose deadline is `route`,
    /// for a client that asked for `client` (which may shorten it, never lengthen it).
    pub fn new(started: Instant, route: Duration, client: Option<Duration>) -> Deadline {
        Deadline {
            at: started + client.map_or(route, |d| d.min(route)),
            route: started + route,
        }
    }
}

/// Why an attempt produced no reply.
pub(super) enum Failed {
    /// Another attempt may succeed (connect error, timeout, broken reply, a `retry_on`
    /// status).
    Retryable,
    /// The request itself was refused, or failed in a way weir does not retry: the call ends
    /// with this error.
    Final(RouteError),
}

/// What every attempt of one call shares.
pub(super) struct Attempter<'a, E> {
    /// The pooled client.
    pub client: &'a ProviderClient,
    /// What is sent and how the reply is read.
    pub exchange: &'a E,
    /// The route's policy settings (`retry_on`, `retry_after_max`).
    pub settings: &'a PolicySettings,
    /// The call's deadlines.
    pub deadline: Deadline,
}

impl<E: Exchange> Attempter<'_, E> {
    /// One attempt on `target` holding `slot`, `retry` attempts after the first; its outcome
    /// goes to the target's state and to `attempts`.
    pub async fn attempt(
        &self,
        target: &TargetState,
        slot: Slot,
        retry: u32,
        attempts: &mut Vec<Attempt>,
    ) -> Result<E::Output, Failed> {
        let entry = Attempt::in_flight(
            target.upstream.name.clone(),
            self.exchange.model(&target.upstream),
        );
        self.attempt_as(target, slot, retry, attempts, entry).await
    }

    /// [`Attempter::attempt`] standing in `attempts` as `entry` (in flight, with its span)
    /// until it ends.
    pub(super) async fn attempt_as(
        &self,
        target: &TargetState,
        slot: Slot,
        retry: u32,
        attempts: &mut Vec<Attempt>,
        entry: Attempt,
    ) -> Result<E::Output, Failed> {
        let upstream = &*target.upstream;
        let now = Instant::now();
        let own = self.exchange.timeout(upstream);
        let timeout = own.min(self.deadline.at.saturating_duration_since(now));
        let cut_by_client = timeout < own.min(self.deadline.route.saturating_duration_since(now));
        let model = entry.model.clone();
        let span_of = entry.span;
        let span = tracing::debug_span!(
            target: "weir::attempt",
            "weir.attempt",
            otel.name = %format_args!("{} {model}", E::OPERATION),
            otel.kind = "client",
            gen_ai.operation.name = E::OPERATION,
            gen_ai.request.model = model.as_str(),
            server.address = upstream.base_url.as_str(),
            weir.target = &*upstream.name,
            weir.retry = retry,
            http.response.status_code = tracing::field::Empty,
            weir.outcome = tracing::field::Empty,
            error.type = tracing::field::Empty,
            weir.upstream_message = tracing::field::Empty,
        );
        let result = match self.exchange.request(upstream) {
            Ok(outgoing) => {
                // Until its outcome is known the attempt stands in the record as in flight: a
                // call dropped now still shows (and bills) what the upstream received, which
                // the entry learns from the request's connection.
                let sent = match &entry.outcome {
                    Outcome::InFlight(sent) => sent.clone(),
                    _ => Sent::default(),
                };
                attempts.push(entry);
                let result = self
                    .send(target, outgoing, timeout, span_of.map(|(_, id)| id), &sent)
                    .instrument(span.clone())
                    .await;
                attempts.pop();
                result
            }
            // Nothing was sent: the target's format cannot carry the request.
            Err(err) => Err(err),
        };
        let done = Instant::now();
        let elapsed = done - now;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(err) => Outcome::of(
                err,
                cut_by_client
                    && matches!(
                        err,
                        AttemptError::Timeout(_) | AttemptError::ConnectTimeout(_)
                    ),
            ),
        };
        let label = outcome.label().unwrap_or_default();
        crate::telemetry::attempt(&upstream.name, (!outcome.is_ok()).then_some(label), elapsed);
        span.record("weir.outcome", label);
        match &result {
            Ok(_) => span.record("http.response.status_code", 200),
            Err(err) => {
                if let Some(status) = err.status() {
                    span.record("http.response.status_code", status);
                }
                if !span.is_disabled()
                    && let Some(message) = err.upstream_message()
                {
                    span.record("weir.upstream_message", message.as_str());
                }
                span.record("error.type", label)
            }
        };
        drop(span);
        let mut record = Attempt {
            target: upstream.name.clone(),
            outcome,
            status: None,
            elapsed,
            model,
            usage: None,
            cache_writes: 0,
            span: span_of,
            upstream_message: None,
            received: String::new(),
        };
        match result {
            Ok(mut output) => {
                let mut slot = slot;
                target.record(&mut slot, true, None, elapsed, done);
                record.status = Some(200);
                record.usage = E::usage(&output);
                record.cache_writes = E::cache_writes(&output);
                E::keep(&mut output, slot);
                attempts.push(record);
                Ok(output)
            }
            Err(mut err) => {
                let indicted = indicts_target(upstream, &err);
                let retryable = err.is_retryable(&self.settings.retry_on) || indicted;
                if indicted && let Outcome::Failed { message, .. } = &mut record.outcome {
                    // The status is about the operator's key, account or model pin: the
                    // operator reads it in the record's status, the log and the span; a
                    // client reading the call's error learns only that the target failed.
                    *message = TARGET_FAULT.to_string();
                }
                if matches!(
                    record.outcome,
                    Outcome::Cut { .. } | Outcome::Untranslatable { .. }
                ) {
                    // No outcome: the slot (a probe included) is given back as if the
                    // attempt had never been made (an untranslatable request never was).
                    drop(slot);
                } else {
                    // A refusal of the request itself says nothing bad about the target.
                    let retry_after = err
                        .retry_after()
                        .map(|ra| ra.min(self.settings.retry_after_max));
                    target.finish(slot, !retryable, retry_after, elapsed, done);
                }
                let detail = err.upstream_message();
                tracing::warn!(
                    target = &*upstream.name,
                    error = %err,
                    detail = detail.as_deref().unwrap_or(""),
                    attempt = retry + 1,
                    "upstream attempt failed"
                );
                record.upstream_message = detail;
                record.status = err.status();
                record.usage = err.usage();
                record.received = err.take_received();
                attempts.push(record);
                if retryable {
                    Err(Failed::Retryable)
                } else {
                    Err(Failed::Final(refusal(upstream, &err)))
                }
            }
        }
    }

    /// Sends `body` within `timeout`: headers and the reply (for JSON, the body; for a
    /// stream, the first event), the headers and a stream's first event within the
    /// exchange's [`Exchange::first_timeout`]. One timer per phase, never beyond `timeout` in
    /// all.
    async fn send(
        &self,
        state: &TargetState,
        outgoing: (String, Bytes),
        timeout: Duration,
        span: Option<[u8; 8]>,
        sent: &Sent,
    ) -> Result<E::Output, AttemptError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let first = self.exchange.first_timeout(&state.upstream).min(timeout);
        // The upstream's parent is this attempt's span (exported as such).
        let forward = self.exchange.forward();
        let traced;
        let forward = match span.and_then(|span| {
            let (_, header) = forward.iter().find(|(name, _)| name == "traceparent")?;
            crate::telemetry::reparent(header, span)
        }) {
            Some(traceparent) => {
                traced = forward
                    .iter()
                    .filter(|(name, _)| name != "traceparent")
                    .cloned()
                    .chain([(HeaderName::from_static("traceparent"), traceparent)])
                    .collect::<Vec<_>>();
                &traced[..]
            }
            None => forward,
        };
        let sent = self
            .client
            .send(
                self.exchange.method(),
                &state.upstream,
                outgoing,
                forward,
                first,
                sent,
            )
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                // A status the exchange takes as its answer (a service's 404) is one.
                let answer = match &err {
                    AttemptError::Status { status, body, .. } => {
                        self.exchange.answer_status(*status, body)
                    }
                    _ => None,
                };
                return answer.ok_or(err);
            }
        };
        let now = Instant::now();
        let left = Left {
            first: (started + first).saturating_duration_since(now),
            whole: deadline.saturating_duration_since(now),
        };
        if left.first.is_zero() {
            return Err(AttemptError::Timeout(first));
        }
        self.exchange.read(state, response, left).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BreakerSettings, TargetLimits};
    use crate::router::Reply;
    use crate::router::exchange::Chat;
    use crate::router::target::Unavailable;
    use crate::router::testing::{black_hole, request, sim, target_with};
    use crate::sim::Faults;

    /// Trips on the first failure that counts.
    fn fragile() -> TargetLimits {
        TargetLimits {
            breaker: BreakerSettings {
                consecutive_failures: 1,
                ..BreakerSettings::default()
            },
            ..TargetLimits::default()
        }
    }

    /// One chat attempt on `target` under `deadline`.
    async fn chat_once(
        target: &TargetState,
        deadline: Deadline,
        settings: &PolicySettings,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Reply, Failed> {
        let client = ProviderClient::new().unwrap();
        let request = request();
        let chat = Chat {
            request: &request,
            forward: &[],
        };
        let attempter = Attempter {
            client: &client,
            exchange: &chat,
            settings,
            deadline,
        };
        let slot = target.try_slot(Instant::now(), 0, false).unwrap();
        attempter.attempt(target, slot, 0, attempts).await
    }

    fn in_flight(target: &TargetState) -> serde_json::Value {
        target.snapshot(Instant::now())["in_flight"].clone()
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_is_cut_to_the_deadline_and_only_the_operators_cut_counts() {
        let (addr, _server) = black_hole().await;
        let settings = PolicySettings::default();
        let ms = Duration::from_millis;

        // The route's deadline (250 ms) cuts the target's 400 ms: the target is blamed.
        let target = target_with("a", addr, ms(400), fragile());
        let mut attempts = Vec::new();
        let started = Instant::now();
        let deadline = Deadline::new(started, ms(250), None);
        let result = chat_once(&target, deadline, &settings, &mut attempts).await;
        assert!(matches!(result, Err(Failed::Retryable)));
        assert_eq!(started.elapsed(), ms(250));
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].elapsed, ms(250));
        assert_eq!(attempts[0].outcome.as_str(), "timed out after 250ms");
        assert_eq!(attempts[0].outcome.label(), Some("timeout"));
        assert_eq!(target.breaker_gauge(), 2, "open");
        assert_eq!(in_flight(&target), 0);

        // The client's deadline (250 ms) cuts it: nothing counts, the slot comes back.
        let target = target_with("b", addr, ms(400), fragile());
        let mut attempts = Vec::new();
        let started = Instant::now();
        let deadline = Deadline::new(started, ms(1000), Some(ms(250)));
        let result = chat_once(&target, deadline, &settings, &mut attempts).await;
        assert!(matches!(result, Err(Failed::Retryable)));
        assert_eq!(started.elapsed(), ms(250));
        assert_eq!(
            attempts[0].outcome.as_str(),
            "cut by the client's deadline: timed out after 250ms"
        );
        assert_eq!(attempts[0].outcome.label(), Some("deadline"));
        assert_eq!(target.breaker_gauge(), 0, "closed");
        assert_eq!(in_flight(&target), 0);

        // The target's own timeout, shorter than both, counts.
        let target = target_with("c", addr, ms(100), fragile());
        let mut attempts = Vec::new();
        let started = Instant::now();
        let deadline = Deadline::new(started, ms(1000), Some(ms(250)));
        let _ = chat_once(&target, deadline, &settings, &mut attempts).await;
        assert_eq!(started.elapsed(), ms(100));
        assert_eq!(attempts[0].outcome.label(), Some("timeout"));
        assert_eq!(target.breaker_gauge(), 2, "open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_is_recorded_once_with_its_status_model_usage_and_time() {
        let addr = sim(Faults {
            latency_ms: 40,
            ..Faults::default()
        })
        .await;
        let target = target_with("up", addr, Duration::from_secs(1), fragile());
        let settings = PolicySettings::default();
        let mut attempts = Vec::new();
        let deadline = Deadline::new(Instant::now(), Duration::from_secs(5), None);
        let result = chat_once(&target, deadline, &settings, &mut attempts).await;
        assert!(matches!(result, Ok(Reply::Json { .. })));
        assert_eq!(attempts.len(), 1);
        let attempt = &attempts[0];
        assert_eq!(
            (&*attempt.target, &attempt.outcome, attempt.status),
            ("up", &Outcome::Ok, Some(200))
        );
        assert_eq!(attempt.model, "m");
        assert_eq!(attempt.elapsed, Duration::from_millis(40));
        assert!(attempt.usage.is_some_and(|u| u.prompt_tokens > 0));
        assert_eq!(target.ewma_us(), 40_000);
        assert_eq!(in_flight(&target), 0);
    }

    #[tokio::test]
    async fn a_json_request_asked_as_a_stream_answers_as_the_json_reply_would() {
        let addr = sim(Faults::default()).await;
        let settings = PolicySettings::default();
        let deadline = || Deadline::new(Instant::now(), Duration::from_secs(5), None);
        let long = Duration::from_secs(5);
        let json_target = crate::router::testing::target_ttft("j", addr, long, long, fragile());
        let streamed = Duration::from_secs(2);
        let stream_target =
            crate::router::testing::target_ttft("s", addr, long, streamed, fragile());
        assert!(!json_target.upstream.stream_json && stream_target.upstream.stream_json);
        let mut answers = Vec::new();
        for target in [&json_target, &stream_target] {
            let mut attempts = Vec::new();
            match chat_once(target, deadline(), &settings, &mut attempts).await {
                Ok(Reply::Json { response, .. }) => answers.push((response, attempts[0].usage)),
                _ => panic!("a JSON answer from {}", target.upstream.name),
            }
        }
        let (json, json_usage) = &answers[0];
        let (assembled, stream_usage) = &answers[1];
        assert!(!json.text().is_empty());
        assert_eq!(assembled.text(), json.text());
        assert_eq!(assembled.model, json.model);
        assert_eq!(
            assembled.choices[0].finish_reason,
            json.choices[0].finish_reason
        );
        assert_eq!(assembled.choices[0].message.role, "assistant");
        // The usage chunk was asked for and came: the attempt is billed as the JSON one.
        assert!(stream_usage.is_some());
        assert_eq!(
            stream_usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            json_usage.map(|u| (u.prompt_tokens, u.completion_tokens))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_final_and_blames_nobody_a_retryable_status_blames_the_target() {
        let settings = PolicySettings {
            retry_after_max: Duration::from_secs(1),
            ..PolicySettings::default()
        };
        let deadline = || Deadline::new(Instant::now(), Duration::from_secs(5), None);
        let failing = |error_status| Faults {
            error_rate: 1.0,
            error_status,
            ..Faults::default()
        };

        // 400: the request itself is wrong; relayed, and the breaker stays closed.
        let target = target_with(
            "up",
            sim(failing(400)).await,
            Duration::from_secs(1),
            fragile(),
        );
        let mut attempts = Vec::new();
        let result = chat_once(&target, deadline(), &settings, &mut attempts).await;
        let Err(Failed::Final(err)) = result else {
            panic!("a 400 is final");
        };
        assert_eq!((err.status(), err.code()), (400, "upstream_refused"));
        assert_eq!(attempts[0].status, Some(400));
        assert_eq!(attempts[0].outcome.label(), Some("status_4xx"));
        assert_eq!(target.breaker_gauge(), 0, "closed");

        // 500: retryable, and it counts.
        let target = target_with(
            "up",
            sim(failing(500)).await,
            Duration::from_secs(1),
            fragile(),
        );
        let mut attempts = Vec::new();
        let result = chat_once(&target, deadline(), &settings, &mut attempts).await;
        assert!(matches!(result, Err(Failed::Retryable)));
        assert_eq!(attempts[0].outcome.as_str(), "upstream status 500");
        assert_eq!(target.breaker_gauge(), 2, "open");

        // 429 with `Retry-After: 3`: the target cools down for `retry_after_max` (1 s).
        let limited = sim(Faults {
            rate_limit_rate: 1.0,
            retry_after_s: 3,
            ..Faults::default()
        })
        .await;
        let target = target_with(
            "up",
            limited,
            Duration::from_secs(1),
            TargetLimits::default(),
        );
        let mut attempts = Vec::new();
        let result = chat_once(&target, deadline(), &settings, &mut attempts).await;
        assert!(matches!(result, Err(Failed::Retryable)));
        assert_eq!(attempts[0].outcome.label(), Some("status_429"));
        let until = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            target.try_slot(Instant::now(), 0, false).err(),
            Some(Unavailable::CoolingDown(until))
        );
    }
}
