//! The epoch ticker: one thread for the whole process that bumps every lane's epoch each
//! `epoch_tick`, which is what lets a call's deadline interrupt guest code — and that sleeps
//! while no stage store exists.
//!
//! A store is counted from [`Ticker::enter`] (in `Sandbox::new_store`) until its [`Live`]
//! guard drops with the store. After [`IDLE_TICKS`] ticks in a row with none alive, the thread
//! parks until the next store is created, so an idle host does not wake 200 times a second
//! (at the default 5 ms tick it was 99% of an idle `weir serve`'s wakeups). A store created
//! while the thread is parked unparks it before any guest code of that store can run, and a
//! deadline is counted in ticks from the call's start, so the first call after an idle spell
//! is stopped as promptly as any other (`deadline_tests`).
//!
//! Parking and waking race: the thread announces `parked` and then reads the count, a new
//! store raises the count and then reads `parked` (all `SeqCst`), so at least one of them
//! sees the other and the thread never sleeps through a live store.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use super::Lane;

/// Ticks in a row with no store alive before the ticker parks (100 ms at the default tick):
/// traffic with shorter gaps keeps it ticking; the first store after a longer gap pays one
/// unpark (a futex wake) in `new_store`.
pub const IDLE_TICKS: u32 = 20;

/// What the ticker thread and every store share.
#[derive(Debug, Default)]
pub struct Ticker {
    /// Stores alive now.
    live: AtomicUsize,
    /// True while the thread sleeps (or is about to) until a store is created.
    parked: AtomicBool,
    /// Set when the sandbox drops: the thread ends.
    stop: AtomicBool,
    /// The thread, to unpark it.
    thread: OnceLock<Thread>,
}

/// Counts one store as alive until dropped (it lives in the store's data).
#[derive(Debug)]
pub struct Live(Arc<Ticker>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticker {
    /// Starts the thread: it bumps `small`'s epoch, and the large lane's once built, every
    /// `tick` until [`Ticker::stop`] or the small engine is gone.
    pub fn spawn(
        small: wasmtime::EngineWeak,
        large: Arc<OnceLock<Lane>>,
        tick: Duration,
    ) -> std::io::Result<(Arc<Ticker>, JoinHandle<()>)> {
        let ticker = Arc::new(Ticker::default());
        let shared = ticker.clone();
        let handle = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || shared.run(&small, &large, tick))?;
        // Set before any store can exist: the sandbox that creates stores is not built yet.
        let _ = ticker.thread.set(handle.thread().clone());
        Ok((ticker, handle))
    }

    /// Counts a new store as alive, waking the thread if it sleeps.
    pub fn enter(self: &Arc<Self>) -> Live {
        self.live.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            self.unpark();
        }
        Live(self.clone())
    }

    /// True while the thread sleeps for want of a live store.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// Ends the thread (it is joined by the caller).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.unpark();
    }

    fn unpark(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    fn run(&self, small: &wasmtime::EngineWeak, large: &OnceLock<Lane>, tick: Duration) {
        let mut idle = 0u32;
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::park_timeout(tick);
            match small.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
            if let Some(lane) = large.get() {
                lane.engine().increment_epoch();
            }
            if self.live.load(Ordering::SeqCst) > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_TICKS {
                continue;
            }
            idle = 0;
            self.parked.store(true, Ordering::SeqCst);
            // A store created after this read finds `parked` set and unparks the thread.
            if self.live.load(Ordering::SeqCst) == 0 {
                // `park` may return spuriously, or for an unpark meant for an earlier round.
                while self.parked.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
                    std::thread::park();
                }
            }
            self.parked.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (real time, bounded) until `ticker.is_parked()` is `parked`.
    fn wait_for(ticker: &Ticker, parked: bool) -> bool {
        for _ in 0..2000 {
            if ticker.is_parked() == parked {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    fn spawn() -> (wasmtime::Engine, Arc<Ticker>, JoinHandle<()>) {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let (ticker, thread) =
            Ticker::spawn(engine.weak(), Arc::default(), Duration::from_millis(1)).unwrap();
        (engine, ticker, thread)
    }

    #[test]
    fn sleeps_while_no_store_lives_and_wakes_for_the_next_one() {
        let (_engine, ticker, thread) = spawn();
        assert!(wait_for(&ticker, true), "never parked with no store alive");
        let live = ticker.enter();
        // Cleared by `enter` itself, before any guest code of the new store can run.
        assert!(!ticker.is_parked());
        // A live store keeps it ticking well past the idle threshold.
        std::thread::sleep(Duration::from_millis(u64::from(IDLE_TICKS) * 4));
        assert!(!ticker.is_parked(), "parked under a live store");
        drop(live);
        assert!(
            wait_for(&ticker, true),
            "never parked after the last store went"
        );
        ticker.stop();
        thread.join().unwrap();
    }

    #[test]
    fn stopping_ends_a_parked_thread() {
        let (_engine, ticker, thread) = spawn();
        assert!(wait_for(&ticker, true), "never parked with no store alive");
        ticker.stop();
        // Bounded by the test harness: a thread that slept through `stop` hangs here.
        thread.join().unwrap();
    }

    #[test]
    fn many_stores_coming_and_going_never_leave_one_unticked() {
        let (_engine, ticker, thread) = spawn();
        for round in 0..50 {
            assert!(wait_for(&ticker, true), "round {round}: never parked");
            let guards: Vec<Live> = (0..4).map(|_| ticker.enter()).collect();
            assert!(
                !ticker.is_parked(),
                "round {round}: parked with stores alive"
            );
            drop(guards);
        }
        ticker.stop();
        thread.join().unwrap();
    }
}
