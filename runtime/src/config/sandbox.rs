//! `[sandbox]`: the bounds every stage call runs under, and the settings of the one engine.
//!
//! Each bound is named, documented with its unit and checked once when the config is loaded;
//! the sandbox only ever sees these validated values. A stage may override the three
//! [`CallLimits`] (`route.rs`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::Source;
use super::error::ConfigError;
use super::value::serde_default;
use super::value::{Fuel, Int, Mib, Ms, Val, as_mib, choices, defaults, lossy_opt, mib, ms, path};

/// Limits applied to every phase call of one stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallLimits {
    /// Fuel (roughly, wasm instructions) per phase call; `None` (`fuel = 0`) runs unmetered.
    /// The default is about 0.1–0.5 s of guest CPU, far more than a text stage needs.
    #[serde(with = "Fuel", default = "Val::<100_000_000>::int")]
    pub fuel: Option<u64>,
    /// Wall-clock deadline per phase call, covering guest code and host calls alike.
    #[serde(rename = "deadline_ms", with = "Ms::<1, 600_000>")]
    #[serde(default = "ms::<200>")]
    pub deadline: Duration,
    /// Cap on the instance's linear memory, in bytes (a wasm32 memory is 4 GiB at most).
    #[serde(rename = "memory_limit_mib", with = "Mib::<1, 4096>")]
    #[serde(default = "mib::<64>")]
    pub memory_bytes: u64,
}

serde_default!(CallLimits);

choices! {
    /// How stage instances get their memory.
    pub enum Allocator {
        /// The pooling allocator, falling back to on-demand (with a warning) when the address
        /// space for the pool cannot be reserved. The default.
        Auto = "auto",
        /// The pooling allocator or nothing: start-up fails if the pool cannot be reserved.
        Pooling = "pooling",
        /// Allocate per instance (slower; for hosts with a small address space).
        OnDemand = "on-demand",
    }
}

/// Process-wide sandbox settings (one `Engine`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct SandboxSettings {
    /// How many stage instances may be alive at once (each reserves address space); requests
    /// that would need more are shed with 503 rather than queued.
    #[serde(with = "Int::<1, 10_000>", default = "Val::<512>::int")]
    pub pool_size: u32,
    /// Instance memory allocation strategy.
    #[serde(default)]
    pub allocator: Allocator,
    /// Limits for stages that do not override them.
    #[serde(rename = "(defaults)", default)]
    pub defaults: CallLimits,
    /// Whether fuel is metered at all; when false every stage runs unmetered (slightly faster)
    /// and a `fuel` setting is an error.
    #[serde(default = "super::value::yes")]
    pub fuel_metering: bool,
    /// The deadline granularity: a looping guest stops within two ticks.
    #[serde(rename = "epoch_tick_ms", with = "Ms::<1, 1000>", default = "ms::<5>")]
    pub epoch_tick: Duration,
    /// Largest memory cap of any stage: the size of one pool memory slot (not a key).
    #[serde(
        rename = "max_memory_mib",
        serialize_with = "as_mib",
        skip_deserializing
    )]
    pub max_memory_bytes: u64,
    /// Cap on one guest log line, in bytes; longer lines are truncated.
    #[serde(with = "Int::<1, { 64 << 10 }>", default = "Val::<4096>::int")]
    pub log_line_max_bytes: usize,
    /// Guest log lines one phase call may write; later lines are dropped, counted in
    /// `weir_guest_log_lines_dropped_total` and reported in one line when the call ends.
    #[serde(with = "Int::<0, 100_000>", default = "Val::<100>::int")]
    pub log_lines_per_call: u32,
    /// Cap on captured stdout + stderr per phase call, in bytes; the rest is discarded.
    #[serde(with = "Int::<0, { 1 << 20 }>", default = "Val::<{ 16 << 10 }>::int")]
    pub output_max_bytes: usize,
    /// Cap on what one phase call returns (a rewritten request, an answer, a response, a
    /// rejection or a failure message) beyond what it was given, in bytes, measured as the sum
    /// of its strings plus a few bytes per list item: the limit of a call is the size of its
    /// input (the request, or the response) plus this. Over it the stage fails with
    /// `stage_output_too_large` (its `on_error` policy applies). The default and range are
    /// `server.max_body_bytes`'.
    #[serde(with = "Int::<1, { 64 << 20 }>", default = "Val::<{ 1 << 20 }>::int")]
    pub stage_output_max_bytes: usize,
    /// Core module instances one stage component may hold. A Rust stage has a handful (its
    /// module plus the WASI adapter's shims); componentize-py's `--stub-wasi` build has 38.
    #[serde(with = "Int::<1, 1000>", default = "Val::<64>::int")]
    pub core_instances_per_component: u32,
    /// Linear memories one stage component may hold (the Python and JS builds have 2-3).
    #[serde(with = "Int::<1, 64>", default = "Val::<4>::int")]
    pub memories_per_component: u32,
    /// Tables one stage component may hold.
    #[serde(with = "Int::<1, 256>", default = "Val::<8>::int")]
    pub tables_per_component: u32,
    /// Stage files at least this big (MiB) run in a second pool whose memories are always
    /// mapped copy-on-write from an image built at load, instead of copying their data
    /// segments at every instantiation: a Python stage (about 17 MiB, most of it a
    /// pre-initialised heap) instantiates in under a millisecond instead of about 11 ms, and
    /// each slot keeps up to 2 MiB of it resident. Smaller stages use images only where the
    /// kernel has `PAGEMAP_SCAN` (`sandbox::Lane::has_images`). 0 puts every stage in the
    /// large pool.
    #[serde(with = "Int::<0, 4096>", default = "Val::<1>::int")]
    pub large_stage_mib: u32,
    /// Bytes of compiled stages kept in `data_dir/artifacts` (MiB): past it, the artifacts
    /// used least recently go (a Python stage's is about 40 MiB per version, so a node that
    /// reloads many versions would otherwise fill its disk). A stage whose artifact went
    /// compiles again at its next load.
    #[serde(rename = "artifact_cache_max_mib", with = "Mib::<64, 1_048_576>")]
    #[serde(default = "mib::<4096>")]
    pub artifact_cache_max_bytes: u64,
    /// The file holding the key that signs precompiled artifacts (resolved); `None` uses the
    /// default location in the state directory (`$XDG_STATE_HOME/weir/artifact.key`, else
    /// `$HOME/.local/state/weir/artifact.key`).
    #[serde(deserialize_with = "path", serialize_with = "lossy_opt", default)]
    pub artifact_key_file: Option<PathBuf>,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        let settings: SandboxSettings = defaults();
        let max_memory_bytes = settings.defaults.memory_bytes;
        SandboxSettings {
            max_memory_bytes,
            ..settings
        }
    }
}

/// The message for a `fuel` key while metering is off.
const FUEL_WITHOUT_METERING: &str = "expected no `fuel` setting, because \
    `sandbox.fuel_metering` is false (every stage runs unmetered); remove this key or set \
    `fuel_metering = true`";

/// The second pass over `[sandbox]`. `max_memory_bytes` is the default cap; the caller
/// raises it to the largest stage override.
pub(crate) fn check(sandbox: &mut SandboxSettings, src: &Source<'_>) -> Result<(), ConfigError> {
    if !sandbox.fuel_metering {
        src.ensure(
            !src.written("sandbox.fuel"),
            "sandbox.fuel",
            FUEL_WITHOUT_METERING,
        )?;
        sandbox.defaults.fuel = None;
    }
    sandbox.max_memory_bytes = sandbox.defaults.memory_bytes;
    let empty = "expected a file path, got an empty string; leave the key out for the default \
                 ($XDG_STATE_HOME/weir/artifact.key or $HOME/.local/state/weir/artifact.key)";
    src.path(
        "sandbox.artifact_key_file",
        &mut sandbox.artifact_key_file,
        empty,
    )
}

/// A stage's limits: the `[sandbox]` defaults under the keys it sets. `key` is the stage's
/// key path, like `routes[0].stages[1]`.
pub(crate) fn stage_limits(
    limits: &mut CallLimits,
    sandbox: &SandboxSettings,
    src: &Source<'_>,
    key: &str,
) -> Result<(), ConfigError> {
    let set = |name: &str| src.written(&format!("{key}.{name}"));
    let fuel = format!("{key}.fuel");
    src.ensure(
        sandbox.fuel_metering || !set("fuel"),
        &fuel,
        FUEL_WITHOUT_METERING,
    )?;
    let defaults = sandbox.defaults;
    if !set("fuel") {
        limits.fuel = defaults.fuel;
    }
    if !set("deadline_ms") {
        limits.deadline = defaults.deadline;
    }
    if !set("memory_limit_mib") {
        limits.memory_bytes = defaults.memory_bytes;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    fn parse(sandbox: &str, stage: &str) -> Result<Config, String> {
        let text = format!(
            "[sandbox]\n{sandbox}\n[targets.t]\nbase_url = \"http://h\"\n[[routes]]\n\
             model = \"m\"\ntargets = [\"t\"]\n[[routes.stages]]\nname = \"s\"\n\
             path = \"/s.wasm\"\n{stage}\n"
        );
        Config::parse(&text, Path::new("w.toml"), &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_table_gives_the_documented_defaults() {
        let settings = parse("", "").map(|c| c.sandbox);
        assert_eq!(settings, Ok(SandboxSettings::default()));
        let settings = SandboxSettings::default();
        assert_eq!(
            (settings.pool_size, settings.allocator),
            (512, Allocator::Auto)
        );
        assert_eq!(settings.epoch_tick, Duration::from_millis(5));
        assert_eq!(
            (settings.log_line_max_bytes, settings.output_max_bytes),
            (4096, 16384)
        );
        assert_eq!(
            (settings.log_lines_per_call, settings.stage_output_max_bytes),
            (100, 1 << 20)
        );
        assert_eq!(settings.max_memory_bytes, 64 << 20);
        assert_eq!(
            (
                settings.core_instances_per_component,
                settings.memories_per_component,
                settings.tables_per_component,
                settings.large_stage_mib
            ),
            (64, 4, 8, 1)
        );
        assert_eq!(settings.artifact_cache_max_bytes, 4 << 30);
        assert_eq!(
            settings.defaults,
            CallLimits {
                fuel: Some(100_000_000),
                deadline: Duration::from_millis(200),
                memory_bytes: 64 << 20,
            }
        );
    }

    #[test]
    fn fuel_zero_means_unmetered() {
        let config = parse("fuel = 0", "");
        assert_eq!(config.map(|c| c.sandbox.defaults.fuel), Ok(None));
    }

    #[test]
    fn stage_overrides_replace_only_what_they_set() {
        let config = parse("fuel = 1000\ndeadline_ms = 300", "memory_limit_mib = 32");
        assert_eq!(
            config.map(|c| c.routes[0].stages[0].limits),
            Ok(CallLimits {
                fuel: Some(1_000),
                deadline: Duration::from_millis(300),
                memory_bytes: 32 << 20,
            })
        );
        let config = parse("fuel = 1000", "fuel = 0");
        assert_eq!(config.map(|c| c.routes[0].stages[0].limits.fuel), Ok(None));
    }

    #[test]
    fn fuel_without_metering_is_an_error() {
        let config = parse("fuel_metering = false", "");
        assert_eq!(config.map(|c| c.sandbox.defaults.fuel), Ok(None));
        let error = parse("fuel_metering = false", "fuel = 5")
            .err()
            .unwrap_or_default();
        assert!(
            error.starts_with("w.toml:11:8: routes[0].stages[0].fuel: expected no `fuel`"),
            "{error}"
        );
        let error = parse("fuel_metering = false\nfuel = 5", "")
            .err()
            .unwrap_or_default();
        assert!(
            error.starts_with("w.toml:3:8: sandbox.fuel: expected no `fuel`"),
            "{error}"
        );
    }

    #[test]
    fn bounds_are_enforced() {
        for (table, key) in [
            ("pool_size = 0", "sandbox.pool_size"),
            ("pool_size = 10001", "sandbox.pool_size"),
            (
                "core_instances_per_component = 0",
                "sandbox.core_instances_per_component",
            ),
            (
                "memories_per_component = 65",
                "sandbox.memories_per_component",
            ),
            ("tables_per_component = 0", "sandbox.tables_per_component"),
            ("large_stage_mib = 4097", "sandbox.large_stage_mib"),
            (
                "artifact_cache_max_mib = 63",
                "sandbox.artifact_cache_max_mib",
            ),
            ("memory_limit_mib = 4097", "sandbox.memory_limit_mib"),
            ("epoch_tick_ms = 1001", "sandbox.epoch_tick_ms"),
            ("deadline_ms = 600001", "sandbox.deadline_ms"),
            ("log_lines_per_call = 100001", "sandbox.log_lines_per_call"),
            (
                "stage_output_max_bytes = 0",
                "sandbox.stage_output_max_bytes",
            ),
            (
                "stage_output_max_bytes = 67108865",
                "sandbox.stage_output_max_bytes",
            ),
        ] {
            let error = parse(table, "").err().unwrap_or_default();
            assert!(
                error.contains(&format!(": {key}: must be between")),
                "{error}"
            );
        }
        let config = parse("memory_limit_mib = 4096\npool_size = 10000", "");
        assert_eq!(config.map(|c| c.sandbox.max_memory_bytes), Ok(4 << 30));
    }
}
