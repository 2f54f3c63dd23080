//! `[[routes]]` and `[[routes.stages]]`: which model alias runs which stages in front of which
//! targets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::cache::RouteCacheSettings;
use super::check::Source;
use super::error::{ConfigError, line_column};
use super::jobs::RouteJobsSettings;
use super::routing::{PolicySettings, Strategy, check_policy};
use super::sandbox::{CallLimits, SandboxSettings, stage_limits};
use super::service::ServiceSettings;
use super::target::TargetSettings;
use crate::oci::SCHEME as OCI_SCHEME;

use super::value::{Bounded, Int, Val, choices, lossy, mask_values, name, path};

/// Most LLM calls one stage may make in one request when its table does not say
/// (`max_llm_calls`).
pub const DEFAULT_STAGE_LLM_CALLS: u32 = 4;

/// One validated route.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RouteSettings {
    /// The alias clients send as `model`; unique across routes.
    pub model: String,
    /// The fallback chain by name, as the `targets` key writes it.
    #[serde(rename = "targets")]
    pub target_names: Vec<String>,
    /// The fallback chain, in order: indexes into [`Config::targets`](super::Config::targets),
    /// non-empty and without duplicates.
    #[serde(skip)]
    pub targets: Vec<usize>,
    /// The stages, in pipeline (request) order; names unique within the route.
    #[serde(default)]
    pub stages: Vec<StageSettings>,
    /// Whether and how answers are cached (default: not cached).
    #[serde(default)]
    pub cache: RouteCacheSettings,
    /// Whether the route takes background jobs (`POST /v1/jobs`), and how many run at once
    /// (default `None`: jobs are opt-in per route).
    #[serde(deserialize_with = "enabled_jobs", default)]
    pub jobs: Option<RouteJobsSettings>,
    /// How the first attempt's target is chosen.
    #[serde(default)]
    pub strategy: Strategy,
    /// One weight per target in [`Self::targets`] (default 1 each), at least one above 0,
    /// for [`Strategy::Weighted`].
    #[serde(deserialize_with = "weights", default)]
    pub weights: Vec<u32>,
    /// Attempts, deadline, backoff, retry budget and wait queue.
    #[serde(rename = "(policy)", default)]
    pub policy: PolicySettings,
    /// Most LLM calls one request on this route may make, in place of
    /// `cost.max_llm_calls_per_request` (`None`: that one); a key may only lower it.
    #[serde(with = "Int::<1, 10_000>", default)]
    pub max_llm_calls_per_request: Option<u32>,
    /// How many times a response-phase stage may send the answer back to the model
    /// (`retry-response`, as `json-guard` does) before the client gets 502
    /// `invalid_model_output`; each retry is one more LLM call, counted and billed, within
    /// the request's deadline and budget. 0 to 5, default 2.
    #[serde(with = "Int::<0, 5>", default = "Val::<2>::int")]
    pub max_output_retries: u32,
}

/// One validated stage of a route.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct StageSettings {
    /// `[a-z0-9_-]+`, 1 to 64 characters; unique within the route.
    #[serde(deserialize_with = "name")]
    pub name: String,
    /// The component: a file (absolute as written, or joined to the config file's directory)
    /// or an OCI artifact, `oci://REGISTRY/REPOSITORY@sha256:DIGEST` (see `[oci]`).
    #[serde(deserialize_with = "path", serialize_with = "lossy")]
    pub path: PathBuf,
    /// The parsed reference when `path` names an OCI artifact.
    #[serde(skip)]
    pub oci: Option<crate::oci::Reference>,
    /// What a failure of this stage does to the request.
    #[serde(default)]
    pub on_error: OnErrorSetting,
    /// The `[sandbox]` defaults with this stage's `fuel`, `deadline_ms` and
    /// `memory_limit_mib` overrides applied.
    #[serde(rename = "(limits)", default)]
    pub limits: CallLimits,
    /// Most LLM calls (`complete()` and `embed()`) this stage may make in one request, so
    /// that one stage cannot use the request's whole allowance; the request's limit applies
    /// too.
    #[serde(with = "Int::<1, 10_000>")]
    #[serde(default = "Val::<{ DEFAULT_STAGE_LLM_CALLS as u64 }>::int")]
    pub max_llm_calls: u32,
    /// The stage's `config` table, each value rendered as a string: TOML strings as they are,
    /// everything else as compact JSON (`8000`, `true`, `["a","b"]`, `{"k":1}`).
    #[serde(deserialize_with = "super::stage_config::render_all", default)]
    #[serde(serialize_with = "mask_values")]
    pub config: BTreeMap<String, String>,
    /// Where the file sets each `config` key: an error at that key, with no message yet. A
    /// stage that declares its keys (`config-keys`) has the others refused with it at load.
    #[serde(skip)]
    pub config_at: BTreeMap<String, ConfigError>,
    /// The `[services.NAME]` the stage may call (`http://NAME/...` through `wasi:http`, or by
    /// name through the `services` import); none by default, and then the stage cannot open
    /// any connection.
    #[serde(default)]
    pub services: Vec<String>,
}

choices! {
    /// A stage's failure policy (`on_error`).
    pub enum OnErrorSetting {
        /// Fail the request. The default: a guard that crashed must not let everything
        /// through.
        Fail = "fail",
        /// Continue as if the stage were not there.
        Skip = "skip",
        /// Continue as if the stage were not there, and say so: the response carries
        /// `x-weir-degraded: <stage>` and `weir_degraded_total` counts it, so an answer
        /// without (say) its retrieved context is a decision in config, not an accident.
        Degrade = "degrade",
    }
}

/// `deserialize_with = "weights"`: weights of 0 to 1,000,000 (a route's targets, a service's
/// URLs).
pub(crate) fn weights<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    let weights = Vec::<Bounded<0, 1_000_000>>::deserialize(d)?;
    Ok(weights.into_iter().map(|w| w.0 as u32).collect())
}

/// A route's `jobs` table, `None` when it says `enabled = false`.
fn enabled_jobs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RouteJobsSettings>, D::Error> {
    Ok(Option::<RouteJobsSettings>::deserialize(d)?.filter(|jobs| jobs.enabled))
}

/// The second pass over `[[routes]]`: at least one, each checked against the validated
/// targets and sandbox defaults, model aliases unique.
pub(crate) fn check_all(
    routes: &mut [RouteSettings],
    targets: &[TargetSettings],
    services: &[ServiceSettings],
    sandbox: &SandboxSettings,
    oci: &super::OciSettings,
    src: &Source<'_>,
) -> Result<(), ConfigError> {
    let message = "expected at least one [[routes]] table, with the `model` alias clients send \
                   and the `targets` to try";
    src.ensure(!routes.is_empty(), "routes", message)?;
    for index in 0..routes.len() {
        let key = format!("routes[{index}]");
        check(&mut routes[index], &key, targets, sandbox, src)?;
        for (i, stage) in routes[index].stages.iter_mut().enumerate() {
            let stage_key = format!("{key}.stages[{i}]");
            super::service::check_grants(&stage.services, services, src, &stage_key)?;
            if let Some(text) = stage.path.to_str().filter(|p| p.starts_with(OCI_SCHEME)) {
                let path_key = format!("{stage_key}.path");
                let reference = super::oci::stage_reference(text, oci, src, &path_key)?;
                // The canonical form names the stage everywhere (reloads, /admin/stages).
                stage.path = PathBuf::from(reference.to_string());
                stage.oci = Some(reference);
            }
        }
        let model = &routes[index].model;
        if let Some(first) = routes[..index].iter().position(|r| r.model == *model) {
            let line = line_of(src, &format!("routes[{first}].model"));
            let message = format!(
                "expected a model alias used by no other route; `{model}` is already the model \
                 of routes[{first}] (line {line})"
            );
            return Err(src.error(&format!("{key}.model"), message));
        }
    }
    Ok(())
}

/// The line `key` is on.
fn line_of(src: &Source<'_>, key: &str) -> usize {
    line_column(src.text, src.span(key).start).0
}

fn check(
    route: &mut RouteSettings,
    key: &str,
    targets: &[TargetSettings],
    sandbox: &SandboxSettings,
    src: &Source<'_>,
) -> Result<(), ConfigError> {
    let message = "expected the model alias clients send, like \"demo\", got an empty string";
    src.ensure(
        !route.model.trim().is_empty(),
        &format!("{key}.model"),
        message,
    )?;
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let defined = match names.is_empty() {
        true => "no targets are defined (add a [targets.NAME] table)".to_owned(),
        false => format!("defined targets: {}", names.join(", ")),
    };
    if route.target_names.is_empty() {
        let message = format!("expected at least one target name; {defined}");
        return Err(src.error(&format!("{key}.targets"), message));
    }
    route.targets.clear();
    for (i, name) in route.target_names.iter().enumerate() {
        let target_key = format!("{key}.targets[{i}]");
        let Some(index) = names.iter().position(|n| n == name) else {
            let message = format!("unknown target `{name}`; {defined}");
            return Err(src.error(&target_key, message));
        };
        if let Some(first) = route.targets.iter().position(|&t| t == index) {
            let message = format!(
                "expected each target once per route; `{name}` is already {key}.targets[{first}]"
            );
            return Err(src.error(&target_key, message));
        }
        route.targets.push(index);
    }
    for i in 0..route.stages.len() {
        let stage_key = format!("{key}.stages[{i}]");
        let stage = &mut route.stages[i];
        let message = "expected the path of a stage component (.wasm), got an empty string";
        let path_key = format!("{stage_key}.path");
        src.ensure(!stage.path.as_os_str().is_empty(), &path_key, message)?;
        // An `oci://` reference is checked by `check_all`, with the `[oci]` settings.
        if !stage.path.to_string_lossy().starts_with(OCI_SCHEME) {
            stage.path = src.resolve(&stage.path);
        }
        stage_limits(&mut stage.limits, sandbox, src, &stage_key)?;
        stage.config_at = (stage.config.keys())
            .map(|name| {
                let key = format!("{stage_key}.config.{}", super::error::key_segment(name));
                (name.clone(), src.error(&key, ""))
            })
            .collect();
        let name = &route.stages[i].name;
        if let Some(first) = route.stages[..i].iter().position(|s| s.name == *name) {
            let line = line_of(src, &format!("{key}.stages[{first}].name"));
            let message = format!(
                "expected stage names to be unique within a route; `{name}` is already \
                 {key}.stages[{first}] (line {line})"
            );
            return Err(src.error(&format!("{stage_key}.name"), message));
        }
    }
    check_policy(&mut route.policy, src, key)?;
    let count = route.targets.len();
    check_weights(&mut route.weights, count, "target", src, key)?;
    super::cache::check_route(&mut route.cache, src, key, targets)
}

/// The second pass over `{key}.weights`: one per `unit` (`count` of them; 1 each when the key
/// is not written), at least one above 0.
pub(crate) fn check_weights(
    weights: &mut Vec<u32>,
    count: usize,
    unit: &str,
    src: &Source<'_>,
    key: &str,
) -> Result<(), ConfigError> {
    let weights_key = format!("{key}.weights");
    if !src.written(&weights_key) {
        *weights = vec![1; count];
    } else if weights.len() != count {
        let message = format!(
            "expected one weight per {unit} ({count} {unit}s), got {}",
            weights.len()
        );
        return Err(src.error(&weights_key, message));
    }
    let some_weight = weights.iter().any(|w| *w > 0);
    src.ensure(
        some_weight,
        &weights_key,
        "expected at least one weight above 0",
    )
}
