//! Building the process-wide [`Engine`] and its epoch ticker.
//!
//! The pooling allocator pre-reserves address space for `pool_size` instances so that a
//! per-request instantiation costs microseconds; when that reservation fails (a host with a
//! small `ulimit -v`, say) `Allocator::Auto` falls back to on-demand allocation with a warning.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limiter::{CORE_INSTANCES_PER_COMPONENT, MEMORIES_PER_COMPONENT, TABLES_PER_COMPONENT};
use super::{ArtifactCache, ArtifactKey, StageState};
use crate::config::{Allocator, SandboxSettings};
use crate::wit::StageBindings;

/// Bytes at the start of each memory that are zeroed rather than decommitted when an instance
/// is torn down. Stages built in this workspace have a 64 KiB stack at the bottom of memory
/// with data and heap right above it (`.cargo/config.toml`), so the pages a request touches
/// fall in this range: zeroing 256 KiB is cheaper than a dozen page faults on the next
/// request (measured: 35 faults per 3-stage request down to 0.1; stage_call median
/// 17.6 -> 11.8 µs). A guest with Rust's default 1 MiB stack still works, with the faults.
const MEMORY_KEEP_RESIDENT: usize = 256 << 10;
/// Bytes of each async (fiber) stack kept mapped between calls.
const STACK_KEEP_RESIDENT: usize = 128 << 10;
/// Deallocations whose decommits are batched into one pass.
const DECOMMIT_BATCH: usize = 32;
/// Bytes of each table kept mapped between instances.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Why the sandbox could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The pooling allocator was required but its address space could not be reserved.
    #[error(
        "cannot reserve the instance pool ({pool_size} instances, {memory_mib} MiB each): {source}"
    )]
    Pool {
        /// Configured pool size.
        pool_size: u32,
        /// Configured largest memory cap, MiB.
        memory_mib: u64,
        /// wasmtime's reason.
        source: wasmtime::Error,
    },
    /// The engine could not be built at all.
    #[error("cannot build the wasm engine: {0}")]
    Engine(wasmtime::Error),
    /// The epoch ticker thread could not be started.
    #[error("cannot start the epoch ticker thread: {0}")]
    Ticker(std::io::Error),
    /// The linker could not be set up (a host bug).
    #[error("cannot link the host API: {0}")]
    Link(wasmtime::Error),
}

/// The process-wide wasm engine, its linker and epoch ticker.
pub struct Sandbox {
    /// The engine every stage is compiled for.
    engine: Engine,
    /// WASI + the `weir:stage/host` imports, built once.
    linker: Linker<StageState>,
    /// The validated settings the engine was built from.
    settings: SandboxSettings,
    /// Whether the pooling allocator is in use (false after a fallback).
    pooling: bool,
    /// Set on drop to stop the ticker.
    stop: Arc<AtomicBool>,
    /// The epoch ticker thread.
    ticker: Option<JoinHandle<()>>,
    /// Where compiled stages are kept across restarts; unset means compile on every load.
    artifacts: OnceLock<ArtifactCache>,
}

impl Sandbox {
    /// Builds the engine, the linker and starts the epoch ticker.
    pub fn new(settings: SandboxSettings) -> Result<Sandbox, SandboxError> {
        let (engine, pooling) = match settings.allocator {
            Allocator::OnDemand => (build(&settings, false)?, false),
            Allocator::Pooling => (build(&settings, true)?, true),
            Allocator::Auto => match build(&settings, true) {
                Ok(engine) => (engine, true),
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        "pooling allocator unavailable; falling back to on-demand allocation \
                         (instantiation is 2-3x slower)"
                    );
                    (build(&settings, false)?, false)
                }
            },
        };

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(SandboxError::Link)?;
        // `wasi:http/outgoing-handler` reaches the stage's granted services only
        // (`service::ServiceHooks`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(SandboxError::Link)?;
        StageBindings::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(SandboxError::Link)?;
        // `log` and `count-tokens` read the guest's string in place rather than copied.
        crate::host_api::define_in_place(&mut linker).map_err(SandboxError::Link)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = spawn_ticker(engine.weak(), settings.epoch_tick, stop.clone())
            .map_err(SandboxError::Ticker)?;
        Ok(Sandbox {
            engine,
            linker,
            settings,
            pooling,
            stop,
            ticker: Some(ticker),
            artifacts: OnceLock::new(),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker with WASI and the host API.
    pub fn linker(&self) -> &Linker<StageState> {
        &self.linker
    }

    /// The settings the sandbox was built from.
    pub fn settings(&self) -> &SandboxSettings {
        &self.settings
    }

    /// True when the pooling allocator is in use.
    pub fn is_pooling(&self) -> bool {
        self.pooling
    }

    /// Keeps compiled stages in `dir` (created 0700 if missing), signed with `key`, so later
    /// loads of the same stage version with this engine configuration, in this process or the
    /// next one holding the same key, skip compiling. Takes `&self` so it can be called on the
    /// shared sandbox before stages are loaded; it can be set once: a second call with another
    /// directory is an `AlreadyExists` error. A directory weir cannot trust (see
    /// [`ArtifactCache::open`]) is a `PermissionDenied` error.
    pub fn set_artifact_dir(&self, dir: &Path, key: ArtifactKey) -> io::Result<()> {
        if let Some(set) = self.artifacts.get() {
            return already_set(set, dir);
        }
        let cache = ArtifactCache::open(dir, key)?;
        already_set(self.artifacts.get_or_init(|| cache), dir)
    }

    /// The precompiled-artifact cache, when [`Sandbox::set_artifact_dir`] enabled one.
    pub fn artifacts(&self) -> Option<&ArtifactCache> {
        self.artifacts.get()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            ticker.thread().unpark();
            let _ = ticker.join();
        }
    }
}

fn build(settings: &SandboxSettings, pooling: bool) -> Result<Engine, SandboxError> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(settings.fuel_metering)
        .epoch_interruption(true)
        .parallel_compilation(true)
        // Copying a stage's small data segments at instantiation is cheaper than mapping a
        // copy-on-write image and unmapping it again (stage_call: 20.3 -> 17.6 µs median).
        .memory_init_cow(false);
    if pooling {
        let n = settings.pool_size;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .total_memories(n.saturating_mul(2))
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_memories_per_module(1)
            .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .total_stacks(n)
            .max_memory_size(settings.max_memory_bytes as usize)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .async_stack_keep_resident(STACK_KEEP_RESIDENT)
            .decommit_batch_size(DECOMMIT_BATCH);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        Engine::new(&config).map_err(|source| SandboxError::Pool {
            pool_size: n,
            memory_mib: settings.max_memory_bytes >> 20,
            source,
        })
    } else {
        config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        Engine::new(&config).map_err(SandboxError::Engine)
    }
}

/// `Ok` when the cache that is set lives in `dir`, else `AlreadyExists`.
fn already_set(set: &ArtifactCache, dir: &Path) -> io::Result<()> {
    if set.dir() == dir {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("the artifact directory is already {}", set.dir().display()),
    ))
}

/// One thread for the whole process: bumps the epoch every tick until the sandbox drops.
fn spawn_ticker(
    engine: wasmtime::EngineWeak,
    tick: std::time::Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("weir-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(tick);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
}
