//! The stages' private key-value caches (`cache-get` / `cache-set`), one bounded moka cache
//! for all stages, with keys namespaced by stage name.

use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use moka::sync::Cache;

/// Bounds of the stage cache.
#[derive(Clone, Copy, Debug)]
pub struct StageCacheLimits {
    /// Total bytes of keys + values kept (default 64 MiB); least recently used go first.
    pub max_bytes: u64,
    /// Largest key, bytes (default 1 KiB); longer keys are not stored.
    pub max_key_bytes: usize,
    /// Largest value, bytes (default 1 MiB); larger values are not stored.
    pub max_value_bytes: usize,
    /// TTL when the stage gives none (default 5 minutes).
    pub default_ttl: Duration,
    /// Longest TTL a stage may ask for (default 1 day).
    pub max_ttl: Duration,
}

impl Default for StageCacheLimits {
    fn default() -> Self {
        StageCacheLimits {
            max_bytes: 64 << 20,
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            default_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(86_400),
        }
    }
}

/// A cached value and how long it lives.
#[derive(Clone, Debug)]
struct Entry {
    /// The bytes the stage stored.
    value: Arc<[u8]>,
    /// Its time to live from insertion.
    ttl: Duration,
}

/// Per-entry expiry from the stored TTL.
struct EntryExpiry;

// moka's `Expiry` API passes its own clock's `std::time::Instant`; it is not read here.
#[allow(clippy::disallowed_types)]
impl Expiry<(Arc<str>, String), Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &(Arc<str>, String),
        value: &Entry,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The stages' caches.
#[derive(Clone)]
pub struct StageCache {
    /// (stage name, key) → entry.
    cache: Cache<(Arc<str>, String), Entry>,
    /// The bounds.
    limits: StageCacheLimits,
}

impl StageCache {
    /// An empty cache with `limits`.
    pub fn new(limits: StageCacheLimits) -> Self {
        let cache = Cache::builder()
            .max_capacity(limits.max_bytes)
            .weigher(|key: &(Arc<str>, String), entry: &Entry| {
                (key.1.len() + entry.value.len())
                    .try_into()
                    .unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .build();
        StageCache { cache, limits }
    }

    /// The value `stage` stored under `key`, if any and unexpired.
    pub fn get(&self, stage: &Arc<str>, key: &str) -> Option<Vec<u8>> {
        if key.len() > self.limits.max_key_bytes {
            return None;
        }
        self.cache
            .get(&(stage.clone(), key.to_string()))
            .map(|entry| entry.value.to_vec())
    }

    /// Stores `value` for `stage` under `key`; false when over a size limit.
    pub fn set(
        &self,
        stage: &Arc<str>,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> bool {
        if key.len() > self.limits.max_key_bytes || value.len() > self.limits.max_value_bytes {
            return false;
        }
        let ttl = ttl_seconds
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(self.limits.default_ttl)
            .min(self.limits.max_ttl);
        self.cache.insert(
            (stage.clone(), key),
            Entry {
                value: value.into(),
                ttl,
            },
        );
        true
    }
}
