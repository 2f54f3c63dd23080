//! Single-flight: concurrent identical misses share one upstream call.
//!
//! The first request for a key becomes the leader and makes the call; the others wait for
//! its outcome and get the same response or the same error. If the leader goes away without
//! an outcome (its client disconnected), the waiters are told so and one of them leads the
//! next try: never a stampede, never a waiter stuck forever.

use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::watch;

use super::CacheKey;
use crate::router::RouteError;
use crate::wit::ChatResponse;

/// What a leader's call ended with.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The response.
    Done(Result<Arc<ChatResponse>, RouteError>),
    /// The leader was dropped before it finished; try again.
    Abandoned,
}

/// The table of calls in flight.
#[derive(Clone, Default)]
pub struct Flights {
    /// Key → the channel its waiters listen on.
    table: Arc<DashMap<CacheKey, watch::Receiver<Option<Outcome>>>>,
}

/// Either the lead on a key or a place in its queue.
pub enum Flight {
    /// Make the call, then `Leader::finish`.
    Lead(Leader),
    /// Wait for the leader with `Follower::wait`.
    Follow(Follower),
}

/// The request making the call for a key.
pub struct Leader {
    /// The key.
    key: CacheKey,
    /// Where the outcome goes.
    tx: watch::Sender<Option<Outcome>>,
    /// The table, to remove the key when done.
    flights: Flights,
    /// Set by `finish`.
    finished: bool,
}

/// A request waiting for the leader.
pub struct Follower {
    /// The leader's channel.
    rx: watch::Receiver<Option<Outcome>>,
}

impl Flights {
    /// Joins the flight for `key`, leading it if there is none.
    pub fn join(&self, key: CacheKey) -> Flight {
        match self.table.entry(key) {
            Entry::Occupied(entry) => Flight::Follow(Follower {
                rx: entry.get().clone(),
            }),
            Entry::Vacant(entry) => {
                let (tx, rx) = watch::channel(None);
                entry.insert(rx);
                Flight::Lead(Leader {
                    key,
                    tx,
                    flights: self.clone(),
                    finished: false,
                })
            }
        }
    }

    /// Calls in flight now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl Leader {
    /// Publishes the outcome to every waiter and leaves the table.
    pub fn finish(mut self, outcome: Result<Arc<ChatResponse>, RouteError>) {
        self.finished = true;
        self.flights.table.remove(&self.key);
        let _ = self.tx.send(Some(Outcome::Done(outcome)));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.finished {
            self.flights.table.remove(&self.key);
            let _ = self.tx.send(Some(Outcome::Abandoned));
        }
    }
}

impl Follower {
    /// The leader's outcome.
    pub async fn wait(mut self) -> Outcome {
        match self.rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Outcome::Abandoned),
            Err(_) => Outcome::Abandoned,
        }
    }
}
