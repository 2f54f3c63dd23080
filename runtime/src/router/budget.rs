//! The retry budget (tower-style): retries may add at most `ratio` of the recent request
//! volume, plus a small floor per second. A max-retries count alone multiplies upstream load
//! by that count during a full outage; a budget caps the extra load at a fraction, so a dead
//! provider is not hammered by weir's own retries.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::lock;

/// How long a deposit counts.
const WINDOW: Duration = Duration::from_secs(10);

/// A shared retry budget for one route.
#[derive(Debug)]
pub struct RetryBudget {
    /// Retries allowed per original request (default 0.2).
    ratio: f64,
    /// Retries always allowed per second, so a quiet route can still retry (routes use
    /// [`RETRY_FLOOR_PER_SEC`](super::policy::RETRY_FLOOR_PER_SEC), 1 per second).
    floor_per_sec: f64,
    /// Recent requests and retries, oldest first, with running counts.
    events: Mutex<Window>,
}

/// The deposits and withdrawals of the last [`WINDOW`], with running counts so that a
/// withdrawal is O(1) however busy the route.
#[derive(Debug, Default)]
struct Window {
    /// (when, is_retry), oldest first.
    events: VecDeque<(Instant, bool)>,
    /// Original requests in `events`.
    requests: u64,
    /// Retries in `events`.
    retries: u64,
}

impl Window {
    fn push(&mut self, at: Instant, retry: bool) {
        self.events.push_back((at, retry));
        if retry {
            self.retries += 1;
        } else {
            self.requests += 1;
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, retry)) = self.events.front() {
            if now.saturating_duration_since(at) <= WINDOW {
                break;
            }
            self.events.pop_front();
            if retry {
                self.retries -= 1;
            } else {
                self.requests -= 1;
            }
        }
    }
}

impl RetryBudget {
    /// A budget of `ratio` retries per request plus `floor_per_sec`.
    pub fn new(ratio: f64, floor_per_sec: f64) -> RetryBudget {
        RetryBudget {
            ratio,
            floor_per_sec,
            events: Mutex::new(Window::default()),
        }
    }

    /// Records an original request.
    pub fn deposit(&self, now: Instant) {
        self.with(now, |window| window.push(now, false));
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self, now: Instant) -> bool {
        let (ratio, floor) = (self.ratio, self.floor_per_sec);
        self.with(now, |window| {
            let allowed = window.requests as f64 * ratio + floor * WINDOW.as_secs_f64();
            if window.retries as f64 + 1.0 <= allowed {
                window.push(now, true);
                true
            } else {
                false
            }
        })
    }

    fn with<R>(&self, now: Instant, f: impl FnOnce(&mut Window) -> R) -> R {
        let mut window = lock(&self.events);
        window.expire(now);
        f(&mut window)
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
