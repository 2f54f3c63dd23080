//! A fleet of real processes: a `redis-server` on a free loopback port (no persistence),
//! three `weir serve` nodes with their own data dirs and ports on it, and `weir sim`
//! upstreams. Nothing is skipped: if Redis cannot start, the test fails saying why.
//!
//! - `harness`: [`RedisServer`] and [`Fleet`].
//! - `connect`: start-up against a Redis with a password (right, wrong, missing) and one that
//!   is not there yet; `/admin/state`.
//! - `limits`: a target's and a key's RPM shared by the fleet (acceptance (b)), the sim's
//!   `rpm_limit` as the provider's witness, and the fallback while Redis is away.
//! - `budget`: acceptance (a), one key's budget shared by three nodes (strict and lease);
//!   the expiry of an unsettled reservation.
//! - `cache`: acceptance (c), the response cache shared by three nodes: hits across nodes,
//!   one upstream call for identical concurrent misses, a stopped Redis and a corrupted entry
//!   are misses.
//! - `jobs`: 300 jobs over three nodes through two SIGKILLs of one (acceptance (d)), a long
//!   job not stolen from its live node, 503 `state_unavailable` while Redis is away.

pub mod harness;

mod budget;
mod cache;
mod connect;
mod jobs;
mod limits;
