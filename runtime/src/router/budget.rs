//! The retry budget (tower-style): retries may add at most `ratio` of the recent request
//! volume, plus a small floor per second. A max-retries count alone multiplies upstream load
//! by that count during a full outage; a budget caps the extra load at a fraction, so a dead
//! provider is not hammered by weir's own retries.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a deposit counts.
const WINDOW: Duration = Duration::from_secs(10);

/// A shared retry budget for one route.
#[derive(Debug)]
pub struct RetryBudget {
    /// Retries allowed per original request (default 0.2).
    ratio: f64,
    /// Retries always allowed per second, so a quiet route can still retry (default 10).
    floor_per_sec: f64,
    /// Recent requests and retries: (when, is_retry).
    events: Mutex<VecDeque<(Instant, bool)>>,
}

impl RetryBudget {
    /// A budget of `ratio` retries per request plus `floor_per_sec`.
    pub fn new(ratio: f64, floor_per_sec: f64) -> RetryBudget {
        RetryBudget {
            ratio,
            floor_per_sec,
            events: Mutex::new(VecDeque::new()),
        }
    }

    /// Records an original request.
    pub fn deposit(&self, now: Instant) {
        self.with(now, |events| events.push_back((now, false)));
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self, now: Instant) -> bool {
        let (ratio, floor) = (self.ratio, self.floor_per_sec);
        self.with(now, |events| {
            let requests = events.iter().filter(|(_, retry)| !retry).count() as f64;
            let retries = events.iter().filter(|(_, retry)| *retry).count() as f64;
            let allowed = requests * ratio + floor * WINDOW.as_secs_f64();
            if retries + 1.0 <= allowed {
                events.push_back((now, true));
                true
            } else {
                false
            }
        })
    }

    fn with<R>(&self, now: Instant, f: impl FnOnce(&mut VecDeque<(Instant, bool)>) -> R) -> R {
        let mut events = match self.events.lock() {
            Ok(events) => events,
            Err(poisoned) => poisoned.into_inner(),
        };
        while events
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > WINDOW)
        {
            events.pop_front();
        }
        f(&mut events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_capped_at_the_ratio_plus_the_floor() {
        let budget = RetryBudget::new(0.2, 0.0);
        let now = Instant::now();
        for _ in 0..100 {
            budget.deposit(now);
        }
        let granted = (0..100).filter(|_| budget.withdraw(now)).count();
        assert_eq!(granted, 20);
        // Deposits expire with the window.
        tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
        assert!(!budget.withdraw(Instant::now()));
    }
}
