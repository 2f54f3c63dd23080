//! What one request runs on, and what an operator sees of a stage file.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::cost::Accounts;
use crate::llm::LlmStep;
use crate::pipeline::Pipeline;
use crate::stages::LoadedStage;

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
    /// The services stages call (`[services.NAME]`), by name.
    pub services: crate::service::Services,
}

/// What an operator sees of one stage file in `GET /admin/stages`.
#[derive(Clone, Debug, Default)]
pub struct StageFile {
    /// When the version serving now was loaded (Unix ms).
    pub loaded_at_ms: u64,
    /// Why the last attempt to load a new version failed, if it did (cleared by a success).
    pub last_error: Option<String>,
}
