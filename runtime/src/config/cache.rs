//! `[cache]` (process-wide bounds) and `[routes.cache]` (per-route policy): validated data;
//! the `cache` module gives it behaviour.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::check::Source;
use super::error::ConfigError;
use super::target::TargetSettings;
use super::value::{Bounded, Mib, Ms, defaults, lossy_opt, mib, ms, path, read_str, serde_default};

/// `[cache]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct CacheSettings {
    /// Bytes of responses the memory tier holds at most.
    #[serde(rename = "max_memory_mib", with = "Mib::<0, { 1 << 20 }>")]
    #[serde(default = "mib::<256>")]
    pub max_memory_bytes: u64,
    /// The disk tier's directory (relative paths resolved against the config file's
    /// directory); `None` keeps the cache in memory only.
    #[serde(deserialize_with = "path", serialize_with = "lossy_opt", default)]
    pub disk_dir: Option<PathBuf>,
    /// Bytes of entries the disk tier keeps at most.
    #[serde(rename = "disk_max_mib", with = "Mib::<1, { 1 << 24 }>")]
    #[serde(default = "mib::<1024>")]
    pub max_disk_bytes: u64,
    /// Bytes of deterministic stages' `on-request` outcomes kept for reuse (each usually a
    /// whole copy of the request; least recently used evicted first). 0 keeps none.
    #[serde(rename = "stage_outputs_max_mib", with = "Mib::<0, { 1 << 20 }>")]
    #[serde(default = "mib::<32>")]
    pub stage_outputs_max_bytes: u64,
    /// Bytes of last-user-message embeddings the semantic tier keeps for routes that use
    /// it (least recently used namespaces evicted first).
    #[serde(rename = "semantic_max_mib", with = "Mib::<1, { 1 << 20 }>")]
    #[serde(default = "mib::<32>")]
    pub semantic_max_bytes: u64,
}

serde_default!(CacheSettings);

/// `[routes.cache]`: whether and how a route's answers are cached. A route without the table
/// is not cached; the table turns caching on unless it says `enabled = false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RouteCacheSettings {
    /// Cache this route's answers.
    #[serde(default = "super::value::yes")]
    pub enabled: bool,
    /// How long an answer is served from the cache.
    #[serde(rename = "ttl_ms", with = "Ms::<1, { 30 * 86_400_000 }>")]
    #[serde(default = "ms::<300_000>")]
    pub ttl: Duration,
    /// Also cache requests sampled with a temperature other than 0 (or none, which means the
    /// provider's default of 1). Default false: only deterministic requests are cached.
    #[serde(default)]
    pub cache_nonzero_temperature: bool,
    /// The semantic tier: answer a request whose last user message is at least this similar
    /// to a cached one, everything else equal. `None` (the default): off.
    #[serde(rename = "semantic_threshold_percent", default)]
    pub semantic_threshold: Option<SimilarityThreshold>,
    /// The target (index into the config's targets) whose OpenAI-compatible `/embeddings`
    /// embed the last user message; `None`: the built-in local embedder (no network). The
    /// file names the target, and [`check_route`] finds its index.
    #[serde(deserialize_with = "target_name", skip_serializing, default)]
    pub semantic_embeddings: Option<usize>,
    /// Key entries by API key too (default false: keys share answers, which is safe
    /// because the key never changes the answer, and what saves the most).
    #[serde(default)]
    pub per_key: bool,
}

impl Default for RouteCacheSettings {
    fn default() -> Self {
        let enabled = false;
        RouteCacheSettings {
            enabled,
            ..defaults()
        }
    }
}

/// A cosine similarity threshold in hundredths (50..=100), kept integral so settings stay `Eq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SimilarityThreshold(pub u32);

impl SimilarityThreshold {
    /// As a cosine similarity.
    pub fn as_f32(self) -> f32 {
        self.0 as f32 / 100.0
    }
}

impl<'de> Deserialize<'de> for SimilarityThreshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Bounded::<50, 100>::deserialize(d).map(|t| SimilarityThreshold(t.0 as u32))
    }
}

/// A target's name, resolved by [`check_route`].
fn target_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    read_str(d, |_| Ok(None))
}

/// The second pass over `[cache]`: its directory.
pub(crate) fn check(cache: &mut CacheSettings, src: &Source<'_>) -> Result<(), ConfigError> {
    let empty = "expected a directory path, got an empty string; leave the key out for a \
                 memory-only cache";
    src.path("cache.disk_dir", &mut cache.disk_dir, empty)
}

/// The second pass over a route's `cache` table (`key` is the route's, like `routes[0]`):
/// its embeddings target.
pub(crate) fn check_route(
    cache: &mut RouteCacheSettings,
    src: &Source<'_>,
    key: &str,
    targets: &[TargetSettings],
) -> Result<(), ConfigError> {
    let field = format!("{key}.cache.semantic_embeddings");
    let Some(name) = src.find(&field).and_then(|value| value.as_str()) else {
        return Ok(());
    };
    let message = "an embeddings target needs the semantic tier on: add \
                   semantic_threshold_percent";
    src.ensure(cache.semantic_threshold.is_some(), &field, message)?;
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let Some(index) = names.iter().position(|n| *n == name) else {
        let message = format!(
            "unknown target `{name}`; defined targets: {}",
            names.join(", ")
        );
        return Err(src.error(&field, message));
    };
    let kind = targets.get(index).map(|t| t.kind).unwrap_or_default();
    let message = format!(
        "expected a target that serves OpenAI-shaped embeddings (kind `openai` or \
         `azure-openai`); `{name}` is of kind `{}`",
        kind.as_str()
    );
    src.ensure(kind.embeds(), &field, &message)?;
    cache.semantic_embeddings = Some(index);
    Ok(())
}
