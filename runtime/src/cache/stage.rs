//! The stage output cache: a deterministic, request-only stage's `on-request` outcome, keyed
//! by (component blake3, stage config, route, input), so the same input skips the instance
//! altogether and a new plugin version or config misses by construction.
//!
//! Stages that declare `deterministic` qualify when a cached outcome recreates all that their
//! request phase leaves behind: a request-only stage, and a 0.2 stage with a response phase,
//! whose request phase hands its state over as bytes (pii-redact's originals), stored with the
//! outcome and given to its response phase on a fresh instance. A 0.1 stage with a response
//! phase keeps its state inside the instance, which no cached outcome recreates: it never
//! qualifies.
//!
//! Bounded by bytes, not by entries: an outcome is usually a whole copy of the request, so a
//! client sending distinct 1 MiB bodies would otherwise make each entry cost a megabyte
//! (`cache.stage_outputs_max_mib`, least recently used evicted first).

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use super::{CacheKey, weigh};
use crate::wit::{ChatRequest, ChatResponse, Rejection};

/// How long an outcome is reused.
pub const STAGE_OUTPUT_TTL: Duration = Duration::from_secs(600);

/// A cached `on-request` outcome.
#[derive(Clone, Debug)]
pub enum StageOutput {
    /// Continue with this request; `state` is what a 0.2 stage handed its response phase
    /// (empty for a request-only stage).
    Next {
        /// The request as the stage passed it on.
        request: ChatRequest,
        /// The state its response phase gets.
        state: Vec<u8>,
    },
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
    /// False when the bound is 0: nothing is stored.
    enabled: bool,
}

impl StageOutput {
    /// Bytes the outcome is charged for in the cache's bound.
    fn weight(&self) -> usize {
        match self {
            StageOutput::Next { request, state } => {
                weigh::request(request).saturating_add(state.len())
            }
            StageOutput::Respond(response) => weigh::response(response),
            StageOutput::Reject(rejection) => weigh::rejection(rejection),
        }
    }
}

impl Default for StageOutputCache {
    fn default() -> Self {
        let max_bytes = crate::config::CacheSettings::default().stage_outputs_max_bytes;
        StageOutputCache::new(max_bytes)
    }
}

impl StageOutputCache {
    /// A cache of at most `max_bytes` of outcomes (their strings plus a small overhead per
    /// record), each reused for 10 minutes. With 0 bytes nothing is kept.
    pub fn new(max_bytes: u64) -> StageOutputCache {
        StageOutputCache {
            cache: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_key: &CacheKey, output: &Arc<StageOutput>| {
                    weigh::as_weight(output.weight())
                })
                .time_to_live(STAGE_OUTPUT_TTL)
                .build(),
            enabled: max_bytes > 0,
        }
    }

    /// The outcome stored for `key`.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<StageOutput>> {
        self.cache.get(key)
    }

    /// Stores an outcome.
    pub fn put(&self, key: CacheKey, output: StageOutput) {
        if self.enabled {
            self.cache.insert(key, Arc::new(output));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::stage_input_key;

    /// Once moka has applied its evictions: at most 8 MiB kept, so at most 8 of the
    /// tests' megabyte outcomes.
    fn assert_within_8_mib(cache: &StageOutputCache) {
        cache.cache.run_pending_tasks();
        assert!(
            cache.cache.weighted_size() <= 8 << 20,
            "{} bytes kept",
            cache.cache.weighted_size()
        );
        assert!(
            cache.cache.entry_count() <= 8,
            "{}",
            cache.cache.entry_count()
        );
    }

    /// A request-only stage's outcome: the request, no state.
    fn next(request: ChatRequest) -> StageOutput {
        StageOutput::Next {
            request,
            state: Vec::new(),
        }
    }

    fn megabyte_request(i: usize) -> ChatRequest {
        let mut request = ChatRequest::hi("m");
        request.extra = format!("{{\"pad\":\"{i}{}\"}}", "x".repeat(1 << 20));
        request
    }

    #[test]
    fn distinct_megabyte_outcomes_stay_within_the_byte_bound() {
        let cache = StageOutputCache::new(8 << 20);
        for i in 0..40 {
            let request = megabyte_request(i);
            let key = stage_input_key(&[0; 32], &Default::default(), "r", &request);
            cache.put(key, next(request));
        }
        assert_within_8_mib(&cache);
        // Small outcomes are still kept (the bound counts bytes, not entries).
        let small = ChatRequest::hi("m");
        let key = stage_input_key(&[1; 32], &Default::default(), "r", &small);
        cache.put(key, next(small));
        assert!(cache.get(&key).is_some());
    }

    #[test]
    fn a_stages_state_counts_toward_the_byte_bound() {
        let cache = StageOutputCache::new(8 << 20);
        for i in 0..40u8 {
            let request = ChatRequest::hi("m");
            let key = stage_input_key(&[i; 32], &Default::default(), "r", &request);
            let state = vec![i; 1 << 20];
            cache.put(key, StageOutput::Next { request, state });
        }
        assert_within_8_mib(&cache);
    }

    #[test]
    fn a_zero_bound_keeps_nothing() {
        let cache = StageOutputCache::new(0);
        let request = ChatRequest::hi("m");
        let key = stage_input_key(&[0; 32], &Default::default(), "r", &request);
        cache.put(key, next(request));
        assert!(cache.get(&key).is_none());
    }
}
