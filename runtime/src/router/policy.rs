//! A route's retry, deadline and queueing policy.

use std::time::Duration;

use tokio::sync::Semaphore;

use super::backoff::Backoff;
use super::budget::RetryBudget;
pub use crate::config::PolicySettings;

/// Retries always allowed per second, whatever the traffic.
pub const RETRY_FLOOR_PER_SEC: f64 = 1.0;
/// No attempt starts with less time than this left before the deadline.
pub const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(5);

/// A route's live policy: settings plus the shared budget and queue.
#[derive(Debug)]
pub struct RoutePolicy {
    /// The settings.
    pub settings: PolicySettings,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Retries left for this route.
    pub budget: RetryBudget,
    /// Places in the wait queue.
    pub queue: Semaphore,
    /// Hedges left for this route, when it hedges (`max_percent` of its recent requests).
    pub hedges: Option<RetryBudget>,
}

impl RoutePolicy {
    /// A policy with fresh budget and queue.
    pub fn new(settings: PolicySettings) -> RoutePolicy {
        RoutePolicy {
            backoff: Backoff {
                base: settings.backoff_base,
                cap: settings.backoff_max,
            },
            budget: RetryBudget::new(
                f64::from(settings.retry_budget_percent) / 100.0,
                RETRY_FLOOR_PER_SEC,
            ),
            queue: Semaphore::new(settings.queue_size as usize),
            hedges: settings
                .hedge
                .map(|hedge| RetryBudget::new(f64::from(hedge.max_percent) / 100.0, 0.0)),
            settings,
        }
    }
}
