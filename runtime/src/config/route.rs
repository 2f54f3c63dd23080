//! `[[routes]]` and `[[routes.stages]]`: which model alias runs which stages in front of which
//! targets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::cache::RouteCacheSettings;
use super::check::Source;
use super::error::{ConfigError, line_column};
use super::limits::{CallLimits, SandboxSettings};
use super::raw::{RawRoute, RawStage};
use super::routing::{PolicySettings, StatusSet, Strategy};
use super::sandbox::{Overrides, stage_limits};
use super::stage_config;
use super::target::TargetSettings;

/// One validated route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSettings {
    /// The alias clients send as `model`; unique across routes.
    pub model: String,
    /// The fallback chain, in order: indexes into [`Config::targets`](super::Config::targets),
    /// non-empty and without duplicates.
    pub targets: Vec<usize>,
    /// The stages, in pipeline (request) order; names unique within the route.
    pub stages: Vec<StageSettings>,
    /// Attempts, deadline, backoff, retry budget and wait queue.
    pub policy: PolicySettings,
    /// Whether and how answers are cached (default: not cached).
    pub cache: RouteCacheSettings,
    /// How the first attempt's target is chosen (default [`Strategy::Fallback`]).
    pub strategy: Strategy,
    /// One weight per target in [`Self::targets`], for [`Strategy::Weighted`] (default 1 each).
    pub weights: Vec<u32>,
    /// Whether the route takes background jobs (`POST /v1/jobs`), and how many run at once
    /// (default `None`: jobs are opt-in per route).
    pub jobs: Option<super::jobs::RouteJobsSettings>,
}

/// One validated stage of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSettings {
    /// `[a-z0-9_-]+`, 1 to 64 characters; unique within the route.
    pub name: String,
    /// The component file: absolute as written, or joined to the config file's directory.
    pub path: PathBuf,
    /// What a failure of this stage does to the request (default [`OnErrorSetting::Fail`]).
    pub on_error: OnErrorSetting,
    /// The `[sandbox]` defaults with this stage's `fuel`, `deadline_ms` and
    /// `memory_limit_mib` overrides applied.
    pub limits: CallLimits,
    /// The stage's `config` table, each value rendered as a string: TOML strings as they are,
    /// everything else as compact JSON (`8000`, `true`, `["a","b"]`, `{"k":1}`).
    pub config: BTreeMap<String, String>,
}

/// A stage's failure policy (`on_error`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnErrorSetting {
    /// Fail the request. The default: a guard that crashed must not let everything through.
    #[default]
    Fail,
    /// Continue as if the stage were not there.
    Skip,
}

/// Validates the `[[routes]]` array against the validated targets and sandbox defaults.
/// Relative stage paths are joined to `base_dir`.
pub(crate) fn build_all(
    src: Source<'_>,
    raw: Option<&Spanned<Vec<Spanned<RawRoute>>>>,
    targets: &[TargetSettings],
    sandbox: &SandboxSettings,
    base_dir: &Path,
) -> Result<Vec<RouteSettings>, ConfigError> {
    let (span, raw_routes) = match raw {
        Some(routes) => (routes.span(), routes.get_ref().as_slice()),
        None => (0..0, &[][..]),
    };
    if raw_routes.is_empty() {
        return Err(src.error(
            span,
            "routes",
            "expected at least one [[routes]] table, with the `model` alias clients send and \
             the `targets` to try",
        ));
    }
    let mut routes: Vec<RouteSettings> = Vec::with_capacity(raw_routes.len());
    for (index, raw_route) in raw_routes.iter().enumerate() {
        let key = format!("routes[{index}]");
        let route = build(src, raw_route.get_ref(), &key, targets, sandbox, base_dir)?;
        if let Some(first) = routes.iter().position(|r| r.model == route.model) {
            let (line, _) = line_column(src.text, raw_routes[first].get_ref().model.span().start);
            return Err(src.error(
                raw_route.get_ref().model.span(),
                format!("{key}.model"),
                format!(
                    "expected a model alias used by no other route; `{}` is already the model \
                     of routes[{first}] (line {line})",
                    route.model
                ),
            ));
        }
        routes.push(route);
    }
    Ok(routes)
}

fn build(
    src: Source<'_>,
    raw: &RawRoute,
    key: &str,
    targets: &[TargetSettings],
    sandbox: &SandboxSettings,
    base_dir: &Path,
) -> Result<RouteSettings, ConfigError> {
    let model = raw.model.get_ref();
    if model.trim().is_empty() {
        return Err(src.error(
            raw.model.span(),
            format!("{key}.model"),
            "expected the model alias clients send, like \"demo\", got an empty string",
        ));
    }
    let defined = || {
        if targets.is_empty() {
            "no targets are defined (add a [targets.NAME] table)".to_owned()
        } else {
            let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
            format!("defined targets: {}", names.join(", "))
        }
    };
    if raw.targets.get_ref().is_empty() {
        return Err(src.error(
            raw.targets.span(),
            format!("{key}.targets"),
            format!("expected at least one target name; {}", defined()),
        ));
    }
    let mut chain: Vec<usize> = Vec::with_capacity(raw.targets.get_ref().len());
    for (i, name) in raw.targets.get_ref().iter().enumerate() {
        let target_key = format!("{key}.targets[{i}]");
        let Some(index) = targets.iter().position(|t| t.name == *name.get_ref()) else {
            return Err(src.error(
                name.span(),
                target_key,
                format!("unknown target `{}`; {}", name.get_ref(), defined()),
            ));
        };
        if let Some(first) = chain.iter().position(|&t| t == index) {
            return Err(src.error(
                name.span(),
                target_key,
                format!(
                    "expected each target once per route; `{}` is already {key}.targets[{first}]",
                    name.get_ref()
                ),
            ));
        }
        chain.push(index);
    }
    let mut stages: Vec<StageSettings> = Vec::with_capacity(raw.stages.len());
    for (i, raw_stage) in raw.stages.iter().enumerate() {
        let stage_key = format!("{key}.stages[{i}]");
        let raw_stage = raw_stage.get_ref();
        let stage = build_stage(src, raw_stage, &stage_key, sandbox, base_dir)?;
        if let Some(first) = stages.iter().position(|s| s.name == stage.name) {
            let (line, _) = line_column(src.text, raw.stages[first].get_ref().name.span().start);
            return Err(src.error(
                raw_stage.name.span(),
                format!("{stage_key}.name"),
                format!(
                    "expected stage names to be unique within a route; `{}` is already \
                     {key}.stages[{first}] (line {line})",
                    stage.name
                ),
            ));
        }
        stages.push(stage);
    }
    let policy = build_policy(src, raw, key)?;
    let strategy = src.choice(
        raw.strategy.as_ref(),
        &[
            ("fallback", Strategy::Fallback),
            ("weighted", Strategy::Weighted),
            ("least-latency", Strategy::LeastLatency),
        ],
        Strategy::Fallback,
        &format!("{key}.strategy"),
    )?;
    let weights = match &raw.weights {
        None => vec![1; chain.len()],
        Some(weights) => {
            if weights.get_ref().len() != chain.len() {
                return Err(src.error(
                    weights.span(),
                    format!("{key}.weights"),
                    format!(
                        "expected one weight per target ({} targets), got {}",
                        chain.len(),
                        weights.get_ref().len()
                    ),
                ));
            }
            let mut out = Vec::with_capacity(chain.len());
            for (i, w) in weights.get_ref().iter().enumerate() {
                out.push(src.in_range(w, 0..=1_000_000, &format!("{key}.weights[{i}]"))? as u32);
            }
            if out.iter().all(|w| *w == 0) {
                return Err(src.error(
                    weights.span(),
                    format!("{key}.weights"),
                    "expected at least one weight above 0",
                ));
            }
            out
        }
    };
    let cache = super::cache::build_route(src, raw.cache.as_ref(), key, targets)?;
    let jobs = super::jobs::build_route(src, raw.jobs.as_ref(), key)?;
    Ok(RouteSettings {
        model: model.clone(),
        targets: chain,
        stages,
        policy,
        cache,
        strategy,
        weights,
        jobs,
    })
}

/// Longest total deadline accepted: 1 hour.
const MAX_ROUTE_DEADLINE_MS: u64 = 3_600_000;

fn build_policy(src: Source<'_>, raw: &RawRoute, key: &str) -> Result<PolicySettings, ConfigError> {
    let d = PolicySettings::default();
    let ms = |v: std::time::Duration| v.as_millis() as u64;
    let backoff_base_ms = src.in_range_or(
        raw.backoff_base_ms.as_ref(),
        0..=60_000,
        ms(d.backoff_base),
        &format!("{key}.backoff_base_ms"),
    )?;
    let retry_on = match &raw.retry_on {
        None => d.retry_on,
        Some(list) => {
            let mut set = StatusSet::empty();
            for (i, status) in list.get_ref().iter().enumerate() {
                let code = src.in_range(
                    status,
                    u64::from(StatusSet::LOW)..=u64::from(StatusSet::HIGH),
                    &format!("{key}.retry_on[{i}]"),
                )?;
                set.insert(code as u16);
            }
            set
        }
    };
    Ok(PolicySettings {
        retry_on,
        max_attempts: src.in_range_or(
            raw.max_attempts.as_ref(),
            1..=20,
            u64::from(d.max_attempts),
            &format!("{key}.max_attempts"),
        )? as u32,
        deadline: std::time::Duration::from_millis(src.in_range_or(
            raw.deadline_ms.as_ref(),
            1..=MAX_ROUTE_DEADLINE_MS,
            ms(d.deadline),
            &format!("{key}.deadline_ms"),
        )?),
        backoff_base: std::time::Duration::from_millis(backoff_base_ms),
        backoff_max: std::time::Duration::from_millis(src.in_range_or(
            raw.backoff_max_ms.as_ref(),
            backoff_base_ms..=600_000,
            ms(d.backoff_max).max(backoff_base_ms),
            &format!("{key}.backoff_max_ms"),
        )?),
        retry_after_max: std::time::Duration::from_millis(src.in_range_or(
            raw.retry_after_max_ms.as_ref(),
            0..=600_000,
            ms(d.retry_after_max),
            &format!("{key}.retry_after_max_ms"),
        )?),
        retry_budget_percent: src.in_range_or(
            raw.retry_budget_percent.as_ref(),
            0..=1000,
            u64::from(d.retry_budget_percent),
            &format!("{key}.retry_budget_percent"),
        )? as u32,
        queue_size: src.in_range_or(
            raw.queue_size.as_ref(),
            0..=1_000_000,
            u64::from(d.queue_size),
            &format!("{key}.queue_size"),
        )? as u32,
        queue_timeout: std::time::Duration::from_millis(src.in_range_or(
            raw.queue_timeout_ms.as_ref(),
            0..=600_000,
            ms(d.queue_timeout),
            &format!("{key}.queue_timeout_ms"),
        )?),
    })
}

fn build_stage(
    src: Source<'_>,
    raw: &RawStage,
    key: &str,
    sandbox: &SandboxSettings,
    base_dir: &Path,
) -> Result<StageSettings, ConfigError> {
    let name = raw.name.get_ref();
    src.name(name, raw.name.span(), &format!("{key}.name"))?;
    let path = raw.path.get_ref();
    if path.is_empty() {
        return Err(src.error(
            raw.path.span(),
            format!("{key}.path"),
            "expected the path of a stage component (.wasm), got an empty string",
        ));
    }
    let on_error = src.choice(
        raw.on_error.as_ref(),
        &[
            ("fail", OnErrorSetting::Fail),
            ("skip", OnErrorSetting::Skip),
        ],
        OnErrorSetting::Fail,
        &format!("{key}.on_error"),
    )?;
    let limits = stage_limits(
        src,
        sandbox,
        Overrides {
            fuel: raw.fuel.as_ref(),
            deadline_ms: raw.deadline_ms.as_ref(),
            memory_limit_mib: raw.memory_limit_mib.as_ref(),
        },
        key,
    )?;
    let config = stage_config::render_all(src, &raw.config, &format!("{key}.config"))?;
    Ok(StageSettings {
        name: name.clone(),
        path: resolve(base_dir, Path::new(path)),
        on_error,
        limits,
        config,
    })
}

/// `path` if absolute, otherwise `path` under `base_dir`.
pub(crate) fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_joined_to_the_config_dir_and_absolute_ones_kept() {
        let dir = Path::new("/etc/weir");
        assert_eq!(
            resolve(dir, Path::new("plugins/guard.wasm")),
            Path::new("/etc/weir/plugins/guard.wasm")
        );
        assert_eq!(
            resolve(dir, Path::new("../shared/guard.wasm")),
            Path::new("/etc/weir/../shared/guard.wasm")
        );
        assert_eq!(
            resolve(dir, Path::new("/opt/guard.wasm")),
            Path::new("/opt/guard.wasm")
        );
        assert_eq!(
            resolve(Path::new(""), Path::new("guard.wasm")),
            Path::new("guard.wasm")
        );
    }
}
