//! Waiting for an event instead of sleeping and hoping: poll the real condition (an admin
//! endpoint, a metric, a file, a job) until it holds, with a generous bound and a failure
//! message that says what never happened and what was seen last.
//!
//! The bound is generous on purpose: it is a guard against hangs on a loaded 2-core machine,
//! not a timing assertion. A test that asserts a duration does so with its own bound.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long [`until`] waits for something that should happen soon.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// First pause between two probes; it doubles up to [`MAX_PAUSE`], so a quick event is seen
/// quickly and a slow one is not probed thousands of times.
const FIRST_PAUSE: Duration = Duration::from_millis(5);

/// Longest pause between two probes.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// Polls `probe` until it returns `Ok`, then returns that value. `Err` carries what the probe
/// saw instead, for the failure message. Panics, naming `what` and the last observation,
/// after [`PATIENCE`].
pub async fn until<T, E, F, Fut>(what: &str, probe: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    until_within(PATIENCE, what, probe).await
}

/// [`until`] with its own bound, for events that may take longer than [`PATIENCE`].
pub async fn until_within<T, E, F, Fut>(patience: Duration, what: &str, mut probe: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let give_up = Instant::now() + patience;
    let mut pause = FIRST_PAUSE;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < give_up,
                "gave up after {patience:?} waiting for {what}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// `Ok(())` when `holds`, else `Err(seen)`: the probe of a condition.
pub fn check(holds: bool, seen: impl Display) -> Result<(), String> {
    if holds { Ok(()) } else { Err(seen.to_string()) }
}
