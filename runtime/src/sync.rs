//! Poison-tolerant locking: the one way weir takes a `std::sync` lock.
//!
//! A std lock is poisoned when a thread panicked while holding it. weir's std locks guard plain
//! data (counters, rings, indexes, queues) whose updates leave it usable, so a panic in one
//! request is no reason to fail every later one: every lock result goes through
//! [`unpoisoned`], which takes the guard whether or not the lock is poisoned.

use std::sync::{LockResult, Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, poisoned or not.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    unpoisoned(mutex.lock())
}

/// The guard of a lock result (`Mutex::lock`, `RwLock::read`/`write`, `Condvar::wait*`),
/// poisoned or not.
pub fn unpoisoned<G>(result: LockResult<G>) -> G {
    result.unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use super::*;

    #[test]
    fn a_poisoned_lock_still_gives_its_data() {
        let mutex = Arc::new(Mutex::new(1));
        let rwlock = Arc::new(RwLock::new(2));
        let (m, r) = (Arc::clone(&mutex), Arc::clone(&rwlock));
        let panicked = std::thread::spawn(move || {
            let _m = m.lock();
            let _r = r.write();
            panic!("poison both locks");
        })
        .join();
        assert!(panicked.is_err());
        assert!(mutex.is_poisoned() && rwlock.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 2);
        *unpoisoned(rwlock.write()) += 1;
        assert_eq!(*unpoisoned(rwlock.read()), 3);
    }
}
