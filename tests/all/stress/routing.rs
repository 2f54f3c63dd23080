//! The router under a fault storm: a primary failing 30% of requests and stalling 10%, 1,000
//! requests 50 at a time, none of which may reach the client as an error.

use std::time::Duration;

use crate::procs::{serve, sim};
use crate::routing::{burst, p99, received, target};

#[tokio::test]
async fn errors_and_stalls_on_the_primary_never_reach_clients() {
    let primary = sim(&["--error-rate", "0.3", "--hang-rate", "0.1"]);
    let fallback = sim(&[]);
    let weir = serve(&format!(
        "{}{}
[[routes]]
model = \"chaos\"
targets = [\"primary\", \"fallback\"]
retry_budget_percent = 100
[[routes]]
model = \"direct\"
targets = [\"fallback\"]
",
        // A breaker that never trips, so every request meets the primary's faults first.
        target(
            "primary",
            &primary,
            "timeout_ms = 300\nbreaker = { consecutive_failures = 1000, failure_rate_percent = 100, window = 1000, min_requests = 1000 }"
        ),
        target("fallback", &fallback, ""),
    ));
    // The fallback's own p99 at this concurrency, for the bound.
    let baseline = burst(&weir, "direct", 200, 50).await;
    let fallback_p99 = p99(&baseline);
    let results = burst(&weir, "chaos", 1000, 50).await;
    let errors = results.iter().filter(|r| r.0 != 200).count();
    assert_eq!(errors, 0, "client-visible errors");
    // A stalled attempt costs its 300 ms timeout, then the fallback answers: the p99 is
    // about 300 ms + the fallback's p99 (printed). The bound holds on a loaded machine and
    // still tells the timeout from the 60 s default a stall would otherwise wait; the exact
    // timeout and the immediate failover are `router`'s unit tests (paused time).
    let bound = Duration::from_secs(5);
    eprintln!(
        "chaos p99 {:?} (bound {bound:?}; fallback p99 {fallback_p99:?}); primary saw {}",
        p99(&results),
        received(&primary).await
    );
    assert!(
        p99(&results) < bound,
        "p99 {:?} (fallback p99 {fallback_p99:?}): stalls were not cut at the 300 ms timeout",
        p99(&results)
    );
    assert!(
        received(&primary).await >= 1000,
        "every request tried the primary first"
    );
}
