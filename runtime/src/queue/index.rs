//! The job store's indexes: a key's jobs in submission order (all of them, or those of one
//! status) for `GET /v1/jobs`, and finished jobs by when they finished for the retention
//! sweep. A listing reads `limit` index rows and `limit` records, never the whole store.
//!
//! The rows are written in the same transaction as the record they describe, so a crash
//! never leaves them disagreeing. A store without them (written by an older weir), or with a
//! different number of rows than records (an older weir wrote to it since), is re-indexed
//! when it is opened ([`Indexes::build`]).

use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, StorageError, Table, TableDefinition,
};

use super::job::{CallbackState, Job, Status};

/// (owner, seq, id) → (status, when retention may delete it): a key's jobs in submission
/// order. The value is what the other two indexes hold for the job, so a change finds its
/// old rows without reading the old record.
pub const BY_OWNER: TableDefinition<(&str, u64, &str), (u8, Option<u64>)> =
    TableDefinition::new("jobs_by_owner");
/// (owner, status, seq, id): a key's jobs of one status in submission order.
pub const BY_STATUS: TableDefinition<(&str, u8, u64, &str), ()> =
    TableDefinition::new("jobs_by_status");
/// (finished Unix ms, seq, id): finished jobs retention may delete, oldest first.
pub const RETIRABLE: TableDefinition<(u64, u64, &str), ()> = TableDefinition::new("jobs_retirable");

/// The meta-table key holding the index layout version.
pub const VERSION_KEY: &str = "index_version";
/// The layout these tables follow; a store recording another (or none) is re-indexed.
pub const VERSION: u64 = 1;

/// A status as an index key: its place in [`Status::ALL`].
pub fn code(status: Status) -> u8 {
    Status::ALL
        .iter()
        .position(|s| *s == status)
        .map_or(u8::MAX, |i| i as u8)
}

/// When retention may delete `job` (Unix ms): once it has finished and no callback of it is
/// still to be delivered; `None` before.
pub fn retirable_at(job: &Job) -> Option<u64> {
    let pending = job
        .callback
        .as_ref()
        .is_some_and(|c| c.state == CallbackState::Pending);
    (job.status.is_terminal() && !pending).then(|| job.finished_ms.unwrap_or(job.created_ms))
}

/// The three index tables, open in one write transaction.
pub struct Indexes<'txn> {
    by_owner: Table<'txn, (&'static str, u64, &'static str), (u8, Option<u64>)>,
    by_status: Table<'txn, (&'static str, u8, u64, &'static str), ()>,
    retirable: Table<'txn, (u64, u64, &'static str), ()>,
}

impl<'txn> Indexes<'txn> {
    /// Opens the tables in `txn`.
    pub fn open(txn: &'txn redb::WriteTransaction) -> Result<Indexes<'txn>, redb::TableError> {
        Ok(Indexes {
            by_owner: txn.open_table(BY_OWNER)?,
            by_status: txn.open_table(BY_STATUS)?,
            retirable: txn.open_table(RETIRABLE)?,
        })
    }

    /// Writes `job`'s rows, replacing those of its previous state.
    pub fn put(&mut self, job: &Job) -> Result<(), StorageError> {
        let (owner, seq, id) = (job.spec.owner.as_str(), job.seq, job.id.as_str());
        self.remove(owner, seq, id)?;
        let status = code(job.status);
        let retire = retirable_at(job);
        self.by_owner.insert((owner, seq, id), (status, retire))?;
        self.by_status.insert((owner, status, seq, id), ())?;
        if let Some(at) = retire {
            self.retirable.insert((at, seq, id), ())?;
        }
        Ok(())
    }

    /// Removes the rows of job `id` (of `owner`, submitted `seq`th), as its owner row
    /// recorded them.
    pub fn remove(&mut self, owner: &str, seq: u64, id: &str) -> Result<(), StorageError> {
        let old = self.by_owner.remove((owner, seq, id))?.map(|g| g.value());
        if let Some((status, retire)) = old {
            self.by_status.remove((owner, status, seq, id))?;
            if let Some(at) = retire {
                self.retirable.remove((at, seq, id))?;
            }
        }
        Ok(())
    }

    /// Removes one row of the retention index (whatever the record says).
    pub fn unretire(&mut self, at: u64, seq: u64, id: &str) -> Result<(), StorageError> {
        self.retirable.remove((at, seq, id)).map(drop)
    }

    /// Whether there are as many owner rows as `records`: a store some writer changed
    /// without the indexes (an older weir) has fewer.
    pub fn complete(&self, records: u64) -> Result<bool, StorageError> {
        Ok(self.by_owner.len()? == records)
    }

    /// Rebuilds every row from the records of `jobs`; returns how many records were
    /// indexed. A record that does not parse is logged and left out (listings skip it, as
    /// they always have).
    pub fn build(
        &mut self,
        jobs: &impl ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<u64, StorageError> {
        self.by_owner.retain(|_, _| false)?;
        self.by_status.retain(|_, _| false)?;
        self.retirable.retain(|_, _| false)?;
        let mut indexed = 0;
        for item in jobs.iter()? {
            let (key, value) = item?;
            match serde_json::from_slice::<Job>(value.value()) {
                Ok(job) => {
                    self.put(&job)?;
                    indexed += 1;
                }
                Err(err) => {
                    tracing::error!(job = key.value(), error = %err, "unreadable job record not indexed");
                }
            }
        }
        Ok(indexed)
    }
}

/// The ids of `owner`'s jobs with `status` (any when `None`) submitted before `seq`
/// `before` (any when `None`), newest first, at most `take`: a range read of `take` rows.
pub fn newest(
    txn: &ReadTransaction,
    owner: &str,
    status: Option<Status>,
    before: Option<u64>,
    take: usize,
) -> Result<Vec<String>, redb::Error> {
    let before = before.unwrap_or(u64::MAX);
    let mut ids = Vec::with_capacity(take.min(1024));
    match status {
        None => {
            let table = txn.open_table(BY_OWNER)?;
            for row in table
                .range((owner, 0, "")..(owner, before, ""))?
                .rev()
                .take(take)
            {
                ids.push(row?.0.value().2.to_string());
            }
        }
        Some(status) => {
            let code = code(status);
            let table = txn.open_table(BY_STATUS)?;
            let rows = table.range((owner, code, 0, "")..(owner, code, before, ""))?;
            for row in rows.rev().take(take) {
                ids.push(row?.0.value().3.to_string());
            }
        }
    }
    Ok(ids)
}

/// Up to `max` finished jobs retention deletes now, oldest first, as (id, seq, retirable
/// since): those retirable at `cutoff_ms` or before, and the oldest beyond the `keep` newest.
/// Reads the rows it returns and one more.
pub fn due(
    txn: &ReadTransaction,
    cutoff_ms: Option<u64>,
    keep: Option<u64>,
    max: usize,
) -> Result<Vec<(String, u64, u64)>, redb::Error> {
    let table = txn.open_table(RETIRABLE)?;
    let total = table.len()?;
    let excess = keep.map_or(0, |keep| total.saturating_sub(keep));
    let mut due = Vec::new();
    for (n, row) in table.iter()?.enumerate() {
        let (key, _) = row?;
        let (at, seq, id) = key.value();
        let expired = cutoff_ms.is_some_and(|cutoff| at <= cutoff);
        if due.len() >= max || !(expired || (n as u64) < excess) {
            break;
        }
        due.push((id.to_string(), seq, at));
    }
    Ok(due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_own_code() {
        let codes: std::collections::BTreeSet<u8> = Status::ALL.into_iter().map(code).collect();
        assert_eq!(codes.len(), Status::ALL.len());
        assert!(codes.iter().all(|c| usize::from(*c) < Status::ALL.len()));
    }
}
