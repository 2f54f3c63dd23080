//! The raw TOML schema of `weir.toml`: what the file may say, before any validation.
//!
//! Every table denies unknown keys. Values that a later check may reject are kept as
//! [`Spanned`] so that the error can point at the line they came from. Numbers are read as
//! `u64` and range-checked afterwards, so an out-of-range value gets a message naming the
//! range rather than a Rust type; likewise the few enumerated values are read as strings and
//! matched afterwards, so a wrong value and a wrong type both get a message listing the
//! choices. Nothing outside the config module sees these types.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawConfig {
    /// `[server]`.
    #[serde(default)]
    pub server: RawServer,
    /// `[sandbox]`.
    #[serde(default)]
    pub sandbox: RawSandbox,
    /// `[cache]`.
    #[serde(default)]
    pub cache: RawCache,
    /// `[targets.NAME]`, keyed by name (sorted: the TOML map does not keep file order).
    #[serde(default)]
    pub targets: BTreeMap<String, Spanned<RawTarget>>,
    /// `[[routes]]`; `None` when the file has none.
    #[serde(default)]
    pub routes: Option<Spanned<Vec<Spanned<RawRoute>>>>,
    /// `[cost]`.
    #[serde(default)]
    pub cost: RawCost,
    /// `[prices.MODEL]`, keyed by upstream model name.
    #[serde(default)]
    pub prices: BTreeMap<String, Spanned<RawPrice>>,
    /// `[[keys]]`: API keys; none means auth is off.
    #[serde(default)]
    pub keys: Vec<Spanned<RawKey>>,
    /// `[jobs]`.
    #[serde(default)]
    pub jobs: RawJobs,
    /// `[telemetry]`.
    #[serde(default)]
    pub telemetry: RawTelemetry,
}

/// `[telemetry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawTelemetry {
    pub metrics: Option<bool>,
    pub recent_requests: Option<Spanned<u64>>,
    pub log_inputs: Option<bool>,
    pub otlp_endpoint: Option<Spanned<String>>,
    pub service_name: Option<Spanned<String>>,
}

/// `[jobs]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawJobs {
    pub workers: Option<Spanned<u64>>,
    pub max_queued: Option<Spanned<u64>>,
    pub max_attempts: Option<Spanned<u64>>,
    pub backoff_base_ms: Option<Spanned<u64>>,
    pub backoff_max_ms: Option<Spanned<u64>>,
    pub callback_secret_env: Option<Spanned<String>>,
    pub callback_allow_hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub callback_allow_private: Option<bool>,
    pub callback_max_attempts: Option<Spanned<u64>>,
    pub callback_timeout_ms: Option<Spanned<u64>>,
    pub callback_connect_timeout_ms: Option<Spanned<u64>>,
    pub callback_max_response_bytes: Option<Spanned<u64>>,
}

/// A route's `jobs` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawRouteJobs {
    /// `false` turns jobs off for the route while keeping the table.
    pub enabled: Option<bool>,
    pub concurrency: Option<Spanned<u64>>,
}

/// `[cost]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawCost {
    pub prices_file: Option<Spanned<String>>,
    pub default_max_tokens: Option<Spanned<u64>>,
    pub count_failed_attempts: Option<bool>,
    pub request_log: Option<Spanned<String>>,
    pub fuel_usd_per_billion: Option<Spanned<f64>>,
}

/// A price file: `date` and `[prices.MODEL]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawPriceFile {
    pub date: Option<Spanned<String>>,
    #[serde(default)]
    pub prices: BTreeMap<String, Spanned<RawPrice>>,
}

/// `[prices.MODEL]`: USD per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawPrice {
    pub input_per_mtok: Spanned<f64>,
    pub cached_input_per_mtok: Option<Spanned<f64>>,
    pub output_per_mtok: Spanned<f64>,
}

/// `[[keys]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawKey {
    pub name: Spanned<String>,
    pub hash: Spanned<String>,
    pub daily_budget_usd: Option<Spanned<f64>>,
    pub monthly_budget_usd: Option<Spanned<f64>>,
    pub rpm: Option<Spanned<u64>>,
    pub tpm: Option<Spanned<u64>>,
    pub max_cost_per_request_usd: Option<Spanned<f64>>,
    pub max_llm_calls_per_request: Option<Spanned<u64>>,
}

/// `[cache]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawCache {
    pub max_memory_mib: Option<Spanned<u64>>,
    pub disk_dir: Option<Spanned<String>>,
    pub disk_max_mib: Option<Spanned<u64>>,
}

/// `[routes.cache]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawRouteCache {
    pub enabled: Option<bool>,
    pub ttl_ms: Option<Spanned<u64>>,
    pub cache_nonzero_temperature: Option<bool>,
    pub semantic_threshold_percent: Option<Spanned<u64>>,
    /// A target name whose `/embeddings` embed the last user message; absent: the local
    /// embedder.
    pub semantic_embeddings: Option<Spanned<String>>,
    /// Put the API key's name into the cache key: keys never share answers.
    pub per_key: Option<bool>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawServer {
    pub listen: Option<Spanned<String>>,
    pub admin_listen: Option<Spanned<String>>,
    pub admin_token_env: Option<Spanned<String>>,
    /// Host names (or IP addresses) the admin listener answers to besides loopback ones.
    pub admin_allowed_hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_body_bytes: Option<Spanned<u64>>,
    pub header_read_timeout_ms: Option<Spanned<u64>>,
    pub body_read_timeout_ms: Option<Spanned<u64>>,
    pub idle_timeout_ms: Option<Spanned<u64>>,
    pub write_timeout_ms: Option<Spanned<u64>>,
    pub max_connections: Option<Spanned<u64>>,
    pub drain_timeout_ms: Option<Spanned<u64>>,
    pub data_dir: Option<Spanned<String>>,
    /// `"human"` or `"json"`, checked in `server.rs`.
    pub log_format: Option<Spanned<String>>,
}

/// `[sandbox]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawSandbox {
    pub pool_size: Option<Spanned<u64>>,
    /// `"auto"`, `"pooling"` or `"on-demand"`, checked in `sandbox.rs`.
    pub allocator: Option<Spanned<String>>,
    pub fuel: Option<Spanned<u64>>,
    pub fuel_metering: Option<bool>,
    pub deadline_ms: Option<Spanned<u64>>,
    pub memory_limit_mib: Option<Spanned<u64>>,
    pub epoch_tick_ms: Option<Spanned<u64>>,
    pub log_line_max_bytes: Option<Spanned<u64>>,
    pub output_max_bytes: Option<Spanned<u64>>,
    /// The key that signs precompiled artifacts; checked in `sandbox.rs`.
    pub artifact_key_file: Option<Spanned<String>>,
}

/// `[targets.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawTarget {
    pub base_url: Spanned<String>,
    pub api_key_env: Option<Spanned<String>>,
    pub model: Option<Spanned<String>>,
    pub timeout_ms: Option<Spanned<u64>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    pub ttft_timeout_ms: Option<Spanned<u64>>,
    pub max_concurrency: Option<Spanned<u64>>,
    pub rpm: Option<Spanned<u64>>,
    pub tpm: Option<Spanned<u64>>,
    pub stream_idle_timeout_ms: Option<Spanned<u64>>,
    pub max_stream_bytes: Option<Spanned<u64>>,
    pub breaker: Option<RawBreaker>,
}

/// `[targets.NAME.breaker]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawBreaker {
    pub consecutive_failures: Option<Spanned<u64>>,
    pub failure_rate_percent: Option<Spanned<u64>>,
    pub window: Option<Spanned<u64>>,
    pub min_requests: Option<Spanned<u64>>,
    pub ejection_ms: Option<Spanned<u64>>,
    pub max_ejection_ms: Option<Spanned<u64>>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawRoute {
    pub model: Spanned<String>,
    pub targets: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub stages: Vec<Spanned<RawStage>>,
    pub cache: Option<RawRouteCache>,
    pub jobs: Option<RawRouteJobs>,
    pub strategy: Option<Spanned<String>>,
    pub weights: Option<Spanned<Vec<Spanned<u64>>>>,
    pub max_attempts: Option<Spanned<u64>>,
    pub retry_on: Option<Spanned<Vec<Spanned<u64>>>>,
    pub deadline_ms: Option<Spanned<u64>>,
    pub backoff_base_ms: Option<Spanned<u64>>,
    pub backoff_max_ms: Option<Spanned<u64>>,
    pub retry_after_max_ms: Option<Spanned<u64>>,
    pub retry_budget_percent: Option<Spanned<u64>>,
    pub queue_size: Option<Spanned<u64>>,
    pub queue_timeout_ms: Option<Spanned<u64>>,
}

/// One `[[routes.stages]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawStage {
    pub name: Spanned<String>,
    pub path: Spanned<String>,
    /// `"fail"` or `"skip"`, checked in `route.rs`.
    pub on_error: Option<Spanned<String>>,
    pub fuel: Option<Spanned<u64>>,
    pub deadline_ms: Option<Spanned<u64>>,
    pub memory_limit_mib: Option<Spanned<u64>>,
    #[serde(default)]
    pub config: BTreeMap<String, Spanned<toml::Value>>,
}
