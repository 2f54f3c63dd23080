//! The stage output cache: a deterministic, request-only stage's `on-request` outcome, keyed
//! by (component blake3, stage config, route, input), so the same input skips the instance
//! altogether and a new plugin version or config misses by construction.
//!
//! Only stages that declare `deterministic` and implement no response phase qualify: a stage
//! with a response phase may keep state from its request phase (pii-redact keeps the
//! originals it replaced), which a cached outcome would not recreate.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use super::CacheKey;
use crate::wit::{ChatRequest, ChatResponse, Rejection};

/// Outcomes kept at most.
pub const STAGE_OUTPUT_ENTRIES: u64 = 10_000;
/// How long an outcome is reused.
pub const STAGE_OUTPUT_TTL: Duration = Duration::from_secs(600);

/// A cached `on-request` outcome.
#[derive(Clone, Debug)]
pub enum StageOutput {
    /// Continue with this request.
    Next(ChatRequest),
    /// Answer with this response.
    Respond(ChatResponse),
    /// Refuse with this rejection.
    Reject(Rejection),
}

/// Deterministic stages' outcomes by input.
#[derive(Clone)]
pub struct StageOutputCache {
    /// Key → outcome.
    cache: Cache<CacheKey, Arc<StageOutput>>,
}

impl Default for StageOutputCache {
    fn default() -> Self {
        StageOutputCache::new(STAGE_OUTPUT_ENTRIES, STAGE_OUTPUT_TTL)
    }
}

impl StageOutputCache {
    /// A cache of at most `entries` outcomes, each kept for `ttl`.
    pub fn new(entries: u64, ttl: Duration) -> StageOutputCache {
        StageOutputCache {
            cache: Cache::builder()
                .max_capacity(entries)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The outcome stored for `key`.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<StageOutput>> {
        self.cache.get(key)
    }

    /// Stores an outcome.
    pub fn put(&self, key: CacheKey, output: StageOutput) {
        self.cache.insert(key, Arc::new(output));
    }
}
