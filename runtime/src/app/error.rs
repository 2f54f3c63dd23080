//! Why the application, or a new snapshot of it, could not be built.

use std::path::PathBuf;

use crate::sandbox::SandboxError;
use crate::stages::LoadError;

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
    /// The shared state's Redis could not be used (wrong URL or credentials).
    #[error(transparent)]
    State(#[from] crate::state::StateError),
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
