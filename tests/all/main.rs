//! weir's black-box and host-level integration tests, in one binary (one link).
//!
//! - `sandbox`: limits and isolation of a single stage (fuel, deadline, memory, traps, WASI).
//! - `guest_bounds`: every guest bounded, through the real binary: stage output size, count-tokens
//!   and WASI random, the per-instance memory cap in both allocators, guest log lines, what
//!   `weir check` prints.
//! - `pipeline`: onion order, short-circuits, rejections and the error policy.
//! - `plugins`: the first-party stages through the real host.
//! - `server`: `weir serve` as a process against `weir sim` processes.
//! - `sim`: the provider simulator.
//! - `routing`: the router against faulty `weir sim` upstreams (chaos).
//! - `cache`: the response cache through the real binary.
//! - `check`: the `weir check` command on good and bad files.
//! - `console`: the operator's console in headless Chromium against a real weir and sim.
//! - `reload`: hot reload of plugin files and config.
//! - `cost`: budgets, spend, keys and limits through the real binary.
//! - `billing`: every started call paid for (clients that leave, deadline cuts, `n`,
//!   `stream_options: null`), and the ledger against what `weir sim` billed.
//! - `calls`: the limits on LLM calls per request and per stage (the loop guard), metered
//!   `embed()` and semantic probes, `describe()` refused the LLM.
//! - `cost_cli`: `weir cost project` and `weir key` on generated files.
//! - `jobs`: background jobs through the real binary: crashes, backpressure, retries,
//!   idempotency, cancel and signed callbacks.
//! - `files`: the files weir keeps: signed artifacts (a swapped one is recompiled), private
//!   modes under `data_dir`, orphaned temporary files swept at start.
//! - `callbacks`: where job callbacks may go (never weir's own listeners, private addresses
//!   only when opted in, checked after DNS), generic delivery errors, timestamped signatures.
//! - `listener`: the public and admin listeners under hostile clients: header, body, idle
//!   and write timeouts, the connection cap, auth before the body, the admin `Host` check.
//! - `upstream`: broken or hostile upstreams: stalled and oversized streams, client deadlines
//!   and breakers, absurd usage, statuses that must not be relayed, stalled error bodies, and
//!   live streams against `max_concurrency`.
//! - `bounds`: memory a client, a stage or an upstream could grow (the stage output cache,
//!   the recent-requests ring, metric series) stays bounded; same-named stages of two routes
//!   have separate caches.
//! - `fleet`: three nodes on one real `redis-server`: shared budgets, rate limits, cache and
//!   jobs, Redis killed and paused, start-up with wrong credentials.
//! - `loadtest`: `weir loadtest` scenarios through the real binary: reports against the sims'
//!   counts, failing gates, open against closed loop, the HTML report in headless Chromium.
//! - `stress`: the long load and chaos tests, run after the rest one at a time by `tests/run`.
//! - `wait`: waiting for an event (poll the condition, generous bound) instead of sleeping.

#![allow(missing_docs, clippy::unwrap_used)]

mod billing;
mod bounds;
mod browser;
mod cache;
mod callbacks;
mod calls;
mod check;
mod console;
mod contract;
mod cost;
mod cost_cli;
mod examples;
mod files;
mod fleet;
mod guest_bounds;
mod jobs;
mod listener;
mod loadtest;
mod oci;
mod pipeline;
mod plugins;
mod polyglot;
mod procs;
mod providers;
mod reload;
mod routing;
mod sandbox;
mod sdk;
mod server;
mod services;
mod sim;
mod stress;
mod support;
mod telemetry;
mod upstream;
mod wait;
