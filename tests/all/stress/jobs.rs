//! Background jobs through crashes: 500 jobs, three `kill -9`s mid-run; none is lost and
//! every duplicate execution is counted.

use tokio::time::Instant;

use crate::jobs::{PATIENCE, chat, config, data_dir, sim_calls};
use crate::procs::{get, post, scratch_config, serve_file, sim};
use crate::wait;

#[tokio::test]
async fn five_hundred_jobs_survive_three_kill_9s_and_duplicates_are_counted() {
    let started = Instant::now();
    let up = sim(&["--latency-ms", "40"]);
    let dir = data_dir("crash");
    let path = scratch_config(&config(
        &up,
        &dir,
        "workers = 4\nmax_queued = 1000\nmax_attempts = 10\nbackoff_base_ms = 10\nbackoff_max_ms = 100",
        "jobs = { concurrency = 4 }",
    ));
    let mut weir = serve_file(&path);
    let addr = weir.addr;
    let mut ids = Vec::with_capacity(500);
    for chunk in 0..10 {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let n = chunk * 50 + i;
                tokio::spawn(
                    async move { post(addr, "/v1/jobs", &chat(&format!("job {n}"))).await },
                )
            })
            .collect();
        for task in tasks {
            let answer = task.await.unwrap();
            assert_eq!(answer.status, 202, "{:?}", answer.body);
            let body = answer.json();
            let id = body["id"].as_str().unwrap().to_string();
            assert_eq!(
                answer.headers["location"].to_str().unwrap(),
                format!("/v1/jobs/{id}")
            );
            ids.push(id);
        }
    }
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 500);

    // Three times: let some more jobs reach the upstream, then SIGKILL mid-run and restart.
    for round in 0..3 {
        let from = sim_calls(&up).await;
        wait::until_within(PATIENCE, &format!("round {round}: progress"), || async {
            let calls = sim_calls(&up).await;
            wait::check(calls >= from + 40, format!("{calls} upstream calls"))
        })
        .await;
        assert!(
            sim_calls(&up).await < 500,
            "round {round}: the run is over before the kill; it is not mid-run"
        );
        drop(weir); // SIGKILL: no graceful shutdown
        weir = serve_file(&path);
    }

    let addr = weir.addr;
    let listing = wait::until_within(PATIENCE, "every job to succeed", || async {
        let answer = get(addr, "/v1/jobs?status=succeeded&limit=1000").await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let listing = answer.json();
        if listing["data"].as_array().unwrap().len() == 500 {
            Ok(listing)
        } else {
            Err(listing["stats"].clone())
        }
    })
    .await;
    let succeeded: std::collections::BTreeSet<&str> = listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(succeeded.contains(id.as_str()), "job {id} was lost");
    }
    for job in listing["data"].as_array().unwrap() {
        assert_eq!(job["response_status"], 200);
        assert_eq!(job["response"]["object"], "chat.completion", "{job}");
        assert!(job["response"]["usage"]["cost"].is_number(), "{job}");
    }
    let duplicates = listing["stats"]["duplicate_executions"].as_u64().unwrap();
    let per_job: u64 = listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["duplicate_executions"].as_u64().unwrap())
        .sum();
    assert_eq!(per_job, duplicates, "the total is the sum over jobs");
    // Each duplicate execution reached the upstream at most once more; nothing else did.
    let calls = sim_calls(&up).await;
    assert!(calls >= 500, "{calls}");
    assert!(
        calls - 500 <= duplicates,
        "{} extra upstream calls but only {duplicates} duplicate executions reported",
        calls - 500
    );
    assert!(duplicates > 0, "three kills mid-run cut off no attempt");
    let metrics = get(weir.admin.unwrap(), "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(text.contains("weir_jobs_queued"), "{text}");
    assert!(text.contains("weir_jobs_oldest_age_seconds"), "{text}");
    eprintln!(
        "500 jobs, 3 kills: {duplicates} duplicate executions reported, {} extra upstream \
         calls, {:.1} s",
        calls - 500,
        started.elapsed().as_secs_f64()
    );
    drop(weir);
    let _ = std::fs::remove_dir_all(&dir);
}
