//! The retry delay: after a retryable failure, whether the loop tries again and when.
//!
//! Failing over to a target not tried yet needs no pause; coming back round to one that
//! already failed backs off with full jitter ([`super::Backoff`]), so clients that failed
//! together do not retry together. No retry is started that would leave less than
//! [`MIN_ATTEMPT_TIME`] before the deadline once its delay is over, and none once the route's
//! retry budget is spent; the deadline is checked first, so a retry it forbids costs the
//! budget nothing. (The loop itself stops at `max_attempts`.)

use std::time::Duration;

use tokio::time::Instant;

use super::policy::{MIN_ATTEMPT_TIME, RoutePolicy};
use super::record::Stop;

/// When the next attempt may start, `tries` attempts into a call on a chain of `chain_len`
/// targets that must be done by `deadline`; `jitter`, drawn uniformly from `[0, 1)`, places
/// the backoff within its bound. `Err` when there is no next attempt.
pub(super) fn delay(
    policy: &RoutePolicy,
    tries: u32,
    chain_len: usize,
    deadline: Instant,
    jitter: f64,
) -> Result<Duration, Stop> {
    let delay = backoff(policy, tries, chain_len, deadline, jitter)?;
    if !policy.budget.withdraw(Instant::now()) {
        return Err(Stop::Budget);
    }
    Ok(delay)
}

/// [`delay`] without taking a retry from the budget: the wait before going on after a target
/// that could not carry the request (nothing was sent, so it is no retry), when the next
/// target is one that already failed.
pub(super) fn backoff(
    policy: &RoutePolicy,
    tries: u32,
    chain_len: usize,
    deadline: Instant,
    jitter: f64,
) -> Result<Duration, Stop> {
    let chain_len = u32::try_from(chain_len).unwrap_or(u32::MAX);
    let delay = if tries < chain_len {
        Duration::ZERO
    } else {
        policy.backoff.delay(tries - chain_len, jitter)
    };
    if Instant::now() + delay + MIN_ATTEMPT_TIME >= deadline {
        return Err(Stop::Deadline);
    }
    Ok(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicySettings;

    fn policy(retry_budget_percent: u32) -> RoutePolicy {
        RoutePolicy::new(PolicySettings {
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(300),
            retry_budget_percent,
            ..PolicySettings::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn failover_is_immediate_and_a_second_round_backs_off_within_its_bound() {
        let policy = policy(1000);
        policy.budget.deposit(Instant::now());
        let deadline = Instant::now() + Duration::from_secs(10);
        // Three targets: the second and third attempts go to fresh targets at once.
        for tries in 1..3 {
            assert_eq!(delay(&policy, tries, 3, deadline, 1.0), Ok(Duration::ZERO));
        }
        // Then each round doubles the bound, up to the cap; the jitter places it within.
        let bounds = [50, 100, 200, 300, 300].map(Duration::from_millis);
        for (retry, bound) in bounds.into_iter().enumerate() {
            let tries = 3 + retry as u32;
            assert_eq!(delay(&policy, tries, 3, deadline, 1.0), Ok(bound));
            assert_eq!(delay(&policy, tries, 3, deadline, 0.5), Ok(bound / 2));
            assert_eq!(delay(&policy, tries, 3, deadline, 0.0), Ok(Duration::ZERO));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_would_end_within_the_minimum_attempt_time_of_the_deadline() {
        let policy = policy(0);
        let deadline = Instant::now() + Duration::from_millis(100);
        // A 50 ms backoff leaves 50 ms: allowed.
        assert_eq!(
            delay(&policy, 1, 1, deadline, 1.0),
            Ok(Duration::from_millis(50))
        );
        tokio::time::advance(Duration::from_millis(45)).await;
        // 50 ms + 5 ms reaches the deadline: refused, whatever the budget.
        assert_eq!(delay(&policy, 1, 1, deadline, 1.0), Err(Stop::Deadline));
        // Without backoff, 55 ms left is enough; with 5 ms left it is not.
        assert_eq!(delay(&policy, 1, 2, deadline, 1.0), Ok(Duration::ZERO));
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(delay(&policy, 1, 2, deadline, 1.0), Err(Stop::Deadline));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_grants_its_floor_then_stops_and_a_refused_deadline_costs_nothing() {
        // No ratio: only the floor of one retry per second over the 10 s window.
        let policy = policy(0);
        let far = Instant::now() + Duration::from_secs(60);
        let near = Instant::now() + Duration::from_millis(1);
        for _ in 0..5 {
            assert_eq!(delay(&policy, 1, 2, near, 0.0), Err(Stop::Deadline));
        }
        let granted = (0..20)
            .filter(|_| delay(&policy, 1, 2, far, 0.0).is_ok())
            .count();
        assert_eq!(granted, 10);
        assert_eq!(delay(&policy, 1, 2, far, 0.0), Err(Stop::Budget));
        // Twenty requests at 20 % add four more.
        let policy = policy_with_requests(20, 20);
        let granted = (0..20)
            .filter(|_| delay(&policy, 1, 2, far, 0.0).is_ok())
            .count();
        assert_eq!(granted, 14);
    }

    fn policy_with_requests(percent: u32, requests: usize) -> RoutePolicy {
        let policy = policy(percent);
        for _ in 0..requests {
            policy.budget.deposit(Instant::now());
        }
        policy
    }
}
