//! Hedged requests: when a call's first attempt has not answered within the route's
//! `hedge.after_ms` (or, without it, its target's p95 latency), the same request goes to the
//! next target with room too; the first answer wins and the other attempt is cancelled.
//!
//! - **Bounded:** a route hedges at most `hedge.max_percent` of its recent requests (a budget
//!   like the retry budget, without a floor), never waits in the queue for a hedge's slot and
//!   never sends one to a target whose breaker is open.
//! - **Billed:** the cancelled attempt had the request, so it is charged from a local count of
//!   its prompt ([`Outcome::Cancelled`](super::Outcome::Cancelled)), unless it was still
//!   connecting (it never reached the upstream); while both are in flight both stand in the
//!   call's record, so a call dropped midway bills both (each if it went out).
//! - **Blameless:** a cancelled attempt says nothing about its target (no breaker outcome, its
//!   slot is given back); each attempt that ended is recorded as it ended.
//!
//! Each attempt records into a lane of its own while the call's record holds an in-flight
//! entry for it; the entry is replaced by what the lane recorded when it ends.

use std::time::Duration;

use tokio::time::Instant;

use super::attempt::{Attempter, Failed};
use super::exchange::Exchange;
use super::record::Attempt;
use super::slot::{Slots, Taken};
use crate::config::{HEDGE_MIN_SAMPLES, HedgeSettings};

/// What a hedged first attempt came to.
pub(super) struct Hedged<O> {
    /// The winner's output, or why neither answered.
    pub result: Result<O, Failed>,
    /// Attempts made: 1, or 2 when a hedge went out.
    pub made: u32,
    /// The chain position the loop goes on from.
    pub position: usize,
}

/// Runs the first attempt on `first`, hedged under `settings` within the route's hedge
/// `budget`; `attempts` is the call's record.
pub(super) async fn first_attempt<'a, E: Exchange>(
    attempter: &Attempter<'_, E>,
    slots: &Slots<'a>,
    settings: &HedgeSettings,
    budget: &super::budget::RetryBudget,
    first: Taken<'a>,
    attempts: &mut Vec<Attempt>,
) -> Hedged<E::Output> {
    let delay = match settings.after_ms {
        Some(ms) => Some(Duration::from_millis(u64::from(ms))),
        None => first.target.p95(HEDGE_MIN_SAMPLES),
    };
    let position = first.position;
    let Some(delay) = delay else {
        let result = attempter
            .attempt(first.target, first.slot, 0, attempts)
            .await;
        return Hedged {
            result,
            made: 1,
            position,
        };
    };
    let primary = Lane::open(attempter, first.target, attempts);
    let mut primary_run = std::pin::pin!(lane(attempter, first, 0, primary.entry.clone()));
    let early = tokio::select! {
        done = primary_run.as_mut() => Some(done),
        () = tokio::time::sleep(delay) => None,
    };
    let (result, record) = match early {
        Some(done) => done,
        None => match hedge(slots, budget, position).await {
            Some(second) => {
                return race(attempter, attempts, primary, primary_run, second).await;
            }
            None => primary_run.await,
        },
    };
    primary.close(attempts, record);
    Hedged {
        result,
        made: 1,
        position,
    }
}

/// A slot for the hedge, if the budget grants one and a target has room.
async fn hedge<'a>(
    slots: &Slots<'a>,
    budget: &super::budget::RetryBudget,
    except: usize,
) -> Option<Taken<'a>> {
    let now = Instant::now();
    if !budget.withdraw(now) {
        return None;
    }
    slots.for_hedge(except, now).await
}

/// Both attempts in flight: the first answer wins, the other is cancelled; when both fail,
/// the call goes on (or ends, when either failure is final) after them.
async fn race<'a, E: Exchange, F>(
    attempter: &Attempter<'_, E>,
    attempts: &mut Vec<Attempt>,
    primary: Lane,
    mut primary_run: std::pin::Pin<&mut F>,
    second: Taken<'a>,
) -> Hedged<E::Output>
where
    F: Future<Output = (Result<E::Output, Failed>, Vec<Attempt>)>,
{
    let position = second.position;
    let secondary = Lane::open(attempter, second.target, attempts);
    let mut secondary_run = std::pin::pin!(lane(attempter, second, 1, secondary.entry.clone()));
    let (primary_first, (result, record)) = tokio::select! {
        done = primary_run.as_mut() => (true, done),
        done = secondary_run.as_mut() => (false, done),
    };
    let (ended, other) = if primary_first {
        (primary, secondary)
    } else {
        (secondary, primary)
    };
    ended.close(attempts, record);
    let failed = match result {
        Ok(output) => {
            // The other one may have finished in the same instant: then it is recorded as it
            // ended (with its usage, billed as such), not as cancelled.
            let other_done = if primary_first {
                secondary_run.as_mut().now().await
            } else {
                primary_run.as_mut().now().await
            };
            match other_done {
                Some((_, record)) => other.close(attempts, record),
                None => other.cancel(attempts),
            }
            return Hedged {
                result: Ok(output),
                made: 2,
                position,
            };
        }
        Err(failed) => failed,
    };
    let (result, record) = if primary_first {
        secondary_run.await
    } else {
        primary_run.await
    };
    other.close(attempts, record);
    let result = match (result, failed) {
        (Ok(output), _) => Ok(output),
        (Err(Failed::Final(err)), _) | (Err(Failed::Retryable), Failed::Final(err)) => {
            Err(Failed::Final(err))
        }
        (Err(Failed::Retryable), Failed::Retryable) => Err(Failed::Retryable),
    };
    Hedged {
        result,
        made: 2,
        position,
    }
}

/// Polls a future once, without waiting.
trait Now: Future + Sized {
    /// Its output if it is ready now.
    async fn now(self) -> Option<Self::Output> {
        tokio::select! {
            biased;
            done = self => Some(done),
            () = std::future::ready(()) => None,
        }
    }
}

impl<F: Future> Now for F {}

/// One attempt recording into a record of its own, returned with its result; `entry` is its
/// in-flight entry in the call's record.
async fn lane<E: Exchange>(
    attempter: &Attempter<'_, E>,
    taken: Taken<'_>,
    retry: u32,
    entry: Attempt,
) -> (Result<E::Output, Failed>, Vec<Attempt>) {
    let mut record = Vec::with_capacity(1);
    let result = attempter
        .attempt_as(taken.target, taken.slot, retry, &mut record, entry)
        .await;
    (result, record)
}

/// A lane's in-flight entry in the call's record.
struct Lane {
    /// Its index in the record.
    at: usize,
    /// Its entry as it was put in the record (target, model, when it was sent, span).
    entry: Attempt,
}

impl Lane {
    /// Puts an in-flight entry for an attempt on `target` in `attempts`.
    fn open<E: Exchange>(
        attempter: &Attempter<'_, E>,
        target: &super::TargetState,
        attempts: &mut Vec<Attempt>,
    ) -> Lane {
        let model = attempter.exchange.model(&target.upstream);
        let entry = Attempt::in_flight(target.upstream.name.clone(), model);
        attempts.push(entry.clone());
        Lane {
            at: attempts.len() - 1,
            entry,
        }
    }

    /// Replaces the entry with what the lane recorded (its one entry).
    fn close(self, attempts: &mut [Attempt], record: Vec<Attempt>) {
        if let (Some(slot), Some(entry)) = (attempts.get_mut(self.at), record.into_iter().last()) {
            *slot = entry;
        }
    }

    /// Marks the entry cancelled.
    fn cancel(self, attempts: &mut [Attempt]) {
        if let Some(slot) = attempts.get_mut(self.at) {
            let cancelled = self.entry.cancelled();
            crate::telemetry::attempt(
                &cancelled.target,
                cancelled.outcome.label(),
                cancelled.elapsed,
            );
            *slot = cancelled;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{PolicySettings, Strategy};
    use crate::providers::ProviderClient;
    use crate::router::testing::{black_hole, request, sim, target};
    use crate::router::{Outcome, Reply, RoutePlan, RoutePolicy, Router, TargetState};
    use crate::sim::Faults;

    fn hedged(targets: Vec<Arc<TargetState>>, hedge: HedgeSettings) -> (Router, RoutePlan) {
        let n = targets.len();
        let plan = RoutePlan {
            chain: (0..n).collect(),
            policy: RoutePolicy::new(PolicySettings {
                hedge: Some(hedge),
                ..PolicySettings::default()
            }),
            strategy: Strategy::Fallback,
            weights: vec![1; n],
        };
        (Router::new(ProviderClient::new().unwrap(), targets), plan)
    }

    fn slow(ms: u64) -> Faults {
        Faults {
            latency_ms: ms,
            ..Faults::default()
        }
    }

    async fn chat(
        router: &Router,
        plan: &RoutePlan,
    ) -> (Result<Reply, super::super::RouteError>, Vec<Attempt>) {
        let mut attempts = Vec::new();
        let result = router
            .chat(router.start(plan), &request(), &[], None, &mut attempts)
            .await;
        (result, attempts)
    }

    fn tried(attempts: &[Attempt]) -> Vec<(&str, &Outcome, Duration)> {
        attempts
            .iter()
            .map(|a| (&*a.target, &a.outcome, a.elapsed))
            .collect()
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_late_past_the_delay_is_hedged_and_the_first_answer_wins() {
        let (hole, _server) = black_hole().await;
        let (router, plan) = hedged(
            vec![
                target("hung", hole, SECOND * 30),
                target("next", sim(slow(30)).await, SECOND * 30),
            ],
            HedgeSettings {
                after_ms: Some(100),
                max_percent: 100,
            },
        );
        let started = Instant::now();
        let (result, attempts) = chat(&router, &plan).await;
        assert!(matches!(result, Ok(Reply::Json { .. })));
        let ms = Duration::from_millis;
        assert_eq!(
            started.elapsed(),
            ms(130),
            "the hedge's answer, not the 30 s timeout"
        );
        assert_eq!(
            tried(&attempts),
            [
                ("hung", &Outcome::Cancelled { billed: true }, ms(130)),
                ("next", &Outcome::Ok, ms(30))
            ]
        );
        // The cancelled attempt is billed from its prompt and blames nobody.
        assert!(attempts[0].outcome.billed_without_usage());
        assert_eq!(router.targets()[0].breaker_gauge(), 0);
        assert_eq!(router.targets()[0].snapshot(Instant::now())["in_flight"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_hedged_while_still_connecting_is_cancelled_unbilled() {
        let (hole, _held) = crate::router::testing::hung_connect().await;
        let (router, plan) = hedged(
            vec![
                target("connecting", hole, SECOND * 30),
                target("next", sim(slow(30)).await, SECOND * 30),
            ],
            HedgeSettings {
                after_ms: Some(100),
                max_percent: 100,
            },
        );
        let (result, attempts) = chat(&router, &plan).await;
        assert!(matches!(result, Ok(Reply::Json { .. })));
        let ms = Duration::from_millis;
        assert_eq!(
            tried(&attempts),
            [
                ("connecting", &Outcome::Cancelled { billed: false }, ms(130)),
                ("next", &Outcome::Ok, ms(30))
            ]
        );
        // It never reached its upstream: nothing to charge.
        assert!(!attempts[0].outcome.billed_without_usage());
        assert!(attempts[0].outcome.as_str().contains("not sent"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_before_the_delay_sends_no_hedge_and_hedges_keep_to_their_budget() {
        let first = sim(slow(20)).await;
        let second = sim(Faults::default()).await;
        let (router, plan) = hedged(
            vec![
                target("first", first, SECOND),
                target("second", second, SECOND),
            ],
            HedgeSettings {
                after_ms: Some(50),
                max_percent: 10,
            },
        );
        let (_, attempts) = chat(&router, &plan).await;
        assert_eq!(
            tried(&attempts),
            [("first", &Outcome::Ok, Duration::from_millis(20))]
        );

        // Every first attempt is late now: 10% of 40 calls may hedge, 4 of them.
        let (router, plan) = hedged(
            vec![
                target("late", sim(slow(200)).await, SECOND),
                target("quick", sim(slow(10)).await, SECOND),
            ],
            HedgeSettings {
                after_ms: Some(50),
                max_percent: 10,
            },
        );
        let mut hedges = 0;
        for _ in 0..40 {
            let (result, attempts) = chat(&router, &plan).await;
            assert!(result.is_ok());
            hedges += usize::from(attempts.len() == 2);
        }
        assert_eq!(hedges, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_fixed_delay_the_hedge_waits_for_the_targets_p95() {
        let ms = Duration::from_millis;
        let (hole, _server) = black_hole().await;
        let (router, plan) = hedged(
            vec![
                target("hung", hole, SECOND * 30),
                target("next", sim(slow(5)).await, SECOND),
            ],
            HedgeSettings {
                after_ms: None,
                max_percent: 100,
            },
        );
        let hung = &router.targets()[0];
        // Too few answers to know a p95: no hedge (the call waits for the 30 s timeout).
        for _ in 1..HEDGE_MIN_SAMPLES {
            hung.learn(ms(40));
        }
        assert_eq!(hung.p95(HEDGE_MIN_SAMPLES), None);
        let limited = RoutePlan {
            policy: RoutePolicy::new(PolicySettings {
                hedge: plan.policy.settings.hedge,
                max_attempts: 1,
                deadline: ms(500),
                ..PolicySettings::default()
            }),
            chain: plan.chain.clone(),
            strategy: Strategy::Fallback,
            weights: plan.weights.clone(),
        };
        let (result, attempts) = chat(&router, &limited).await;
        assert!(result.is_err());
        assert_eq!(
            attempts.iter().filter(|a| a.outcome.is_attempt()).count(),
            1
        );
        // 19 answers in 40 ms and one in 100 ms: the p95 is 100 ms.
        hung.learn(ms(100));
        assert_eq!(hung.p95(HEDGE_MIN_SAMPLES), Some(ms(100)));
        for _ in 0..20 {
            hung.learn(ms(40));
        }
        assert_eq!(hung.p95(HEDGE_MIN_SAMPLES), Some(ms(40)));
        let started = Instant::now();
        let (result, attempts) = chat(&router, &plan).await;
        assert!(result.is_ok());
        assert_eq!(started.elapsed(), ms(45));
        assert_eq!(
            tried(&attempts),
            [
                ("hung", &Outcome::Cancelled { billed: true }, ms(45)),
                ("next", &Outcome::Ok, ms(5))
            ]
        );
    }
}
