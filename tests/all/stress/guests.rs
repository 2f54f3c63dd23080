//! Hostile guests against the async workers: while stages call `count-tokens` on 48 MiB of
//! text, two at a time, `/healthz` keeps answering within the bound (p99 under
//! 50 ms), and each stage answers (or meets its deadline) in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::bounds::{chaos, chat, config};
use crate::procs::{get, post, serve, sim};
use crate::routing::p99;

/// Rounds of two concurrent requests.
const ROUNDS: usize = 5;
/// The stage's deadline (`chaos` sets it).
const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_stays_fast_while_stages_count_tokens_on_48_mib() {
    let up = sim(&[]);
    let weir = serve(&config(
        &up,
        "",
        &chaos("count-tokens-huge", "count", "", &[]),
    ));
    let addr = weir.addr;

    // A client polling `/healthz` back to back for as long as the stages run.
    let running = Arc::new(AtomicBool::new(true));
    let poller = tokio::spawn({
        let running = running.clone();
        async move {
            let mut polls = Vec::new();
            while running.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answer = get(addr, "/healthz").await;
                polls.push((answer.status.as_u16(), started.elapsed()));
            }
            polls
        }
    });

    for _ in 0..ROUNDS {
        let call = || async move {
            let started = Instant::now();
            let answer = post(addr, "/v1/chat/completions", &chat("count", "hi")).await;
            (answer, started.elapsed())
        };
        let (a, b) = tokio::join!(call(), call());
        for (answer, elapsed) in [a, b] {
            let body = answer.json();
            // The estimate comes at once; a stage that met its deadline instead would be a
            // 500 `deadline_exceeded`, also in time.
            let text = body["choices"][0]["message"]["content"].as_str();
            let code = body["error"]["code"].as_str();
            assert!(
                text == Some("count-tokens-huge: 12582912; hello world: 2")
                    || code == Some("deadline_exceeded"),
                "{body}"
            );
            assert!(elapsed < DEADLINE + Duration::from_secs(5), "{elapsed:?}");
        }
    }
    running.store(false, Ordering::Relaxed);
    let polls = poller.await.unwrap();
    assert!(polls.iter().all(|(status, _)| *status == 200));
    assert!(polls.len() >= 100, "only {} polls", polls.len());
    let p99 = p99(&polls);
    println!("/healthz p99 over {} polls: {p99:?}", polls.len());
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
}
