//! The long load and chaos tests: thousands of requests, fault storms, `kill -9`s, floods of
//! hostile connections. Each is a test of its concern (the router, reload, jobs, the
//! listener) that is heavy enough to slow every test running beside it, and to be slowed by
//! them. `tests/run` runs the rest of the suite in parallel with `--skip stress::`, then these
//! one at a time (`stress:: --test-threads=1`); a plain `cargo test` runs them with the rest.
//!
//! A test belongs here when it sends hundreds of requests or more, injects faults in bulk, or
//! runs for many seconds by design; its helpers stay in its concern's module.

mod fleet;
mod guests;
mod in_flight;
mod jobs;
mod listener;
mod reload;
mod routing;
mod services;
