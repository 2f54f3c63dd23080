//! Where finished stores are dropped: inline on the request's thread, in a task of their own
//! on the request's runtime, or on a reaper thread.
//!
//! Dropping a `Store` returns its instance to the pool (resetting memory and tables), which
//! costs tens of microseconds. A [`Reaper`] decides where that happens:
//!
//! - [`Reaper::deferred`] drops in a tokio task of its own, spawned on the caller's worker.
//!   **Production uses this one** (the composition root builds the `StageEnv` with it): the
//!   request goes on first, so a request-phase instance is torn down while the upstream call
//!   is under way and a response-phase one once the response is handed to the socket (when
//!   the request's task next yields), as a rule on the same worker (the task takes the
//!   worker's LIFO slot). Measured with `bench/ab.sh` against inline
//!   (5 alternating rounds, medians): the 3-stage route at c=1 p50 0.381 -> 0.363 ms on one
//!   body and 0.531 -> 0.497 ms on distinct requests (every stage runs), CPU per request
//!   unchanged within noise. At most [`REAPER_QUEUE`] drops wait at once. The price: the
//!   new task may wake an idle worker to steal it (0.4 to 0.6 more context switches per
//!   request at 2,000 req/s). With one worker per CPU that runs beside the request; with more
//!   workers than CPUs (two workers pinned to one CPU, as `bench/run.sh`'s pinned rows do)
//!   it is a context switch in line: c=1 p50 267 -> 296 us there, while one worker on one
//!   CPU measured the same as inline (267 vs 266 us).
//! - [`Reaper::inline`] drops on the caller's thread, as part of the request. Measured on the
//!   `stage_call` bench (2 cores), it costs less than handing the store to the reaper thread,
//!   whose `madvise` calls then disturb the request thread (median 17.6 µs inline vs 27.1 µs
//!   with the reaper). The one-shot commands (`weir test-stage`) use it.
//! - [`Reaper::start`] sends finished stores to one background thread that drops them, taking
//!   the teardown off the response path. The bench compares it with inline, and the
//!   in-process test host (`tests/all/support.rs`) uses it. Its queue is bounded: when the
//!   reaper falls behind, the sender drops inline instead, so pending teardowns can never
//!   hold more than [`REAPER_QUEUE`] pool slots (otherwise a fast producer would exhaust the
//!   pool with stores that are finished but not yet returned).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Finished stores that may wait for the reaper thread or a deferred drop; beyond this,
/// teardown happens inline.
pub const REAPER_QUEUE: usize = 32;

/// One deferred drop waiting: counted down when it is gone.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where finished stores are dropped: inline, in a task of their own, or on the background
/// reaper thread.
#[derive(Clone, Debug)]
pub struct Reaper {
    /// Where finished values are sent; `None` drops inline (no thread could be started).
    tx: Option<mpsc::SyncSender<Box<dyn Send>>>,
    /// Set by [`Reaper::deferred`]: drops waiting in their own tokio task, counted.
    deferred: Option<Arc<AtomicUsize>>,
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
            Ok(_) => Reaper {
                tx: Some(tx),
                deferred: None,
            },
            Err(err) => {
                tracing::warn!(error = %err, "no reaper thread; stores are dropped inline");
                Reaper::inline()
            }
        }
    }

    /// A reaper that drops inline, on the caller's thread.
    pub fn inline() -> Reaper {
        Reaper {
            tx: None,
            deferred: None,
        }
    }

    /// A reaper that drops each value in a task of its own on the caller's tokio runtime: the
    /// request goes on (to the upstream call, or to writing its response) and the teardown
    /// runs when the worker next gets to it, on the same worker as a rule (the new task takes
    /// its LIFO slot), with no thread to wake. At most [`REAPER_QUEUE`] drops wait at once;
    /// past that, and outside a runtime, the drop is inline.
    pub fn deferred() -> Reaper {
        Reaper {
            tx: None,
            deferred: Some(Arc::new(AtomicUsize::new(0))),
        }
    }

    /// Drops `value`: on the reaper thread or in a task of its own (inline when the queue is
    /// full, the thread gone or no runtime runs), or inline.
    pub fn reap<T: Send + 'static>(&self, value: T) {
        if let Some(waiting) = &self.deferred {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return drop(value);
            };
            if waiting.fetch_add(1, Ordering::Relaxed) >= REAPER_QUEUE {
                waiting.fetch_sub(1, Ordering::Relaxed);
                return drop(value);
            }
            // Counted down when the task is done with the value, or dropped unrun.
            let counted = Counted(waiting.clone());
            runtime.spawn(async move {
                drop(value);
                drop(counted);
            });
            return;
        }
        if let Some(tx) = &self.tx
            && let Err(mpsc::TrySendError::Full(value) | mpsc::TrySendError::Disconnected(value)) =
                tx.try_send(Box::new(value))
        {
            drop(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// Sets its flag when dropped.
    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn flag() -> (Flag, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        (Flag(dropped.clone()), dropped)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_deferred_drop_waits_until_the_caller_yields() {
        let reaper = Reaper::deferred();
        let (value, dropped) = flag();
        reaper.reap(value);
        // The caller goes on first: nothing ran yet on this one-thread runtime.
        assert!(!dropped.load(Ordering::SeqCst));
        tokio::task::yield_now().await;
        assert!(dropped.load(Ordering::SeqCst));
        let waiting = reaper.deferred.as_ref().unwrap();
        assert_eq!(waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn past_the_queue_a_deferred_drop_is_inline() {
        let reaper = Reaper::deferred();
        let flags: Vec<_> = (0..REAPER_QUEUE + 1).map(|_| flag()).collect();
        let mut seen = Vec::new();
        for (value, dropped) in flags {
            reaper.reap(value);
            seen.push(dropped);
        }
        // The first REAPER_QUEUE wait for their tasks; the next one was dropped at once.
        assert!(
            seen[..REAPER_QUEUE]
                .iter()
                .all(|d| !d.load(Ordering::SeqCst))
        );
        assert!(seen[REAPER_QUEUE].load(Ordering::SeqCst));
        tokio::task::yield_now().await;
        assert!(seen.iter().all(|d| d.load(Ordering::SeqCst)));
        assert_eq!(reaper.deferred.as_ref().unwrap().load(Ordering::SeqCst), 0);
    }

    #[test]
    fn outside_a_runtime_a_deferred_drop_is_inline() {
        let (value, dropped) = flag();
        Reaper::deferred().reap(value);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_drop_task_that_never_runs_still_counts_down() {
        let reaper = Reaper::deferred();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (value, dropped) = flag();
        runtime.block_on(async { reaper.reap(value) });
        assert_eq!(reaper.deferred.as_ref().unwrap().load(Ordering::SeqCst), 1);
        // A runtime shut down with the task unrun drops it, and the value with it.
        drop(runtime);
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(reaper.deferred.as_ref().unwrap().load(Ordering::SeqCst), 0);
    }
}
