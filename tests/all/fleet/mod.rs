//! A fleet of real processes: a `redis-server` on a free loopback port (no persistence),
//! three `weir serve` nodes with their own data dirs and ports on it, and `weir sim`
//! upstreams. Nothing is skipped: if Redis cannot start, the test fails saying why.
//!
//! - `harness`: [`RedisServer`] and [`Fleet`].
//! - `connect`: start-up against a Redis with a password (right, wrong, missing) and one that
//!   is not there yet; `/admin/state`.
//! - `jobs`: 300 jobs over three nodes through two SIGKILLs of one (acceptance (d)), a long
//!   job not stolen from its live node, 503 `state_unavailable` while Redis is away.

pub mod harness;

mod connect;
mod jobs;
