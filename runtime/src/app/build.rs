//! [`App::build`]: everything made once at start (sandbox, caches, ledger, job queue, HTTP
//! client), then the first snapshot.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::assemble::costing;
use super::{App, AppError, Snapshot};
use crate::cache::{DiskTier, ResponseCache, StageOutputCache};
use crate::config::Config;
use crate::cost::{Accounts, Ledger};
use crate::host_api::HostServices;
use crate::llm::{LlmStep, StageLlm};
use crate::pipeline::StageEnv;
use crate::providers::ProviderClient;
use crate::router::Router;
use crate::sandbox::{Reaper, Sandbox};

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
        let oci_store = match &config.data_dir {
            Some(data_dir) => match crate::oci::BlobStore::open(&data_dir.join("oci")) {
                Ok(store) => Some(store),
                Err(err) => {
                    tracing::warn!(error = %err, "no store for OCI stage artifacts; every start pulls them");
                    None
                }
            },
            None => None,
        };
        // The fleet's shared state first: every shared feature below is built on it.
        let state = crate::state::Shared::open(&config.state).await?;
        let client = ProviderClient::new().map_err(AppError::Client)?;
        let mut cache = ResponseCache::new(config.cache.max_memory_bytes)
            .with_semantic_bytes(config.cache.semantic_max_bytes);
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
        if let Some(shared) = state.as_ref().and_then(crate::state::SharedCache::new) {
            cache = cache.with_shared(shared);
        }
        let ledger = Ledger::open(config.data_dir.as_deref(), config.cost.request_log.clone())?;
        match &config.data_dir {
            Some(dir) => tracing::info!(dir = %dir.display(), "spend ledger opened"),
            None => tracing::warn!(
                "no server.data_dir: the spend ledger is kept in memory and lost at exit"
            ),
        }
        if let Some(state) = &state {
            // Every ledger row also goes to the fleet's spend aggregate, through the ledger's
            // outbox (rows a killed process left there ship now).
            state.spend.attach(&ledger);
        }
        let jobs = open_jobs(&config, state.as_ref()).await?;
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
            // Teardown in a task of its own on the same worker, after the request moved on
            // (see `sandbox::reaper` for the measurements against inline and the thread).
            reaper: Reaper::deferred(),
            outputs: StageOutputCache::new(config.cache.stage_outputs_max_bytes),
        };
        let app = App {
            live: ArcSwap::from_pointee(Snapshot {
                config: Arc::new(config.clone()),
                llm: live_step.load_full(),
                routes: HashMap::new(),
                stages: BTreeMap::new(),
                accounts: Accounts::default(),
                generation: 0,
                services: Default::default(),
            }),
            live_step,
            env,
            cache,
            ledger,
            jobs,
            state,
            client,
            oci_store,
            config_path,
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            stage_files: Mutex::new(BTreeMap::new()),
            config_error: Mutex::new(None),
            reloads_attempted: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            reload_history: Mutex::new(std::collections::VecDeque::new()),
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
}

/// The job queue, when some route of `config` takes jobs.
/// With `state` (the fleet's Redis), the jobs live there.
async fn open_jobs(
    config: &Config,
    state: Option<&Arc<crate::state::Shared>>,
) -> Result<Option<crate::queue::Queue>, AppError> {
    let routes: HashMap<String, u32> = config
        .routes
        .iter()
        .filter_map(|r| Some((r.model.clone(), r.jobs?.concurrency)))
        .collect();
    if routes.is_empty() {
        return Ok(None);
    }
    if let Some(shared) = state {
        let queue =
            crate::queue::Queue::open_shared(config.jobs.clone(), routes, shared.clone()).await?;
        tracing::info!("job queue on the fleet's Redis");
        return Ok(Some(queue));
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
