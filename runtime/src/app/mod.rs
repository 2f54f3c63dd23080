//! The application state behind both listeners: what lives for the whole process (sandbox,
//! caches, ledger, HTTP client) and the [`Snapshot`] of config, stages, routes, targets and
//! keys that a request runs on, swapped whole by a reload (`reload.rs`).

mod reload;

pub use reload::{ReloadOutcome, spawn_watcher};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue};

use crate::cache::{DiskTier, ResponseCache, StageOutputCache};
use crate::config::{Config, OnErrorSetting};
use crate::cost::{Accounts, Clock, Ledger, PriceTable};
use crate::host_api::{HostServices, StageIdentity};
use crate::llm::{Costing, LlmStep, RouteStep, StageLlm};
use crate::pipeline::{OnError, Pipeline, PipelineStage, StageEnv};
use crate::providers::{ProviderClient, Upstream};
use crate::router::{RoutePlan, RoutePolicy, Router, TargetState};
use crate::sandbox::{Reaper, Sandbox, SandboxError};
use crate::stages::{LoadError, LoadedStage};

/// Why the application (or a new snapshot of it) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config file could not be used (on reload).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The sandbox could not be built.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A stage of a route could not be loaded (and no earlier version of it was serving).
    #[error("route `{route}`, stage `{stage}`: {source}")]
    Stage {
        /// The route alias.
        route: String,
        /// The stage name.
        stage: String,
        /// Why.
        source: LoadError,
    },
    /// The disk cache directory could not be opened.
    #[error("cache directory {}: {source}", dir.display())]
    CacheDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The spend ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] crate::cost::LedgerError),
    /// The job store could not be opened.
    #[error(transparent)]
    Jobs(#[from] crate::queue::StoreError),
    /// The HTTP client could not be built.
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(std::io::Error),
    /// A target header could not be used.
    #[error("target `{target}`: header `{name}`: {reason}")]
    Header {
        /// The target.
        target: String,
        /// The header name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// What one request runs on, start to end: a reload builds a new one and swaps it in whole,
/// so a request never sees two versions of anything.
pub struct Snapshot {
    /// The validated config.
    pub config: Arc<Config>,
    /// The LLM step (routes' plans, targets, prices).
    pub llm: Arc<LlmStep>,
    /// Route alias → pipeline.
    pub routes: HashMap<String, Arc<Pipeline>>,
    /// Every stage version serving, by file.
    pub stages: BTreeMap<PathBuf, Arc<LoadedStage>>,
    /// API keys and their live budgets; empty when auth is off.
    pub accounts: Accounts,
    /// 1 for the snapshot built at start, +1 per successful reload.
    pub generation: u64,
}

/// What an operator sees of one stage file in `GET /admin/stages`.
#[derive(Clone, Debug, Default)]
pub struct StageFile {
    /// When the version serving now was loaded (Unix ms).
    pub loaded_at_ms: u64,
    /// Why the last attempt to load a new version failed, if it did (cleared by a success).
    pub last_error: Option<String>,
}

/// Everything a request needs.
pub struct App {
    /// The snapshot serving now.
    live: ArcSwap<Snapshot>,
    /// The LLM step stages call, swapped with the snapshot.
    live_step: Arc<ArcSwap<LlmStep>>,
    /// Sandbox, host services, reaper, deterministic stages' outputs.
    pub env: StageEnv,
    /// The response cache (kept across reloads).
    pub cache: ResponseCache,
    /// The spend ledger (kept across reloads).
    pub ledger: Ledger,
    /// The background job queue, when some route takes jobs (built at start; its settings
    /// need a restart).
    pub jobs: Option<crate::queue::Queue>,
    /// The pooled upstream client.
    client: ProviderClient,
    /// The config file, for reloads; `None` for an app built from a parsed config alone.
    pub config_path: Option<PathBuf>,
    /// Set when shutdown began: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// One reload at a time.
    reload_lock: tokio::sync::Mutex<()>,
    /// Per stage file: when its version was loaded, and the last load error.
    stage_files: Mutex<BTreeMap<PathBuf, StageFile>>,
    /// The last config reload error, until a reload succeeds.
    config_error: Mutex<Option<String>>,
    /// Reloads asked for (by any trigger), whatever came of them.
    pub reloads_attempted: AtomicU64,
    /// Reloads that swapped in a new snapshot.
    pub reloads_ok: AtomicU64,
    /// Reloads that failed, wholly or for some stage file (the old version kept serving).
    pub reloads_failed: AtomicU64,
    /// Every stage version ever loaded, to count those still alive (held by a snapshot or
    /// by a request in flight).
    versions: Mutex<Vec<Weak<LoadedStage>>>,
    /// The recent requests behind `GET /admin/requests`.
    pub recent: crate::telemetry::Recent,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl App {
    /// Builds the sandbox, loads every stage (each file compiled once), and wires the routes.
    /// `config_path` is where reloads read the config from.
    pub async fn build(config: Config, config_path: Option<PathBuf>) -> Result<App, AppError> {
        if config.telemetry.metrics {
            crate::telemetry::init_metrics();
        }
        let recent = crate::telemetry::Recent::new(config.telemetry.recent_requests);
        let sandbox = Arc::new(Sandbox::new(config.sandbox.clone())?);
        if let Some(data_dir) = &config.data_dir {
            // Compiled stages kept on disk, signed with a key kept elsewhere: a restart
            // deserializes instead of compiling.
            let dir = data_dir.join("artifacts");
            let key = crate::sandbox::resolve_artifact_key(
                config.sandbox.artifact_key_file.as_deref(),
                Some(data_dir),
            );
            if let Some(key) = key
                && let Err(err) = sandbox.set_artifact_dir(&dir, key)
            {
                tracing::warn!(dir = %dir.display(), error = %err, "no artifact cache; stages compile at every start");
            }
        }
        let client = ProviderClient::new().map_err(AppError::Client)?;
        let mut cache = ResponseCache::new(config.cache.max_memory_bytes);
        if let Some(dir) = &config.cache.disk_dir {
            let disk = DiskTier::open(dir, config.cache.max_disk_bytes).map_err(|source| {
                AppError::CacheDir {
                    dir: dir.clone(),
                    source,
                }
            })?;
            tracing::info!(dir = %dir.display(), entries = disk.len(), "disk cache opened");
            cache = cache.with_disk(disk);
        }
        let ledger = Ledger::open(config.data_dir.as_deref(), config.cost.request_log.clone())?;
        match &config.data_dir {
            Some(dir) => tracing::info!(dir = %dir.display(), "spend ledger opened"),
            None => tracing::warn!(
                "no server.data_dir: the spend ledger is kept in memory and lost at exit"
            ),
        }
        let jobs = open_jobs(&config).await?;
        // Load the tokenizers now rather than on the first request that needs them.
        std::thread::spawn(crate::cost::tokens::warm_up);
        let live_step = Arc::new(ArcSwap::from_pointee(LlmStep::new(
            Router::new(client.clone(), Vec::new()),
            HashMap::new(),
            cache.clone(),
            costing(&config, &ledger),
        )));
        let services = Arc::new(HostServices::new(
            Arc::new(StageLlm {
                step: live_step.clone(),
            }),
            config.sandbox.log_line_max_bytes,
        ));
        let env = StageEnv {
            sandbox,
            services,
            // Measured (stage_call bench, 2 cores): dropping a store inline costs less than
            // handing it to the reaper thread, whose madvise calls then disturb the request
            // thread (median 17.6 µs inline vs 27.1 µs with the reaper).
            reaper: Reaper::inline(),
            outputs: StageOutputCache::default(),
        };
        let app = App {
            live: ArcSwap::from_pointee(Snapshot {
                config: Arc::new(config.clone()),
                llm: live_step.load_full(),
                routes: HashMap::new(),
                stages: BTreeMap::new(),
                accounts: Accounts::default(),
                generation: 0,
            }),
            live_step,
            env,
            cache,
            ledger,
            jobs,
            client,
            config_path,
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            stage_files: Mutex::new(BTreeMap::new()),
            config_error: Mutex::new(None),
            reloads_attempted: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            versions: Mutex::new(Vec::new()),
            recent,
        };
        let assembled = app.assemble(config, None).await?;
        let accounts = &assembled.snapshot.accounts;
        if accounts.auth_required() {
            tracing::info!(
                keys = assembled.snapshot.config.keys.len(),
                "API keys required"
            );
        } else {
            tracing::warn!(
                "auth is off: no [[keys]] configured, so every request is accepted without an \
                 API key and no budget applies; fine for a local demo, not for production"
            );
        }
        app.install(assembled);
        Ok(app)
    }

    /// The snapshot serving now; a request holds it from start to end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Per stage file: when its serving version was loaded and the last load error.
    pub fn stage_files(&self) -> BTreeMap<PathBuf, StageFile> {
        self.stage_files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The last config reload error, until a reload succeeds.
    pub fn config_error(&self) -> Option<String> {
        self.config_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// (stage instances alive in the pool, stage versions alive): both return to their
    /// baseline once the requests on older snapshots have finished.
    pub fn live_counts(&self) -> (u64, usize) {
        let instances = self
            .env
            .sandbox
            .engine()
            .pooling_allocator_metrics()
            .map_or(0, |m| m.component_instances());
        let mut versions = self
            .versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        versions.retain(|v| v.strong_count() > 0);
        (instances, versions.len())
    }

    /// Swaps `assembled` in: new requests run on it; requests in flight finish on theirs.
    fn install(&self, assembled: Assembled) {
        let now = unix_ms();
        {
            let mut versions = self
                .versions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            versions.retain(|v| v.strong_count() > 0);
            for path in &assembled.fresh {
                if let Some(stage) = assembled.snapshot.stages.get(path) {
                    versions.push(Arc::downgrade(stage));
                }
            }
        }
        {
            let mut files = self
                .stage_files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            files.retain(|path, _| assembled.snapshot.stages.contains_key(path));
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
        self.live_step.store(assembled.snapshot.llm.clone());
        self.live.store(Arc::new(assembled.snapshot));
    }

    /// Builds a snapshot of `config`. With a `previous` snapshot (a reload), stage files
    /// whose bytes did not change keep their loaded version, a file that fails to load keeps
    /// its previous version (and is reported in [`Assembled::failed`]), and targets and keys
    /// whose settings did not change keep their live state (breakers, budgets).
    async fn assemble(
        &self,
        config: Config,
        previous: Option<&Snapshot>,
    ) -> Result<Assembled, AppError> {
        let upstreams = self.targets(&config, previous)?;
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
                )
            }
            None => Accounts::new(&config.keys, &self.ledger, &Clock::default()),
        };
        let llm = Arc::new(LlmStep::new(
            Router::new(self.client.clone(), upstreams),
            plans,
            self.cache.clone(),
            costing(&config, &self.ledger),
        ));

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
                        let earlier = previous.and_then(|p| p.stages.get(&spec.path));
                        let stage = match self.load_stage(&spec.path, earlier).await {
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
                                        "stage file rejected; the previous version keeps serving"
                                    );
                                    failed.push((spec.path.clone(), source.to_string()));
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
                pipeline.push(PipelineStage {
                    identity: Arc::new(StageIdentity {
                        name: spec.name.as_str().into(),
                        label: stage.label(&spec.name).into(),
                        config: spec.config.clone(),
                    }),
                    stage,
                    on_error: match spec.on_error {
                        OnErrorSetting::Fail => OnError::Fail,
                        OnErrorSetting::Skip => OnError::Skip,
                    },
                    limits: spec.limits,
                });
            }
            routes.insert(
                route.model.clone(),
                Arc::new(Pipeline {
                    route: route.model.as_str().into(),
                    stages: pipeline,
                }),
            );
        }
        let generation = previous.map_or(1, |p| p.generation + 1);
        Ok(Assembled {
            snapshot: Snapshot {
                config: Arc::new(config),
                llm,
                routes,
                stages,
                accounts,
                generation,
            },
            fresh,
            failed,
        })
    }

    /// The file at `path`: the `earlier` version when its bytes did not change, else a new
    /// load (read, compile, check the world, `describe()`).
    async fn load_stage(
        &self,
        path: &Path,
        earlier: Option<&Arc<LoadedStage>>,
    ) -> Result<Loaded, LoadError> {
        let bytes = LoadedStage::read(path).await?;
        if let Some(earlier) = earlier
            && blake3::hash(&bytes) == earlier.digest
        {
            return Ok(Loaded::Unchanged(earlier.clone()));
        }
        let stage =
            LoadedStage::from_bytes(&self.env.sandbox, &self.env.services, path, bytes).await?;
        Ok(Loaded::New(Arc::new(stage)))
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
            let upstream = Arc::new(Upstream {
                name: target.name.as_str().into(),
                base_url: target.base_url.clone(),
                api_key: target.api_key.clone(),
                model: target.model.clone(),
                timeout: target.timeout,
                ttft_timeout: target.ttft_timeout,
                headers,
            });
            upstreams.push(Arc::new(TargetState::new(upstream, target.limits)));
        }
        Ok(upstreams)
    }
}

/// A stage file, loaded.
enum Loaded {
    /// Same bytes as the version serving: that version.
    Unchanged(Arc<LoadedStage>),
    /// A new version.
    New(Arc<LoadedStage>),
}

/// A snapshot ready to swap in, and what happened to its stage files.
struct Assembled {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Files loaded anew.
    pub fresh: Vec<PathBuf>,
    /// Files whose new bytes were rejected (the previous version kept), with why.
    pub failed: Vec<(PathBuf, String)>,
}

/// The job queue, when some route of `config` takes jobs.
async fn open_jobs(config: &Config) -> Result<Option<crate::queue::Queue>, AppError> {
    let routes: HashMap<String, u32> = config
        .routes
        .iter()
        .filter_map(|r| Some((r.model.clone(), r.jobs?.concurrency)))
        .collect();
    if routes.is_empty() {
        return Ok(None);
    }
    let queue =
        crate::queue::Queue::open(config.jobs.clone(), routes, config.data_dir.as_deref()).await?;
    match &config.data_dir {
        Some(dir) => tracing::info!(dir = %dir.display(), "job queue opened"),
        None => tracing::warn!(
            "no server.data_dir: background jobs are kept in memory and lost at exit"
        ),
    }
    Ok(Some(queue))
}

/// The LLM step's costing for `config`.
fn costing(config: &Config, ledger: &Ledger) -> Costing {
    Costing {
        prices: PriceTable::new(&config.cost),
        ledger: ledger.clone(),
        default_max_tokens: config.cost.default_max_tokens,
        count_failed_attempts: config.cost.count_failed_attempts,
        fuel_pico_per_million: config.cost.fuel_pico_per_million,
    }
}
