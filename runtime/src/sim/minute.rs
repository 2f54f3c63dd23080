//! The `rpm_limit` fault: a provider account's requests-per-minute limit, as a sliding
//! window. Beyond `rpm_limit` requests accepted in any 60-second window, a request is
//! answered 429 `rate_limit_exceeded` with `Retry-After` (the seconds until the oldest
//! accepted request of the window leaves it), like a provider account.
//!
//! While the limit is set, the window also records when every model request arrived, so
//! `/sim/stats` can say the most requests that arrived in any 60-second window
//! (`rpm.max_received_in_60s`) and how many the limit refused (`rpm.limited`): what a test
//! needs to check that its client kept under a limit. A 60-second window's maximum is
//! reached by a window ending at an arrival, so the count at each arrival is enough.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::sync::lock;

/// The window of the limit.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Most arrivals the window remembers (a simulator receiving more than this in 60 s
/// undercounts `max_received_in_60s`; the limit itself never needs more than `rpm_limit`).
pub const MAX_LOGGED: usize = 100_000;

/// What the window has seen.
#[derive(Debug, Default)]
struct Log {
    /// Arrivals of the last 60 s, oldest first.
    arrivals: VecDeque<Instant>,
    /// Requests accepted by the limit in the last 60 s, oldest first.
    accepted: VecDeque<Instant>,
    /// The most arrivals seen in any 60-second window.
    max_received: u64,
    /// Requests refused by the limit.
    limited: u64,
}

/// `rpm` in `/sim/stats`, present once the limit has seen a request.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RpmStats {
    /// The most model requests that arrived in any 60-second window while `rpm_limit` was
    /// set (refused ones included).
    pub max_received_in_60s: u64,
    /// Requests answered 429 by the limit.
    pub limited: u64,
}

/// The sliding window of one simulator.
#[derive(Debug, Default)]
pub struct MinuteWindow {
    /// Its log.
    log: Mutex<Log>,
}

/// Drops the instants that left the window ending at `now`.
fn prune(queue: &mut VecDeque<Instant>, now: Instant) {
    while queue
        .front()
        .is_some_and(|at| now.saturating_duration_since(*at) >= WINDOW)
    {
        queue.pop_front();
    }
}

impl MinuteWindow {
    /// Records an arrival at `now` and decides it under `limit`: `Ok` when accepted, else
    /// the whole seconds until the oldest accepted request leaves the window (at least 1).
    pub fn admit(&self, limit: u32, now: Instant) -> Result<(), u64> {
        let mut log = lock(&self.log);
        prune(&mut log.arrivals, now);
        if log.arrivals.len() == MAX_LOGGED {
            log.arrivals.pop_front();
        }
        log.arrivals.push_back(now);
        log.max_received = log.max_received.max(log.arrivals.len() as u64);
        prune(&mut log.accepted, now);
        if log.accepted.len() >= limit as usize {
            log.limited += 1;
            let oldest = log.accepted.front().copied().unwrap_or(now);
            let wait = (oldest + WINDOW).saturating_duration_since(now);
            return Err((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1));
        }
        log.accepted.push_back(now);
        Ok(())
    }

    /// The counters, `None` before the limit saw a request.
    pub fn stats(&self) -> Option<RpmStats> {
        let log = lock(&self.log);
        (log.max_received > 0).then(|| RpmStats {
            max_received_in_60s: log.max_received,
            limited: log.limited,
        })
    }

    /// Forgets everything (`POST /sim/reset`).
    pub fn reset(&self) {
        *lock(&self.log) = Log::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_most_the_limit_in_any_60_seconds() {
        let window = MinuteWindow::default();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(window.admit(3, Instant::now()), Ok(()));
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        // At 30 s: three accepted in the window; the oldest leaves at 60 s.
        assert_eq!(window.admit(3, Instant::now()), Err(30));
        tokio::time::advance(Duration::from_millis(29_999)).await;
        assert_eq!(window.admit(3, Instant::now()), Err(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(start.elapsed(), WINDOW);
        assert_eq!(window.admit(3, Instant::now()), Ok(()));
        assert_eq!(window.admit(3, Instant::now()), Err(10));
        assert_eq!(
            window.stats(),
            Some(RpmStats {
                max_received_in_60s: 6,
                limited: 3
            })
        );
        window.reset();
        assert_eq!(window.stats(), None);
    }
}
