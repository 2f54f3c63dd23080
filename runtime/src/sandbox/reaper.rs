//! Where finished stores are dropped: inline on the request's thread, or on a reaper thread.
//!
//! Dropping a `Store` returns its instance to the pool (resetting memory and tables), which
//! costs tens of microseconds. A [`Reaper`] decides where that happens:
//!
//! - [`Reaper::inline`] drops on the caller's thread, as part of the response. **Production
//!   uses this one** (the composition root builds the `StageEnv` with it): measured on the
//!   `stage_call` bench (2 cores), an inline drop costs less than handing the store to the
//!   reaper thread, whose `madvise` calls then disturb the request thread (median 17.6 µs
//!   inline vs 27.1 µs with the reaper).
//! - [`Reaper::start`] sends finished stores to one background thread that drops them, taking
//!   the teardown off the response path. The bench compares it with inline, and the
//!   in-process test host (`tests/all/support.rs`) uses it. Its queue is bounded: when the
//!   reaper falls behind, the sender drops inline instead, so pending teardowns can never
//!   hold more than [`REAPER_QUEUE`] pool slots (otherwise a fast producer would exhaust the
//!   pool with stores that are finished but not yet returned).

use std::sync::mpsc;

/// Finished stores that may wait for the reaper; beyond this, teardown happens inline.
pub const REAPER_QUEUE: usize = 32;

/// Where finished stores are dropped: inline, or on the background reaper thread.
#[derive(Clone, Debug)]
pub struct Reaper {
    /// Where finished values are sent; `None` drops inline (no thread could be started).
    tx: Option<mpsc::SyncSender<Box<dyn Send>>>,
}

impl Reaper {
    /// Starts the reaper thread; if it cannot be started, values are dropped inline.
    pub fn start() -> Reaper {
        let (tx, rx) = mpsc::sync_channel::<Box<dyn Send>>(REAPER_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("weir-reaper".into())
            .spawn(move || {
                while let Ok(value) = rx.recv() {
                    drop(value);
                }
            });
        match spawned {
            Ok(_) => Reaper { tx: Some(tx) },
            Err(err) => {
                tracing::warn!(error = %err, "no reaper thread; stores are dropped inline");
                Reaper { tx: None }
            }
        }
    }

    /// A reaper that drops inline, on the caller's thread: what production uses (see the
    /// module docs for the measurement).
    pub fn inline() -> Reaper {
        Reaper { tx: None }
    }

    /// Drops `value` on the reaper thread; inline when the queue is full or the thread gone.
    pub fn reap<T: Send + 'static>(&self, value: T) {
        if let Some(tx) = &self.tx
            && let Err(mpsc::TrySendError::Full(value) | mpsc::TrySendError::Disconnected(value)) =
                tx.try_send(Box::new(value))
        {
            drop(value);
        }
    }
}
