//! A circuit breaker per target.
//!
//! Closed, it counts outcomes: it trips on `consecutive_failures` failures in a row, or when
//! the failure rate over the last `window` outcomes reaches `failure_rate` with at least
//! `min_requests` of them. Open, it admits nothing until its ejection time has passed; the
//! ejection doubles with each consecutive trip (capped), so a target that keeps failing is
//! tried less and less often. Then it admits exactly one probe (half-open): success closes
//! it, failure opens it again for longer. Time is `tokio::time::Instant`, so tests run on
//! paused time.

use std::collections::VecDeque;

use tokio::time::Instant;

pub use crate::config::BreakerSettings;

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Requests flow.
    Closed,
    /// Nothing is sent until `until`.
    Open {
        /// When a probe may be sent.
        until: Instant,
    },
    /// One probe is in flight; nothing else is sent.
    HalfOpen,
}

/// What the breaker says about sending one request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Send it.
    Yes,
    /// Send it as the single probe of a half-open breaker.
    Probe,
    /// Do not send it.
    No,
}

/// One target's breaker.
#[derive(Debug)]
pub struct Breaker {
    /// Thresholds and ejection times.
    settings: BreakerSettings,
    /// The current state.
    state: State,
    /// Failures in a row while closed.
    consecutive: u32,
    /// The last `window` outcomes (true = failure).
    window: VecDeque<bool>,
    /// Consecutive trips (resets when a probe succeeds).
    trips: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            state: State::Closed,
            consecutive: 0,
            window: VecDeque::with_capacity(settings.window as usize),
            trips: 0,
        }
    }

    /// The state as of `now` (an open breaker whose time is up reads as ready for a probe).
    pub fn state(&self) -> State {
        self.state
    }

    /// Consecutive trips so far.
    pub fn trips(&self) -> u32 {
        self.trips
    }

    /// Failures in a row while closed.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// Whether a request may be sent at `now`; a `Probe` must be followed by [`Self::record`].
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed => Admit::Yes,
            State::HalfOpen => Admit::No,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Admit::Probe
            }
            State::Open { .. } => Admit::No,
        }
    }

    /// When an open breaker will admit its probe.
    #[cfg(test)]
    pub fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Records the outcome of a request that was admitted.
    pub fn record(&mut self, success: bool, now: Instant) {
        match self.state {
            State::HalfOpen => {
                if success {
                    self.state = State::Closed;
                    self.trips = 0;
                    self.consecutive = 0;
                    self.window.clear();
                } else {
                    self.trip(now);
                }
            }
            State::Closed => {
                if self.window.len() == self.settings.window as usize {
                    self.window.pop_front();
                }
                self.window.push_back(!success);
                self.consecutive = if success { 0 } else { self.consecutive + 1 };
                let failures = self.window.iter().filter(|f| **f).count() as u32;
                let total = self.window.len() as u32;
                let rate_trips = total >= self.settings.min_requests
                    && failures * 100 >= self.settings.failure_rate_percent * total;
                if !success
                    && (self.consecutive >= self.settings.consecutive_failures || rate_trips)
                {
                    self.trip(now);
                }
            }
            // An outcome of a request admitted before the breaker opened: already counted.
            State::Open { .. } => {}
        }
    }

    /// Gives a probe slot back without an outcome (the probe was never sent).
    pub fn release_probe(&mut self, now: Instant) {
        if self.state == State::HalfOpen {
            self.state = State::Open { until: now };
        }
    }

    fn trip(&mut self, now: Instant) {
        self.trips += 1;
        let factor = 1u32 << (self.trips - 1).min(16);
        let ejection = self
            .settings
            .ejection
            .saturating_mul(factor)
            .min(self.settings.max_ejection);
        self.state = State::Open {
            until: now + ejection,
        };
        self.consecutive = 0;
        self.window.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            failure_rate_percent: 50,
            window: 10,
            min_requests: 6,
            ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(4),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_exactly_the_nth_consecutive_failure() {
        let mut b = Breaker::new(settings());
        for _ in 0..2 {
            assert_eq!(b.admit(Instant::now()), Admit::Yes);
            b.record(false, Instant::now());
        }
        assert_eq!(b.state(), State::Closed);
        b.record(false, Instant::now());
        assert!(matches!(b.state(), State::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn admits_nothing_while_open_then_exactly_one_probe() {
        let mut b = Breaker::new(settings());
        for _ in 0..3 {
            b.record(false, Instant::now());
        }
        let mut admitted = 0;
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(9)).await; // 900 ms < 1 s
            if b.admit(Instant::now()) != Admit::No {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 0, "nothing is sent while open");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        for _ in 0..10 {
            assert_eq!(b.admit(Instant::now()), Admit::No, "exactly one probe");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_longer_and_a_good_one_closes() {
        let mut b = Breaker::new(settings());
        for _ in 0..3 {
            b.record(false, Instant::now());
        }
        let first = b.open_until().unwrap() - Instant::now();
        assert_eq!(first, Duration::from_secs(1));
        tokio::time::advance(first).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        b.record(false, Instant::now());
        let second = b.open_until().unwrap() - Instant::now();
        assert_eq!(second, Duration::from_secs(2), "ejection doubles");
        tokio::time::advance(second).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        b.record(false, Instant::now());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        b.record(false, Instant::now());
        assert_eq!(
            b.open_until().unwrap() - Instant::now(),
            Duration::from_secs(4),
            "capped at max_ejection"
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        b.record(true, Instant::now());
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.trips(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_the_failure_rate_over_the_window() {
        let mut b = Breaker::new(settings());
        // Alternate: never 3 in a row, but 50% over 6+ outcomes.
        for i in 0..5 {
            b.record(i % 2 == 1, Instant::now());
            assert_eq!(b.state(), State::Closed, "below min_requests at {i}");
        }
        b.record(false, Instant::now()); // 6 outcomes, 3 failures = 50%
        assert!(matches!(b.state(), State::Open { .. }));
    }
}
