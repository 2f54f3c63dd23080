//! A fleet of real processes: a `redis-server` on a free loopback port (no persistence),
//! three `weir serve` nodes with their own data dirs and ports on it, and `weir sim`
//! upstreams. Nothing is skipped: if Redis cannot start, the test fails saying why.
//!
//! - `harness`: [`RedisServer`] and [`Fleet`].
//! - `connect`: start-up against a Redis with a password (right, wrong, missing) and one that
//!   is not there yet; `/admin/state`.
//! - `cache`: acceptance (c), the response cache shared by three nodes: hits across nodes,
//!   one upstream call for identical concurrent misses, a stopped Redis and a corrupted entry
//!   are misses.

pub mod harness;

mod cache;
mod connect;
