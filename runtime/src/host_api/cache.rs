//! The stages' private key-value caches (`cache-get` / `cache-set`), one bounded moka cache
//! for all stages, with keys namespaced by route and stage name.
//!
//! Why (route, stage name): a stage's name is unique within its route only, so two routes may
//! each have a stage called `x`; the WIT promises that two stages never see each other's
//! entries. The component's digest would be no better a namespace: two routes running the
//! same file would share, and every new version of a plugin would lose its entries.

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

/// Whose entry a key is: a stage of a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// The route (model alias) the stage serves.
    pub route: Arc<str>,
    /// The stage's name in that route's pipeline.
    pub stage: Arc<str>,
}

/// A stored key: the stage's own key in its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    /// Whose it is.
    namespace: Namespace,
    /// The key the stage chose.
    key: String,
}

/// Per-entry expiry from the stored TTL.
struct EntryExpiry;

// moka's `Expiry` API passes its own clock's `std::time::Instant`; it is not read here.
#[allow(clippy::disallowed_types)]
impl Expiry<Key, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Entry,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The stages' caches.
#[derive(Clone)]
pub struct StageCache {
    /// (route, stage name, key) → entry.
    cache: Cache<Key, Entry>,
    /// The bounds.
    limits: StageCacheLimits,
}

impl StageCache {
    /// An empty cache with `limits`.
    pub fn new(limits: StageCacheLimits) -> Self {
        let cache = Cache::builder()
            .max_capacity(limits.max_bytes)
            .weigher(|key: &Key, entry: &Entry| {
                (key.key.len() + entry.value.len())
                    .try_into()
                    .unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .build();
        StageCache { cache, limits }
    }

    /// The value stored under `key` in `namespace`, if any and unexpired.
    pub fn get(&self, namespace: &Namespace, key: &str) -> Option<Vec<u8>> {
        if key.len() > self.limits.max_key_bytes {
            return None;
        }
        let key = Key {
            namespace: namespace.clone(),
            key: key.to_string(),
        };
        self.cache.get(&key).map(|entry| entry.value.to_vec())
    }

    /// Stores `value` under `key` in `namespace`; false when over a size limit.
    pub fn set(
        &self,
        namespace: &Namespace,
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
        let key = Key {
            namespace: namespace.clone(),
            key,
        };
        self.cache.insert(
            key,
            Entry {
                value: value.into(),
                ttl,
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(route: &str, stage: &str) -> Namespace {
        Namespace {
            route: route.into(),
            stage: stage.into(),
        }
    }

    #[test]
    fn same_named_stages_of_two_routes_never_share_entries() {
        let cache = StageCache::new(StageCacheLimits::default());
        let a = namespace("a", "x");
        assert!(cache.set(&a, "k".into(), b"from a".to_vec(), None));
        assert_eq!(cache.get(&a, "k").as_deref(), Some(&b"from a"[..]));
        assert_eq!(cache.get(&namespace("b", "x"), "k"), None);
        assert_eq!(cache.get(&namespace("a", "y"), "k"), None);
        // Nor do names that would run together if the parts were joined.
        assert_eq!(cache.get(&namespace("ax", ""), "k"), None);
        assert_eq!(cache.get(&namespace("", "ax"), "k"), None);
    }

    #[test]
    fn oversized_keys_and_values_are_not_stored() {
        let limits = StageCacheLimits {
            max_key_bytes: 4,
            max_value_bytes: 4,
            ..StageCacheLimits::default()
        };
        let cache = StageCache::new(limits);
        let ns = namespace("r", "s");
        assert!(!cache.set(&ns, "long-key".into(), b"v".to_vec(), None));
        assert!(!cache.set(&ns, "k".into(), b"too long".to_vec(), None));
        assert!(cache.set(&ns, "k".into(), b"fits".to_vec(), None));
        assert_eq!(cache.get(&ns, "long-key"), None);
    }
}
