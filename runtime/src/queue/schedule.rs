//! The in-memory schedule, rebuilt from the store at start: which jobs wait, which are ready
//! (a priority heap per route), which run, the per-route concurrency that decides what a
//! free worker takes next, and how many each owner (API key) has in the queue. Pure data
//! behind one lock; no I/O.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// How far back completions count toward the drain rate.
pub const DRAIN_WINDOW: Duration = Duration::from_secs(60);

/// Where a job not yet ended stands in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting out a retry's backoff.
    Waiting,
    /// In its route's heap.
    Ready,
    /// A worker has it.
    Running,
}

/// A job not yet ended.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its route.
    pub route: String,
    /// The name of the key that submitted it (its per-key bound counts it).
    pub owner: String,
    /// 0 to 9, higher first.
    pub priority: u8,
    /// Submission order.
    pub seq: u64,
    /// When it was accepted (Unix ms), for the oldest-age metric.
    pub created_ms: u64,
    /// Where it stands.
    pub phase: Phase,
}

/// A heap slot: higher priority first, then lower `seq`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ready {
    priority: u8,
    order: Reverse<u64>,
    id: String,
}

/// The schedule.
#[derive(Default)]
pub struct Schedule {
    /// Jobs not yet ended, by id.
    pub entries: HashMap<String, Entry>,
    /// Submissions admitted against the bound but not yet stored.
    reserved: usize,
    /// Per owner: its entries and reservations (owners with none are absent).
    owners: HashMap<String, usize>,
    /// Per route: ready jobs. Cancelled jobs' slots are dropped lazily.
    ready: HashMap<String, BinaryHeap<Ready>>,
    /// Jobs in backoff, by when they are due.
    waiting: BTreeMap<(Instant, u64), String>,
    /// Per route: jobs running.
    running: HashMap<String, u32>,
    /// When recent jobs ended (within [`DRAIN_WINDOW`]).
    finished: VecDeque<Instant>,
    /// Callbacks to deliver, by when they are due.
    pub callbacks: BTreeMap<(Instant, u64), String>,
}

/// What a free worker should do.
pub enum Pick {
    /// Run this job (id, route); it is now `Running`.
    Run(String, String),
    /// Nothing runnable; wake by this time at the latest (a retry falls due).
    Wait(Option<Instant>),
}

impl Schedule {
    /// Jobs queued or running, with reservations: what the bound counts.
    pub fn depth(&self) -> usize {
        self.entries.len() + self.reserved
    }

    /// `owner`'s jobs queued or running, with its reservations: what its per-key bound counts.
    pub fn depth_of(&self, owner: &str) -> usize {
        self.owners.get(owner).copied().unwrap_or(0)
    }

    /// Counts a submission of `owner` admitted but not yet stored.
    pub fn reserve(&mut self, owner: &str) {
        self.reserved += 1;
        *self.owners.entry(owner.to_string()).or_default() += 1;
    }

    /// Ends a reservation of `owner` (the job was added, or not stored).
    pub fn unreserve(&mut self, owner: &str) {
        self.reserved = self.reserved.saturating_sub(1);
        self.forget(owner);
    }

    /// One job fewer for `owner`.
    fn forget(&mut self, owner: &str) {
        if let Some(count) = self.owners.get_mut(owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.owners.remove(owner);
            }
        }
    }

    /// Takes job `id` out of the entries (its owner's count with it).
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.forget(&entry.owner);
        Some(entry)
    }

    /// Adds a job that is ready now, or `due` later.
    pub fn add(&mut self, id: String, mut entry: Entry, due: Option<Instant>) {
        match due {
            Some(due) if due > Instant::now() => {
                entry.phase = Phase::Waiting;
                self.waiting.insert((due, entry.seq), id.clone());
            }
            _ => {
                entry.phase = Phase::Ready;
                self.push_ready(&id, &entry);
            }
        }
        *self.owners.entry(entry.owner.clone()).or_default() += 1;
        if let Some(replaced) = self.entries.insert(id, entry) {
            self.forget(&replaced.owner);
        }
    }

    fn push_ready(&mut self, id: &str, entry: &Entry) {
        self.ready
            .entry(entry.route.clone())
            .or_default()
            .push(Ready {
                priority: entry.priority,
                order: Reverse(entry.seq),
                id: id.to_string(),
            });
    }

    /// Whether the heap slot still stands for a ready job.
    fn live(&self, slot: &Ready) -> bool {
        self.entries
            .get(&slot.id)
            .is_some_and(|e| e.phase == Phase::Ready && e.seq == slot.order.0)
    }

    /// The best ready job whose route has room under `limit(route)`, marked running.
    pub fn pick(&mut self, now: Instant, limit: impl Fn(&str) -> u32) -> Pick {
        // Retries whose backoff has passed join their heaps.
        while let Some(entry) = self.waiting.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            if let Some(job) = self.entries.get_mut(&id)
                && job.phase == Phase::Waiting
            {
                job.phase = Phase::Ready;
                let job = job.clone();
                self.push_ready(&id, &job);
            }
        }
        let mut best: Option<(String, u8, u64)> = None;
        let routes: Vec<String> = self.ready.keys().cloned().collect();
        for route in routes {
            if self.running.get(&route).copied().unwrap_or(0) >= limit(&route) {
                continue;
            }
            // Drop slots of jobs cancelled since they were pushed.
            while let Some(top) = self.ready.get(&route).and_then(BinaryHeap::peek) {
                if self.live(top) {
                    break;
                }
                if let Some(heap) = self.ready.get_mut(&route) {
                    heap.pop();
                }
            }
            if let Some(top) = self.ready.get(&route).and_then(BinaryHeap::peek) {
                let better = best.as_ref().is_none_or(|(_, p, s)| {
                    (top.priority, Reverse(top.order.0)) > (*p, Reverse(*s))
                });
                if better {
                    best = Some((route, top.priority, top.order.0));
                }
            }
        }
        let Some((route, _, _)) = best else {
            return Pick::Wait(self.waiting.first_key_value().map(|(k, _)| k.0));
        };
        let Some(slot) = self.ready.get_mut(&route).and_then(BinaryHeap::pop) else {
            return Pick::Wait(None);
        };
        if let Some(entry) = self.entries.get_mut(&slot.id) {
            entry.phase = Phase::Running;
        }
        *self.running.entry(route.clone()).or_default() += 1;
        Pick::Run(slot.id, route)
    }

    /// A running job's attempt ended: it ended for good (`None`), or retries at `due`.
    pub fn finish(&mut self, id: &str, route: &str, retry_at: Option<Instant>, now: Instant) {
        if let Some(running) = self.running.get_mut(route) {
            *running = running.saturating_sub(1);
        }
        match retry_at {
            Some(due) => {
                if let Some(entry) = self.remove(id) {
                    self.add(id.to_string(), entry, Some(due));
                }
            }
            None => {
                self.remove(id);
                self.finished.push_back(now);
            }
        }
    }

    /// Takes a queued (not running) job out; false when it is running or unknown.
    pub fn cancel(&mut self, id: &str) -> bool {
        match self.entries.get(id) {
            Some(entry) if entry.phase != Phase::Running => {
                self.remove(id);
                true
            }
            _ => false,
        }
    }

    /// (queued, waiting in backoff, running) right now.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for entry in self.entries.values() {
            match entry.phase {
                Phase::Ready => counts.0 += 1,
                Phase::Waiting => counts.1 += 1,
                Phase::Running => counts.2 += 1,
            }
        }
        counts
    }

    /// When the oldest job not running was accepted (Unix ms).
    pub fn oldest_queued_ms(&self) -> Option<u64> {
        self.entries
            .values()
            .filter(|e| e.phase != Phase::Running)
            .map(|e| e.created_ms)
            .min()
    }

    /// Jobs that ended within [`DRAIN_WINDOW`] before `now`, and the span they cover: the
    /// window, or the time since `since` (the start) when that is shorter.
    pub fn drained(&mut self, now: Instant, since: Instant) -> (usize, Duration) {
        while self
            .finished
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > DRAIN_WINDOW)
        {
            self.finished.pop_front();
        }
        let span = now.saturating_duration_since(since).min(DRAIN_WINDOW);
        (self.finished.len(), span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(route: &str, priority: u8, seq: u64) -> Entry {
        Entry {
            route: route.into(),
            owner: format!("key-{}", seq % 2),
            priority,
            seq,
            created_ms: seq,
            phase: Phase::Ready,
        }
    }

    fn run(pick: Pick) -> String {
        match pick {
            Pick::Run(id, _) => id,
            Pick::Wait(_) => panic!("nothing picked"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn higher_priority_first_then_submission_order_within_route_limits() {
        let mut s = Schedule::default();
        let now = Instant::now();
        s.add("a".into(), entry("bulk", 5, 1), None);
        s.add("b".into(), entry("bulk", 9, 2), None);
        s.add("c".into(), entry("bulk", 5, 3), None);
        s.add("d".into(), entry("chat", 1, 4), None);
        let limit = |route: &str| if route == "bulk" { 2 } else { 1 };
        assert_eq!(run(s.pick(now, limit)), "b");
        assert_eq!(run(s.pick(now, limit)), "a");
        // bulk is at its limit of 2: the lower-priority chat job goes next.
        assert_eq!(run(s.pick(now, limit)), "d");
        assert!(matches!(s.pick(now, limit), Pick::Wait(None)));
        s.finish("a", "bulk", None, now);
        assert_eq!(run(s.pick(now, limit)), "c");
        assert_eq!(s.counts(), (0, 0, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn each_owner_counts_its_reservations_and_jobs_until_they_end() {
        let mut s = Schedule::default();
        let now = Instant::now();
        s.reserve("key-1");
        assert_eq!((s.depth_of("key-1"), s.depth()), (1, 1));
        s.add("a".into(), entry("r", 5, 1), None);
        s.unreserve("key-1");
        s.add("b".into(), entry("r", 5, 3), None);
        s.add("c".into(), entry("r", 5, 2), None);
        assert_eq!((s.depth_of("key-1"), s.depth_of("key-0")), (2, 1));
        // A retry in backoff still counts; an ended or cancelled job does not.
        assert!(s.cancel("a"));
        assert_eq!(s.depth_of("key-1"), 1);
        assert_eq!(run(s.pick(now, |_| 10)), "c");
        s.finish("c", "r", Some(now + Duration::from_secs(1)), now);
        assert_eq!(s.depth_of("key-0"), 1);
        assert_eq!(run(s.pick(now, |_| 10)), "b");
        s.finish("b", "r", None, now);
        assert_eq!(
            (s.depth_of("key-1"), s.depth_of("key-0"), s.depth()),
            (0, 1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_job_is_never_picked_and_a_retry_waits_for_its_time() {
        let mut s = Schedule::default();
        let now = Instant::now();
        s.add("a".into(), entry("r", 5, 1), None);
        s.add("b".into(), entry("r", 5, 2), None);
        assert!(s.cancel("a"));
        assert_eq!(run(s.pick(now, |_| 10)), "b");
        assert!(!s.cancel("b"), "a running job cannot be cancelled");
        let due = now + Duration::from_secs(3);
        s.finish("b", "r", Some(due), now);
        assert!(matches!(s.pick(now, |_| 10), Pick::Wait(Some(t)) if t == due));
        assert_eq!(run(s.pick(due, |_| 10)), "b");
    }
}
