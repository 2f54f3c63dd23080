//! The durable side of the queue: every job as JSON in an embedded redb database
//! (`data_dir/jobs.redb`, or in memory without a data directory), its indexes (`index`), the
//! idempotency keys, and the count of duplicate executions.
//!
//! Every write is committed with redb's default (immediate) durability before the caller
//! hears back, so a job the API acknowledged survives a `kill -9`. Writes from many callers
//! go to one writer thread that commits whatever has gathered in one transaction (group
//! commit, as the spend ledger does): a burst of submissions shares fsyncs instead of queueing
//! for one each. The in-memory database is written inline, so tests on paused time never wait
//! on another thread.
//!
//! A job is changed by read-modify-write under its stripe lock ([`Store::lock`]), so two
//! changes to one job (a cancel and a worker, a callback and a retry) never lose each other.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::index::{self, Indexes};
use super::job::{Job, Status};
use crate::sync::lock;

/// Job id → the job as JSON.
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// `{owner}\n{idempotency key}` → job id.
const IDEMPOTENCY: TableDefinition<&str, &str> = TableDefinition::new("idempotency");
/// Counters that outlive a run (`duplicate_executions`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Batches the writer thread folds into one transaction at most.
const MAX_BATCHES_PER_COMMIT: usize = 512;

/// Stripes of the per-job locks: jobs that share one serialize their changes.
const LOCK_STRIPES: usize = 64;

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("job store {path}: {message}")]
pub struct StoreError {
    /// The database file (`memory` when in memory).
    pub path: String,
    /// What failed.
    pub message: String,
    /// The fleet's Redis could not be reached (timeout, breaker open, connection lost): the
    /// client gets 503 `state_unavailable` with `Retry-After`, not a 500.
    pub unavailable: bool,
}

/// One change to make durable.
#[derive(Debug)]
pub enum Write {
    /// A new job; with an idempotency key already taken, nothing is written.
    Insert(Job),
    /// A job's new state.
    Put(Job),
    /// Adds to the count of duplicate executions.
    AddDuplicates(u64),
    /// Deletes a finished job the retention index lists as retirable at `at` (with its
    /// index rows and idempotency key), if its record still says so; the index row goes
    /// either way.
    Retire {
        /// The job.
        id: String,
        /// Its submission order.
        seq: u64,
        /// When it became retirable (Unix ms), as the index row says.
        at: u64,
    },
}

/// What a [`Write`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// The write is durable.
    Done,
    /// An [`Write::Insert`] whose idempotency key names this existing job: nothing written.
    Existing(String),
    /// A [`Write::Retire`] of a job that changed since it was listed: it is kept.
    Kept,
}

/// What the store holds at start.
pub struct Loaded {
    /// Jobs still to run, and ended jobs whose callback is still to deliver.
    pub live: Vec<Job>,
    /// One more than the largest `seq` stored.
    pub next_seq: u64,
    /// Duplicate executions counted so far, over every run.
    pub duplicates: u64,
}

/// A batch of writes and where to answer.
struct Batch {
    writes: Vec<Write>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Written>, String>>,
}

/// How writes reach the database.
enum Writer {
    /// The in-memory database: written on the caller's thread.
    Inline,
    /// The file: one thread, group commit. `None` once closing.
    Thread(std::sync::Mutex<Option<std::sync::mpsc::Sender<Batch>>>),
}

/// The job store (cheap to clone).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    path: Arc<str>,
    writer: Writer,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Writer::Thread(sender) = &self.writer {
            // Closing the channel ends the thread after its last commit.
            lock(sender).take();
        }
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Opens (or creates) `data_dir/jobs.redb`, or an in-memory store without a directory.
    pub fn open(data_dir: Option<&Path>) -> Result<Store, StoreError> {
        let (db, path, file) = match data_dir {
            Some(dir) => {
                let path = dir.join("jobs.redb");
                let err = |message: String| StoreError {
                    path: path.display().to_string(),
                    message,
                    unavailable: false,
                };
                // Private to weir's user: 0700 / 0600, looser existing modes tightened.
                crate::fsutil::private_dir(dir)
                    .map_err(|e| err(format!("cannot create the data directory: {e}")))?;
                crate::fsutil::private_file(&path).map_err(|e| err(e.to_string()))?;
                let db = Database::create(&path).map_err(|e| err(e.to_string()))?;
                (db, path.display().to_string(), true)
            }
            None => {
                let db = Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .map_err(|e| StoreError {
                        path: "memory".into(),
                        message: e.to_string(),
                        unavailable: false,
                    })?;
                (db, "memory".to_string(), false)
            }
        };
        let err = |message: String| StoreError {
            path: path.clone(),
            message,
            unavailable: false,
        };
        // Create the tables so reads never meet a missing one, and index a store that has no
        // (or incomplete) indexes.
        let txn = db.begin_write().map_err(|e| err(e.to_string()))?;
        {
            let jobs = txn.open_table(JOBS).map_err(|e| err(e.to_string()))?;
            txn.open_table(IDEMPOTENCY)
                .map_err(|e| err(e.to_string()))?;
            let mut meta = txn.open_table(META).map_err(|e| err(e.to_string()))?;
            let mut indexes = Indexes::open(&txn).map_err(|e| err(e.to_string()))?;
            let version = meta
                .get(index::VERSION_KEY)
                .map_err(|e| err(e.to_string()))?
                .map(|v| v.value());
            let records = jobs.len().map_err(|e| err(e.to_string()))?;
            let complete = indexes.complete(records).map_err(|e| err(e.to_string()))?;
            if version != Some(index::VERSION) || !complete {
                let indexed = indexes.build(&jobs).map_err(|e| err(e.to_string()))?;
                meta.insert(index::VERSION_KEY, index::VERSION)
                    .map_err(|e| err(e.to_string()))?;
                if records > 0 {
                    tracing::info!(jobs = indexed, path = %path, "job store indexed");
                }
            }
        }
        txn.commit().map_err(|e| err(e.to_string()))?;
        let db = Arc::new(db);
        let (writer, thread) = if file {
            let (tx, rx) = std::sync::mpsc::channel::<Batch>();
            let db = db.clone();
            let thread = std::thread::Builder::new()
                .name("weir-jobs-store".into())
                .spawn(move || write_loop(&db, &rx))
                .map_err(|e| err(format!("cannot start the writer thread: {e}")))?;
            (
                Writer::Thread(std::sync::Mutex::new(Some(tx))),
                Some(thread),
            )
        } else {
            (Writer::Inline, None)
        };
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path: path.into(),
                writer,
                thread: std::sync::Mutex::new(thread),
                locks: (0..LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }),
        })
    }

    fn error(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.inner.path.to_string(),
            message: message.to_string(),
            unavailable: false,
        }
    }

    /// Makes `writes` durable, in one transaction with whatever else is waiting.
    pub async fn write(&self, writes: Vec<Write>) -> Result<Vec<Written>, StoreError> {
        match &self.inner.writer {
            Writer::Inline => apply(&self.inner.db, vec![writes])
                .map(|mut results| results.pop().unwrap_or_default())
                .map_err(|e| self.error(e)),
            Writer::Thread(sender) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let sent = lock(sender)
                    .as_ref()
                    .map(|tx| tx.send(Batch { writes, reply }));
                if !matches!(sent, Some(Ok(()))) {
                    return Err(self.error("the writer thread has stopped"));
                }
                answer
                    .await
                    .map_err(|_| self.error("the writer thread has stopped"))?
                    .map_err(|e| self.error(e))
            }
        }
    }

    /// Writes `job`'s new state.
    pub async fn put(&self, job: Job) -> Result<(), StoreError> {
        self.write(vec![Write::Put(job)]).await.map(drop)
    }

    /// The lock that serializes changes to job `id` (read, change, [`Store::put`]).
    pub async fn lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = blake3::hash(id.as_bytes()).as_bytes()[0] as usize % LOCK_STRIPES;
        self.inner.locks[stripe].lock().await
    }

    /// The job `id`. A point read of a small record: done on the caller's thread.
    pub fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(JOBS).map_err(|e| self.error(e))?;
        let Some(bytes) = table.get(id).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(|e| self.error(format!("job {id} is unreadable: {e}")))
    }

    /// The job `owner`'s idempotency `key` names, if any.
    pub fn find_idempotent(&self, owner: &str, key: &str) -> Result<Option<Job>, StoreError> {
        let id = {
            let txn = self.inner.db.begin_read().map_err(|e| self.error(e))?;
            let table = txn.open_table(IDEMPOTENCY).map_err(|e| self.error(e))?;
            table
                .get(format!("{owner}\n{key}").as_str())
                .map_err(|e| self.error(e))?
                .map(|v| v.value().to_string())
        };
        match id {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    /// At most `limit` of `owner`'s jobs with `status` (any when `None`) submitted before
    /// `seq` `before` (any when `None`), newest first, and whether more follow. Reads
    /// `limit + 1` index rows and `limit` records from one snapshot. A record that does not
    /// parse is logged and skipped.
    pub fn list(
        &self,
        owner: &str,
        status: Option<Status>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Job>, bool), StoreError> {
        let txn = self.inner.db.begin_read().map_err(|e| self.error(e))?;
        let mut ids = index::newest(&txn, owner, status, before, limit.saturating_add(1))
            .map_err(|e| self.error(e))?;
        let has_more = ids.len() > limit;
        ids.truncate(limit);
        let table = txn.open_table(JOBS).map_err(|e| self.error(e))?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(bytes) = table.get(id.as_str()).map_err(|e| self.error(e))? else {
                continue;
            };
            match serde_json::from_slice::<Job>(bytes.value()) {
                Ok(job) => jobs.push(job),
                Err(err) => {
                    tracing::error!(job = id, error = %err, "unreadable job record skipped");
                }
            }
        }
        Ok((jobs, has_more))
    }

    /// Up to `max` finished jobs retention deletes now (see [`index::due`]).
    pub fn retirable(
        &self,
        cutoff_ms: Option<u64>,
        keep: Option<u64>,
        max: usize,
    ) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(|e| self.error(e))?;
        index::due(&txn, cutoff_ms, keep, max).map_err(|e| self.error(e))
    }

    /// Every job stored. A record that does not parse is logged and skipped.
    fn scan(&self) -> Result<Vec<Job>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(JOBS).map_err(|e| self.error(e))?;
        let mut jobs = Vec::new();
        for item in table.iter().map_err(|e| self.error(e))? {
            let (key, value) = item.map_err(|e| self.error(e))?;
            match serde_json::from_slice::<Job>(value.value()) {
                Ok(job) => jobs.push(job),
                Err(err) => {
                    tracing::error!(job = key.value(), error = %err, "unreadable job record skipped");
                }
            }
        }
        Ok(jobs)
    }

    /// What is left to do, for the start of a run.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let jobs = self.scan()?;
        let next_seq = jobs.iter().map(|j| j.seq + 1).max().unwrap_or(1);
        let duplicates = {
            let txn = self.inner.db.begin_read().map_err(|e| self.error(e))?;
            let table = txn.open_table(META).map_err(|e| self.error(e))?;
            table
                .get("duplicate_executions")
                .map_err(|e| self.error(e))?
                .map_or(0, |v| v.value())
        };
        let live = jobs
            .into_iter()
            .filter(|job| {
                !job.status.is_terminal()
                    || job
                        .callback
                        .as_ref()
                        .is_some_and(|c| c.state == super::job::CallbackState::Pending)
            })
            .collect();
        Ok(Loaded {
            live,
            next_seq,
            duplicates,
        })
    }
}

/// The writer thread: takes every batch waiting, commits them in one transaction, answers
/// each. Ends when the store is dropped.
fn write_loop(db: &Database, rx: &std::sync::mpsc::Receiver<Batch>) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        while batches.len() < MAX_BATCHES_PER_COMMIT {
            match rx.try_recv() {
                Ok(batch) => batches.push(batch),
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<_>, Vec<_>) =
            batches.into_iter().map(|b| (b.writes, b.reply)).unzip();
        match apply(db, writes) {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot write the job store");
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Applies every batch in one transaction and commits it.
fn apply(db: &Database, batches: Vec<Vec<Write>>) -> Result<Vec<Vec<Written>>, String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let txn = db.begin_write().map_err(|e| fail(&e))?;
    let mut results = Vec::with_capacity(batches.len());
    {
        let mut jobs = txn.open_table(JOBS).map_err(|e| fail(&e))?;
        let mut keys = txn.open_table(IDEMPOTENCY).map_err(|e| fail(&e))?;
        let mut meta = txn.open_table(META).map_err(|e| fail(&e))?;
        let mut indexes = Indexes::open(&txn).map_err(|e| fail(&e))?;
        for batch in batches {
            let mut done = Vec::with_capacity(batch.len());
            for write in batch {
                let written = match write {
                    Write::Insert(job) => {
                        let key = job
                            .spec
                            .idempotency_key
                            .as_ref()
                            .map(|k| format!("{}\n{k}", job.spec.owner));
                        let existing = match &key {
                            Some(key) => keys
                                .get(key.as_str())
                                .map_err(|e| fail(&e))?
                                .map(|v| v.value().to_string()),
                            None => None,
                        };
                        match existing {
                            Some(id) => Written::Existing(id),
                            None => {
                                if let Some(key) = &key {
                                    keys.insert(key.as_str(), job.id.as_str())
                                        .map_err(|e| fail(&e))?;
                                }
                                let bytes = serde_json::to_vec(&job).map_err(|e| fail(&e))?;
                                jobs.insert(job.id.as_str(), bytes.as_slice())
                                    .map_err(|e| fail(&e))?;
                                indexes.put(&job).map_err(|e| fail(&e))?;
                                Written::Done
                            }
                        }
                    }
                    Write::Put(job) => {
                        let bytes = serde_json::to_vec(&job).map_err(|e| fail(&e))?;
                        jobs.insert(job.id.as_str(), bytes.as_slice())
                            .map_err(|e| fail(&e))?;
                        indexes.put(&job).map_err(|e| fail(&e))?;
                        Written::Done
                    }
                    Write::Retire { id, seq, at } => {
                        indexes.unretire(at, seq, &id).map_err(|e| fail(&e))?;
                        let job = jobs
                            .get(id.as_str())
                            .map_err(|e| fail(&e))?
                            .and_then(|v| serde_json::from_slice::<Job>(v.value()).ok());
                        match job {
                            Some(job) if index::retirable_at(&job) == Some(at) => {
                                jobs.remove(id.as_str()).map_err(|e| fail(&e))?;
                                indexes
                                    .remove(&job.spec.owner, job.seq, &job.id)
                                    .map_err(|e| fail(&e))?;
                                if let Some(key) = &job.spec.idempotency_key {
                                    let key = format!("{}\n{key}", job.spec.owner);
                                    let names_it = keys
                                        .get(key.as_str())
                                        .map_err(|e| fail(&e))?
                                        .is_some_and(|v| v.value() == id);
                                    if names_it {
                                        keys.remove(key.as_str()).map_err(|e| fail(&e))?;
                                    }
                                }
                                Written::Done
                            }
                            _ => Written::Kept,
                        }
                    }
                    Write::AddDuplicates(n) => {
                        let now = meta
                            .get("duplicate_executions")
                            .map_err(|e| fail(&e))?
                            .map_or(0, |v| v.value());
                        meta.insert("duplicate_executions", now + n)
                            .map_err(|e| fail(&e))?;
                        Written::Done
                    }
                };
                done.push(written);
            }
            results.push(done);
        }
    }
    txn.commit().map_err(|e| fail(&e))?;
    Ok(results)
}

#[cfg(test)]
mod tests;
