//! The spend ledger: every priced call and cache hit, summed per (UTC day, key, route,
//! model) in an embedded redb database under the data directory, so spend survives restarts
//! and budgets pick up where they were. Optionally, one JSON line per call to a request log
//! for `weir cost project`.
//!
//! Writes go to one writer thread that gathers records for up to 100 ms and commits them in
//! one transaction, summed per row (group commit), so the request path never waits on a disk
//! sync and a busy host does not commit per request. [`Ledger::flush`] waits
//! until everything recorded so far is durable (for `/admin/spend` and shutdown).
//!
//! With the fleet's state on Redis ([`Ledger::ship`]), the same transaction also adds each
//! row to `unshipped`, the outbox of the fleet's spend shipper (`state::spend`): it moves
//! those rows into numbered batches ([`Ledger::outbox`]) and deletes a batch once Redis has
//! applied it ([`Ledger::shipped`]). Both tables are on disk, so a node killed before its
//! rows reached Redis ships them at its next start, under the batch numbers they had: Redis
//! applies each batch once.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::clock;
use crate::sync::{lock, unpoisoned};
use crate::wit::Usage;

/// (day, key, route, model) → [calls, cache hits, cost pico-dollars, prompt tokens, cached
/// prompt tokens, completion tokens].
const SPEND: TableDefinition<(u32, &str, &str, &str), [u64; 6]> = TableDefinition::new("spend");

/// Rows committed but not yet taken by the shipper, summed like [`SPEND`].
const UNSHIPPED: TableDefinition<(u32, &str, &str, &str), [u64; 6]> =
    TableDefinition::new("unshipped");

/// A row of a shipped batch: (boot, batch number, day, key, route, model).
type OutboxKey<'a> = (&'a str, u64, u32, &'a str, &'a str, &'a str);

/// Batches being shipped: [`OutboxKey`] → the row's sums.
const OUTBOX: TableDefinition<OutboxKey, [u64; 6]> = TableDefinition::new("outbox");

/// Rows per shipped batch at most (each is up to 6 fields of one script call).
pub const ROWS_PER_BATCH: usize = 256;

/// Records taken per transaction at most.
const BATCH: usize = 4096;

/// How long the writer gathers records before committing them (unless flushed): a `kill -9`
/// loses at most this much spend; a graceful stop or `/admin/spend` flushes first. A commit
/// costs about 70 µs of CPU however few rows it writes, and a request that shares its core
/// waits for it: at one commit every 20 ms, about one request in a hundred at c=1 did, which
/// was most of the bare route's p99 (with every process on one core, `PIN=1 bench/floor.sh`:
/// 0.216 ms, 0.141 ms at 100 ms; the 3-stage route 0.445 and 0.320 ms).
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Why the ledger cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("spend ledger {path}: {message}")]
pub struct LedgerError {
    /// The database file (`memory` when in memory).
    pub path: String,
    /// What failed.
    pub message: String,
}

/// One line of the request log, and one input line of `weir cost project`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficLine {
    /// Seconds since the epoch.
    pub ts: u64,
    /// The key's name (`-` without auth).
    #[serde(default)]
    pub key: String,
    /// The route (model alias the client asked for).
    #[serde(default)]
    pub route: String,
    /// The upstream model billed (or that would have been, for a hit).
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Of those, served from the provider's prompt cache.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Of those, written to the provider's prompt cache (billed at the cache-write price);
    /// absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// `miss`, `hit`, `semantic-hit`, `coalesced` or `bypass`.
    pub cache: String,
    /// What it cost, USD (0 for a hit).
    #[serde(default)]
    pub cost_usd: f64,
    /// Whether the tokens were counted locally.
    #[serde(default)]
    pub estimated: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One call or hit to record.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Seconds since the epoch.
    pub ts: u64,
    /// The key's name.
    pub key: String,
    /// The route.
    pub route: String,
    /// The upstream model.
    pub model: String,
    /// Its usage (for a hit: the cached answer's).
    pub usage: Usage,
    /// Of its prompt tokens, those written to the provider's prompt cache.
    pub cache_writes: u32,
    /// Its cost, pico-dollars.
    pub cost: u64,
    /// How the cache was involved.
    pub cache: &'static str,
    /// Whether the usage was counted locally.
    pub estimated: bool,
}

impl Entry {
    /// Whether this is a cache hit (nothing billed).
    pub fn is_hit(&self) -> bool {
        matches!(self.cache, "hit" | "semantic-hit")
    }

    /// What this entry adds to its spend row: calls, cache hits, cost (pico-dollars), prompt,
    /// cached and completion tokens.
    pub fn counts(&self) -> [u64; 6] {
        if self.is_hit() {
            return [0, 1, 0, 0, 0, 0];
        }
        [
            1,
            0,
            self.cost,
            u64::from(self.usage.prompt_tokens),
            u64::from(self.usage.cached_tokens),
            u64::from(self.usage.completion_tokens),
        ]
    }

    /// Adds this entry's [`Entry::counts`] to `row`, saturating: the usage (hence the cost)
    /// is what an upstream reported, and a panic would stop the thread summing.
    pub fn add_to(&self, row: &mut [u64; 6]) {
        for (total, more) in row.iter_mut().zip(self.counts()) {
            *total = total.saturating_add(more);
        }
    }
}

/// One summed row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SpendRow {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// The key's name.
    pub key: String,
    /// The route.
    pub route: String,
    /// The upstream model.
    pub model: String,
    /// Calls billed.
    pub calls: u64,
    /// Answers served from the cache.
    pub cache_hits: u64,
    /// Cost, pico-dollars.
    pub cost_pico: u64,
    /// Prompt tokens billed.
    pub prompt_tokens: u64,
    /// Of those, cached by the provider.
    pub cached_tokens: u64,
    /// Completion tokens billed.
    pub completion_tokens: u64,
}

/// What the request path and the writer share.
#[derive(Default)]
struct Queue {
    /// Records not yet taken by the writer.
    pending: Vec<Entry>,
    /// Records ever queued.
    sent: u64,
    /// Records durably committed.
    committed: u64,
    /// Someone waits in [`Ledger::flush`]: commit now.
    flush: bool,
    /// The last handle is gone: commit what is left and stop.
    closed: bool,
}

/// The queue and its two signals.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer (first record of a batch, a flush, the close).
    wake: Condvar,
    /// Wakes flushers (a commit finished).
    done: Condvar,
    /// Commits also fill the shipper's outbox ([`Ledger::ship`]).
    ship: std::sync::atomic::AtomicBool,
}

/// One batch of the fleet's spend shipper: rows of one day, numbered per process start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipBatch {
    /// The process start that numbered it (`<node>/<boot ms>`).
    pub boot: String,
    /// Its number, from 1 per boot.
    pub seq: u64,
    /// The UTC day of its rows.
    pub day: u32,
    /// Its rows.
    pub rows: Vec<ShipRow>,
}

/// A shipped row: (key, route, model) and its sums ([`Entry::counts`]).
pub type ShipRow = (String, String, String, [u64; 6]);

/// A row read from a table, owned.
fn owned_row(key: &str, route: &str, model: &str, sums: [u64; 6]) -> ShipRow {
    (key.to_owned(), route.to_owned(), model.to_owned(), sums)
}

/// The ledger handle (cheap to clone). When the last clone is dropped, the writer commits
/// what is queued and the database is closed before the drop returns.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    db: Arc<Database>,
    /// Shown in errors.
    path: Arc<str>,
    /// The writer thread, joined on drop.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `data_dir/ledger.redb`, or in memory without one,
    /// appending request-log lines to `request_log` when given.
    pub fn open(
        data_dir: Option<&Path>,
        request_log: Option<PathBuf>,
    ) -> Result<Ledger, LedgerError> {
        let (db, path) = match data_dir {
            Some(dir) => {
                let path = dir.join("ledger.redb");
                let err = |message: String| LedgerError {
                    path: path.display().to_string(),
                    message,
                };
                // Private to weir's user: 0700 / 0600, looser existing modes tightened.
                crate::fsutil::private_dir(dir)
                    .map_err(|e| err(format!("cannot create the data directory: {e}")))?;
                crate::fsutil::private_file(&path).map_err(|e| err(e.to_string()))?;
                let db = Database::create(&path).map_err(|e| err(e.to_string()))?;
                (db, path.display().to_string())
            }
            None => {
                let db = Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .map_err(|e| LedgerError {
                        path: "memory".into(),
                        message: e.to_string(),
                    })?;
                (db, "memory".to_string())
            }
        };
        let err = |message: String| LedgerError {
            path: path.clone(),
            message,
        };
        // Create the tables so reads never meet a missing one.
        let txn = db.begin_write().map_err(|e| err(e.to_string()))?;
        txn.open_table(SPEND).map_err(|e| err(e.to_string()))?;
        txn.open_table(UNSHIPPED).map_err(|e| err(e.to_string()))?;
        txn.open_table(OUTBOX).map_err(|e| err(e.to_string()))?;
        txn.commit().map_err(|e| err(e.to_string()))?;
        let log = match request_log {
            Some(file) => {
                if let Some(parent) = file.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&file)
                        .map_err(|e| {
                            err(format!(
                                "cannot open the request log {}: {e}",
                                file.display()
                            ))
                        })?,
                )
            }
            None => None,
        };
        let db = Arc::new(db);
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            db: db.clone(),
            shared: shared.clone(),
            log,
        };
        let writer = std::thread::Builder::new()
            .name("weir-ledger".into())
            .spawn(move || writer.run())
            .map_err(|e| err(format!("cannot start the writer thread: {e}")))?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                shared,
                db,
                path: path.into(),
                writer: Some(writer),
            }),
        })
    }

    /// Queues `entry` for the next commit. Costs a lock and a push; only the first record of
    /// a batch wakes the writer.
    pub fn record(&self, entry: Entry) {
        crate::telemetry::spend(
            &entry.key,
            &entry.model,
            &entry.usage,
            entry.cost,
            entry.is_hit(),
        );
        let first = {
            let mut queue = lock(&self.inner.shared.queue);
            queue.pending.push(entry);
            queue.sent += 1;
            queue.pending.len() == 1
        };
        if first {
            self.inner.shared.wake.notify_one();
        }
    }

    /// Every row committed from now on also goes to the outbox of the fleet's spend shipper
    /// ([`Ledger::outbox`]).
    pub fn ship(&self) {
        (self.inner.shared.ship).store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The batches to ship, in order: those of the outbox when it has any (not yet applied,
    /// perhaps from an earlier start), else every unshipped row, moved into new batches of
    /// `boot` numbered after `seq` (which is advanced). Empty when there is nothing to ship.
    pub fn outbox(&self, boot: &str, seq: &mut u64) -> Result<Vec<ShipBatch>, LedgerError> {
        let txn = self.inner.db.begin_write().map_err(|e| self.error(e))?;
        let mut batches: Vec<ShipBatch> = Vec::new();
        {
            let mut outbox = txn.open_table(OUTBOX).map_err(|e| self.error(e))?;
            for item in outbox.iter().map_err(|e| self.error(e))? {
                let (k, v) = item.map_err(|e| self.error(e))?;
                let (b, n, day, key, route, model) = k.value();
                let row = owned_row(key, route, model, v.value());
                match batches.last_mut() {
                    Some(last) if last.boot == b && last.seq == n => last.rows.push(row),
                    _ => batches.push(ShipBatch {
                        boot: b.to_owned(),
                        seq: n,
                        day,
                        rows: vec![row],
                    }),
                }
            }
            if !batches.is_empty() {
                return Ok(batches);
            }
            let mut unshipped = txn.open_table(UNSHIPPED).map_err(|e| self.error(e))?;
            // Day by day, in key order: at most ROWS_PER_BATCH rows a batch.
            for item in unshipped.iter().map_err(|e| self.error(e))? {
                let (k, v) = item.map_err(|e| self.error(e))?;
                let (day, key, route, model) = k.value();
                let row = owned_row(key, route, model, v.value());
                match batches.last_mut() {
                    Some(last) if last.day == day && last.rows.len() < ROWS_PER_BATCH => {
                        last.rows.push(row)
                    }
                    _ => {
                        *seq += 1;
                        batches.push(ShipBatch {
                            boot: boot.to_owned(),
                            seq: *seq,
                            day,
                            rows: vec![row],
                        })
                    }
                }
            }
            if batches.is_empty() {
                // Nothing to ship: the transaction is dropped, not committed (no disk write
                // on an idle node).
                return Ok(batches);
            }
            unshipped.retain(|_, _| false).map_err(|e| self.error(e))?;
            for batch in &batches {
                for (key, route, model, sums) in &batch.rows {
                    let at = (boot, batch.seq, batch.day, &**key, &**route, &**model);
                    outbox.insert(at, sums).map_err(|e| self.error(e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.error(e))?;
        Ok(batches)
    }

    /// Deletes batch `seq` of `boot` from the outbox: Redis has applied it.
    pub fn shipped(&self, boot: &str, seq: u64) -> Result<(), LedgerError> {
        let txn = self.inner.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut outbox = txn.open_table(OUTBOX).map_err(|e| self.error(e))?;
            let from = (boot, seq, 0, "", "", "");
            let to = (boot, seq.saturating_add(1), 0, "", "", "");
            outbox
                .retain_in(from..to, |_, _| false)
                .map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
    }

    /// Whether every committed row has been shipped (nothing unshipped, nothing in the
    /// outbox).
    pub fn all_shipped(&self) -> Result<bool, LedgerError> {
        let txn = self.inner.db.begin_read().map_err(|e| self.error(e))?;
        let unshipped = txn.open_table(UNSHIPPED).map_err(|e| self.error(e))?;
        let outbox = txn.open_table(OUTBOX).map_err(|e| self.error(e))?;
        Ok(unshipped.is_empty().map_err(|e| self.error(e))?
            && outbox.is_empty().map_err(|e| self.error(e))?)
    }

    /// Waits (up to `timeout`) until everything recorded so far is committed; false on
    /// timeout.
    pub fn flush(&self, timeout: Duration) -> bool {
        let shared = &self.inner.shared;
        let mut queue = lock(&shared.queue);
        let target = queue.sent;
        queue.flush = true;
        shared.wake.notify_one();
        let (queue, _) = unpoisoned(
            shared
                .done
                .wait_timeout_while(queue, timeout, |q| q.committed < target),
        );
        queue.committed >= target
    }

    fn error(&self, message: impl std::fmt::Display) -> LedgerError {
        LedgerError {
            path: self.inner.path.to_string(),
            message: message.to_string(),
        }
    }

    /// Every row from day `from` to day `to` (inclusive).
    pub fn rows(&self, from: u32, to: u32) -> Result<Vec<SpendRow>, LedgerError> {
        let txn = self.inner.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(SPEND).map_err(|e| self.error(e))?;
        let start = (from, "", "", "");
        let mut rows = Vec::new();
        for item in table.range(start..).map_err(|e| self.error(e))? {
            let (k, v) = item.map_err(|e| self.error(e))?;
            let (day, key, route, model) = k.value();
            if day > to {
                break;
            }
            let [
                calls,
                cache_hits,
                cost_pico,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
            ] = v.value();
            rows.push(SpendRow {
                day: clock::date(day),
                key: key.to_string(),
                route: route.to_string(),
                model: model.to_string(),
                calls,
                cache_hits,
                cost_pico,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
            });
        }
        Ok(rows)
    }

    /// What `key` spent today and this month (as of `now`), pico-dollars.
    pub fn spent_by_key(&self, key: &str, now: u64) -> Result<(u64, u64), LedgerError> {
        let today = clock::day_of(now);
        let first = clock::month_start_day(today);
        let txn = self.inner.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(SPEND).map_err(|e| self.error(e))?;
        let (mut day, mut month) = (0u64, 0u64);
        for item in table
            .range((first, "", "", "")..)
            .map_err(|e| self.error(e))?
        {
            let (k, v) = item.map_err(|e| self.error(e))?;
            let (d, name, _, _) = k.value();
            if d > today {
                break;
            }
            if name == key {
                // Saturating: absurd usage from an upstream may have saturated a row.
                let cost = v.value()[2];
                month = month.saturating_add(cost);
                if d == today {
                    day = day.saturating_add(cost);
                }
            }
        }
        Ok((day, month))
    }
}

struct Writer {
    db: Arc<Database>,
    shared: Arc<Shared>,
    log: Option<std::fs::File>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let batch = {
                let shared = &self.shared;
                let mut queue = lock(&shared.queue);
                // Idle until the first record of a batch (or a flush, or the close).
                while queue.pending.is_empty() && !queue.flush && !queue.closed {
                    queue = unpoisoned(shared.wake.wait(queue));
                }
                // Gather for up to COMMIT_INTERVAL, so a busy host makes one small
                // transaction every few milliseconds, not one per request.
                if !queue.flush && !queue.closed {
                    let waited = shared.wake.wait_timeout_while(queue, COMMIT_INTERVAL, |q| {
                        !q.flush && !q.closed && q.pending.len() < BATCH
                    });
                    queue = unpoisoned(waited).0;
                }
                queue.flush = false;
                if queue.closed && queue.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            if let Err(err) = self.commit(&batch) {
                tracing::error!(error = %err, records = batch.len(), "cannot write the spend ledger");
            }
            self.append_log(&batch);
            lock(&self.shared.queue).committed += batch.len() as u64;
            self.shared.done.notify_all();
        }
    }

    fn commit(&self, batch: &[Entry]) -> Result<(), redb::Error> {
        if batch.is_empty() {
            return Ok(());
        }
        // Sum the batch per row first: one read and one write per row touched.
        let mut sums: BTreeMap<(u32, &str, &str, &str), [u64; 6]> = BTreeMap::new();
        for e in batch {
            let key = (
                clock::day_of(e.ts),
                e.key.as_str(),
                e.route.as_str(),
                e.model.as_str(),
            );
            e.add_to(sums.entry(key).or_insert([0; 6]));
        }
        let txn = self.db.begin_write()?;
        add_rows(&mut txn.open_table(SPEND)?, &sums)?;
        if self.shared.ship.load(std::sync::atomic::Ordering::Relaxed) {
            add_rows(&mut txn.open_table(UNSHIPPED)?, &sums)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn append_log(&mut self, batch: &[Entry]) {
        let Some(file) = &mut self.log else { return };
        let mut out = Vec::with_capacity(batch.len() * 200);
        for e in batch {
            let line = TrafficLine {
                ts: e.ts,
                key: e.key.clone(),
                route: e.route.clone(),
                model: e.model.clone(),
                prompt_tokens: u64::from(e.usage.prompt_tokens),
                cached_tokens: u64::from(e.usage.cached_tokens),
                cache_write_tokens: u64::from(e.cache_writes),
                completion_tokens: u64::from(e.usage.completion_tokens),
                cache: e.cache.to_string(),
                cost_usd: crate::config::pico_to_usd(e.cost),
                estimated: e.estimated,
            };
            if serde_json::to_writer(&mut out, &line).is_ok() {
                out.push(b'\n');
            }
        }
        if let Err(err) = file.write_all(&out) {
            tracing::warn!(error = %err, "cannot append to the request log");
        }
    }
}

/// Adds `sums` to the rows of `table` (saturating).
fn add_rows(
    table: &mut redb::Table<(u32, &str, &str, &str), [u64; 6]>,
    sums: &BTreeMap<(u32, &str, &str, &str), [u64; 6]>,
) -> Result<(), redb::Error> {
    for (&key, add) in sums {
        let mut row = table.get(key)?.map(|v| v.value()).unwrap_or([0; 6]);
        for (total, more) in row.iter_mut().zip(add) {
            *total = total.saturating_add(*more);
        }
        table.insert(key, row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: u64, key: &str, cost: u64, cache: &'static str) -> Entry {
        Entry {
            ts,
            key: key.into(),
            route: "demo".into(),
            model: "sim-1".into(),
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15,
                cached_tokens: 0,
            },
            cache_writes: 0,
            cost,
            cache,
            estimated: false,
        }
    }

    #[test]
    fn spend_survives_reopening_and_sums_by_day_and_key() {
        let dir = std::env::temp_dir().join(format!("weir-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = 1_795_727_521; // 2026-11-26
        {
            let ledger = Ledger::open(Some(&dir), None).unwrap_or_else(|e| panic!("{e}"));
            ledger.record(entry(now, "a", 100, "miss"));
            ledger.record(entry(now, "a", 50, "miss"));
            ledger.record(entry(now, "a", 0, "hit"));
            ledger.record(entry(now - 86_400, "a", 7, "miss"));
            ledger.record(entry(now, "b", 1, "bypass"));
            assert!(ledger.flush(Duration::from_secs(10)));
        }
        let ledger = Ledger::open(Some(&dir), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ledger.spent_by_key("a", now).ok(), Some((150, 157)));
        let rows = ledger.rows(0, u32::MAX).unwrap_or_default();
        let today: Vec<_> = rows
            .iter()
            .filter(|r| r.day == "2026-11-26" && r.key == "a")
            .collect();
        assert_eq!(today.len(), 1);
        assert_eq!(
            (today[0].calls, today[0].cache_hits, today[0].cost_pico),
            (2, 1, 150)
        );
        assert_eq!(today[0].prompt_tokens, 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_outbox_keeps_unshipped_rows_and_their_batch_numbers_across_a_restart() {
        let dir = std::env::temp_dir().join(format!("weir-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = 1_795_727_521; // 2026-11-26
        let mut seq = 0;
        let first = {
            let ledger = Ledger::open(Some(&dir), None).unwrap_or_else(|e| panic!("{e}"));
            // Before shipping is on, rows go to the ledger only.
            ledger.record(entry(now, "early", 1, "miss"));
            assert!(ledger.flush(Duration::from_secs(10)));
            ledger.ship();
            ledger.record(entry(now, "a", 100, "miss"));
            ledger.record(entry(now, "a", 50, "miss"));
            ledger.record(entry(now - 86_400, "b", 7, "miss"));
            assert!(ledger.flush(Duration::from_secs(10)));
            assert_eq!(ledger.all_shipped().ok(), Some(false));
            let batches = ledger
                .outbox("n/1", &mut seq)
                .unwrap_or_else(|e| panic!("{e}"));
            // One batch per day, numbered in order; the rows summed.
            assert_eq!(seq, 2);
            assert_eq!(
                batches
                    .iter()
                    .map(|b| (b.boot.as_str(), b.seq, b.day))
                    .collect::<Vec<_>>(),
                [
                    ("n/1", 1, clock::day_of(now) - 1),
                    ("n/1", 2, clock::day_of(now))
                ]
            );
            assert_eq!(batches[1].rows.len(), 1);
            assert_eq!(batches[1].rows[0].0, "a");
            assert_eq!(batches[1].rows[0].3[..3], [2, 0, 150]);
            // Not yet applied: the same batches again, nothing new numbered.
            assert_eq!(ledger.outbox("n/1", &mut seq).ok().as_ref(), Some(&batches));
            assert_eq!(seq, 2);
            ledger.shipped("n/1", 1).unwrap_or_else(|e| panic!("{e}"));
            // Rows committed meanwhile wait for the outbox to empty.
            ledger.record(entry(now, "a", 3, "miss"));
            assert!(ledger.flush(Duration::from_secs(10)));
            batches
        };
        // Killed here: the next start finds batch 2 as it was, then the newer row.
        let ledger = Ledger::open(Some(&dir), None).unwrap_or_else(|e| panic!("{e}"));
        let mut seq = 0;
        let again = ledger
            .outbox("n/2", &mut seq)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, first[1..]);
        assert_eq!(seq, 0);
        ledger.shipped("n/1", 2).unwrap_or_else(|e| panic!("{e}"));
        let newer = ledger
            .outbox("n/2", &mut seq)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(newer.len(), 1);
        assert_eq!((newer[0].boot.as_str(), newer[0].seq), ("n/2", 1));
        assert_eq!(newer[0].rows[0].3[2], 3);
        ledger.shipped("n/2", 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ledger.all_shipped().ok(), Some(true));
        assert_eq!(ledger.outbox("n/2", &mut seq).ok(), Some(Vec::new()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
