//! Building the process's two [`Engine`]s (lanes) and their epoch ticker.
//!
//! The pooling allocator pre-reserves address space for `pool_size` instances so that a
//! per-request instantiation costs microseconds; when that reservation fails (a host with a
//! small `ulimit -v`, say) `Allocator::Auto` falls back to on-demand allocation with a warning.
//!
//! Stages run in one of two lanes, each an engine with its own pool. The *large* lane, for
//! stage files of at least `large_stage_mib`, maps each memory copy-on-write from an image
//! built when the stage loads: a Python or JavaScript stage carries a pre-initialised heap of
//! megabytes that copying would pay for on every request, and each slot keeps up to 2 MiB of
//! it resident. The *small* lane keeps 256 KiB per slot, and maps images too where the kernel
//! lets the pool reset only dirtied pages; elsewhere it copies a stage's data segments in at
//! each instantiation (`copy_on_write`). The large lane is built when the first large stage
//! loads, so a host without one reserves nothing.

use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limiter::ComponentCounts;
use super::ticker::{Live, Ticker};
use super::{ArtifactCache, ArtifactKey, StageState};
use crate::config::{Allocator, SandboxSettings};
use crate::wit::StageBindings;

/// Bytes of each memory that are reset in place rather than decommitted when an instance is
/// torn down. Stages built in this workspace have a 64 KiB stack at the bottom of memory
/// with data and heap right above it (`.cargo/config.toml`), so the pages a request touches
/// fall in this range: resetting 256 KiB is cheaper than a dozen page faults on the next
/// request (measured: 35 faults per 3-stage request down to 0.1; stage_call median
/// 17.6 -> 11.8 µs). A guest with Rust's default 1 MiB stack still works, with the faults.
///
/// Where the kernel has the `PAGEMAP_SCAN` ioctl (Linux 6.7+, `pagemap_scan` below), this is
/// a budget rather than a prefix: the pages the instance dirtied anywhere in its memory are
/// found by one ioctl and reset in place (zeroed, or copied back from the stage's image), up to
/// this many bytes, and only what is past it is decommitted. A request that dirtied 40 KiB
/// then costs a 40 KiB reset instead of a 256 KiB memset, and a copy-on-write (large-lane)
/// stage keeps its dirtied image pages instead of faulting them in again next time (measured
/// with `bench/stages.sh`: a QuickJS stage 0.585 -> 0.293 ms per request; stage_call median
/// 17.4-17.9 -> 15.5-16.6 µs). `guest_bounds::an_instance_never_sees_what_an_earlier_one_wrote`
/// checks that a slot reads zero again both ways.
const MEMORY_KEEP_RESIDENT: usize = 256 << 10;
/// The same for the large lane, whose Python and JavaScript stages dirty megabytes of their
/// image per request. With `PAGEMAP_SCAN`, those pages are copied back from the image instead
/// of decommitted and faulted in again (`bench/stages.sh`, copy-on-write lane, per request:
/// StarlingMonkey 1.58 -> 1.29 ms, Python 2.59 -> 2.35 ms; 4 MiB measured no better). The
/// price is memory a pool slot keeps after its instance is gone: at most this much per slot
/// ever used at once, so a burst of N concurrent large-stage requests leaves N x 2 MiB
/// resident afterwards (its instances held far more while they ran). Only with the ioctl.
const LARGE_MEMORY_KEEP_RESIDENT: usize = 2 << 20;
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

/// One engine, the linker built for it, and how its instances get memory.
#[derive(Clone)]
pub struct Lane {
    /// The engine stages of this lane are compiled for and run in.
    engine: Engine,
    /// WASI + `wasi:http` + the `weir:stage/host` imports, built once per engine.
    linker: Arc<Linker<StageState>>,
    /// Whether the pooling allocator is in use (false after a fallback).
    pooling: bool,
    /// Whether this is the large lane.
    large: bool,
    /// Whether memories are mapped copy-on-write from an image (see [`copy_on_write`]).
    images: bool,
}

impl Lane {
    /// Builds the engine (pooling per `settings.allocator`, falling back as documented) and
    /// its linker, for the large lane or the small one.
    fn new(settings: &SandboxSettings, large: bool) -> Result<Lane, SandboxError> {
        let (engine, pooling) = match settings.allocator {
            Allocator::OnDemand => (build(settings, false, large)?, false),
            Allocator::Pooling => (build(settings, true, large)?, true),
            Allocator::Auto => match build(settings, true, large) {
                Ok(engine) => (engine, true),
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        large_stages = large,
                        "pooling allocator unavailable; falling back to on-demand allocation \
                         (instantiation is 2-3x slower)"
                    );
                    (build(settings, false, large)?, false)
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
        // `log` and `count-tokens` read the guest's string in place rather than copied; 0.2's
        // `services.call` checks its batch's length before lifting it.
        crate::host_api::define_in_place(&mut linker).map_err(SandboxError::Link)?;
        Ok(Lane {
            engine,
            linker: Arc::new(linker),
            pooling,
            large,
            images: copy_on_write(large, pooling),
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

    /// True when the pooling allocator is in use.
    pub fn is_pooling(&self) -> bool {
        self.pooling
    }

    /// True for the large lane (stage files of at least `large_stage_mib`).
    pub fn is_large(&self) -> bool {
        self.large
    }

    /// True when memories are mapped copy-on-write from an image built when a stage loads:
    /// always in the large lane, in the small one where the kernel has `PAGEMAP_SCAN`.
    pub fn has_images(&self) -> bool {
        self.images
    }

    /// Stage instances alive in this lane's pool (0 without pooling).
    fn instances(&self) -> u64 {
        self.engine
            .pooling_allocator_metrics()
            .map_or(0, |m| m.component_instances())
    }

    /// What `/metrics` reports of this lane's pool.
    fn usage(&self, lane: &'static str) -> PoolUsage {
        PoolUsage {
            lane,
            instances: self.instances(),
        }
    }
}

/// One lane's pool, as `/metrics` reports it (`weir_sandbox_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    /// `small` or `large`.
    pub lane: &'static str,
    /// Stage instances alive.
    pub instances: u64,
}

/// The process-wide wasm engines (lanes), their linkers and epoch ticker.
pub struct Sandbox {
    /// The lane of stages under `large_stage_mib`.
    small: Lane,
    /// The lane of larger stages, built when the first one loads.
    large: Arc<OnceLock<Lane>>,
    /// Serialises building the large lane (two large stages loading at once build it once).
    large_init: std::sync::Mutex<()>,
    /// The validated settings the engines were built from.
    settings: SandboxSettings,
    /// The epoch ticker's shared state (stores alive, parked, stop).
    ticker: Arc<Ticker>,
    /// The epoch ticker thread.
    ticker_thread: Option<JoinHandle<()>>,
    /// Where compiled stages are kept across restarts; unset means compile on every load.
    artifacts: OnceLock<ArtifactCache>,
}

impl Sandbox {
    /// Builds the small lane and starts the epoch ticker.
    pub fn new(settings: SandboxSettings) -> Result<Sandbox, SandboxError> {
        let small = Lane::new(&settings, false)?;
        let large: Arc<OnceLock<Lane>> = Arc::default();
        let (ticker, ticker_thread) =
            Ticker::spawn(small.engine.weak(), large.clone(), settings.epoch_tick)
                .map_err(SandboxError::Ticker)?;
        Ok(Sandbox {
            small,
            large,
            large_init: std::sync::Mutex::new(()),
            settings,
            ticker,
            ticker_thread: Some(ticker_thread),
            artifacts: OnceLock::new(),
        })
    }

    /// The small lane's engine (every stage under `large_stage_mib`).
    pub fn engine(&self) -> &Engine {
        &self.small.engine
    }

    /// The small lane's linker.
    pub fn linker(&self) -> &Linker<StageState> {
        &self.small.linker
    }

    /// The lane a stage file of `len` bytes runs in: the large lane (built now if this is the
    /// first large stage) from `large_stage_mib` up, else the small one.
    pub fn lane_for(&self, len: usize) -> Result<&Lane, SandboxError> {
        let threshold = u64::from(self.settings.large_stage_mib) << 20;
        if (len as u64) < threshold {
            return Ok(&self.small);
        }
        if let Some(lane) = self.large.get() {
            return Ok(lane);
        }
        let _building = crate::sync::lock(&self.large_init);
        if let Some(lane) = self.large.get() {
            return Ok(lane);
        }
        let lane = Lane::new(&self.settings, true)?;
        Ok(self.large.get_or_init(|| lane))
    }

    /// The settings the sandbox was built from.
    pub fn settings(&self) -> &SandboxSettings {
        &self.settings
    }

    /// True when the small lane uses the pooling allocator.
    pub fn is_pooling(&self) -> bool {
        self.small.pooling
    }

    /// Each built lane's pool: the small lane always, the large one once a large stage loaded.
    pub fn pool_usage(&self) -> Vec<PoolUsage> {
        let mut usage = vec![self.small.usage("small")];
        usage.extend(self.large.get().map(|lane| lane.usage("large")));
        usage
    }

    /// Stage instances alive in both lanes' pools.
    pub fn live_instances(&self) -> u64 {
        self.small.instances() + self.large.get().map_or(0, Lane::instances)
    }

    /// True while fewer than an eighth of `pool_size` instances are alive: a 0.2 stage may then
    /// keep its instance for its next phase (saving an instantiation, about half of what a
    /// both-phase Rust stage costs per request). Past it, every instance goes back as soon as
    /// its phase has run, so requests waiting on a model never hold the pool. Never under the
    /// on-demand allocator, which counts no instances: there every instance goes back at once.
    pub fn has_headroom(&self) -> bool {
        self.small.pooling
            && self.live_instances().saturating_mul(8) < u64::from(self.settings.pool_size)
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
        let cache =
            ArtifactCache::open(dir, key)?.with_max_bytes(self.settings.artifact_cache_max_bytes);
        already_set(self.artifacts.get_or_init(|| cache), dir)
    }

    /// Counts a new store as alive for the epoch ticker, waking it if it sleeps (see
    /// [`super::ticker`]); the guard goes in the store's data.
    pub(crate) fn enter_ticker(&self) -> Live {
        self.ticker.enter()
    }

    /// True while the epoch ticker sleeps because no store is alive.
    pub fn ticker_parked(&self) -> bool {
        self.ticker.is_parked()
    }

    /// The precompiled-artifact cache, when [`Sandbox::set_artifact_dir`] enabled one.
    pub fn artifacts(&self) -> Option<&ArtifactCache> {
        self.artifacts.get()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker.stop();
        if let Some(thread) = self.ticker_thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether a lane maps memories copy-on-write from an image rather than copying the data
/// segments in at each instantiation.
///
/// The large lane always does: a Python or JavaScript stage's pre-initialised heap is
/// megabytes. The small lane does where the pool resets only the pages an instance dirtied
/// (`PAGEMAP_SCAN`, see [`MEMORY_KEEP_RESIDENT`]): a slot then keeps its stage's image mapped
/// from one instance to the next, so an instantiation copies nothing and a teardown restores
/// only the image pages the request wrote, where copying put every data page (60 KiB for
/// prompt-guard, 40 KiB for pii-redact) in the dirty set to be written twice. Measured with
/// the 3 stages on distinct requests (`bench/distinct.lua`, c=64): 260-265 -> 242-243 µs of
/// CPU per request, 5,637-5,811 -> 6,208-6,230 req/s. Without the ioctl every teardown resets
/// the whole kept prefix whatever was touched, and copying measured cheaper (stage_call median
/// 20.3 -> 17.6 µs), as it is without the pooling allocator (a fresh mapping per instance).
fn copy_on_write(large: bool, pooling: bool) -> bool {
    large || (pooling && PoolingAllocationConfig::is_pagemap_scan_available())
}

fn build(settings: &SandboxSettings, pooling: bool, large: bool) -> Result<Engine, SandboxError> {
    let images = copy_on_write(large, pooling);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(settings.fuel_metering)
        .epoch_interruption(true)
        .parallel_compilation(true)
        .memory_init_cow(images);
    // Profiling: wasmtime writes /tmp/perf-PID.map, so `perf` names each stage's compiled
    // functions (`bench/profile.sh` sets it). Off by default: the map grows with every load.
    if std::env::var_os("WEIR_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if pooling {
        let n = settings.pool_size;
        let counts = ComponentCounts::of(settings);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(counts.instances))
            .max_core_instances_per_component(counts.instances)
            .total_memories(n.saturating_mul(2))
            .max_memories_per_component(counts.memories)
            .max_memories_per_module(1)
            .total_tables(n.saturating_mul(counts.tables))
            .max_tables_per_component(counts.tables)
            .total_stacks(n)
            .max_memory_size(settings.max_memory_bytes as usize)
            .linear_memory_keep_resident(
                // Without the ioctl the budget is a prefix reset on every teardown, whatever the
                // request touched: 2 MiB of that was not measured, so the lane keeps 256 KiB.
                if large && PoolingAllocationConfig::is_pagemap_scan_available() {
                    LARGE_MEMORY_KEEP_RESIDENT
                } else {
                    MEMORY_KEEP_RESIDENT
                },
            )
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .async_stack_keep_resident(STACK_KEEP_RESIDENT)
            .decommit_batch_size(DECOMMIT_BATCH)
            // Reset only the pages an instance dirtied (see MEMORY_KEEP_RESIDENT); `Auto`
            // falls back to the plain reset where the ioctl is missing.
            .pagemap_scan(Enabled::Auto);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Allocator;

    #[test]
    fn headroom_needs_a_pool() {
        let pooled = Sandbox::new(SandboxSettings {
            pool_size: 4,
            allocator: Allocator::Pooling,
            ..SandboxSettings::default()
        })
        .unwrap();
        assert!(pooled.has_headroom(), "no instance alive in a pool of 4");
        let on_demand = Sandbox::new(SandboxSettings {
            allocator: Allocator::OnDemand,
            ..SandboxSettings::default()
        })
        .unwrap();
        assert!(!on_demand.has_headroom(), "on-demand counts no instances");
    }
}
