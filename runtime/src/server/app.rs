//! The application state behind both listeners, built once from a validated [`Config`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

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

/// Why the application could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The sandbox could not be built.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A stage of a route could not be loaded.
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

/// Everything a request needs.
pub struct App {
    /// The validated config the app was built from.
    pub config: Arc<Config>,
    /// Sandbox, host services, reaper.
    pub env: StageEnv,
    /// The LLM step.
    pub llm: Arc<LlmStep>,
    /// Route alias → pipeline.
    pub routes: HashMap<String, Arc<Pipeline>>,
    /// Every loaded stage version, by file.
    pub stages: Vec<Arc<LoadedStage>>,
    /// Set when shutdown began: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// API keys and their live budgets; empty when auth is off.
    pub accounts: Accounts,
    /// The spend ledger.
    pub ledger: Ledger,
}

impl App {
    /// Builds the sandbox, loads every stage (each file compiled once), and wires the routes.
    pub async fn build(config: Config) -> Result<App, AppError> {
        let sandbox = Arc::new(Sandbox::new(config.sandbox.clone())?);
        let client = ProviderClient::new().map_err(AppError::Client)?;
        let mut upstreams = Vec::new();
        for target in &config.targets {
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
        let accounts = Accounts::new(&config.keys, &ledger, &Clock::default());
        if accounts.auth_required() {
            tracing::info!(keys = config.keys.len(), "API keys required");
        } else {
            tracing::warn!(
                "auth is off: no [[keys]] configured, so every request is accepted without an \
                 API key and no budget applies; fine for a local demo, not for production"
            );
        }
        let costing = Costing {
            prices: PriceTable::new(&config.cost),
            ledger: ledger.clone(),
            default_max_tokens: config.cost.default_max_tokens,
            count_failed_attempts: config.cost.count_failed_attempts,
            fuel_pico_per_million: config.cost.fuel_pico_per_million,
        };
        // Load the tokenizers now rather than on the first request that needs them.
        std::thread::spawn(crate::cost::tokens::warm_up);
        let llm = Arc::new(LlmStep::new(
            Router::new(client, upstreams),
            plans,
            cache,
            costing,
        ));
        let services = Arc::new(HostServices::new(
            Arc::new(StageLlm { step: llm.clone() }),
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

        let mut loaded: HashMap<PathBuf, Arc<LoadedStage>> = HashMap::new();
        let mut routes = HashMap::new();
        for route in &config.routes {
            let mut stages = Vec::new();
            for spec in &route.stages {
                let stage = match loaded.get(&spec.path) {
                    Some(stage) => stage.clone(),
                    None => {
                        let stage = LoadedStage::load(&env.sandbox, &env.services, &spec.path)
                            .await
                            .map_err(|source| AppError::Stage {
                                route: route.model.clone(),
                                stage: spec.name.clone(),
                                source,
                            })?;
                        tracing::info!(
                            stage = %spec.name,
                            path = %spec.path.display(),
                            version = %stage.digest.to_hex(),
                            "stage loaded"
                        );
                        let stage = Arc::new(stage);
                        loaded.insert(spec.path.clone(), stage.clone());
                        stage
                    }
                };
                stages.push(PipelineStage {
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
                    stages,
                }),
            );
        }
        Ok(App {
            config: Arc::new(config),
            env,
            llm,
            routes,
            stages: loaded.into_values().collect(),
            draining: AtomicBool::new(false),
            accounts,
            ledger,
        })
    }
}
