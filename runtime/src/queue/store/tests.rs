//! The store's indexes: a key's jobs listed newest first, by status and page by page, kept
//! right as jobs change; a store written before the indexes existed (or changed since by a
//! writer that did not keep them) indexed when opened; finished jobs retired.

use serde_json::json;

use super::*;
use crate::queue::job::{Callback, CallbackState, JobSpec};

fn job(id: &str, owner: &str, seq: u64, status: Status, finished_ms: Option<u64>) -> Job {
    Job {
        id: id.into(),
        seq,
        spec: JobSpec {
            route: "demo".into(),
            owner: owner.into(),
            priority: 5,
            request: json!({"model": "demo", "messages": []}),
            headers: Vec::new(),
            callback_url: None,
            idempotency_key: None,
        },
        status,
        created_ms: seq,
        finished_ms,
        next_attempt_ms: None,
        attempts: Vec::new(),
        attempts_before_retry: 0,
        duplicate_executions: 0,
        superseded_cost_pico: 0,
        response: None,
        response_status: None,
        callback: None,
    }
}

fn ids(jobs: &[Job]) -> Vec<&str> {
    jobs.iter().map(|j| j.id.as_str()).collect()
}

async fn insert(store: &Store, jobs: Vec<Job>) {
    store
        .write(jobs.into_iter().map(Write::Insert).collect())
        .await
        .unwrap();
}

/// `owner`'s listing: ids and whether more follow.
fn listed(
    store: &Store,
    owner: &str,
    status: Option<Status>,
    before: Option<u64>,
    limit: usize,
) -> (Vec<String>, bool) {
    let (jobs, more) = store.list(owner, status, before, limit).unwrap();
    (ids(&jobs).into_iter().map(str::to_string).collect(), more)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn a_keys_jobs_list_newest_first_by_status_and_page_and_follow_status_changes() {
    let store = Store::open(None).unwrap();
    insert(
        &store,
        vec![
            job("a1", "alpha", 1, Status::Succeeded, Some(10)),
            job("a2", "alpha", 2, Status::Queued, None),
            job("a3", "alpha", 3, Status::Failed, Some(30)),
            job("b4", "beta", 4, Status::Succeeded, Some(40)),
            job("a5", "alpha", 5, Status::Succeeded, Some(50)),
        ],
    )
    .await;
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        listed(&store, "alpha", None, None, 2),
        (strs(&["a5", "a3"]), true)
    );
    // The next page starts below the last one's seq.
    assert_eq!(
        listed(&store, "alpha", None, Some(3), 2),
        (strs(&["a2", "a1"]), false)
    );
    assert_eq!(
        listed(&store, "alpha", Some(Status::Succeeded), None, 10),
        (strs(&["a5", "a1"]), false)
    );
    assert_eq!(
        listed(&store, "alpha", Some(Status::Succeeded), None, 1),
        (strs(&["a5"]), true)
    );
    assert_eq!(
        listed(&store, "beta", None, None, 10),
        (strs(&["b4"]), false)
    );
    // An owner whose name extends another's sees only its own.
    assert_eq!(listed(&store, "alph", None, None, 10), (vec![], false));
    assert_eq!(listed(&store, "gamma", None, None, 10), (vec![], false));

    // A job that changes status moves between the status listings, and keeps its place.
    store
        .put(job("a2", "alpha", 2, Status::Succeeded, Some(60)))
        .await
        .unwrap();
    assert_eq!(
        listed(&store, "alpha", Some(Status::Queued), None, 10),
        (vec![], false)
    );
    assert_eq!(
        listed(&store, "alpha", Some(Status::Succeeded), None, 10),
        (strs(&["a5", "a2", "a1"]), false)
    );
    assert_eq!(
        listed(&store, "alpha", None, None, 10),
        (strs(&["a5", "a3", "a2", "a1"]), false)
    );
}

#[tokio::test]
async fn a_store_written_without_indexes_is_indexed_when_opened() {
    let dir = temp_dir("migrate");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jobs.redb");
    {
        // The layout before the indexes: the records, the idempotency keys, the counters.
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut jobs = txn.open_table(JOBS).unwrap();
            for j in [
                job("old1", "alpha", 1, Status::Succeeded, Some(10)),
                job("old2", "alpha", 2, Status::Dead, Some(20)),
                job("old3", "beta", 3, Status::Queued, None),
            ] {
                let bytes = serde_json::to_vec(&j).unwrap();
                jobs.insert(j.id.as_str(), bytes.as_slice()).unwrap();
            }
            txn.open_table(IDEMPOTENCY).unwrap();
            txn.open_table(META).unwrap();
        }
        txn.commit().unwrap();
    }
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    {
        let store = Store::open(Some(&dir)).unwrap();
        assert_eq!(
            listed(&store, "alpha", None, None, 10),
            (strs(&["old2", "old1"]), false)
        );
        assert_eq!(
            listed(&store, "alpha", Some(Status::Dead), None, 10),
            (strs(&["old2"]), false)
        );
        assert_eq!(
            listed(&store, "beta", None, None, 1),
            (strs(&["old3"]), false)
        );
        assert_eq!(store.retirable(None, Some(0), 10).unwrap().len(), 2);
        store
            .put(job("old3", "beta", 3, Status::Succeeded, Some(30)))
            .await
            .unwrap();
    }
    {
        // A writer that does not know the indexes (an older weir) adds a record.
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut jobs = txn.open_table(JOBS).unwrap();
            let j = job("old4", "alpha", 4, Status::Failed, Some(40));
            let bytes = serde_json::to_vec(&j).unwrap();
            jobs.insert(j.id.as_str(), bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(Some(&dir)).unwrap();
    assert_eq!(
        listed(&store, "alpha", None, None, 10),
        (strs(&["old4", "old2", "old1"]), false)
    );
    assert_eq!(
        listed(&store, "beta", Some(Status::Succeeded), None, 10),
        (strs(&["old3"]), false)
    );
    assert_eq!(store.retirable(None, Some(0), 10).unwrap().len(), 4);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn finished_jobs_retire_by_age_and_by_count_never_with_a_callback_pending() {
    let store = Store::open(None).unwrap();
    let mut pending = job("a3", "alpha", 3, Status::Succeeded, Some(150));
    pending.spec.callback_url = Some("http://hooks.example.com/h".into());
    pending.callback = Some(Callback {
        state: CallbackState::Pending,
        attempts: 0,
        last_error: None,
        delivered_ms: None,
        next_ms: Some(150),
    });
    let mut keyed = job("a5", "alpha", 5, Status::Cancelled, Some(300));
    keyed.spec.idempotency_key = Some("order-1".into());
    insert(
        &store,
        vec![
            job("a1", "alpha", 1, Status::Succeeded, Some(100)),
            job("a2", "alpha", 2, Status::Failed, Some(200)),
            pending,
            job("a4", "alpha", 4, Status::Queued, None),
            keyed,
        ],
    )
    .await;
    let due = |cutoff, keep, max| store.retirable(cutoff, keep, max).unwrap();
    let row = |id: &str, seq, at| (id.to_string(), seq, at);
    // By age: finished at or before the cutoff; the job whose callback is pending and the
    // queued one never.
    assert_eq!(
        due(Some(250), None, 10),
        [row("a1", 1, 100), row("a2", 2, 200)]
    );
    assert_eq!(due(Some(99), None, 10), []);
    // By count: the oldest beyond the newest `keep`.
    assert_eq!(
        due(None, Some(1), 10),
        [row("a1", 1, 100), row("a2", 2, 200)]
    );
    assert_eq!(due(None, Some(3), 10), []);
    assert_eq!(due(None, Some(0), 1), [row("a1", 1, 100)]);
    assert_eq!(
        due(Some(100), Some(2), 10),
        [row("a1", 1, 100)],
        "either bound"
    );

    // Retiring deletes the record, its index rows and its idempotency key.
    assert!(store.find_idempotent("alpha", "order-1").unwrap().is_some());
    let done = store
        .write(vec![Write::Retire {
            id: "a5".into(),
            seq: 5,
            at: 300,
        }])
        .await
        .unwrap();
    assert_eq!(done, [Written::Done]);
    assert!(store.get("a5").unwrap().is_none());
    assert!(store.find_idempotent("alpha", "order-1").unwrap().is_none());
    let (jobs, _) = store.list("alpha", None, None, 10).unwrap();
    assert_eq!(ids(&jobs), ["a4", "a3", "a2", "a1"]);
    let (jobs, _) = store
        .list("alpha", Some(Status::Cancelled), None, 10)
        .unwrap();
    assert!(jobs.is_empty());

    // A job changed since it was found due is kept (here: retried, and finished again).
    store
        .put(job("a2", "alpha", 2, Status::Succeeded, Some(400)))
        .await
        .unwrap();
    let kept = store
        .write(vec![Write::Retire {
            id: "a2".into(),
            seq: 2,
            at: 200,
        }])
        .await
        .unwrap();
    assert_eq!(kept, [Written::Kept]);
    assert!(store.get("a2").unwrap().is_some());
    assert_eq!(
        due(None, Some(0), 10),
        [row("a1", 1, 100), row("a2", 2, 400)]
    );
    // The pending callback ends: the job becomes due from when it finished.
    let mut delivered = store.get("a3").unwrap().unwrap();
    if let Some(callback) = delivered.callback.as_mut() {
        callback.state = CallbackState::Delivered;
    }
    store.put(delivered).await.unwrap();
    assert_eq!(
        due(Some(160), None, 10),
        [row("a1", 1, 100), row("a3", 3, 150)]
    );
}
