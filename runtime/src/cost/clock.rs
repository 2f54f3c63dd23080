//! Wall-clock time for budget windows (UTC days and calendar months) and ledger rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Seconds in a day.
const DAY: u64 = 86_400;

/// The clock budgets read: the system's, or a fixed one in tests.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// When set (non-zero), the time in seconds since the epoch.
    fixed: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// A clock stuck at `secs` until [`Clock::set`].
    pub fn fixed(secs: u64) -> Clock {
        Clock {
            fixed: Some(Arc::new(AtomicU64::new(secs))),
        }
    }

    /// Moves a fixed clock (no effect on the system clock).
    pub fn set(&self, secs: u64) {
        if let Some(fixed) = &self.fixed {
            fixed.store(secs, Ordering::Relaxed);
        }
    }

    /// Seconds since the epoch.
    pub fn unix_now(&self) -> u64 {
        match &self.fixed {
            Some(fixed) => fixed.load(Ordering::Relaxed),
            None => crate::clock::unix_secs(),
        }
    }
}

/// The UTC day (days since the epoch) of `secs`.
pub fn day_of(secs: u64) -> u32 {
    (secs / DAY) as u32
}

/// (year, month 1..=12, day 1..=31) of a day number (Howard Hinnant's civil_from_days).
pub fn civil(day: u32) -> (i64, u32, u32) {
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day number of (year, month, day) (days_from_civil).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> u32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) as u32
}

/// A month as `year * 12 + (month - 1)`, for comparing windows.
pub fn month_of(day: u32) -> u32 {
    let (y, m, _) = civil(day);
    (y * 12 + i64::from(m) - 1) as u32
}

/// The first second of the day after `day`.
pub fn next_day_start(day: u32) -> u64 {
    (u64::from(day) + 1) * DAY
}

/// The first second of the month after the one `day` lies in.
pub fn next_month_start(day: u32) -> u64 {
    let (y, m, _) = civil(day);
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    u64::from(days_from_civil(y, m, 1)) * DAY
}

/// The first day of the month `day` lies in.
pub fn month_start_day(day: u32) -> u32 {
    let (y, m, _) = civil(day);
    days_from_civil(y, m, 1)
}

/// `YYYY-MM-DD` of a day number.
pub fn date(day: u32) -> String {
    let (y, m, d) = civil(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of `secs`.
pub fn rfc3339(secs: u64) -> String {
    let rem = secs % DAY;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date(day_of(secs)),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The day number of a `YYYY-MM-DD` date; `None` for a day its month does not have
/// (`2026-02-30`, not silently March 2nd).
pub fn parse_date(text: &str) -> Option<u32> {
    let mut parts = text.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !((1970..=9999).contains(&y) && (1..=12).contains(&m) && d >= 1) {
        return None;
    }
    let day = days_from_civil(y, m, d);
    (civil(day) == (y, m, d)).then_some(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_windows_reset_at_utc_boundaries() {
        // 2026-11-26T21:12:01Z
        let secs = 1_795_727_521;
        assert_eq!(rfc3339(secs), "2026-11-26T21:12:01Z");
        let day = day_of(secs);
        assert_eq!(date(day), "2026-11-26");
        assert_eq!(parse_date("2026-11-26"), Some(day));
        assert_eq!(rfc3339(next_day_start(day)), "2026-11-27T00:00:00Z");
        assert_eq!(rfc3339(next_month_start(day)), "2026-12-01T00:00:00Z");
        let december = parse_date("2026-12-31").unwrap_or(0);
        assert_eq!(rfc3339(next_month_start(december)), "2027-01-01T00:00:00Z");
        assert_eq!(date(month_start_day(day)), "2026-11-01");
        assert_ne!(month_of(day), month_of(december));
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_date("2026-04-31"), None);
        assert_eq!(parse_date("2026-02-29"), None);
        assert!(parse_date("2028-02-29").is_some());
        assert_eq!(date(0), "1970-01-01");
    }
}
