//! Per-minute rate buckets (requests or tokens per minute), shared by the router's target
//! limits and the cost module's per-key limits.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A bucket of `per_minute` units refilled continuously (requests or tokens per minute).
#[derive(Debug)]
pub struct MinuteBucket {
    /// Capacity and refill per minute.
    per_minute: f64,
    /// Tokens now.
    tokens: f64,
    /// Last refill.
    at: Instant,
}

impl MinuteBucket {
    /// A full bucket of `per_minute` units.
    pub fn new(per_minute: u32) -> Mutex<MinuteBucket> {
        Mutex::new(MinuteBucket {
            per_minute: f64::from(per_minute),
            tokens: f64::from(per_minute),
            at: Instant::now(),
        })
    }

    /// Adds what has flowed in since the last refill, up to the capacity.
    pub fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_minute / 60.0).min(self.per_minute);
        self.at = now;
    }

    /// Takes `n` units (at most the capacity), or says how long until they are there.
    pub fn take(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let n = n.min(self.per_minute);
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (n - self.tokens) * 60.0 / self.per_minute,
            ))
        }
    }

    /// Gives back `n` units taken for an attempt that did not start.
    pub fn give_back(&mut self, n: f64) {
        self.tokens = (self.tokens + n.min(self.per_minute)).min(self.per_minute);
    }
}

impl MinuteBucket {
    /// Takes `n` units after the fact (tokens a completion turned out to use): the bucket may
    /// go below zero, and then refuses until it has refilled. One debit is clamped to the
    /// capacity, so a single call, whatever usage an upstream reports for it (4294967295
    /// tokens), costs at most one minute's worth and the key is admitted again within about a
    /// minute.
    pub fn debit(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens -= n.clamp(0.0, self.per_minute);
    }

    /// Whether at least `n` units (at most the capacity) are there now, or how long until they
    /// are; takes nothing.
    pub fn check(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let n = n.min(self.per_minute);
        if self.tokens >= n {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (n - self.tokens) * 60.0 / self.per_minute,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_absurd_debit_costs_at_most_one_minute() {
        let mut bucket = MinuteBucket::new(1000).into_inner().unwrap();
        // An upstream reports u32::MAX prompt tokens (and more) for one call.
        bucket.debit(2.0 * f64::from(u32::MAX), Instant::now());
        assert!(bucket.check(10.0, Instant::now()).is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(bucket.check(10.0, Instant::now()), Ok(()));

        // Each debit costs at most a minute's worth: two of them, about two minutes.
        bucket.debit(1000.0, Instant::now());
        bucket.debit(f64::from(u32::MAX), Instant::now());
        let wait = bucket.check(10.0, Instant::now()).unwrap_err();
        assert!(wait <= Duration::from_secs(121), "{wait:?}");
        tokio::time::advance(wait + Duration::from_millis(1)).await;
        assert_eq!(bucket.check(10.0, Instant::now()), Ok(()));
    }
}
