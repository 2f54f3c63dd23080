//! The router's timing bounds, exactly, on paused time: what the black-box tests in
//! `tests/all/routing.rs` and `upstream.rs` can only bound generously on a loaded machine.
//! Each test names the black-box test it backs.
//!
//! Upstreams are loopback listeners that accept and never answer, so every attempt ends at a
//! timer; with the clock paused, each elapsed time is exact.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::target::Unavailable;
use super::testing::{black_hole, target_ttft as target};
use super::{Attempt, Reply, RouteError, RoutePlan, RoutePolicy, Router, TargetState};
use crate::config::{PolicySettings, Strategy, TargetLimits};
use crate::providers::ProviderClient;
use crate::wit::ChatRequest;

/// A router over `targets`, and a fallback plan over all of them under `settings`.
fn routed(targets: Vec<Arc<TargetState>>, settings: PolicySettings) -> (Router, RoutePlan) {
    let n = targets.len();
    let plan = RoutePlan {
        chain: (0..n).collect(),
        policy: RoutePolicy::new(settings),
        strategy: Strategy::Fallback,
        weights: vec![1; n],
    };
    (Router::new(ProviderClient::new().unwrap(), targets), plan)
}

/// The shared one-message request, streamed or not.
fn request(stream: bool) -> ChatRequest {
    ChatRequest {
        stream,
        ..super::testing::request()
    }
}

/// One call along `plan` with the client's `deadline`: the result, the attempts made (notes
/// left out) and how long it took.
async fn call(
    router: &Router,
    plan: &RoutePlan,
    request: &ChatRequest,
    deadline: Option<Duration>,
) -> (Result<Reply, RouteError>, Vec<Attempt>, Duration) {
    let started = Instant::now();
    let mut attempts = Vec::new();
    let result = router
        .chat(router.start(plan), request, &[], deadline, &mut attempts)
        .await;
    let elapsed = started.elapsed();
    attempts.retain(|a| a.outcome.is_attempt());
    (result, attempts, elapsed)
}

fn tried(attempts: &[Attempt]) -> Vec<(&str, Duration)> {
    attempts.iter().map(|a| (&*a.target, a.elapsed)).collect()
}

/// Backs `all_targets_down_is_a_502_listing_every_attempt_within_the_timeouts` and the
/// stress test's p99 bound: each attempt ends at its target's timeout, and failing over to
/// a target not tried yet costs no time at all.
#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_fails_over_to_an_untried_target_at_once() {
    let (addr, _server) = black_hole().await;
    let timeout = Duration::from_millis(200);
    let (router, plan) = routed(
        vec![
            target("a", addr, timeout, timeout, TargetLimits::default()),
            target("b", addr, timeout, timeout, TargetLimits::default()),
        ],
        PolicySettings {
            max_attempts: 2,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(10),
            ..PolicySettings::default()
        },
    );
    let (result, attempts, elapsed) = call(&router, &plan, &request(false), None).await;
    assert!(matches!(result, Err(RouteError::AllFailed { .. })));
    assert_eq!(tried(&attempts), [("a", timeout), ("b", timeout)]);
    assert!(
        attempts
            .iter()
            .all(|a| a.outcome.as_str().contains("timed out"))
    );
    assert_eq!(elapsed, 2 * timeout);
}

/// Backs `the_total_deadline_is_never_exceeded`: 400 ms on the first target, the second cut
/// to the 100 ms left, and the call ends at the 500 ms deadline, not a moment later.
#[tokio::test(start_paused = true)]
async fn the_second_attempt_is_cut_to_what_is_left_of_the_deadline() {
    let (addr, _server) = black_hole().await;
    let timeout = Duration::from_millis(400);
    let (router, plan) = routed(
        vec![
            target("a", addr, timeout, timeout, TargetLimits::default()),
            target("b", addr, timeout, timeout, TargetLimits::default()),
        ],
        PolicySettings {
            max_attempts: 5,
            deadline: Duration::from_millis(500),
            retry_budget_percent: 1000,
            ..PolicySettings::default()
        },
    );
    let (result, attempts, elapsed) = call(&router, &plan, &request(false), None).await;
    assert!(matches!(result, Err(RouteError::AllFailed { .. })));
    assert_eq!(
        tried(&attempts),
        [("a", timeout), ("b", Duration::from_millis(100))]
    );
    assert_eq!(elapsed, Duration::from_millis(500));
}

/// Backs `a_client_deadline_header_shortens_never_lengthens`: the client's 200 ms cuts a
/// target timeout of 15 s to exactly 200 ms.
#[tokio::test(start_paused = true)]
async fn a_client_deadline_cuts_the_attempt_to_exactly_its_length() {
    let (addr, _server) = black_hole().await;
    let timeout = Duration::from_secs(15);
    let (router, plan) = routed(
        vec![target(
            "stuck",
            addr,
            timeout,
            timeout,
            TargetLimits::default(),
        )],
        PolicySettings {
            deadline: Duration::from_secs(20),
            ..PolicySettings::default()
        },
    );
    let client = Duration::from_millis(200);
    let (result, attempts, elapsed) = call(&router, &plan, &request(false), Some(client)).await;
    assert!(matches!(result, Err(RouteError::AllFailed { .. })));
    assert_eq!(tried(&attempts), [("stuck", client)]);
    assert_eq!(elapsed, client);
}

/// Backs `a_slow_first_token_fails_over_within_the_ttft_timeout`: a stream's attempt ends
/// at the target's TTFT timeout, not its (longer) timeout.
#[tokio::test(start_paused = true)]
async fn a_stream_attempt_ends_at_the_ttft_timeout() {
    let (addr, _server) = black_hole().await;
    let ttft = Duration::from_millis(150);
    let (router, plan) = routed(
        vec![target(
            "sluggish",
            addr,
            Duration::from_secs(60),
            ttft,
            TargetLimits::default(),
        )],
        PolicySettings {
            max_attempts: 1,
            ..PolicySettings::default()
        },
    );
    let (result, attempts, elapsed) = call(&router, &plan, &request(true), None).await;
    assert!(matches!(result, Err(RouteError::AllFailed { .. })));
    assert_eq!(tried(&attempts), [("sluggish", ttft)]);
    assert_eq!(elapsed, ttft);
}

/// Backs `a_hung_upstream_costs_a_json_request_its_ttft_timeout_then_the_fallback_answers`:
/// a JSON request to a target whose `ttft_timeout` is below its `timeout` goes as a stream
/// (`stream_json`), so an upstream that never answers is left at the TTFT timeout, and the
/// next target is tried then.
#[tokio::test(start_paused = true)]
async fn a_json_attempt_to_a_stream_json_target_ends_at_the_ttft_timeout() {
    let (addr, _server) = black_hole().await;
    let (other, _other) = black_hole().await;
    let ttft = Duration::from_millis(150);
    let long = Duration::from_secs(60);
    let (router, plan) = routed(
        vec![
            target("hung", addr, long, ttft, TargetLimits::default()),
            target("next", other, long, ttft, TargetLimits::default()),
        ],
        PolicySettings {
            max_attempts: 2,
            ..PolicySettings::default()
        },
    );
    assert!(router.targets()[0].upstream.stream_json);
    let (result, attempts, elapsed) = call(&router, &plan, &request(false), None).await;
    assert!(matches!(result, Err(RouteError::AllFailed { .. })));
    assert_eq!(tried(&attempts), [("hung", ttft), ("next", ttft)]);
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

/// Backs `overload_is_shed_at_once_and_in_flight_stays_under_the_limit`: with no wait queue,
/// a route whose targets are all busy sheds without waiting at all, and tries nothing.
#[tokio::test(start_paused = true)]
async fn without_a_queue_a_busy_route_sheds_at_once() {
    let (addr, _server) = black_hole().await;
    let one = TargetLimits {
        max_concurrency: 1,
        ..TargetLimits::default()
    };
    let timeout = Duration::from_secs(1);
    let (router, plan) = routed(
        vec![target("slow", addr, timeout, timeout, one)],
        PolicySettings {
            queue_size: 0,
            ..PolicySettings::default()
        },
    );
    let _held = router.targets()[0]
        .try_slot(Instant::now(), 0, false)
        .unwrap_or_else(|_| panic!("a free slot"));
    let (result, attempts, elapsed) = call(&router, &plan, &request(false), None).await;
    assert!(
        matches!(result, Err(RouteError::Overloaded { retry_after_s: 1 })),
        "{:?}",
        result.err()
    );
    assert!(attempts.is_empty(), "{attempts:?}");
    assert_eq!(elapsed, Duration::ZERO);
}

/// Backs `live_streams_count_against_max_concurrency_until_they_end`: with a queue, a busy
/// route waits exactly its `queue_timeout` for room, then sheds.
#[tokio::test(start_paused = true)]
async fn a_queued_request_is_shed_at_its_queue_timeout() {
    let (addr, _server) = black_hole().await;
    let one = TargetLimits {
        max_concurrency: 1,
        ..TargetLimits::default()
    };
    let timeout = Duration::from_secs(1);
    let queue_timeout = Duration::from_millis(300);
    let (router, plan) = routed(
        vec![target("slow", addr, timeout, timeout, one)],
        PolicySettings {
            queue_size: 4,
            queue_timeout,
            ..PolicySettings::default()
        },
    );
    let _held = router.targets()[0]
        .try_slot(Instant::now(), 0, false)
        .unwrap_or_else(|_| panic!("a free slot"));
    let (result, attempts, elapsed) = call(&router, &plan, &request(false), None).await;
    assert!(
        matches!(result, Err(RouteError::Overloaded { .. })),
        "{:?}",
        result.err()
    );
    assert!(attempts.is_empty(), "{attempts:?}");
    assert_eq!(elapsed, queue_timeout);
}

/// Backs `retry_after_is_honoured_and_an_rpm_limit_keeps_the_target_under_it`: after a
/// 429 with `Retry-After: 2`, the target takes nothing until exactly 2 s have passed.
#[tokio::test(start_paused = true)]
async fn a_target_cools_down_for_exactly_its_retry_after() {
    let (addr, _server) = black_hole().await;
    let timeout = Duration::from_secs(1);
    let limited = target("limited", addr, timeout, timeout, TargetLimits::default());
    let retry_after = Duration::from_secs(2);
    let refused = Instant::now();
    let slot = limited
        .try_slot(refused, 1, false)
        .unwrap_or_else(|_| panic!("a slot"));
    limited.finish(slot, false, Some(retry_after), Duration::ZERO, refused);
    tokio::time::advance(retry_after - Duration::from_millis(1)).await;
    assert_eq!(
        limited.try_slot(Instant::now(), 1, false).err(),
        Some(Unavailable::CoolingDown(refused + retry_after)),
        "still cooling down a millisecond before"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(limited.try_slot(Instant::now(), 1, false).is_ok());
}
