//! Exponential backoff with full jitter: the delay before retry `n` (0-based) is uniform in
//! `[0, min(cap, base * 2^n)]`, so clients that failed together do not retry together.

use std::time::Duration;

/// Backoff bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's upper bound (default 50 ms).
    pub base: Duration,
    /// No delay exceeds this (default 2 s).
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The upper bound of retry `n`'s delay.
    pub fn bound(&self, retry: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << retry.min(20))
            .min(self.cap)
    }

    /// The delay before retry `n`, with `unit` drawn uniformly from `[0, 1)`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        self.bound(retry).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_their_jitter_bounds() {
        let b = Backoff::default();
        for retry in 0..10 {
            let bound = b.bound(retry);
            assert!(bound <= b.cap);
            for i in 0..100 {
                let d = b.delay(retry, rand::random::<f64>());
                assert!(d <= bound, "retry {retry} sample {i}: {d:?} > {bound:?}");
            }
        }
        assert_eq!(b.bound(0), Duration::from_millis(50));
        assert_eq!(b.bound(1), Duration::from_millis(100));
        assert_eq!(b.bound(5), Duration::from_millis(1600));
        assert_eq!(b.bound(6), Duration::from_secs(2));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
    }
}
