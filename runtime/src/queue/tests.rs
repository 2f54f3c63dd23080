//! The queue on paused time with executors that are closures: retries and their delays,
//! dead jobs, the bounds (the queue's and each key's), idempotency, cancel, retry, and
//! recovery after a crash. The helpers serve `retention`'s tests too.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;

use super::*;

pub(super) fn settings(max_attempts: u32, max_queued: u32) -> JobsSettings {
    JobsSettings {
        workers: 2,
        max_queued,
        max_attempts,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        ..JobsSettings::default()
    }
}

pub(super) fn routes() -> HashMap<String, u32> {
    HashMap::from([("demo".to_string(), 2)])
}

pub(super) fn spec(key: Option<&str>) -> JobSpec {
    JobSpec {
        route: "demo".into(),
        owner: "-".into(),
        priority: 5,
        request: json!({"model": "demo", "messages": []}),
        headers: Vec::new(),
        callback_url: None,
        idempotency_key: key.map(str::to_string),
    }
}

fn failing(error: &'static str) -> Outcome {
    Outcome {
        verdict: Verdict::Retry,
        status: 502,
        body: Some(json!({"error": {"message": error}})),
        error: Some(error.to_string()),
        cost_pico: 0,
        retry_after: None,
    }
}

pub(super) fn never_delivered() -> Arc<dyn Deliver> {
    Arc::new(|_: Delivery| async {
        Err::<(), _>(DeliveryError::new(Failure::Unreachable, "no receiver"))
    })
}

pub(super) fn succeeding() -> Outcome {
    Outcome {
        verdict: Verdict::Succeeded,
        status: 200,
        body: Some(json!({"ok": 1})),
        error: None,
        cost_pico: 0,
        retry_after: None,
    }
}

/// Polls (on paused time) until job `id` has a status for which `done` holds.
pub(super) async fn until(queue: &Queue, id: &str, done: impl Fn(Status) -> bool) -> Job {
    for _ in 0..100_000 {
        if let Ok(Some(job)) = queue.get(id, None)
            && done(job.status)
        {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never got there");
}

#[tokio::test(start_paused = true)]
async fn an_always_failing_job_backs_off_exponentially_then_is_dead_with_every_error() {
    // Jitter fixed at its top: each delay is its bound, 100, 200, 400, 800 ms, then the 1 s cap.
    let queue = Queue::open_with_jitter(settings(6, 10), routes(), None, Box::new(|| 1.0))
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    queue.start(
        Arc::new(move |run: Run| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                let mut outcome = failing("upstream down");
                outcome.error = Some(format!("attempt {} failed", run.attempt));
                outcome
            }
        }),
        never_delivered(),
    );
    let job = queue.submit(spec(None)).await.unwrap().job;
    let job = until(&queue, &job.id, |s| s == Status::Dead).await;
    assert_eq!(calls.load(Ordering::Relaxed), 6);
    assert_eq!(job.attempts.len(), 6);
    for (i, attempt) in job.attempts.iter().enumerate() {
        assert_eq!(
            attempt.error.as_deref(),
            Some(format!("attempt {} failed", i + 1).as_str())
        );
        assert_eq!(attempt.status, Some(502));
        assert!(attempt.finished_ms.is_some());
    }
    let gaps: Vec<u64> = job
        .attempts
        .windows(2)
        .map(|w| w[1].started_ms - w[0].started_ms)
        .collect();
    assert_eq!(gaps, [100, 200, 400, 800, 1000]);
    assert_eq!(job.response_status, Some(502));
    assert!(job.finished_ms.is_some());
}

#[tokio::test(start_paused = true)]
async fn with_random_jitter_every_delay_stays_under_its_bound() {
    let queue = Queue::open(settings(8, 10), routes(), None).await.unwrap();
    queue.start(
        Arc::new(|_: Run| async { failing("boom") }),
        never_delivered(),
    );
    let job = queue.submit(spec(None)).await.unwrap().job;
    let job = until(&queue, &job.id, |s| s == Status::Dead).await;
    assert_eq!(job.attempts.len(), 8);
    let backoff = queue.backoff();
    for (retry, pair) in job.attempts.windows(2).enumerate() {
        let gap = Duration::from_millis(pair[1].started_ms - pair[0].started_ms);
        assert!(gap <= backoff.bound(retry as u32), "retry {retry}: {gap:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_not_retried_and_a_dead_job_can_be_retried() {
    let queue = Queue::open(settings(2, 10), routes(), None).await.unwrap();
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    queue.start(
        Arc::new(move |run: Run| {
            let healthy = flag.load(Ordering::Relaxed);
            async move {
                if run.spec.priority == 1 {
                    return Outcome {
                        verdict: Verdict::Fail,
                        status: 400,
                        body: None,
                        error: Some("bad request".into()),
                        cost_pico: 0,
                        retry_after: None,
                    };
                }
                if healthy {
                    Outcome {
                        verdict: Verdict::Succeeded,
                        status: 200,
                        body: Some(json!({"ok": true})),
                        error: None,
                        cost_pico: 7,
                        retry_after: None,
                    }
                } else {
                    failing("down")
                }
            }
        }),
        never_delivered(),
    );
    let bad = queue
        .submit(JobSpec {
            priority: 1,
            ..spec(None)
        })
        .await
        .unwrap()
        .job;
    let bad = until(&queue, &bad.id, Status::is_terminal).await;
    assert_eq!((bad.status, bad.attempts.len()), (Status::Failed, 1));

    let job = queue.submit(spec(None)).await.unwrap().job;
    let dead = until(&queue, &job.id, |s| s == Status::Dead).await;
    assert_eq!(dead.attempts.len(), 2);
    assert!(matches!(
        queue.retry(&bad.id, None).await,
        Err(ChangeError::Conflict {
            status: Status::Failed,
            ..
        })
    ));
    healthy.store(true, Ordering::Relaxed);
    queue.retry(&job.id, None).await.unwrap();
    let done = until(&queue, &job.id, |s| s == Status::Succeeded).await;
    assert_eq!(done.attempts.len(), 3, "history kept across the retry");
    assert_eq!(done.response, Some(json!({"ok": true})));
    assert_eq!(done.cost_pico(), 7);
}

#[tokio::test(start_paused = true)]
async fn the_bound_refuses_with_retry_after_and_idempotency_keys_name_one_job() {
    // Not started: nothing drains.
    let queue = Queue::open(settings(3, 2), routes(), None).await.unwrap();
    let first = queue.submit(spec(Some("k1"))).await.unwrap();
    assert!(!first.existing);
    let again = queue.submit(spec(Some("k1"))).await.unwrap();
    assert!(again.existing);
    assert_eq!(again.job.id, first.job.id);
    queue.submit(spec(None)).await.unwrap();
    match queue.submit(spec(None)).await {
        Err(SubmitError::Full {
            depth: 2,
            max: 2,
            retry_after_s,
        }) => assert_eq!(retry_after_s, DEFAULT_RETRY_AFTER_S),
        other => panic!("expected a full queue, got {other:?}"),
    }
    // A repeated key still finds its job when the queue is full.
    let full_again = queue.submit(spec(Some("k1"))).await.unwrap();
    assert_eq!(full_again.job.id, first.job.id);
    // Another owner's key is another job (and here, another refusal).
    let other = JobSpec {
        owner: "team-b".into(),
        ..spec(Some("k1"))
    };
    assert!(matches!(
        queue.submit(other).await,
        Err(SubmitError::Full { .. })
    ));
    // Cancelling frees a slot.
    let cancelled = queue.cancel(&first.job.id, None).await.unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    assert!(matches!(
        queue.cancel(&first.job.id, None).await,
        Err(ChangeError::Conflict { .. })
    ));
    assert!(matches!(
        queue.cancel(&first.job.id, Some("someone-else")).await,
        Err(ChangeError::NotFound(_))
    ));
    queue.submit(spec(None)).await.unwrap();
    assert_eq!(queue.stats().queued, 2);
}

#[tokio::test(start_paused = true)]
async fn a_key_at_its_own_bound_is_refused_while_other_keys_still_submit() {
    let settings = JobsSettings {
        max_queued_per_key: 2,
        ..settings(1, 5)
    };
    let queue = Queue::open(settings, routes(), None).await.unwrap();
    let of = |owner: &str| JobSpec {
        owner: owner.into(),
        ..spec(None)
    };
    let first = queue.submit(of("alpha")).await.unwrap().job;
    queue.submit(of("alpha")).await.unwrap();
    match queue.submit(of("alpha")).await {
        Err(SubmitError::KeyFull {
            depth: 2,
            max: 2,
            retry_after_s,
        }) => assert_eq!(retry_after_s, DEFAULT_RETRY_AFTER_S),
        other => panic!("expected the key's bound, got {other:?}"),
    }
    // Another key still gets in.
    queue.submit(of("beta")).await.unwrap();
    // Without keys there is no tenant to protect: only the queue's bound counts.
    queue.submit(spec(None)).await.unwrap();
    queue.submit(spec(None)).await.unwrap();
    assert!(matches!(
        queue.submit(spec(None)).await,
        Err(SubmitError::Full {
            depth: 5,
            max: 5,
            ..
        })
    ));
    // A cancelled job frees its key's slot; the key's bound is checked before the queue's.
    queue.cancel(&first.id, None).await.unwrap();
    queue.submit(of("alpha")).await.unwrap();
    assert!(matches!(
        queue.submit(of("alpha")).await,
        Err(SubmitError::KeyFull { depth: 2, .. })
    ));
    assert!(matches!(
        queue.submit(of("beta")).await,
        Err(SubmitError::Full { depth: 5, .. })
    ));
    // Jobs that end free their key's slots.
    queue.start(Arc::new(|_: Run| async { succeeding() }), never_delivered());
    for _ in 0..100_000 {
        if queue.stats().queued + queue.stats().running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(queue.stats().queued + queue.stats().running, 0);
    queue.submit(of("alpha")).await.unwrap();
    queue.submit(of("alpha")).await.unwrap();
    assert!(matches!(
        queue.submit(of("alpha")).await,
        Err(SubmitError::KeyFull { .. })
    ));
}

#[test]
fn retry_after_follows_the_drain_rate() {
    assert_eq!(
        retry_after(1, 0, Duration::from_secs(60)),
        DEFAULT_RETRY_AFTER_S
    );
    // 60 jobs a minute: one slot in a second, ten slots in ten.
    assert_eq!(retry_after(1, 60, Duration::from_secs(60)), 1);
    assert_eq!(retry_after(10, 60, Duration::from_secs(60)), 10);
    // 2 a minute: 30 s for one slot.
    assert_eq!(retry_after(1, 2, Duration::from_secs(60)), 30);
    assert_eq!(
        retry_after(1_000_000, 1, Duration::from_secs(60)),
        MAX_RETRY_AFTER_S
    );
}

#[tokio::test]
async fn a_job_running_at_a_crash_runs_again_and_is_counted_as_a_duplicate() {
    let dir = std::env::temp_dir().join(format!("weir-queue-recover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let id = {
        // What a crash leaves behind: a job marked running, its attempt never finished.
        let store = Store::open(Some(&dir)).unwrap();
        let job = Job {
            id: "job_1".into(),
            seq: 1,
            spec: spec(None),
            status: Status::Running,
            created_ms: 1,
            finished_ms: None,
            next_attempt_ms: None,
            attempts: vec![Attempt {
                started_ms: 2,
                ..Attempt::default()
            }],
            attempts_before_retry: 0,
            duplicate_executions: 0,
            superseded_cost_pico: 0,
            response: None,
            response_status: None,
            callback: None,
        };
        store.write(vec![Write::Insert(job)]).await.unwrap();
        "job_1".to_string()
    };
    let queue = Queue::open(settings(5, 10), routes(), Some(&dir))
        .await
        .unwrap();
    assert_eq!(queue.stats().duplicate_executions, 1);
    assert_eq!(queue.stats().queued, 1);
    queue.start(
        Arc::new(|_: Run| async {
            Outcome {
                verdict: Verdict::Succeeded,
                status: 200,
                body: Some(json!({"ok": 1})),
                error: None,
                cost_pico: 0,
                retry_after: None,
            }
        }),
        never_delivered(),
    );
    let job = until(&queue, &id, |s| s == Status::Succeeded).await;
    assert_eq!(job.duplicate_executions, 1);
    assert_eq!(job.attempts.len(), 2);
    assert!(
        job.attempts[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("host stopped")
    );
    assert!(queue.shutdown(Duration::from_secs(5)).await);
    // The next seq continues after what is stored.
    assert!(queue.inner.next_seq.load(Ordering::Relaxed) > 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn a_failed_callback_shows_its_class_never_the_detail_and_each_delivery_is_signed_afresh() {
    let settings = JobsSettings {
        callback_secret: Some("s3cret".into()),
        callback_max_attempts: 3,
        ..settings(1, 10)
    };
    let queue = Queue::open_with_jitter(settings, routes(), None, Box::new(|| 1.0))
        .await
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    queue.start(
        Arc::new(|_: Run| async { succeeding() }),
        Arc::new(move |delivery: Delivery| {
            let n = {
                let mut log = log.lock().unwrap();
                log.push(delivery.signature.clone());
                log.len()
            };
            async move {
                Err::<(), _>(match n {
                    1 => DeliveryError::new(
                        Failure::Unreachable,
                        "tcp connect error: Connection refused (os error 111)",
                    ),
                    2 => DeliveryError::new(Failure::Status(503), "upstream status 503"),
                    _ => DeliveryError::new(Failure::Timeout, "timed out after 10s"),
                })
            }
        }),
    );
    let job = queue
        .submit(JobSpec {
            callback_url: Some("http://127.0.0.1:1/hook".into()),
            ..spec(None)
        })
        .await
        .unwrap()
        .job;
    let mut classes = Vec::new();
    for _ in 0..100_000 {
        let job = queue.get(&job.id, None).unwrap().unwrap();
        if let Some(callback) = &job.callback {
            if let Some(error) = &callback.last_error
                && classes.last() != Some(error)
            {
                classes.push(error.clone());
            }
            if callback.state == CallbackState::Failed {
                // The callback as shown (not the whole job: a millisecond timestamp may
                // contain the digits 503).
                let shown = job_json(&job)["callback"].to_string();
                assert!(!shown.contains("os error"), "{shown}");
                assert!(!shown.contains("refused"), "{shown}");
                assert!(!shown.contains("503"), "{shown}");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Polled, so a loaded machine may miss a class between two polls: what was seen is in
    // the order the deliveries failed, and the last is the last delivery's.
    let expected = ["unreachable", "status 5xx", "timeout"];
    let mut rest = expected.iter();
    assert!(
        classes.iter().all(|c| rest.any(|e| e == c)),
        "{classes:?} is not in the order of {expected:?}"
    );
    assert_eq!(classes.last().map(String::as_str), Some("timeout"));
    let signatures = seen.lock().unwrap().clone();
    assert_eq!(signatures.len(), 3);
    // Every delivery carries a `t=<unix seconds>,v1=<64 hex>` signature of its own.
    for signature in &signatures {
        let (t, v1) = signature
            .strip_prefix("t=")
            .and_then(|rest| rest.split_once(",v1="))
            .unwrap();
        assert!(t.parse::<u64>().unwrap() > 1_600_000_000, "{signature}");
        assert_eq!(v1.len(), 64, "{signature}");
    }
}
