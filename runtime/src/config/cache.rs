//! `[cache]` (process-wide bounds) and `[routes.cache]` (per-route policy): validated data;
//! the `cache` module gives it behaviour.

use std::time::Duration;

use super::check::Source;
use super::error::ConfigError;
use super::raw::{RawCache, RawRouteCache};

/// Default bound of the memory tier: 256 MiB of responses.
pub const DEFAULT_CACHE_MEMORY_BYTES: u64 = 256 << 20;
/// Default time a cached response is served: 5 minutes.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// Longest TTL accepted: 30 days.
pub const MAX_CACHE_TTL_MS: u64 = 30 * 86_400_000;

/// `[cache]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes of responses the memory tier holds at most (default
    /// [`DEFAULT_CACHE_MEMORY_BYTES`]).
    pub max_memory_bytes: u64,
    /// The disk tier's directory (relative paths resolved against the config file's
    /// directory); `None` keeps the cache in memory only.
    pub disk_dir: Option<std::path::PathBuf>,
    /// Bytes of entries the disk tier keeps at most (default [`DEFAULT_CACHE_DISK_BYTES`]).
    pub max_disk_bytes: u64,
}

/// Default bound of the disk tier: 1 GiB.
pub const DEFAULT_CACHE_DISK_BYTES: u64 = 1 << 30;

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_memory_bytes: DEFAULT_CACHE_MEMORY_BYTES,
            disk_dir: None,
            max_disk_bytes: DEFAULT_CACHE_DISK_BYTES,
        }
    }
}

/// `[routes.cache]`: whether and how a route's answers are cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteCacheSettings {
    /// Cache this route's answers (default false: caching is opt-in per route).
    pub enabled: bool,
    /// How long an answer is served from the cache (default [`DEFAULT_CACHE_TTL`]).
    pub ttl: Duration,
    /// Also cache requests sampled with a temperature other than 0 (or none, which means the
    /// provider's default of 1). Default false: only deterministic requests are cached.
    pub cache_nonzero_temperature: bool,
    /// The semantic tier: answer a request whose last user message is at least this similar
    /// (cosine, 0.5..=1.0) to a cached one, everything else equal. `None` (the default): off.
    pub semantic_threshold: Option<SimilarityThreshold>,
    /// The target (index into the config's targets) whose OpenAI-compatible `/embeddings`
    /// embed the last user message; `None`: the built-in local embedder (no network).
    pub semantic_embeddings: Option<usize>,
    /// Key entries by API key too (default false: keys share answers, which is safe
    /// because the key never changes the answer, and what saves the most).
    pub per_key: bool,
}

/// A cosine similarity threshold in hundredths (50..=100), kept integral so settings stay `Eq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimilarityThreshold(pub u32);

impl SimilarityThreshold {
    /// As a cosine similarity.
    pub fn as_f32(self) -> f32 {
        self.0 as f32 / 100.0
    }
}

impl Default for RouteCacheSettings {
    fn default() -> Self {
        RouteCacheSettings {
            enabled: false,
            ttl: DEFAULT_CACHE_TTL,
            cache_nonzero_temperature: false,
            semantic_threshold: None,
            semantic_embeddings: None,
            per_key: false,
        }
    }
}

pub(crate) fn build(
    src: Source<'_>,
    raw: &RawCache,
    base_dir: &std::path::Path,
) -> Result<CacheSettings, ConfigError> {
    let mib = src.in_range_or(
        raw.max_memory_mib.as_ref(),
        0..=1 << 20,
        DEFAULT_CACHE_MEMORY_BYTES >> 20,
        "cache.max_memory_mib",
    )?;
    let disk_mib = src.in_range_or(
        raw.disk_max_mib.as_ref(),
        1..=1 << 24,
        DEFAULT_CACHE_DISK_BYTES >> 20,
        "cache.disk_max_mib",
    )?;
    let disk_dir = match &raw.disk_dir {
        Some(dir) if dir.get_ref().trim().is_empty() => {
            return Err(src.error(
                dir.span(),
                "cache.disk_dir",
                "expected a directory path, got an empty string; leave the key out for a \
                 memory-only cache",
            ));
        }
        Some(dir) => Some(super::route::resolve(
            base_dir,
            std::path::Path::new(dir.get_ref()),
        )),
        None => None,
    };
    Ok(CacheSettings {
        max_memory_bytes: mib << 20,
        disk_dir,
        max_disk_bytes: disk_mib << 20,
    })
}

pub(crate) fn build_route(
    src: Source<'_>,
    raw: Option<&RawRouteCache>,
    key: &str,
    targets: &[super::TargetSettings],
) -> Result<RouteCacheSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(RouteCacheSettings::default());
    };
    let d = RouteCacheSettings::default();
    Ok(RouteCacheSettings {
        enabled: raw.enabled.unwrap_or(true),
        ttl: Duration::from_millis(src.in_range_or(
            raw.ttl_ms.as_ref(),
            1..=MAX_CACHE_TTL_MS,
            d.ttl.as_millis() as u64,
            &format!("{key}.cache.ttl_ms"),
        )?),
        cache_nonzero_temperature: raw
            .cache_nonzero_temperature
            .unwrap_or(d.cache_nonzero_temperature),
        semantic_threshold: match &raw.semantic_threshold_percent {
            Some(t) => Some(SimilarityThreshold(src.in_range(
                t,
                50..=100,
                &format!("{key}.cache.semantic_threshold_percent"),
            )? as u32)),
            None => None,
        },
        per_key: raw.per_key.unwrap_or(false),
        semantic_embeddings: match &raw.semantic_embeddings {
            None => None,
            Some(name) => {
                let field = format!("{key}.cache.semantic_embeddings");
                if raw.semantic_threshold_percent.is_none() {
                    return Err(src.error(
                        name.span(),
                        field,
                        "an embeddings target needs the semantic tier on: add \
                         semantic_threshold_percent",
                    ));
                }
                let Some(index) = targets.iter().position(|t| t.name == *name.get_ref()) else {
                    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                    return Err(src.error(
                        name.span(),
                        field,
                        format!(
                            "unknown target `{}`; defined targets: {}",
                            name.get_ref(),
                            names.join(", ")
                        ),
                    ));
                };
                Some(index)
            }
        },
    })
}
