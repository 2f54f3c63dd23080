//! The queue's clock: Unix milliseconds for what is stored and shown, derived from tokio's
//! clock so that tests on paused time see timestamps move with the (virtual) time they wait.

use std::time::Duration;

use tokio::time::Instant;

/// Wall time as an offset from a tokio instant taken at start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// tokio's clock when the queue opened.
    start: Instant,
    /// The system clock then, in Unix ms.
    start_unix_ms: u64,
}

impl Clock {
    /// Reads both clocks now.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
            start_unix_ms: crate::clock::unix_ms(),
        }
    }

    /// Unix ms now.
    pub fn now_ms(&self) -> u64 {
        self.start_unix_ms + self.start.elapsed().as_millis() as u64
    }

    /// The tokio instant of Unix ms `at` (now, for a time already past).
    pub fn instant_of(&self, at: u64) -> Instant {
        let now_ms = self.now_ms();
        Instant::now() + Duration::from_millis(at.saturating_sub(now_ms))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
