//! The composition root: the [`App`] behind both listeners and background jobs, what lives
//! for the whole process (sandbox, caches, ledger, HTTP client), and the [`Snapshot`] of
//! config, stages, routes, targets and keys that a request runs on, swapped whole by a reload.
//!
//! - `build`: [`App::build`], everything made once at start.
//! - `assemble`: a snapshot of a config (stages loaded or kept, targets and keys kept when
//!   their settings did not change), and swapping it in.
//! - `reload`: the reload triggers and [`App::reload`].
//! - `snapshot`: [`Snapshot`] and what an operator sees of a stage file.
//! - `chat`: [`App::chat`], the typed entry point of a chat completion that the HTTP layer
//!   and background jobs both call.
//! - `jobs`: running a background job's attempt through [`App::chat`] (the queue's
//!   executor).
//!
//! It knows nothing of HTTP: `server` calls it, never the other way round.

mod assemble;
mod build;
mod chat;
mod embeddings;
mod error;
mod jobs;
mod reload;
mod snapshot;

pub use chat::{
    Answer, ChatCall, ChatError, ChatOutcome, ChatReply, Ended, Report, StreamEnd, UnknownModel,
    client_deadline,
};
pub use embeddings::{EmbeddingsOutcome, MAX_EMBEDDING_INPUTS};
pub use error::AppError;
pub use reload::{ReloadOutcome, spawn_watcher};
pub use snapshot::{Snapshot, StageFile};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;

use crate::cache::ResponseCache;
use crate::cost::Ledger;
use crate::llm::LlmStep;
use crate::pipeline::StageEnv;
use crate::providers::ProviderClient;
use crate::stages::LoadedStage;

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
    /// The fleet's shared state on Redis; `None` with `[state] backend = "local"` (built at
    /// start; its settings need a restart).
    pub state: Option<Arc<crate::state::Shared>>,
    /// The pooled upstream client.
    client: ProviderClient,
    /// Where pulled OCI stage artifacts are kept (`data_dir/oci`); `None` without a
    /// `data_dir` (then every start pulls them again).
    oci_store: Option<crate::oci::BlobStore>,
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
    /// The last `reload::RELOAD_HISTORY` reload outcomes, oldest first.
    reload_history: Mutex<std::collections::VecDeque<serde_json::Value>>,
    /// Every stage version ever loaded, to count those still alive (held by a snapshot or
    /// by a request in flight).
    versions: Mutex<Vec<Weak<LoadedStage>>>,
    /// The recent requests behind `GET /admin/requests`.
    pub recent: crate::telemetry::Recent,
}

impl App {
    /// The snapshot serving now; a request holds it from start to end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// At shutdown, after the drain: gives the fleet back what this node's leases hold
    /// unused (budget slices, rate-limit permits), sends the TPM debits still being summed,
    /// and waits, at most
    /// `state.background_timeout_ms`, for the settles to land. Without it they would come
    /// back only when they expire.
    pub async fn give_back_leases(&self) {
        let Some(shared) = &self.state else { return };
        let snap = self.snapshot();
        snap.accounts.give_back().await;
        for target in snap.llm.router().targets() {
            target.give_back().await;
        }
        crate::state::budget::settled(shared.settings.background_timeout).await;
    }

    /// Per stage file: when its serving version was loaded and the last load error.
    pub fn stage_files(&self) -> BTreeMap<PathBuf, StageFile> {
        crate::sync::lock(&self.stage_files).clone()
    }

    /// The last config reload error, until a reload succeeds.
    pub fn config_error(&self) -> Option<String> {
        crate::sync::lock(&self.config_error).clone()
    }

    /// Each sandbox lane's pool, for `/metrics`.
    pub fn pool_usage(&self) -> Vec<crate::sandbox::PoolUsage> {
        self.env.sandbox.pool_usage()
    }

    /// (stage instances alive in the pool, stage versions alive): both return to their
    /// baseline once the requests on older snapshots have finished.
    pub fn live_counts(&self) -> (u64, usize) {
        let instances = self.env.sandbox.live_instances();
        let mut versions = crate::sync::lock(&self.versions);
        versions.retain(|v| v.strong_count() > 0);
        (instances, versions.len())
    }
}
