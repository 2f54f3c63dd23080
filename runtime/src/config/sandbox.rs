//! `[sandbox]` → [`SandboxSettings`], and one stage's overrides → its [`CallLimits`].
//!
//! The bounds themselves live with the types in `limits.rs`; this file only applies them.

use std::time::Duration;

use toml::Spanned;

use super::check::Source;
use super::error::ConfigError;
use super::limits::*;
use super::raw::RawSandbox;

/// The accepted `deadline_ms` range.
fn deadline_ms_range() -> std::ops::RangeInclusive<u64> {
    1..=MAX_DEADLINE.as_millis() as u64
}

/// The accepted `memory_limit_mib` range.
fn memory_mib_range() -> std::ops::RangeInclusive<u64> {
    1..=MAX_MEMORY_BYTES >> 20
}

/// Validates `[sandbox]`. `max_memory_bytes` is the default cap; the caller raises it to the
/// largest stage override. Relative paths are joined to `base_dir`.
pub(crate) fn build(
    src: Source<'_>,
    raw: &RawSandbox,
    base_dir: &std::path::Path,
) -> Result<SandboxSettings, ConfigError> {
    let fuel_metering = raw.fuel_metering.unwrap_or(true);
    let defaults = CallLimits::default();
    let fuel = match &raw.fuel {
        Some(fuel) => metered(src, fuel, fuel_metering, "sandbox.fuel")?,
        None if fuel_metering => defaults.fuel,
        None => None,
    };
    let deadline_ms = src.in_range_or(
        raw.deadline_ms.as_ref(),
        deadline_ms_range(),
        defaults.deadline.as_millis() as u64,
        "sandbox.deadline_ms",
    )?;
    let memory_mib = src.in_range_or(
        raw.memory_limit_mib.as_ref(),
        memory_mib_range(),
        defaults.memory_bytes >> 20,
        "sandbox.memory_limit_mib",
    )?;
    let pool_size = src.in_range_or(
        raw.pool_size.as_ref(),
        1..=u64::from(MAX_POOL_SIZE),
        u64::from(DEFAULT_POOL_SIZE),
        "sandbox.pool_size",
    )?;
    let epoch_tick_ms = src.in_range_or(
        raw.epoch_tick_ms.as_ref(),
        1..=MAX_EPOCH_TICK.as_millis() as u64,
        DEFAULT_EPOCH_TICK.as_millis() as u64,
        "sandbox.epoch_tick_ms",
    )?;
    let log_line_max_bytes = src.in_range_or(
        raw.log_line_max_bytes.as_ref(),
        1..=MAX_LOG_LINE_MAX_BYTES as u64,
        DEFAULT_LOG_LINE_MAX_BYTES as u64,
        "sandbox.log_line_max_bytes",
    )?;
    let output_max_bytes = src.in_range_or(
        raw.output_max_bytes.as_ref(),
        0..=MAX_OUTPUT_MAX_BYTES as u64,
        DEFAULT_OUTPUT_MAX_BYTES as u64,
        "sandbox.output_max_bytes",
    )?;
    let allocator = src.choice(
        raw.allocator.as_ref(),
        &[
            ("auto", Allocator::Auto),
            ("pooling", Allocator::Pooling),
            ("on-demand", Allocator::OnDemand),
        ],
        Allocator::Auto,
        "sandbox.allocator",
    )?;
    let artifact_key_file = match &raw.artifact_key_file {
        Some(file) if file.get_ref().trim().is_empty() => {
            return Err(src.error(
                file.span(),
                "sandbox.artifact_key_file",
                "expected a file path, got an empty string; leave the key out for the default \
                 ($XDG_STATE_HOME/weir/artifact.key or $HOME/.local/state/weir/artifact.key)",
            ));
        }
        Some(file) => Some(super::route::resolve(
            base_dir,
            std::path::Path::new(file.get_ref()),
        )),
        None => None,
    };
    let defaults = CallLimits {
        fuel,
        deadline: Duration::from_millis(deadline_ms),
        memory_bytes: memory_mib << 20,
    };
    Ok(SandboxSettings {
        // Each range check above bounds the value well inside the target type.
        pool_size: pool_size as u32,
        allocator,
        epoch_tick: Duration::from_millis(epoch_tick_ms),
        fuel_metering,
        defaults,
        max_memory_bytes: defaults.memory_bytes,
        log_line_max_bytes: log_line_max_bytes as usize,
        output_max_bytes: output_max_bytes as usize,
        artifact_key_file,
    })
}

/// The overrides a stage may set on top of the `[sandbox]` defaults.
pub(crate) struct Overrides<'a> {
    pub fuel: Option<&'a Spanned<u64>>,
    pub deadline_ms: Option<&'a Spanned<u64>>,
    pub memory_limit_mib: Option<&'a Spanned<u64>>,
}

/// A stage's limits: the sandbox defaults with its overrides applied. `key` is the stage's
/// key path, like `routes[0].stages[1]`.
pub(crate) fn stage_limits(
    src: Source<'_>,
    sandbox: &SandboxSettings,
    overrides: Overrides<'_>,
    key: &str,
) -> Result<CallLimits, ConfigError> {
    let defaults = sandbox.defaults;
    let fuel = match overrides.fuel {
        Some(fuel) => metered(src, fuel, sandbox.fuel_metering, &format!("{key}.fuel"))?,
        None => defaults.fuel,
    };
    let deadline = match overrides.deadline_ms {
        Some(ms) => Duration::from_millis(src.in_range(
            ms,
            deadline_ms_range(),
            &format!("{key}.deadline_ms"),
        )?),
        None => defaults.deadline,
    };
    let memory_bytes = match overrides.memory_limit_mib {
        Some(mib) => {
            src.in_range(mib, memory_mib_range(), &format!("{key}.memory_limit_mib"))? << 20
        }
        None => defaults.memory_bytes,
    };
    Ok(CallLimits {
        fuel,
        deadline,
        memory_bytes,
    })
}

/// A `fuel` setting: 0 runs unmetered; any setting is an error when metering is off.
fn metered(
    src: Source<'_>,
    fuel: &Spanned<u64>,
    fuel_metering: bool,
    key: &str,
) -> Result<Option<u64>, ConfigError> {
    if !fuel_metering {
        return Err(src.error(
            fuel.span(),
            key,
            "expected no `fuel` setting, because `sandbox.fuel_metering` is false (every stage \
             runs unmetered); remove this key or set `fuel_metering = true`",
        ));
    }
    Ok(match *fuel.get_ref() {
        0 => None,
        fuel => Some(fuel),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn src() -> Source<'static> {
        Source {
            file: Path::new("w.toml"),
            text: "",
        }
    }

    fn n(value: u64) -> Option<Spanned<u64>> {
        Some(Spanned::new(0..0, value))
    }

    #[test]
    fn an_empty_table_gives_the_documented_defaults() {
        let settings = build(src(), &RawSandbox::default(), Path::new("."));
        assert_eq!(settings, Ok(SandboxSettings::default()));
    }

    #[test]
    fn fuel_zero_means_unmetered() {
        let raw = RawSandbox {
            fuel: n(0),
            ..RawSandbox::default()
        };
        let settings = build(src(), &raw, Path::new(".")).map(|s| s.defaults.fuel);
        assert_eq!(settings, Ok(None));
    }

    #[test]
    fn stage_overrides_replace_only_what_they_set() {
        let raw = RawSandbox {
            fuel: n(1_000),
            deadline_ms: n(300),
            ..RawSandbox::default()
        };
        let Ok(sandbox) = build(src(), &raw, Path::new(".")) else {
            panic!("valid sandbox table rejected");
        };
        let memory = n(32);
        let limits = stage_limits(
            src(),
            &sandbox,
            Overrides {
                fuel: None,
                deadline_ms: None,
                memory_limit_mib: memory.as_ref(),
            },
            "routes[0].stages[0]",
        );
        assert_eq!(
            limits,
            Ok(CallLimits {
                fuel: Some(1_000),
                deadline: Duration::from_millis(300),
                memory_bytes: 32 << 20,
            })
        );
        let fuel = n(0);
        let limits = stage_limits(
            src(),
            &sandbox,
            Overrides {
                fuel: fuel.as_ref(),
                deadline_ms: None,
                memory_limit_mib: None,
            },
            "routes[0].stages[0]",
        );
        assert_eq!(limits.map(|l| l.fuel), Ok(None));
    }

    #[test]
    fn fuel_without_metering_is_an_error() {
        let raw = RawSandbox {
            fuel_metering: Some(false),
            ..RawSandbox::default()
        };
        let Ok(sandbox) = build(src(), &raw, Path::new(".")) else {
            panic!("valid sandbox table rejected");
        };
        assert_eq!(sandbox.defaults.fuel, None);
        let fuel = n(5);
        let error = stage_limits(
            src(),
            &sandbox,
            Overrides {
                fuel: fuel.as_ref(),
                deadline_ms: None,
                memory_limit_mib: None,
            },
            "routes[0].stages[2]",
        );
        assert_eq!(
            error.map_err(|e| e.key),
            Err("routes[0].stages[2].fuel".to_owned())
        );
    }

    #[test]
    fn bounds_are_enforced() {
        for raw in [
            RawSandbox {
                pool_size: n(0),
                ..RawSandbox::default()
            },
            RawSandbox {
                pool_size: n(10_001),
                ..RawSandbox::default()
            },
            RawSandbox {
                memory_limit_mib: n(4097),
                ..RawSandbox::default()
            },
            RawSandbox {
                epoch_tick_ms: n(1001),
                ..RawSandbox::default()
            },
            RawSandbox {
                deadline_ms: n(600_001),
                ..RawSandbox::default()
            },
        ] {
            assert!(build(src(), &raw, Path::new(".")).is_err(), "{raw:?}");
        }
        let raw = RawSandbox {
            memory_limit_mib: n(4096),
            pool_size: n(10_000),
            ..RawSandbox::default()
        };
        let settings = build(src(), &raw, Path::new("."));
        assert_eq!(settings.map(|s| s.max_memory_bytes), Ok(MAX_MEMORY_BYTES));
    }
}
