//! Wall-clock readings: the Unix time now, for timestamps that are stored, shown or compared
//! across processes (ledger rows and budget windows, `created` fields, cache expiry on disk,
//! job schedules).
//!
//! Durations, deadlines and timeouts use tokio's clock instead (`tokio::time::Instant`, which
//! tests can pause); modules that need both derive one from the other (`queue::Clock`) or make
//! the wall clock settable (`cost::Clock`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch, now (zero if the system clock is set before 1970).
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Seconds since the Unix epoch, now (0 if the system clock is set before 1970).
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Milliseconds since the Unix epoch, now (0 if the system clock is set before 1970).
pub fn unix_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_read_the_same_clock() {
        let (secs, ms) = (unix_secs(), unix_ms());
        // After 2020-01-01 and at most a second apart.
        assert!(secs > 1_577_836_800);
        assert!(ms / 1000 >= secs && ms / 1000 <= secs + 1);
    }
}
