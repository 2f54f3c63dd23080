//! [`Config`]: the whole validated file, and the one way to get one (`load` / `parse`).
//!
//! Parsing runs in two passes. First the TOML is parsed (`document.rs`) and serde reads the
//! validated structs from it, strictly: unknown keys, wrong types and values out of their
//! range fail there (each key checks itself, `value.rs`), with the key path taken from
//! `serde_path_to_error` and the position from toml's span. Then a second pass runs what one
//! key cannot check alone (`check.rs`): references between tables, bounds and defaults that
//! depend on another key, secrets and paths, table by table (server, sandbox, targets,
//! routes, cache, cost, keys, jobs). The first problem found is returned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::check::{EnvLookup, Source};
use super::document;
use super::error::{ConfigError, NO_KEY};
use super::value::{lossy, lossy_opt};
use super::{
    CacheSettings, CostSettings, JobsSettings, KeySettings, ModelPrice, OciSettings, RouteSettings,
    SandboxSettings, ServerSettings, ServiceSettings, StateSettings, TargetSettings,
    TelemetrySettings,
};

/// A validated `weir.toml`. It serializes, secrets masked, as `GET /admin/config` shows it
/// (`masked.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The file the config was read from, as given to [`Config::load`] or [`Config::parse`].
    #[serde(serialize_with = "lossy")]
    pub source: PathBuf,
    /// `[server]`.
    pub server: ServerSettings,
    /// `[sandbox]`, with `max_memory_bytes` raised to the largest memory cap of any stage.
    pub sandbox: SandboxSettings,
    /// `[targets.NAME]` tables, sorted by name.
    #[serde(serialize_with = "super::masked::by_name")]
    pub targets: Vec<TargetSettings>,
    /// `[services.NAME]` tables (the HTTP dependencies stages call), sorted by name.
    pub services: Vec<ServiceSettings>,
    /// `[[routes]]`, in file order; at least one.
    pub routes: Vec<RouteSettings>,
    /// `[cache]`.
    pub cache: CacheSettings,
    /// `[cost]` with the price table.
    pub cost: CostSettings,
    /// `[[keys]]`; empty means auth is off.
    pub keys: Vec<KeySettings>,
    /// `server.data_dir` (resolved): where durable state (the spend ledger, the job queue)
    /// lives; `None` keeps it in memory.
    #[serde(serialize_with = "lossy_opt")]
    pub data_dir: Option<PathBuf>,
    /// `[telemetry]`.
    pub telemetry: TelemetrySettings,
    /// `[jobs]`: the background job queue (used when a route takes jobs).
    pub jobs: JobsSettings,
    /// `[state]`: where state shared by a fleet of nodes lives.
    pub state: StateSettings,
    /// `[oci]`: pulling stages from OCI registries.
    pub oci: OciSettings,
}

/// The file's tables, as serde reads them (the order of the fields is the order an unknown
/// top-level key's error lists them in).
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct File {
    server: ServerSettings,
    sandbox: SandboxSettings,
    cache: CacheSettings,
    /// Keyed by name (sorted: the TOML map does not keep file order).
    targets: BTreeMap<String, TargetSettings>,
    /// Keyed by name, like `targets`.
    services: BTreeMap<String, ServiceSettings>,
    routes: Vec<RouteSettings>,
    cost: CostSettings,
    prices: BTreeMap<String, ModelPrice>,
    keys: Vec<KeySettings>,
    jobs: JobsSettings,
    telemetry: TelemetrySettings,
    state: StateSettings,
    oci: OciSettings,
}

impl Config {
    /// Reads and validates the file at `path`, reading secrets from the process environment.
    ///
    /// Relative stage paths are resolved against the file's directory made absolute, so
    /// they stay valid whatever the process's working directory later becomes. Errors name
    /// `path` as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &|name: &str| std::env::var(name).ok())
    }

    /// [`Config::load`] with secrets read through `env` instead of the process environment.
    pub fn load_with(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = crate::fsutil::read_regular(path, crate::fsutil::MAX_CONFIG_FILE_BYTES)
            .and_then(|bytes| String::from_utf8(bytes).map_err(std::io::Error::other))
            .map_err(|err| ConfigError {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                key: NO_KEY.to_owned(),
                message: format!("cannot read the config file: {err}"),
            })?;
        parse_in(&text, path, &absolute_dir_of(path), env)
    }

    /// Validates `text` as the contents of the file `source`, without touching the file
    /// system: `env` looks up environment variables (for secrets), `source` names the file in
    /// errors, and relative stage paths are joined to `source`'s directory.
    pub fn parse(
        text: &str,
        source: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let base_dir = source.parent().unwrap_or(Path::new(""));
        parse_in(text, source, base_dir, env)
    }
}

/// The directory of the file `path`, made absolute against the working directory (left
/// as it is if the working directory cannot be read).
fn absolute_dir_of(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn parse_in(
    text: &str,
    source: &Path,
    base_dir: &Path,
    env: EnvLookup<'_>,
) -> Result<Config, ConfigError> {
    let doc = document::parse(source, text)?;
    let mut grouped = doc.clone();
    document::regroup(source, text, &mut grouped)?;
    let mut file: File = document::read(source, text, grouped)?;
    let keys = document::index(&doc);
    let src = Source {
        file: source,
        text,
        keys: &keys,
        base_dir,
        env,
    };
    super::server::check(&mut file.server, &src)?;
    super::sandbox::check(&mut file.sandbox, &src)?;
    let targets = (file.targets.into_iter())
        .map(|(name, target)| super::target::check(name, target, &src))
        .collect::<Result<Vec<_>, _>>()?;
    let services = (file.services.into_iter())
        .map(|(name, service)| super::service::check(name, service, &src))
        .collect::<Result<Vec<_>, _>>()?;
    super::oci::check(&mut file.oci, &src)?;
    let (sandbox, oci) = (&file.sandbox, &file.oci);
    super::route::check_all(&mut file.routes, &targets, &services, sandbox, oci, &src)?;
    let stages = file.routes.iter().flat_map(|route| &route.stages);
    file.sandbox.max_memory_bytes = stages
        .map(|stage| stage.limits.memory_bytes)
        .fold(file.sandbox.defaults.memory_bytes, u64::max);
    super::cache::check(&mut file.cache, &src)?;
    super::cost::check(&mut file.cost, file.prices, &src)?;
    super::cost::check_keys(&file.keys, &src)?;
    super::jobs::check(&mut file.jobs, &src)?;
    super::state::check(&mut file.state, &src)?;
    Ok(Config {
        source: source.to_path_buf(),
        data_dir: file.server.data_dir.clone(),
        server: file.server,
        sandbox: file.sandbox,
        targets,
        services,
        routes: file.routes,
        cache: file.cache,
        cost: file.cost,
        keys: file.keys,
        telemetry: file.telemetry,
        jobs: file.jobs,
        state: file.state,
        oci: file.oci,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[targets.primary]
base_url = "http://127.0.0.1:9101/v1/"

[[routes]]
model = "demo"
targets = ["primary"]

[[routes.stages]]
name = "guard"
path = "plugins/guard.wasm"
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_minimal_file_gets_every_default() {
        let config = Config::parse(MINIMAL, Path::new("conf/weir.toml"), &no_env);
        let Ok(config) = config else {
            panic!("minimal config rejected: {config:?}");
        };
        assert_eq!(config.source, Path::new("conf/weir.toml"));
        assert_eq!(config.server, ServerSettings::default());
        assert_eq!(config.sandbox, SandboxSettings::default());
        let target = &config.targets[0];
        assert_eq!(target.base_url, "http://127.0.0.1:9101/v1");
        assert_eq!(target.timeout, std::time::Duration::from_secs(60));
        assert_eq!(
            (target.api_key.as_deref(), target.model.as_deref()),
            (None, None)
        );
        let stage = &config.routes[0].stages[0];
        assert_eq!(stage.path, Path::new("conf/plugins/guard.wasm"));
        assert_eq!(stage.on_error, super::super::OnErrorSetting::Fail);
        assert_eq!(stage.limits, config.sandbox.defaults);
        assert!(stage.config.is_empty());
    }

    #[test]
    fn max_memory_is_the_largest_cap_of_the_defaults_and_every_stage() {
        let text = format!(
            "{MINIMAL}memory_limit_mib = 256\n\n[[routes.stages]]\nname = \"small\"\n\
             path = \"/abs/small.wasm\"\nmemory_limit_mib = 8\n"
        );
        let config = Config::parse(&text, Path::new("weir.toml"), &no_env);
        let Ok(config) = config else {
            panic!("config rejected: {config:?}");
        };
        assert_eq!(config.sandbox.max_memory_bytes, 256 << 20);
        assert_eq!(config.sandbox.defaults.memory_bytes, 64 << 20);
        assert_eq!(
            config.routes[0].stages[1].path,
            Path::new("/abs/small.wasm")
        );
        assert_eq!(config.routes[0].stages[1].limits.memory_bytes, 8 << 20);
    }

    #[test]
    fn load_reads_the_file_and_resolves_stage_paths_absolutely() {
        let dir = std::env::temp_dir().join(format!("weir-config-load-{}", std::process::id()));
        let file = dir.join("weir.toml");
        let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, MINIMAL));
        assert!(written.is_ok(), "{written:?}");
        let config = Config::load(&file);
        let _ = std::fs::remove_dir_all(&dir);
        let Ok(config) = config else {
            panic!("config rejected: {config:?}");
        };
        assert_eq!(config.source, file);
        let path = &config.routes[0].stages[0].path;
        assert!(path.is_absolute(), "{path:?}");
        assert_eq!(path, &dir.join("plugins/guard.wasm"));
    }

    #[test]
    fn a_bare_file_name_resolves_against_the_working_directory() {
        let cwd = std::env::current_dir();
        assert_eq!(
            absolute_dir_of(Path::new("weir.toml")).as_path(),
            cwd.as_deref().unwrap_or(Path::new("?"))
        );
        assert_eq!(
            absolute_dir_of(Path::new("/etc/weir/weir.toml")),
            Path::new("/etc/weir")
        );
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let missing = Path::new("/nonexistent/weir.toml");
        let error = Config::load(missing).map_err(|e| e.to_string());
        let Err(message) = error else {
            panic!("a missing file loaded");
        };
        assert!(
            message.starts_with("/nonexistent/weir.toml:1:1: -: cannot read the config file: "),
            "{message}"
        );
    }
}
