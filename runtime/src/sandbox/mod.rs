//! The sandbox: the process's wasmtime [`Engine`](wasmtime::Engine)s and the `Store` every stage call runs in.
//!
//! Owns: the engines, one per [`Lane`] (large stages, and small ones where the kernel resets
//! only dirtied pages, map copy-on-write memory images; other small stages copy their data at
//! instantiation; each lane a pooling allocator sized from config, fuel metering, epoch
//! interruption), the epoch ticker thread (asleep while no store exists: `ticker.rs`), the
//! on-disk cache of precompiled stages ([`ArtifactCache`], signed with an [`ArtifactKey`]
//! kept outside the data directory), the
//! per-call [`StageState`] with its memory limiter and captured output, and the one way to
//! build and arm a `Store` ([`Sandbox::new_store`], [`arm`]), and the [`Reaper`] that drops
//! finished stores (inline on the request's thread in production, as measured; see its docs).
//! Must not know about pipelines, HTTP or stage semantics: it runs whatever it is handed,
//! within bounds.
//!
//! Secure defaults, all enforced here: no WASI preopens, env, args, sockets or name lookup;
//! stdin closed; stdout/stderr captured (bounded) into the host log; random bytes bounded per
//! call; linear memory capped per instance (all its memories together, in either allocator)
//! and the counts of its instances, memories and tables capped; fuel per call; a wall-clock deadline per call enforced by epochs for guest code
//! (the guest yields to tokio each tick, so a looping stage never pins a worker thread).

mod artifact_key;
mod artifacts;
mod engine;
mod limiter;
mod output;
mod reaper;
mod state;
mod ticker;

pub use artifact_key::{ArtifactKey, KeyError, resolve as resolve_artifact_key};
pub use artifacts::{ArtifactCache, MAX_ARTIFACT_BYTES, Origin};
pub use engine::{Lane, PoolUsage, Sandbox, SandboxError};
pub use limiter::{CallLimiter, ComponentCounts};
pub use output::CapturedOutput;
pub use reaper::Reaper;
pub use state::{
    CONFIG_KEY_MAX_BYTES, CONFIG_KEYS_MAX, DeclaredKeys, HTTP_FIELDS_MAX_BYTES, RANDOM_MAX_BYTES,
    RESOURCES_MAX, RetryAsk, StageState, arm,
};
