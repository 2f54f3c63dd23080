//! Jobs across a fleet (issue 17, acceptance (d)): 300 jobs submitted round-robin to three
//! nodes on one Redis, node A SIGKILLed twice while it holds jobs (restarted in between);
//! every acknowledged job succeeds, none is lost, and every duplicate execution is counted;
//! a job running longer than `reclaim_idle_ms` is not taken from its live node. Also: an
//! idempotency key names one job whichever node is asked, any node answers for any job, and
//! `POST /v1/jobs` answers 503 `state_unavailable` while Redis does not answer.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::harness::{Fleet, RedisServer, state_table};
use crate::jobs::sim_calls;
use crate::procs::{Proc, get, post, sim};
use crate::wait;

/// Bound on waiting for jobs to get somewhere (against hangs, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(120);

/// The claim lapses after this long without a renewal (the test's `reclaim_idle_ms`).
const RECLAIM_IDLE_MS: u64 = 1500;

/// Node `i`'s config: routes `demo` (over `up`) and `slow` (over `slow`) take jobs; state
/// on `redis` as `node-{i}`.
fn config(
    i: usize,
    data: &str,
    redis: &RedisServer,
    up: &Proc,
    slow: &Proc,
    extra: &str,
) -> String {
    format!(
        "[server]\ndata_dir = \"{data}\"\n\n\
         [jobs]\nworkers = 4\nmax_queued = 1000\nmax_attempts = 10\nbackoff_base_ms = 10\n\
         backoff_max_ms = 100\nreclaim_idle_ms = {RECLAIM_IDLE_MS}\n\n\
         [targets.up]\nbase_url = \"http://{}/v1\"\nmodel = \"sim-a\"\ntimeout_ms = 10000\n\n\
         [targets.slow]\nbase_url = \"http://{}/v1\"\nmodel = \"sim-a\"\ntimeout_ms = 30000\n\n\
         [[routes]]\nmodel = \"demo\"\ntargets = [\"up\"]\njobs = {{ concurrency = 4 }}\n\n\
         [[routes]]\nmodel = \"slow\"\ntargets = [\"slow\"]\njobs = {{ concurrency = 1 }}\n\n{}",
        up.addr,
        slow.addr,
        state_table(redis, &format!("node_id = \"node-{i}\"\n{extra}")),
    )
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// Jobs held (claimed, running) by `node` right now, read from Redis.
fn held_by(redis: &RedisServer, node: &str) -> u64 {
    let prefix = format!("t{}:{{jobs}}:", redis.port);
    let script = "local n = 0 \
        for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do \
          if redis.call('HGET', ARGV[1] .. id, 'holder') == ARGV[2] then n = n + 1 end \
        end return n";
    let out = redis.cli(&[
        "EVAL",
        script,
        "1",
        &format!("{prefix}running"),
        &format!("{prefix}job:"),
        node,
    ]);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("redis-cli said {out:?}"))
}

async fn job(addr: SocketAddr, id: &str) -> Value {
    let answer = get(addr, &format!("/v1/jobs/{id}")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.json()
}

/// Job `id` as `addr` answers for it once it succeeded; a 503 (the node's Redis breaker still
/// open after a stall) is looked at again.
async fn until_succeeded(addr: SocketAddr, id: &str) -> Value {
    wait::until_within(PATIENCE, "the job to succeed", || async {
        let answer = get(addr, &format!("/v1/jobs/{id}")).await;
        let body = answer.json();
        match answer.status == 200 && body["status"] == "succeeded" {
            true => Ok(body),
            false => Err(body),
        }
    })
    .await
}

/// Every job of `ids` succeeded in one attempt and ran once.
async fn each_ran_once(addr: SocketAddr, ids: &[String]) {
    for id in ids {
        let done = until_succeeded(addr, id).await;
        assert_eq!(done["duplicate_executions"], 0, "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
    }
}

#[tokio::test]
async fn three_hundred_jobs_survive_two_kill_9s_of_a_node_and_a_long_job_is_not_stolen() {
    let started = Instant::now();
    let redis = RedisServer::start();
    let up = sim(&["--latency-ms", "400"]);
    let slow = sim(&["--latency-ms", &(RECLAIM_IDLE_MS * 3).to_string()]);
    let mut fleet = Fleet::start(3, |i, data| config(i, data, &redis, &up, &slow, ""));

    // An idempotency key names one job whichever node is asked.
    let mut keyed = chat("demo", "keyed");
    keyed["idempotency_key"] = json!("k-1");
    let first = post(fleet.addr(1), "/v1/jobs", &keyed).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let again = post(fleet.addr(2), "/v1/jobs", &keyed).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(first.json()["id"], again.json()["id"]);
    let keyed_id = first.json()["id"].as_str().unwrap().to_string();

    // 300 jobs, round-robin over the three nodes, 30 at a time.
    let mut ids = Vec::with_capacity(300);
    for chunk in 0..10 {
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let n = chunk * 30 + i;
                let addr = fleet.addr(n % 3);
                tokio::spawn(async move {
                    post(addr, "/v1/jobs", &chat("demo", &format!("job {n}"))).await
                })
            })
            .collect();
        for task in tasks {
            let answer = task.await.unwrap();
            assert_eq!(answer.status, 202, "{:?}", answer.body);
            ids.push(answer.json()["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 300);

    // Twice: once node A holds jobs mid-run, SIGKILL it; its jobs are reclaimed by B or C.
    for round in 0..2 {
        let from = sim_calls(&up).await;
        wait::until_within(
            PATIENCE,
            &format!("round {round}: node A holds jobs mid-run"),
            || async {
                let calls = sim_calls(&up).await;
                let held = held_by(&redis, "node-0");
                wait::check(
                    calls >= from + 20 && held > 0,
                    format!("{calls} upstream calls, A holds {held}"),
                )
            },
        )
        .await;
        let held = held_by(&redis, "node-0");
        assert!(
            sim_calls(&up).await < 300,
            "round {round}: the run is over before the kill"
        );
        fleet.nodes[0].child.kill().unwrap(); // SIGKILL
        fleet.nodes[0].child.wait().unwrap();
        let killed = Instant::now();
        wait::until_within(
            PATIENCE,
            &format!("round {round}: A's {held} jobs reclaimed"),
            || async {
                let left = held_by(&redis, "node-0");
                wait::check(left == 0, format!("A still holds {left}"))
            },
        )
        .await;
        eprintln!(
            "round {round}: node A killed holding {held} jobs; reclaimed after {:.1} s",
            killed.elapsed().as_secs_f64()
        );
        if round == 0 {
            fleet.restart(0);
        }
    }

    // Every acknowledged job succeeds; none is lost. Any node answers for any job.
    let addr = fleet.addr(1);
    let listing = wait::until_within(PATIENCE, "every job to succeed", || async {
        let answer = get(addr, "/v1/jobs?status=succeeded&limit=1000").await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let listing = answer.json();
        let done = listing["data"].as_array().unwrap().len();
        if done == 301 {
            Ok(listing)
        } else {
            Err(format!("{done} succeeded; {}", listing["stats"]))
        }
    })
    .await;
    let jobs = listing["data"].as_array().unwrap();
    let succeeded: BTreeSet<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
    for id in ids.iter().chain([&keyed_id]) {
        assert!(succeeded.contains(id.as_str()), "job {id} was lost");
    }
    for job in jobs {
        assert_eq!(job["response_status"], 200, "{job}");
        assert_eq!(job["response"]["object"], "chat.completion", "{job}");
    }
    assert_eq!(job(fleet.addr(2), &ids[0]).await["status"], "succeeded");

    // Duplicates: counted on the jobs, and the fleet total is their sum.
    let per_job: u64 = jobs
        .iter()
        .map(|j| j["duplicate_executions"].as_u64().unwrap())
        .sum();
    assert!(
        per_job > 0,
        "two kills of a node holding jobs cut off no attempt"
    );
    let duplicates = wait::until_within(PATIENCE, "the fleet's duplicate count", || async {
        let stats = get(addr, "/v1/jobs?limit=1").await.json()["stats"].clone();
        let total = stats["duplicate_executions"].as_u64().unwrap_or(0);
        if total == per_job {
            Ok(total)
        } else {
            Err(stats)
        }
    })
    .await;
    // Each duplicate execution reached the upstream at most once more; nothing else did.
    let calls = sim_calls(&up).await;
    assert!(calls >= 301, "{calls}");
    assert!(
        calls - 301 <= duplicates,
        "{} extra upstream calls but only {duplicates} duplicate executions reported",
        calls - 301
    );
    // Nothing is left claimed or counted as queued.
    assert_eq!(
        redis.cli(&["ZCARD", &format!("t{}:{{jobs}}:running", redis.port)]),
        "0"
    );
    assert_eq!(
        redis.cli(&["GET", &format!("t{}:{{jobs}}:depth", redis.port)]),
        "0"
    );
    eprintln!(
        "301 jobs, node A killed twice: {duplicates} duplicate executions reported, {} extra \
         upstream calls, {:.1} s",
        calls - 301,
        started.elapsed().as_secs_f64()
    );

    // A job that runs three times `reclaim_idle_ms` on a live node is not taken from it.
    let answer = post(fleet.addr(2), "/v1/jobs", &chat("slow", "long")).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let id = answer.json()["id"].as_str().unwrap().to_string();
    let long = wait::until_within(PATIENCE, "the long job", || async {
        let long = job(fleet.addr(1), &id).await;
        if long["status"] == "succeeded" {
            Ok(long)
        } else {
            Err(long)
        }
    })
    .await;
    assert_eq!(long["duplicate_executions"], 0, "{long}");
    assert_eq!(long["attempts"], 1, "{long}");
    assert_eq!(
        sim_calls(&slow).await,
        1,
        "the long job reached its upstream more than once"
    );
}

/// Second probe, P5: Redis stopped for longer than `reclaim_idle_ms` while jobs ran; their
/// holders could not renew, so the first take after it reclaimed them all and the jobs ran
/// again (10 of 12 in the probe), although no node had died. Time nobody reached Redis does
/// not count against a claim now: every job runs once.
#[tokio::test]
async fn a_redis_stall_longer_than_the_claim_does_not_rerun_the_jobs_running_through_it() {
    let redis = RedisServer::start();
    // Each call ends during the stall below.
    let up = sim(&["--latency-ms", "2000"]);
    let fleet = Fleet::start(2, |i, data| config(i, data, &redis, &up, &up, ""));
    let mut ids = Vec::new();
    for n in 0..4 {
        let answer = post(
            fleet.addr(n % 2),
            "/v1/jobs",
            &chat("demo", &format!("job {n}")),
        )
        .await;
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        ids.push(answer.json()["id"].as_str().unwrap().to_string());
    }
    // All four running (each node has free workers, which keep looking for jobs).
    wait::until_within(PATIENCE, "four upstream calls", || async {
        let calls = sim_calls(&up).await;
        wait::check(calls == 4, format!("{calls} calls"))
    })
    .await;
    // Twice the claim's life without Redis.
    redis.signal("-STOP");
    tokio::time::sleep(Duration::from_millis(2 * RECLAIM_IDLE_MS + 1000)).await;
    redis.signal("-CONT");
    each_ran_once(fleet.addr(0), &ids).await;
    assert_eq!(
        sim_calls(&up).await,
        4,
        "each job reached its upstream once"
    );
}

/// Second probe, P7: a take whose answer was lost (Redis stopped, the call timed out) is
/// still run by Redis when it comes back, and claims a job for a token no node holds; the job
/// waited out its claim and ran again, counted as a duplicate execution though it had not
/// run. The node now puts such a job back. Node B's one worker is busy, so only node A takes
/// the jobs submitted to B, on its next look: most looks fall in the stall below.
#[tokio::test]
async fn a_take_whose_answer_was_lost_does_not_make_a_duplicate_execution() {
    let redis = RedisServer::start();
    let up = sim(&["--latency-ms", "100"]);
    let hold = sim(&["--latency-ms", "120000"]);
    let state = state_table(
        &redis,
        "background_timeout_ms = 300
",
    );
    let fleet = Fleet::start(2, |i, data| {
        // A: demo jobs, four workers. B: one worker, held by a job on `hold`.
        let (workers, hold_route) = match i {
            0 => (4, String::new()),
            _ => (
                1,
                format!(
                    "[targets.hold]\nbase_url = \"http://{}/v1\"\ntimeout_ms = 150000\n\n\
                     [[routes]]\nmodel = \"hold\"\ntargets = [\"hold\"]\n\
                     jobs = {{ concurrency = 1 }}\n\n",
                    hold.addr
                ),
            ),
        };
        format!(
            "[server]\ndata_dir = \"{data}\"\n\n\
             [jobs]\nworkers = {workers}\nreclaim_idle_ms = {RECLAIM_IDLE_MS}\n\n\
             [targets.up]\nbase_url = \"http://{}/v1\"\n\n\
             [[routes]]\nmodel = \"demo\"\ntargets = [\"up\"]\njobs = {{ concurrency = 4 }}\n\n\
             {hold_route}{state}",
            up.addr
        )
    });
    let held = post(fleet.addr(1), "/v1/jobs", &chat("hold", "hold B's worker")).await;
    assert_eq!(held.status, 202, "{:?}", held.body);
    wait::until_within(PATIENCE, "B's worker to be busy", || async {
        let calls = sim_calls(&hold).await;
        wait::check(calls == 1, format!("{calls} calls"))
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        // After a stall, B's breaker around Redis refuses submissions (never sent) a while.
        let answer = wait::until_within(PATIENCE, "a submission accepted", || async {
            let answer = post(
                fleet.addr(1),
                "/v1/jobs",
                &chat("demo", &format!("job {n}")),
            )
            .await;
            match answer.status == 202 {
                true => Ok(answer),
                false => Err(format!("{} {:?}", answer.status, answer.body)),
            }
        })
        .await;
        ids.push(answer.json()["id"].as_str().unwrap().to_string());
        // A's takes time out in the stall; Redis runs them when it is back.
        redis.signal("-STOP");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        redis.signal("-CONT");
    }
    each_ran_once(fleet.addr(0), &ids).await;
    assert_eq!(
        sim_calls(&up).await,
        3,
        "each job reached its upstream once"
    );
}

#[tokio::test]
async fn a_submission_or_a_read_while_redis_does_not_answer_is_a_503_state_unavailable() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    let fleet = Fleet::start(2, |i, data| {
        config(i, data, &redis, &up, &up, "background_timeout_ms = 300\n")
    });
    let ok = post(fleet.addr(0), "/v1/jobs", &chat("demo", "before")).await;
    assert_eq!(ok.status, 202, "{:?}", ok.body);
    let id = ok.json()["id"].as_str().unwrap().to_string();

    redis.signal("-STOP");
    let refused = post(fleet.addr(1), "/v1/jobs", &chat("demo", "during")).await;
    // A read while Redis does not answer: 503 too, not a 500.
    let read = get(fleet.addr(1), &format!("/v1/jobs/{id}")).await;
    redis.signal("-CONT");
    assert_eq!(read.status, 503, "{:?}", read.body);
    assert_eq!(read.json()["error"]["code"], "state_unavailable");
    assert!(
        read.headers.contains_key("retry-after"),
        "{:?}",
        read.headers
    );
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(
        refused.json()["error"]["code"],
        "state_unavailable",
        "{:?}",
        refused.body
    );
    assert!(
        refused.headers.contains_key("retry-after"),
        "{:?}",
        refused.headers
    );
    // Sent to a Redis that did not answer: it may yet store the job, and the client is told
    // so (not "not accepted", which invites a second submission that would also run).
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("may have been accepted"), "{message}");

    // Back: the job submitted before finishes, answered by the other node.
    let done = until_succeeded(fleet.addr(1), &id).await;
    assert_eq!(done["response_status"], 200, "{done}");
    let after = wait::until_within(PATIENCE, "submissions accepted again", || async {
        let answer = post(fleet.addr(1), "/v1/jobs", &chat("demo", "after")).await;
        wait::check(
            answer.status == 202,
            format!("{} {:?}", answer.status, answer.body),
        )
    });
    after.await;
}

#[tokio::test]
async fn a_finish_run_twice_is_applied_once_and_a_superseded_run_s_cost_counts_once() {
    use weir::config::{Backend, StateSettings};
    use weir::state::jobs::{Ending, Finished, Jobs, NewJob};

    let redis = RedisServer::start();
    let settings = StateSettings {
        backend: Backend::Redis,
        url: Some(redis.url()),
        key_prefix: format!("t{}", redis.port),
        ..StateSettings::default()
    };
    let shared = weir::state::Shared::open(&settings).await.unwrap().unwrap();
    let jobs = Jobs::new(&shared.redis);
    for id in ["job-a", "job-b"] {
        let job = NewJob {
            id,
            owner: "-",
            idem: None,
            route: "demo",
            priority: 5,
            rec: "{}",
        };
        jobs.enqueue(&job, 100, 0).await.unwrap();
    }
    let end = |cost_pico| Ending {
        rec: r#"{"ended":true}"#,
        status: "succeeded",
        delay_ms: 0,
        retention_ms: 60_000,
        cost_pico,
    };
    // A finish whose answer was lost is sent again: the second finds it done (it used to
    // read as a takeover, and the node then never sent the job's callback).
    let (_, a) = jobs
        .take(&["demo"], "tok-1", 60_000, 5, 60_000)
        .await
        .unwrap();
    let a = a.unwrap();
    let ended = Finished::Ended(0);
    assert_eq!(jobs.finish(&a.id, "tok-1", &end(7)).await.unwrap(), ended);
    assert_eq!(jobs.finish(&a.id, "tok-1", &end(7)).await.unwrap(), ended);
    let record = jobs.get(&a.id).await.unwrap().unwrap();
    assert_eq!((record.status.as_str(), record.late), ("succeeded", 0));

    // A claim that lapsed is taken over; the first run's finish is refused, its cost kept
    // once however often it is sent, and the run that stands sees it.
    let (_, b) = jobs.take(&["demo"], "tok-2", 200, 5, 60_000).await.unwrap();
    let b = b.unwrap();
    // Takes keep coming, 20 ms apart (a longer silence would move the claim on: a stall).
    let started = Instant::now();
    let retaken = loop {
        assert!(
            started.elapsed() < PATIENCE,
            "the lapsed claim was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let (_, Some(taken)) = jobs.take(&["demo"], "tok-3", 200, 5, 60_000).await.unwrap() {
            break taken;
        }
    };
    assert_eq!(retaken.id, b.id);
    let taken_over = Finished::TakenOver;
    assert_eq!(
        jobs.finish(&b.id, "tok-2", &end(5)).await.unwrap(),
        taken_over
    );
    assert_eq!(
        jobs.finish(&b.id, "tok-2", &end(5)).await.unwrap(),
        taken_over
    );
    assert_eq!(jobs.get(&b.id).await.unwrap().unwrap().late, 5);
    assert_eq!(
        jobs.finish(&b.id, "tok-3", &end(9)).await.unwrap(),
        Finished::Ended(5)
    );

    // A job Redis lost (evicted, deleted) is said to be gone, not taken over.
    let gone = Finished::Gone;
    assert_eq!(
        jobs.finish("job-never", "tok-4", &end(1)).await.unwrap(),
        gone
    );
}

/// Fourth probe, R6: a job-queue key of the wrong type failed the submission after the job's
/// record was written (a script is not rolled back): each attempt left a record in no index,
/// never run and never expired, and the 503 said Redis "did not answer in time".
#[tokio::test]
async fn a_submission_a_queue_key_of_the_wrong_type_refuses_leaves_no_job_behind() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    let fleet = Fleet::start(1, |i, data| config(i, data, &redis, &up, &up, ""));
    let ready = format!("t{}:{{jobs}}:ready:demo", redis.port);
    redis.cli(&["SET", &ready, "junk"]);
    let refused = post(fleet.addr(0), "/v1/jobs", &chat("demo", "refused")).await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("failed") && !message.contains("in time"),
        "{message}"
    );
    let pattern = format!("t{}:{{jobs}}:job:*", redis.port);
    assert_eq!(
        redis.cli(&["KEYS", &pattern]).trim(),
        "",
        "no record left behind"
    );
    redis.cli(&["DEL", &ready]);
    let accepted = post(fleet.addr(0), "/v1/jobs", &chat("demo", "accepted")).await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    until_succeeded(fleet.addr(0), accepted.json()["id"].as_str().unwrap()).await;
}
