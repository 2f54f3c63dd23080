//! A snapshot of a config, and swapping it in. With a previous snapshot (a reload), stage
//! files whose bytes did not change keep their loaded version and targets and keys whose
//! settings did not change keep their live state.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

use super::{App, AppError, Snapshot, StageFile};
use crate::config::{Config, OnErrorSetting, StageSettings};
use crate::cost::{Accounts, Clock, Ledger, PriceTable};
use crate::host_api::StageIdentity;
use crate::llm::{Costing, LlmStep, RouteStep};
use crate::pipeline::{OnError, Pipeline, PipelineStage};
use crate::providers::{Dialect, Upstream};
use crate::router::{RoutePlan, RoutePolicy, Router, TargetState};
use crate::service::{Service, Services};
use crate::stages::{LoadError, LoadedStage};

impl App {
    /// Swaps `assembled` in: new requests run on it; requests in flight finish on theirs.
    pub(super) fn install(&self, assembled: Assembled) {
        let now = crate::clock::unix_ms();
        {
            let mut versions = crate::sync::lock(&self.versions);
            versions.retain(|v| v.strong_count() > 0);
            for path in &assembled.fresh {
                if let Some(stage) = assembled.snapshot.stages.get(path) {
                    versions.push(Arc::downgrade(stage));
                }
            }
        }
        {
            let mut files = crate::sync::lock(&self.stage_files);
            // Keyed by the path of the version serving (an OCI stage whose new digest failed
            // to pull keeps its old one, under the new path's key).
            let serving: std::collections::BTreeSet<&PathBuf> = assembled
                .snapshot
                .stages
                .values()
                .map(|s| &s.path)
                .collect();
            files.retain(|path, _| serving.contains(path));
            // Each file's error is its last load's: one that loads now (again) has none.
            for (path, file) in files.iter_mut() {
                if !assembled.failed.iter().any(|(failed, _)| failed == path) {
                    file.last_error = None;
                }
            }
            for path in &assembled.fresh {
                files.insert(
                    path.clone(),
                    StageFile {
                        loaded_at_ms: now,
                        last_error: None,
                    },
                );
            }
            for (path, error) in &assembled.failed {
                files.entry(path.clone()).or_default().last_error = Some(error.clone());
            }
        }
        crate::telemetry::label_models(&assembled.snapshot.config);
        self.live_step.store(assembled.snapshot.llm.clone());
        self.live.store(Arc::new(assembled.snapshot));
    }

    /// Builds a snapshot of `config`. With a `previous` snapshot (a reload), stage files
    /// whose bytes did not change keep their loaded version, a file that fails to load keeps
    /// its previous version (and is reported in [`Assembled::failed`]), and targets and keys
    /// whose settings did not change keep their live state (breakers, budgets).
    pub(super) async fn assemble(
        &self,
        config: Config,
        previous: Option<&Snapshot>,
    ) -> Result<Assembled, AppError> {
        let upstreams = self.targets(&config, previous)?;
        // The tokenizers this config counts with on every request load beside the stages'
        // compilation and are ready before it serves: a request must not wait for a load.
        let models = counted_models(&config);
        let tokenizers = tokio::task::spawn_blocking(move || {
            crate::cost::tokens::warm_up(models.iter().map(String::as_str));
        });
        let plans = config
            .routes
            .iter()
            .map(|route| {
                let plan = RoutePlan {
                    chain: route.targets.clone(),
                    policy: RoutePolicy::new(route.policy),
                    strategy: route.strategy,
                    weights: route.weights.clone(),
                };
                let step = RouteStep {
                    plan,
                    cache: route.cache,
                };
                (route.model.clone(), step)
            })
            .collect();
        let accounts = match previous {
            Some(previous) => {
                // What the old accounts settled is in the ledger before a changed key reads it.
                let ledger = self.ledger.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    ledger.flush(std::time::Duration::from_secs(5))
                })
                .await;
                Accounts::rebuild(
                    &config.keys,
                    &previous.accounts,
                    &self.ledger,
                    &Clock::default(),
                    self.state.as_ref(),
                )
            }
            None => Accounts::new(
                &config.keys,
                &self.ledger,
                &Clock::default(),
                self.state.as_ref(),
            ),
        }
        .with_fleet_limits(self.state.as_ref());
        let llm = Arc::new(LlmStep::new(
            Router::new(self.client.clone(), upstreams),
            plans,
            self.cache.clone(),
            costing(&config, &self.ledger),
        ));

        let services = self.services(&config, previous);
        // Made only when some stage is an OCI artifact.
        let puller = (config.routes.iter())
            .any(|route| route.stages.iter().any(|s| s.oci.is_some()))
            .then(|| crate::oci::Puller::new(config.oci.clone(), self.oci_store.clone()));
        let mut pulled = match &puller {
            Some(puller) => pull_all(&config, previous, puller).await,
            None => HashMap::new(),
        };
        let mut stages: BTreeMap<PathBuf, Arc<LoadedStage>> = BTreeMap::new();
        let mut fresh = Vec::new();
        let mut failed = Vec::new();
        let mut routes = HashMap::new();
        for route in &config.routes {
            let mut pipeline = Vec::new();
            for spec in &route.stages {
                let stage = match stages.get(&spec.path) {
                    Some(stage) => stage.clone(),
                    None => {
                        let earlier = previous.and_then(|p| earlier_version(p, &route.model, spec));
                        let loaded =
                            (self.load_stage(spec, earlier, pulled.remove(&spec.path))).await;
                        let stage = match loaded {
                            Ok(Loaded::Unchanged(stage)) => stage,
                            Ok(Loaded::New(stage)) => {
                                tracing::info!(
                                    stage = %spec.name,
                                    path = %spec.path.display(),
                                    version = %stage.digest.to_hex(),
                                    origin = ?stage.origin,
                                    load_ms = stage.load_time.as_secs_f64() * 1e3,
                                    "stage loaded"
                                );
                                fresh.push(spec.path.clone());
                                stage
                            }
                            Err(source) => match earlier {
                                Some(earlier) => {
                                    tracing::warn!(
                                        stage = %spec.name,
                                        error = %source,
                                        version = %earlier.digest.to_hex(),
                                        serving = %earlier.path.display(),
                                        "stage rejected; the previous version keeps serving"
                                    );
                                    let mut error = source.to_string();
                                    if earlier.path != spec.path {
                                        error.push_str(&format!(
                                            "; {} keeps serving",
                                            earlier.path.display()
                                        ));
                                    }
                                    failed.push((earlier.path.clone(), error));
                                    earlier.clone()
                                }
                                None => {
                                    return Err(AppError::Stage {
                                        route: route.model.clone(),
                                        stage: spec.name.clone(),
                                        source,
                                    });
                                }
                            },
                        };
                        stages.insert(spec.path.clone(), stage.clone());
                        stage
                    }
                };
                check_config_keys(&stage, spec)?;
                pipeline.push(PipelineStage {
                    identity: Arc::new(StageIdentity {
                        name: spec.name.as_str().into(),
                        label: stage.label(&spec.name).into(),
                        config: spec.config.clone(),
                        max_llm_calls: spec.max_llm_calls,
                        services: Arc::new(
                            (spec.services.iter())
                                .filter_map(|name| services.get(name).cloned())
                                .collect(),
                        ),
                    }),
                    stage,
                    on_error: match spec.on_error {
                        OnErrorSetting::Fail => OnError::Fail,
                        OnErrorSetting::Skip => OnError::Skip,
                        OnErrorSetting::Degrade => OnError::Degrade,
                    },
                    limits: spec.limits,
                });
            }
            routes.insert(
                route.model.clone(),
                Arc::new(Pipeline {
                    route: route.model.as_str().into(),
                    stages: pipeline,
                    max_output_retries: route.max_output_retries,
                }),
            );
        }
        let generation = previous.map_or(1, |p| p.generation + 1);
        if let Err(err) = tokenizers.await {
            tracing::warn!(%err, "loading the tokenizers failed; the first count loads them");
        }
        Ok(Assembled {
            snapshot: Snapshot {
                config: Arc::new(config),
                llm,
                routes,
                stages,
                accounts,
                generation,
                services,
            },
            fresh,
            failed,
        })
    }

    /// The stage `spec` names: the `earlier` version when it is the same (a file whose bytes
    /// did not change, the same pinned artifact), else a new load (read, or the artifact
    /// [`pull_all`] fetched for it; compile, check the world, `describe()`).
    async fn load_stage(
        &self,
        spec: &StageSettings,
        earlier: Option<&Arc<LoadedStage>>,
        pulled: Option<Result<crate::oci::Pulled, crate::oci::OciError>>,
    ) -> Result<Loaded, LoadError> {
        let same_source = earlier.filter(|e| e.path == spec.path);
        let (bytes, artifact) = match (&spec.oci, pulled) {
            (Some(_), Some(pulled)) => {
                let pulled = pulled?;
                (pulled.bytes, Some(pulled.artifact))
            }
            // A pinned artifact serving already: `pull_all` left it out.
            (Some(_), None) => match same_source {
                Some(earlier) => return Ok(Loaded::Unchanged(earlier.clone())),
                None => (LoadedStage::read(&spec.path).await?, None),
            },
            (None, _) => (LoadedStage::read(&spec.path).await?, None),
        };
        if let Some(earlier) = same_source
            && blake3::hash(&bytes) == earlier.digest
        {
            return Ok(Loaded::Unchanged(earlier.clone()));
        }
        let mut stage =
            LoadedStage::from_bytes(&self.env.sandbox, &self.env.services, &spec.path, bytes)
                .await?;
        stage.artifact = artifact;
        Ok(Loaded::New(Arc::new(stage)))
    }

    /// Each service's live state: kept from `previous` when its settings did not change (its
    /// breakers, cache and latency history carry on), else new.
    fn services(&self, config: &Config, previous: Option<&Snapshot>) -> Services {
        (config.services.iter())
            .map(|settings| {
                let kept = previous
                    .and_then(|p| p.services.get(&settings.name))
                    .filter(|s| s.settings == *settings);
                let service = match kept {
                    Some(service) => service.clone(),
                    None => Arc::new(Service::new(
                        settings,
                        self.client.clone(),
                        self.ledger.clone(),
                    )),
                };
                (settings.name.clone(), service)
            })
            .collect()
    }

    /// Each target's live state: kept from `previous` when its settings did not change (so
    /// its breaker, limits and latency history carry on), else new.
    fn targets(
        &self,
        config: &Config,
        previous: Option<&Snapshot>,
    ) -> Result<Vec<Arc<TargetState>>, AppError> {
        let mut upstreams = Vec::with_capacity(config.targets.len());
        for target in &config.targets {
            let kept = previous.and_then(|p| {
                let index = p.config.targets.iter().position(|t| t == target)?;
                p.llm.router().targets().get(index).cloned()
            });
            if let Some(state) = kept {
                upstreams.push(state);
                continue;
            }
            let mut headers = Vec::new();
            for (name, value) in &target.headers {
                let header_err = |reason: String| AppError::Header {
                    target: target.name.clone(),
                    name: name.clone(),
                    reason,
                };
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| header_err(e.to_string()))?;
                let value = HeaderValue::from_str(value).map_err(|e| header_err(e.to_string()))?;
                headers.push((name, value));
            }
            let dialect = Dialect::of(target);
            let upstream = Arc::new(Upstream {
                name: target.name.as_str().into(),
                base_url: target.base_url.clone(),
                signing: dialect.signing(target.api_key.as_deref()),
                dialect,
                model: target.model.clone(),
                timeout: target.timeout,
                ttft_timeout: target.ttft_timeout,
                stream_json: target.stream_json,
                headers,
            });
            let state = TargetState::new(upstream, target.limits).with_fleet(self.state.as_ref());
            upstreams.push(Arc::new(state));
        }
        Ok(upstreams)
    }
}

/// The version serving before a reload for the stage `spec` of `route`: the one loaded from
/// the same path; for an OCI artifact, else the one serving at the same route and stage
/// name, so that a new digest that cannot be pulled (a registry down, a typo) leaves the old
/// version serving rather than rejecting the whole reload.
fn earlier_version<'a>(
    previous: &'a Snapshot,
    route: &str,
    spec: &StageSettings,
) -> Option<&'a Arc<LoadedStage>> {
    if let Some(stage) = previous.stages.get(&spec.path) {
        return Some(stage);
    }
    spec.oci.as_ref()?;
    let pipeline = previous.routes.get(route)?;
    let stage = pipeline
        .stages
        .iter()
        .find(|s| *s.identity.name == *spec.name)?;
    Some(&stage.stage)
}

/// A stage file, loaded.
enum Loaded {
    /// Same bytes as the version serving: that version.
    Unchanged(Arc<LoadedStage>),
    /// A new version.
    New(Arc<LoadedStage>),
}

/// A snapshot ready to swap in, and what happened to its stage files.
pub(super) struct Assembled {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Files loaded anew.
    pub fresh: Vec<PathBuf>,
    /// Files whose new bytes were rejected (the previous version kept), with why.
    pub failed: Vec<(PathBuf, String)>,
}

/// The LLM step's costing for `config`.
pub(super) fn costing(config: &Config, ledger: &Ledger) -> Costing {
    Costing {
        prices: PriceTable::new(&config.cost),
        ledger: ledger.clone(),
        default_max_tokens: config.cost.default_max_tokens,
        count_failed_attempts: config.cost.count_failed_attempts,
        fuel_pico_per_million: config.cost.fuel_pico_per_million,
    }
}

/// The models whose tokens `config` counts on every request, so their tables load before it
/// serves: with a key that limits spend (a budget, a per-request cost cap or TPM reserves each
/// call's prompt) or a target with a TPM limit, every route's model and every pinned target
/// model; else the models of the routes with stages (a stage may count tokens, as
/// `context-trim` does, and a first count that waited for a table would spend the stage's
/// deadline on it). None for a config with neither: then a table loads on its first need (an
/// answer without usage), and a node that never needs one never holds one (o200k alone is
/// about 40 MB).
fn counted_models(config: &Config) -> Vec<String> {
    let every_call = config.keys.iter().any(|key| key.limits_spend())
        || config.targets.iter().any(|t| t.limits.tpm.is_some());
    let pinned = |route: &crate::config::RouteSettings| {
        let targets = route.targets.iter().filter_map(|&i| config.targets.get(i));
        targets
            .filter_map(|t| t.model.clone())
            .chain([route.model.clone()])
            .collect::<Vec<_>>()
    };
    config
        .routes
        .iter()
        .filter(|route| every_call || !route.stages.is_empty())
        .flat_map(pinned)
        .collect()
}

/// A config table that sets a key its stage did not declare (`config-keys`) is refused at the
/// key's line: a misspelled key must not be silently ignored. A stage that declares nothing
/// accepts any key.
/// Every OCI artifact `config`'s stages need, fetched side by side (one slow or hung registry
/// costs a reload one `pull_timeout_ms`, not one per stage: fourth probe, C4), by stage path.
/// A pinned artifact already serving (in `previous`, at the same path) is left out: it cannot
/// have changed.
async fn pull_all(
    config: &Config,
    previous: Option<&Snapshot>,
    puller: &crate::oci::Puller,
) -> HashMap<PathBuf, Result<crate::oci::Pulled, crate::oci::OciError>> {
    let mut wanted: BTreeMap<&PathBuf, &crate::oci::Reference> = BTreeMap::new();
    for route in &config.routes {
        for spec in &route.stages {
            let Some(reference) = &spec.oci else { continue };
            let serving = previous
                .and_then(|p| earlier_version(p, &route.model, spec))
                .is_some_and(|earlier| earlier.path == spec.path);
            if !(serving && reference.digest.is_some()) {
                wanted.insert(&spec.path, reference);
            }
        }
    }
    let fetches = wanted
        .into_iter()
        .map(|(path, reference)| async move { (path.clone(), puller.fetch(reference).await) });
    futures_util::future::join_all(fetches)
        .await
        .into_iter()
        .collect()
}

fn check_config_keys(stage: &LoadedStage, spec: &StageSettings) -> Result<(), AppError> {
    let Some(keys) = &stage.config_keys else {
        return Ok(());
    };
    match spec.config_at.iter().find(|(key, _)| !keys.contains(*key)) {
        None => Ok(()),
        Some((key, at)) => {
            let known = keys.iter().map(String::as_str).collect::<Vec<_>>();
            let known = match known.is_empty() {
                true => "none".to_string(),
                false => known.join(", "),
            };
            Err(AppError::Config(crate::config::ConfigError {
                message: format!(
                    "stage {} {} has no config key `{key}`; its keys: {known}",
                    stage.info.name, stage.info.version
                ),
                ..at.clone()
            }))
        }
    }
}
