//! Validated sandbox settings: the bounds every stage call runs under.
//!
//! Each bound is named, documented with its unit and default, and checked once when the
//! config is loaded; the sandbox only ever sees these validated values.

use std::time::Duration;

/// Default fuel per phase call: about 0.1–0.5 s of guest CPU, far more than a text stage needs.
pub const DEFAULT_FUEL: u64 = 100_000_000;
/// Default wall-clock deadline per phase call.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(200);
/// Default linear-memory cap per stage instance: 64 MiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
/// Default number of stage instances that may be alive at once (the pool size). Requests
/// that would need more are shed with 503 rather than queued.
pub const DEFAULT_POOL_SIZE: u32 = 512;
/// Default epoch tick: the deadline granularity (a looping guest stops within two ticks).
pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(5);
/// Default cap on one guest log line; longer lines are truncated.
pub const DEFAULT_LOG_LINE_MAX_BYTES: usize = 4096;
/// Default cap on captured stdout + stderr per phase call; the rest is discarded.
pub const DEFAULT_OUTPUT_MAX_BYTES: usize = 16 * 1024;
/// Upper bound accepted for a memory cap: 4 GiB (a wasm32 memory cannot be larger).
pub const MAX_MEMORY_BYTES: u64 = 4 << 30;
/// Upper bound accepted for the pool size: 10 000 instances (each reserves address space).
pub const MAX_POOL_SIZE: u32 = 10_000;
/// Upper bound accepted for a per-call deadline: 10 minutes.
pub const MAX_DEADLINE: Duration = Duration::from_secs(600);
/// Upper bound accepted for the epoch tick: 1 s (a coarser tick makes deadlines meaningless).
pub const MAX_EPOCH_TICK: Duration = Duration::from_secs(1);
/// Upper bound accepted for [`SandboxSettings::log_line_max_bytes`]: 64 KiB.
pub const MAX_LOG_LINE_MAX_BYTES: usize = 64 * 1024;
/// Upper bound accepted for [`SandboxSettings::output_max_bytes`]: 1 MiB.
pub const MAX_OUTPUT_MAX_BYTES: usize = 1 << 20;

/// Limits applied to every phase call of one stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// Fuel (roughly, wasm instructions) per phase call; `None` runs unmetered.
    pub fuel: Option<u64>,
    /// Wall-clock deadline per phase call, covering guest code and host calls alike.
    pub deadline: Duration,
    /// Cap on the instance's linear memory, in bytes.
    pub memory_bytes: u64,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            fuel: Some(DEFAULT_FUEL),
            deadline: DEFAULT_DEADLINE,
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

/// How stage instances get their memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// The pooling allocator, falling back to on-demand (with a warning) when the address
    /// space for the pool cannot be reserved. The default.
    Auto,
    /// The pooling allocator or nothing: start-up fails if the pool cannot be reserved.
    Pooling,
    /// Allocate per instance (slower; for hosts with a small address space).
    OnDemand,
}

/// Process-wide sandbox settings (one `Engine`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxSettings {
    /// How many stage instances may be alive at once (default [`DEFAULT_POOL_SIZE`]).
    pub pool_size: u32,
    /// Instance memory allocation strategy (default [`Allocator::Auto`]).
    pub allocator: Allocator,
    /// The epoch tick, i.e. the deadline granularity (default [`DEFAULT_EPOCH_TICK`]).
    pub epoch_tick: Duration,
    /// Whether fuel is metered at all; when false every stage runs unmetered (slightly faster)
    /// and a `fuel` setting is an error. Default true.
    pub fuel_metering: bool,
    /// Limits for stages that do not override them.
    pub defaults: CallLimits,
    /// Largest memory cap of any stage: the size of one pool memory slot.
    pub max_memory_bytes: u64,
    /// Cap on one guest log line, bytes (default [`DEFAULT_LOG_LINE_MAX_BYTES`]).
    pub log_line_max_bytes: usize,
    /// Cap on captured stdout + stderr per call, bytes (default [`DEFAULT_OUTPUT_MAX_BYTES`]).
    pub output_max_bytes: usize,
    /// The file holding the key that signs precompiled artifacts (`sandbox.artifact_key_file`,
    /// resolved); `None` uses the default location in the state directory
    /// (`$XDG_STATE_HOME/weir/artifact.key`, else `$HOME/.local/state/weir/artifact.key`).
    pub artifact_key_file: Option<std::path::PathBuf>,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            pool_size: DEFAULT_POOL_SIZE,
            allocator: Allocator::Auto,
            epoch_tick: DEFAULT_EPOCH_TICK,
            fuel_metering: true,
            defaults: CallLimits::default(),
            max_memory_bytes: DEFAULT_MEMORY_BYTES,
            log_line_max_bytes: DEFAULT_LOG_LINE_MAX_BYTES,
            output_max_bytes: DEFAULT_OUTPUT_MAX_BYTES,
            artifact_key_file: None,
        }
    }
}
