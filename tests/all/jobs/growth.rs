//! What keeps jobs from growing without bound, through the real binary: a listing of a store
//! of thousands of jobs (written in the layout before the indexes, indexed at start) reads
//! what it shows; one key at its own bound gets 429 while another key still submits; and
//! finished jobs go once their retention has passed.

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use weir::queue::{Attempt, Job, JobSpec, Status};

use super::{PATIENCE, chat, config, data_dir, error_code, status_is, until};
use crate::procs::{call, get, post, serve, sim};
use crate::wait;
use tokio::time::Instant;

/// Jobs in the store the listing test starts from.
const STORED: u64 = 3_000;

/// A finished job as an older weir stored it.
fn stored_job(seq: u64, now_ms: u64) -> Job {
    let status = if seq.is_multiple_of(7) {
        Status::Failed
    } else {
        Status::Succeeded
    };
    let created_ms = now_ms - 60_000 + seq;
    Job {
        id: format!("job_{seq:024x}"),
        seq,
        spec: JobSpec {
            route: "demo".into(),
            owner: "-".into(),
            priority: 5,
            request: chat(&format!("stored {seq}")),
            headers: Vec::new(),
            callback_url: None,
            idempotency_key: None,
        },
        status,
        created_ms,
        finished_ms: Some(created_ms + 5),
        next_attempt_ms: None,
        attempts: vec![Attempt {
            started_ms: created_ms + 1,
            finished_ms: Some(created_ms + 5),
            status: Some(if status == Status::Failed { 400 } else { 200 }),
            error: None,
            cost_pico: 1_000,
        }],
        attempts_before_retry: 0,
        duplicate_executions: 0,
        superseded_cost_pico: 0,
        response: Some(json!({
            "object": "chat.completion",
            "choices": [{"message": {"role": "assistant", "content": "x".repeat(512)}}],
        })),
        response_status: Some(200),
        callback: None,
    }
}

/// Writes `data_dir/jobs.redb` as weir did before the indexes: the records, the idempotency
/// keys and the counters, nothing else.
fn write_old_store(dir: &std::path::Path, jobs: &[Job]) {
    const JOBS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("jobs");
    const IDEMPOTENCY: redb::TableDefinition<&str, &str> =
        redb::TableDefinition::new("idempotency");
    const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    std::fs::create_dir_all(dir).unwrap();
    let db = redb::Database::create(dir.join("jobs.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(JOBS).unwrap();
        for job in jobs {
            let bytes = serde_json::to_vec(job).unwrap();
            table.insert(job.id.as_str(), bytes.as_slice()).unwrap();
        }
        txn.open_table(IDEMPOTENCY).unwrap();
        txn.open_table(META).unwrap();
    }
    txn.commit().unwrap();
}

fn ids(listing: &Value) -> Vec<String> {
    listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_store_of_thousands_written_before_the_indexes_lists_newest_first_page_by_page() {
    let up = sim(&[]);
    let dir = data_dir("listing");
    let now_ms = weir::clock::unix_ms();
    let jobs: Vec<Job> = (1..=STORED).map(|seq| stored_job(seq, now_ms)).collect();
    write_old_store(&dir, &jobs);
    let weir = serve(&config(
        &up,
        &dir,
        "workers = 1",
        "jobs = { concurrency = 1 }",
    ));
    let addr = weir.addr;
    let newest = |n: u64| format!("job_{n:024x}");

    let started = Instant::now();
    let first = get(addr, "/v1/jobs?limit=1").await;
    let took = started.elapsed();
    assert_eq!(first.status, 200, "{:?}", first.body);
    let first = first.json();
    assert_eq!(ids(&first), [newest(STORED)]);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["data"][0]["status"], "succeeded");
    assert_eq!(first["data"][0]["response"]["object"], "chat.completion");
    eprintln!("GET /v1/jobs?limit=1 on {STORED} stored jobs: {took:?} (figure, not asserted)");

    // Page on with `after`: the next ones down, no gap, no repeat.
    let page = get(addr, &format!("/v1/jobs?limit=3&after={}", newest(STORED))).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    assert_eq!(
        ids(&page.json()),
        [newest(STORED - 1), newest(STORED - 2), newest(STORED - 3)]
    );
    let failed = get(addr, "/v1/jobs?status=failed&limit=2").await.json();
    let last_failed = STORED / 7 * 7;
    assert_eq!(ids(&failed), [newest(last_failed), newest(last_failed - 7)]);
    let all = get(addr, "/v1/jobs?limit=1000").await.json();
    let expected: Vec<String> = (STORED - 999..=STORED).rev().map(newest).collect();
    assert_eq!(ids(&all), expected);
    assert_eq!(all["has_more"], true);
    let oldest = get(addr, &format!("/v1/jobs?limit=1000&after={}", newest(2))).await;
    assert_eq!(ids(&oldest.json()), [newest(1)]);
    assert_eq!(oldest.json()["has_more"], false);
    let unknown = get(addr, "/v1/jobs?after=job_nope").await;
    assert_eq!(
        (unknown.status.as_u16(), error_code(&unknown)),
        (400, "invalid_after".into())
    );

    // A job submitted now lists first, and moves to its status's listing as it ends.
    let id = post(addr, "/v1/jobs", &chat("fresh")).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    until(addr, &id, status_is("succeeded")).await;
    let newest_now = get(addr, "/v1/jobs?limit=1").await.json();
    assert_eq!(ids(&newest_now), std::slice::from_ref(&id));
    let succeeded = get(addr, "/v1/jobs?status=succeeded&limit=1").await.json();
    assert_eq!(ids(&succeeded), [id]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_key_at_its_own_bound_gets_429_while_another_key_still_submits() {
    // Slow answers: the first key's jobs stay queued or running while the test submits.
    let up = sim(&["--latency-ms", "5000"]);
    let dir = data_dir("per-key");
    let key = |name: &str, secret: &str| {
        let hash = blake3::Hash::from(weir::config::hash_key(secret)).to_hex();
        format!("[[keys]]\nname = \"{name}\"\nhash = \"blake3:{hash}\"\n")
    };
    let text = format!(
        "{}\n{}\n{}",
        config(
            &up,
            &dir,
            "workers = 1\nmax_queued = 100\nmax_queued_per_key = 2",
            "jobs = { concurrency = 1 }"
        ),
        key("alpha", "sk-alpha"),
        key("beta", "sk-beta")
    );
    let weir = serve(&text);
    let submit = |secret: &'static str| {
        let addr = weir.addr;
        async move {
            let auth = format!("Bearer {secret}");
            call(
                addr,
                Method::POST,
                "/v1/jobs",
                &[("authorization", auth.as_str())],
                Some(Bytes::from(chat("mine").to_string())),
            )
            .await
        }
    };
    assert_eq!(submit("sk-alpha").await.status, 202);
    assert_eq!(submit("sk-alpha").await.status, 202);
    let refused = submit("sk-alpha").await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(error_code(&refused), "key_queue_full");
    let error = &refused.json()["error"];
    assert_eq!(error["type"], "rate_limit_error");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("per-key limit is 2"), "{message}");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    // The other key is not held back by the first one's backlog.
    let other = submit("sk-beta").await;
    assert_eq!(other.status, 202, "{:?}", other.body);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn finished_jobs_go_once_their_retention_has_passed_and_take_their_key_with_them() {
    let up = sim(&[]);
    let dir = data_dir("retention");
    let weir = serve(&config(
        &up,
        &dir,
        "retention_ms = 3000\nretention_sweep_ms = 100",
        "jobs = { concurrency = 2 }",
    ));
    let addr = weir.addr;
    let mut body = chat("short-lived");
    body["idempotency_key"] = json!("order-7");
    let first = post(addr, "/v1/jobs", &body).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let id = first.json()["id"].as_str().unwrap().to_string();
    until(addr, &id, status_is("succeeded")).await;
    wait::until_within(PATIENCE, "the finished job to be deleted", || async {
        let answer = get(addr, &format!("/v1/jobs/{id}")).await;
        wait::check(answer.status == 404, answer.status)
    })
    .await;
    let listing = get(addr, "/v1/jobs").await.json();
    assert_eq!(ids(&listing), Vec::<String>::new());
    // Its idempotency key went with it: the same key is a new job.
    let again = post(addr, "/v1/jobs", &body).await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    assert_ne!(again.json()["id"], id.as_str());
    let metrics = get(weir.admin.unwrap(), "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("weir_jobs_deleted_total") && !l.ends_with(" 0")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn beyond_retention_max_jobs_the_oldest_finished_jobs_go() {
    let up = sim(&[]);
    let dir = data_dir("retention-count");
    let weir = serve(&config(
        &up,
        &dir,
        "workers = 1\nretention_ms = 0\nretention_max_jobs = 2\nretention_sweep_ms = 100",
        "jobs = { concurrency = 1 }",
    ));
    let addr = weir.addr;
    let mut submitted = Vec::new();
    for i in 0..4 {
        let answer = post(addr, "/v1/jobs", &chat(&format!("job {i}"))).await;
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        submitted.push(answer.json()["id"].as_str().unwrap().to_string());
    }
    // One worker runs them in order; the sweep keeps the two newest.
    let newest: Vec<String> = submitted.iter().rev().take(2).cloned().collect();
    wait::until_within(PATIENCE, "only the two newest jobs to be left", || async {
        let listing = get(addr, "/v1/jobs").await.json();
        let shown = ids(&listing);
        let done = listing["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "succeeded");
        wait::check(shown == newest && done, listing)
    })
    .await;
    for id in &submitted[..2] {
        assert_eq!(get(addr, &format!("/v1/jobs/{id}")).await.status, 404);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
