//! A fleet under load while its Redis fails: killed (SIGKILL, then started again, empty) and
//! paused (SIGSTOP for 5 s, then SIGCONT). With the default `state.on_unavailable` policies no
//! client request fails; the added latency during the outage is about one Redis deadline (a
//! call in flight when Redis went away waits for it, then the breaker stops every call from
//! waiting); afterwards every node is back on the shared state.
//!
//! Latency figures are printed, not asserted tightly (this runs on a loaded 2-core machine):
//! the asserted bound is generous; the bench measures the real figure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::cost::{ask, chat, config, key};
use crate::fleet::harness::{Fleet, RedisServer, state_table};
use crate::procs::sim;
use crate::wait::{check, until};

const SECRET: &str = "sk-fleet-outage";

/// Latencies (ms) of the requests that started within `[from, to)`.
fn window(samples: &[(Duration, Duration)], from: Duration, to: Duration) -> Vec<f64> {
    let mut ms: Vec<f64> = samples
        .iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .map(|(_, took)| took.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

fn p99(sorted: &[f64]) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * 0.99).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

#[tokio::test]
async fn no_client_request_fails_while_redis_is_killed_or_paused() {
    let mut redis = RedisServer::start();
    let up = sim(&["--latency-ms", "5"]);
    let limits = "daily_budget_usd = 1000.0\nrpm = 1000000\ntpm = 100000000";
    let fleet = Fleet::start(3, |_, data_dir| {
        let extra = format!(
            "[server]\ndata_dir = \"{data_dir}\"\n\n{}\n{}",
            state_table(&redis, ""),
            key("team", SECRET, limits)
        );
        config(
            &[("a", &up, "sim-a")],
            "cache = { ttl_ms = 600000, cache_nonzero_temperature = true }",
            &extra,
        )
    });
    let addrs: Vec<_> = (0..3).map(|i| fleet.addr(i)).collect();

    // Load: 12 clients round-robin over the nodes, half the prompts repeated (cache), until
    // stopped. Every answer is recorded with when it started and how long it took.
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..12usize {
        let (stop, addrs) = (stop.clone(), addrs.clone());
        clients.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut failures = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let prompt = match n % 2 {
                    0 => format!("repeated question {}", n % 7),
                    _ => format!("client {c} question {n}"),
                };
                let at = start.elapsed();
                let t0 = Instant::now();
                let answer = ask(addrs[(c + n) % 3], Some(SECRET), &chat(&prompt, 8)).await;
                if answer.status != 200 {
                    failures.push(format!(
                        "{} at {at:?}: {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    ));
                }
                samples.push((at, t0.elapsed()));
                n += 1;
            }
            (samples, failures)
        }));
    }
    let phase = |secs: u64| tokio::time::sleep(Duration::from_secs(secs));
    phase(3).await;
    let killed_at = start.elapsed();
    redis.signal("-KILL");
    phase(3).await;
    redis.restart();
    let restarted_at = start.elapsed();
    phase(3).await;
    let paused_at = start.elapsed();
    redis.signal("-STOP");
    phase(5).await;
    redis.signal("-CONT");
    let resumed_at = start.elapsed();
    phase(3).await;
    stop.store(true, Ordering::Relaxed);

    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for client in clients {
        let (s, f) = client.await.unwrap();
        samples.extend(s);
        failures.extend(f);
    }
    let before = window(&samples, Duration::ZERO, killed_at);
    let killed = window(&samples, killed_at, restarted_at);
    let paused = window(&samples, paused_at, resumed_at);
    let after = window(&samples, resumed_at + Duration::from_secs(1), Duration::MAX);
    eprintln!(
        "fleet outage: {} requests; p99 ms before {:.1} (n={}), Redis killed {:.1} (n={}), \
         paused {:.1} (n={}), after {:.1} (n={}); max while paused {:.1}",
        samples.len(),
        p99(&before),
        before.len(),
        p99(&killed),
        killed.len(),
        p99(&paused),
        paused.len(),
        p99(&after),
        after.len(),
        paused.last().copied().unwrap_or(0.0),
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        samples.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        !killed.is_empty() && !paused.is_empty(),
        "load ran during both outages"
    );
    // Generous: the command deadline is 25 ms; nothing waits seconds on a Redis that is gone.
    for (what, sorted) in [("killed", &killed), ("paused", &paused)] {
        assert!(
            p99(sorted) < p99(&before) + 1000.0,
            "p99 while Redis was {what}: {:.1} ms against {:.1} ms before",
            p99(sorted),
            p99(&before)
        );
    }

    // Every node is back on Redis, and shared state works again: an answer fetched on one
    // node is a hit on another.
    for i in 0..3 {
        until("the node to be back on Redis", || async {
            let state = fleet.state(i).await;
            check(state["available"] == true, state)
        })
        .await;
    }
    let body = chat("asked once after the outage", 8);
    let first = ask(addrs[0], Some(SECRET), &body).await;
    assert_eq!(first.status, 200);
    until("the answer to be shared", || async {
        let again = ask(addrs[1], Some(SECRET), &body).await;
        let cache = again
            .headers
            .get("x-weir-cache")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        check(
            again.status == 200 && cache.as_deref() == Some("hit"),
            format!("{cache:?}"),
        )
    })
    .await;
}
